"""What each rank runs in the sharding checks: `mpiexec -n N python -m mpi4py ranks_sharding.py CHECK OUT_DIR`.

Rank 0 writes the results to OUT_DIR/CHECK.npz; test_sharding.py compares them with one process. The model
has tied embeddings and a frozen parameter, as tests/13_sharding's ThreadGroup checks."""

import sys

import numpy as np

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed.fsdp import FullyShardedDataParallel
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import AdamW

CONFIG = dict(vocab_size=29, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
STEPS, BATCH = 20, 12  # the global batch


def loss_of(model, tokens):
    logits, _ = model(tt.tensor(tokens[:, :-1], dtype=tt.int64))
    return cross_entropy(logits.view(-1, logits.shape[-1]), tt.tensor(tokens[:, 1:], dtype=tt.int64).view(-1))


def train(stage=None, world_size=1, rank=0, fail_at=None, prefetch=False):
    """20 AdamW steps: one process on the whole batch (stage None), or ZeRO-stage on this rank's part."""
    tokens = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (STEPS, BATCH, CONFIG["block_size"] + 1))
    tt.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    model.transformer.wpe.weight.requires_grad_(False)
    net = model if stage is None else FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=stage,
                                                                prefetch=prefetch)
    opt = AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    part, losses = BATCH // world_size, []
    for step, batch in enumerate(tokens):
        if step == fail_at and rank == 1:
            raise ValueError(f"rank 1 failed on purpose at step {step} under ZeRO-3")
        loss = loss_of(net, batch[rank * part:(rank + 1) * part])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    state = net.state_dict() if stage is not None else model.state_dict()
    return {k: v.numpy().copy() for k, v in state.items()}, np.array(losses)


def check_zero(out):
    rank, n = dist.get_rank(), dist.get_world_size()
    results = {}
    for name, stage, prefetch in (("zero2", 2, False), ("zero3", 3, False), ("zero3-prefetch", 3, True)):
        state, losses = train(stage, n, rank, prefetch=prefetch)  # prefetch: the async all-gather over MPI
        every = dist.get_world_size() * [None]
        dist.all_gather_object(every, losses.tolist())
        results.update({f"{name}/{k}": v for k, v in state.items()})
        results[f"{name}/losses"] = np.mean(every, axis=0)  # the global batch's mean loss
    return results


def fault(out):
    """Rank 1 raises at step 3 of ZeRO-3 training; rank 0 then waits in a collective."""
    train(3, dist.get_world_size(), dist.get_rank(), fail_at=3)
    return {}


if __name__ == "__main__":
    checks, out_dir = sys.argv[1].split(","), sys.argv[2]
    dist.init_process_group("mpi")
    for check in checks:
        results = globals()[check](out_dir)
        if dist.get_rank() == 0:
            np.savez(f"{out_dir}/{check}.npz", **results)
