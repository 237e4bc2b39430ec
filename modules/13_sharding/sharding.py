# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 13 — Sharding: ZeRO-2, ZeRO-3 / FSDP, activation checkpointing
#
# Module 11's data parallelism copies the whole model onto every rank. With
# AdamW in float32 each parameter costs 16 bytes on *each* rank: 4 for the
# weight, 4 for its gradient, 8 for Adam's two moments. A 1.5 B-parameter model
# needs 24 GB per rank before a single activation is stored, however many ranks
# you add. ZeRO-1 sharded the 8 bytes of optimizer state. This module shards the
# rest, and then attacks the other big consumer, the activations:
#
# | | weights | grads | Adam state | bytes/param on each of n ranks |
# | --- | --- | --- | --- | --- |
# | DDP | full | full | full | 16 |
# | ZeRO-1 | full | full | 1/n | 8 + 8/n |
# | ZeRO-2 | full | 1/n | 1/n | 4 + 12/n |
# | ZeRO-3 (FSDP) | 1/n | 1/n | 1/n | 16/n |
#
# The idea of ZeRO-3 (Rajbhandari et al., 2019), called FSDP in PyTorch: cut
# the model into **units** (a transformer block each). At rest a rank keeps only
# its 1/n slice of each unit's parameters. Just before a unit runs forward, the
# ranks **all-gather** its parameters; right after, they drop them. Backward
# gathers them once more, and then **reduce-scatters** the unit's gradients so
# that each rank receives the averaged gradient of exactly its own slice. The
# optimizer is an ordinary AdamW that steps the slices. Only one unit is ever
# whole at a time.
#
# **You will write:** the shard arithmetic; a unit's flat buffer with its
# all-gather and reduce-scatter; the gather/free around a unit's forward and
# backward and what happens when a gradient is ready (this one class gives
# ZeRO-2 and ZeRO-3); activation checkpointing; and the memory model, which we
# then check against the bytes that live arrays really hold.

# %% [markdown]
# ## 0. What is provided
#
# From module 11: the process group (`ThreadGroup.run(n, fn)` runs n ranks as
# threads of this notebook; `tito run --nproc n` runs real processes) and its
# collectives on arrays, `all_gather(out, array)` and
# `reduce_scatter(out, array, op)`. From `provided.py`: `_ShardedBase`, which
# assigns parameters to units, checks that all ranks built the same model,
# lists the shards as the parameters an optimizer steps, and turns shards into a
# consolidated checkpoint and back; `measure_memory`, which counts the bytes
# that live arrays hold; and `_MPIRules(pg)`, a process group that refuses, as
# MPI does, an all-gather that sends from the buffer it receives into (thread
# ranks copy everything, so they would not notice); and `_recomputable`, the
# first line of section 4's `checkpoint`.

# %%
#| default_exp distributed.fsdp

# %%
from contextlib import suppress

import numpy as np

import tinytorch as tt
from tinytorch.distributed import ThreadGroup, get_rank, get_world_size
from tinytorch.distributed.fsdp import _MPIRules, _next_token_loss as _loss, _Poisoned, _ShardedBase
from tinytorch.distributed.memory import measure_memory, _memory_table
from tinytorch.models import GPT, GPTConfig
from tinytorch.optim import AdamW
from tinytorch.utils import _recomputable

print("two thread ranks:", ThreadGroup.run(2, lambda: (get_rank(), get_world_size())))

# %% [markdown]
# ## 1. Flat shards
#
# **Why flat.** A unit holds parameters of many shapes. Sharding each one
# separately would give every rank ragged pieces and one collective per
# parameter. Instead we lay the unit's parameters end to end in **one flat
# vector** of N values and cut *that* into n equal slices: one all-gather and
# one reduce-scatter per unit, whatever its shapes.
#
# **Equal slices.** Collectives on flat buffers want every rank's piece to have
# the same length, so we pad the vector with zeros up to a multiple of n. Each
# rank holds s = ⌈N / n⌉ values, and the padded length is n·s. Rank r owns
# positions [r·s, (r+1)·s).
#
# Worked example: N = 10 on n = 4 ranks gives s = 3, padded length 12, and
# rank 3 owns positions 9, 10, 11: one real value and two zeros of padding.
# Padding costs at most n − 1 values per unit. The zeros are harmless: their
# gradient is zero, so AdamW leaves them at zero for ever.

# %% nbgrader={"grade": false, "grade_id": "shard-bounds", "locked": false, "schema_version": 3, "solution": true}
#| export
from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import Tensor, from_op
from tinytorch.distributed.process_group import ReduceOp
from tinytorch.nn import Parameter


def shard_bounds(numel, world_size):
    """(shard_size, padded): each of `world_size` ranks holds shard_size values of a zero-padded flat vector."""
    ### BEGIN SOLUTION
    shard_size = -(-numel // world_size)
    return shard_size, shard_size * world_size
    ### END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>The shard size is a division that rounds
# up; the padded length follows from it.</details>
# <details><summary>Hint 2</summary>s = ⌈N / n⌉, and the padded length is
# n · s. Integer division rounds down; add n − 1 first (or negate twice).</details>
# <details><summary>Hint 3</summary>Two lines: compute the shard size with
# `//`, return a pair of plain ints.</details>

# %% nbgrader={"grade": true, "grade_id": "test-shard-bounds", "locked": true, "points": 1, "schema_version": 3, "solution": false}
got = shard_bounds(10, 4)
assert got is not None and len(got) == 2, f"shard_bounds returns (shard_size, padded), got {got}"
assert tuple(got) == (3, 12), f"10 values on 4 ranks: 3 each, padded to 12; got {got}"
assert tuple(shard_bounds(12, 4)) == (3, 12), f"an even split needs no padding: got {shard_bounds(12, 4)}"
assert tuple(shard_bounds(5, 1)) == (5, 5), "one rank holds everything"
### BEGIN HIDDEN TESTS
assert tuple(shard_bounds(2, 3)) == (1, 3), "fewer values than ranks: one each, padded"
### END HIDDEN TESTS
print("shard_bounds: ok")

# %% [markdown]
# ## 2. A unit's flat buffer
#
# `_FlatUnit` holds one unit's trainable parameters (`self.params`, with
# `self.sizes`, `self.shapes` and `self.offsets` into the flat vector) and
# this rank's slice of their values, `self.shard`: a 1-D `Parameter` of s
# values, the thing the optimizer steps. Three methods carry the idea:
#
# - `flatten(arrays)`: the arrays (one per parameter) laid end to end at their
#   offsets in a zero vector of the padded length.
# - `gather(pg)`: every rank contributes its shard; `pg.all_gather(out, shard)`
#   fills `out`, shaped (n, s), with rank k's shard in row k. Read row by row,
#   that is the padded flat vector. Return one view per parameter, reshaped to
#   its shape: the whole parameters, no copy. Where to gather into: `self.full`
#   when it is not None (ZeRO-2 keeps one full buffer for ever), otherwise a
#   fresh vector (ZeRO-3 drops it after use). Send a *copy* of the shard: under
#   ZeRO-2 the shard is a view of `self.full`, and MPI forbids sending from
#   the buffer it receives into.
# - `reduce_scatter_grad(pg, flat_grad)`: `flat_grad` is this rank's padded
#   flat gradient of the whole unit. `pg.reduce_scatter(out, flat_grad,
#   ReduceOp.AVG)` leaves in `out` (s values) the *average over ranks* of the
#   slice this rank owns. Add it to `self.shard.grad` (set it, as a tensor,
#   the first time; add in place later, for gradient accumulation).
#
# Why the average: each rank's loss is a mean over its part of the batch, so
# the mean of the ranks' gradients is the gradient of the whole batch's mean.

# %% nbgrader={"grade": false, "grade_id": "flat-unit", "locked": false, "schema_version": 3, "solution": true}
#| export
class _FlatUnit:
    """One unit's trainable parameters as one flat vector, of which this rank keeps one shard."""

    def __init__(self, module, params, slots, rank, world_size, keep_full):
        self.module, self.params, self.slots = module, params, slots  # slots: (owner, attribute, param)
        self.rank, self.world_size = rank, world_size
        self.device, self.dtype = params[0]._device, params[0].data.dtype
        self.xp = get_xp(self.device)
        self.index = {id(p): i for i, p in enumerate(params)}
        self.sizes = [int(p.data.size) for p in params]
        self.shapes = [tuple(p.data.shape) for p in params]
        self.offsets = [int(o) for o in np.cumsum([0] + self.sizes[:-1])]
        self.shard_size, self.padded = shard_bounds(sum(self.sizes), world_size)
        flat = self.flatten([p.data for p in params])
        mine = slice(rank * self.shard_size, (rank + 1) * self.shard_size)
        self.full = flat if keep_full else None
        # ZeRO-2: the shard is a view of the full vector; ZeRO-3: a copy, and the full vector is dropped
        self.shard = Parameter(from_op(flat[mine] if keep_full else flat[mine].copy(), self.device))
        for p, view in zip(params, self._views(flat) if keep_full else [None] * len(params)):
            # ZeRO-3: nothing at rest, but the parameter's ndim, that optimizer groups built after wrapping read
            p.data = view if view is not None else self.xp.empty((0,) * max(p.data.ndim, 1), dtype=self.dtype)
        self.signals, self.gathered, self.grad_buffer, self.pending = [], keep_full, None, 0

    def _views(self, flat):
        return [flat[o:o + n].reshape(s) for o, n, s in zip(self.offsets, self.sizes, self.shapes)]

    def load_flat(self, flat, pg):
        """Take this rank's slice of a whole (padded) flat vector, e.g. from a checkpoint."""
        if self.full is not None:
            self.full[...] = flat  # the shard is a view of it
        else:
            self.shard.data[...] = flat[self.rank * self.shard_size:(self.rank + 1) * self.shard_size]

    def flatten(self, arrays):
        """The arrays (one per parameter) end to end, zero-padded to self.padded values."""
        ### BEGIN SOLUTION
        flat = self.xp.zeros(self.padded, dtype=self.dtype)
        for a, start, size in zip(arrays, self.offsets, self.sizes):
            flat[start:start + size] = a.reshape(-1)
        return flat
        ### END SOLUTION

    def gather(self, pg):
        """All-gather the shards: one view per parameter, of its whole values."""
        ### BEGIN SOLUTION
        out = self.full if self.full is not None else self.xp.empty(self.padded, dtype=self.dtype)
        pg.all_gather(out.reshape(self.world_size, self.shard_size), self.shard.data.copy())
        return self._views(out)
        ### END SOLUTION

    def reduce_scatter_grad(self, pg, flat_grad):
        """Average the unit's flat gradient over ranks; add this rank's slice into self.shard.grad."""
        ### BEGIN SOLUTION
        mine = self.xp.empty(self.shard_size, dtype=self.dtype)
        pg.reduce_scatter(mine, flat_grad, ReduceOp.AVG)
        if self.shard.grad is None:
            self.shard.grad = from_op(mine, self.device)
        else:
            self.shard.grad.data += mine
        ### END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>`flatten`: a zero vector, then each array
# copied to its place. `gather`: pick the output, one collective, then cut it
# into views. `reduce_scatter_grad`: one collective into a fresh vector, then
# set or add.</details>
# <details><summary>Hint 2</summary>Parameter i lives at
# `[offsets[i], offsets[i] + sizes[i])` of the flat vector. The all-gather's
# output is the flat vector reshaped to `(world_size, shard_size)`; its input
# is a copy of this rank's shard (under ZeRO-2 the shard is a view of the
# buffer being written). `self._views(flat)` makes the per-parameter
# views. The reduce-scatter's output has `shard_size` values.</details>
# <details><summary>Hint 3</summary>`flatten`: a zero vector of `padded`
# entries in the unit's dtype, and a loop over `zip(arrays, self.offsets,
# self.sizes)` that assigns each flattened array. `reduce_scatter_grad`: an
# empty output, `pg.reduce_scatter(...)`, then a new leaf tensor on the unit's
# device the first time, `+=` on `.grad.data` after.</details>

# %% nbgrader={"grade": true, "grade_id": "test-flat-unit", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _unit_rank(keep_full):
    pg = _MPIRules(tt.distributed.process_group._group(None))  # provided: refuses aliased buffers, as MPI does
    params = [tt.nn.Parameter(tt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3))),
              tt.nn.Parameter(tt.tensor([10.0, 11.0, 12.0, 13.0]))]
    unit = _FlatUnit(None, params, [], pg.rank, pg.size, keep_full)
    unit.xp = _Poisoned(unit.xp)  # provided: its empty() is NaN-filled, as a reused buffer may hold anything
    shard = unit.shard.numpy().copy()
    whole = [v.copy() for v in unit.gather(pg)]
    flat_grad = unit.flatten([np.full((2, 3), pg.rank + 1.0, np.float32), np.full(4, 2.0 * (pg.rank + 1), np.float32)])
    unit.reduce_scatter_grad(pg, flat_grad)
    once = unit.shard.grad.numpy().copy()
    unit.reduce_scatter_grad(pg, 3 * flat_grad)  # a second micro-batch (3x the first) before the step: accumulation
    return shard, whole, once, unit.shard.grad.numpy().copy()


for keep in (False, True):
    ranks = ThreadGroup.run(3, _unit_rank, keep)
    shards = [r[0] for r in ranks]
    assert all(s.shape == (4,) and s.dtype == np.float32 for s in shards), \
        f"10 float32 values on 3 ranks: float32 shards of 4, got {[(s.shape, s.dtype.name) for s in shards]}"
    assert np.concatenate(shards).tolist() == list(range(6)) + [10.0, 11.0, 12.0, 13.0, 0.0, 0.0], (
        f"the shards, end to end, are the flat vector padded with zeros: got {np.concatenate(shards)}")
    for rank, (_, whole, grad, twice) in enumerate(ranks):
        assert [w.shape for w in whole] == [(2, 3), (4,)], f"gather returns each parameter in its own shape, got {[w.shape for w in whole]}"
        assert whole[1].tolist() == [10.0, 11.0, 12.0, 13.0], f"rank {rank}: gathered {whole[1]}, expected [10, 11, 12, 13]"
        expected = np.array([2.0] * 6 + [4.0] * 4 + [0.0, 0.0], np.float32)[rank * 4:(rank + 1) * 4]
        assert grad.shape == (4,) and grad.dtype == np.float32 and np.allclose(grad, expected), (
            f"rank {rank}: shard gradient {grad} ({grad.dtype}), expected the average over ranks {expected} in the "
            f"unit's float32 (averaged, not summed? padding NaN: flatten must write zeros there, not leave empty())")
        assert np.allclose(twice, 4 * expected), (f"rank {rank}: a 2nd micro-batch of 3x the gradient adds to shard.grad: "
                                                  f"expected 1x + 3x = {4 * expected}, got {twice} (a reused buffer?)")
print("_FlatUnit: ok")

# %% [markdown]
# ## 3. Gather, run, free: the unit's forward and backward
#
# `FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3)`
# builds one `_FlatUnit` per block, plus the root unit (the model, holding the
# embeddings, the final norm and the tied head), and hooks each unit's
# `forward`. Around every call the hook runs the lesson's `_unit_forward`.
#
# **Shadowing.** Our autograd engine (module 02) has no hooks, so we use the
# trick from module 11's DDP. During the unit's forward, each of its
# parameters is replaced, in the module that reads it, by a *signal*: an
# identity op on the parameter whose data is the gathered view.
# `self._signal(unit, p, view)` makes one. The engine calls an op's backward
# once all the gradient into it has been summed, so the signal's backward is
# the moment "p's gradient of this pass is complete": it calls
# `self._grad_ready(unit, p, g)`. A unit that runs again before its backward
# (a block used twice, or two forwards then one backward) gets the same
# signals back from `self._signal`, so each parameter is still ready once.
#
# `_unit_forward(unit, forward, *args, **kwargs)`:
#
# 1. **gather**: the unit's parameter views, from its `gather` over the group;
# 2. **shadow**: one signal per parameter; set `unit.signals` to the list of
#    them, mark the unit gathered, and, when grad mode is on, set
#    `unit.pending` to the number of its parameters (gradients still to come);
# 3. **run**: for each `(owner, name, p)` in `unit.slots`,
#    `object.__setattr__(owner, name, signal)`; call `forward(*args, **kwargs)`;
#    *whatever happens*, put the parameters back (`try` / `finally`);
# 4. **free**: if `self._reshard(unit)` (ZeRO-3, not the root: the root is
#    needed again at once) or grad mode is off, `self._free(unit)`;
# 5. return the output passed through `_before_backward` (provided): an
#    identity op whose backward gathers the unit again if it was freed.
#
# `_grad_ready(unit, p, g)` is the other half:
#
# 1. copy g, flattened, into the unit's flat gradient `unit.grad_buffer` at p's
#    offset (create it with zeros of the padded length when it is None);
# 2. one gradient fewer is pending; when none is left: reduce-scatter the
#    buffer into the shard's gradient, drop the buffer (`None`), and, under
#    ZeRO-3, free the unit's parameters.
#
# **ZeRO-2 is the same class.** With `zero_stage=2` every unit keeps a full
# buffer: `gather` refreshes it (this is ZeRO-2's all-gather of the updated
# parameters, done as the next forward reaches the unit) and nothing is freed.
# Gradients are still reduce-scattered unit by unit as backward completes them,
# and the optimizer still sees only the shards.
#
# Every rank calls the same collectives in the same order: the units run in the
# same order in forward, and the engine's backward order is the same on every
# rank, because every rank builds the same graph.

# %% nbgrader={"grade": false, "grade_id": "fsdp", "locked": false, "schema_version": 3, "solution": true}
#| export
class FullyShardedDataParallel(_ShardedBase):
    """ZeRO-3 (zero_stage=3) or ZeRO-2 (zero_stage=2) data parallelism with flat per-unit shards.

    fsdp = FullyShardedDataParallel(model, units=model.transformer.h); opt = AdamW(fsdp.parameters(), ...).
    fsdp.parameters() are this rank's shards; state_dict() is consolidated (collective, rank 0 gets it).
    prefetch=True starts the next unit's all-gather early; param_dtype (float16, bfloat16) gathers low-precision
    copies of the float32 shards for compute (both are provided code, see the end of section 3)."""

    def __init__(self, module, units=(), zero_stage=3, process_group=None, prefetch=False, param_dtype=None):
        super().__init__()
        members = self._setup(module, units, zero_stage, process_group)
        self.units = [_FlatUnit(m, params, slots, self._pg.rank, self._pg.size, keep_full=zero_stage == 2)
                      for m, params, slots in members]
        for unit in self.units:
            self._hook(unit)
        self._options(prefetch, param_dtype)

    def forward(self, *args, **kwargs):
        self._check_last_backward()
        self._start_pass("forward")
        out = self.module(*args, **kwargs)
        self._start_pass("backward")  # the gathers from here on are backward's
        return out

    def _hook(self, unit):
        forward = unit.module.forward  # the module's own (bound) forward

        def sharded_forward(*args, **kwargs):
            return self._unit_forward(unit, forward, *args, **kwargs)
        object.__setattr__(unit.module, "forward", sharded_forward)

    def _reshard(self, unit):
        """Free this unit's parameters after its forward? ZeRO-3, except the root (used again at once)."""
        return self.zero_stage == 3 and unit.module is not self.module

    def _signal(self, unit, p, view):
        if is_grad_enabled() and unit.pending == len(unit.params) and unit.signals[0].requires_grad:
            # the unit runs again before its backward (a block used twice, or two forwards then one backward):
            # the same signal, so the engine sums p's gradients of both uses and p is still ready once
            signal = unit.signals[unit.index[id(p)]]
            signal.data = view
            return signal

        def grad_ready_backward(g):
            if unit.pending == 0:  # another backward through a retained graph: every signal's gradient is due again
                unit.pending = len(unit.signals)
            self._grad_ready(unit, p, g)
            return (None,)  # _grad_ready keeps the gradient itself
        return from_op(view, p._device, (p,), grad_ready_backward)

    def _free(self, unit):
        if self.zero_stage == 3:
            for s in unit.signals:
                s.data = unit.xp.empty((0,), dtype=unit.dtype)  # what the graph holds of the unit: nothing
            unit.gathered = False

    def _before_backward(self, unit, out):
        """out, read through an identity whose backward gathers the unit again (once) if it was freed."""
        def gather_again_backward(g):
            if not unit.gathered:
                for s, view in zip(unit.signals, unit.gather(self._pg)):
                    s.data = view
                unit.gathered = True
            return (g,)
        if isinstance(out, tuple):
            return tuple(self._before_backward(unit, o) for o in out)
        if not isinstance(out, Tensor) or not out.requires_grad:
            return out
        return from_op(out.data, out._device, (out,), gather_again_backward)

    def _unit_forward(self, unit, forward, *args, **kwargs):
        """Gather the unit, run its forward with its parameters shadowed by signals, free it again."""
        ### BEGIN SOLUTION
        views = unit.gather(self._pg)
        unit.signals = [self._signal(unit, p, view) for p, view in zip(unit.params, views)]
        unit.gathered = True
        if is_grad_enabled():
            unit.pending = len(unit.params)
        signal_of = {id(p): s for p, s in zip(unit.params, unit.signals)}
        try:
            for owner, name, p in unit.slots:
                object.__setattr__(owner, name, signal_of[id(p)])
            out = forward(*args, **kwargs)
        finally:
            for owner, name, p in unit.slots:
                object.__setattr__(owner, name, p)
        if self._reshard(unit) or not is_grad_enabled():
            self._free(unit)
        return self._before_backward(unit, out)
        ### END SOLUTION

    def _grad_ready(self, unit, p, g):
        """p's whole gradient of this pass: into the unit's flat buffer; reduce-scatter once all are in."""
        ### BEGIN SOLUTION
        if unit.grad_buffer is None:
            unit.grad_buffer = unit.xp.zeros(unit.padded, dtype=unit.dtype)
        i = unit.index[id(p)]
        unit.grad_buffer[unit.offsets[i]:unit.offsets[i] + unit.sizes[i]] = g.reshape(-1)
        unit.pending -= 1
        if unit.pending == 0:
            unit.reduce_scatter_grad(self._pg, unit.grad_buffer)
            unit.grad_buffer = None
            self._free(unit)
        ### END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>`_unit_forward` is five steps: gather,
# make signals, shadow-run-restore, maybe free, wrap the output. `_grad_ready`
# is: store, count down, and at zero reduce-scatter, drop, free.</details>
# <details><summary>Hint 2</summary>A dict from `id(p)` to its signal lets
# each slot find its signal (a tied weight has two slots, one signal). The
# restore goes in a `finally:` so that an exception inside the unit does not
# leave signals in the model. In `_grad_ready`, parameter i's place in the
# buffer is `unit.offsets[i]` to `+ unit.sizes[i]`, with i what `unit.index`
# holds for `id(p)`; `self._free` already does nothing under ZeRO-2.</details>
# <details><summary>Hint 3</summary>`_unit_forward`: the gathered views,
# a list comprehension of `self._signal(unit, p, view)`, an `if
# is_grad_enabled():` for `pending`, a `try:` with a loop of
# `object.__setattr__` and the call, a `finally:` with the restoring loop,
# then step 4's condition around a call of `self._free`.
# `_grad_ready`: an `if ... is None` that allocates, one slice assignment of
# `g.reshape(-1)`, one fewer pending gradient, and a three-line block for the
# moment none is left.</details>

# %% nbgrader={"grade": true, "grade_id": "test-fsdp", "locked": true, "points": 4, "schema_version": 3, "solution": false}
CONFIG = dict(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
TOKENS = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (3, 8, CONFIG["block_size"] + 1))  # 3 steps

# _loss(model, tokens) (provided, imported above): cross-entropy on the next tokens


tt.manual_seed(0)
INIT = {k: v.numpy().copy() for k, v in GPT(GPTConfig(**CONFIG)).state_dict().items()}  # threads share one RNG


def _train(stage=None):
    """3 AdamW steps; stage None: one process on the whole batch, else ZeRO-stage on this rank's part."""
    model = GPT(GPTConfig(**CONFIG))
    model.load_state_dict(INIT)
    net, n, r = model, 1, 0
    if stage is not None:
        net = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=stage)
        n, r = get_world_size(), get_rank()
    opt = AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    losses = []
    for batch in TOKENS:
        loss = _loss(net, np.array_split(batch, n)[r])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    units = getattr(net, "units", [])
    held = measure_memory(net)["buffers"] if stage == 3 else 0  # gathered parameters and flat gradients still alive
    with tt.no_grad():  # an evaluation forward: no backward will come to free the units
        _loss(net, TOKENS[0])
        gathered = [u.gathered for u in units]
        with suppress(RuntimeError):  # a block's forward that raises (input of width 15, not 16)
            model.transformer.h[0](tt.randn(1, 4, 15))
    restored = all(getattr(owner, name) is p for u in units for owner, name, p in u.slots)
    state = net.state_dict() if stage is not None else model.state_dict()
    return {k: v.numpy().copy() for k, v in state.items()}, losses, gathered, held, restored


expected, expected_losses = _train()[:2]
for stage in (3, 2):
    ranks = ThreadGroup.run(2, _train, stage)
    state, _, gathered, held, restored = ranks[0]
    assert held == 0, (f"ZeRO-3: after backward, _grad_ready frees each unit and drops its flat gradient, and gather "
                       f"keeps no full-size buffer for the next pass; expected 0 B gathered at rest, got {held} B")
    assert restored, (f"ZeRO-{stage}: after a unit's forward, even one that raised, each module must hold its own "
                      f"Parameter again (put back in a finally:); a signal was left in its place")
    assert stage == 2 or not any(gathered), ("ZeRO-3: a forward under no_grad frees each unit right after it, the "
                                             f"root too (no backward will); units still gathered: {gathered}")
    assert set(state) == set(expected), f"ZeRO-{stage}: state_dict() must have the model's keys, got {sorted(state)[:4]}..."
    for name, want in expected.items():
        assert state[name].shape == want.shape, f"ZeRO-{stage}: {name} has shape {state[name].shape}, expected {want.shape}"
        worst = float(np.abs(state[name] - want).max())
        assert worst < 1e-5, f"ZeRO-{stage} on 2 ranks: {name} differs from one process by {worst:.3g} after 3 steps"
    assert ranks[1][0] == {}, "state_dict() is consolidated on rank 0 only"
### BEGIN HIDDEN TESTS
ranks = ThreadGroup.run(4, _train, 3)
assert all(abs(float(np.abs(ranks[0][0][k] - v).max())) < 1e-5 for k, v in expected.items()), "4 ranks"
### END HIDDEN TESTS
print("FullyShardedDataParallel (ZeRO-2 and ZeRO-3): ok")

# %% [markdown]
# **Cost.** Per step and rank, ZeRO-3 all-gathers every unit twice (forward,
# backward) and reduce-scatters its gradients once: 3 × (n−1)/n of the
# parameter bytes, against DDP's 2 × (n−1)/n for the all-reduce (which *is* a
# reduce-scatter plus an all-gather). That is 1.5× DDP's traffic for 1/n of
# its memory. ZeRO-2 all-gathers once and reduce-scatters once: exactly DDP's
# traffic, with the gradients and optimizer state sharded. The largest
# transient is one unit's gathered parameters and flat gradient, so a model
# cut into L units peaks at about (16/n + 8/L)·N bytes instead of 16·N.
# `bench/zero.py` counts the bytes: for the 0.8 M-parameter GPT of module 11
# (3.07 MiB of float32 weights) on 2 ranks, each rank sends 3.07 MiB per step
# under DDP and ZeRO-2, 4.60 under ZeRO-1 and 4.57 under ZeRO-3 (the root unit,
# kept from forward to backward, is gathered once, not twice).
#
# Two options of PyTorch's FSDP come with `provided.py`, since neither changes
# the idea. **`prefetch=True`** starts unit i+1's all-gather, asynchronously,
# as unit i is gathered, so the bytes travel while unit i computes. The next
# unit is the one the previous pass gathered next (forward order in forward,
# reverse order in backward): the order is recorded in step 1 and prefetching
# starts at step 2. The price is a second unit's parameters held at once; the
# bytes are a plain all-gather's (module 11's `all_gather(..., async_op=True)`
# returns a `Work` that the unit's turn waits on), and the values are the same
# bit for bit. **`param_dtype=tt.bfloat16`** (or `float16`; ZeRO-3
# only) keeps the float32 shards as the masters the optimizer steps, but
# all-gathers low-precision copies for compute: half the gathered bytes and
# half the traffic. The gradients arrive in the low precision and are copied
# into the float32 flat buffer before the reduce-scatter, so the sum over
# ranks and the step are float32. `tt.autocast` composes with it: its casts of
# the already low-precision weights do nothing. Both options still run your
# `gather`: they hand it the cast copy of the shard and a process group that
# sends the bytes (asynchronously, for a prefetch). So do the checkpoints, to
# gather the optimizer's moments, with your `flatten` to re-shard them.
# `clip_grad_norm_` over shards also needs one more all-reduce of the squared
# norms, since each rank sees only its slice.

# %% [markdown]
# ## 4. Activation checkpointing
#
# After sharding, what is left on each rank is mostly the **activations**: the
# outputs that forward keeps for backward. A GPT block keeps some twenty
# (B, T, C)-sized arrays and the (B, H, T, T) attention probabilities: for L
# blocks that is L times as much, and it grows with the batch, not with n.
#
# **Checkpointing** (Chen et al., 2016) trades compute for memory. Run the
# block's forward *without recording a graph*, keep only its input, and in
# backward run the forward again, this time recording, to get the
# intermediates back just when they are needed. The cost: one more forward per
# block (about a third more compute); the gain: a block keeps one (B, T, C)
# input instead of all its intermediates.
#
# `checkpoint(fn, *args)` returns a tensor equal to `fn(*args)` whose backward
# does the recomputation. Its provided first line, `fn, params =
# _recomputable(fn, args)`, wraps `fn` so that it always runs under the
# autocast policy of the forward (and returns one tensor), and lists in
# `params` the parameters `fn` reads that are not among `args` (those of a
# module `fn` is or captures). Then:
#
# 1. remember the state of the default random generator's bit generator —
#    dropout must draw the same mask again;
# 2. call `fn` on the arguments with grad mode off;
# 3. return one op (`from_op`) holding that output's array, whose inputs are
#    the tensors among `args` followed by `params` (so that the output
#    requires grad when only the weights do: frozen embeddings, LoRA), and
#    whose backward is `checkpoint_backward`;
# 4. `checkpoint_backward(g)`: set the generator to the saved state (and back
#    afterwards); make each tensor argument a fresh leaf (`detach()`, then
#    `requires_grad_` as the original); under `enable_grad()` call `fn` again;
#    run the engine's `backward` from that new output with `g` — on this small graph; that puts
#    the parameters' gradients into their `.grad` and the inputs' into the
#    fresh leaves; return those leaves' gradient arrays (None where there is
#    none), then one None per parameter (their gradients are in `.grad`
#    already): one entry per input.

# %% nbgrader={"grade": false, "grade_id": "checkpoint", "locked": false, "schema_version": 3, "solution": true}
#| export utils
"""Utilities: activation checkpointing."""
from tinytorch.core.autograd import backward, enable_grad, no_grad
from tinytorch.core.backend import default_generator
from tinytorch.core.tensor import Tensor, from_op  # noqa: F811  (this cell exports to its own file)


def checkpoint(fn, *args):
    """fn(*args), keeping only the inputs: backward runs fn again (same random numbers) to get the rest."""
    fn, params = _recomputable(fn, args)  # fn under this autocast policy; the parameters fn reads
    ### BEGIN SOLUTION
    saved = default_generator().bit_generator.state
    with no_grad():
        out = fn(*args)
    inputs = tuple(a for a in args if isinstance(a, Tensor))

    def checkpoint_backward(g):
        generator = default_generator()
        now, generator.bit_generator.state = generator.bit_generator.state, saved
        fresh = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in args]
        try:
            with enable_grad():
                again = fn(*fresh)
        finally:
            generator.bit_generator.state = now
        backward(again, g)
        leaves = [a for a in fresh if isinstance(a, Tensor)]
        grads = tuple(a.grad.data if a.grad is not None else None for a in leaves)
        return grads + (None,) * len(params)  # backward() put the parameters' gradients in their .grad already
    return from_op(out.data, out._device, inputs + params, checkpoint_backward)
    ### END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>Forward: save the random state, run
# without a graph, wrap the result in an op. Backward: restore the state,
# run again with a graph, backpropagate through it, hand back the inputs'
# gradients.</details>
# <details><summary>Hint 2</summary>The op's inputs are the tensors among
# `args`, then `params`, and the backward must return one entry per input in
# that order. Put the generator back to where it was *after* the recomputation, so
# that later draws do not repeat. Integer inputs (token ids) cannot require
# grad: pass `a.requires_grad` to `requires_grad_`.</details>
# <details><summary>Hint 3</summary>Two parts: `saved = ...state`, a `with
# no_grad():` block, a tuple of tensor inputs, a nested `def
# checkpoint_backward(g):` (swap state, fresh leaves, `with enable_grad():`,
# restore in `finally`, `backward(...)`, return a tuple of `.grad.data` or
# None, and a None per parameter), and the `from_op(...)` return.</details>

# %% nbgrader={"grade": true, "grade_id": "test-checkpoint", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from tinytorch.utils import checkpoint as _checkpoint  # noqa: E402


def _grads(checkpointed):
    """Gradients of two dropout-0.3 GPT blocks, each run plainly or through checkpoint."""
    tt.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.3))
    x = tt.randn(3, 8, 16, requires_grad=True)
    tt.manual_seed(2)  # the same dropout masks in both runs
    h = x
    for block in model.transformer.h:
        h = _checkpoint(block, h) if checkpointed else block(h)
    (h * h).mean().backward()
    return dict({n: p.grad.numpy().copy() for n, p in model.transformer.h.named_parameters()}, input=x.grad.numpy().copy())


x = tt.randn(2, 3, requires_grad=True)
y = _checkpoint(lambda t: (t * t).sum(dim=1) + tt.rand(1), x)  # fn draws one random number
assert y is not None and y.shape == (2,), f"checkpoint returns fn's output, shape (2,), got {getattr(y, 'shape', y)}"
total, drawn = y.sum(), tt.rand(1).item()
with tt.no_grad():  # backward may run under no_grad: the recomputation must still record its graph
    total.backward()
assert x.grad is not None and np.allclose(x.grad.numpy(), 2 * x.numpy()), \
    "d/dx sum(x²) = 2x through checkpoint, also when backward runs under no_grad (recompute under enable_grad)"
assert tt.rand(1).item() != drawn, "after the recomputation, put the generator back: the next draw repeated an old one"
plain, ckpt = _grads(False), _grads(True)
for name, g in plain.items():
    worst = float(np.abs(ckpt[name] - g).max())
    assert worst < 1e-6, f"checkpoint_blocks: {name}.grad differs by {worst:.3g} (dropout drew new masks in the recomputation?)"
x, w = tt.randn(2, 3, requires_grad=True), tt.randn(3, 3)  # w: a tensor without grad; 2.0: not a tensor
try:
    _checkpoint(lambda t, m, s: ((t @ m) * s).sum(), x, w, 2.0).backward()
except (AttributeError, TypeError) as err:
    raise AssertionError(f"checkpoint(fn, x, w, 2.0), w without grad, 2.0 a float: expected x.grad, got {err!r} "
                         "(the op's inputs are the tensors among args; a leaf without grad gives None)")
want = 2 * np.ones((2, 3)) @ w.numpy().T
assert np.allclose(x.grad.numpy(), want, atol=1e-5), f"checkpoint: d/dx sum((x @ w) * 2.0) = 2 · ones @ wᵀ = {want}, got {x.grad}"
try:  # an int tensor among the args (token ids), and two backward passes, each recomputing on fresh leaves of its own
    y = _checkpoint(lambda t, i: (t * t * i).sum(), x := tt.randn(2, 3, requires_grad=True), tt.tensor([[1], [2]]))
    y.backward(retain_graph=True), y.backward()
except RuntimeError as err:
    raise AssertionError(f"checkpoint(fn, x, int ids): int tensors cannot require grad (pass a.requires_grad on); got {err!r}") from None
assert np.allclose(x.grad.numpy(), 4 * x.numpy() * [[1], [2]]), f"checkpoint, backward twice: 2 · (2x·ids) expected, got {x.grad}"
assert _checkpoint(tt.nn.Linear(3, 2), tt.randn(1, 3)).requires_grad, "x without grad: params are op inputs too"
print("checkpoint: ok")

# %% [markdown]
# **Cost.** Compute: one more forward per checkpointed block, about 1/3 of
# the step. Memory: per block, the intermediates are gone and only the
# block's (B, T, C) input stays; during backward one block's intermediates
# exist at a time.
#
# ## 5. The memory model
#
# Now predict what each rank holds. For a model of N trainable float32
# values (4 bytes each) on n ranks, with AdamW:
#
# | | params | grads | optimizer |
# | --- | --- | --- | --- |
# | DDP | 4N | 4N | 8N |
# | ZeRO-1 | 4N | 4N | 8N / n |
# | ZeRO-2 | 4N | 4N / n | 8N / n |
# | ZeRO-3 | 4N / n | 4N / n | 8N / n |
#
# (Sharded counts are *means over ranks*: ZeRO-1 gives whole parameters to
# ranks, so one rank may own a little more than another; ZeRO-2/3 pad each
# unit to a multiple of n, which adds at most n − 1 values per unit.)
#
# **Activations** of one GPT block, in float32, for a batch of B sequences of
# T tokens, width C and H heads, counting what our ops keep for backward:
# 26 arrays' worth of (B, T, C) values (the two layer norms' inputs and
# outputs, the attention's q, k, v and output projections, the residual sums,
# and three 4C-wide arrays of the MLP, which count 4 each: its hidden layer
# before and after the GELU, and the GELU's saved gate, which makes its
# backward one cheap pass), one (B, H, T, T) array (the attention probabilities: our softmax is
# one fused op) and the norms' per-row statistics. With checkpointing a
# block keeps just its input, one (B, T, C) array. The rest of the model (the
# embeddings, the final norm, the logits and the loss) is the same either way:
# `rest_bytes`.

# %% nbgrader={"grade": false, "grade_id": "predict-memory", "locked": false, "schema_version": 3, "solution": true}
#| export distributed.memory
BLOCK_ARRAYS_BTC = 26  # (B, T, C) arrays a GPT block keeps for backward (the MLP's 4C-wide ones count 4)
BLOCK_ARRAYS_BHTT = 1  # (B, H, T, T) arrays: the attention probabilities (the softmax is one fused op)


def gpt_activation_bytes(config, batch, seq, checkpoint=False):
    """Bytes a GPT's graph keeps between forward and backward (float32), for `batch` sequences of `seq` tokens."""
    B, T, C, H, L, V = batch, seq, config.n_embd, config.n_head, config.n_layer, config.vocab_size
    ### BEGIN SOLUTION
    per_block = T * C if checkpoint else BLOCK_ARRAYS_BTC * T * C + BLOCK_ARRAYS_BHTT * H * T * T + 2 * T
    rest = B * (4 * T * C + T * V) + T * C  # embeddings, their sum, final norm, logits; the (T, C) positions
    return 4 * (B * L * per_block + rest)
    ### END SOLUTION


def predict_memory(n_params, world_size, strategy, activation_bytes=0):
    """Per-rank bytes {params, grads, optimizer, activations} for strategy "ddp", "zero1", "zero2" or "zero3"."""
    ### BEGIN SOLUTION
    n = world_size
    weights = 4 * n_params
    shards = {"ddp": (1, 1, 1), "zero1": (1, 1, n), "zero2": (1, n, n), "zero3": (n, n, n)}
    if strategy not in shards:
        raise ValueError(f"unknown strategy {strategy!r}: use ddp, zero1, zero2 or zero3")
    p, g, o = shards[strategy]
    return {"params": weights / p, "grads": weights / g, "optimizer": 2 * weights / o,
            "activations": activation_bytes}
    ### END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>Each of the three static parts is its
# full size divided by 1 or by n, depending on the strategy. The activations:
# values per sequence for one block, times B·L, plus the rest, times 4 bytes.</details>
# <details><summary>Hint 2</summary>Full sizes: params 4N, grads 4N, Adam
# 8N. The table above says which of them each strategy divides by n. An
# unknown strategy is a ValueError that lists the known ones. A block keeps
# 26·T·C + H·T·T + 2·T values per sequence (T·C when checkpointed); the rest is
# B·(4·T·C + T·V) values for the embeddings, final norm and logits, plus T·C
# for the position table's output, shared by the batch.</details>
# <details><summary>Hint 3</summary>A dict from strategy to three divisors,
# a lookup, and a returned dict of four entries.</details>

# %% nbgrader={"grade": true, "grade_id": "test-predict-memory", "locked": true, "points": 3, "schema_version": 3, "solution": false}
for strategy, want, why in (("ddp", (4000, 4000, 8000), "keeps all"), ("zero1", (4000, 4000, 2000), "shards Adam"),
                            ("zero2", (4000, 1000, 2000), "+ grads"), ("zero3", (1000, 1000, 2000), "+ weights")):
    got = predict_memory(1000, 4, strategy, activation_bytes=7)  # 1000 parameters on 4 ranks; activations as given
    assert got == dict(zip(("params", "grads", "optimizer", "activations"), want + (7,))), \
        f"{strategy} ({why}): expected (params, grads, optimizer, activations) = {want + (7,)}, got {got}"
six = GPTConfig(vocab_size=32, block_size=16, n_layer=6, n_head=2, n_embd=32)
full, kept = gpt_activation_bytes(six, 2, 16), gpt_activation_bytes(six, 2, 16, checkpoint=True)
assert full == 4 * (2 * 6 * (26 * 16 * 32 + 2 * 16 * 16 + 2 * 16) + 2 * (4 * 16 * 32 + 16 * 32) + 16 * 32), (
    f"gpt_activation_bytes: 6 blocks of 26·T·C + H·T·T + 2·T values per sequence, plus the rest: 687616 bytes, got {full}")
assert kept == 4 * (2 * 6 * 16 * 32 + 2 * (4 * 16 * 32 + 16 * 32) + 16 * 32), (
    f"checkpoint=True: each of the 6 blocks keeps just its (B, T, C) input, plus the rest: expected 47104 bytes, got {kept}")
odd = gpt_activation_bytes(GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=4, n_embd=8), 3, 16)
assert odd == 68864, (f"B=3 sequences of seq=16 tokens (block_size 32), H=4, C=8, V=50: logits are (B, T, V), the "
                      f"attention (B, H, T, T), with T = seq: expected 68864 bytes, got {odd}")
with suppress(ValueError):
    got = predict_memory(1000, 4, "zero-3")
    raise AssertionError(f"predict_memory(1000, 4, 'zero-3'): an unknown strategy must raise ValueError, got {got}")
assert (got := predict_memory(1000, 3, "zero3")["params"]) == 4000 / 3, f"zero3, 1000 on 3 ranks: 4000 / 3 B, got {got}"
print("predict_memory: ok")

# %% [markdown]
# ### Predicted against measured
#
# `measure_memory(model, optimizer, loss)` (provided) counts the bytes live
# arrays hold. `_measure_strategy(config, batch, strategy)` (provided) trains a
# small GPT one step on one rank and takes the static parts after the step
# (Adam's state exists, the gradients are still there) and the activations
# between a forward and its backward. `_memory_table` (provided) runs it for
# each strategy at world sizes 1, 2 and 4 (ranks as threads), next to your
# `predict_memory` and `gpt_activation_bytes`. Sharded numbers are means over the ranks.

# %%
TABLE_CONFIG = GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
for n, strategy, predicted, measured in _memory_table(TABLE_CONFIG, 2, predict_memory, gpt_activation_bytes):
    print(f"n={n} {strategy:5s} " + "  ".join(f"{k} {p / 1024:6.1f}/{m / 1024:6.1f} KiB" for k, p, m in
                                             zip(("params", "grads", "optim", "act"), predicted, measured)))

# %% [markdown]
# Each entry reads predicted/measured. The static parts agree to within the
# padding and ZeRO-1's uneven shares; the activations to within the few small
# arrays the model leaves out (per-row statistics of the norms, the loss's
# scalars). ZeRO-3 at 4 ranks holds a quarter of DDP's 16 bytes per
# parameter, plus padding.
#
# ## Summary
#
# - ZeRO shards, one by one, the optimizer state (stage 1), the gradients
#   (stage 2) and the weights (stage 3): per-rank memory from 16N down to
#   16N/n bytes.
# - A flat, zero-padded buffer per unit makes every shard the same size: one
#   all-gather and one reduce-scatter per unit.
# - FSDP gathers a unit just before it computes, forward and backward, and frees
#   it after; only one unit is whole at a time. It sends 1.5× DDP's bytes.
# - Activation checkpointing keeps a block's input only and recomputes the
#   rest in backward, with the same random numbers: ~1/3 more compute for a
#   fraction of the activations.
# - A memory model is only worth what its measurement says: here both come
#   from counting bytes, and they agree.
#
# Run it: `tito train gpt --nproc 2 --zero 3 --checkpoint-blocks`.
