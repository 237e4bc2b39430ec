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
# A network learns by following the gradient of one number, the **loss**: how
# wrong its outputs are. The backward pass starts at the loss, so two things
# matter more here than anywhere else.
#
# 1. **It must stay in the graph.** A loss computed on raw arrays and wrapped
#    in a fresh tensor has no parents: `loss.backward()` reaches no parameter
#    and the model trains nothing, silently. Every loss in this module is
#    either composed of tensor ops or one op with a hand-written backward.
# 2. **It must not overflow.** Logits of a few hundred are routine, and
#    `exp(100)` already overflows float32. Cross-entropy computed as written
#    returns `inf` or `nan`, and one `nan` poisons every weight.
#
# **You will write:** `mse_loss`; the stable forward of cross-entropy
# (log-sum-exp), its backward (softmax minus one-hot), and the assembled
# `cross_entropy` with class weights, `ignore_index`, label smoothing and the
# three reductions; `nll_loss`; a stable softplus and `binary_cross_entropy_with_logits`,
# forward and backward; `accuracy`.
#
# **Exports:** `tinytorch.nn.functional` (the losses, with PyTorch's names and
# arguments), `tinytorch.nn.losses` (`nn.Module` wrappers such as
# `CrossEntropyLoss`), `tinytorch.metrics` (`accuracy`, `Mean`).

# %%
#| default_exp nn.functional

# %% [markdown]
# The argument checks, the reshaping of logits into rows, the class-weight and
# `ignore_index` handling, the reductions, `l1_loss`,
# `binary_cross_entropy`, the `nn.Module` wrappers and `Mean` live in
# `modules/04_losses/provided.py`; this cell imports the pieces the lesson uses.

# %%
import time
import tracemalloc

import numpy as np

import tinytorch as tt
from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import Tensor, _autocast_op, from_op, tensor
from tinytorch.metrics import Mean, _host_array, _predicted
from tinytorch.nn.functional import (_check_label_smoothing, _check_pair, _check_reduction,
                                     _class_rows, _class_targets, _element_scale,
                                     _elementwise_weight, _reduce, _reduce_elements,
                                     _target_weights)
from tinytorch.nn.losses import CrossEntropyLoss

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
# Its gradient, 2(xᵢ − yᵢ)/n, is proportional to the error: a point twice as
# far off pulls twice as hard. (L1, (1/n) Σ |xᵢ − yᵢ|, provided as `l1_loss`,
# has a gradient of constant size, so outliers pull less.)
#
# *Worked example.* x = (1, 2, 4), y = (1, 0, 1): squared errors (0, 4, 9),
# mean 13/3, gradient 2·(0, 2, 3)/3 = (0, 4/3, 2).
#
# ### Exercise: `mse_loss(input, target, reduction)`
#
# The checks are done for you (`_check_pair` refuses targets of another shape:
# (N, 1) against (N,) would broadcast to an (N, N) matrix, a loss that is
# computable and wrong).
#
# - Hint 1: build the loss from tensor ops, and autograd derives the backward
#   for both `input` and `target`.
# - Hint 2: the per-element loss is the difference times itself.
# - Hint 3: two steps: the (n,) tensor of squared differences, then the
#   provided `_reduce(per_element, reduction)`.

# %% nbgrader={"grade": false, "grade_id": "mse-loss", "locked": false, "schema_version": 3, "solution": true}
#| export
@_autocast_op("mse_loss")  # mixed precision (module 10): losses run in float32
def mse_loss(input, target, reduction="mean"):
    """Mean squared error, (input - target)² reduced by `reduction`."""
    _check_reduction(reduction, "mse_loss")
    _check_pair(input, target, "mse_loss")
    ### BEGIN SOLUTION
    diff = input - target
    return _reduce(diff * diff, reduction)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-mse-loss", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def test_mse_loss():
    x = tensor([1.0, 2.0, 4.0], requires_grad=True)
    y = tensor([1.0, 0.0, 1.0])
    loss = mse_loss(x, y)
    assert isinstance(loss, Tensor) and loss.shape == (), f"'mean' returns a 0-d tensor, got {loss!r}"
    assert abs(loss.item() - 13 / 3) < 1e-6, f"mean of [0, 4, 9] is 13/3, got {loss.item()}"
    assert loss.dtype == np.float32, f"float32 in, float32 out; got {loss.dtype}"
    loss.backward()
    assert x.grad is not None, "loss.backward() must reach the input: build the loss from tensor ops"
    assert np.allclose(x.grad.data, [0, 4 / 3, 2]), f"d/dx = 2(x - y)/n = [0, 4/3, 2], got {x.grad.data}"
    assert mse_loss(x, y, reduction="sum").item() == 13, "reduction='sum' adds the squared errors"
    assert mse_loss(x, y, reduction="none").tolist() == [0, 4, 9], "reduction='none' keeps each one"
    m2 = mse_loss(tensor([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]]), tt.zeros(2, 3)).item()
    assert np.isclose(m2, 23 / 6), f"(2, 3) input: 'mean' averages all 6 squared errors, 23/6 = 3.8333; got {m2}"
    near = mse_loss(tensor([10001.0]), tensor([10000.0])).item()
    assert near == 1.0, f"x = 10001, y = 10000: (x - y)² = 1, got {near}: square the difference, not x² - 2xy + y²"
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
# them into probabilities pⱼ = e^zⱼ / Σₖ e^zₖ, and cross-entropy is the negative
# log-probability of the true class t:
#
# ℓ = −log p_t = −z_t + log Σⱼ e^zⱼ.
#
# The right-hand form never divides and never takes the log of a probability:
# it needs only **log-sum-exp**, LSE(z) = log Σⱼ e^zⱼ. Computed as written,
# e^zⱼ overflows for z > 88 in float32. But for any constant m,
#
# LSE(z) = m + log Σⱼ e^(zⱼ − m),
#
# and with m = maxⱼ zⱼ every exponent is ≤ 0: the largest term is e⁰ = 1, so
# the sum lies in [1, C] and neither overflows nor underflows to log 0.
#
# The naive form, built from tensor ops, on logits a real network produces
# early in training with a large learning rate:

# %%
logits = tensor([[1000.0, 0.0, -1000.0], [2.0, 1.0, 0.1]])
with np.errstate(all="ignore"):  # the warnings are the point: silence them, look at the values
    probs = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    naive = -probs[[0, 1], [0, 0]].log()
print("naive -log(softmax(z)[t]):", naive.tolist())  # row 0: exp(1000) = inf, inf/inf = nan

# %% [markdown]
# *Worked example.* z = (1000, 0, −1000), t = 0. m = 1000, the shifted logits
# are (0, −1000, −2000), their exponentials (1, 0, 0), log of the sum 0, and
# ℓ = (m + 0) − z_t = 0: the model is certain and right.
#
# The provided `_class_rows` turns any logits layout into rows z of shape
# (M, C), one row per target (below, section 2c). The forward works on those
# raw arrays; `xp` is NumPy on the CPU, CuPy on a GPU.
#
# ### Exercise: `_cross_entropy_rows(z, targets, target_weight, xp)`
#
# Inputs: z (M, C), `targets` (M,) class indices, `target_weight` (M,).
# Return three (M,) arrays `(losses, m, log_sum)`: m the row maxima,
# log_sum = log Σⱼ e^(zⱼ − m) (so LSE = m + log_sum), and
# losses = target_weight · (LSE − z_t).
#
# - Hint 1: shift each row by its max before exponentiating; pick each row's
#   target logit by integer indexing, without building a one-hot matrix.
# - Hint 2: LSE − z_t = log_sum − (z_t − m). Keep m and log_sum apart: in
#   float32, m = −10⁴ plus log_sum = 1.0986 rounds to a multiple of 0.001,
#   while subtracting z_t − m first keeps every digit.
# - Hint 3: steps: `m` = max over axis 1 → (M,); the shifted (M, C) array,
#   exponentiated in place with `xp.exp(..., out=...)` (the one (M, C)
#   temporary) → its sum over axis 1, then log → (M,); `z[xp.arange(M), targets]`
#   → (M,); combine. Keep z's dtype: no float64 temporaries.

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


# %% nbgrader={"grade": true, "grade_id": "test-cross-entropy-forward", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_cross_entropy_forward():
    z = np.array([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0]], np.float32)
    out = _cross_entropy_rows(z, np.array([0, 0, 0]), np.ones(3, np.float32), np)
    assert isinstance(out, tuple) and len(out) == 3, "return the tuple (losses, m, log_sum)"
    losses, m, log_sum = out
    assert all(np.shape(a) == (3,) for a in out), f"each is (M,) = (3,), got {[np.shape(a) for a in out]}"
    assert np.isfinite(losses).all(), f"logits of 1000 must not overflow: got {losses}"
    assert np.allclose(losses, [np.log(2), 0.0, 1000.0]), f"expected [log 2, 0, 1000], got {losses}"
    assert losses.dtype == np.float32, f"float32 logits give float32 losses, got {losses.dtype}"
    zz = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    tt_ = np.array([1, 0, 4, 2])
    ref = np.log(np.exp(zz).sum(1)) - zz[np.arange(4), tt_]
    losses, m, log_sum = _cross_entropy_rows(zz, tt_, np.full(4, 2.0, np.float32), np)
    assert np.allclose(losses, 2 * ref, atol=1e-5), f"losses are scaled by target_weight: {losses} vs {2 * ref}"
    assert np.allclose(m, zz.max(1)), "m is each row's max"
    assert np.allclose(m + log_sum, np.log(np.exp(zz).sum(1)), atol=1e-6), "m + log_sum is the LSE"
    neg, m, _ = _cross_entropy_rows(np.array([[-1e4, -1e4 + 1]], np.float32), np.array([0]), np.ones(1, np.float32), np)
    assert np.allclose(neg, [np.log1p(np.e)], atol=2e-5), f"all-negative logits (-1e4, -1e4 + 1), target 0: m is " \
        f"the row max -9999 (not clamped at 0), loss log(1 + e) = 1.313262; got {neg} with m = {m}: subtract " \
        "z_t - m from log_sum (adding m to log_sum first rounds away digits at 1e4)"


test_cross_entropy_forward()
print("cross-entropy forward: ok")

# %% [markdown]
# ## 2b. The gradient: softmax minus one-hot
#
# With p = softmax(z) and ℓ = LSE(z) − z_t: ∂LSE/∂zⱼ = e^zⱼ / Σₖ e^zₖ = pⱼ, and
# ∂z_t/∂zⱼ = 1 if j = t, else 0. So
#
# ∂ℓ/∂z = p − onehot(t).
#
# The whole chain softmax → log → pick collapses into one subtraction.
# *Worked example:* z = (0, 0), t = 0 gives p = (½, ½), ℓ = log 2 ≈ 0.693 and
# ∂ℓ/∂z = (−½, ½). The gradient pushes the true class up and every other class
# down, in proportion to the probability the model wrongly gives it, and its
# size is bounded by 1 however wrong the logits are: that is what makes
# training with it stable.
#
# *Why one fused op.* Composed as `nll_loss(log_softmax(z))`, the graph keeps
# the (M, C) log-probabilities until the backward pass and makes several (M, C)
# temporaries on the way back. For a GPT, C is the vocabulary (50,257 for
# GPT-2): the logits are the largest tensor of the whole model. The fused op
# keeps only m and log_sum, (M,) each, and builds p − onehot in one (M, C)
# array that *is* the gradient. Section 6 measures the difference.
#
# Each row's gradient arrives scaled: by g/N for a mean over N rows, by class
# weights and smoothing below. So the backward takes two per-row scales, one
# for p and one for the one-hot.
#
# ### Exercise: `_softmax_minus_target(z, m, log_sum, targets, p_scale, target_scale, xp)`
#
# Return the (M, C) array whose row i is p_scaleᵢ · softmax(zᵢ) − target_scaleᵢ · onehot(tᵢ).
#
# - Hint 1: reuse the forward's m and log_sum: no max, no sum again.
# - Hint 2: softmax(z) = exp((z − m) − log_sum).
# - Hint 3: one (M, C) array, changed in place: shift by `m[:, None]`, then by
#   `log_sum[:, None]`, exponentiate with `out=`, multiply by `p_scale[:, None]`,
#   then subtract `target_scale` at the positions `[xp.arange(M), targets]`.

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


# %% nbgrader={"grade": true, "grade_id": "test-cross-entropy-backward", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_cross_entropy_backward():
    z = np.array([[0.0, 0.0], [1000.0, 0.0]], np.float32)
    ones = np.ones(2, np.float32)
    m, log_sum = z.max(1), np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))
    g = _softmax_minus_target(z, m, log_sum, np.array([0, 1]), ones, ones, np)
    assert np.shape(g) == (2, 2), f"the gradient has the logits' shape (M, C) = (2, 2), got {np.shape(g)}"
    assert np.allclose(g, [[-0.5, 0.5], [1.0, -1.0]]), f"softmax - onehot: expected [[-½, ½], [1, -1]], got {g}"
    assert g.dtype == np.float32, f"the gradient stays float32, got {g.dtype}"
    g = _softmax_minus_target(np.zeros((2, 2), np.float32), np.zeros(2, np.float32),
                              np.full(2, np.log(2), np.float32), np.array([0, 1]),
                              np.array([2.0, 1.0], np.float32), np.array([1.0, 1.0], np.float32), np)
    assert np.allclose(g, [[0.0, 1.0], [0.5, -0.5]]), f"p_scale and target_scale apply separately, got {g}"
    zz = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    p = np.exp(zz) / np.exp(zz).sum(1, keepdims=True)
    g = _softmax_minus_target(zz.copy(), zz.max(1), np.log(np.exp(zz - zz.max(1, keepdims=True)).sum(1)),
                              np.array([3, 0, 1]), np.full(3, 0.5, np.float32), np.full(3, 0.5, np.float32), np)
    want = 0.5 * (p - np.eye(4)[[3, 0, 1]])
    assert np.allclose(g, want, atol=1e-6), f"random logits: expected {want}, got {g}"


test_cross_entropy_backward()
print("cross-entropy backward: ok")

# %% [markdown]
# ## 2c. The options, as in PyTorch
#
# **Class weights** w (C,) make rare classes count more: row i's loss is
# multiplied by w_tᵢ. **`ignore_index`**: a row whose target equals it (padding,
# say) contributes nothing, to the loss or to the count. **Label smoothing** ε
# trains against the target distribution (1 − ε)·onehot + ε/C instead of the
# one-hot, so the model is never pushed to infinite confidence. With all three,
# row i's loss is
#
# ℓᵢ = (1 − ε) · w_tᵢ · (LSEᵢ − zᵢ,tᵢ) + (ε/C) · Σ_c w_c · (LSEᵢ − zᵢ,c)   (0 if ignored).
#
# The second term needs no (M, C) temporary beyond one shifted copy:
# Σ_c w_c (LSEᵢ − zᵢ,c) = log_sumᵢ · Σ_c w_c − Σ_c w_c · (zᵢ,c − mᵢ).
#
# `reduction="mean"` divides Σᵢ ℓᵢ by the sum of the kept rows' weights,
# D = Σᵢ w_tᵢ (the count of kept rows without weights): a *weighted* mean.
# *Worked example:* two rows with unweighted losses (log 2, 0) and weights
# w_t = (3, 1) have weighted losses (3 log 2, 0): "sum" gives 3 log 2, "mean"
# 3 log 2 / 4.
#
# The backward of a reduction hands each row its share of the incoming
# gradient g: aᵢ = ∂L/∂ℓᵢ is g for "sum", g/D for "mean", and for "none" g is
# itself one number per target, so aᵢ = gᵢ.
#
# One batch can have no kept row at all (every target is padding): D = 0. The
# mean is then 0/0 = nan, as in PyTorch, but the gradient must stay 0, not nan:
# each row's share is multiplied by its w_tᵢ = 0 afterwards, and 0 · (g/0) =
# 0 · inf = nan would poison every weight of the model. So the backward's
# division must give a finite aᵢ when D = 0 (any finite value: it is multiplied
# by 0). On a GPU, D is a number on the device: `if D == 0` would wait for it,
# so write the guard as arithmetic.
#
# ### Exercise: `_reduce_rows` and its derivative `_row_scale`
#
# - Hint 1: one branch per reduction, in both functions.
# - Hint 2: forward: losses in the target's shape, Σᵢ ℓᵢ, or Σᵢ ℓᵢ / D;
#   backward: gᵢ, g or g / D, with a divisor that cannot be 0 and no `if` on
#   D (see the note above on the GPU).
# - Hint 3: `_reduce_rows` gets (M,) losses and returns `.reshape(shape)`, a sum,
#   or a sum divided; `_row_scale` gets g of the target's shape ("none", flatten
#   it to (M,)) or 0-d, and returns an (M,) array or a 0-d one.

# %% nbgrader={"grade": false, "grade_id": "reductions", "locked": false, "schema_version": 3, "solution": true}
#| export
def _reduce_rows(losses, reduction, denominator, shape):
    """Per-target losses (M,) -> the target's shape ('none'), their sum, or sum / denominator."""
    ### BEGIN SOLUTION
    if reduction == "none":
        return losses.reshape(shape)
    total = losses.sum()
    return total if reduction == "sum" else total / denominator
    ### END SOLUTION


def _row_scale(g, reduction, denominator):
    """dL/d(each target's loss): g per target ('none', flattened), g ('sum'), g / denominator ('mean')."""
    ### BEGIN SOLUTION
    if reduction == "none":
        return g.reshape(-1)
    return g / (denominator + (denominator == 0)) if reduction == "mean" else g  # D = 0: g / 1, times w_t = 0
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-reductions", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def test_reductions():
    losses = np.array([3 * np.log(2), 0.0], np.float32)
    kept = _reduce_rows(losses, "none", 4.0, (2,))
    assert np.shape(kept) == (2,), f"'none' keeps the target's shape (2,), got {np.shape(kept)}"
    assert np.isclose(_reduce_rows(losses, "sum", 4.0, (2,)), 3 * np.log(2)), "'sum' adds the rows"
    assert np.isclose(_reduce_rows(losses, "mean", 4.0, (2,)), 3 * np.log(2) / 4), "'mean' divides by D"
    assert _reduce_rows(np.zeros(4, np.float32), "none", 4.0, (2, 2)).shape == (2, 2), "'none': (M,) -> shape"
    g = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    assert np.shape(_row_scale(g, "none", 4.0)) == (4,), "'none': one g per target, flattened to (M,)"
    assert np.isclose(_row_scale(np.float32(2.0), "mean", 4.0), 0.5), "'mean': g / D"
    assert np.isclose(_row_scale(np.float32(2.0), "sum", 4.0), 2.0), "'sum': g itself"
    s = _row_scale(np.float32(1.0), "mean", np.float32(0.25))
    assert np.isclose(s, 4.0), f"'mean' with D = 0.25 (class weights below 1): g / D = 4, got {s}"
    with np.errstate(all="ignore"):
        share = _row_scale(np.float32(2.0), "mean", np.float32(0.0))
        empty = _reduce_rows(np.zeros(2, np.float32), "mean", np.float32(0.0), (2,))
    assert np.isnan(empty), f"'mean' with D = 0 (every target ignored) is 0/0 = nan, as in PyTorch; got {empty}: " \
                            "only the backward's share guards D = 0"
    assert np.isfinite(share), "'mean' with D = 0 (every target ignored): the share must stay finite, or 0 · inf = nan " \
                               "reaches every weight"


test_reductions()
print("reductions: ok")

# %% [markdown]
# Differentiating ℓᵢ as in 2b:
#
# ∂L/∂zᵢ = aᵢ · [((1 − ε)·w_tᵢ + (ε/C)·Σ_c w_c) · pᵢ − (1 − ε)·w_tᵢ · onehot(tᵢ) − (ε/C) · w].
#
# Without weights or smoothing this is aᵢ (pᵢ − onehot(tᵢ)) again.
# *Worked example:* z = (0, 0), t = 0, ε = 0.2, C = 2, no weights:
# ℓ = 0.8·log 2 + 0.1·(2 log 2) = log 2, and the gradient is
# 1.0·(½, ½) − 0.8·(1, 0) − 0.1·(1, 1) = (−0.4, 0.4): p minus the smoothed target (0.9, 0.1).
#
# *Layouts.* Logits are (N, C), a single (C,) with a 0-d target, or
# (N, C, d₁, ...) with targets (N, d₁, ...): the class dim is 1, as in PyTorch.
# A GPT's (B, T, C) logits are passed as `logits.view(-1, C)` with
# `targets.view(-1)`, as nanoGPT does. The provided code turns every layout
# into rows: `_class_rows` gives `rows` (M, C) and `to_input_shape` (the map of
# an (M, C) gradient back to the input's shape); `_class_targets` gives
# `targets` (M,) and the mask `keep`; `_target_weights` gives `w_t` (M,), 0 on
# ignored rows, and `w` (C,) or None.
#
# ### Exercise: assemble `cross_entropy`
#
# Finish it from the prepared rows: the per-row losses (with the smoothing
# term when ε > 0), the reduction, and the backward closure that returns a
# 1-tuple with the gradient for `input` (class weights get no gradient, as in
# PyTorch). Return the output through `from_op(out, device, inputs, backward)`.
#
# - Hint 1: your `_cross_entropy_rows` gives w_tᵢ·(LSEᵢ − zᵢ,tᵢ) for every row
#   at once (the first term, before its factor 1 − ε); smoothing adds
#   (ε/C) · Σ_c w_c (LSE − z_c) for each kept row. The backward is one call to
#   `_softmax_minus_target` with the right two scales, then the last term
#   of the gradient formula, subtracted column by column.
# - Hint 2: with aᵢ from `_row_scale`, target_scale = aᵢ·(1 − ε)·w_tᵢ and
#   p_scale = target_scale + aᵢ·(ε/C)·Σ_c w_c (with Σ_c w_c = C without
#   weights); the extra term subtracted afterwards is aᵢ·(ε/C)·w_c, or aᵢ·ε/C
#   in every column without weights. An ignored row has w_tᵢ = 0 and needs its
#   smoothing weight masked with `keep`.
# - Hint 3: forward steps: `losses, m, log_sum` from `_cross_entropy_rows(rows,
#   targets, w_t, xp)`; if ε: a per-row (M,) smoothing weight `keep · ε/C`, the
#   (M,) sum over classes (via one shifted (M, C) array, `.sum(axis=1)` or
#   `@ w`), and losses mixed as (1 − ε)·losses + smoothing; then the ignored
#   rows' losses masked to 0 as `nll_loss` masks them (an ignored row may hold
#   inf or nan logits, and 0·nan is nan); D = `w_t.sum()`.
#   Backward `(g) -> (grad,)`: a, the two scales, the (M, C) gradient, the
#   smoothing column term, `to_input_shape`. Output: `_reduce_rows(...)`.

# %% nbgrader={"grade": false, "grade_id": "cross-entropy", "locked": false, "schema_version": 3, "solution": true}
#| export
@_autocast_op("cross_entropy")  # mixed precision (module 10): losses run in float32
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
    _check_label_smoothing(label_smoothing, name)
    rows, to_input_shape = _class_rows(input, target, name)                # (M, C)
    xp = get_xp(input._device)
    C = rows.shape[1]
    targets, keep = _class_targets(target, C, ignore_index, name)          # (M,), (M,)
    w_t, w = _target_weights(weight, targets, keep, rows, name)            # (M,), (C,) or None
    eps = label_smoothing
    ### BEGIN SOLUTION
    losses, m, log_sum = _cross_entropy_rows(rows, targets, w_t, xp)       # (M,) each
    w_sum = C if w is None else w.sum()
    if eps:
        smooth = keep.astype(rows.dtype) * (eps / C)                       # (M,)
        shifted = rows - m[:, None]                                        # (M, C), freed at once
        every_class = log_sum * w_sum - (shifted.sum(axis=1) if w is None else shifted @ w)
        del shifted
        losses = (1 - eps) * losses + smooth * every_class
    losses = xp.where(keep, losses, 0)  # not w_t · ...: an ignored row may hold inf or nan, and 0 · nan = nan
    denominator = w_t.sum()

    def cross_entropy_backward(g):
        a = _row_scale(g, reduction, denominator)                          # (M,) or ()
        target_scale = a * (1 - eps) * w_t                                 # (M,)
        if not eps:
            grad = _softmax_minus_target(rows, m, log_sum, targets, target_scale, target_scale, xp)
            return (to_input_shape(grad),)
        a_smooth = a * smooth                                              # (M,)
        grad = _softmax_minus_target(rows, m, log_sum, targets, target_scale + a_smooth * w_sum,
                                     target_scale, xp)
        grad -= a_smooth[:, None] if w is None else a_smooth[:, None] * w
        return (to_input_shape(grad),)
    out = _reduce_rows(losses, reduction, denominator, target.shape)
    return from_op(out, input._device, (input,), cross_entropy_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-cross-entropy", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_cross_entropy():
    z = tensor([[0.0, 0.0], [1000.0, 0.0], [0.0, 1000.0]])
    t = tensor([0, 0, 0])
    losses = cross_entropy(z, t, reduction="none")
    assert isinstance(losses, Tensor) and losses.shape == (3,), f"'none' keeps one loss per row, got {losses!r}"
    assert np.allclose(losses.data, [np.log(2), 0.0, 1000.0]), f"expected [log 2, 0, 1000], got {losses.tolist()}"
    mean = cross_entropy(z, t)
    assert mean.shape == () and np.isclose(mean.item(), (np.log(2) + 1000) / 3), "'mean' averages the rows"
    x = tensor([[0.0, 0.0], [1000.0, 0.0]], requires_grad=True)
    cross_entropy(x, tensor([0, 1]), reduction="sum").backward()
    assert x.grad is not None and x.grad.shape == (2, 2), "loss.backward() must fill logits.grad, shape (2, 2)"
    assert np.allclose(x.grad.data, [[-0.5, 0.5], [1.0, -1.0]]), f"softmax - onehot, got {x.grad.tolist()}"
    ignored = cross_entropy(z, tensor([0, -100, -100]))
    assert np.isclose(ignored.item(), np.log(2)), f"ignored rows add nothing and are not counted, got {ignored.item()}"
    x = tensor([[0.0, 0.0], [5.0, 0.0]], requires_grad=True)
    smoothed = cross_entropy(x, tensor([0, -100]), label_smoothing=0.2)
    assert np.isclose(smoothed.item(), np.log(2)), f"smoothing 0.2 on z = (0, 0): log 2, got {smoothed.item()}"
    assert smoothed.dtype == np.float32, f"label smoothing keeps float32 logits float32, got {smoothed.dtype}"
    smoothed.backward()
    assert np.allclose(x.grad.data, [[-0.4, 0.4], [0.0, 0.0]]), \
        f"p - smoothed target = (-0.4, 0.4), and no gradient (smoothing included) for the ignored row; got {x.grad.tolist()}"
    weighted = cross_entropy(tensor([[0.0, 0.0], [0.0, 1000.0]]), tensor([0, 1]), weight=tensor([3.0, 1.0]))
    assert np.isclose(weighted.item(), 3 * np.log(2) / 4), f"weighted mean: (3 log 2 + 0) / 4, got {weighted.item()}"
    both = cross_entropy(tensor([[0.0, 0.0]]), tensor([0]), weight=tensor([3.0, 1.0]), label_smoothing=0.2, reduction="sum")
    assert np.isclose(both.item(), 2.8 * np.log(2)), f"weight (3, 1) with smoothing 0.2 on z = (0, 0): 0.8·3·log 2 + " \
        f"0.1·(3 + 1)·log 2 = 2.8 log 2 = 1.9408 (smoothing weighs class c by w_c, kept rows by 1); got {both.item():.4f}"
    with np.errstate(all="ignore"):
        masked = cross_entropy(tensor([[0.0, 0.0], [-np.inf, 0.0]]), tensor([0, -100])).item()
        nothing = cross_entropy(tensor([[0.0, 1.0]]), tensor([-100])).item()
    assert np.isclose(masked, np.log(2)), f"an ignored row holding -inf must add nothing (0 · inf is nan): log 2, got {masked}"
    assert np.isnan(nothing), f"every target ignored: the mean is 0/0 = nan, as in PyTorch (only the gradient is guarded); got {nothing}"
    r = tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    for kw in ({}, {"weight": tensor([1.0, 2.0, 0.5, 1.0])}, {"weight": tensor([1.0, 2.0, 0.5, 1.0]), "label_smoothing": 0.1},
               {"reduction": "none"}):
        assert tt.autograd.gradcheck(lambda a: cross_entropy(a, tensor([3, 0, 1]), **kw), (r,),
                                     raise_exception=False), \
            f"cross_entropy(..., {kw}): analytic and numeric gradients differ"
    ### BEGIN HIDDEN TESTS
    img = tensor(np.random.default_rng(2).standard_normal((2, 3, 2, 2)), requires_grad=True)
    assert tt.autograd.gradcheck(lambda a: cross_entropy(a, tensor(np.zeros((2, 2, 2), np.int64))), (img,),
                                 raise_exception=False), \
        "(N, C, H, W) layout"
    ### END HIDDEN TESTS


test_cross_entropy()
print("cross_entropy: ok")

# %% [markdown]
# ## 2d. The composed form: `nll_loss`
#
# `nll_loss` takes log-probabilities (from `log_softmax`) instead of logits and
# has the same options except smoothing: `cross_entropy(z, t)` equals
# `nll_loss(log_softmax(z, 1), t)`. Its loss is a pick, ℓᵢ = −w_tᵢ · logpᵢ,tᵢ,
# and the derivative of a pick is a scatter: ∂L/∂logpᵢ is zero except at the
# picked entry, where it is −aᵢ · w_tᵢ.
#
# ### Exercise: the body of `nll_loss`
#
# - Hint 1: the same rows, targets and weights as `cross_entropy`; only the
#   per-row loss and the backward change.
# - Hint 2: ℓᵢ = −w_tᵢ · rows[i, tᵢ]; the gradient row i is −aᵢ·w_tᵢ at column tᵢ.
# - Hint 3: pick with `[xp.arange(M), targets]`, masked by `keep` with
#   `xp.where` (an ignored row may hold −inf, and 0·(−inf) is nan); the
#   denominator `w_t.sum()`; backward: an `xp.zeros` (M, C) array, the scatter,
#   `to_input_shape`; the output via `_reduce_rows` and `from_op`.

# %% nbgrader={"grade": false, "grade_id": "nll-loss", "locked": false, "schema_version": 3, "solution": true}
#| export
@_autocast_op("nll_loss")  # mixed precision (module 10): losses run in float32
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, given log-probabilities (class dim 1)."""
    name = "nll_loss"
    _check_reduction(reduction, name)
    rows, to_input_shape = _class_rows(input, target, name)                # (M, C)
    xp = get_xp(input._device)
    targets, keep = _class_targets(target, rows.shape[1], ignore_index, name)
    w_t, _ = _target_weights(weight, targets, keep, rows, name)            # (M,)
    ### BEGIN SOLUTION
    every_row = xp.arange(rows.shape[0])
    picked = xp.where(keep, rows[every_row, targets], 0)                   # (M,)
    losses = -w_t * picked
    denominator = w_t.sum()

    def nll_loss_backward(g):
        grad_rows = xp.zeros(rows.shape, dtype=rows.dtype)                 # (M, C)
        grad_rows[every_row, targets] = -_row_scale(g, reduction, denominator) * w_t
        return (to_input_shape(grad_rows),)
    out = _reduce_rows(losses, reduction, denominator, target.shape)
    return from_op(out, input._device, (input,), nll_loss_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-nll-loss", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_nll_loss():
    z = tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [1.0, 1.0, 1.0]], requires_grad=True)
    t = tensor([0, 1, -100])
    loss = nll_loss(z.log_softmax(dim=1), t)
    assert isinstance(loss, Tensor) and loss.shape == (), f"'mean' returns a 0-d tensor, got {loss!r}"
    assert np.isclose(loss.item(), cross_entropy(z, t).item(), atol=1e-6), \
        f"nll_loss(log_softmax(z)) must equal cross_entropy(z): {loss.item()} vs {cross_entropy(z, t).item()}"
    logp = tensor([[-1.0, -2.0], [-3.0, -4.0]], requires_grad=True)
    nll_loss(logp, tensor([1, 0]), weight=tensor([1.0, 2.0]), reduction="sum").backward()
    assert logp.grad is not None and logp.grad.shape == (2, 2), "backward fills the log-probabilities' grad"
    assert np.allclose(logp.grad.data, [[0.0, -2.0], [-1.0, 0.0]]), \
        f"the scatter: -w[t] at each picked entry, 0 elsewhere; got {logp.grad.tolist()}"
    wmean = nll_loss(logp, tensor([1, 0]), weight=tensor([1.0, 2.0])).item()
    assert np.isclose(wmean, 7 / 3), f"weighted mean: (2·2 + 1·3) / (2 + 1) = 7/3 (divide by the weights' sum), got {wmean}"
    with np.errstate(invalid="ignore", divide="ignore"):  # every target ignored: the mean is 0/0 = nan, as in PyTorch
        assert nll_loss(tensor([[-np.inf, -1.0]]), tensor([-100])).shape == (), "an ignored -inf stays out"
        mixed = nll_loss(tensor([[-0.1, -2.3], [-np.inf, 0.0]]), tensor([0, -100])).item()
    assert np.isclose(mixed, 0.1), f"the ignored row's -inf must stay out (0 · -inf is nan): expected 0.1, got {mixed}"


test_nll_loss()
print("nll_loss: ok")

# %% [markdown]
# ## 3. Two classes: binary cross-entropy on logits
#
# For a yes/no output one logit x per example is enough: the probability of
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
# softplus is stable once split by sign: for u > 0, log(1 + eᵘ) = u + log(1 + e⁻ᵘ),
# so in general softplus(u) = max(u, 0) + log(1 + e^−|u|), where the exponent is
# never positive. `log1p(a)` computes log(1 + a) without rounding away a tiny a.
#
# ### Exercise: `_softplus(u, xp)`
#
# - Hint 1: never exponentiate a positive number.
# - Hint 2: max(u, 0) + log1p(e^−|u|).
# - Hint 3: one expression from `xp.maximum`, `xp.log1p`, `xp.exp`, `xp.abs`.

# %% nbgrader={"grade": false, "grade_id": "softplus", "locked": false, "schema_version": 3, "solution": true}
#| export
def _softplus(u, xp):
    """log(1 + e^u) without overflow, elementwise."""
    ### BEGIN SOLUTION
    return xp.maximum(u, 0) + xp.log1p(xp.exp(-xp.abs(u)))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-softplus", "locked": true, "points": 1, "schema_version": 3, "solution": false}
def test_softplus():
    u = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0], np.float32)
    with np.errstate(over="raise"):
        got = _softplus(u, np)
    assert np.shape(got) == (5,), f"elementwise: shape (5,), got {np.shape(got)}"
    want = [0.0, np.log1p(np.exp(-1.0)), np.log(2), 1 + np.log1p(np.exp(-1.0)), 1000.0]
    assert np.allclose(got, want), f"softplus of {u}: expected {want}, got {got}"
    assert got.dtype == np.float32, f"keep float32, got {got.dtype}"
    tiny = _softplus(np.float32(-40.0), np)
    assert np.isclose(tiny, np.exp(-40.0), rtol=1e-4, atol=0), \
        f"softplus(-40) = log(1 + e^-40) ≈ e^-40 = 4.25e-18, got {tiny}: 1 + e^-40 rounds to 1, so use log1p"
    near = _softplus(np.float32(10.5), np)
    assert abs(near - 10.5000277) < 3e-6, \
        f"softplus(10.5) = 10.5 + log1p(e^-10.5) = 10.5000277, got {near}: no cut-off, the formula is exact for every u"


test_softplus()
print("softplus: ok")

# %% [markdown]
# *The options and the gradient.* `pos_weight` p (for instance one per class,
# broadcast over the last dim) scales the positive term, trading precision for
# recall on imbalanced data:
#
# ℓ = −[p·y·log σ(x) + (1 − y)·log(1 − σ(x))] = (1 − y)·x + (1 + (p − 1)·y)·softplus(−x).
#
# `weight` (broadcasting to x) multiplies each element's loss. Since
# d softplus(−x)/dx = −σ(−x) = σ(x) − 1,
#
# ∂ℓ/∂x = (1 − y) + (1 + (p − 1)y)(σ(x) − 1),   which is σ(x) − y when p = 1:
#
# again "prediction minus target". For the target, ∂ℓ/∂y = −x + (p − 1)·softplus(−x).
# The provided `_reduce_elements(loss, reduction, w)` multiplies the losses by
# their weights and reduces them; its derivative, each element's
# a = ∂L/∂ℓ (g, or g/n for the mean, times w), is `_element_scale(g, reduction, n, w)`.
# σ(x) itself is computed stably as ½·tanh(x/2) + ½.
#
# *Worked example.* x = 0, y = 1, p = 3: ℓ = 0 + 3·log 2; ∂ℓ/∂x = 0 + 3·(½ − 1) = −1.5.
#
# ### Exercise: the body of `binary_cross_entropy_with_logits`
#
# The checks are done: `x` and `y` are arrays of one shape, `w` and `pw` are
# None or arrays that broadcast to x.
#
# - Hint 1: the forward is the stable ℓ with your `_softplus`; the
#   backward returns the pair (∂L/∂input, ∂L/∂target), None for an input that
#   does not require grad.
# - Hint 2: the formulas above, with p = 1 when `pw` is None.
# - Hint 3: `loss` (same shape as x, unweighted); `backward(g)`: a from
#   `_element_scale`, σ, `grad_x`, `grad_y` cast to the target's dtype; return
#   `from_op` of the reduced loss, the device, `(input, target)` and the backward.

# %% nbgrader={"grade": false, "grade_id": "bce-with-logits", "locked": false, "schema_version": 3, "solution": true}
#| export
@_autocast_op("binary_cross_entropy_with_logits")  # mixed precision (module 10): losses run in float32
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
    ### BEGIN SOLUTION
    positive = 1 if pw is None else 1 + (pw - 1) * y
    loss = (1 - y) * x + positive * _softplus(-x, xp)

    def binary_cross_entropy_with_logits_backward(g):
        a = _element_scale(g, reduction, x.size, w)
        grad_x = grad_y = None
        if input.requires_grad:
            sigmoid = 0.5 * xp.tanh(0.5 * x) + 0.5
            grad_x = a * ((1 - y) + positive * (sigmoid - 1))
        if target.requires_grad:
            grad_y = a * (-x if pw is None else (pw - 1) * _softplus(-x, xp) - x)
            grad_y = grad_y.astype(target.dtype, copy=False)
        return grad_x, grad_y
    return from_op(_reduce_elements(loss, reduction, w), input._device, (input, target),
                   binary_cross_entropy_with_logits_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-bce-with-logits", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_bce_with_logits():
    x = tensor([-100.0, 0.0, 40.0, 100.0], requires_grad=True)
    y = tensor([1.0, 1.0, 0.0, 0.0])
    loss = binary_cross_entropy_with_logits(x, y, reduction="none")
    assert isinstance(loss, Tensor) and loss.shape == (4,), f"'none' keeps each element's loss, got {loss!r}"
    assert np.isfinite(loss.data).all(), f"the stable form must stay finite, got {loss.tolist()}"
    assert np.allclose(loss.data, [100.0, np.log(2), 40.0, 100.0]), \
        f"expected [100, log 2, 40, 100], got {loss.tolist()}"
    assert loss.dtype == np.float32, f"float32 in, float32 out; got {loss.dtype}"
    binary_cross_entropy_with_logits(x, y, reduction="sum").backward()
    assert x.grad is not None, "loss.backward() must reach the logits"
    assert np.allclose(x.grad.data, [-1.0, -0.5, 1.0, 1.0]), f"dℓ/dx = σ(x) - y, got {x.grad.tolist()}"
    x0 = tensor([0.0], requires_grad=True)
    pw = binary_cross_entropy_with_logits(x0, tensor([1.0]), pos_weight=tensor([3.0]))
    assert np.isclose(pw.item(), 3 * np.log(2)), f"pos_weight=3 triples the positive term, got {pw.item()}"
    pw.backward()
    assert np.allclose(x0.grad.data, [-1.5]), f"with pos_weight 3: dℓ/dx = 3(σ(0) - 1) = -1.5, got {x0.grad.tolist()}"
    r = np.random.default_rng(3)
    a = tensor(r.standard_normal((3, 2)), requires_grad=True)
    b = tensor(r.uniform(0, 1, (3, 2)), requires_grad=True)
    assert tt.autograd.gradcheck(lambda u, v: binary_cross_entropy_with_logits(
        u, v, weight=tensor([1.0, 2.0]), pos_weight=tensor([0.5, 3.0])), (a, b), raise_exception=False), \
        "gradcheck with weight and pos_weight: analytic and numeric gradients differ (input or target)"
    y1 = tensor([1.0], requires_grad=True)
    binary_cross_entropy_with_logits(tensor([-100.0]), y1, pos_weight=tensor([3.0])).backward()
    assert np.isclose(y1.grad.item(), 300.0), f"x = -100, pos_weight 3: dℓ/dy = -x + (p - 1)·softplus(-x) = 100 + 2·100 " \
        f"= 300, got {y1.grad.item()}: the target's gradient needs the stable softplus too"


test_bce_with_logits()
print("binary_cross_entropy_with_logits: ok")

# %% [markdown]
# When the model already outputs probabilities, the provided
# `binary_cross_entropy` takes them directly, clamping each log at −100 as
# PyTorch does. Prefer the logits version: it never saturates.
#
# ## 4. End to end: logistic regression
#
# A loss is only right if it trains. Two clouds of points, separable by a line,
# labels 0 and 1; a model with a weight vector w (2,) and a bias b (1,), whose
# logit for a point x is x·w + b.
#
# ### Exercise: `fit_logistic_regression(X, Y, steps, lr)`
#
# Plain gradient descent on the mean `binary_cross_entropy_with_logits`, from
# w = 0, b = 0. Return `(w, b)` (tensors) and the list of the losses seen.
#
# - Hint 1: each step: forward, forget the old gradients, backward, move.
# - Hint 2: θ ← θ − lr · ∂L/∂θ for θ in (w, b), on the raw arrays (the update
#   itself must not enter the graph).
# - Hint 3: `tt.zeros(n, requires_grad=True)` for w (D,), one entry per
#   column of X (2 here), and b (1,); the logits
#   `X @ w + b` are (N,); set `.grad = None` before `backward()`; update
#   `.data` in place; append `loss.item()`.

# %% nbgrader={"grade": false, "grade_id": "logistic-regression", "locked": false, "schema_version": 3, "solution": true}
def fit_logistic_regression(X, Y, steps=100, lr=0.5):
    """Weights (D,) and bias (1,) of a logistic regression on X (N, D), fitted by gradient descent; the losses."""
    ### BEGIN SOLUTION
    w = tt.zeros(X.shape[1], requires_grad=True)
    b = tt.zeros(1, requires_grad=True)
    losses = []
    for _ in range(steps):
        loss = binary_cross_entropy_with_logits(X @ w + b, Y)
        w.grad = b.grad = None
        loss.backward()
        w.data -= lr * w.grad.data
        b.data -= lr * b.grad.data
        losses.append(loss.item())
    return (w, b), losses
    ### END SOLUTION


# %%
data_rng = np.random.default_rng(0)
points = np.concatenate([data_rng.normal(-2, 0.7, (50, 2)), data_rng.normal(2, 0.7, (50, 2))]).astype(np.float32)
X, Y = tensor(points), tensor(np.repeat([0.0, 1.0], 50).astype(np.float32))

# %% nbgrader={"grade": true, "grade_id": "test-logistic-regression", "locked": true, "points": 1, "schema_version": 3, "solution": false}
(w, b), losses = fit_logistic_regression(X, Y, steps=100)
assert len(losses) == 100, f"one loss per step: expected 100, got {len(losses)}"
assert w.shape == (2,) and b.shape == (1,), f"w is (2,) and b (1,), got {w.shape} and {b.shape}"
assert np.isclose(losses[0], np.log(2), atol=1e-5), f"from w = b = 0 the first loss is log 2, got {losses[0]}"
# separable data converges even with stale gradients, so pin the first steps exactly
want = [0.1523, 0.1039, 0.0808]
assert np.allclose(losses[1:4], want, atol=2e-4), \
    f"losses after steps 1-3: expected {want}, got {np.round(losses[1:4], 4).tolist()}; " \
    "clear w.grad and b.grad before each backward(), which adds to the old gradients"
assert losses[-1] < 0.05, f"separable clouds: the loss should fall below 0.05, got {losses[-1]:.4f}"
assert np.isclose(b.item(), -0.0205, atol=2e-3), f"after 100 steps b is -0.0205 (as in torch), got {b.item():.4f}: " \
    "gradient descent moves b as well as w"
assert (((X @ w + b).data > 0) == (Y.data > 0.5)).all(), "every point ends on the correct side"
try:  # other data and arguments: nothing may come from the example above
    (w3, _), losses3 = fit_logistic_regression(tensor(X.data[:, [0, 1, 0]]), Y, steps=3, lr=0.1)
except Exception as err:
    raise AssertionError(f"X with 3 features failed ({err}): w has one entry per column of X, (3,) here") from None
want3 = [0.6931, 0.4496, 0.3264]
assert w3.shape == (3,) and len(losses3) == 3 and np.allclose(losses3, want3, atol=2e-4), \
    f"3 features, steps=3, lr=0.1: expected w (3,) and losses {want3}; got {w3.shape} and " \
    f"{np.round(losses3[:5], 4).tolist()}{' ...' if len(losses3) > 5 else ''}: use X's width, steps and lr as given"
print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}")

# %% [markdown]
# The `nn.Module` wrappers (provided) fix the options at construction, the
# spelling most PyTorch code uses: `CrossEntropyLoss(label_smoothing=0.1)(z, t)`
# calls your `cross_entropy`.
#
# ## 5. Metrics: accuracy
#
# The loss is what we optimise; people read **accuracy**, the fraction of
# correct predictions. It has no gradient (argmax is flat almost everywhere),
# so it runs on host arrays and returns a Python float. The provided
# `_predicted(scores, target, threshold)` reads the shapes: logits with a class
# dim 1 give their argmax; integer predictions of the target's shape are taken
# as they are; float scores of the target's shape are binary, 1 where
# score > `threshold` (0 for logits, 0.5 for probabilities).
# `_host_array(x)` gives a tensor's numbers as a NumPy array.
#
# ### Exercise: `accuracy(input, target, ignore_index=None, threshold=0.0)`
#
# - Hint 1: compare predictions with targets, leaving ignored targets out of
#   both the matches and the count.
# - Hint 2: accuracy = #(prediction = target, kept) / #kept; `nan` if nothing is kept.
# - Hint 3: both to NumPy; predictions from `_predicted`; a boolean `keep`
#   mask of the target's shape (all True without `ignore_index`); the mean of
#   the matches under the mask, as a Python `float`.

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
    assert accuracy(tensor([-1.0, 0.3]), tensor([0.0, 1.0])) == 1.0, "binary logits: positive means 1 (threshold 0 by default)"
    assert accuracy(logits, tensor([0, -100, -100, 1]), ignore_index=-100) == 0.5, \
        "ignored targets are not counted"
    assert np.isnan(accuracy(logits[:1], tensor([-100]), ignore_index=-100)), "nothing kept: nan"
    zero = accuracy(tensor([1, 1, 2]), tensor([0, 1, 1]), ignore_index=0)
    assert zero == 0.5, f"ignore_index=0 is a class to ignore like any other (0 is not None): 1 of 2 kept, got {zero}"
    ### BEGIN HIDDEN TESTS
    assert accuracy(tensor([0.2, 0.9]), tensor([0.0, 1.0]), threshold=0.5) == 1.0, "probabilities"
    ### END HIDDEN TESTS


test_accuracy()
print("accuracy: ok")
print(f"logistic regression train accuracy: {accuracy(X @ w + b, Y):.0%}")

# %% [markdown]
# For an epoch's average loss, the provided `Mean` keeps two Python floats:
# summing `loss` tensors instead would keep every batch's graph alive.
# `update(loss, weight=batch_size)` makes it a per-example mean when the last
# batch is smaller.

# %%
epoch_loss = Mean()
for batch_loss, batch_size in ((CrossEntropyLoss()(tensor([[2.0, 1.0], [0.0, 3.0]]), tensor([0, 1])), 2), (0.25, 1)):
    epoch_loss.update(batch_loss, weight=batch_size)
print(epoch_loss)

# %% [markdown]
# ## 6. What it costs
#
# *Time.* Cross-entropy is a few passes over the (M, C) logits: max, shifted
# exp, sum, and in the backward one exp and one scaled write. It is memory-bound:
# each pass reads and writes M·C floats, so its time grows with M·C and is small
# next to the matmul that produced the logits (2·M·C·d flops for hidden size d).
#
# *Memory.* A GPT-2-sized vocabulary makes the logits the largest tensor of
# training. For a batch of 64 sequences of 256 tokens, the (B·T, C) =
# (16384, 50257) float32 logits take 3.3 GB, their gradient as much again, and
# a composed `log_softmax` keeps one more copy.
#
# *Measured.* Your fused `cross_entropy` against the composed
# `nll_loss(log_softmax(z))`, forward and backward. Peak memory is what NumPy
# allocates during the step (tracemalloc sees it), on top of the logits.

# %%
def measure(loss_fn, rows=2048, classes=2000):
    gen = np.random.default_rng(0)
    logits = tensor(gen.standard_normal((rows, classes)).astype(np.float32) * 3, requires_grad=True)
    targets = tensor(gen.integers(0, classes, rows))
    loss_fn(logits, targets).backward()  # warm up: the timed run below starts from a fresh grad
    logits.grad = None
    tracemalloc.start()
    start = time.perf_counter()
    loss_fn(logits, targets).backward()
    seconds, peak = time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds * 1e3, peak / 1e6


print("(2048, 2000) logits: 16.4 MB per (M, C) array")
for label, fn in (("fused cross_entropy", cross_entropy),
                  ("nll_loss(log_softmax)", lambda a, t: nll_loss(a.log_softmax(dim=1), t))):
    ms, peak = measure(fn)
    print(f"{label:22s} {ms:6.1f} ms, peak {peak:6.1f} MB")

# %% [markdown]
# The fused op peaks at two (M, C) arrays: the gradient, and the copy the engine
# stores in `logits.grad` (the forward's one temporary is freed before the
# backward starts). The composed one keeps the log-probabilities in the graph
# and makes more temporaries on the way back: about twice the peak, and slower
# by the extra passes over memory. The gradient itself cannot be avoided;
# frameworks that go further compute the loss in chunks of rows, fused with
# the last matmul, so that the full (M, C) logits never exist at once.
#
# **Next:** module 05 uses these gradients to update parameters (SGD, Adam).
