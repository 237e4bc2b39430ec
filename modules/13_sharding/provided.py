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
# # Module 13 — provided code: units, checks, checkpoints and counting bytes
#
# The lesson (`sharding.py`) writes the shard arithmetic, the gather and free
# around a unit, the reduce-scatter of its gradients, activation checkpointing
# and the memory model. This file holds the plumbing around them:
#
# - `_ShardedBase`: which parameters belong to which unit, the checks that
#   every rank built the same model, `parameters()` that lists the shards (so a
#   plain `AdamW` steps them), and checkpoints that do not depend on the world
#   size (`state_dict()` consolidated, `load_state_dict()` re-sharded);
# - the options `prefetch` (start the next unit's all-gather early) and
#   `param_dtype` (gather float16/bfloat16 copies of the float32 shards);
# - `ShardedOptimizer`: a plain optimizer's parameter groups (GPT's decay and
#   no-decay) run on the flat shards, with a consolidated `state_dict()`;
# - `measure_memory(...)`: the bytes held by live arrays, by category, and
#   `_measure_strategy(...)`, which measures one rank of a small GPT's training;
# - `_MPIRules(pg)`: a process group that refuses, on thread ranks too, what MPI
#   refuses: an all-gather that sends from the buffer it receives into.

# %%
#| default_exp distributed.fsdp

# %%
#| export
"""FullyShardedDataParallel: ZeRO-2 and ZeRO-3 with flat per-unit shards of the parameters."""
import copy
from collections import OrderedDict

import numpy as np

from tinytorch.core.backend import get_xp, to_device
from tinytorch.core.tensor import Tensor, from_op
from tinytorch.distributed.ddp import _ModelWrapper, _trainable_slots

# %% [markdown]
# ## Units
#
# A *unit* is a module whose parameters are gathered and freed together (a
# transformer block); the model itself is the last unit, the *root*, and holds
# every trainable parameter no listed unit owns. A parameter read from two
# places (a tied embedding) belongs to a unit only if every place that reads it
# is inside that unit; otherwise it goes to the root. Frozen parameters
# (`requires_grad=False`) are not sharded: every rank keeps them whole.

# %%
#| export
def _unit_members(module, units):
    """[(unit module, [params], [(owner module, attribute, param)])] for each unit, the root last."""
    slots = _trainable_slots(module)
    claimed, out = set(), []
    for unit in list(units) + [module]:
        inside = {id(m) for m in unit.modules()}
        readers = {}
        for m, _, p in slots:
            readers.setdefault(id(p), []).append(id(m) in inside)
        params = []
        for _, _, p in slots:
            if id(p) not in claimed and all(readers[id(p)]):
                claimed.add(id(p))
                params.append(p)
        mine = {id(p) for p in params}
        if params:
            out.append((unit, params, [s for s in slots if id(s[2]) in mine]))
    return out


def _gather_values(unit, pg, values, into_full):
    """The lesson's `unit.gather(pg)`, run on `values` in place of the shard's (same size; a low-precision
    copy of the shard, or a slice of optimizer state): one view per parameter of the whole values.
    into_full=False gathers into a fresh vector even under ZeRO-2 (whose full buffer holds the weights)."""
    stand_in = copy.copy(unit)
    stand_in.shard, stand_in.dtype = from_op(values, unit.device), values.dtype
    if not into_full:
        stand_in.full = None
    return type(unit).gather(stand_in, pg)  # the class's: an instance's gather may be _gather_unit


class _AsBytes:
    """The process group that the lesson's gather sees while an option is on: each all-gather travels as
    bytes (uint8 views: every backend has that type, NCCL has no bfloat16 here), asynchronously if asked.
    Everything else (rank, size, ...) is the real group's. As a Work, it waits for all its gathers."""

    def __init__(self, pg, async_op):
        self.pg, self.async_op, self.works, self.outs = pg, async_op, [], []

    def all_gather(self, out, array, async_op=False):
        work = self.pg.all_gather(out.view(np.uint8), array.view(np.uint8), async_op=self.async_op)
        self.works.append(work)
        self.outs.append(out)
        return work

    def wait(self):
        for work in self.works:
            work.wait()

    def __getattr__(self, name):
        return getattr(self.pg, name)


class _MPIRules:
    """`pg`, except that an all-gather whose input is (a view of) its output raises, as MPI's does ("Buffers
    must not be aliased"): thread ranks copy the input first, so they would not notice."""

    def __init__(self, pg):
        self.pg = pg

    def all_gather(self, out, array, async_op=False):
        if np.may_share_memory(out, array):
            raise ValueError("all_gather: the array sent shares memory with the output buffer (under ZeRO-2 the "
                             "shard is a view of the full buffer); MPI refuses aliased buffers: send a copy")
        return self.pg.all_gather(out, array, async_op=async_op)

    def __getattr__(self, name):
        return getattr(self.pg, name)


class _Poisoned:
    """The array namespace `xp`, except that `empty` fills with NaN: what a reused buffer may hold, made visible
    (the graded check of `flatten` uses it: the padding must be written as zeros, not left as found)."""

    def __init__(self, xp):
        self.xp = xp

    def empty(self, shape, dtype=float):
        return self.xp.full(shape, self.xp.nan, dtype=dtype)

    def __getattr__(self, name):
        return getattr(self.xp, name)


def _next_token_loss(model, tokens):
    """The graded check's loss: cross-entropy of `model` on the next tokens of `tokens` (B, T + 1), an array."""
    from tinytorch.core.tensor import tensor
    loss = model(tensor(tokens[:, :-1]), targets=tensor(tokens[:, 1:]))[1]
    assert loss is not None, "model(idx, targets=...) gave no loss: _unit_forward must pass **kwargs on to forward"
    return loss


class _ShardedBase(_ModelWrapper):
    """Checks, parameters() and checkpoints of FullyShardedDataParallel (see the lesson).

    Uses the lesson's attributes: self.units (each with .params, .shard, .gather(), .flatten(), .shard_size,
    .padded) and self.zero_stage."""

    def _setup(self, module, units, zero_stage, process_group):
        if zero_stage not in (2, 3):
            raise ValueError(f"FullyShardedDataParallel: zero_stage must be 2 or 3, got {zero_stage!r} "
                             f"(stage 1 is module 11's ZeroRedundancyOptimizer)")
        self.zero_stage = zero_stage
        self._wrap(module, process_group)  # module 11's: same model on every rank, rank 0's values
        members = _unit_members(module, units)
        dtypes = {p.data.dtype for _, params, _ in members for p in params}
        if len(dtypes) > 1:
            raise TypeError(f"FullyShardedDataParallel: one dtype per model expected, got {sorted(map(str, dtypes))}")
        return members

    # -- options: prefetch and mixed precision (the end of the lesson's section 3) --
    # With either on, each unit's `gather` is replaced by `_gather_unit`. Gathers are recorded per pass
    # ("forward": inside the wrapper's forward, "backward": after it); the next step, gathering the k-th
    # unit of a pass issues an async gather of the unit that came (k+1)-th last time. Every rank runs the
    # same passes, so every rank issues the same collectives in the same order.

    def _options(self, prefetch, param_dtype):
        """Check the options; with either on, route the units' gathers through _gather_unit."""
        if param_dtype is not None:
            param_dtype = np.dtype(param_dtype)
            if param_dtype.name not in ("float16", "bfloat16"):
                raise TypeError(f"FullyShardedDataParallel: param_dtype must be float16, bfloat16 or None, "
                                f"got {param_dtype}")
            if self.zero_stage != 3:
                raise ValueError("FullyShardedDataParallel: param_dtype needs zero_stage=3 (under ZeRO-2 the full "
                                 "float32 buffer is what the parameters are views of); use zero_stage=3")
        self.prefetch, self.param_dtype = bool(prefetch), param_dtype
        self._phase, self._seen, self._orders, self._in_flight = None, [], {}, {}
        if self.prefetch or param_dtype is not None:
            for unit in self.units:
                unit.gather = (lambda u: lambda pg: self._gather_unit(u))(unit)

    def _start_pass(self, phase):
        """A forward ("forward") or what follows it ("backward") starts: keep the last pass's order of gathers."""
        if self._phase is not None and self._seen:
            self._orders[self._phase] = self._seen
        for work, _, _ in self._in_flight.values():
            work.wait()  # a prefetch nobody used (e.g. after an eval forward): every rank drops the same one
        self._phase, self._seen, self._in_flight = phase, [], {}

    def _issue_gather(self, unit, async_op):
        """The lesson's gather of the unit, cast to param_dtype and sent as bytes: (Work or None, views, output)."""
        mine = unit.shard.data.astype(self.param_dtype or unit.dtype)  # a copy: the shard itself stays float32
        group = _AsBytes(self._pg, async_op)
        views = _gather_values(unit, group, mine, into_full=True)  # ZeRO-2 refreshes its kept buffer
        return (group if async_op else None), views, group.outs

    def _gather_unit(self, unit):
        """unit.gather with the options: take a prefetched gather if one was issued, then prefetch the next."""
        i = self.units.index(unit)
        if i in self._in_flight:
            work, views, _ = self._in_flight.pop(i)
            work.wait()
        else:
            _, views, _ = self._issue_gather(unit, async_op=False)
        order, k = self._orders.get(self._phase, []), len(self._seen)
        self._seen.append(i)
        if self.prefetch and k + 1 < len(order) and order[k] == i and order[k + 1] not in self._in_flight:
            nxt = order[k + 1]  # the unit the last pass gathered next: start its gather now
            self._in_flight[nxt] = self._issue_gather(self.units[nxt], async_op=True)
        return views

    def _in_flight_buffers(self):
        return [out for _, _, outs in getattr(self, "_in_flight", {}).values() for out in outs]

    def _comm_buffers(self):
        """The gathered parameters and flat gradients alive right now (for measure_memory)."""
        # any array bigger than a shard that a unit keeps is a gathered buffer too (e.g. one kept for reuse)
        kept = [a for u in self.units for a in vars(u).values() if hasattr(a, "nbytes") and a.size > u.shard_size]
        return [s.data for u in self.units for s in u.signals] + \
            [u.grad_buffer for u in self.units if u.grad_buffer is not None] + kept + self._in_flight_buffers()

    def named_parameters(self, prefix="", recurse=True):
        """The flat shards this rank owns, one per unit: what the optimizer steps."""
        for i, unit in enumerate(self.units):
            yield f"{prefix}shard{i}", unit.shard

    def parameters(self, recurse=True):
        for _, shard in self.named_parameters():
            yield shard

    def _check_last_backward(self):
        for unit in self.units:
            if 0 < unit.pending < len(unit.params):
                missing = [self._names.get(id(p), "?") for p in unit.params][:6]
                raise RuntimeError(f"FullyShardedDataParallel: the last backward gave no gradient to some parameters "
                                   f"of a unit (among {missing}), so its gradients were never reduce-scattered. "
                                   f"Every parameter that requires grad must take part in the loss; freeze unused "
                                   f"ones (requires_grad=False) before wrapping")

    def clip_grad_norm_(self, max_norm):
        """Scale the shards' gradients so that the whole model's gradient norm is at most max_norm.

        Collective: each rank holds a slice of the gradient, so the squared norms are summed over ranks
        (the zero padding adds nothing). Returns the norm before clipping, a 0-d tensor as
        `clip_grad_norm_` gives; float32 and on the device throughout (no copy, no host read)."""
        device = self.units[0].shard._device
        xp = get_xp(device)
        grads = [u.shard.grad.data for u in self.units if u.shard.grad is not None]
        total = xp.zeros(1, dtype=np.float32)
        for g in grads:
            total += xp.vdot(g, g)  # the shard's sum of squares, one BLAS pass
        self._pg.all_reduce(total)
        norm = xp.sqrt(total[0])
        factor = xp.minimum(max_norm / (norm + 1e-6), 1.0)
        for g in grads:
            g *= factor
        return from_op(norm, device)

    def state_dict(self, rank0_only=True):
        """The whole model's state dict, as the unwrapped model would give it. Collective: every rank calls it.

        With rank0_only (the default) only rank 0 gets it; the others get an empty dict."""
        full = {}
        for unit in self.units:
            for p, view in zip(unit.params, type(unit).gather(unit, self._pg)):  # float32, never prefetched
                full[id(p)] = view.copy()
        out = OrderedDict()
        for name, t in self.module._state_tensors().items():
            out[name] = from_op(full[id(t)] if id(t) in full else t.data.copy(), t._device)
        return out if self._pg.rank == 0 or not rank0_only else OrderedDict()

    def load_state_dict(self, state_dict, strict=True):
        """Load a consolidated state dict (from any world size, or from the unwrapped model): re-shard it."""
        own = self.module._state_tensors()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if strict and (missing or unexpected):
            raise RuntimeError(f"FullyShardedDataParallel.load_state_dict: missing keys {missing[:6]}, "
                               f"unexpected keys {unexpected[:6]}")
        values, shapes = {}, {id(t): tuple(t.shape) for t in own.values()}
        for unit in self.units:  # under ZeRO-3 the model's own tensors are empty: the unit knows their shapes
            shapes.update((id(p), tuple(shape)) for p, shape in zip(unit.params, unit.shapes))
        for name, t in own.items():
            if name in state_dict:
                source = state_dict[name]
                values[id(t)] = source.data if isinstance(source, Tensor) else np.asarray(source)
                if tuple(values[id(t)].shape) != shapes[id(t)]:  # a transposed weight would load silently
                    raise RuntimeError(f"FullyShardedDataParallel.load_state_dict: size mismatch for {name}: "
                                       f"{tuple(values[id(t)].shape)} in the state dict, {shapes[id(t)]} in the model")
        in_units = set()
        for unit in self.units:
            in_units.update(id(p) for p in unit.params)
            # a key left out (strict=False) keeps its value: gathered from the shards, a collective that every
            # rank makes alike, since every rank loads the same state dict
            now = _gather_values(unit, self._pg, unit.shard.data, into_full=False) if any(
                id(p) not in values for p in unit.params) else None
            arrays = [to_device(values[id(p)], unit.device) if id(p) in values else now[i]
                      for i, p in enumerate(unit.params)]
            unit.load_flat(unit.flatten(arrays), self._pg)
        for t in own.values():
            if id(t) not in in_units and id(t) in values:
                t.data[...] = to_device(values[id(t)], t._device)

# %% [markdown]
# ## Parameter groups over flat shards: `ShardedOptimizer`
#
# A flat shard mixes parameters that a plain optimizer would put in different
# groups: GPT's `configure_optimizers` decays the matmul weights and not the
# norms or embeddings. `ShardedOptimizer(fsdp, groups, AdamW, lr=...)` takes
# those groups (over the model's own parameters) and steps the shards with one
# inner optimizer whose weight decay is off; the decoupled decay is applied
# element by element, each element with its group's rate. Because AdamW's
# update does not depend on the weights, decaying first and then stepping is
# exactly what the plain optimizer does. Its `state_dict()` (collective)
# gathers the shards' state into the plain optimizer's format, so a checkpoint
# moves to one process or another world size; `load_state_dict` re-shards it.

# %%
#| export
from tinytorch.optim import AdamW, Optimizer  # noqa: E402


class ShardedOptimizer(Optimizer):
    """`optimizer_class(param_groups, **defaults)` over the model's own parameters, run on the shards of
    FullyShardedDataParallel. Groups may differ only in weight_decay (decoupled, e.g. AdamW).

    opt = ShardedOptimizer(fsdp, model_groups, AdamW, lr=1e-3); state_dict() is collective."""

    def __init__(self, fsdp, params, optimizer_class=AdamW, **defaults):
        probe = optimizer_class([Tensor(np.zeros(1, np.float32), requires_grad=True)], **defaults)  # its defaults
        super().__init__(params, {k: v for k, v in probe.param_groups[0].items() if k != "params"})
        self._fsdp, self._units = fsdp, fsdp.units
        self.optim = optimizer_class([u.shard for u in self._units], **dict(defaults, weight_decay=0.0))
        if not probe.defaults.get("decoupled_weight_decay") and any(g["weight_decay"] for g in self.param_groups):
            raise ValueError(f"ShardedOptimizer: weight decay is applied element-wise only when it is decoupled "
                             f"(AdamW); use AdamW, or weight_decay=0 with {optimizer_class.__name__}")
        where = {id(p): (u, i) for u in self._units for i, p in enumerate(u.params)}
        self._group_of = [u.xp.full(u.shard_size, -1, dtype=np.int64) for u in self._units]  # -1: padding
        seen = set()
        for g, group in enumerate(self.param_groups):
            for p in group["params"]:
                if id(p) not in where:
                    raise ValueError("ShardedOptimizer: a parameter of the groups is not in any unit of the "
                                     "FullyShardedDataParallel (frozen, or of another model); leave it out")
                seen.add(id(p))
                unit, i = where[id(p)]
                lo = max(unit.offsets[i], unit.rank * unit.shard_size)  # p's part of this rank's shard
                hi = min(unit.offsets[i] + unit.sizes[i], (unit.rank + 1) * unit.shard_size)
                if lo < hi:
                    self._group_of[self._units.index(unit)][lo - unit.rank * unit.shard_size:
                                                            hi - unit.rank * unit.shard_size] = g
        if len(seen) != len(where):
            raise ValueError(f"ShardedOptimizer: the groups leave out {len(where) - len(seen)} trainable parameters "
                             f"of the model; every parameter the shards hold must be in a group")

    def zero_grad(self, set_to_none=True):
        self.optim.zero_grad(set_to_none)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        settings = [{k: v for k, v in g.items() if k not in ("params", "weight_decay")} for g in self.param_groups]
        if any(s != settings[0] for s in settings[1:]):
            raise ValueError("ShardedOptimizer: parameter groups may differ only in weight_decay (a shard mixes "
                             "their parameters), got different settings")
        lr = settings[0]["lr"]
        for unit, group_of in zip(self._units, self._group_of):
            if unit.shard.grad is not None:  # decay first, then the step: the plain optimizer's order
                factors = [1 - lr * g["weight_decay"] for g in self.param_groups] + [1.0]
                unit.shard.data *= unit.xp.asarray(factors, dtype=unit.dtype)[group_of]
        for inner in self.optim.param_groups:
            inner.update(settings[0], weight_decay=0.0)
        self.optim.step()
        return loss

    def state_dict(self):
        """The plain optimizer's state dict (parameters numbered across groups). Collective: every rank calls it."""
        full = super().state_dict()  # the groups; the state lives in the inner optimizer
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        for unit in self._units:
            state = self.optim.state.get(unit.shard)
            if not state:
                continue
            flat = {k for k, v in state.items() if getattr(v, "shape", None) == (unit.shard_size,)}
            # each per-element state array is gathered as the unit's weights are: one view per parameter
            per_param = {k: _gather_values(unit, self._fsdp._pg, v, into_full=False)
                         for k, v in state.items() if k in flat}  # in the state's order, the same on every rank
            for i, p in enumerate(unit.params):
                full["state"][index[id(p)]] = {k: per_param[k][i].copy() if k in flat else v
                                               for k, v in state.items()}
        full["state"] = dict(sorted(full["state"].items()))
        return full

    def load_state_dict(self, state_dict):
        """Load the plain optimizer's state dict (from any world size): keep this rank's slice of each array."""
        super().load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        saved = {int(k): v for k, v in state_dict["state"].items()}
        index = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        self.optim.state.clear()
        for unit in self._units:
            entries = [saved.get(index[id(p)]) for p in unit.params]
            if not any(entries):
                continue
            first = next(e for e in entries if e)
            mine = slice(unit.rank * unit.shard_size, (unit.rank + 1) * unit.shard_size)
            state = {}
            for key, value in first.items():
                if not hasattr(value, "shape"):
                    state[key] = value
                    continue
                arrays = [to_device(e[key].data if isinstance(e[key], Tensor) else e[key], unit.device) if e
                          else unit.xp.zeros(size, unit.dtype) for e, size in zip(entries, unit.sizes)]
                for p, e, array, shape in zip(unit.params, entries, arrays, unit.shapes):
                    if e and tuple(array.shape) != tuple(shape):
                        raise RuntimeError(f"ShardedOptimizer.load_state_dict: state {key!r} of parameter "
                                           f"{index[id(p)]} has shape {tuple(array.shape)}, the parameter {tuple(shape)}")
                state[key] = unit.flatten(arrays)[mine].copy()
            self.optim.state[unit.shard] = state

# %% [markdown]
# ## Counting the bytes that live arrays hold (`tinytorch/distributed/memory.py`)
#
# The lesson predicts memory; this measures it. Every array an owner can
# reach is counted once, by the memory block behind it (a view counts its
# base): first the parameters, then the gradients, the optimizer state and the
# communication buffers, and last whatever the autograd graph of `loss` keeps
# alive — its nodes' outputs and the arrays their backward closures hold. That
# last part is the activations. Nothing is sampled or estimated: on the CPU the
# counts are exact, and they cost one walk over the graph. On cuda,
# `cuda_pool_bytes()` gives CuPy's pool as a cross-check of the total.

# %%
#| export distributed.memory
"""Per-rank memory: the lesson's prediction, and the bytes that live arrays really hold."""
import numpy as np

from tinytorch.core.tensor import Tensor  # noqa: F811  (this cell exports to its own file)


class _Counter:
    """Sums nbytes of arrays, each memory block (the base of a view) once."""

    def __init__(self):
        self.seen = set()

    def add(self, array):
        while isinstance(getattr(array, "base", None), type(array)):
            array = array.base  # a view: count the block it looks into
        if id(array) in self.seen or not hasattr(array, "nbytes"):
            return 0
        self.seen.add(id(array))
        return int(array.nbytes)

    def add_all(self, arrays):
        return sum(self.add(a) for a in arrays)


def _arrays(obj, depth=0):
    """The arrays in obj: an array, a Tensor's data, or inside (nested) dicts, lists and tuples."""
    if isinstance(obj, Tensor):
        yield obj.data
    elif hasattr(obj, "nbytes") and hasattr(obj, "dtype"):
        yield obj
    elif isinstance(obj, (list, tuple)) and depth < 3:
        for item in obj:
            yield from _arrays(item, depth + 1)
    elif isinstance(obj, dict) and depth < 3:
        for item in obj.values():
            yield from _arrays(item, depth + 1)


def _graph_arrays(loss):
    """Arrays the graph behind `loss` keeps alive: node outputs and what backward closures captured."""
    stack, visited = [loss], set()
    while stack:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        yield node.data
        for cell in getattr(node._backward_fn, "__closure__", None) or ():
            try:
                yield from _arrays(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
        stack.extend(p for p in node._parents or () if p is not None)


def measure_memory(model, optimizer=None, loss=None):
    """Bytes held now, by category: params, grads, optimizer, buffers (communication), activations.

    `model` may be wrapped (DDP, FullyShardedDataParallel); `loss` (optional) is a tensor whose graph
    has not been freed yet (measure between forward and backward)."""
    counter = _Counter()
    inner = getattr(model, "module", model)
    params = list(model.parameters()) + list(inner.parameters()) + list(inner.buffers())
    out = {"params": counter.add_all(p.data for p in params)}
    out["grads"] = counter.add_all(p.grad.data for p in params if p.grad is not None)
    out["grads"] += counter.add_all(b.buffer for b in getattr(model, "buckets", []))
    out["optimizer"] = counter.add_all(_arrays(dict(optimizer.state)) if optimizer is not None else [])
    inner_optim = getattr(optimizer, "optim", None)  # ZeroRedundancyOptimizer: the state is in its share
    if inner_optim is not None:
        out["optimizer"] += counter.add_all(_arrays(dict(inner_optim.state)))
    out["buffers"] = counter.add_all(model._comm_buffers() if hasattr(model, "_comm_buffers") else [])
    out["activations"] = counter.add_all(_graph_arrays(loss)) if loss is not None else 0
    return out


def _measure_strategy(config, batch, strategy):
    """One rank's measured (params, grads, optimizer) bytes after an AdamW step, and activation bytes between a
    forward and its backward, for a GPT of `config` on `batch` sequences under "ddp", "zero1", "zero2" or "zero3"."""
    from tinytorch.distributed.ddp import DistributedDataParallel
    from tinytorch.distributed.fsdp import FullyShardedDataParallel
    from tinytorch.distributed.zero import ZeroRedundancyOptimizer
    from tinytorch.models import GPT
    from tinytorch.optim import AdamW
    model = GPT(config)
    if strategy in ("zero2", "zero3"):
        net = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=int(strategy[-1]))
        opt = AdamW(net.parameters(), lr=1e-3)
    else:
        net = DistributedDataParallel(model)
        opt = (ZeroRedundancyOptimizer(model.parameters(), lr=1e-3) if strategy == "zero1"
               else AdamW(model.parameters(), lr=1e-3))
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, (batch, config.block_size + 1))
    idx, targets = Tensor(tokens[:, :-1]), Tensor(tokens[:, 1:])
    net(idx, targets)[1].backward()  # GPT's own loss: cross-entropy on the next tokens
    opt.step()
    static = measure_memory(net, opt)
    loss = net(idx, targets)[1]
    activations = measure_memory(net, opt, loss)["activations"]
    loss.backward()
    return static["params"], static["grads"], static["optimizer"], activations


def _memory_table(config, batch, predict_memory, gpt_activation_bytes, sizes=(1, 2, 4),
                  strategies=("ddp", "zero1", "zero2", "zero3")):
    """Rows (n, strategy, predicted, measured): the lesson's predict_memory and gpt_activation_bytes (passed in: the
    notebook's own, not the last exported ones) against _measure_strategy, each as [params, grads, optimizer,
    activations] bytes (measured: the mean over ranks)."""
    from tinytorch.distributed import ThreadGroup
    from tinytorch.models import GPT
    n_params = sum(p.data.size for p in GPT(config).parameters())
    act = gpt_activation_bytes(config, batch, config.block_size)
    rows = []
    for n in sizes:
        for strategy in strategies:
            measured = np.mean(ThreadGroup.run(n, _measure_strategy, config, batch, strategy), axis=0)
            predicted = predict_memory(n_params, n, strategy, act)
            rows.append((n, strategy, [predicted[k] for k in ("params", "grads", "optimizer", "activations")],
                         list(measured)))
    return rows


def cuda_pool_bytes():
    """Bytes CuPy's memory pool has handed out (None without a usable GPU)."""
    try:
        import cupy
        return int(cupy.get_default_memory_pool().used_bytes()) if cupy.cuda.is_available() else None
    except Exception:  # no cupy or no driver: nothing to report
        return None


# %% [markdown]
# ## Checkpointing as PyTorch's
#
# `_recomputable(fn, args)` prepares the lesson's `checkpoint`: it returns `fn`
# wrapped so that it runs under the autocast policy in force now (backward's
# recomputation must cast as the forward did, also when backward runs outside
# the `autocast` block) and refuses an output that is not one tensor, and
# `params`: the parameters `fn` reads that are not among `args` — those of `fn`
# itself (a module), of the module a bound method belongs to, or of the modules
# a lambda captures, such as GPT's `lambda h: block(h, positions=positions)`.
# As inputs of the checkpoint op they make its output require grad when only
# the weights do (frozen embeddings, LoRA), as in PyTorch's non-reentrant
# checkpoint. When nothing it can see requires grad it warns, as PyTorch's
# reentrant one does.

# %%
#| export utils
import functools
import warnings

from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.tensor import Tensor, _autocast_state  # noqa: F811  (this cell exports to its own file)
from tinytorch.nn import Module


def _captured_modules(fn):
    """fn itself, the module of a bound method, a partial's function and arguments, and the modules in a closure."""
    yield fn
    yield getattr(fn, "__self__", None)
    if isinstance(fn, functools.partial):  # partial(layer_fn, block) reads block's parameters too
        yield fn.func
        yield from fn.args
        yield from fn.keywords.values()
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            yield cell.cell_contents
        except ValueError:  # a cell not filled yet
            pass


def _recomputable(fn, args):
    """(fn run under the autocast policy of now and checked to return one tensor, the parameters fn reads)."""
    found = (p for m in _captured_modules(fn) if isinstance(m, Module) for p in m.parameters())
    given = {id(a) for a in args}
    params = tuple({id(p): p for p in found if p.requires_grad and id(p) not in given}.values())
    if is_grad_enabled() and not any(isinstance(a, Tensor) and a.requires_grad for a in (*args, *params)):
        warnings.warn("checkpoint: no tensor argument requires grad, nor a parameter of a module fn is or captures, "
                      "so what fn computes gets no gradients", UserWarning, stacklevel=3)
    policy = _autocast_state.run

    def as_in_forward(*fn_args):
        outer, _autocast_state.run = _autocast_state.run, policy
        try:
            out = fn(*fn_args)
        finally:
            _autocast_state.run = outer
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: fn must return one tensor, got {type(out).__name__} (return a tuple's "
                            "tensors from separate checkpoints)")
        return out
    return as_in_forward, params
