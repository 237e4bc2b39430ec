"""Module 13's FSDP options on ThreadGroup ranks: prefetch (same numbers, gathers issued early) and
mixed precision (float32 master shards, low-precision gathered parameters, float32 gradients)."""

from functools import partial

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed import ThreadGroup
from tinytorch.distributed.fsdp import FullyShardedDataParallel
from tinytorch.distributed.memory import measure_memory
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import AdamW

CONFIG = dict(vocab_size=29, block_size=8, n_layer=3, n_head=2, n_embd=16, dropout=0.0, bias=False)
STEPS, BATCH = 10, 6
TOKENS = np.random.default_rng(1).integers(0, CONFIG["vocab_size"], (STEPS, BATCH, CONFIG["block_size"] + 1))
tt.manual_seed(0)
INIT = {k: v.numpy().copy() for k, v in GPT(GPTConfig(**CONFIG)).state_dict().items()}


def loss_of(model, tokens):
    logits, _ = model(tt.tensor(tokens[:, :-1], dtype=tt.int64))
    return cross_entropy(logits.view(-1, logits.shape[-1]).float(), tt.tensor(tokens[:, 1:], dtype=tt.int64).view(-1))


def train(steps=STEPS, log=None, evaluate=False, **options):
    """AdamW steps under FSDP (ZeRO-3 unless given) on this rank's part of the batch; losses and final state.

    evaluate: also a no_grad forward before each step."""
    model = GPT(GPTConfig(**CONFIG))
    model.load_state_dict(INIT)
    options.setdefault("zero_stage", 3)
    net = FullyShardedDataParallel(model, units=model.transformer.h, **options)
    if log is not None and dist.get_rank() == 0:
        _record(net, model, log)
    opt = AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    n, r = dist.get_world_size(), dist.get_rank()
    part, losses = BATCH // n, []
    for tokens in TOKENS[:steps]:
        if evaluate:  # an eval forward between steps: its gathers must not confuse the prefetch order
            with tt.no_grad():
                losses.append(loss_of(net, tokens[r * part:(r + 1) * part]).item())
        loss = loss_of(net, tokens[r * part:(r + 1) * part])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    state = net.state_dict()
    return {k: v.numpy().copy() for k, v in state.items()}, losses


def _record(net, model, log):
    """Log rank 0's gathers (which unit) and the blocks' forward start and end, in order."""
    pg = net._pg
    names = {id(u): f"unit{i}" for i, u in enumerate(net.units)}
    issue = net._issue_gather

    def logged_issue(unit, async_op):
        log.append(("gather", names[id(unit)], async_op))
        return issue(unit, async_op)
    net._issue_gather = logged_issue
    for i, block in enumerate(model.transformer.h):
        forward = block.forward

        def logged_forward(*args, _forward=forward, _i=i, **kwargs):
            log.append(("start", f"unit{_i}"))
            out = _forward(*args, **kwargs)
            log.append(("end", f"unit{_i}"))
            return out
        object.__setattr__(block, "forward", logged_forward)
    assert pg.rank == 0


@pytest.mark.parametrize("world_size, options", [(2, {}), (3, {}), (2, {"zero_stage": 2}),
                                                   (2, {"param_dtype": tt.bfloat16}), (3, {"evaluate": True})])
def test_prefetch_gives_the_same_numbers_bit_for_bit(world_size, options):
    plain = ThreadGroup.run(world_size, partial(train, 4, **options))[0]
    early = ThreadGroup.run(world_size, partial(train, 4, prefetch=True, **options))[0]
    assert plain[1] == early[1], f"losses differ with prefetch ({options}): {plain[1]} vs {early[1]}"
    for name, want in plain[0].items():
        assert np.array_equal(early[0][name], want), f"{name} differs with prefetch=True ({options})"


def test_prefetch_issues_the_next_units_gather_before_the_current_forward_ends():
    log = []
    ThreadGroup.run(2, partial(train, 2, log, prefetch=True))
    second = log[[i for i, e in enumerate(log) if e[0] == "start" and e[1] == "unit0"][1]:]  # step 2: orders known
    # the blocks are units 0..2 and the root unit 3: block i's forward ends after block i+1's gather was issued
    for i in range(2):
        issued = second.index(("gather", f"unit{i + 1}", True))
        assert issued < second.index(("end", f"unit{i}")), (
            f"prefetch: unit{i + 1}'s all-gather should be issued (async) before unit{i}'s forward ends: {second}")
    backward = second[second.index(("end", "unit2")):]
    assert ("gather", "unit1", True) in backward and ("gather", "unit0", True) in backward, (
        f"backward should prefetch the blocks in reverse order: {backward}")
    waited = [e[1] for e in second if e[0] == "gather" and e[2] is False]
    assert waited == ["unit2"], (
        f"after the first step only backward's first gather (the last block) has nothing to overlap with: {second}")


def test_without_prefetch_no_gather_is_issued_early():
    log = []
    ThreadGroup.run(2, train, 2, log)
    assert log and all(e[2] is False for e in log if e[0] == "gather"), f"prefetch=False gathered early: {log}"


def _mixed(param_dtype):
    """Train 10 steps; also return the shards' dtypes and the dtype a block sees for its weights."""
    model = GPT(GPTConfig(**CONFIG))
    model.load_state_dict(INIT)
    net = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3, param_dtype=param_dtype)
    seen, attn = [], model.transformer.h[0].attn
    forward = attn.forward

    def spying_forward(*args, **kwargs):
        seen.append(attn.c_attn.weight.dtype)  # inside the unit: the signal that shadows the weight
        return forward(*args, **kwargs)
    object.__setattr__(attn, "forward", spying_forward)
    opt = AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
    n, r = dist.get_world_size(), dist.get_rank()
    part, losses, held = BATCH // n, [], None
    for step, tokens in enumerate(TOKENS):
        loss = loss_of(net, tokens[r * part:(r + 1) * part])
        if step == 0:
            held = measure_memory(net, opt, loss)["buffers"]  # the root's gathered parameters
        # after a forward, the masters still have float32's precision, not the gathered copies' rounding
        rounded = {"rounded" for u in net.units if param_dtype is not None and
                   np.array_equal(u.shard.data, u.shard.data.astype(param_dtype).astype(np.float32))}
        loss.backward()
        grads = {str(u.shard.grad.data.dtype) for u in net.units}
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    shards = {str(u.shard.data.dtype) for u in net.units} | grads | rounded
    return losses, shards, {str(d) for d in seen}, held


@pytest.mark.parametrize("param_dtype, tolerance", [("bfloat16", 2e-2), ("float16", 5e-3)])
def test_mixed_precision_keeps_float32_masters_and_trains_like_float32(param_dtype, tolerance):
    dtype = getattr(tt, param_dtype)
    full, full_shards, full_seen, full_held = ThreadGroup.run(2, _mixed, None)[0]
    low, shards, seen, held = ThreadGroup.run(2, _mixed, dtype)[0]
    assert full_seen == {"float32"} and seen == {param_dtype}, (
        f"a block's weights during forward should be {param_dtype}, got {seen} (float32 run: {full_seen})")
    assert shards == {"float32"}, f"master shards and their gradients must stay float32, got {shards}"
    worst = max(abs(a - b) for a, b in zip(full, low))
    print(f"{param_dtype}: worst loss difference {worst:.2e}, gathered bytes {held} vs {full_held}")
    assert worst < tolerance, f"{param_dtype} losses differ from float32 by {worst:.3g} over 10 steps: {low} vs {full}"
    assert held * 2 == full_held, f"gathered parameters should take half the bytes: {held} vs {full_held}"


def test_param_dtype_is_checked():
    model = GPT(GPTConfig(**CONFIG))
    with pytest.raises(TypeError, match="param_dtype"):
        ThreadGroup.run(1, FullyShardedDataParallel, model, (), 3, None, False, tt.float64)
    with pytest.raises(ValueError, match="zero_stage=3"):
        ThreadGroup.run(1, FullyShardedDataParallel, model, (), 2, None, False, tt.bfloat16)
