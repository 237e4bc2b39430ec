"""Module 13 in one process: ZeRO-2 and ZeRO-3 on n ranks as threads (ThreadGroup) against one process,
checkpoints that re-shard, activation checkpointing, and the memory model against measurement.

The check with real ranks (MPI) is tests/distributed/test_sharding.py (marker `distributed`)."""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed import ThreadGroup
from tinytorch.distributed.fsdp import FullyShardedDataParallel, shard_bounds
from tinytorch.distributed.memory import _measure_strategy, gpt_activation_bytes, measure_memory, predict_memory
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import AdamW
from tinytorch.utils import checkpoint

CONFIG = dict(vocab_size=29, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)  # a key bias has a zero gradient that Adam would turn float noise into steps
STEPS, BATCH = 20, 12  # the global batch; every world size here (1..4) divides it
TOKENS = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (STEPS, BATCH, CONFIG["block_size"] + 1))


def loss_of(model, tokens):
    logits, _ = model(tt.tensor(tokens[:, :-1], dtype=tt.int64))
    return cross_entropy(logits.view(-1, logits.shape[-1]), tt.tensor(tokens[:, 1:], dtype=tt.int64).view(-1))


def make_gpt(init=None):
    """A GPT with tied embeddings and one frozen parameter (the position table)."""
    model = GPT(GPTConfig(**CONFIG))
    if init is not None:
        model.load_state_dict(init)  # ThreadGroup ranks share one RNG: values come from outside
    model.transformer.wpe.weight.requires_grad_(False)
    return model


tt.manual_seed(0)
INIT = {k: v.numpy().copy() for k, v in GPT(GPTConfig(**CONFIG)).state_dict().items()}


def train(stage=None):
    """20 AdamW steps: one process on the whole batch (stage None), or ZeRO-stage on this rank's part."""
    model = make_gpt(INIT)
    net, n, r = model, 1, 0
    if stage is not None:
        net = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=stage)
        n, r = dist.get_world_size(), dist.get_rank()
    opt = AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)  # at 1e-2 even DDP drifts 1e-5 from float rounding
    losses, part = [], BATCH // n
    for tokens in TOKENS:
        loss = loss_of(net, tokens[r * part:(r + 1) * part])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    state = net.state_dict() if stage is not None else model.state_dict()
    sizes = [sum(u.sizes) for u in getattr(net, "units", [])]
    return {k: v.numpy().copy() for k, v in state.items()}, losses, sizes


@pytest.fixture(scope="module")
def reference():
    return train()


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_zero_equals_one_process_at_the_combined_batch(reference, stage, world_size):
    expected, expected_losses, _ = reference
    ranks = ThreadGroup.run(world_size, train, stage)
    state, _, sizes = ranks[0]
    if world_size == 3:
        assert any(size % 3 for size in sizes), f"the test wants a unit whose size 3 does not divide: {sizes}"
    assert "lm_head.weight" in state and "transformer.wpe.weight" in state
    for name, want in expected.items():
        worst = float(np.abs(state[name] - want).max())
        assert worst <= 1e-5, f"ZeRO-{stage} x {world_size}: {name} differs from one process by {worst:.3g}"
    assert np.array_equal(state["transformer.wpe.weight"], INIT["transformer.wpe.weight"]), "frozen stays put"
    losses = np.mean([r[1] for r in ranks], axis=0)  # each rank's loss is the mean over its part
    assert np.abs(losses - expected_losses).max() <= 1e-5, f"losses: {losses[:3]} vs {expected_losses[:3]}"
    assert all(r[0] == {} for r in ranks[1:]), "state_dict() is consolidated on rank 0 only"


def test_each_rank_keeps_one_shard_and_zero3_frees_the_blocks():
    def rank():
        model = make_gpt(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3)
        at_rest = [p.data.size for p in model.transformer.h[0].parameters()]
        loss = loss_of(fsdp, TOKENS[0][:6])
        between = measure_memory(fsdp)["buffers"]  # gathered parameters alive between forward and backward
        loss.backward()
        after = measure_memory(fsdp)["buffers"]
        return at_rest, [u.shard.data.size for u in fsdp.units], [u.padded for u in fsdp.units], between, after
    for at_rest, shards, padded, between, after in ThreadGroup.run(2, rank):
        assert set(at_rest) == {0}, f"ZeRO-3 keeps no block parameter whole at rest: sizes {at_rest}"
        assert shards == [p // 2 for p in padded], f"one shard per unit, half the padded vector: {shards}"
        assert between == 4 * padded[-1], (
            f"between forward and backward only the root unit stays gathered ({4 * padded[-1]} B), got {between} B")
        assert after == 0, f"after backward nothing stays gathered, got {after} B"


@pytest.mark.parametrize("saved_on, loaded_on", [(2, 3), (4, 1)])
def test_a_consolidated_checkpoint_reshards_for_any_world_size(saved_on, loaded_on):
    def save():
        model = make_gpt(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h)
        opt = AdamW(fsdp.parameters(), lr=1e-2)
        loss_of(fsdp, TOKENS[0][:4]).backward()
        opt.step()
        return fsdp.state_dict()
    saved = ThreadGroup.run(saved_on, save)[0]

    def load():
        model = make_gpt(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h)
        fsdp.load_state_dict(saved)
        return fsdp.state_dict(rank0_only=False)
    for state in ThreadGroup.run(loaded_on, load):
        for name, value in saved.items():
            assert np.array_equal(state[name].numpy(), value.numpy()), f"{name} changed through save/load"
    plain = make_gpt()
    plain.load_state_dict(saved)  # and the unwrapped model reads it too
    assert np.array_equal(plain.lm_head.weight.numpy(), saved["transformer.wte.weight"].numpy())


def test_clip_grad_norm_over_shards_equals_the_whole_model():
    from tinytorch.nn.utils import clip_grad_norm_
    model = make_gpt(INIT)
    loss_of(model, TOKENS[0]).backward()
    expected = float(clip_grad_norm_(model.parameters(), 0.1))
    clipped = {name: p.grad.numpy().copy() for name, p in model.named_parameters() if p.grad is not None}

    def rank():
        model = make_gpt(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h)
        r, part = dist.get_rank(), BATCH // dist.get_world_size()
        loss_of(fsdp, TOKENS[0][r * part:(r + 1) * part]).backward()
        norm = fsdp.clip_grad_norm_(0.1)
        assert isinstance(norm, tt.Tensor) and norm.shape == (), f"the norm is a 0-d tensor, got {norm!r}"
        norm = float(norm)
        return norm, [u.shard.grad.numpy().copy() for u in fsdp.units], fsdp
    ranks = ThreadGroup.run(2, rank)
    for norm, _, _ in ranks:
        assert abs(norm - expected) <= 1e-4 * expected, f"sharded norm {norm} vs the whole model's {expected}"
    fsdp = ranks[0][2]
    for i, unit in enumerate(fsdp.units):
        flat = unit.flatten([clipped.get(fsdp._names[id(p)]) for p in unit.params])
        got = np.concatenate([r[1][i] for r in ranks])
        assert np.allclose(got, flat, atol=1e-7), f"unit {i}: clipped shard gradients differ from the whole model's"


def test_shard_bounds_pad_to_a_multiple_of_the_world_size():
    assert shard_bounds(10, 4) == (3, 12) and shard_bounds(8, 4) == (2, 8) and shard_bounds(1, 3) == (1, 3)


def test_an_unused_parameter_is_reported_at_the_next_forward():
    class Net(tt.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = tt.nn.Linear(2, 2)
            self.scale = tt.nn.Parameter(tt.ones(2))
            self.unused = tt.nn.Parameter(tt.zeros(2))

        def forward(self, x):
            return self.a(x) * self.scale

    net = Net()
    fsdp = FullyShardedDataParallel(net, units=[net.a])
    fsdp(tt.ones(3, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="no gradient"):
        fsdp(tt.ones(3, 2))



class _Twice(tt.nn.Module):
    """A block and a head; `twice` runs the block a second time on its own output (shared weights)."""

    def __init__(self):
        super().__init__()
        self.block, self.head = tt.nn.Linear(4, 4), tt.nn.Linear(4, 1)

    def forward(self, x, twice=False):
        h = self.block(x)
        if twice:
            h = self.block(h.tanh())
        return self.head(h)


def _twice_loss(net, x, how):
    if how == "block used twice":
        return (net(x, twice=True) ** 2).mean()
    return (net(x[:2]) ** 2).mean() + (net(x[2:]) ** 2).mean()  # two forwards, one backward (siamese)


@pytest.mark.parametrize("stage", [2, 3])
@pytest.mark.parametrize("how", ["block used twice", "two forwards"])
def test_a_unit_run_twice_before_one_backward_gets_the_gradient_of_both_uses(stage, how):
    tt.manual_seed(5)
    init, x = {k: v.numpy().copy() for k, v in _Twice().state_dict().items()}, tt.randn(2, 4, 4)
    plain = _Twice()
    plain.load_state_dict(init)
    for _ in range(2):  # two passes, accumulated
        ((_twice_loss(plain, x[0], how) + _twice_loss(plain, x[1], how)) / 2).backward()

    def rank():
        net = _Twice()
        net.load_state_dict(init)
        fsdp = FullyShardedDataParallel(net, units=[net.block], zero_stage=stage)
        for _ in range(2):
            _twice_loss(fsdp, x[dist.get_rank()], how).backward()
        return [u.shard.grad.numpy().copy() for u in fsdp.units], measure_memory(fsdp)["buffers"], fsdp
    ranks = ThreadGroup.run(2, rank)
    fsdp = ranks[0][2]
    for i, unit in enumerate(fsdp.units):
        want = unit.flatten([dict(plain.named_parameters())[fsdp._names[id(p)]].grad.data for p in unit.params])
        got = np.concatenate([r[0][i] for r in ranks])
        assert np.allclose(got, want, atol=1e-6), f"ZeRO-{stage}, {how}: unit {i}'s gradient {got} vs {want}"
    assert all(r[1] == 0 for r in ranks), "after backward nothing stays gathered"


def test_zero3_keeps_each_parameters_ndim_for_groups_built_after_wrapping():
    """PyTorch's advice is to build the optimizer after wrapping; GPT's groups decay the weights with ndim >= 2."""
    model = make_gpt(INIT)
    before = [[id(p) for p in g["params"]] for g in model.configure_optimizers(weight_decay=0.1).param_groups]
    FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3, process_group=dist.SingleProcessGroup())
    after = [[id(p) for p in g["params"]] for g in model.configure_optimizers(weight_decay=0.1).param_groups]
    assert after == before, "ZeRO-3's empty placeholders must keep each parameter's ndim"
    assert all(p.data.size == 0 for p in model.transformer.h[0].parameters()), "and hold nothing at rest"

# --- activation checkpointing ------------------------------------------------------------------------

def grads_of(checkpoint_blocks):
    tt.manual_seed(3)
    model = GPT(GPTConfig(**dict(CONFIG, dropout=0.3, checkpoint_blocks=checkpoint_blocks)))
    tt.manual_seed(4)
    loss_of(model, TOKENS[0]).backward()
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


def test_checkpoint_blocks_gives_the_plain_gradients_with_dropout():
    plain, again = grads_of(False), grads_of(True)
    for name, g in plain.items():
        worst = float(np.abs(again[name] - g).max())
        assert worst <= 1e-6, f"checkpoint_blocks: {name}.grad differs by {worst:.3g}"


def test_checkpoint_restores_the_random_state_and_passes_input_gradients():
    x = tt.randn(4, 5, requires_grad=True)
    tt.manual_seed(0)
    y = checkpoint(lambda t: tt.nn.functional.dropout(t, 0.5) * t, x)
    after_forward = tt.rand(1).item()
    y.sum().backward()
    assert tt.rand(1).item() != after_forward, "the recomputation must not rewind the generator for later draws"
    tt.manual_seed(0)
    mask = (tt.nn.functional.dropout(tt.ones(4, 5), 0.5)).numpy()
    assert np.allclose(x.grad.numpy(), 2 * x.numpy() * mask), "d/dx (mask·x·x) = 2·mask·x, with the forward's mask"


def test_checkpoint_composes_with_zero3():
    def run(stage_and_ckpt):
        model = GPT(GPTConfig(**dict(CONFIG, checkpoint_blocks=stage_and_ckpt)))
        model.load_state_dict(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h)
        opt = AdamW(fsdp.parameters(), lr=1e-2)
        r = dist.get_rank()
        for tokens in TOKENS[:3]:
            loss_of(fsdp, tokens[r * 6:(r + 1) * 6]).backward()
            opt.step()
            opt.zero_grad()
        return fsdp.state_dict()
    plain, ckpt = ThreadGroup.run(2, run, False)[0], ThreadGroup.run(2, run, True)[0]
    for name, value in plain.items():
        assert np.abs(ckpt[name].numpy() - value.numpy()).max() <= 1e-6, name


# --- memory model ------------------------------------------------------------------------------------

MEM = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)


def memory_of(strategy, checkpoint_blocks=False, config=MEM):
    """One rank's measured bytes by part, through the provided measurement the lesson uses."""
    parts = _measure_strategy(GPTConfig(**dict(config.to_dict(), checkpoint_blocks=checkpoint_blocks)), 2, strategy)
    return dict(zip(("params", "grads", "optimizer", "activations"), parts))


@pytest.mark.parametrize("world_size", [1, 2, 4])
@pytest.mark.parametrize("strategy", ["ddp", "zero1", "zero2", "zero3"])
def test_predicted_memory_is_within_ten_percent_of_measured(strategy, world_size):
    n_params = sum(p.data.size for p in GPT(MEM).parameters())
    predicted = predict_memory(n_params, world_size, strategy, gpt_activation_bytes(MEM, 2, 16))
    ranks = ThreadGroup.run(world_size, memory_of, strategy)
    for part in ("params", "grads", "optimizer", "activations"):
        measured = np.mean([r[part] for r in ranks])
        assert abs(measured - predicted[part]) <= 0.1 * predicted[part], (
            f"{strategy} x {world_size}: {part} predicted {predicted[part]:.0f} B, measured {measured:.0f} B")


def test_zero3_at_four_ranks_holds_at_most_35_percent_of_ddp():
    static = ("params", "grads", "optimizer")
    ddp = sum(memory_of("ddp")[k] for k in static)
    zero3 = max(sum(r[k] for k in static) for r in ThreadGroup.run(4, memory_of, "zero3"))
    assert zero3 <= 0.35 * ddp, f"ZeRO-3 x 4 holds {zero3} B per rank, DDP {ddp} B"


def test_checkpointing_halves_the_activations_of_a_six_block_gpt():
    six = GPTConfig(**dict(MEM.to_dict(), n_layer=6))
    plain, kept = memory_of("zero2", False, six)["activations"], memory_of("zero2", True, six)["activations"]
    assert kept <= 0.5 * plain, f"checkpoint_blocks keeps {kept} B of activations, plain {plain} B"
    predicted = gpt_activation_bytes(six, 2, 16, checkpoint=True)
    assert abs(kept - predicted) <= 0.1 * predicted, f"checkpointed: predicted {predicted}, measured {kept}"


def test_zero3_frees_every_unit_after_a_forward_under_no_grad():
    """No backward follows an evaluation forward, so the root unit too is freed right after it."""
    def rank():
        model = make_gpt(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3)
        with tt.no_grad():
            loss_of(fsdp, TOKENS[0][:6])
        return [u.gathered for u in fsdp.units], measure_memory(fsdp)["buffers"]
    for gathered, live in ThreadGroup.run(2, rank):
        assert gathered == [False] * 3 and live == 0, f"still gathered: {gathered}, {live} B alive"


def test_checkpoint_backward_under_no_grad_still_recomputes_with_a_graph():
    x = tt.randn(2, 3, requires_grad=True)
    total = checkpoint(lambda t: t * t, x).sum()
    with tt.no_grad():
        total.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy(), rtol=1e-6)


def _zero2_unit_rank():
    """One ZeRO-2 _FlatUnit of a float32 (2, 3) and (4,) parameter: its shard, gather and gradient."""
    from tinytorch.distributed.fsdp import _FlatUnit, _MPIRules
    pg = _MPIRules(tt.distributed.process_group._group(None))  # refuses an all-gather from its own output
    params = [tt.nn.Parameter(tt.zeros(2, 3)), tt.nn.Parameter(tt.zeros(4))]
    unit = _FlatUnit(None, params, [], pg.rank, pg.size, keep_full=True)
    unit.gather(pg)  # the shard is a view of unit.full: sending it uncopied is MPI's "Buffers must not be aliased"
    unit.reduce_scatter_grad(pg, unit.flatten([np.ones((2, 3), np.float32), np.ones(4, np.float32)]))
    return unit.shard.data.dtype, unit.shard.grad.data.dtype


def test_flat_unit_gathers_a_copy_and_keeps_float32():
    """Twin of test-flat-unit: no aliased all-gather under ZeRO-2; the shard and its gradient stay float32."""
    assert ThreadGroup.run(2, _zero2_unit_rank) == [(np.float32, np.float32)] * 2


def test_mpi_rules_refuse_an_aliased_all_gather():
    from tinytorch.distributed.fsdp import _MPIRules
    out = np.zeros((1, 3), np.float32)
    with pytest.raises(ValueError, match="shares memory"):
        _MPIRules(tt.distributed.process_group._group(None)).all_gather(out, out[0])


def test_unit_forward_puts_the_parameters_back():
    """Twin of test-fsdp: after a unit's forward every module holds its own Parameter again, not a signal."""
    def rank():
        model = make_gpt(INIT)
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3)
        loss_of(fsdp, TOKENS[0][:6]).backward()
        return [getattr(owner, name) is p for u in fsdp.units for owner, name, p in u.slots]
    for restored in ThreadGroup.run(2, rank):
        assert all(restored), f"{restored.count(False)} attributes still hold a signal"
