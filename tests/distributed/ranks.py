"""What each rank runs in the distributed checks: `mpiexec -n 2 python -m mpi4py ranks.py CHECK OUT_DIR`.

Rank 0 writes the results (NumPy arrays) to OUT_DIR/CHECK.npz; test_ddp.py compares them with a
single-process run. Kept tiny: the machines that run it have two shared cores.
"""

import sys
import time

import numpy as np

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed.ring import ring_all_reduce
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import SGD, AdamW

CONFIG = dict(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=32, dropout=0.0, bias=False)
STEPS, BATCH = 20, 4  # per-rank batch; the single-process reference takes BATCH * world size


def batches(world_size):
    """The same global batches on every rank: (STEPS, BATCH * world_size, block_size + 1) token ids."""
    rng = np.random.default_rng(42)
    return rng.integers(0, CONFIG["vocab_size"], (STEPS, BATCH * world_size, CONFIG["block_size"] + 1))


def loss_of(model, tokens):
    idx = tt.tensor(tokens[:, :-1], dtype=tt.int64)
    target = tt.tensor(tokens[:, 1:], dtype=tt.int64)
    logits, _ = model(idx)
    return cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1))


def train_gpt(mode="ddp", world_size=None, rank=None, optimizer="adamw"):
    """20 steps of a small GPT; mode: plain (one process, whole batch), ddp, no_sync, two_forwards or zero.

    optimizer="sgd" catches a sum where a mean belongs (Adam's update barely sees the scale)."""
    world_size = dist.get_world_size() if world_size is None else world_size
    rank = dist.get_rank() if rank is None else rank
    tt.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    net = model if mode == "plain" else dist.DistributedDataParallel(model, bucket_cap_mb=0.02)
    if mode == "zero":
        opt = dist.ZeroRedundancyOptimizer(model.parameters(), optimizer_class=AdamW, lr=1e-2, weight_decay=0.1)
    elif optimizer == "sgd":
        opt = SGD(model.parameters(), lr=0.5)
    else:
        opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for tokens in batches(world_size):
        mine = tokens[rank * BATCH:(rank + 1) * BATCH] if mode != "plain" else tokens
        if mode == "no_sync":  # two micro-batches: the first only accumulates
            half = BATCH // 2
            with net.no_sync():
                (loss_of(net, mine[:half]) / 2).backward()
            (loss_of(net, mine[half:]) / 2).backward()
        elif mode == "two_forwards":  # a siamese loss: two forwards, one backward
            half = BATCH // 2
            ((loss_of(net, mine[:half]) + loss_of(net, mine[half:])) / 2).backward()
        else:
            loss_of(net, mine).backward()
        opt.step()
        opt.zero_grad()
    state = opt.state_dict() if mode == "zero" else None
    return {name: p.numpy().copy() for name, p in model.named_parameters()}, state, len(getattr(net, "buckets", []))


def check_equivalence(out):
    params, _, _ = train_gpt("ddp", optimizer="sgd")
    results = {f"sgd/{k}": v for k, v in params.items()}
    for mode in ("ddp", "no_sync", "two_forwards", "zero"):
        params, state, buckets = train_gpt(mode)
        results.update({f"{mode}/{k}": v for k, v in params.items()})
        results[f"{mode}/buckets"] = np.array(buckets)
        if state is not None:  # consolidated ZeRO state: every parameter's Adam moments
            results["zero/state_entries"] = np.array(len(state["state"]))
            results["zero/exp_avg_0"] = np.asarray(state["state"][0]["exp_avg"])
    return results


def check_ring(out):
    results = {}
    for dtype in (np.float32, np.float64):
        for length in (1, 2, 3, 1_000_003):
            values = np.random.default_rng([dist.get_rank(), length]).standard_normal(length).astype(dtype)
            ring, library = tt.tensor(values, dtype=dtype), tt.tensor(values, dtype=dtype)
            ring_all_reduce(ring)
            dist.all_reduce(library)
            results[f"{np.dtype(dtype).name}/{length}/ring"] = ring.numpy()
            results[f"{np.dtype(dtype).name}/{length}/library"] = library.numpy()
    return results


def check_sampler(out):
    results = {}
    for n, drop_last in ((10, False), (11, False), (11, True)):
        sampler = dist.DistributedSampler(list(range(n)), shuffle=True, seed=3, drop_last=drop_last)
        for epoch in range(2):
            sampler.set_epoch(epoch)
            everyone = []
            dist.all_gather_object(everyone, list(sampler))
            results[f"{n}/{drop_last}/{epoch}"] = np.array(everyone)
    return results


def check_collectives(out):
    rank, n = dist.get_rank(), dist.get_world_size()
    x = tt.tensor([float(rank + 1)] * 3)
    dist.all_reduce(x, dist.ReduceOp.AVG)
    m = tt.tensor([float(rank)])
    dist.all_reduce(m, dist.ReduceOp.MAX)
    b = tt.tensor([float(rank + 5)])
    dist.broadcast(b, src=1)
    gathered = [tt.zeros(2) for _ in range(n)]
    dist.all_gather(gathered, tt.tensor([float(rank), float(rank)]))
    later = [tt.zeros(3) for _ in range(n)]
    work = dist.all_gather(later, tt.tensor([float(rank)] * 3), async_op=True)  # in flight ...
    unfilled = float(sum(t.numpy().sum() for t in later))  # ... and the list is filled only at wait()
    work.wait()
    part = tt.zeros(2)
    dist.reduce_scatter(part, [tt.tensor([1.0, 2.0]) * (rank + 1) for _ in range(n)])
    everyone = []
    dist.all_gather_object(everyone, part.tolist())
    return {"avg": x.numpy(), "max": m.numpy(), "bcast": b.numpy(),
            "gathered": np.stack([g.numpy() for g in gathered]), "reduce_scatter": np.array(everyone),
            "async_gathered": np.stack([g.numpy() for g in later]), "async_unfilled": unfilled}


def fault(out):
    """Rank 1 raises in the middle of training; rank 0 is then waiting in an all-reduce."""
    for step in range(1000):
        if dist.get_rank() == 1 and step == 3:
            raise ValueError("rank 1 failed on purpose at step 3")
        dist.all_reduce(tt.ones(10))
    return {}


def hang(out):
    """Rank 1 stops taking part (it sleeps); rank 0's all-reduce must time out, and the job end."""
    if dist.get_rank() == 1:
        time.sleep(120)
    dist.all_reduce(tt.ones(10))
    return {}


def hang_object(out):
    """Rank 1 stops taking part; rank 0's all_gather_object must time out like any collective."""
    if dist.get_rank() == 1:
        time.sleep(120)
    dist.all_gather_object([], {"shapes": [(3, 4)]})
    return {}


def check_nccl(out):
    """DDP of the small GPT on this rank's GPU through NCCL, plus the collectives on cuda tensors."""
    rank, n = dist.get_rank(), dist.get_world_size()
    device = dist.rank_device()
    x = tt.tensor([float(rank + 1)] * 1000, device=device)
    dist.all_reduce(x)
    b = tt.tensor([float(rank + 5)] * 4, device=device)
    dist.broadcast(b, src=n - 1)
    tt.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG)).to(device)
    net = dist.DistributedDataParallel(model, bucket_cap_mb=0.02)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for tokens in batches(n)[:5]:
        mine = tokens[rank * BATCH:(rank + 1) * BATCH]
        idx = tt.tensor(mine[:, :-1], dtype=tt.int64, device=device)
        target = tt.tensor(mine[:, 1:], dtype=tt.int64, device=device)
        logits, _ = net(idx)
        cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1)).backward()
        opt.step()
        opt.zero_grad()
    results = {f"params/{k}": p.cpu().numpy() for k, p in model.named_parameters()}
    return {**results, "all_reduce": x.cpu().numpy(), "bcast": b.cpu().numpy(), "world": np.array(n)}


if __name__ == "__main__":
    checks, out_dir = sys.argv[1].split(","), sys.argv[2]
    backend = "nccl" if checks == ["check_nccl"] else "mpi"
    dist.init_process_group(backend, timeout=2.0 if checks in (["hang"], ["hang_object"]) else None)
    for check in checks:
        results = globals()[check](out_dir)
        if dist.get_rank() == 0:
            np.savez(f"{out_dir}/{check}.npz", **results)
