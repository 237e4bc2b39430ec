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
# # Module 05 — Optimizers
#
# `loss.backward()` tells every parameter which way is downhill. An
# **optimizer** decides how far to move, using the gradient and whatever it
# remembers from earlier steps. The choice matters: on the same model, plain
# gradient descent can take ten times more steps than Adam, or never get there
# with a learning rate that Adam handles easily.
#
# This module builds PyTorch's `torch.optim`: the `Optimizer` base (parameter
# groups, per-parameter state, `state_dict` for resuming), `SGD` with momentum
# and Nesterov, `Adam`, `AdamW`, `RMSprop`, learning-rate schedules
# (`tinytorch.optim.lr_scheduler`) and gradient clipping (`tinytorch.nn.utils`).
#
# **You will implement:** `SGD._update`, `Adam._update` (with AdamW's decoupled
# decay), `clip_grad_norm_`, `CosineAnnealingLR.get_lr`, and an experiment on
# what weight decay does to duplicated features.
#
# **Cost to keep in mind:** an optimizer's memory is its state. SGD keeps 0 or
# 1 extra array per parameter, Adam 2, AMSGrad 3: for a 1-billion-parameter
# model in float32, Adam's state alone is 8 GB. We measure it at the end.

# %%
#| default_exp optim.optimizer

# %% [markdown]
# ## 1. What an optimizer holds
#
# Gradient descent moves each parameter θ against its gradient g = ∂L/∂θ:
# θ ← θ − lr·g. Three practical needs shape the `Optimizer` class around that
# line:
#
# - **Parameter groups.** Different parameters often want different settings:
#   no weight decay on biases and LayerNorm gains, a smaller learning rate for a
#   pretrained backbone. `param_groups` is a list of dicts, each with its
#   `params` and its own copy of every option (`lr`, `weight_decay`, ...).
#   Options not given in a group come from the optimizer's `defaults`.
# - **State.** Momentum and Adam remember running averages, one array per
#   parameter, kept in `state[param]` (a dict per parameter, created lazily on
#   its first step).
# - **Resuming.** `state_dict()` captures groups and state with parameters
#   replaced by their position (0, 1, 2, ... across groups), so it can be saved
#   and loaded into a fresh optimizer over a freshly built model.
#   `load_state_dict()` puts it back; the next steps are then bit-identical to
#   those of an uninterrupted run.
#
# Updates happen **in place** on `p.data` (and on the state arrays): the model
# and anything else holding the parameter keep seeing the same array, and no
# memory is allocated per step for parameters or state. Updates run under
# `no_grad`: they are not part of the graph.
#
# Inputs are checked the way PyTorch checks them: an empty list, something that
# is not a tensor (a list of floats, a `Module` instead of `module.parameters()`),
# a tensor computed by an op (not a leaf), or the same tensor twice is a
# `ValueError` that names the problem. A parameter with `requires_grad=False`
# is accepted, as in PyTorch: it never gets a `.grad`, so `step()` skips it
# (handy for frozen layers). This base class is provided; read it, then move on.

# %%
#| export
"""Optimizers: the `Optimizer` base (param groups, state, state_dict), SGD, Adam, AdamW, RMSprop."""
import copy
from collections import defaultdict

from tinytorch.core.autograd import enable_grad, no_grad
from tinytorch.core.backend import get_xp, to_device
from tinytorch.core.tensor import Tensor


def _check_range(name, value, low=0.0, high=None):
    """ValueError unless low <= value (< high), naming the option."""
    if not (low <= value and (high is None or value < high)):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"Invalid {name}: {value} (must be {bound})")


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


def _copy_value(value):
    """Arrays are copied (a state_dict must not change when training goes on); numbers as they are."""
    return value.copy() if hasattr(value, "shape") else copy.deepcopy(value)


def _load_value(value, param):
    """A saved state entry, as an array on the parameter's device with its dtype (numbers as they are)."""
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
                        self._update(p, p.grad.data, self.state[p], group)
        return loss

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
        state = {index[id(p)]: {k: _copy_value(v) for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore groups and state saved by `state_dict()` into this optimizer's parameters."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(saved)} parameter groups, this optimizer "
                             f"has {len(self.param_groups)}")
        by_index = {}
        for i, (old, new) in enumerate(zip(saved, self.param_groups)):
            if len(old["params"]) != len(new["params"]):
                raise ValueError(f"loaded parameter group {i} has {len(old['params'])} parameters, "
                                 f"this optimizer's has {len(new['params'])}")
            by_index.update(zip(old["params"], new["params"]))
        self.state = defaultdict(dict)
        for i, entries in state_dict["state"].items():
            p = by_index[int(i)]
            self.state[p] = {k: _load_value(v, p) for k, v in entries.items()}
        self.param_groups = [{**copy.deepcopy({k: v for k, v in old.items() if k != "params"}),
                              "params": new["params"]}
                             for old, new in zip(saved, self.param_groups)]

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


# %% [markdown]
# A quick look: two groups, the second with its own learning rate, and the
# `state_dict` that refers to parameters by position.

# %%
import numpy as np

import tinytorch as tt


class _Plain(Optimizer):
    def _update(self, p, grad, state, group):
        p.data -= group["lr"] * grad


w = tt.tensor([1.0, 2.0], requires_grad=True)
b = tt.tensor([0.5], requires_grad=True)
demo = _Plain([{"params": [w]}, {"params": [b], "lr": 0.1}], {"lr": 0.01})
(w * w).sum().add(b.sum() * 3.0).backward()
demo.step()
print(demo)
print("w after one step:", w.tolist(), " b:", b.tolist())
print("state_dict groups:", demo.state_dict()["param_groups"])

# %% [markdown]
# ## 2. SGD and momentum
#
# *Why momentum.* On a long narrow valley the gradient points mostly across
# the valley, so plain gradient descent zig-zags between the walls and crawls
# along the floor. Momentum keeps a running sum of past gradients,
#
# b_t = μ·b_{t−1} + (1 − τ)·g_t,    θ ← θ − lr·b_t
#
# (μ the momentum, τ the dampening, usually 0). This is a **low-pass filter**
# on the gradient sequence: a component that keeps its sign (along the valley
# floor) adds up to g/(1 − μ), ten times g for μ = 0.9; a component that flips
# sign every step (across the valley) sums to only g/(1 + μ), about g/2. The
# signal is amplified, the oscillation damped.
#
# PyTorch's exact rule, which we match (note: no (1 − τ) on the first step,
# where the buffer is simply a copy of the gradient):
#
# ```
# g ← −g                          if maximize
# g ← g + wd·θ                    if weight_decay ≠ 0   (L2 penalty wd/2·‖θ‖²)
# if μ ≠ 0:
#     b ← copy of g               on the first step
#     b ← μ·b + (1 − τ)·g         afterwards
#     g ← g + μ·b  if nesterov, else  g ← b
# θ ← θ − lr·g
# ```
#
# **Nesterov** looks ahead: it uses the gradient step plus the *next* momentum
# step, g + μ·b, which corrects overshoot a step earlier. It needs τ = 0.
#
# *Worked example.* θ = 1, lr = 0.1, μ = 0.9, and the gradient is 0.5 at both
# steps. Step 1: b = 0.5, θ = 1 − 0.05 = 0.95. Step 2: b = 0.9·0.5 + 0.5 = 0.95,
# θ = 0.95 − 0.095 = 0.855. With Nesterov: step 1 uses g + μ·b = 0.95, θ = 0.905;
# step 2: b = 0.95, uses 0.5 + 0.855 = 1.355, θ = 0.7695.
#
# ### Exercise: `SGD._update(p, grad, state, group)`
# Implement the rule above for one parameter. `grad` is the raw gradient array
# (do not modify it: it is `p.grad`'s data); `state` is this parameter's dict
# (store the buffer under `"momentum_buffer"`, only when μ ≠ 0); `group` holds
# `lr`, `momentum`, `dampening`, `weight_decay`, `nesterov`, `maximize`. Update
# `p.data` and the buffer **in place** (`p.data -= ...`, `buf *= ...`), so their
# arrays never change identity. Python floats times float32 arrays stay float32.

# %% nbgrader={"grade": false, "grade_id": "sgd", "locked": false, "schema_version": 3, "solution": true}
#| export
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False):
        _check_range("learning rate", lr)
        _check_range("momentum value", momentum)
        _check_range("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _update(self, p, grad, state, group):
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        ### BEGIN SOLUTION
        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            grad = grad + weight_decay * p.data
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-sgd", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _steps(optimizer, param, grads):
    """Run one step per gradient (set by hand); return the parameter's values after each."""
    seen = []
    for g in grads:
        param.grad = tt.tensor(g)
        optimizer.step()
        seen.append(param.data.copy())
    return seen


def test_sgd():
    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1), p, [[0.5]])
    assert np.allclose(got, [[0.95]]), f"plain SGD: 1 - 0.1*0.5 = 0.95, got {got}"

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1, momentum=0.9), p, [[0.5], [0.5]])
    assert np.allclose(got, [[0.95], [0.855]]), (
        f"momentum: the buffer is a copy of g on step 1 (0.95), then 0.9*b + g (0.855); got {got}")

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1, momentum=0.9, nesterov=True), p, [[0.5], [0.5]])
    assert np.allclose(got, [[0.905], [0.7695]]), f"nesterov steps with g + 0.9*b: expected 0.905, 0.7695; got {got}"

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1, momentum=0.9, dampening=0.5), p, [[1.0], [1.0]])
    assert np.allclose(got, [[0.9], [0.76]]), (
        f"dampening: step 1 b = g = 1 (no dampening on the first step), step 2 b = 0.9*1 + 0.5*1 = 1.4; "
        f"expected 0.9 then 0.76; got {got}")

    p = tt.tensor([2.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1, weight_decay=0.5), p, [[0.0]])
    assert np.allclose(got, [[1.9]]), f"weight decay adds 0.5*theta = 1.0 to the gradient: 2 - 0.1 = 1.9; got {got}"

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1, maximize=True), p, [[0.5]])
    assert np.allclose(got, [[1.05]]), f"maximize climbs the gradient: 1 + 0.05; got {got}"

    p = tt.tensor(np.ones((3, 2), np.float32), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9)
    address = p.data.ctypes.data
    grads = [np.full((3, 2), 0.5, np.float32)] * 3
    _steps(opt, p, grads)
    buf = opt.state[p]["momentum_buffer"]
    buf_address = buf.ctypes.data
    _steps(opt, p, grads)
    assert p.data.ctypes.data == address, "update p.data in place (p.data -= ...), don't assign a new array"
    assert opt.state[p]["momentum_buffer"].ctypes.data == buf_address, "update the momentum buffer in place"
    assert p.data.dtype == np.float32 and buf.dtype == np.float32, "parameters and buffers stay float32"
    assert np.array_equal(p.grad.data, grads[-1]), "do not modify the gradient array"
    ### BEGIN HIDDEN TESTS
    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True), p, [[0.4]])
    assert np.allclose(got, [[1.0 - 0.1 * 0.5 * 1.9]]), f"wd before momentum, then nesterov; got {got}"
    ### END HIDDEN TESTS


test_sgd()
print("SGD: ok")

# %% [markdown]
# ## 3. Adam and AdamW
#
# *Why a per-parameter scale.* One learning rate for all parameters is a poor
# fit when gradients differ by orders of magnitude between layers (embeddings
# that are rarely touched, a final layer with large gradients). Adam divides
# each parameter's step by a running estimate of its gradient's size:
#
# ```
# m ← β₁·m + (1 − β₁)·g          first moment: momentum, a low-pass filter of g
# v ← β₂·v + (1 − β₂)·g²         second moment: the gradient's typical size²
# m̂ = m / (1 − β₁ᵗ),  v̂ = v / (1 − β₂ᵗ)     bias correction (t = step count, from 1)
# θ ← θ − lr · m̂ / (√v̂ + ε)
# ```
#
# m̂/√v̂ is about ±1 when the gradient is consistent and small when it is noise,
# so every parameter moves by roughly lr per step, whatever its gradient's
# scale. **Bias correction:** m and v start at 0, so early on they are shrunk
# towards 0 — after one step m = (1 − β₁)·g = 0.1·g. Dividing by 1 − β₁ᵗ (0.1 at
# t = 1) undoes exactly that. **AMSGrad** uses the running maximum of v in the
# denominator, so the step size can only shrink.
#
# *Why AdamW decouples the decay.* With Adam, an L2 penalty (g ← g + wd·θ) goes
# through the division by √v̂: parameters with large gradients are barely
# decayed, those with small gradients a lot. That is not what weight decay is
# meant to do. AdamW (Loshchilov & Hutter, 2019) shrinks every weight by the
# same factor, outside the adaptive part: θ ← θ·(1 − lr·wd), then the Adam step
# on the raw gradient. Transformers are trained with AdamW.
#
# PyTorch's order of operations, which we match:
#
# ```
# g ← −g if maximize;  t ← t + 1
# if wd ≠ 0:  θ ← θ·(1 − lr·wd)  (decoupled, AdamW)   or   g ← g + wd·θ  (Adam)
# m ← m + (1 − β₁)·(g − m)        (the same as β₁·m + (1 − β₁)·g: "move m a fraction towards g")
# v ← β₂·v + (1 − β₂)·g·g
# v_max ← max(v_max, v)  and use v_max below               if amsgrad
# denom = √v / √(1 − β₂ᵗ) + ε
# θ ← θ − (lr / (1 − β₁ᵗ)) · m / denom
# ```
#
# Note where ε sits: added to √v̂, not to v̂ inside the root.
#
# *Worked example.* θ = 1, g = 0.5, lr = 0.1, default betas. m = 0.05,
# v = 0.00025; m̂ = 0.5, v̂ = 0.25; θ = 1 − 0.1·0.5/0.5 = 0.9. The first step
# moves by lr, whatever the gradient's size. With AdamW and wd = 0.01, θ is first
# shrunk to 1·(1 − 0.001) = 0.999, then stepped to 0.899.
#
# ### Exercise: `Adam._update(p, grad, state, group)`
# On the first step, create `state["step"] = 0` and zero arrays
# `state["exp_avg"]`, `state["exp_avg_sq"]` (and `state["max_exp_avg_sq"]` when
# `amsgrad`) shaped like `p.data` (`xp.zeros_like`). Then follow the recipe
# above; `group["decoupled_weight_decay"]` says which decay to use, and
# `group["betas"]` is the pair (β₁, β₂). Update the state arrays and `p.data` in
# place. `xp` (NumPy or CuPy) gives `sqrt` and `maximum`; both take `out=`.

# %% nbgrader={"grade": false, "grade_id": "adam", "locked": false, "schema_version": 3, "solution": true}
#| export
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with optional L2 or decoupled weight decay and AMSGrad."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, maximize=False, decoupled_weight_decay=False):
        _check_range("learning rate", lr)
        _check_range("epsilon value", eps)
        _check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
        _check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
        _check_range("weight_decay value", weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _update(self, p, grad, state, group):
        xp = get_xp(p._device)
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        ### BEGIN SOLUTION
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(p.data)
        if group["maximize"]:
            grad = -grad
        state["step"] += 1
        t = state["step"]
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                p.data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * p.data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - beta1) * (grad - m)
        v *= beta2
        v += (1 - beta2) * grad * grad
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = xp.sqrt(v)
        denom /= (1 - beta2 ** t) ** 0.5
        denom += group["eps"]
        step_size = lr / (1 - beta1 ** t)
        denom = xp.divide(m, denom, out=denom)  # reuse the temporary: m / denom
        denom *= step_size
        p.data -= denom
        ### END SOLUTION


class AdamW(Adam):
    """Adam with decoupled weight decay: θ ← θ·(1 − lr·wd) before each Adam step."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 *, maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)


# %% nbgrader={"grade": true, "grade_id": "test-adam", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_adam():
    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(Adam([p], lr=0.1), p, [[0.5]])
    assert np.allclose(got, [[0.9]], atol=1e-6), (
        f"the first Adam step moves by lr: m_hat = 0.5, v_hat = 0.25, 1 - 0.1 = 0.9; got {got}. "
        f"Did you divide m and v by their bias corrections 1 - beta**t?")

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(Adam([p], lr=0.1), p, [[0.5], [-1.0]])
    m = 0.9 * 0.05 + 0.1 * -1.0
    v = 0.999 * 0.00025 + 0.001 * 1.0
    want = 0.9 - 0.1 / (1 - 0.9 ** 2) * m / (np.sqrt(v) / np.sqrt(1 - 0.999 ** 2) + 1e-8)
    assert np.allclose(got[1], [want], atol=1e-6), f"second Adam step: expected {want:.6f}, got {got[1]}"

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(Adam([p], lr=0.1, betas=(0.5, 0.5), eps=1.0), p, [[2.0]])
    assert np.allclose(got, [[1.0 - 0.1 * 2.0 / 3.0]], atol=1e-6), (
        f"eps is added to sqrt(v_hat) (2 + 1 = 3), not inside the root; got {got}")

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(AdamW([p], lr=0.1, weight_decay=0.01), p, [[0.5]])
    assert np.allclose(got, [[0.899]], atol=1e-6), (
        f"AdamW shrinks theta by (1 - lr*wd) = 0.999 first, then steps by 0.1: 0.899; got {got}")

    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(Adam([p], lr=0.1, weight_decay=1.0), p, [[0.0], [0.0]])
    assert np.allclose(got[0], [0.9], atol=1e-6), (
        f"Adam's L2 decay is added to the gradient (g = 1*theta = 1), so the first step is still lr; got {got[0]}")

    p = tt.tensor([1.0, 1.0], requires_grad=True)
    opt = Adam([p], lr=0.1, amsgrad=True)
    _steps(opt, p, [[1.0, 1.0], [0.01, 0.01]])
    state = opt.state[p]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, f"state keys: {sorted(state)}"
    assert state["step"] == 2, f"step counts the updates, got {state['step']}"
    assert np.all(state["max_exp_avg_sq"] >= state["exp_avg_sq"]), "max_exp_avg_sq keeps the running maximum"
    assert np.allclose(state["max_exp_avg_sq"], 0.001, atol=1e-7), (
        f"after g = 1 then 0.01, v_max stays at 0.001 (v fell to {state['exp_avg_sq']}); got {state['max_exp_avg_sq']}")

    p = tt.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    opt = AdamW([p], lr=0.01)
    _steps(opt, p, [np.full((4, 3), 0.3, np.float32)])
    addresses = [p.data.ctypes.data] + [opt.state[p][k].ctypes.data for k in ("exp_avg", "exp_avg_sq")]
    _steps(opt, p, [np.full((4, 3), -0.2, np.float32)] * 3)
    now = [p.data.ctypes.data] + [opt.state[p][k].ctypes.data for k in ("exp_avg", "exp_avg_sq")]
    assert now == addresses, "p.data, exp_avg and exp_avg_sq must be updated in place"
    assert all(a.dtype == np.float32 for a in (p.data, opt.state[p]["exp_avg"])), "stay float32"
    ### BEGIN HIDDEN TESTS
    p = tt.tensor([1.0], requires_grad=True)
    got = _steps(Adam([p], lr=0.1, maximize=True), p, [[0.5]])
    assert np.allclose(got, [[1.1]], atol=1e-6), "maximize"
    ### END HIDDEN TESTS


test_adam()
print("Adam / AdamW: ok")

# %% [markdown]
# ## 4. RMSprop (provided)
#
# RMSprop (Hinton, 2012) is Adam's ancestor: the per-parameter scale without
# the bias correction, and with optional classical momentum. `centered`
# divides by an estimate of the gradient's *standard deviation* (√(E[g²] −
# E[g]²)) instead of its root mean square. PyTorch's rule:
#
# ```
# g ← g + wd·θ;   s ← α·s + (1 − α)·g²
# centered:  ḡ ← ḡ + (1 − α)·(g − ḡ);   avg = √(s − ḡ²) + ε     else  avg = √s + ε
# momentum:  b ← μ·b + g / avg  (b starts at 0);  θ ← θ − lr·b     else  θ ← θ − lr·g / avg
# ```

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
            avg = square_avg - grad_avg * grad_avg
            avg = xp.sqrt(avg, out=avg)
        else:
            avg = xp.sqrt(square_avg)
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
# The optimizers side by side on a badly scaled quadratic, L = ½(100·x² + y²):
# the x direction is 100 times steeper. Plain SGD must keep lr below 2/100 to
# stay stable, and then crawls along y; momentum and Adam do not.

# %%
def _descend(make, steps=100):
    xy = tt.tensor([1.0, 1.0], requires_grad=True)
    scale = tt.tensor([100.0, 1.0])
    opt = make([xy])
    for _ in range(steps):
        opt.zero_grad()
        loss = (scale * xy * xy).sum() * 0.5
        loss.backward()
        opt.step()
    return loss.item()


for name, make in [("SGD lr=0.019", lambda p: SGD(p, lr=0.019)),
                   ("SGD lr=0.019 momentum=0.9", lambda p: SGD(p, lr=0.019, momentum=0.9)),
                   ("Adam lr=0.1", lambda p: Adam(p, lr=0.1)),
                   ("RMSprop lr=0.01", lambda p: RMSprop(p, lr=0.01))]:
    print(f"{name:28s} loss after 100 steps: {_descend(make):.2e}")

# %% [markdown]
# ## 5. Learning-rate schedules
#
# A constant learning rate is rarely best: large steps early make fast
# progress, small steps late settle into a minimum instead of bouncing around
# it. And at the very start, Adam's second-moment estimate rests on a handful
# of gradients, so large transformer models are **warmed up**: the learning
# rate ramps up linearly over the first few hundred steps, then decays,
# typically along a cosine.
#
# A scheduler wraps an optimizer and, on each `scheduler.step()` (once per
# epoch or per batch, after `optimizer.step()`), writes a new `lr` into every
# parameter group. `last_epoch` counts the calls (creating the scheduler is
# call 0 and sets the first learning rate); each group's starting rate is saved
# in the group as `initial_lr`, and `base_lrs` lists them.
#
# Our schedules are computed in **closed form** from `base_lrs` and
# `last_epoch`. PyTorch updates most of them recursively from the current
# `lr`; the two agree to rounding (1e-15 relative), but a closed form
# overwrites any `lr` you set by hand between steps, and two schedulers that
# are not wrapped in `SequentialLR` do not multiply together.
#
# | schedule | lr at epoch e |
# | --- | --- |
# | `StepLR(step_size, gamma)` | base · gamma^⌊e / step_size⌋ |
# | `LambdaLR(lr_lambda)` | base · lr_lambda(e) |
# | `LinearLR(start_factor, end_factor, total_iters)` | base · (s + (f − s)·min(e, T)/T) |
# | `CosineAnnealingLR(T_max, eta_min)` | η_min + (base − η_min)·(1 + cos(π·e/T_max))/2 |
# | `SequentialLR(schedulers, milestones)` | the i-th scheduler between milestones i−1 and i, restarted at 0 |
#
# ### Exercise: `CosineAnnealingLR.get_lr()`
# Return the list of learning rates, one per entry of `self.base_lrs`, from the
# formula in the table (use `math.cos`, `math.pi`, `self.last_epoch`,
# `self.T_max`, `self.eta_min`). After T_max the cosine keeps going: the rate
# climbs back up, as in PyTorch.

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
        self.step()  # epoch last_epoch + 1 (0 for a fresh run): sets the first learning rate

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} must define get_lr")

    def step(self):
        """Advance one epoch (or batch) and write the new learning rates into the groups."""
        self.last_epoch += 1
        self._apply(self.get_lr())

    def _apply(self, lrs):
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The learning rates the last `step()` set, one per group."""
        return self._last_lr

    def state_dict(self):
        """Everything but the optimizer (and functions, which cannot be saved)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer" and not callable(v)}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


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
        factor = self.start_factor + (self.end_factor - self.start_factor) * done / self.total_iters
        return [base * factor for base in self.base_lrs]


# %% nbgrader={"grade": false, "grade_id": "cosine", "locked": false, "schema_version": 3, "solution": true}
#| export optim.lr_scheduler
class CosineAnnealingLR(LRScheduler):
    """Anneal from base_lr to eta_min along half a cosine over T_max epochs."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):  # noqa: N803 -- PyTorch's name
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        ### BEGIN SOLUTION
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-cosine", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_cosine():
    p = tt.tensor([1.0], requires_grad=True)
    opt = SGD([{"params": [p]}, {"params": [tt.tensor([0.0], requires_grad=True)], "lr": 0.5}], lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    lrs = [sched.get_last_lr()]
    for _ in range(6):
        sched.step()
        lrs.append(sched.get_last_lr())
    first = [lr[0] for lr in lrs]
    c = [(1 + np.cos(np.pi * e / 4)) / 2 for e in range(7)]
    want = [0.1 + 0.9 * ci for ci in c]
    assert np.allclose(first, want), f"group 0 lrs over epochs 0..6: expected {np.round(want, 4)}, got {np.round(first, 4)}"
    assert np.isclose(lrs[4][0], 0.1), "at last_epoch == T_max the rate reaches eta_min"
    assert np.allclose([lr[1] for lr in lrs], [0.1 + 0.4 * ci for ci in c]), "each group anneals from its own base lr"
    assert opt.param_groups[0]["lr"] == lrs[-1][0], "step() must write the rate into the optimizer's groups"
    ### BEGIN HIDDEN TESTS
    assert opt.param_groups[1]["initial_lr"] == 0.5
    ### END HIDDEN TESTS


test_cosine()
print("CosineAnnealingLR: ok")

# %% [markdown]
# `SequentialLR` (provided) hands over from one schedule to the next at the
# milestones. When it is built, it resets every group to its `initial_lr` and
# restarts the first schedule (the others ran their first step when they were
# created); at a milestone the next schedule restarts at epoch 0.

# %%
#| export optim.lr_scheduler
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
        first.step()
        self._last_lr = first.get_last_lr()

    def step(self):
        self.last_epoch += 1
        i = bisect_right(self._milestones, self.last_epoch)
        scheduler = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            scheduler.last_epoch = -1  # restart: its step() below is its epoch 0
        scheduler.step()
        self._last_lr = scheduler.get_last_lr()

    def state_dict(self):
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        for scheduler, saved in zip(self._schedulers, state.pop("_schedulers")):
            scheduler.load_state_dict(saved)
        self.__dict__.update(state)


# %% [markdown]
# Warmup then cosine decay, as GPT models are trained, is two lines. Here:
# 5 warmup steps from lr/10, then 15 steps of cosine down to lr/10.

# %%
p = tt.tensor([0.0], requires_grad=True)
opt = AdamW([p], lr=6e-4)
warmup = LinearLR(opt, start_factor=0.1, total_iters=5)
schedule = SequentialLR(opt, [warmup, CosineAnnealingLR(opt, T_max=15, eta_min=6e-5)], milestones=[5])
trace = []
for _ in range(20):
    trace.append(schedule.get_last_lr()[0])
    opt.step()        # (nothing to update here: p has no grad)
    schedule.step()
print(" ".join(f"{lr * 1e4:.2f}" for lr in trace), "(x 1e-4)")

# %% [markdown]
# ## 6. Gradient clipping
#
# One bad batch (a rare token, a loss spike) can produce a gradient hundreds of
# times larger than usual, and one step along it can undo hours of training.
# **Clipping by global norm** rescales all gradients together when their joint
# norm exceeds `max_norm`, keeping the direction:
#
# ```
# total = ‖(‖g₁‖, ‖g₂‖, ..., ‖gₙ‖)‖        (the p-norm of all gradients as one vector)
# coef = max_norm / (total + 1e-6)
# if coef < 1:  every gᵢ ← gᵢ · coef     (in place)
# return total                           (as a tensor: log it, it is a useful health signal)
# ```
#
# For p = ∞ the norm is the largest |entry|. If `total` is inf or NaN, PyTorch
# raises a RuntimeError when `error_if_nonfinite=True`; otherwise it scales
# anyway (an inf norm zeroes the gradients, a NaN makes them NaN). Parameters
# without a gradient are skipped; with none at all the norm is 0.
#
# *Worked example.* Gradients [3, 0] and [4]: total = 5. With max_norm = 1,
# coef ≈ 0.2, so they become [0.6, 0] and [0.8].
#
# ### Exercise: `clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False)`
# `parameters` is an iterable of tensors or a single tensor. Use
# `_vector_norm(xp, array, norm_type)` (provided) for each gradient's norm and
# again for the norm of those norms (`xp.stack` them). Compute `coef` in
# float32 (the 0-d array `total` keeps it there); scale in place (`g *= coef`)
# unless `coef >= 1`. Return the total as a 0-d float32 tensor on the
# gradients' device (`_wrap(total, device)`).

# %%
#| export nn.utils
"""Gradient utilities: clip_grad_norm_, clip_grad_value_."""
import math

from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import Tensor, _wrap


def _vector_norm(xp, array, norm_type):
    """The p-norm of all entries of `array` (p = inf: the largest |entry|), as a 0-d array."""
    if norm_type == math.inf:
        return xp.abs(array).max()
    if norm_type == 2.0:
        flat = array.ravel()
        return xp.sqrt(xp.dot(flat, flat))
    return (xp.abs(array) ** norm_type).sum() ** (1.0 / norm_type)


def _grads_of(parameters):
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad.data for p in params if p.grad is not None], params


# %% nbgrader={"grade": false, "grade_id": "clip-grad-norm", "locked": false, "schema_version": 3, "solution": true}
#| export nn.utils
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint p-norm is at most max_norm; return the norm."""
    grads, params = _grads_of(parameters)
    norm_type = float(norm_type)
    if not grads:
        return Tensor(0.0, device=params[0]._device if params else None)
    device = params[0]._device
    xp = get_xp(device)
    ### BEGIN SOLUTION
    total = _vector_norm(xp, xp.stack([_vector_norm(xp, g, norm_type) for g in grads]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is "
                           f"non-finite, so it cannot be clipped. To disable this error and scale the "
                           f"gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = max_norm / (total + 1e-6)
    if not bool(coef >= 1.0):  # NaN scales too, as in PyTorch
        for g in grads:
            g *= coef
    return _wrap(total, device)
    ### END SOLUTION


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient entry into [-clip_value, clip_value], in place."""
    grads, _ = _grads_of(parameters)
    clip_value = float(clip_value)
    for g in grads:
        g.clip(-clip_value, clip_value, out=g)


# %% nbgrader={"grade": true, "grade_id": "test-clip-grad-norm", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_clip_grad_norm():
    a = tt.tensor([1.0, 1.0], requires_grad=True)
    b = tt.tensor([1.0], requires_grad=True)
    a.grad, b.grad = tt.tensor([3.0, 0.0]), tt.tensor([4.0])
    grad_a = a.grad.data
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert isinstance(total, tt.Tensor) and total.shape == (), f"return the total norm as a 0-d tensor, got {total!r}"
    assert np.isclose(total.item(), 5.0), f"the joint 2-norm of [3, 0] and [4] is 5, got {total.item()}"
    assert total.dtype == np.float32, f"the norm is float32, got {total.dtype}"
    assert np.allclose(a.grad.data, [0.6, 0.0]) and np.allclose(b.grad.data, [0.8]), (
        f"gradients are scaled by 1/5: expected [0.6, 0] and [0.8], got {a.grad.data}, {b.grad.data}")
    assert a.grad.data is grad_a, "scale the gradient arrays in place"

    a.grad = tt.tensor([3.0, 0.0])
    total = clip_grad_norm_(a, max_norm=10.0)
    assert np.allclose(a.grad.data, [3.0, 0.0]) and np.isclose(total.item(), 3.0), (
        "below max_norm, gradients are left alone (and a single tensor is accepted)")

    a.grad, b.grad = tt.tensor([3.0, -5.0]), tt.tensor([4.0])
    total = clip_grad_norm_([a, b], max_norm=2.5, norm_type=float("inf"))
    assert np.isclose(total.item(), 5.0), f"the inf-norm is the largest |entry| (5), got {total.item()}"
    assert np.allclose(a.grad.data, [1.5, -2.5], atol=1e-5), f"scaled by 2.5/5; got {a.grad.data}"

    a.grad = tt.tensor([np.inf, 1.0])
    try:
        clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    except RuntimeError as err:
        assert "non-finite" in str(err), f"the error should say the norm is non-finite: {err}"
    else:
        raise AssertionError("a non-finite norm with error_if_nonfinite=True must raise RuntimeError")
    ### BEGIN HIDDEN TESTS
    c = tt.tensor([1.0], requires_grad=True)
    assert clip_grad_norm_([c], 1.0).item() == 0.0, "no gradients: norm 0"
    ### END HIDDEN TESTS


test_clip_grad_norm()
print("clip_grad_norm_: ok")

# %% [markdown]
# ## 7. Weight decay and duplicated features
#
# Weight decay (an L2 penalty ½·λ·‖w‖²) does more than keep weights small: it
# has a preference about *how* a model uses its inputs. Take logistic
# regression, and copy feature n into a new column n+1. The model's output
# only depends on the sum a + b of the two weights on the copies: any split
# with a + b = s predicts exactly the same. The penalty does not see the sum,
# though: it pays ½·λ·(a² + b²), and with a + b = s fixed,
#
# a² + b² = s²/2 + (a − b)²/2
#
# is smallest at a = b = s/2. So L2 spreads the weight evenly over identical
# features — and in the same way it prefers to spread weight over *correlated*
# features instead of betting on one.
#
# The dynamics say the same, step by step. The data gradient is the same for
# a and b (they multiply the same column), so gradient descent with decay
# changes the difference only through the decay term:
# a − b ← (a − b)·(1 − lr·λ). Without decay, a − b never changes; with it, it
# shrinks geometrically to 0. One more detail: with a = b the penalty on the
# sum is ½·λ·s²/2, half what one feature paid, so s ends up slightly *larger*
# than the original weight (a little less regularised).
#
# ### Exercise: `fit_logistic_regression(X, y, w_init, weight_decay, lr, steps)`
# Full-batch gradient descent with your `SGD` (`lr`, `weight_decay`) on the
# mean logistic loss of the logits z = X @ w with labels y ∈ {0, 1}:
# mean(softplus(z) − y·z), where softplus(z) = log(1 + eᶻ). Write softplus
# stably as relu(z) + log(1 + e^(−|z|)) (tinytorch has `relu`, `abs`, `exp`,
# `log`). Start from a copy of `w_init` (no bias), and return the final
# weights as a NumPy array. The experiment below it (provided) fits, duplicates
# a feature, and refits from the old solution with the copy's weight at 0.

# %% nbgrader={"grade": false, "grade_id": "logistic-l2", "locked": false, "schema_version": 3, "solution": true}
def fit_logistic_regression(X, y, w_init, weight_decay, lr=1.0, steps=600):
    """Weights of an L2-regularised logistic regression (no bias), by full-batch SGD from w_init."""
    X, y = tt.tensor(X), tt.tensor(y)
    w = tt.tensor(np.array(w_init, dtype=np.float32), requires_grad=True)
    ### BEGIN SOLUTION
    opt = SGD([w], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        z = X @ w
        softplus = z.relu() + ((-z.abs()).exp() + 1.0).log()
        loss = (softplus - y * z).mean()
        loss.backward()
        opt.step()
    return w.data.copy()
    ### END SOLUTION


def duplicate_feature(X, n):
    """X with column n copied into a new column n + 1."""
    return np.insert(X, n + 1, X[:, n], axis=1)


def _logistic_data(samples=500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((samples, 3)).astype(np.float32)
    logits = X @ np.array([1.5, -2.0, 0.5])
    y = (rng.random(samples) < 1 / (1 + np.exp(-logits))).astype(np.float32)
    return X, y


# %% nbgrader={"grade": true, "grade_id": "test-logistic-l2", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_logistic_l2():
    X, y = _logistic_data()
    lam, n = 0.02, 0
    w = fit_logistic_regression(X, y, np.zeros(3), lam)
    assert isinstance(w, np.ndarray) and w.shape == (3,), f"return the weights as a (3,) array, got {w!r}"
    assert 0.8 < w[0] < 2.0 and -2.5 < w[1] < -1.0, f"the fit should recover roughly [1.5, -2, 0.5], got {w}"
    X2 = duplicate_feature(X, n)
    warm = np.insert(w, n + 1, 0.0)  # the old solution, all weight on the original copy
    w2 = fit_logistic_regression(X2, y, warm, lam)
    a, b = w2[n], w2[n + 1]
    print(f"before: w = {np.round(w, 4)};  after duplicating feature {n}: {np.round(w2, 4)}")
    assert abs(a - b) < 1e-3, f"L2 drives the two copies' weights together: got {a:.4f} and {b:.4f}"
    assert abs(a - w[n] / 2) < 0.1 * abs(w[n]), f"each copy gets about half of {w[n]:.4f}, got {a:.4f}"
    assert a + b > w[n], "the pair is regularised half as much, so its total weight grows a little"
    others, others_before = np.delete(w2, [n, n + 1]), np.delete(w, n)
    assert np.allclose(others, others_before, atol=0.05), (
        f"the other weights stay close to {others_before}, got {others}")
    w0 = fit_logistic_regression(X2, y, warm, 0.0, steps=200)
    assert abs((w0[n] - w0[n + 1]) - w[n]) < 1e-4, (
        f"without decay the gradient cannot tell the copies apart, so a - b stays {w[n]:.4f}: got "
        f"{w0[n] - w0[n + 1]:.4f}")
    ### BEGIN HIDDEN TESTS
    w3 = fit_logistic_regression(X2, y, np.zeros(4), lam)
    assert abs(w3[n] - w3[n + 1]) < 1e-5, "from zero the copies get identical updates"
    ### END HIDDEN TESTS


test_logistic_l2()
print("weight decay splits duplicated features: ok")

# %% [markdown]
# ## 8. Putting it together: an MLP with AdamW, warmup + cosine, and clipping
#
# The training loop every later module uses: zero the gradients, forward,
# loss, backward, clip, step the optimizer, step the schedule.

# %%
from tinytorch import nn
from tinytorch.nn.functional import cross_entropy

tt.manual_seed(0)
rng = np.random.default_rng(0)
points = rng.uniform(-1, 1, (256, 2)).astype(np.float32)
labels = ((points[:, 0] > 0) ^ (points[:, 1] > 0)).astype(np.int64)  # XOR of the signs
inputs, targets = tt.tensor(points), tt.tensor(labels)

model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
opt = AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
steps = 150
schedule = SequentialLR(opt, [LinearLR(opt, start_factor=0.1, total_iters=10),
                              CosineAnnealingLR(opt, T_max=steps - 10)], milestones=[10])
for step in range(steps):
    opt.zero_grad()
    logits = model(inputs)
    loss = cross_entropy(logits, targets)
    loss.backward()
    norm = clip_grad_norm_(model.parameters(), max_norm=1.0)
    opt.step()
    schedule.step()
    if step % 50 == 0 or step == steps - 1:
        print(f"step {step:3d}  loss {loss.item():.4f}  grad norm {norm.item():.3f}  lr {opt.param_groups[0]['lr']:.4f}")
accuracy = (logits.argmax(dim=1).numpy() == labels).mean()
print(f"train accuracy on XOR: {accuracy:.1%}")

# %% [markdown]
# ## 9. What it costs
#
# Time: an optimizer step is a handful of elementwise passes over every
# parameter (SGD 1 to 4, Adam about 14), each reading and writing memory —
# compare with the forward and backward passes in `bench/mlp.py`. Memory is the
# real cost: the state. Measured on a 784→512→512→10 MLP with your optimizers:

# %%
import timeit


def state_bytes(optimizer):
    """Bytes held in the optimizer's per-parameter state arrays."""
    return sum(v.nbytes for s in optimizer.state.values() for v in s.values() if hasattr(v, "nbytes"))


mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
mlp_params = list(mlp.parameters())
param_bytes = sum(p.data.nbytes for p in mlp_params)
print(f"parameters: {sum(p.numel() for p in mlp_params):,} floats = {param_bytes / 2**20:.2f} MiB")
for name, make in [("SGD", lambda: SGD(mlp_params, lr=0.0)),
                   ("SGD momentum", lambda: SGD(mlp_params, lr=0.0, momentum=0.9)),
                   ("Adam", lambda: Adam(mlp_params, lr=0.0)),
                   ("AdamW amsgrad", lambda: AdamW(mlp_params, lr=0.0, amsgrad=True)),
                   ("RMSprop centered", lambda: RMSprop(mlp_params, lr=0.0, centered=True))]:
    for p in mlp_params:
        p.grad = tt.zeros(*p.shape)
    optimizer = make()
    seconds = min(timeit.repeat(optimizer.step, number=5, repeat=3)) / 5
    extra = state_bytes(optimizer)
    print(f"{name:17s} state {extra / 2**20:5.2f} MiB = {extra / param_bytes:.0f} x the parameters; "
          f"step {seconds * 1e3:5.2f} ms")

# %% [markdown]
# Adam's two moments triple the memory of the weights (plus the gradients:
# four copies in all). That is why large models shard optimizer state across
# GPUs (ZeRO, in module 11) and why memory-lean optimizers exist.
#
# **Next:** module 06 feeds batches of data to this loop, and module 07 wraps
# it in a `Trainer` that checkpoints the model *and* `optimizer.state_dict()`.
