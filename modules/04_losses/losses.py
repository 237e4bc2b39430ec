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
# # Module 04 — Losses and metrics
#
# A network learns by following the gradient of one number: the **loss**, a
# measure of how wrong its outputs are. The loss is where training starts its
# backward pass, so two things matter more than anywhere else:
#
# 1. **It must stay in the graph.** A loss computed on raw arrays and wrapped
#    in a fresh tensor has no `_parents`: `loss.backward()` then reaches no
#    parameter, and the model trains nothing, silently. Every loss here is
#    either composed of tensor ops or one op with a hand-written backward.
# 2. **It must not overflow.** Logits of a few hundred are routine; `exp(100)`
#    already overflows float32. Cross-entropy computed "as written" returns
#    `inf` or `nan`, and one `nan` poisons every weight.
#
# **You will implement:** `mse_loss`, the forward and the backward of the fused
# `cross_entropy`, the stable binary cross-entropy on logits, and `accuracy`.
# The plumbing (shapes, class weights, `ignore_index`, label smoothing,
# reductions, error messages) is provided.
#
# **Exports:** `tinytorch.nn.functional` (the losses, PyTorch's names and
# arguments), `tinytorch.nn.losses` (the `nn.Module` wrappers, e.g.
# `CrossEntropyLoss`), `tinytorch.metrics` (`accuracy`, `Mean`).

# %%
#| default_exp nn.functional

# %%
import time
import tracemalloc

import numpy as np

import tinytorch as tt
from tinytorch.core.tensor import Tensor, tensor

# %% [markdown]
# ## 1. Reductions, and a first loss: mean squared error
#
# A loss starts as one number per prediction; `reduction` says what to return,
# with PyTorch's names:
#
# | `reduction` | returns |
# | --- | --- |
# | `"mean"` (default) | the average: the gradient does not grow with the batch size |
# | `"sum"` | the total |
# | `"none"` | every per-element loss, e.g. to weight or mask them yourself |
#
# Mean squared error, MSE = (1/n) Σ (xᵢ − yᵢ)², is the loss of regression.
# Its gradient, 2(xᵢ − yᵢ)/n, is proportional to the error. L1, (1/n) Σ |xᵢ − yᵢ|,
# has a gradient of constant size, sign(xᵢ − yᵢ)/n, so outliers pull less.
#
# We refuse targets whose shape differs from the input's. PyTorch only warns:
# an input of shape (N, 1) against a target of shape (N,) broadcasts to an
# (N, N) matrix of differences, a loss that is computable and wrong.

# %%
#| export
# Loss functions, as in `torch.nn.functional`. Each returns a tensor in the autograd graph.
import builtins

import numpy as np

from tinytorch.core.backend import get_xp, is_floating
from tinytorch.core.tensor import Tensor, _wrap

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, name):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_tensor(x, what, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")


def _check_same_device(input, other, what, name):
    if other._device != input._device:
        raise RuntimeError(f"{name}: input is on {input._device} but {what} is on {other._device}; "
                           f"move one of them with .to()")


def _check_pair(input, target, name):
    """Elementwise losses: float tensors of one shape, on one device."""
    _check_tensor(input, "input", name)
    _check_tensor(target, "target", name)
    _check_same_device(input, target, "target", name)
    for what, t in (("input", input), ("target", target)):
        if not is_floating(t.dtype):
            raise TypeError(f"{name}: {what} must be floating point, got {t.dtype.name}; "
                            f"convert it with .float()")
    if input.shape != target.shape:
        raise ValueError(f"{name}: target of shape {tuple(target.shape)} does not match input of "
                         f"shape {tuple(input.shape)}; broadcasting them would compute a different "
                         f"loss, so reshape one (e.g. target.view{tuple(input.shape)})")


def _reduce(loss, reduction):
    """Apply `reduction` to a tensor of per-element losses (tensor ops: the graph is kept)."""
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


# %% [markdown]
# ### Exercise: `mse_loss(input, target, reduction)`
#
# Compose it from tensor ops (`-`, `*`, then `_reduce`): autograd then derives
# the backward for you, for `input` and for `target`. The checks are done.

# %% nbgrader={"grade": false, "grade_id": "mse-loss", "locked": false, "schema_version": 3, "solution": true}
#| export
def mse_loss(input, target, reduction="mean"):
    """Mean squared error, (input - target)² reduced by `reduction`."""
    _check_reduction(reduction, "mse_loss")
    _check_pair(input, target, "mse_loss")
    ### BEGIN SOLUTION
    diff = input - target
    return _reduce(diff * diff, reduction)
    ### END SOLUTION


# %%
#| export
def l1_loss(input, target, reduction="mean"):
    """Mean absolute error, |input - target| reduced by `reduction` (gradient 0 where equal)."""
    _check_reduction(reduction, "l1_loss")
    _check_pair(input, target, "l1_loss")
    return _reduce((input - target).abs(), reduction)


# %% nbgrader={"grade": true, "grade_id": "test-mse-loss", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def test_mse_loss():
    x = tensor([1.0, 2.0, 4.0], requires_grad=True)
    y = tensor([1.0, 0.0, 1.0])
    loss = mse_loss(x, y)
    assert abs(loss.item() - 13 / 3) < 1e-6, f"mean of [0, 4, 9] is 13/3, got {loss.item()}"
    assert loss.dtype == np.float32, f"float32 in, float32 out; got {loss.dtype}"
    loss.backward()
    assert x.grad is not None, "loss.backward() must reach the input: build the loss from tensor ops"
    assert np.allclose(x.grad.data, [0, 4 / 3, 2]), f"d/dx = 2(x - y)/n = [0, 4/3, 2], got {x.grad.data}"
    assert mse_loss(x, y, reduction="sum").item() == 13, "reduction='sum' adds the squared errors"
    assert mse_loss(x, y, reduction="none").tolist() == [0, 4, 9], "reduction='none' keeps each one"
    ### BEGIN HIDDEN TESTS
    t = tensor([0.0, 0.0, 0.0], requires_grad=True)
    mse_loss(tensor([1.0, 2.0, 3.0]), t).backward()
    assert np.allclose(t.grad.data, [-2 / 3, -4 / 3, -2]), "the target gets a gradient too"
    ### END HIDDEN TESTS


test_mse_loss()
print("mse_loss: ok")

# %% [markdown]
# ## 2. Cross-entropy, and why it is computed in one piece
#
# A classifier outputs one score per class, the **logits** z ∈ ℝᶜ. Softmax turns
# them into probabilities pᶜ = e^zᶜ / Σⱼ e^zⱼ, and cross-entropy is the negative
# log-probability of the true class t:
#
# ℓ = −log p_t = −z_t + log Σⱼ e^zⱼ
#
# The right-hand form never divides and never takes the log of a probability:
# it needs only **log-sum-exp**, LSE(z) = log Σⱼ e^zⱼ. Computed as written,
# e^zⱼ overflows for z > 88 in float32. But for any constant m,
#
# LSE(z) = m + log Σⱼ e^(zⱼ − m),
#
# and with m = maxⱼ zⱼ every exponent is ≤ 0: the largest term is e⁰ = 1, so
# the sum lies in [1, C] and neither overflows nor underflows to log(0).
#
# Here is the naive form, built from your own tensor ops, on logits that a
# real network produces early in training with a large learning rate:

# %%
logits = tensor([[1000.0, 0.0, -1000.0], [2.0, 1.0, 0.1]])
with np.errstate(all="ignore"):  # the warnings are the point: silence them, look at the values
    probs = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    naive = -probs[[0, 1], [0, 0]].log()
print("naive -log(softmax(z)[t]):", naive.tolist())  # row 0: exp(1000) = inf, inf/inf = nan

# %% [markdown]
# *The gradient.* With p = softmax(z) and ℓ = −z_t + LSE(z):
# ∂LSE/∂zⱼ = e^zⱼ / Σₖ e^zₖ = pⱼ, and ∂z_t/∂zⱼ = 1 if j = t. So
#
# ∂ℓ/∂z = p − onehot(t).
#
# The whole chain softmax → log → pick collapses into one subtraction. Worked
# example: z = (0, 0), t = 0 → p = (½, ½), ℓ = log 2 ≈ 0.693, ∂ℓ/∂z = (−½, ½).
# The gradient pushes the true class up and every other class down, in
# proportion to the probability the model wrongly gives it; it is bounded by
# 1 in size, however wrong the logits, which is what makes training stable.
#
# *Why one fused op.* Composed as `nll_loss(log_softmax(z))`, the graph keeps
# the (N, C) log-probabilities until the backward pass and makes several (N, C)
# temporaries on the way back. For a GPT, C is the vocabulary (50,257 for
# GPT-2): the logits are the largest tensor of the whole model. The fused op
# keeps only the row maxima and log-sums, (N,) each, and computes p − onehot
# in one (N, C) array that *is* the gradient. Section 7 measures the difference.
#
# ### The options, as in PyTorch
#
# With class weights w (default 1), label smoothing ε and ignored rows removed,
# each target's loss is
#
# ℓᵢ = (1 − ε) · w_tᵢ · (LSEᵢ − zᵢ,tᵢ) + (ε/C) · Σ_c w_c · (LSEᵢ − zᵢ,c),
#
# i.e. cross-entropy against the smoothed target distribution (1 − ε)·onehot + ε/C.
# `reduction="mean"` divides Σᵢ ℓᵢ by the number of non-ignored targets, or
# with `weight` by Σᵢ w_tᵢ over them: a *weighted* mean. A row whose target is
# `ignore_index` (padding, say) contributes nothing, to the loss or the count.
# Differentiating as above, with aᵢ = dL/dℓᵢ (g, g/count, or gᵢ):
#
# ∂L/∂zᵢ = aᵢ · [((1 − ε)·w_tᵢ + (ε/C)·Σ_c w_c) · pᵢ − (1 − ε)·w_tᵢ · onehot(tᵢ) − (ε/C) · w].
#
# Without weights or smoothing this is aᵢ (pᵢ − onehot(tᵢ)) again. The code
# writes it as `p_scale · p − target_scale · onehot(t)`, plus the smoothing term.
#
# *Layouts.* Logits are (N, C), a single (C,) with a 0-d target, or
# (N, C, d₁, ...) with targets (N, d₁, ...): the class dim is 1, as in PyTorch
# (an image segmenter's (N, C, H, W)). A GPT's (B, T, C) logits are passed as
# `logits.view(-1, C)` with `targets.view(-1)`, as nanoGPT does.
#
# The provided plumbing below turns every layout into rows (M, C) with one
# class index per row, and checks the targets.

# %%
#| export
def _class_rows(input, target, name):
    """Logits with the class dim at 1 as rows (M, C), and a map from row grads back to input's shape."""
    _check_tensor(input, "input", name)
    _check_tensor(target, "target", name)
    _check_same_device(input, target, "target", name)
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a 0-d tensor")
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: input must be floating point (logits), got {input.dtype.name}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold class indices (int64), got {target.dtype.name}; "
                        f"class-probability targets are not supported; convert indices with .long()")
    C = input.shape[0] if input.ndim == 1 else input.shape[1]
    expected = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        hint = ""
        if input.ndim >= 3 and tuple(target.shape) == tuple(input.shape[:-1]):
            hint = (f"; the class dim is 1, so for (B, T, C) logits as in a GPT pass "
                    f"logits.view(-1, {input.shape[-1]}) and targets.view(-1)")
        raise ValueError(f"{name}: input of shape {tuple(input.shape)} has C={C} classes in dim "
                         f"{0 if input.ndim == 1 else 1} and needs a target of shape {expected}, "
                         f"got {tuple(target.shape)}{hint}")
    xp = get_xp(input._device)
    if input.ndim <= 2:
        rows = input.data.reshape(-1, C)                             # (M, C)
    else:
        rows = xp.moveaxis(input.data, 1, -1).reshape(-1, C)        # (N, d1.., C) -> (M, C)

    def to_input_shape(grad_rows):                                   # (M, C) -> input's shape
        if input.ndim <= 2:
            return grad_rows.reshape(input.shape)
        moved = grad_rows.reshape((input.shape[0],) + tuple(input.shape[2:]) + (C,))
        return xp.moveaxis(moved, -1, 1)
    return rows, to_input_shape


def _class_targets(target, num_classes, ignore_index, name):
    """Flat targets (M,) with ignored entries replaced by 0, and the (M,) mask of kept ones."""
    xp = get_xp(target._device)
    t = target.data.reshape(-1)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= num_classes))
    if bad.any():
        first = builtins.int(bad.argmax())
        position = tuple(builtins.int(i) for i in np.unravel_index(first, tuple(target.shape)))
        raise IndexError(f"{name}: target {builtins.int(t[first])} at position {position} is out of "
                         f"range for {num_classes} classes (expected 0 to {num_classes - 1}, or "
                         f"ignore_index={ignore_index})")
    return xp.where(keep, t, 0), keep


def _target_weights(weight, targets, keep, rows, name):
    """Each row's weight w[t] (1 without class weights), 0 for ignored rows: (M,); and w (C,) or None."""
    if weight is None:
        return keep.astype(rows.dtype), None
    C = rows.shape[1]
    _check_tensor(weight, "weight", name)
    if tuple(weight.shape) != (C,):
        raise ValueError(f"{name}: weight needs one entry per class, shape ({C},), "
                         f"got {tuple(weight.shape)}")
    w = weight.data.astype(rows.dtype, copy=False)                  # (C,)
    return get_xp(weight._device).where(keep, w[targets], 0).astype(rows.dtype, copy=False), w


def _reduce_rows(losses, reduction, denominator, shape):
    """Per-target losses (M,) -> the target's shape ('none'), their sum, or sum / denominator."""
    if reduction == "none":
        return losses.reshape(shape)
    total = losses.sum()
    return total if reduction == "sum" else total / denominator


def _row_scale(g, reduction, denominator):
    """dL/d(each target's loss): g per target ('none', flattened), g ('sum'), g / denominator ('mean')."""
    if reduction == "none":
        return g.reshape(-1)
    return g / denominator if reduction == "mean" else g


# %% [markdown]
# ### Exercise: the forward pass, `_cross_entropy_rows(z, targets, target_weight, xp)`
#
# On raw arrays: z (M, C), targets (M,) class indices, target_weight (M,).
# Return `(losses, m, log_sum)`, each (M,), where m is the row max and
# log_sum = log Σⱼ e^(zⱼ − m), so that LSE = m + log_sum, and
# `losses = target_weight * (log_sum - (z[row, target] - m))`.
#
# - Subtract `m[:, None]`, exponentiate **in place** (`xp.exp(e, out=e)`: the
#   one (M, C) temporary), sum over axis 1, log.
# - Pick each row's target logit with integer-array indexing:
#   `z[xp.arange(M), targets]`: no one-hot matrix.
# - Why keep m and log_sum apart instead of adding them? In float32, m = −10⁴
#   plus log_sum = 1.0986 rounds to a multiple of 0.001; subtracting z_t − m
#   first keeps every digit (it is what `log_softmax` does too).
# - Keep z's dtype: no float64 temporaries.

# %% nbgrader={"grade": false, "grade_id": "cross-entropy-forward", "locked": false, "schema_version": 3, "solution": true}
#| export
def _cross_entropy_rows(z, targets, target_weight, xp):
    """Per-row w[t] * (logsumexp(z) - z[t]), the row maxima m and log Σ exp(z - m): (M,) each."""
    ### BEGIN SOLUTION
    m = z.max(axis=1)                                  # (M,)
    e = z - m[:, None]                                 # (M, C), every entry <= 0
    xp.exp(e, out=e)
    log_sum = xp.log(e.sum(axis=1))                    # (M,), in [0, log C]
    picked = z[xp.arange(z.shape[0]), targets]         # (M,)
    return target_weight * (log_sum - (picked - m)), m, log_sum
    ### END SOLUTION


# %% [markdown]
# ### Exercise: the backward pass, `_softmax_minus_target(z, m, log_sum, targets, p_scale, target_scale, xp)`
#
# Return the (M, C) array `p_scale[:, None] * softmax(z) − target_scale · onehot(targets)`,
# where softmax(z) = exp((z − m) − log_sum) reuses the forward's row maxima and
# log-sums. Build it in **one** (M, C) array: compute `z − m[:, None]`, then
# subtract `log_sum[:, None]`, exponentiate and scale it, all in place, and
# subtract `target_scale` at `[xp.arange(M), targets]`. For plain `mean`
# cross-entropy over N rows, both scales are g/N.

# %% nbgrader={"grade": false, "grade_id": "cross-entropy-backward", "locked": false, "schema_version": 3, "solution": true}
#| export
def _softmax_minus_target(z, m, log_sum, targets, p_scale, target_scale, xp):
    """p_scale * softmax(z) - target_scale * onehot(targets), row by row, in one (M, C) array."""
    ### BEGIN SOLUTION
    grad = z - m[:, None]                              # (M, C)
    grad -= log_sum[:, None]                           # log-probabilities
    xp.exp(grad, out=grad)                             # probabilities
    grad *= p_scale[:, None]
    grad[xp.arange(z.shape[0]), targets] -= target_scale
    return grad
    ### END SOLUTION


# %% [markdown]
# The function students of PyTorch call, assembled from the pieces. Only
# `input` gets a gradient (the class weights are constants, as in PyTorch).

# %%
#| export
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy of logits against class indices, as one stable op.

    input: logits (N, C), (C,) or (N, C, d1, ...): the class dim is 1. For a GPT's
    (B, T, C) logits, pass `logits.view(-1, C)` and `targets.view(-1)`.
    target: int64 class indices (N,), () or (N, d1, ...). Entries equal to
    `ignore_index` add nothing and are not counted by the mean.
    weight: optional (C,) class weights; `mean` then divides by the sum of the
    kept targets' weights. label_smoothing: ε in [0, 1], the target becomes
    (1 - ε)·onehot + ε/C.
    """
    name = "cross_entropy"
    _check_reduction(reduction, name)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")
    rows, to_input_shape = _class_rows(input, target, name)                # (M, C)
    xp = get_xp(input._device)
    C = rows.shape[1]
    targets, keep = _class_targets(target, C, ignore_index, name)          # (M,), (M,)
    w_t, w = _target_weights(weight, targets, keep, rows, name)            # (M,), (C,) or None
    losses, m, log_sum = _cross_entropy_rows(rows, targets, w_t, xp)       # (M,) each
    eps = label_smoothing
    if eps:
        smooth = keep.astype(rows.dtype) * (eps / C)                       # (M,)
        w_sum = C if w is None else w.sum()
        shifted = rows - m[:, None]                                        # (M, C), freed at once
        every_class = log_sum * w_sum - (shifted.sum(axis=1) if w is None else shifted @ w)  # Σ_c w_c (lse - z_c)
        del shifted
        losses = (1 - eps) * losses + smooth * every_class
    denominator = w_t.sum()

    def cross_entropy_backward(g):
        a = _row_scale(g, reduction, denominator)                          # (M,) or ()
        target_scale = a * (1 - eps) * w_t                                 # (M,)
        if not eps:
            return (to_input_shape(_softmax_minus_target(rows, m, log_sum, targets, target_scale,
                                                         target_scale, xp)),)
        a_smooth = a * smooth                                              # (M,)
        grad = _softmax_minus_target(rows, m, log_sum, targets, target_scale + a_smooth * w_sum,
                                     target_scale, xp)
        grad -= a_smooth[:, None] if w is None else a_smooth[:, None] * w
        return (to_input_shape(grad),)
    out = _reduce_rows(losses, reduction, denominator, target.shape)
    return _wrap(out, input._device, (input,), cross_entropy_backward)


# %% nbgrader={"grade": true, "grade_id": "test-cross-entropy-forward", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_cross_entropy_forward():
    z = tensor([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0]])
    t = tensor([0, 0, 0])
    losses = cross_entropy(z, t, reduction="none")
    assert np.isfinite(losses.data).all(), f"logits of 1000 must not overflow: got {losses.tolist()}"
    assert np.allclose(losses.data, [np.log(2), 0.0, 1000.0]), \
        f"expected [log 2, 0, 1000], got {losses.tolist()}"
    assert losses.dtype == np.float32, f"float32 logits give a float32 loss, got {losses.dtype}"
    assert np.isclose(cross_entropy(z, t).item(), (np.log(2) + 1000) / 3), "'mean' averages the rows"
    zz = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    tt_ = np.array([1, 0, 4, 2])
    ref = np.log(np.exp(zz).sum(1)) - zz[np.arange(4), tt_]
    got = cross_entropy(tensor(zz), tensor(tt_), reduction="none").data
    assert np.allclose(got, ref, atol=1e-6), f"cross-entropy of random logits: expected {ref}, got {got}"
    ### BEGIN HIDDEN TESTS
    losses, m, log_sum = _cross_entropy_rows(zz, tt_, np.full(4, 2.0, np.float32), np)
    assert np.allclose(losses, 2 * ref, atol=1e-5), "losses are scaled by target_weight"
    assert np.allclose(m + log_sum, np.log(np.exp(zz).sum(1)), atol=1e-6), "m + log_sum is the LSE"
    assert np.allclose(m, zz.max(1)), "m is each row's max"
    ### END HIDDEN TESTS


test_cross_entropy_forward()
print("cross_entropy forward: ok")

# %% nbgrader={"grade": true, "grade_id": "test-cross-entropy-backward", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_cross_entropy_backward():
    z = tensor([[0.0, 0.0], [1000.0, 0.0]], requires_grad=True)
    cross_entropy(z, tensor([0, 1]), reduction="sum").backward()
    assert z.grad is not None, "loss.backward() must fill logits.grad"
    assert np.allclose(z.grad.data, [[-0.5, 0.5], [1.0, -1.0]]), \
        f"dℓ/dz = softmax - onehot: expected [[-½, ½], [1, -1]], got {z.grad.tolist()}"
    assert z.grad.dtype == np.float32, f"the gradient stays float32, got {z.grad.dtype}"
    x = tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    assert tt.autograd.gradcheck(lambda a: cross_entropy(a, tensor([3, 0, 1])), (x,)), \
        "mean cross-entropy: analytic and numeric gradients differ"
    ### BEGIN HIDDEN TESTS
    g = _softmax_minus_target(np.zeros((2, 2), np.float32), np.zeros(2, np.float32),
                              np.full(2, np.log(2), np.float32),
                              np.array([0, 1]), np.array([2.0, 1.0], np.float32),
                              np.array([1.0, 1.0], np.float32), np)
    assert np.allclose(g, [[0.0, 1.0], [0.5, -0.5]]), "p_scale and target_scale are separate"
    ### END HIDDEN TESTS


test_cross_entropy_backward()
print("cross_entropy backward: ok")

# %% [markdown]
# `nll_loss` takes log-probabilities instead of logits (you computed them with
# `log_softmax`) and has the same options except smoothing; `cross_entropy(z, t)`
# equals `nll_loss(log_softmax(z, 1), t)`. Its backward scatters −aᵢ·w_tᵢ into
# the picked entries of a zero (M, C) array.

# %%
#| export
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, given log-probabilities (class dim 1)."""
    name = "nll_loss"
    _check_reduction(reduction, name)
    rows, to_input_shape = _class_rows(input, target, name)                # (M, C)
    xp = get_xp(input._device)
    targets, keep = _class_targets(target, rows.shape[1], ignore_index, name)
    w_t, _ = _target_weights(weight, targets, keep, rows, name)            # (M,)
    picked = xp.where(keep, rows[xp.arange(rows.shape[0]), targets], 0)    # (M,); an ignored -inf stays out
    losses = -w_t * picked
    denominator = w_t.sum()

    def nll_loss_backward(g):
        grad = xp.zeros(rows.shape, dtype=rows.dtype)                      # (M, C)
        grad[xp.arange(rows.shape[0]), targets] = -_row_scale(g, reduction, denominator) * w_t
        return (to_input_shape(grad),)
    out = _reduce_rows(losses, reduction, denominator, target.shape)
    return _wrap(out, input._device, (input,), nll_loss_backward)


# %%
z = tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 1.0, 1.0]], requires_grad=True)
t = tensor([0, 1, -100])
print("cross_entropy:", cross_entropy(z, t).item(),
      "= nll_loss(log_softmax):", nll_loss(z.log_softmax(dim=1), t).item())
print("with label_smoothing=0.1:", cross_entropy(z, t, label_smoothing=0.1).item())
try:
    cross_entropy(z, tensor([0, 3, 1]))
except IndexError as err:
    print("IndexError:", err)

# %% [markdown]
# ## 3. Two classes: binary cross-entropy on logits
#
# For a yes/no output, one logit x per example is enough: the probability of
# "yes" is σ(x) = 1/(1 + e⁻ˣ), and for a target y ∈ [0, 1]
#
# ℓ = −[y · log σ(x) + (1 − y) · log(1 − σ(x))].
#
# Computed as written it breaks twice: σ(40) rounds to exactly 1 in float32, so
# log(1 − σ(x)) = log 0 = −∞; and the textbook softplus log(1 + eˣ) overflows
# for x > 88:

# %%
x = tensor([-100.0, 0.0, 40.0, 100.0])
y = tensor([1.0, 1.0, 0.0, 0.0])
with np.errstate(all="ignore"):
    s = x.sigmoid()
    print("naive BCE:     ", (-(y * s.log() + (1 - y) * (1 - s).log())).tolist())
    print("log(1 + e^x):  ", (1 + x.exp()).log().tolist())

# %% [markdown]
# *The stable form.* Write softplus(u) = log(1 + eᵘ). Then log σ(x) = −softplus(−x)
# and log(1 − σ(x)) = −x − softplus(−x), so
#
# ℓ = (1 − y) · x + softplus(−x).
#
# softplus itself is stable when split by sign: for u > 0, log(1 + eᵘ) =
# u + log(1 + e⁻ᵘ), so in general
#
# softplus(u) = max(u, 0) + log1p(e^−|u|),
#
# where the exponent is never positive. `log1p` keeps the digits that
# `log(1 + tiny)` would round away.
#
# `pos_weight` p (one per class, broadcast over the last dim) scales the
# positive term, trading recall for precision on imbalanced data:
# ℓ = −[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] = (1 − y)·x + (1 + (p − 1)·y)·softplus(−x).
#
# *The gradient.* d softplus(−x)/dx = −σ(−x) = σ(x) − 1, so
# ∂ℓ/∂x = (1 − y) + (1 + (p − 1)y)(σ(x) − 1), which is σ(x) − y when p = 1:
# again "prediction minus target". For the target, ∂ℓ/∂y = −x + (p − 1)·softplus(−x).
#
# ### Exercise: `_bce_with_logits_elements(x, y, pos_weight, xp)`
# Return the per-element loss above, for arrays x, y of one shape; `pos_weight`
# is None or an array broadcasting to x. Use the stable softplus.

# %% nbgrader={"grade": false, "grade_id": "bce-with-logits", "locked": false, "schema_version": 3, "solution": true}
#| export
def _softplus(u, xp):
    """log(1 + e^u) without overflow: max(u, 0) + log1p(e^-|u|)."""
    return xp.maximum(u, 0) + xp.log1p(xp.exp(-xp.abs(u)))


def _bce_with_logits_elements(x, y, pos_weight, xp):
    """-[pw·y·log σ(x) + (1-y)·log(1-σ(x))] = (1-y)·x + (1 + (pw-1)·y)·softplus(-x), elementwise."""
    ### BEGIN SOLUTION
    positive = 1 if pos_weight is None else 1 + (pos_weight - 1) * y
    return (1 - y) * x + positive * _softplus(-x, xp)
    ### END SOLUTION


# %%
#| export
def _elementwise_weight(weight, input, what, name):
    """An optional tensor that broadcasts to input's shape (and does not enlarge it), as an array."""
    if weight is None:
        return None
    _check_tensor(weight, what, name)
    _check_same_device(input, weight, what, name)
    try:
        shape = np.broadcast_shapes(tuple(weight.shape), tuple(input.shape))
    except ValueError:
        shape = None
    if shape != tuple(input.shape):
        raise ValueError(f"{name}: {what} of shape {tuple(weight.shape)} does not broadcast to the "
                         f"input's shape {tuple(input.shape)}")
    return weight.data.astype(input.dtype, copy=False)


def _reduce_elements(loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _element_scale(g, reduction, count):
    """dL/d(each element's loss): g ('none', 'sum') or g / count ('mean')."""
    return g / count if reduction == "mean" else g


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction="mean"):
    """Binary cross-entropy of logits against targets in [0, 1], stable for any logit.

    weight broadcasts to input's shape and scales each element's loss; pos_weight
    (e.g. one per class, shape (C,)) scales the positive term. Input and target
    get gradients.
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(reduction, name)
    _check_pair(input, target, name)
    xp = get_xp(input._device)
    w = _elementwise_weight(weight, input, "weight", name)
    pw = _elementwise_weight(pos_weight, input, "pos_weight", name)
    x, y = input.data, target.data.astype(input.dtype, copy=False)
    loss = _bce_with_logits_elements(x, y, pw, xp)
    if w is not None:
        loss = loss * w

    def binary_cross_entropy_with_logits_backward(g):
        a = _element_scale(g, reduction, x.size)
        if w is not None:
            a = a * w
        grad_x = grad_y = None
        if input.requires_grad:
            sigmoid = 0.5 * xp.tanh(0.5 * x) + 0.5
            grad_x = a * (sigmoid - y if pw is None else (1 - y) + (1 + (pw - 1) * y) * (sigmoid - 1))
        if target.requires_grad:
            grad_y = a * (-x if pw is None else (pw - 1) * _softplus(-x, xp) - x)
            grad_y = grad_y.astype(target.dtype, copy=False)
        return grad_x, grad_y
    return _wrap(_reduce_elements(loss, reduction), input._device, (input, target),
                 binary_cross_entropy_with_logits_backward)


# %% nbgrader={"grade": true, "grade_id": "test-bce-with-logits", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_bce_with_logits():
    x = tensor([-100.0, 0.0, 40.0, 100.0], requires_grad=True)
    y = tensor([1.0, 1.0, 0.0, 0.0])
    loss = binary_cross_entropy_with_logits(x, y, reduction="none")
    assert np.isfinite(loss.data).all(), f"the stable form must stay finite, got {loss.tolist()}"
    assert np.allclose(loss.data, [100.0, np.log(2), 40.0, 100.0]), \
        f"expected [100, log 2, 40, 100], got {loss.tolist()}"
    assert loss.dtype == np.float32, f"float32 in, float32 out; got {loss.dtype}"
    binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    assert np.allclose(x.grad.data, [-1.0, -0.5, 1.0, 1.0]), f"dℓ/dx = σ(x) - y, got {x.grad.tolist()}"
    pw = binary_cross_entropy_with_logits(tensor([0.0]), tensor([1.0]), pos_weight=tensor([3.0]))
    assert np.isclose(pw.item(), 3 * np.log(2)), f"pos_weight=3 triples the positive term, got {pw.item()}"
    ### BEGIN HIDDEN TESTS
    r = np.random.default_rng(3)
    a, b = r.standard_normal(6), r.uniform(0, 1, 6)
    ref = -(b * np.log(1 / (1 + np.exp(-a))) + (1 - b) * np.log(1 - 1 / (1 + np.exp(-a))))
    assert np.allclose(_bce_with_logits_elements(a, b, None, np), ref), "matches the textbook form"
    ### END HIDDEN TESTS


test_bce_with_logits()
print("binary_cross_entropy_with_logits: ok")

# %% [markdown]
# When the model already outputs probabilities, `binary_cross_entropy` takes them
# directly. As PyTorch does, it clamps each log at −100 so that a probability of
# exactly 0 or 1 gives a large finite loss rather than `inf`, and its gradient
# (p − y)/(p(1 − p)) divides by at least 1e-12. Prefer the logits version: it
# never saturates.

# %%
#| export
def _log_clamped(a, xp):
    """max(log a, -100), as PyTorch's binary_cross_entropy (log 0 -> -100, without a warning)."""
    positive = a > 0
    return xp.where(positive, xp.maximum(xp.log(xp.where(positive, a, 1)), -100), -100).astype(a.dtype, copy=False)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities in [0, 1]; logs clamped at -100 as in PyTorch."""
    name = "binary_cross_entropy"
    _check_reduction(reduction, name)
    _check_pair(input, target, name)
    xp = get_xp(input._device)
    w = _elementwise_weight(weight, input, "weight", name)
    p, y = input.data, target.data.astype(input.dtype, copy=False)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"{name}: input must hold probabilities in [0, 1], found values from "
                         f"{float(p.min()):g} to {float(p.max()):g}; for logits use "
                         f"binary_cross_entropy_with_logits")
    log_p, log_not_p = _log_clamped(p, xp), _log_clamped(1 - p, xp)
    loss = -(y * log_p + (1 - y) * log_not_p)
    if w is not None:
        loss = loss * w

    def binary_cross_entropy_backward(g):
        a = _element_scale(g, reduction, p.size)
        if w is not None:
            a = a * w
        grad_p = a * (p - y) / xp.maximum((1 - p) * p, 1e-12) if input.requires_grad else None
        grad_y = (a * (log_not_p - log_p)).astype(target.dtype, copy=False) if target.requires_grad else None
        return grad_p, grad_y
    return _wrap(_reduce_elements(loss, reduction), input._device, (input, target),
                 binary_cross_entropy_backward)


# %% [markdown]
# ## 4. End to end: logistic regression
#
# A loss is only right if it trains. Two clouds of points, separable by a line;
# a weight vector w (2,) and a bias b; plain gradient descent on
# `binary_cross_entropy_with_logits`. The loss falls and every point ends on
# the correct side.

# %%
data_rng = np.random.default_rng(0)
points = np.concatenate([data_rng.normal(-2, 0.7, (50, 2)), data_rng.normal(2, 0.7, (50, 2))]).astype(np.float32)
labels = np.concatenate([np.zeros(50), np.ones(50)]).astype(np.float32)
X, Y = tensor(points), tensor(labels)
w = tt.zeros(2, requires_grad=True)
b = tt.zeros(1, requires_grad=True)
for step in range(101):
    loss = binary_cross_entropy_with_logits(X @ w + b, Y)
    w.grad = b.grad = None
    loss.backward()
    w.data -= 0.5 * w.grad.data
    b.data -= 0.5 * b.grad.data
    if step % 25 == 0:
        print(f"step {step:3d}  loss {loss.item():.4f}")
train_accuracy = ((((X @ w + b).data > 0) == (labels > 0.5)).mean())
print(f"accuracy {train_accuracy:.0%}")
assert train_accuracy == 1.0, "logistic regression on separable data should classify every point"

# %% [markdown]
# ## 5. `nn.Module` wrappers
#
# `nn.CrossEntropyLoss(label_smoothing=0.1)` is the same function with its
# options fixed at construction: handy in a model's config, and the spelling
# most PyTorch code uses. Each wrapper's `forward` calls the function above.
# As in PyTorch, `weight` and `pos_weight` are buffers: `.to(device)` moves
# them and `state_dict()` saves them.

# %%
#| export nn.losses
"""Loss modules, as in `torch.nn`: options fixed at construction, `forward(input, target)`."""
from tinytorch.nn import functional as F
from tinytorch.nn.layers import Module


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        F._check_reduction(reduction, type(self).__name__)
        self.reduction = reduction


class MSELoss(_Loss):
    """Mean squared error: `F.mse_loss`."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error: `F.l1_loss`."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities: `F.nll_loss`."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits: `F.cross_entropy`."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits: `F.binary_cross_entropy_with_logits`."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, weight=self.weight,
                                                  pos_weight=self.pos_weight, reduction=self.reduction)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities: `F.binary_cross_entropy`."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


# %%
criterion = CrossEntropyLoss(label_smoothing=0.1)
print(criterion, criterion(z, tensor([0, 1, 2])).item())

# %% [markdown]
# ## 6. Metrics: accuracy and a running mean
#
# The loss is what we optimise; people read **accuracy**, the fraction of
# correct predictions. It has no gradient (argmax is flat almost everywhere),
# so it is computed on plain arrays and returned as a Python float.
#
# `accuracy(input, target, ignore_index=None, threshold=0.0)` follows the shapes:
#
# - scores with one more dimension than the target, class dim 1, e.g. logits
#   (N, C) and targets (N,): the prediction is the argmax over dim 1;
# - integer predictions of the target's shape: compared directly;
# - float scores of the target's shape: binary, predicted 1 where score > `threshold`
#   (0 for logits; pass 0.5 for probabilities).
#
# Targets equal to `ignore_index` are left out of the count.

# %%
#| export metrics
"""Training metrics, computed on plain arrays: `accuracy`, and a running `Mean`."""
import numpy as np

from tinytorch.core.backend import to_numpy
from tinytorch.core.tensor import Tensor


def _host_array(x):
    """The numbers of a tensor, array or number, as a NumPy array (a host copy for cuda)."""
    return to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)


def _predicted(scores, target, threshold):
    """Predicted classes from logits (class dim 1), class indices, or binary scores."""
    if scores.ndim == target.ndim + 1:
        expected = scores.shape[:1] + scores.shape[2:] if target.ndim else ()
        if target.shape != expected:
            raise ValueError(f"accuracy: scores of shape {scores.shape} (class dim 1) need a target of "
                             f"shape {expected}, got {target.shape}")
        return scores.argmax(axis=1 if target.ndim else 0)
    if scores.shape != target.shape:
        raise ValueError(f"accuracy: predictions of shape {scores.shape} do not fit a target of shape "
                         f"{target.shape}; pass logits (N, C, ...) or predictions of the target's shape")
    return scores > threshold if scores.dtype.kind == "f" else scores


# %% [markdown]
# ### Exercise: `accuracy`
# Get both as NumPy arrays (`_host_array`), the predictions from `_predicted`,
# leave out the ignored targets, and return the fraction that match as a Python
# `float` (`nan` when no target is left).

# %% nbgrader={"grade": false, "grade_id": "accuracy", "locked": false, "schema_version": 3, "solution": true}
#| export metrics
def accuracy(input, target, ignore_index=None, threshold=0.0):
    """Fraction of correct predictions, a Python float (see the rules for `input` above)."""
    ### BEGIN SOLUTION
    scores, target = _host_array(input), _host_array(target)
    predicted = _predicted(scores, target, threshold)
    keep = np.ones(target.shape, dtype=np.bool_) if ignore_index is None else target != ignore_index
    if not keep.any():
        return float("nan")
    return float((predicted == target)[keep].mean())
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-accuracy", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def test_accuracy():
    logits = tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 0.0, 0.0]])
    got = accuracy(logits, tensor([0, 1, 0, 0]))
    assert isinstance(got, float), f"accuracy returns a Python float, got {type(got).__name__}"
    assert got == 0.75, f"argmax per row is [0, 1, 2, 0]: 3 of 4 correct, got {got}"
    assert accuracy(tensor([0, 1, 2]), tensor([0, 1, 1])) == 2 / 3, "class predictions compare directly"
    assert accuracy(tensor([-1.0, 2.0]), tensor([0.0, 1.0])) == 1.0, "binary logits: positive means 1"
    assert accuracy(logits, tensor([0, -100, -100, 1]), ignore_index=-100) == 0.5, \
        "ignored targets are not counted"
    ### BEGIN HIDDEN TESTS
    assert accuracy(tensor([0.2, 0.9]), tensor([0.0, 1.0]), threshold=0.5) == 1.0, "probabilities"
    ### END HIDDEN TESTS


test_accuracy()
print("accuracy: ok")

# %% [markdown]
# A training loop wants the epoch's average loss. Summing `loss` tensors would
# keep every batch's graph alive (and on a GPU, sync on each `.item()` anyway);
# `Mean` stores two Python floats. `update(loss, weight=batch_size)` makes it a
# per-example mean when the last batch is smaller.

# %%
#| export metrics
class Mean:
    """A running (weighted) mean of numbers or tensors, e.g. an epoch's loss.

    `update(value, weight=1)`: every element of `value` counts with `weight`.
    Stores Python floats only: it never holds a tensor, a graph or GPU memory.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.total = 0.0
        self.weight = 0.0

    def update(self, value, weight=1):
        if weight < 0:
            raise ValueError(f"Mean.update: weight must be >= 0, got {weight}")
        values = _host_array(value)
        self.total += float(values.sum(dtype=np.float64)) * weight
        self.weight += values.size * weight
        return self

    def compute(self):
        """The mean so far (nan before the first update)."""
        return self.total / self.weight if self.weight else float("nan")

    def __repr__(self):
        return f"Mean({self.compute():.6g}, weight={self.weight:g})"


# %%
epoch_loss = Mean()
for batch_loss, batch_size in ((cross_entropy(z, tensor([0, 1, 2])), 3), (0.25, 1)):
    epoch_loss.update(batch_loss, weight=batch_size)
print(epoch_loss, "holds no tensor:", not any(isinstance(v, Tensor) for v in vars(epoch_loss).values()))

# %% [markdown]
# ## 7. What it costs
#
# *Memory.* A GPT-2-sized vocabulary makes the logits the largest tensor of
# training. For a batch of 64 sequences of 256 tokens:

# %%
batch, seq, vocab = 64, 256, 50257
gigabytes = batch * seq * vocab * 4 / 1e9
print(f"(B*T, C) = ({batch * seq}, {vocab}) float32 logits: {gigabytes:.2f} GB; "
      f"their gradient as much again; a composed log_softmax keeps one more copy")

# %% [markdown]
# *Measured.* Fused `cross_entropy` against the composed
# `nll_loss(log_softmax(z))`, forward and backward, on a smaller batch. Peak
# memory is what NumPy allocates during the step (tracemalloc sees it), on top
# of the logits themselves.

# %%
def measure(loss_fn, rows=2048, classes=2000, repeats=3):
    gen = np.random.default_rng(0)
    logits = tensor(gen.standard_normal((rows, classes)).astype(np.float32) * 3, requires_grad=True)
    targets = tensor(gen.integers(0, classes, rows))
    best = float("inf")
    for _ in range(repeats):
        logits.grad = None
        tracemalloc.start()
        start = time.perf_counter()
        loss_fn(logits, targets).backward()
        best = min(best, time.perf_counter() - start)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return best * 1e3, peak / 1e6, logits.data.nbytes / 1e6


fused = measure(cross_entropy)
composed = measure(lambda a, t: nll_loss(a.log_softmax(dim=1), t))
print(f"(2048, 2000) logits, {fused[2]:.1f} MB each (M, C) array")
print(f"fused    cross_entropy:          {fused[0]:6.1f} ms, peak {fused[1]:6.1f} MB")
print(f"composed nll_loss(log_softmax):  {composed[0]:6.1f} ms, peak {composed[1]:6.1f} MB")

# %% [markdown]
# The fused op peaks at two (M, C) arrays: the gradient, and the copy the engine
# stores in `logits.grad` (its forward's one temporary is freed before the
# backward starts). The composed one keeps the log-probabilities in the graph
# and makes more temporaries on the way back: twice the peak, and slower by the
# extra passes over memory. At GPT scale each (M, C) array is gigabytes. The
# gradient itself cannot be avoided; frameworks that go further compute the
# loss in chunks of rows, fused with the last matmul, so that the full (M, C)
# logits never exist at once.
#
# **Next:** module 05 uses these gradients to update parameters (SGD, Adam).
