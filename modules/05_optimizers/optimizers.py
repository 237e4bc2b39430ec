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
# **You will write:** the update rules of `SGD` (momentum, dampening, Nesterov,
# weight decay) and `Adam` (bias correction, AMSGrad, and AdamW's decoupled
# decay); the cosine learning-rate schedule; `clip_grad_norm_`; an experiment
# on what weight decay does to duplicated features; and the training loop that
# puts them together (AdamW, warmup then cosine, clipping).
#
# **Exports:** `tinytorch.optim` (`SGD`, `Adam`, `AdamW`, `RMSprop`, the
# `Optimizer` base), `tinytorch.optim.lr_scheduler`, and `clip_grad_norm_` in
# `tinytorch.nn.utils`, with PyTorch's names and arguments.
#
# **Cost to keep in mind:** an optimizer's memory is its state. SGD keeps 0 or
# 1 extra array per parameter, Adam 2, AMSGrad 3: for a 1-billion-parameter
# model in float32, Adam's state alone is 8 GB. We measure it at the end.

# %%
#| default_exp optim.optimizer

# %% [markdown]
# The `Optimizer` base class, its argument checks, `RMSprop`, the scheduler base
# with `LinearLR` and `SequentialLR`, and the gradient-norm helpers live in
# `modules/05_optimizers/provided.py`; this cell imports what the lesson uses.

# %%
import math
import timeit

import numpy as np

import tinytorch as tt
from tinytorch import nn
from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import Tensor, from_op
from tinytorch.nn.functional import binary_cross_entropy_with_logits, cross_entropy
from tinytorch.nn.utils import _grads_of
from tinytorch.optim.lr_scheduler import LinearLR, LRScheduler, SequentialLR
from tinytorch.optim.fused import _check_fused
from tinytorch.optim.optimizer import Optimizer, RMSprop, _check_adam_options, _check_sgd_options

# %% [markdown]
# ## 1. What an optimizer holds
#
# Gradient descent moves each parameter θ against its gradient g = ∂L/∂θ:
# θ ← θ − lr·g. Three practical needs shape the provided `Optimizer` class
# around that line:
#
# - **Parameter groups.** Different parameters often want different settings:
#   no weight decay on biases and LayerNorm gains, a smaller learning rate for a
#   pretrained backbone. `param_groups` is a list of dicts, each with its
#   `params` and its own copy of every option (`lr`, `weight_decay`, ...).
# - **State.** Momentum and Adam remember running averages, one array per
#   parameter, kept in `state[param]` (a dict, empty until the first step).
# - **Resuming.** `state_dict()` captures groups and state with parameters
#   replaced by their position, so it loads into a fresh optimizer over a
#   freshly built model, and the next steps are bit-identical to those of an
#   uninterrupted run.
#
# `Optimizer.step()` walks the groups and, under `no_grad`, calls the
# subclass's `_update(p, grad, state, group)` for every parameter that has a
# gradient. That method is all a new optimizer defines, and what you write
# below. Updates happen **in place** on `p.data` and on the state arrays: the
# model keeps seeing the same array, and no memory is allocated per step.
#
# The smallest optimizer, with two groups of their own learning rates:

# %%
class _Plain(Optimizer):
    def _update(self, p, grad, state, group):
        p.data -= group["lr"] * grad


w, b = tt.tensor([1.0, 2.0], requires_grad=True), tt.tensor([0.5], requires_grad=True)
demo = _Plain([{"params": [w]}, {"params": [b], "lr": 0.1}], {"lr": 0.01})
((w * w).sum() + b.sum() * 3.0).backward()
demo.step()
print("w after one step:", w.tolist(), " b:", b.tolist(), " groups:", demo.state_dict()["param_groups"])

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
# **Weight decay** wd adds the gradient of an L2 penalty (wd/2)·‖θ‖², that is
# wd·θ, to g. **Nesterov** looks ahead: it steps with g + μ·b, the gradient
# plus the *next* momentum step, which corrects overshoot a step earlier (it
# needs τ = 0). **maximize** climbs instead of descending. PyTorch's exact
# order, which we match (no (1 − τ) on the first step: the buffer starts as a
# copy of the gradient):
#
# ```
# g ← −g                          if maximize
# g ← g + wd·θ                    if wd ≠ 0
# if μ ≠ 0:
#     b ← copy of g               on the first step
#     b ← μ·b + (1 − τ)·g         afterwards
#     g ← g + μ·b  if nesterov, else  g ← b
# θ ← θ − lr·g
# ```
#
# *Worked example.* θ = 1, lr = 0.1, μ = 0.9, and the gradient is 0.5 at both
# steps. Step 1: b = 0.5, θ = 1 − 0.05 = 0.95. Step 2: b = 0.9·0.5 + 0.5 = 0.95,
# θ = 0.95 − 0.095 = 0.855. With Nesterov: step 1 uses g + μ·b = 0.95, θ = 0.905;
# step 2: b = 0.95, uses 0.5 + 0.855 = 1.355, θ = 0.7695.
#
# ### Exercise: `SGD._update(p, grad, state, group)`
#
# `grad` is the raw gradient array (it *is* `p.grad`'s data: do not modify it);
# `state` is this parameter's dict; `group` holds `lr`, `momentum`,
# `dampening`, `weight_decay`, `nesterov`, `maximize`.
#
# - Hint 1: follow the recipe line by line; the buffer lives in the state dict
#   between steps, and exists only when μ ≠ 0.
# - Hint 2: a new name for each changed gradient (g = −g, g + wd·θ make new
#   arrays, leaving `p.grad` alone), but `p.data` and the buffer change in place.
# - Hint 3: `state.get("momentum_buffer")` is None on the first step, then store
#   a copy of `grad` under that key, one that is an array even for a 0-d
#   parameter (there `-grad` is a NumPy scalar, which `*=` cannot change in
#   place); afterwards `buf *= ...`, `buf += ...`; finally `p.data -= ...`.
#   Python floats times float32 arrays stay float32.

# %% nbgrader={"grade": false, "grade_id": "sgd", "locked": false, "schema_version": 3, "solution": true}
#| export
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False):
        _check_sgd_options(lr, momentum, dampening, weight_decay, nesterov)
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, maximize=maximize))

    def _update(self, p, grad, state, group):
        xp = get_xp(p._device)
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        ### BEGIN SOLUTION
        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            grad = grad + weight_decay * p.data
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.array(grad)  # a copy, and an array even when grad is 0-d
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf if group["nesterov"] else buf
        p.data -= group["lr"] * grad
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-sgd", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _steps(make, grads, start=1.0):
    """A one-entry parameter, one optimizer step per gradient: the parameter's values after each."""
    p = tt.tensor([start], requires_grad=True)
    optimizer, seen = make([p]), []
    for g in grads:
        p.grad = tt.tensor([g])
        optimizer.step()
        seen.append(float(p.data[0]))
    return seen


def test_sgd():
    for make, grads, want, why in [
        (lambda p: SGD(p, lr=0.1), [0.5], [0.95], "plain SGD: 1 - 0.1*0.5"),
        (lambda p: SGD(p, lr=0.1, momentum=0.9), [0.5, 0.5, 0.5], [0.95, 0.855, 0.7195],
         "momentum: b is a copy of g on step 1, then 0.9*b + g, kept in the state (b = 0.5, 0.95, 1.355)"),
        (lambda p: SGD(p, lr=0.1, momentum=0.9, nesterov=True), [0.5, 0.5], [0.905, 0.7695],
         "nesterov steps with g + 0.9*b"),
        (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.5), [1.0, 1.0], [0.9, 0.76],
         "dampening: no (1 - τ) on step 1 (b = 1), then b = 0.9*1 + 0.5*1 = 1.4"),
        (lambda p: SGD(p, lr=0.1, maximize=True), [0.5], [1.05], "maximize climbs: 1 + 0.05"),
        (lambda p: SGD(p, lr=0.1, weight_decay=0.5, maximize=True), [0.1], [0.96],
         "maximize negates g before weight decay adds 0.5*θ (decay still shrinks θ): g = -0.1 + 0.5 = 0.4"),
    ]:
        got = _steps(make, grads)
        assert len(got) == len(want) and np.allclose(got, want), f"{why}: expected {want}, got {np.round(got, 6).tolist()}"
    got = _steps(lambda p: SGD(p, lr=0.1, weight_decay=0.5), [0.0], start=2.0)
    assert np.allclose(got, [1.9]), f"weight decay adds 0.5*θ = 1 to the gradient: 2 - 0.1 = 1.9; got {got}"
    for kw in ({"weight_decay": 0.5}, {"maximize": True}):
        p = tt.tensor([2.0], requires_grad=True); p.grad = tt.tensor([0.5]); SGD([p], lr=0.1, **kw).step()
        assert p.grad.data.tolist() == [0.5], (f"SGD(..., {kw}) must leave p.grad at [0.5] (grad = grad + wd*θ or "
                                               f"grad = -grad make new arrays; not +=, *=); got {p.grad.data.tolist()}")
    p, q = tt.tensor([1.0], requires_grad=True), tt.tensor([1.0], requires_grad=True)
    p.grad, q.grad = tt.tensor([1.0]), tt.tensor([1.0])
    SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1).step()
    assert np.allclose([p.item(), q.item()], [0.9, 0.5]), \
        f"each group steps with its own group['lr'] (0.1 and 0.5): expected [0.9, 0.5], got {[p.item(), q.item()]}"
    p = tt.tensor(np.ones((3, 2), np.float32), requires_grad=True)
    p.grad = tt.tensor(np.full((3, 2), 0.5, np.float32))
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    before = (p.data.ctypes.data, opt.state[p]["momentum_buffer"].ctypes.data)
    opt.step()
    assert (p.data.ctypes.data, opt.state[p]["momentum_buffer"].ctypes.data) == before, \
        "update p.data and the momentum buffer in place (-=, *=, +=), don't assign new arrays"
    assert p.data.dtype == np.float32 and opt.state[p]["momentum_buffer"].dtype == np.float32, "stay float32"
    assert np.all(p.grad.data == 0.5), "do not modify the gradient array (the buffer starts as a copy of it)"
    scale = tt.tensor(np.float32(1.0), requires_grad=True)  # a 0-d parameter, such as a learnable temperature
    opt = SGD([scale], lr=0.1, momentum=0.9, maximize=True)
    for g in (-0.5, -0.5, -0.5):
        scale.grad = tt.tensor(np.float32(g))
        opt.step()  # -grad of a 0-d array is a NumPy scalar, and a scalar buffer is not updated in place
    assert np.isclose(scale.data, 0.7195), f"a 0-d parameter must step as a one-entry one does (to 0.7195), got {scale.data}"
    ### BEGIN HIDDEN TESTS
    got = _steps(lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True), [0.4])
    assert np.allclose(got, [1.0 - 0.1 * 0.5 * 1.9]), f"wd before momentum, then nesterov; got {got}"
    ### END HIDDEN TESTS


test_sgd()
print("SGD: ok")


# %% [markdown]
# Momentum on a badly scaled quadratic, L = ½(100·x² + y²): the x direction is
# 100 times steeper, so plain SGD must keep lr below 2/100 to stay stable, and
# then crawls along y.

# %%
def descend(make, steps=100):
    xy = tt.tensor([1.0, 1.0], requires_grad=True)
    opt = make([xy])
    for _ in range(steps):
        opt.zero_grad()
        loss = (tt.tensor([100.0, 1.0]) * xy * xy).sum() * 0.5
        loss.backward()
        opt.step()
    return loss.item()


print(f"SGD lr=0.019:               loss after 100 steps {descend(lambda p: SGD(p, lr=0.019)):.2e}")
print(f"SGD lr=0.019 momentum=0.9:  loss after 100 steps {descend(lambda p: SGD(p, lr=0.019, momentum=0.9)):.2e}")

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
# towards 0: after one step m = (1 − β₁)·g = 0.1·g. Dividing by 1 − β₁ᵗ (0.1 at
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
# m ← m + (1 − β₁)·(g − m)        (the same as β₁·m + (1 − β₁)·g)
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
#
# `group["betas"]` is the pair (β₁, β₂), `group["decoupled_weight_decay"]` says
# which decay to use (AdamW below sets it), and `group["amsgrad"]` whether to
# keep the maximum.
#
# - Hint 1: an empty `state` means the first step: create the step count and
#   the moment arrays there, then follow the recipe.
# - Hint 2: state keys `"step"` (an int, from 0), `"exp_avg"` (m),
#   `"exp_avg_sq"` (v) and, with amsgrad, `"max_exp_avg_sq"`: zero arrays shaped
#   like θ. The two bias corrections enter as 1/√(1 − β₂ᵗ) on √v and
#   lr/(1 − β₁ᵗ) on the step.
# - Hint 3: `xp.zeros_like(p.data)`; update m and v with `*=` / `+=`;
#   `xp.maximum(a, b, out=a)` for v_max. One temporary array is enough: make it
#   once (from g and m) and reuse it with `out=` for g·g, for the square root of
#   v, and for m divided by that root plus eps, scaled by the step size, before
#   `p.data -=` it.

# %% nbgrader={"grade": false, "grade_id": "adam", "locked": false, "schema_version": 3, "solution": true}
#| export
class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015), with optional L2 or decoupled weight decay and AMSGrad."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, maximize=False, decoupled_weight_decay=False, fused=None):
        _check_adam_options(lr, betas, eps, weight_decay)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))
        self.fused = _check_fused(fused, self)  # provided: the same update as one compiled pass

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
        scratch = xp.subtract(grad, m, out=xp.empty_like(m))  # the one temporary, reused below (an array
        # even for a 0-d parameter, where grad - m would be a NumPy scalar that out= cannot write into)
        scratch *= 1 - beta1
        m += scratch  # m + (1 - β1)(g - m)
        v *= beta2
        scratch = xp.multiply(grad, grad, out=scratch)
        scratch *= 1 - beta2
        v += scratch  # β2 v + (1 - β2) g²
        if group["amsgrad"]:
            v = xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        denom = xp.sqrt(v, out=scratch)
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
                 *, maximize=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True, fused=fused)


# %% nbgrader={"grade": true, "grade_id": "test-adam", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_adam():
    m, v = 0.9 * 0.05 + 0.1 * -1.0, 0.999 * 0.00025 + 0.001 * 1.0
    second = 0.9 - 0.1 / (1 - 0.9 ** 2) * m / (np.sqrt(v) / np.sqrt(1 - 0.999 ** 2) + 1e-8)
    for make, grads, want, why in [
        (lambda p: Adam(p, lr=0.1), [0.5], [0.9],
         "the first step moves by lr (m_hat = 0.5, v_hat = 0.25): divide by the bias corrections 1 - β**t"),
        (lambda p: Adam(p, lr=0.1), [0.5, -1.0], [0.9, second], "the second Adam step"),
        (lambda p: Adam(p, lr=0.1, betas=(0.5, 0.5), eps=1.0), [2.0], [1.0 - 0.1 * 2.0 / 3.0],
         "eps is added to sqrt(v_hat) (2 + 1 = 3), not inside the root"),
        (lambda p: AdamW(p, lr=0.1, weight_decay=0.01), [0.5], [0.899],
         "AdamW shrinks θ by (1 - lr*wd) = 0.999 first, then steps by 0.1"),
        (lambda p: Adam(p, lr=0.1, weight_decay=1.0), [0.0], [0.9],
         "Adam's L2 decay is added to the gradient (g = θ = 1), so the first step is still lr"),
        (lambda p: Adam(p, lr=0.1, weight_decay=0.5, maximize=True), [0.1], [0.9],
         "maximize negates g before the L2 decay is added (decay still shrinks θ): g = -0.1 + 0.5 > 0, a step down"),
        (lambda p: Adam(p, lr=0.1, betas=(0.9, 0.5), amsgrad=True), [1.0, 0.0],
         [0.9, 0.9 - 0.1 / 0.19 * 0.09 / np.sqrt(0.5 / 0.75)],
         "AMSGrad: g = 0 halves v from 0.5 to 0.25, but the step must divide by the root of v_max = 0.5"),
    ]:
        got = _steps(make, grads)
        assert len(got) == len(want) and np.allclose(got, want, atol=1e-6), \
            f"{why}: expected {np.round(want, 6).tolist()}, got {np.round(got, 6).tolist()}"
    for kw in ({"weight_decay": 0.5}, {"maximize": True}):
        p = tt.tensor([2.0], requires_grad=True); p.grad = tt.tensor([0.5]); Adam([p], lr=0.1, **kw).step()
        assert p.grad.data.tolist() == [0.5], (f"Adam(..., {kw}) must leave p.grad at [0.5] (grad = grad + wd*θ or "
                                               f"grad = -grad make new arrays; not +=, *=); got {p.grad.data.tolist()}")
    p = tt.tensor([1.0, 1.0], requires_grad=True)
    opt = Adam([p], lr=0.1, amsgrad=True)
    for g in ([1.0, 1.0], [0.01, 0.01]):
        p.grad = tt.tensor(g)
        opt.step()
    state = opt.state[p]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}, f"state keys: {sorted(state)}"
    assert state["step"] == 2, f"step counts the updates, got {state['step']}"
    assert np.allclose(state["max_exp_avg_sq"], 0.001, atol=1e-7), \
        f"after g = 1 then 0.01, v_max stays at 0.001 (v fell to {state['exp_avg_sq']}); got {state['max_exp_avg_sq']}"
    p = tt.tensor(np.ones((4, 3), np.float32), requires_grad=True)
    p.grad = tt.tensor(np.full((4, 3), 0.3, np.float32))
    opt = AdamW([p], lr=0.01)
    opt.step()
    addresses = [a.ctypes.data for a in (p.data, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])]
    opt.step()
    assert [a.ctypes.data for a in (p.data, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"])] == addresses, \
        "p.data, exp_avg and exp_avg_sq must be updated in place"
    assert p.data.dtype == np.float32 and opt.state[p]["exp_avg"].dtype == np.float32, "stay float32"
    scale = tt.tensor(np.float32(1.0), requires_grad=True)  # a 0-d parameter, such as a learnable temperature
    opt = AdamW([scale], lr=0.1, weight_decay=0.01)
    for _ in range(2):
        scale.grad = tt.tensor(np.float32(0.5))
        opt.step()  # grad - m of two 0-d arrays is a NumPy scalar, not an array that out= can write into
    assert np.isclose(scale.data, _steps(lambda p: AdamW(p, lr=0.1, weight_decay=0.01), [0.5, 0.5])[-1]), \
        f"a 0-d parameter must step as a one-entry one does, got {scale.data}"
    ### BEGIN HIDDEN TESTS
    assert np.allclose(_steps(lambda p: Adam(p, lr=0.1, maximize=True), [0.5]), [1.1], atol=1e-6), "maximize"
    ### END HIDDEN TESTS


test_adam()
print("Adam / AdamW: ok")


# %% [markdown]
# On the quadratic above, Adam's per-coordinate scale removes the 100:1
# imbalance: the same lr suits both directions. (`RMSprop`, provided, is Adam's
# ancestor: the same scale without bias correction.)

# %%
print(f"Adam lr=0.1:     loss after 100 steps {descend(lambda p: Adam(p, lr=0.1)):.2e}")
print(f"RMSprop lr=0.01: loss after 100 steps {descend(lambda p: RMSprop(p, lr=0.01)):.2e}")

# %% [markdown]
# ## 4. Learning-rate schedules
#
# A constant learning rate is rarely best: large steps early make fast
# progress, small steps late settle into a minimum instead of bouncing around
# it. And at the very start, Adam's second-moment estimate rests on a handful
# of gradients, so large transformer models are **warmed up**: the learning
# rate ramps up linearly over the first few hundred steps, then decays,
# typically along a cosine.
#
# A scheduler wraps an optimizer and, on each `scheduler.step()` (after
# `optimizer.step()`), writes a new `lr` into every parameter group. The
# provided `LRScheduler` base counts the calls in `last_epoch` (creating the
# scheduler is epoch 0), keeps each group's starting rate in `base_lrs`, and
# asks the subclass for the list of rates: `get_lr()`. Our schedules are
# closed forms of `base_lrs` and `last_epoch`. PyTorch updates most of them
# recursively, from the rate now in the group: the same values for one
# scheduler, but two schedulers on one optimizer then multiply, while closed
# forms overwrite each other (and any rate you set by hand). So our
# `step()` raises if the rate is not the one it set last: put schedules one
# after another with `SequentialLR`, multiply factors in one `LambdaLR`.
#
# | schedule | lr at epoch e |
# | --- | --- |
# | `StepLR(step_size, gamma)` | base · gamma^⌊e / step_size⌋ |
# | `LinearLR(start_factor, end_factor, total_iters)` | base · (s + (f − s)·min(e, T)/T) |
# | `CosineAnnealingLR(T_max, eta_min)` | η_min + (base − η_min)·(1 + cos(π·e/T_max))/2 |
# | `SequentialLR(schedulers, milestones)` | the i-th scheduler between milestones i−1 and i, restarted at 0 |
#
# *Worked example.* base = 1, η_min = 0.1, T_max = 4: at e = 2 the cosine term
# is (1 + cos(π/2))/2 = ½, so lr = 0.1 + 0.9·½ = 0.55; at e = 4 it reaches 0.1.
# After T_max the cosine keeps going and the rate climbs back up, as in PyTorch.
#
# ### Exercise: `CosineAnnealingLR.get_lr()`
#
# - Hint 1: one rate per entry of `self.base_lrs`, from the table.
# - Hint 2: the cosine factor (1 + cos(π·e/T_max))/2 is the same for every group.
# - Hint 3: `math.cos`, `math.pi`, `self.last_epoch`, `self.T_max`,
#   `self.eta_min`; return a list.

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
    p, q = tt.tensor([1.0], requires_grad=True), tt.tensor([0.0], requires_grad=True)
    opt = SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=1.0)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    lrs = [sched.get_last_lr()] + [sched.step() or sched.get_last_lr() for _ in range(6)]  # epochs 0..6
    c = np.array([(1 + np.cos(np.pi * e / 4)) / 2 for e in range(7)])
    assert np.allclose([lr[0] for lr in lrs], 0.1 + 0.9 * c), \
        f"group 0 over epochs 0..6: expected {np.round(0.1 + 0.9 * c, 4)}, got {np.round([lr[0] for lr in lrs], 4)}"
    assert np.isclose(lrs[4][0], 0.1), "at last_epoch == T_max the rate reaches eta_min"
    assert np.allclose([lr[1] for lr in lrs], 0.1 + 0.4 * c), "each group anneals from its own base lr"
    assert opt.param_groups[0]["lr"] == lrs[-1][0], "step() must write the rate into the optimizer's groups"
    ### BEGIN HIDDEN TESTS
    assert opt.param_groups[1]["initial_lr"] == 0.5
    ### END HIDDEN TESTS


test_cosine()
print("CosineAnnealingLR: ok")

# %% [markdown]
# ## 5. Gradient clipping
#
# One bad batch (a rare token, a loss spike) can produce a gradient hundreds of
# times larger than usual, and one step along it can undo hours of training.
# **Clipping by global norm** rescales all gradients together when their joint
# norm exceeds `max_norm`, keeping the direction. The joint norm treats all
# gradients as one long vector; the p-norm of a vector of p-norms is that
# vector's p-norm, so it can be computed per tensor first:
#
# total = ‖(‖g₁‖ₚ, ‖g₂‖ₚ, ..., ‖gₙ‖ₚ)‖ₚ.
#
# For p = ∞ the norm is the largest |entry| (p = −∞: the smallest). (For p = 0, a count of nonzero entries
# and not a true norm, the identity fails: PyTorch still takes the norm of the
# per-tensor norms, the number of tensors with a nonzero gradient, and so do we.)
# If total > max_norm every gradient
# is multiplied by max_norm / total (PyTorch adds 1e-6 to the denominator, so a
# zero norm divides safely); otherwise they are left alone. The function
# returns the total as a 0-d tensor: log it, it is a useful health signal. If
# the total is inf or NaN, `error_if_nonfinite=True` raises a RuntimeError;
# otherwise the gradients are scaled anyway (an inf norm zeroes them, a NaN
# makes them NaN), as in PyTorch.
#
# *Worked example.* Gradients [3, 0] and [4]: total = 5. With max_norm = 1 the
# factor is about 0.2, so they become [0.6, 0] and [0.8].
#
# ### Exercise: `_vector_norm(xp, array, norm_type)`
#
# The p-norm of all entries of an array, as a 0-d array of the array's dtype:
# (Σ |aᵢ|ᵖ)^(1/p); for p = ∞ the largest |aᵢ| (for p = −∞ the smallest), and
# for p = 0 (where 1/p breaks) the count of nonzero entries, as PyTorch.
#
# - Hint 1: five cases: ∞, −∞, 0, the common p = 2 (worth a fast path), any
#   other p.
# - Hint 2: for p = 2, √(a·a) with a flattened: a dot product does the squares
#   and the sum in one pass, without an (n,) temporary. Sums of powers
#   overflow float16 early (its largest value is 65504, so 1000 entries of 10
#   already do): sum 2-byte floats in float32, and cast the norm back.
# - Hint 3: `math.inf`; `xp.abs(...).max()`; a comparison and `.sum()` for p = 0;
#   `array.dtype.itemsize`, `.astype(xp.float32)`; `array.ravel()`, `xp.dot`,
#   `xp.sqrt`; `** norm_type`, `.sum()`, `** (1.0 / norm_type)`.

# %% nbgrader={"grade": false, "grade_id": "vector-norm", "locked": false, "schema_version": 3, "solution": true}
#| export nn.utils
def _vector_norm(xp, array, norm_type):
    """The p-norm of all entries of `array` (p = inf: the largest |entry|), as a 0-d array."""
    ### BEGIN SOLUTION
    if norm_type == math.inf:
        return xp.abs(array).max()
    if norm_type == -math.inf:
        return xp.abs(array).min()
    if norm_type == 0:
        return (array != 0).sum().astype(array.dtype)
    wide = array.astype(xp.float32) if array.dtype.itemsize < 4 else array  # float16 sums overflow at 65504
    if norm_type == 2.0:
        flat = wide.ravel()
        norm = xp.sqrt(xp.dot(flat, flat))
    else:
        norm = (xp.abs(wide) ** norm_type).sum() ** (1.0 / norm_type)
    return norm.astype(array.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-vector-norm", "locked": true, "points": 1, "schema_version": 3, "solution": false}
a = np.array([[3.0, -4.0], [0.0, 0.0]], np.float32)
assert np.shape(_vector_norm(np, a, 2.0)) == (), "the norm of all entries is one number (a 0-d array)"
assert np.isclose(_vector_norm(np, a, 2.0), 5.0), f"2-norm of [3, -4, 0, 0] is 5, got {_vector_norm(np, a, 2.0)}"
assert np.isclose(_vector_norm(np, a, math.inf), 4.0), "the inf-norm is the largest |entry|, 4"
assert _vector_norm(np, a[0], -math.inf) == 3.0, "the -inf 'norm' is the smallest |entry|: 3 for [3, -4]"
assert np.isclose(_vector_norm(np, a, 1.0), 7.0), "the 1-norm adds the |entries|: 7"
assert _vector_norm(np, a, 2.0).dtype == np.float32, "keep float32"
assert _vector_norm(np, a, 0.0) == 2.0, "the 0-'norm' counts the nonzero entries: 2"
half = np.full(1000, 10.0, np.float16)
assert np.isclose(_vector_norm(np, half, 2.0), 316.2, rtol=1e-3) and _vector_norm(np, half, 2.0).dtype == np.float16, \
    f"float16: sum in float32 (the squares add up to 1e5 > 65504), return float16; got {_vector_norm(np, half, 2.0)!r}"
assert np.isclose(_vector_norm(np, half, 3.0), 100.0, rtol=1e-3), f"float16 3-norm: widen for every p, not only p = 2 " \
    f"(1000 cubes of 10 add up to 1e6 > 65504; the root, 100, fits); got {_vector_norm(np, half, 3.0)}"
tiny = _vector_norm(np, np.full(4, 1e-30), 2.0)
assert tiny.dtype == np.float64 and np.isclose(tiny, 2e-30, rtol=1e-9, atol=0), \
    f"float64 entries 1e-30: the 2-norm is 2e-30 in float64 (widen only narrower types: 1e-60 underflows in float32); got {tiny!r}"
assert _vector_norm(np, a, 0.0).dtype == np.float32, f"the 0-'norm' is a float32 count too, got {_vector_norm(np, a, 0.0)!r}"

# %% [markdown]
# ### Exercise: `clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False)`
#
# The provided part collects the gradient arrays (`grads`) and handles the
# case with none; use your `_vector_norm`.
#
# - Hint 1: two levels of norm, then one scale factor shared by all gradients,
#   applied in place, that may shrink them but never grows them. On a GPU an `if`
#   on the factor's value would make the CPU wait for the GPU (a host sync) every
#   step, so decide with arithmetic, on the device.
# - Hint 2: the factor is max_norm over (total + 10⁻⁶), capped at 1 with
#   `xp.minimum` (a NaN stays NaN, which scales every gradient to NaN, as in PyTorch).
#   On the CPU (`xp is np`) reading the factor costs nothing: skip the pass over
#   the gradients when it is exactly 1.
# - Hint 3: `_vector_norm` per gradient, `xp.stack` those
#   0-d arrays, `_vector_norm` again; `bool(xp.isfinite(total))` for the check
#   (the message must say "non-finite"); `g *= factor` keeps float32 (total is
#   a 0-d float32 array); return `from_op(total, device)`.

# %% nbgrader={"grade": false, "grade_id": "clip-grad-norm", "locked": false, "schema_version": 3, "solution": true}
#| export nn.utils
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint p-norm is at most max_norm; return the norm."""
    grads, params = _grads_of(parameters)
    grads = [g for g in grads if g.size]  # an empty gradient adds nothing to any norm (and has no max)
    norm_type = float(norm_type)
    max_norm = float(max_norm)  # a number or a 0-d Tensor, as in PyTorch
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
    factor = xp.minimum(max_norm / (total + 1e-6), 1.0)  # on the device: no sync to decide
    if xp is not np or factor != 1.0:  # on the CPU a host read is free: skip a pass that changes nothing
        for g in grads:
            g *= factor
    return from_op(total, device)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-clip-grad-norm", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_clip_grad_norm():
    a, b = tt.tensor([1.0, 1.0], requires_grad=True), tt.tensor([1.0], requires_grad=True)
    a.grad, b.grad = tt.tensor([3.0, 0.0]), tt.tensor([4.0])
    grad_a = a.grad.data
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert isinstance(total, tt.Tensor) and total.shape == (), f"return the total norm as a 0-d tensor, got {total!r}"
    assert np.isclose(total.item(), 5.0), f"the joint 2-norm of [3, 0] and [4] is 5, got {total.item()}"
    assert total.dtype == np.float32, f"the norm is float32, got {total.dtype}"
    assert np.allclose(a.grad.data, [0.6, 0.0]) and np.allclose(b.grad.data, [0.8]), \
        f"gradients are scaled by 1/5: expected [0.6, 0] and [0.8], got {a.grad.data}, {b.grad.data}"
    assert a.grad.data is grad_a, "scale the gradient arrays in place"
    a.grad = tt.tensor([3.0, 0.0])
    total = clip_grad_norm_(a, max_norm=10.0)
    assert np.allclose(a.grad.data, [3.0, 0.0]) and np.isclose(total.item(), 3.0), \
        "below max_norm, gradients are left alone (and a single tensor is accepted)"
    a.grad, b.grad = tt.tensor([3.0, -5.0]), tt.tensor([4.0])
    total = clip_grad_norm_([a, b], max_norm=2.5, norm_type=float("inf"))
    assert np.isclose(total.item(), 5.0), f"the inf-norm is the largest |entry| (5), got {total.item()}"
    assert np.allclose(a.grad.data, [1.5, -2.5], atol=1e-5), f"scaled by 2.5/5; got {a.grad.data}"
    zero = clip_grad_norm_([a, b], 10.0, norm_type=0).item()
    assert zero == 2.0, f"norm_type=0 as PyTorch: each gradient's count of nonzeros (2, 1), then the count of those: 2; got {zero}"
    a.grad, raised = tt.tensor([np.inf, 1.0]), None
    try:
        clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    except RuntimeError as err:
        raised = str(err)
    assert raised and "non-finite" in raised, "an inf norm with error_if_nonfinite=True: RuntimeError, 'non-finite'"
    a.grad, raised = tt.tensor([np.nan, 1.0]), None
    try:
        clip_grad_norm_([a], 1.0, error_if_nonfinite=True)
    except RuntimeError as err:
        raised = str(err)
    assert raised, "a nan norm is non-finite too (nan is not inf): error_if_nonfinite=True must raise RuntimeError"
    a.grad = tt.tensor([0.0, 0.0])
    with np.errstate(all="ignore"):
        clip_grad_norm_([a], 0.0)
    assert a.grad.data.tolist() == [0.0, 0.0], f"zero gradients, max_norm 0: they stay 0 (0/0 is nan: the " \
        f"denominator must not be 0, as PyTorch makes sure), got {a.grad.data.tolist()}"
    ### BEGIN HIDDEN TESTS
    c = tt.tensor([1.0], requires_grad=True)
    assert clip_grad_norm_([c], 1.0).item() == 0.0, "no gradients: norm 0"
    ### END HIDDEN TESTS


test_clip_grad_norm()
print("clip_grad_norm_: ok")

# %% [markdown]
# ## 6. Weight decay and duplicated features
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
# features, and in the same way it prefers to spread weight over *correlated*
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
#
# Full-batch gradient descent with your `SGD` (`lr`, `weight_decay`) on the
# mean logistic loss of the logits z = X @ w (no bias) with labels y ∈ {0, 1}.
# Return the final weights as a NumPy array. The test fits, duplicates a
# feature, and refits from the old solution with the copy's weight at 0.
#
# - Hint 1: the usual loop: zero the gradients, forward, loss, backward, step.
# - Hint 2: the mean logistic loss, mean(softplus(z) − y·z), is module 04's
#   stable `binary_cross_entropy_with_logits(z, y)`.
# - Hint 3: X, y as tensors, w a float32 leaf tensor copied from `w_init` with
#   `requires_grad=True`; `SGD([w], ...)` once, before the loop; return a copy
#   of `w.data` (shape (d,)).

# %% nbgrader={"grade": false, "grade_id": "logistic-l2", "locked": false, "schema_version": 3, "solution": true}
def fit_logistic_regression(X, y, w_init, weight_decay, lr=1.0, steps=600):
    """Weights of an L2-regularised logistic regression (no bias), by full-batch SGD from w_init."""
    ### BEGIN SOLUTION
    X, y = tt.tensor(X), tt.tensor(y)
    w = tt.tensor(np.array(w_init, dtype=np.float32), requires_grad=True)
    opt = SGD([w], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        loss = binary_cross_entropy_with_logits(X @ w, y)
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
    assert isinstance(w, np.ndarray) and w.shape == (3,) and w.dtype == np.float32, \
        f"return the weights as a (3,) float32 array (whatever w_init's dtype), got {w!r}"
    w1, one_step = fit_logistic_regression(X, y, np.zeros(3), 0.0, steps=1), X.T @ (y - 0.5) / len(y)
    assert np.allclose(w1, one_step, atol=1e-5), (
        f"steps=1 from 0 is exactly one step of lr 1, X^T(y - 1/2)/n = {one_step}; got {w1}")
    half = fit_logistic_regression(X, y, np.zeros(3), 0.0, lr=0.5, steps=1)
    assert np.allclose(half, one_step / 2, atol=1e-5), f"lr=0.5: half that step, {one_step / 2}; got {half}: use lr as given"
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
# ## 7. Putting it together: AdamW, warmup then cosine, and clipping
#
# The training loop every later module uses, on a task a linear model cannot
# solve: XOR of the signs of two coordinates. Per step: zero the gradients,
# forward, loss, backward, clip, step the optimizer, step the schedule. The
# schedule is a `SequentialLR` (provided) of a `LinearLR` warmup from lr/10 over
# the first `warmup` steps, then your cosine down to 0 over the rest.
#
# ### Exercise: `train(model, inputs, targets, steps, lr, warmup, max_norm)`
#
# Return the list of losses, one per step, and the optimizer.
#
# - Hint 1: build the optimizer and the schedule once, before the loop; the
#   schedule steps after the optimizer.
# - Hint 2: AdamW with weight decay 0.01; the warmup is a `LinearLR` from factor
#   0.1 over `warmup` iterations, the decay a `CosineAnnealingLR` over the other
#   steps − warmup, joined by a `SequentialLR` whose one milestone is `warmup`.
# - Hint 3: seven calls per step: `zero_grad`, the model, `cross_entropy`,
#   `backward`, `clip_grad_norm_` of the model's parameters, the two `step`s;
#   append `loss.item()`.

# %% nbgrader={"grade": false, "grade_id": "train-loop", "locked": false, "schema_version": 3, "solution": true}
def train(model, inputs, targets, steps=150, lr=0.05, warmup=10, max_norm=1.0):
    """AdamW with linear warmup then cosine decay and gradient clipping; returns (losses, optimizer)."""
    ### BEGIN SOLUTION
    opt = AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = SequentialLR(opt, [LinearLR(opt, start_factor=0.1, total_iters=warmup),
                                  CosineAnnealingLR(opt, T_max=steps - warmup)], milestones=[warmup])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = cross_entropy(model(inputs), targets)
        loss.backward()
        clip_grad_norm_(model.parameters(), max_norm)
        opt.step()
        schedule.step()
        losses.append(loss.item())
    return losses, opt
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-train-loop", "locked": true, "points": 2, "schema_version": 3, "solution": false}
tt.manual_seed(0)
points = np.random.default_rng(0).uniform(-1, 1, (256, 2)).astype(np.float32)
labels = ((points[:, 0] > 0) ^ (points[:, 1] > 0)).astype(np.int64)  # XOR of the signs
model = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
losses, opt = train(model, tt.tensor(points), tt.tensor(labels), steps=150)
assert len(losses) == 150, f"one loss per step: expected 150, got {len(losses)}"
assert isinstance(opt, AdamW), f"train with AdamW, got {type(opt).__name__}"
assert opt.param_groups[0]["lr"] < 1e-6, f"after warmup + cosine the lr ends at 0, got {opt.param_groups[0]['lr']}"
assert losses[-1] < 0.5 * losses[0], f"the loss should at least halve: {losses[0]:.3f} -> {losses[-1]:.3f}"
train_accuracy = (model(tt.tensor(points)).argmax(dim=1).numpy() == labels).mean()
assert train_accuracy > 0.9, f"an MLP fits XOR: train accuracy should exceed 90%, got {train_accuracy:.1%}"
# the gradients here stay below max_norm = 1, so the run above never clips: max_norm = 0 must zero them
still = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
before = still[0].weight.data.copy()
frozen, _ = train(still, tt.tensor(points), tt.tensor(labels), steps=20, warmup=5, max_norm=0.0)
assert max(frozen) - min(frozen) < 1e-3, (
    f"with max_norm = 0 the clip zeroes every gradient, so AdamW only decays the weights and the loss "
    f"stays put; it went {frozen[0]:.4f} -> {frozen[-1]:.4f}: clip after backward() and before opt.step()")
lrs = [0.05 * (0.1 + 0.9 * k / 5) for k in range(5)] + [0.025 * (1 + np.cos(np.pi * k / 15)) for k in range(15)]
shrink = (still[0].weight.data / before).mean()
assert np.isclose(shrink, np.prod([1 - 0.01 * lr for lr in lrs]), rtol=2e-5, atol=0), (
    f"steps=20, warmup=5: with zero gradients only the decay moves the weights, by the product of (1 - 0.01 lr) over "
    f"5 warmup rates then a cosine over 15 steps; weights shrank by {shrink:.6f}, expected "
    f"{np.prod([1 - 0.01 * lr for lr in lrs]):.6f}: use warmup and steps as given")
first = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
start = first[0].weight.data.copy()
_, opt = train(first, tt.tensor(points), tt.tensor(labels), steps=1, lr=0.02, warmup=10)
assert opt.param_groups[0]["initial_lr"] == 0.02, (
    f"train(lr=0.02) must build AdamW with that lr, not a fixed one: got {opt.param_groups[0]['initial_lr']}")
moved = np.abs(first[0].weight.data - start).max()
assert 0.00196 < moved < 0.00204, (
    f"the first step must use the warmup's first lr, 0.1 * 0.02 = 0.002 (AdamW's first step moves a weight by "
    f"about lr), but a weight moved {moved:.5f}: step the schedule after opt.step(), not before")
idle = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
train(idle, tt.tensor(points), tt.tensor(labels), steps=3, lr=0.0, warmup=1, max_norm=1e9)  # lr 0: nothing moves
last = idle[0].weight.grad.data.copy()
idle.zero_grad()
cross_entropy(idle(tt.tensor(points)), tt.tensor(labels)).backward()
assert np.allclose(last, idle[0].weight.grad.data, atol=1e-6), (
    "with lr = 0 each step's gradient is the same, and after train() a weight's .grad must be one step's gradient, "
    f"not the sum of all 3 (max |difference| {np.abs(last - idle[0].weight.grad.data).max():.2e}): "
    "zero the gradients before each backward()")
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, train accuracy on XOR {train_accuracy:.1%}")

# %% [markdown]
# ## 8. What it costs
#
# Time: an optimizer step is a handful of elementwise passes over every
# parameter (SGD 1 to 4, Adam about 14), each reading and writing memory:
# memory-bound. Next to a model with large activations that is small; next to
# a small batch it is not: on a 784→512→512→10 MLP at batch 128, your Adam's
# update takes ~2.6 ms, more than half of PyTorch's whole training step of that
# MLP (~4 ms; 2 cores, `bench/results/adamw-update-*.json` and `mlp-*.json`).
# The cure is to fuse the passes, reading and writing each element once; NumPy
# cannot, so `Adam(..., fused=True)` runs the same recipe as one compiled loop
# (provided code, section "Fused Adam"): the reference solution's numbers to the
# last bit, ~5x faster. Memory is the real cost: the state. Measured on that MLP with your
# optimizers:

# %%
mlp = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
mlp_params = list(mlp.parameters())
param_bytes = sum(p.data.nbytes for p in mlp_params)
for p in mlp_params:
    p.grad = tt.zeros(*p.shape)
for name, optimizer in [("SGD", SGD(mlp_params, lr=0.0)), ("SGD momentum", SGD(mlp_params, lr=0.0, momentum=0.9)),
                        ("Adam", Adam(mlp_params, lr=0.0)), ("AdamW amsgrad", AdamW(mlp_params, lr=0.0, amsgrad=True))]:
    seconds = min(timeit.repeat(optimizer.step, number=5, repeat=3)) / 5
    extra = sum(v.nbytes for s in optimizer.state.values() for v in s.values() if hasattr(v, "nbytes"))
    print(f"{name:14s} state {extra / 2**20:5.2f} MiB = {extra / param_bytes:.0f} x the parameters "
          f"({param_bytes / 2**20:.2f} MiB); step {seconds * 1e3:5.2f} ms")

# %% [markdown]
# Adam's two moments take twice the memory of the weights (with the weights
# and the gradients: four copies in all). That is why large models shard optimizer state across
# GPUs (ZeRO, in module 11) and why memory-lean optimizers exist.
#
# **Next:** module 06 feeds batches of data to this loop, and module 07 wraps
# it in a `Trainer` that checkpoints the model *and* `optimizer.state_dict()`.
