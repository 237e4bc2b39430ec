# %% [markdown]
# # Module 05 — provided code
#
# Infrastructure for the optimizers lesson: the `Optimizer` base class (parameter
# groups, per-parameter state, `zero_grad`, `step`, `state_dict`), argument
# checks, `RMSprop`, the learning-rate scheduler base with `StepLR`, `LambdaLR`,
# `LinearLR` and `SequentialLR`, and the gradient-norm helpers. Read it if you
# like; you never edit it.

# %%
#| default_exp optim.optimizer

# %% [markdown]
# ## Fused Adam: `Adam(..., fused=True)`
#
# The lesson's Adam makes about fourteen NumPy passes over each parameter, one
# per line of the recipe, each reading and writing whole arrays. On a 670 K-
# parameter MLP that is ~2.5 ms per step, more than its forward pass. With
# `fused=True` (PyTorch's name) the same recipe runs as one loop per parameter,
# compiled by numba on first use (`pip install 'tinytorch[fused]'`; ~0.5 s to
# compile, ~115 MiB for numba and its compiled code): each element is read and
# written once, in the reference solution's order of float32 operations, so with
# Python numbers for lr, betas, eps and weight decay (as schedulers set them) the
# result is the solution's to the last bit (tests/05_optimizers/test_fused.py);
# ~5x faster, and it releases
# Python's lock, so two threads update two parameters at once. CPU float32 and
# float64 parameters only; anything else is refused when the optimizer is made.

# %%
#| export optim.fused
"""The fused Adam update (`Adam(..., fused=True)`): the lesson's recipe as one numba-compiled pass."""
import functools
import importlib.util

import numpy as np

_FUSED_DTYPES = (np.float32, np.float64)


def _check_fused(fused, optimizer):
    """`fused` as a bool: None and False are off; True needs numba and CPU float32/float64 parameters."""
    if fused is None or fused is False:
        return False
    if fused is not True:
        raise TypeError(f"fused must be True, False or None, got {fused!r}")
    if importlib.util.find_spec("numba") is None:
        raise ImportError(f"{type(optimizer).__name__}(fused=True) compiles its update with numba, which is not "
                          "installed: pip install 'tinytorch[fused]' (or leave fused off)")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, p in enumerate(params):
        _check_fusable(p, f"parameter {i}")
    return True


def _check_fusable(p, name):
    if p._device.type != "cpu" or p.data.dtype not in _FUSED_DTYPES:
        raise ValueError(f"fused=True runs on CPU float32/float64 parameters, but {name} is "
                         f"{p.data.dtype} on {p._device}: leave fused off for it")


def _fused_adam_update(p, grad, state, group):
    """The lesson's Adam update of `p` in one compiled pass; False (nothing done) where `p.data`, its state or its
    gradient is not one contiguous block of p's shape, for the lesson's `_update` to do instead."""
    _check_fusable(p, "a parameter")  # moved to another device or dtype after the optimizer was made
    arrays = [p.data] + [v for v in state.values() if isinstance(v, np.ndarray) and v.ndim]
    if grad.shape != p.data.shape or not all(a.flags.c_contiguous for a in arrays):
        return False  # a broadcast gradient or state made on another layout: the kernel walks one flat block each
    dtype = p.data.dtype.type
    lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
    if not state:
        state["step"] = 0
        state["exp_avg"] = np.zeros_like(p.data)
        state["exp_avg_sq"] = np.zeros_like(p.data)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = np.zeros_like(p.data)
    state["step"] += 1
    t = state["step"]
    decoupled = weight_decay != 0 and group["decoupled_weight_decay"]
    l2 = weight_decay if weight_decay != 0 and not decoupled else 0
    v_max = state["max_exp_avg_sq"].reshape(-1) if group["amsgrad"] else np.zeros(0, dtype)
    constants = (-1 if group["maximize"] else 1, l2, 1 - lr * weight_decay if decoupled else 1, 1 - beta1,
                 beta2, 1 - beta2, (1 - beta2 ** t) ** 0.5, group["eps"], lr / (1 - beta1 ** t))
    _adam_kernel()(p.data.reshape(-1), np.ascontiguousarray(grad, dtype).reshape(-1),
                   state["exp_avg"].reshape(-1), state["exp_avg_sq"].reshape(-1), v_max,
                   *(dtype(c) for c in constants))  # in p's dtype, as NumPy keeps Python numbers in the lesson
    return True


@functools.cache
def _adam_kernel():
    """Compile the kernel on first use (numba is imported only by an optimizer made with fused=True)."""
    import numba

    @numba.njit(nogil=True, error_model="numpy")  # numpy's error model: x/0 is inf, so the loop vectorizes
    def adam(p, g, m, v, v_max, sign, l2, decay, one_minus_beta1, beta2, one_minus_beta2, bias2_root, eps,
             step_size):
        amsgrad = v_max.size > 0
        for i in range(p.size):  # each line is one of the lesson's, with the same float operations in order
            gi = sign * g[i]
            if l2 != 0:
                gi = gi + l2 * p[i]
            pi = p[i] * decay
            mi = m[i] + (gi - m[i]) * one_minus_beta1
            vi = v[i] * beta2 + gi * gi * one_minus_beta2
            m[i] = mi
            v[i] = vi
            if amsgrad:
                if v_max[i] > vi or v_max[i] != v_max[i]:  # np.maximum: a NaN on either side wins
                    vi = v_max[i]
                v_max[i] = vi
            p[i] = pi - mi / (np.sqrt(vi) / bias2_root + eps) * step_size
    return adam


# %% [markdown]
# ## The `Optimizer` base
#
# `param_groups` is a list of dicts, each with its `params` and its own copy of
# every option (missing ones come from `defaults`). `state[param]` is a dict per
# parameter, filled lazily by the subclass's `_update` on its first step.
# `state_dict()` replaces parameters by their position (0, 1, ... across
# groups), so it loads into a fresh optimizer over a freshly built model.
# Inputs are checked as PyTorch checks them; a parameter with
# `requires_grad=False` is accepted and skipped by `step()` (frozen layers).

# %%
#| export
"""Optimizers: the `Optimizer` base (param groups, state, state_dict), SGD, Adam, AdamW, RMSprop."""
import copy
from collections import defaultdict
from collections.abc import Iterator

from tinytorch.core.autograd import enable_grad, no_grad
from tinytorch.core.backend import get_xp, to_device
from tinytorch.core.tensor import Tensor, _wrote, from_op
from tinytorch.optim.fused import _check_fused, _fused_adam_update  # _check_fused: for Adam, below


def _check_range(name, value, low=0.0, high=None):
    """ValueError unless low <= value (< high), naming the option."""
    if not (low <= value and (high is None or value < high)):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"Invalid {name}: {value} (must be {bound})")


def _check_sgd_options(lr, momentum, dampening, weight_decay, nesterov):
    _check_range("learning rate", lr)
    _check_range("momentum value", momentum)
    _check_range("weight_decay value", weight_decay)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def _check_adam_options(lr, betas, eps, weight_decay):
    _check_range("learning rate", lr)
    _check_range("epsilon value", eps)
    _check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
    _check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
    _check_range("weight_decay value", weight_decay)


def _describe(obj):
    text = repr(obj)
    return type(obj).__name__ if len(text) > 60 else f"{type(obj).__name__} {text}"


def _param_list(params, where):
    """`params` as a list of leaf tensors, or a ValueError that says what was passed."""
    if isinstance(params, Tensor):
        raise ValueError(f"{where} should be an iterable of tensors, but got a single Tensor "
                         f"of shape {tuple(params.shape)}: pass [tensor]")
    if callable(getattr(params, "parameters", None)):
        raise ValueError(f"{where} got a {type(params).__name__} module; pass "
                         f"module.parameters() instead")
    if isinstance(params, set):
        raise ValueError(f"{where} is a set, whose order changes between runs; use a list")
    try:
        params = list(params)
    except TypeError:
        raise ValueError(f"{where} should be an iterable of tensors, got {_describe(params)}") from None
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise ValueError(f"optimizer can only optimize Tensors, but {where}[{i}] is a "
                             f"{_describe(p)}")
        if not p.is_leaf:
            raise ValueError(f"can't optimize a non-leaf Tensor: {where}[{i}] (shape "
                             f"{tuple(p.shape)}) was computed by an op; use .detach().requires_grad_()")
    if len({id(p) for p in params}) != len(params):
        raise ValueError(f"{where} contains the same tensor more than once")
    return params


def _copy_value(value, param):
    """State arrays as Tensors (PyTorch's state_dict holds tensors), copied so that the state_dict does
    not change when training goes on; numbers as they are."""
    return from_op(value.copy(), param._device) if hasattr(value, "shape") else copy.deepcopy(value)


def _load_value(value, param):
    """A saved state entry (a Tensor, or an array as older state dicts hold), as an array on the
    parameter's device with its dtype; numbers as they are."""
    if isinstance(value, Tensor):
        value = value.data
    if not hasattr(value, "shape"):
        return copy.deepcopy(value)
    xp = get_xp(param._device)
    return xp.array(to_device(value, param._device), dtype=param.data.dtype)


class Optimizer:
    """Base class: holds `param_groups` and per-parameter `state`; subclasses define `_update`.

    `params`: an iterable of tensors, or of dicts (parameter groups with their own options).
    Tensors with requires_grad=False are accepted and skipped by `step()` (PyTorch's behaviour).
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)  # param tensor -> {"step": ..., "exp_avg": array, ...}
        self.param_groups = []
        self._loads = 0  # load_state_dict calls: a scheduler tells a loaded rate from another one's
        if isinstance(params, Iterator):
            params = list(params)  # a generator can be read once: look at its items, then keep them
        if isinstance(params, (list, tuple)) and params and all(isinstance(g, dict) for g in params):
            groups = list(params)
        else:
            groups = [{"params": _param_list(params, "params")}]
        if not groups[0]["params"]:
            raise ValueError("optimizer got an empty parameter list")
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing ones come from `defaults`)."""
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise ValueError(f"a parameter group is a dict with a 'params' key, got {_describe(param_group)}")
        where = f"param_groups[{len(self.param_groups)}]['params']"
        params = param_group["params"]
        group = dict(param_group, params=_param_list([params] if isinstance(params, Tensor) else params, where))
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: `.grad = None` (default) or fill them with zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.data.fill(0)

    fused = False  # Adam(..., fused=True) sets it: its update then runs as one compiled pass (optim.fused)

    def step(self, closure=None):
        """Update every parameter that has a gradient; `closure` re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update_one(p, p.grad.data, self.state[p], group)
                        _wrote(p)  # a graph that saved p before this step can no longer differentiate it
        return loss

    def _update_one(self, p, grad, state, group):
        """The subclass's `_update`, or the fused kernel where the optimizer was made with fused=True."""
        if not (self.fused and _fused_adam_update(p, grad, state, group)):
            self._update(p, grad, state, group)

    def _update(self, p, grad, state, group):
        """Change `p.data` in place, given its gradient array, its state dict and its group."""
        raise NotImplementedError(f"{type(self).__name__} must define _update")

    def state_dict(self):
        """Groups and state, with parameters replaced by their index (0, 1, ... across groups)."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: {k: _copy_value(v, p) for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def _check_state_dict(self, state_dict):
        """ValueError if `state_dict` is not of this optimizer's layout: another number of parameter groups,
        of parameters in a group, or state of a parameter it does not have. Nothing is changed."""
        saved = state_dict.get("param_groups", [])
        if len(saved) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, this optimizer "
                             f"has {len(self.param_groups)}")
        for i, (old, new) in enumerate(zip(saved, self.param_groups)):
            if len(old["params"]) != len(new["params"]):
                raise ValueError(f"loaded parameter group {i} has {len(old['params'])} parameters, "
                                 f"this optimizer's has {len(new['params'])}")
        n_params = sum(len(group["params"]) for group in self.param_groups)
        unknown = [i for i in state_dict.get("state", {}) if not 0 <= int(i) < n_params]
        if unknown:
            raise ValueError(f"loaded state dict holds state of parameter {unknown[0]}, but this optimizer "
                             f"has {n_params} parameters")

    def load_state_dict(self, state_dict):
        """Restore groups and state saved by `state_dict()` into this optimizer's parameters."""
        self._check_state_dict(state_dict)
        saved = state_dict["param_groups"]
        by_index = {}
        for old, new in zip(saved, self.param_groups):
            by_index.update(zip(old["params"], new["params"]))
        self.state = defaultdict(dict)
        for i, entries in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: _load_value(v, p) for k, v in entries.items()}
        self.param_groups = [{**copy.deepcopy({k: v for k, v in old.items() if k != "params"}),
                              "params": new["params"]}
                             for old, new in zip(saved, self.param_groups)]
        self._loads += 1

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


# %% [markdown]
# ## RMSprop
#
# Adam's ancestor (Hinton, 2012): the per-parameter scale without bias
# correction, with optional classical momentum; `centered` divides by an
# estimate of the gradient's standard deviation instead of its root mean square.

# %%
#| export
class RMSprop(Optimizer):
    """RMSprop with optional momentum and centering (PyTorch's update rule)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 *, maximize=False):
        _check_range("learning rate", lr)
        _check_range("epsilon value", eps)
        _check_range("momentum value", momentum)
        _check_range("weight_decay value", weight_decay)
        _check_range("alpha value", alpha)
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _update(self, p, grad, state, group):
        xp = get_xp(p._device)
        alpha, momentum = group["alpha"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = xp.zeros_like(p.data)
            if momentum > 0:
                state["momentum_buffer"] = xp.zeros_like(p.data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(p.data)
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * p.data
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg += (1 - alpha) * (grad - grad_avg)
            avg = xp.subtract(square_avg, grad_avg * grad_avg, out=xp.empty_like(square_avg))
            avg = xp.sqrt(avg, out=avg)
        else:
            avg = xp.sqrt(square_avg, out=xp.empty_like(square_avg))  # an array even for a 0-d parameter
        avg += group["eps"]
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += grad / avg
            p.data -= group["lr"] * buf
        else:
            avg = xp.divide(grad, avg, out=avg)
            avg *= group["lr"]
            p.data -= avg


# %% [markdown]
# ## Learning-rate schedulers
#
# A scheduler writes a new `lr` into every group on each `step()`. Creating it
# is epoch 0; each group's starting rate is saved as `initial_lr`. Schedules are
# computed in closed form from `base_lrs` and `last_epoch`, so a scheduler owns
# the rate: PyTorch's schedulers update the current rate and two of them on one
# optimizer multiply, ours would overwrite each other. So `step()` refuses to
# go on when the rate is not the one it set last (another scheduler, or code,
# changed it); `SequentialLR` and `LambdaLR` combine schedules instead.
# `load_state_dict` writes the saved rate back into the groups.

# %%
#| export optim.lr_scheduler
"""Learning-rate schedules: each `step()` writes a new `lr` into the optimizer's groups."""
import math
from bisect import bisect_right


class LRScheduler:
    """Base class: subclasses define `get_lr()` from `self.base_lrs` and `self.last_epoch`."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(self).__name__} needs an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                               f"a scheduler with last_epoch={last_epoch}")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._advance()  # epoch last_epoch + 1 (0 for a fresh run): sets the first learning rate

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} must define get_lr")

    def step(self):
        """Advance one epoch (or batch) and write the new learning rates into the groups."""
        self._check_rate_is_ours()
        self._advance()

    def _advance(self):  # without the check: SequentialLR drives its schedulers through this
        self.last_epoch += 1
        self._apply(self.get_lr())

    def _check_rate_is_ours(self):
        """RuntimeError if a group's lr is not the one this scheduler set last: overwriting it would lose it.
        A rate the optimizer's load_state_dict restored since is a checkpoint's: this scheduler goes on."""
        if getattr(self.optimizer, "_loads", 0) != self._loads_seen:
            return
        for i, (group, ours) in enumerate(zip(self.optimizer.param_groups, self._last_lr)):
            if group["lr"] != ours and not (math.isnan(group["lr"]) and math.isnan(ours)):
                raise RuntimeError(
                    f"{type(self).__name__}.step(): param_groups[{i}]['lr'] is {group['lr']}, but this scheduler "
                    f"set {ours}: another scheduler or your code changed it. This scheduler computes the rate "
                    f"from the epoch and would overwrite the change (PyTorch's schedulers chain instead), so use "
                    f"one scheduler per optimizer: SequentialLR for one schedule after another, LambdaLR for a "
                    f"product of factors; to rescale this schedule, change its base_lrs")

    def _apply(self, lrs):
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._remember([group["lr"] for group in self.optimizer.param_groups])

    def _remember(self, lrs):
        """`lrs` are the rates this scheduler set last (and the optimizer's load count they were set at)."""
        self._last_lr = list(lrs)
        self._loads_seen = getattr(self.optimizer, "_loads", 0)

    def get_last_lr(self):
        """The learning rates the last `step()` set, one per group."""
        return self._last_lr

    def state_dict(self):
        """Everything but the optimizer (and functions, which cannot be saved)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)
        self._apply(self._last_lr)  # resume at the saved rate, whether or not the optimizer was loaded first


class StepLR(LRScheduler):
    """Multiply the learning rate by `gamma` every `step_size` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base_lr · lr_lambda(epoch); one function, or one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(lambdas) != n:
            raise ValueError(f"expected {n} lr_lambdas (one per param group), got {len(lambdas)}")
        self.lr_lambdas = lambdas
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]

    def state_dict(self):
        state = super().state_dict()
        state.pop("lr_lambdas", None)  # functions are re-created by the code that builds the scheduler
        return state


class LinearLR(LRScheduler):
    """Scale the learning rate linearly from start_factor to end_factor over total_iters epochs."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        if not 0 <= end_factor <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {end_factor}")
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        done = min(self.total_iters, self.last_epoch)
        progress = done / self.total_iters if self.total_iters else 0.0  # no iterations: start_factor, as PyTorch
        factor = self.start_factor + (self.end_factor - self.start_factor) * progress
        return [base * factor for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """Run `schedulers[i]` from milestone i−1 to milestone i (each restarted at its epoch 0)."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        if len(schedulers) < 1:
            raise ValueError("SequentialLR expects at least one scheduler")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR expects one milestone fewer than schedulers, got "
                             f"{len(schedulers)} schedulers and {len(milestones)} milestones")
        for i, s in enumerate(schedulers):
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: schedulers[{i}] wraps a different optimizer")
        self.optimizer, self._schedulers, self._milestones = optimizer, list(schedulers), list(milestones)
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        first = self._schedulers[bisect_right(self._milestones, 0)]
        first.last_epoch = -1
        first._advance()
        self._remember(first.get_last_lr())

    def step(self):
        self._check_rate_is_ours()  # the schedulers it runs share the rate with it, and are not checked
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            scheduler.last_epoch = -1  # restart: its _advance() below is its epoch 0
        scheduler._advance()
        self._remember(scheduler.get_last_lr())

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        self.__dict__.update(state)
        self._apply(self._last_lr)


# %% [markdown]
# ## Gradient helpers
#
# `_grads_of` collects the gradient arrays of a parameter list (or one tensor);
# `clip_grad_value_` clamps each entry.

# %%
#| export nn.utils
"""Gradient utilities: clip_grad_norm_, clip_grad_value_."""
import math  # noqa: F401 -- math.inf, for the norms in the lesson

import numpy as np  # noqa: F401 -- the lesson's clip_grad_norm_ tells the CPU from a GPU

from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import Tensor, from_op


def _grads_of(parameters):
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad.data for p in params if p.grad is not None], params


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient entry into [-clip_value, clip_value], in place."""
    grads, _ = _grads_of(parameters)
    clip_value = float(clip_value)
    for g in grads:
        g.clip(-clip_value, clip_value, out=g)
