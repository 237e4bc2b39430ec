"""Module 11 in one process: world size 1, and n ranks as threads (ThreadGroup): ring, DDP, ZeRO.

The checks with real ranks (MPI) are in tests/distributed/ (marker `distributed`)."""

import threading

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed.ring import ring_all_reduce
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn import Linear, Module, Sequential
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import AdamW

CONFIG = dict(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0, bias=False)


def gpt_loss(model, tokens, device):
    idx = tt.tensor(tokens[:, :-1], dtype=tt.int64, device=device)
    target = tt.tensor(tokens[:, 1:], dtype=tt.int64, device=device)
    logits, _ = model(idx)
    return cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1))


def make_gpt(device):
    tt.manual_seed(0)
    return GPT(GPTConfig(**CONFIG)).to(device)


@pytest.fixture
def tokens(rng):
    return rng.integers(0, CONFIG["vocab_size"], (4, CONFIG["block_size"] + 1))


def test_world_size_one_without_a_launcher():
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
    x = tt.tensor([1.0, 2.0])
    dist.all_reduce(x, dist.ReduceOp.AVG)
    assert x.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="unknown reduce op"):
        dist.all_reduce(x, "mean")
    with pytest.raises(TypeError, match="floating"):
        dist.all_reduce(tt.tensor([1, 2]), dist.ReduceOp.AVG)


def test_ddp_gradients_equal_plain_gradients_including_tied_weights(device, tokens):
    plain, wrapped = make_gpt(device), make_gpt(device)
    ddp = dist.DistributedDataParallel(wrapped, bucket_cap_mb=0.005)
    assert len(ddp.buckets) > 2, "a small cap must give several buckets"
    gpt_loss(plain, tokens, device).backward()
    gpt_loss(ddp, tokens, device).backward()
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
        assert q.grad is not None, f"{name}: DDP left no gradient"
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)
    assert wrapped.lm_head.weight is wrapped.transformer.wte.weight, "DDP must restore the module's Parameters"


def test_no_sync_accumulates_and_the_next_backward_syncs(device, tokens):
    plain, wrapped = make_gpt(device), make_gpt(device)
    ddp = dist.DistributedDataParallel(wrapped)
    for half in (tokens[:2], tokens[2:]):
        (gpt_loss(plain, half, device) / 2).backward()
    with ddp.no_sync():
        (gpt_loss(ddp, tokens[:2], device) / 2).backward()
    (gpt_loss(ddp, tokens[2:], device) / 2).backward()
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=(
            f"{name}: a backward under no_sync() then one outside must give the gradient of both halves "
            "(no_sync must still accumulate .grad; only the all-reduce is skipped)"))


def test_unused_parameter_is_a_clear_error(device):
    class TwoHeads(Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = Linear(3, 2), Linear(3, 2)

        def forward(self, x):
            return self.used(x)

    ddp = dist.DistributedDataParallel(TwoHeads().to(device))
    x = tt.randn(4, 3, device=device)
    ddp(x).sum().backward()
    with pytest.raises(RuntimeError, match="unused"):
        ddp(x)


def test_eval_forward_without_grad_and_state_dict_without_prefix(device, tokens):
    model = make_gpt(device)
    ddp = dist.DistributedDataParallel(model)
    with tt.no_grad():
        logits, _ = ddp(tt.tensor(tokens[:, :-1], dtype=tt.int64, device=device))
    assert not logits.requires_grad
    assert list(ddp.state_dict()) == list(model.state_dict()), "checkpoints keep the plain model's names"
    assert ddp.config is model.config, "attributes of the wrapped model are reachable"


def test_zero_at_world_size_one_equals_adamw(device, tokens):
    a, b = make_gpt(device), make_gpt(device)
    opt_a = AdamW(a.parameters(), lr=1e-2, weight_decay=0.1)
    opt_b = dist.ZeroRedundancyOptimizer(b.parameters(), optimizer_class=AdamW, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        for model, opt in ((a, opt_a), (b, opt_b)):
            gpt_loss(model, tokens, device).backward()
            opt.step()
            opt.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-6, atol=1e-7)
    state = opt_b.state_dict()
    fresh = AdamW(make_gpt(device).parameters(), lr=1e-2, weight_decay=0.1)
    fresh.load_state_dict(state)  # a ZeRO checkpoint loads into the plain optimizer
    opt_b.load_state_dict(opt_a.state_dict())  # and the other way


@pytest.mark.parametrize("n", [2, 3, 5])
def test_ring_all_reduce_in_threads(n):
    def rank_main(length):
        values = np.arange(length, dtype=np.float32) * (dist.get_rank() + 1)
        t = tt.tensor(values)
        ring_all_reduce(t)
        return t.numpy()

    for length in (1, n - 1, n + 1, 97):
        for got in dist.ThreadGroup.run(n, rank_main, length):
            np.testing.assert_allclose(got, np.arange(length) * n * (n + 1) / 2, err_msg=f"n={n}, length={length}")
    two_d = dist.ThreadGroup.run(n, lambda: ring_all_reduce(tt.ones(2, 3) * (dist.get_rank() + 1)).tolist())
    assert two_d == [[[n * (n + 1) / 2] * 3] * 2] * n, "a (2, 3) tensor: all 6 values are summed, not only a first-axis cut"


def test_chunk_bounds_round_the_base_size_down():
    from tinytorch.distributed.ring import _chunk_bounds
    assert _chunk_bounds(5, 3) == [0, 2, 4, 5] and _chunk_bounds(8, 3) == [0, 3, 6, 8]


def test_distributed_sampler_shards_and_reshuffles():
    shards = [list(dist.DistributedSampler(list(range(9)), num_replicas=3, rank=r, seed=1)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(9))
    sampler = dist.DistributedSampler(list(range(9)), num_replicas=3, rank=0, seed=1)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == first, "the order depends only on (seed, epoch)"
    with pytest.raises(ValueError, match="rank 3"):
        dist.DistributedSampler(list(range(9)), num_replicas=3, rank=3)


def test_thread_group_collectives():
    def rank_main():
        rank, n = dist.get_rank(), dist.get_world_size()
        total, mean, top = (tt.tensor([float(rank + 1)] * 2) for _ in range(3))
        dist.all_reduce(total)
        dist.all_reduce(mean, dist.ReduceOp.AVG)
        dist.all_reduce(top, dist.ReduceOp.MAX)
        b = tt.tensor([float(rank)])
        dist.broadcast(b, src=2)
        gathered = [tt.zeros(1) for _ in range(n)]
        dist.all_gather(gathered, tt.tensor([float(rank * 10)]))
        later = [tt.zeros(1) for _ in range(n)]
        dist.all_gather(later, tt.tensor([float(rank + 1)]), async_op=True).wait()
        assert [g.item() for g in later] == [1.0, 2.0, 3.0], "all_gather(async_op=True), then wait()"
        part = tt.zeros(2)
        dist.reduce_scatter(part, [tt.tensor([1.0, 2.0]) * (k + 1) for k in range(n)])
        objects = []
        dist.all_gather_object(objects, {"rank": rank})
        return total.tolist(), mean.tolist(), top.tolist(), b.tolist(), [g.item() for g in gathered], \
            part.tolist(), objects

    for rank, got in enumerate(dist.ThreadGroup.run(3, rank_main)):
        total, mean, top, b, gathered, part, objects = got
        assert total == [6.0, 6.0] and mean == [2.0, 2.0] and top == [3.0, 3.0] and b == [2.0]
        assert gathered == [0.0, 10.0, 20.0]
        assert part == [3.0 * (rank + 1), 6.0 * (rank + 1)], "rank r gets the sum of everyone's input_list[r]"
        assert objects == [{"rank": 0}, {"rank": 1}, {"rank": 2}]


def test_thread_group_reraises_a_ranks_own_error():
    def rank_main():
        if dist.get_rank() == 1:
            raise KeyError("rank 1 broke")
        dist.recv(tt.zeros(1), 1)  # would wait for rank 1: must stop when rank 1 fails

    with pytest.raises(KeyError, match="rank 1 broke"):
        dist.ThreadGroup.run(2, rank_main, timeout=10.0)


def _mlp_copies(k):
    """k small MLPs with the same weights (built here: Python's threads share one random generator)."""
    tt.manual_seed(3)
    nets = [Sequential(Linear(5, 7), Linear(7, 2)) for _ in range(k)]
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    return nets


@pytest.mark.parametrize("n", [2, 3])
def test_ddp_on_thread_ranks_equals_one_process_on_the_whole_batch(n):
    nets = _mlp_copies(n + 1)
    x = tt.randn(2 * n, 5)

    def rank_main():
        rank = dist.get_rank()
        ddp = dist.DistributedDataParallel(nets[rank], bucket_cap_mb=64 / 2 ** 20)
        (ddp(x[2 * rank:2 * rank + 2]) ** 2).mean().backward()
        return len(ddp.buckets), [p.grad.numpy() for p in nets[rank].parameters()]

    results = dist.ThreadGroup.run(n, rank_main)
    (nets[n](x) ** 2).mean().backward()
    for buckets, grads in results:
        assert buckets > 1
        for p, g in zip(nets[n].parameters(), grads):
            np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_zero_on_thread_ranks_equals_adamw_and_consolidates_its_state():
    inits = [np.random.default_rng(i).standard_normal(s).astype(np.float32) for i, s in enumerate([(4, 3), (3,), (5,)])]

    def train(make):
        params = [tt.tensor(v, requires_grad=True) for v in inits]
        opt = make(params)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = tt.tensor(np.random.default_rng([step, i]).standard_normal(p.shape).astype(np.float32))
            opt.step()
        return [p.numpy() for p in params], opt.state_dict()

    expected, plain_state = train(lambda ps: AdamW(ps, lr=0.1))
    results = dist.ThreadGroup.run(2, train, lambda ps: dist.ZeroRedundancyOptimizer(ps, optimizer_class=AdamW,
                                                                                        lr=0.1))
    for params, state in results:
        for got, want in zip(params, expected):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        assert sorted(state["state"]) == sorted(plain_state["state"]), "every parameter's state, from both ranks"
        for k, entry in plain_state["state"].items():
            np.testing.assert_allclose(np.asarray(state["state"][k]["exp_avg"]), np.asarray(entry["exp_avg"]),
                                       rtol=1e-6, atol=1e-7)


def test_ddp_two_forwards_before_one_backward_on_thread_ranks():
    """A siamese loss f(ddp(a)) + f(ddp(b)): each parameter is ready once per backward, with both uses' gradient."""
    nets = _mlp_copies(3)
    x = tt.randn(8, 5)

    def rank_main(discarded_forward):
        rank = dist.get_rank()
        for p in nets[rank].parameters():
            p.grad = None
        ddp = dist.DistributedDataParallel(nets[rank], bucket_cap_mb=64 / 2 ** 20)
        a, b = x[4 * rank:4 * rank + 2], x[4 * rank + 2:4 * rank + 4]
        if discarded_forward:
            ddp(a)  # an output nobody differentiates (grad mode on)
        ((ddp(a) ** 2).mean() + (ddp(b) ** 2).mean()).backward()
        return [p.grad.numpy().copy() for p in nets[rank].parameters()]

    loss = 0
    for rank in range(2):
        for pair in (x[4 * rank:4 * rank + 2], x[4 * rank + 2:4 * rank + 4]):
            loss = loss + (nets[2](pair) ** 2).mean()
    (loss / 2).backward()
    for discarded_forward in (False, True):
        for grads in dist.ThreadGroup.run(2, rank_main, discarded_forward):
            for p, g in zip(nets[2].parameters(), grads):
                np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_ddp_two_forwards_then_accumulation_and_no_sync(device, tokens):
    plain, wrapped = make_gpt(device), make_gpt(device)
    ddp = dist.DistributedDataParallel(wrapped, bucket_cap_mb=0.005)
    halves = (tokens[:2], tokens[2:])
    for _ in range(2):  # two steps' worth, accumulated: a pass with two forwards, then one with two under no_sync
        (gpt_loss(plain, halves[0], device) + gpt_loss(plain, halves[1], device)).backward()
    (gpt_loss(ddp, halves[0], device) + gpt_loss(ddp, halves[1], device)).backward()
    with ddp.no_sync():
        (gpt_loss(ddp, halves[0], device) + gpt_loss(ddp, halves[1], device)).backward()
    for p, q in zip(plain.parameters(), wrapped.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_ddp_backward_through_an_earlier_pass_is_a_clear_error(device):
    ddp = dist.DistributedDataParallel(Sequential(Linear(3, 2)).to(device))
    x = tt.randn(4, 3, device=device)
    first = ddp(x).sum()
    first.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per backward"):
        (first + ddp(x).sum()).backward()  # the first graph's gradients were already averaged
    ddp = dist.DistributedDataParallel(Sequential(Linear(3, 2)).to(device))
    loss = ddp(x).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once per backward"):
        loss.backward()


def test_distributed_sampler_epoch_order_depends_on_the_seed():
    orders = []
    for seed in (0, 1):
        sampler = dist.DistributedSampler(list(range(8)), num_replicas=2, rank=0, seed=seed)
        sampler.set_epoch(1)
        orders.append(list(sampler))
    assert orders[0] != orders[1], f"seeds 0 and 1 gave the same epoch-1 order {orders[0]}"


def test_thread_group_collective_that_a_rank_skips_is_a_timeout_naming_the_ranks():
    def rank_main():
        t = tt.ones(2)
        if dist.get_rank() == 0:
            dist.all_reduce(t)  # rank 1 never joins it
        return t.tolist()

    with pytest.raises(dist.DistributedTimeoutError, match=r"rank 0 waited .* rank 1 returned"):
        dist.ThreadGroup.run(2, rank_main, timeout=0.5)


def test_thread_group_rank_that_never_returns_is_a_timeout():
    release = threading.Event()

    def rank_main():
        if dist.get_rank() == 1:
            release.wait(10)  # busy far past the deadline, in no collective
        return dist.get_rank()

    try:
        with pytest.raises(dist.DistributedTimeoutError, match=r"rank 1 had not returned"):
            dist.ThreadGroup.run(2, rank_main, timeout=0.1)
    finally:
        release.set()


def test_ddp_layer_frozen_after_wrapping_is_a_clear_error(device):
    net = Sequential(Linear(3, 2), Linear(2, 2)).to(device)
    ddp = dist.DistributedDataParallel(net)
    x = tt.randn(4, 3, device=device)
    net[0].requires_grad_(False)
    ddp(x).sum().backward()
    with pytest.raises(RuntimeError, match=r"do not require grad \(\['0.bias', '0.weight'\]\)"):
        ddp(x)


@pytest.mark.parametrize("frozen", [False, True])
def test_ddp_second_step_after_zero_grad_and_a_frozen_layer_on_thread_ranks(frozen):
    nets = _mlp_copies(3)
    x = tt.randn(4, 5)
    (nets[2](x) ** 2).mean().backward()

    def rank_main():
        net = nets[dist.get_rank()]
        net[0].requires_grad_(not frozen)
        ddp = dist.DistributedDataParallel(net, bucket_cap_mb=64 / 2 ** 20)
        steps = []
        for _ in range(2):
            net.zero_grad()  # grads back to None: the next pass's first gradient replaces the bucket's values
            (ddp(x[2 * dist.get_rank():2 * dist.get_rank() + 2]) ** 2).mean().backward()
            steps.append([None if p.grad is None else p.grad.numpy().copy() for p in net.parameters()])
        return steps

    for steps in dist.ThreadGroup.run(2, rank_main):
        for step, grads in enumerate(steps):
            for i, (p, g) in enumerate(zip(nets[2].parameters(), grads)):
                if frozen and i < 2:
                    assert g is None, "a frozen parameter gets no gradient"
                else:
                    np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-5, atol=1e-7,
                                               err_msg=f"step {step + 1} (after zero_grad), parameter {i}")


def test_distributed_sampler_drop_last_matches_torch():
    pytest.importorskip("torch")
    from torch.utils.data import DistributedSampler as TorchSampler
    for drop_last in (False, True):
        kw = dict(num_replicas=3, shuffle=False, drop_last=drop_last)
        ours = [list(dist.DistributedSampler(list(range(10)), rank=r, **kw)) for r in range(3)]
        theirs = [list(TorchSampler(list(range(10)), rank=r, **kw)) for r in range(3)]
        assert ours == theirs, f"drop_last={drop_last}"
    assert ours == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_zero_rank_that_owns_nothing_still_gathers():
    inits = [np.arange(3, dtype=np.float32), np.arange(2, dtype=np.float32)]

    def train(make):
        params = [tt.tensor(v, requires_grad=True) for v in inits]
        opt = make(params)
        for p in params:
            p.grad = tt.tensor(np.ones_like(p.numpy()))
        opt.step()
        return getattr(opt, "optim", opt) is None, [p.numpy() for p in params]

    _, expected = train(lambda ps: AdamW(ps, lr=0.1))
    results = dist.ThreadGroup.run(3, train, lambda ps: dist.ZeroRedundancyOptimizer(ps, optimizer_class=AdamW, lr=0.1),
                                   timeout=5.0)
    assert [owns_nothing for owns_nothing, _ in results] == [False, False, True]
    for rank, (_, params) in enumerate(results):
        for got, want in zip(params, expected):
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"rank {rank}")


def test_ddp_grads_keep_the_dtype_and_the_cap_is_in_mebibytes(device):
    ddp = dist.DistributedDataParallel(Sequential(Linear(500, 500)).to(device), bucket_cap_mb=1)
    assert len(ddp.buckets) == 1, "1,002,000 bytes fit one 1-MiB (2**20 bytes) bucket"
    ddp(tt.randn(2, 500, device=device)).sum().backward()
    assert {p.grad.dtype for p in ddp.module.parameters()} == {tt.float32}


def test_ring_all_reduce_sends_two_n_minus_one_chunks_per_rank(monkeypatch):
    sends = []
    original = dist.ThreadGroup.send
    monkeypatch.setattr(dist.ThreadGroup, "send", lambda self, array, dst: (sends.append(self.rank),
                                                                             original(self, array, dst)))
    dist.ThreadGroup.run(3, lambda: ring_all_reduce(tt.ones(6)).tolist())
    assert sorted(sends) == [0] * 4 + [1] * 4 + [2] * 4, "2(n - 1) = 4 sends per rank"


def test_zero_with_two_param_groups_in_float64_equals_adamw():
    """A decay / no-decay split: rank 1 owns only group 1; every rank keeps all groups; float64 stays float64."""
    inits = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate([(6, 4), (4,), (3, 6), (3,), (5,)])]

    def train(make):
        params = [tt.tensor(v, dtype=tt.float64, requires_grad=True) for v in inits]
        opt = make([{"params": params[:1], "weight_decay": 0.5}, {"params": params[1:], "weight_decay": 0.0,
                                                                   "lr": 0.01}], lr=0.1)
        for step in range(3):
            for i, p in enumerate(params):
                p.grad = tt.tensor(np.random.default_rng([step, i]).standard_normal(p.shape), dtype=tt.float64)
            opt.step()
        result = [p.numpy() for p in params]
        opt.zero_grad()
        return result, [len(g["params"]) for g in opt.param_groups], [p.grad is None for p in params]

    expected, _, _ = train(AdamW)
    for rank, (params, sizes, cleared) in enumerate(dist.ThreadGroup.run(2, train, dist.ZeroRedundancyOptimizer)):
        assert sizes == [1, 4] and all(cleared), f"rank {rank}: param_groups keep every parameter; zero_grad clears all"
        for got, want in zip(params, expected):
            assert got.dtype == np.float64
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"rank {rank}")
