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
# # Module 08 — Attention
#
# A `Linear` layer mixes the features *of one token*. A language model must also
# move information *between tokens*: to continue "the cat sat on the", the last
# position has to look back and find "cat" and "sat". **Attention** does this
# with weights computed from the data. Every position asks a question (a
# *query*), offers a label (a *key*) and a content (a *value*); each query
# collects the values, weighted by how well its question matches each key.
#
# A GPT spends most of its time here, so we build attention as one fused
# operation with a backward derived by hand, then add what modern models put
# around it: causal and sliding-window masks, grouped-query heads, rotary
# position embeddings (RoPE) and a key/value cache for fast generation.
#
# **You will write:**
#
# 1. `causal_mask`: who may look at whom;
# 2. `attention_weights`: the stable, masked softmax of the scores;
# 3. `attention_backward`: the gradients of the whole thing, by hand;
# 4. `scaled_dot_product_attention`: the op, with grouped-query heads and dropout;
# 5. `rope_tables` and 6. `apply_rotary_emb`: rotary position embeddings, forward and backward;
# 7. `KVCache`: append keys and values, read them back;
# 8. `CausalSelfAttention.forward`: the layer a GPT stacks.
#
# **Cost to keep in mind:** over T tokens attention builds a T×T matrix of
# scores per head, so time and memory grow with T². The cache turns the work
# per generated token from O(T) token-forwards into one; grouped-query heads
# shrink the cache. Section 9 measures all of it.

# %%
#| default_exp nn.attention

# %% [markdown]
# The companion `provided.py` holds the plumbing: argument checks with clear
# errors, the cached additive form of your mask, the layout of an `attn_mask`
# for grouped heads, two fast row sums, and the layers' constructor. This cell
# imports it, with the package pieces we use (`from_op` to record an op with
# its backward, `dropout_mask` from module 03).

# %%
import math
import time

import numpy as np

import tinytorch as tt
from tinytorch import tensor
from tinytorch.autograd import gradcheck
from tinytorch.core.backend import DEFAULT_FLOAT, device as _as_device, get_xp, resolve_dtype
from tinytorch.core.tensor import Tensor, _autocast_op, from_op
from tinytorch.nn.attention import _AttentionLayer, _check_kv_append
from tinytorch.nn.functional import (_array_namespace, _fast_attention_weights, _plan_attention, _rotary_pairs,
                                     _rotary_tables, _row_sum,
                                     dropout_mask)

# %% [markdown]
# ## 1. Scaled dot-product attention
#
# Stack the queries of one head into Q (Tq × D), the keys into K (Tk × D) and
# the values into V (Tk × Dv). Then
#
# - S = Q Kᵀ · scale (Tq × Tk): how well query i matches key j;
# - P = softmax(S), row by row: each row sums to 1, how query i splits its attention;
# - O = P V (Tq × Dv): query i's weighted average of the values.
#
# *Why scale = 1/√D.* If the entries of q and k are independent with variance 1,
# q·k is a sum of D such products and has variance D. With D = 64 the scores
# would have a standard deviation of 8: the softmax would put nearly all weight
# on one key and its gradient would vanish. Dividing by √D brings the variance
# back to 1.
#
# *Worked example* (D = 1, so scale = 1): q = [1], keys [[0], [2]], values
# [[10], [20]]. Scores [0, 2], P = softmax([0, 2]) = [0.12, 0.88],
# O = 0.12·10 + 0.88·20 = 18.8.
#
# We work on (B, H, T, D) arrays: batch × heads × tokens × head size, or any
# number of leading dimensions. `matmul` treats every leading dimension as a
# batch of independent matrices, so one call computes all B·H score matrices.
#
# ## 2. Masks: who may look at whom
#
# A language model predicts token t+1 from tokens 0..t. If position t could see
# t+1 it would copy the answer and learn nothing. The **causal mask** lets
# query i attend to key j only if j ≤ i. A **sliding window** of size w also
# limits query i to its last w keys, itself included: i − w < j ≤ i (Mistral
# uses one; it bounds what a cache must keep).
#
# Masks act on the scores before the softmax, as an additive **bias**: 0 where
# allowed and −∞ where not, so that e^(−∞) = 0 gives those keys no weight. A
# user's `attn_mask` follows PyTorch: **bool** is True where attention is
# allowed, **float** is added to the scores.
#
# *Queries shorter than keys.* When generating with a cache (section 7) we run
# one new query against all Tk keys seen so far. The queries are then the *last*
# Tq positions: query i sits at position Tk − Tq + i. We align the causal mask
# to that end, the KV-cache convention. (PyTorch's `is_causal` aligns to the
# top-left corner, so the two agree only when Tq = Tk.)
#
# Example, Tq = 2 queries over Tk = 4 keys: the queries sit at positions 2 and
# 3, so the mask is [[1, 1, 1, 0], [1, 1, 1, 1]].
#
# ### Exercise 1: `causal_mask(t_q, t_k, window=None)`
#
# Return a (t_q, t_k) bool array, True where query i may attend to key j.
#
# - **Hint 1.** Compare positions, not indices: give every query its absolute
#   position and every key its own, then one comparison decides each entry.
# - **Hint 2.** Allowed when key_pos ≤ query_pos, with
#   query_pos = t_k − t_q + i; with a window, also query_pos − key_pos < window.
# - **Hint 3.** Two `xp.arange`s: the query positions as a (t_q, 1) column, the
#   key positions as a (1, t_k) row; comparing them broadcasts to (t_q, t_k).
#   Combine the window condition with `&`. No Python loops.

# %% nbgrader={"grade": false, "grade_id": "causal-mask", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def causal_mask(t_q, t_k, window=None, device="cpu"):
    """(t_q, t_k) bool array, True where query i (at position t_k - t_q + i) may attend to key j."""
    xp = get_xp(_as_device(device))
    ### BEGIN SOLUTION
    query_pos = xp.arange(t_k - t_q, t_k)[:, None]  # (t_q, 1)
    key_pos = xp.arange(t_k)[None, :]  # (1, t_k)
    allowed = key_pos <= query_pos
    if window is not None:
        allowed &= query_pos - key_pos < window
    return allowed
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-causal-mask", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_causal_mask():
    m = causal_mask(3, 3)
    assert m.shape == (3, 3) and m.dtype == bool, f"expected a (3, 3) bool array, got {m.shape} {m.dtype}"
    assert np.array_equal(m, np.tril(np.ones((3, 3), bool))), f"3 tokens: a lower-triangular mask, got\n{m}"
    assert np.array_equal(causal_mask(1, 4), [[True] * 4]), "one query after 3 cached tokens sees all 4 keys"
    m = causal_mask(2, 4)
    assert np.array_equal(m, [[1, 1, 1, 0], [1, 1, 1, 1]]), f"queries are the LAST 2 positions (2 and 3):\n{m}"
    w = causal_mask(4, 4, window=2)
    expected = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]
    assert np.array_equal(w, expected), f"window=2: each query sees itself and one key before it:\n{w}"
    assert not causal_mask(3, 2)[0].any(), "3 queries over 2 keys: query 0 sits at position -1 and sees no key"
    ### BEGIN HIDDEN TESTS
    assert causal_mask(5, 5, window=1).sum() == 5, "window=1: each query sees only itself"
    assert np.array_equal(causal_mask(1, 6, window=3), [[0, 0, 0, 1, 1, 1]]), "one query with a window"
    ### END HIDDEN TESTS


test_causal_mask()

# %% [markdown]
# The package turns your mask into its additive form once per shape and caches
# it (`_causal_bias` in `provided.py`).
#
# ## 3. A stable, masked softmax
#
# Module 01's softmax subtracts the row maximum m before exponentiating:
# e^(s − m) / Σ e^(s − m) is the same function and never overflows. Masks add
# one case. A row whose scores are *all* −∞ (a query that may see nothing, such
# as padding) has m = −∞, and s − m = −∞ − (−∞) = NaN. One NaN in a forward pass
# spreads through every later layer and every gradient. We define such a row's
# weights as all zeros, as recent PyTorch does: use m = 0 for that row (then
# every e^(−∞ − 0) is 0) and divide by 1 instead of its zero sum.
#
# The T×T score arrays are the largest in a transformer, so we compute in
# place: the scores array becomes the weights, with no extra copies. Two
# measured facts on (12, 4, 64, 64) float32 scores: NumPy's reductions over a
# short last axis pay a fixed cost per row, so module 03's provided `_row_sum`
# (a BLAS matrix-vector product) is ~4x faster than `.sum(axis=-1)`; and
# `matmul` is ~1.7x slower when its right operand is a transposed *view* than
# when it is a contiguous copy. (The row maxima cost the most of all: the
# package's own CPU path avoids them, see `provided.py`.)
#
# ### Exercise 2: `attention_weights(q, k, bias=None)`
#
# `q` (..., Tq, D) is already multiplied by the scale, `k` is (..., Tk, D),
# `bias` is None or broadcasts to (..., Tq, Tk). Return P, the softmax of
# q kᵀ + bias over the last axis, with fully masked rows all zero.
#
# - **Hint 1.** Scores, then bias, then the three softmax steps (subtract the
#   row max, exponentiate, divide by the row sum), patching the two places where
#   a fully masked row would go wrong.
# - **Hint 2.** P = e^(S − m) / Σ e^(S − m) with m the row max (0 where it is
#   −∞) and the row sum replaced by 1 where it is 0.
# - **Hint 3.** `xp.matmul` against a contiguous copy of k with its last two
#   axes swapped gives (..., Tq, Tk); `max(axis=-1, keepdims=True)` gives
#   (..., Tq, 1); then `-=`, `xp.exp(a, out=a)`, `_row_sum`, `/=` on that
#   one array. `xp.copyto(a, value, where=...)` patches the special rows in place
#   (boolean indexing, `a[mask] = value`, would make a GPU wait: it counts the
#   matches on the host first).

# %% nbgrader={"grade": false, "grade_id": "attention-weights", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def attention_weights(q, k, bias=None):
    """softmax(q kᵀ + bias) over the last axis (q pre-scaled); rows with no allowed key give zeros."""
    xp = _array_namespace(q)
    ### BEGIN SOLUTION
    scores = xp.matmul(q, xp.ascontiguousarray(k.swapaxes(-1, -2)))  # (..., Tq, Tk)
    if bias is not None:
        scores += bias
    row_max = scores.max(axis=-1, keepdims=True)  # (..., Tq, 1)
    xp.copyto(row_max, 0, where=row_max == -xp.inf)  # a fully masked row: e^(-inf - 0) = 0, not e^(nan)
    scores -= row_max
    xp.exp(scores, out=scores)
    total = _row_sum(scores)
    xp.copyto(total, 1, where=total == 0)  # ... and it stays all zeros
    scores /= total
    return scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-attention-weights", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_attention_weights():
    q, k = np.array([[1.0]], np.float32), np.array([[0.0], [2.0]], np.float32)
    p = attention_weights(q, k)
    assert p.shape == (1, 2), f"weights of 1 query over 2 keys have shape (1, 2), got {p.shape}"
    assert np.allclose(p, [[0.1192029, 0.8807971]]), f"softmax([0, 2]) = [0.119, 0.881], got {p}"
    assert p.dtype == np.float32, f"float32 in, float32 out; got {p.dtype}"
    big = attention_weights(np.array([[1000.0]], np.float32), k)
    assert np.isfinite(big).all() and np.allclose(big, [[0, 1]]), f"scores of 2000 must not overflow: {big}"
    masked = attention_weights(q, k, np.array([[0.0, -np.inf]], np.float32))
    assert np.allclose(masked, [[1, 0]]), f"a -inf bias must remove key 1 entirely: {masked}"
    none = attention_weights(np.ones((2, 1), np.float32), k, np.array([[0, 0], [-np.inf, -np.inf]], np.float32))
    assert not np.isnan(none).any() and np.allclose(none[1], 0), f"a fully masked row gives zeros, not NaN: {none}"
    assert np.isnan(attention_weights(np.array([[np.nan]], np.float32), k)).all(), "a NaN score stays NaN: patch only " \
        "the fully masked rows (row max -inf, row sum 0), or a bug upstream would hide behind zeros"
    far = attention_weights(*np.ones((2, 2, 1), np.float32), np.array([[0, 0], [-200, -199]], np.float32))[1]
    assert np.allclose(far, [0.2689, 0.7311], atol=1e-4), f"subtract each ROW's own max (over the last axis only): " \
        f"row 1 = softmax([-200, -199]) = [0.269, 0.731], got {far}"
    rng = np.random.default_rng(0)
    batch = attention_weights(rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 6, 5)))
    assert batch.shape == (2, 3, 4, 6), f"(B, H, Tq, D) with (B, H, Tk, D) gives (B, H, Tq, Tk), got {batch.shape}"
    assert batch.dtype == np.float64, f"float64 in, float64 out (compute in the inputs' dtype), got {batch.dtype}"
    assert np.allclose(batch.sum(-1), 1), "every row of the weights sums to 1"


test_attention_weights()

# %% [markdown]
# ## 4. The backward pass, by hand
#
# Autograd could differentiate matmul, softmax and matmul separately; the fused
# backward is faster, keeps less memory, and is a derivation worth doing once.
# Given dO = ∂L/∂O (Tq × Dv), reading every product as a matrix product:
#
# 1. **O = P V.** Matmul's rule from module 01: dV = Pᵀ dO and dP = dO Vᵀ.
# 2. **P = softmax(S), row by row.** For one row, ∂Pⱼ/∂Sᵢ = Pⱼ(δᵢⱼ − Pᵢ), so
#    dSᵢ = Σⱼ dPⱼ Pⱼ(δᵢⱼ − Pᵢ) = Pᵢ (dPᵢ − Σⱼ dPⱼ Pⱼ). For all rows at once:
#    **dS = P ⊙ (dP − rowsum(dP ⊙ P))**, the row sum broadcast along its row.
# 3. **S = Qₛ Kᵀ** with the scaled query Qₛ = Q · scale: dQₛ = dS K and
#    dK = dSᵀ Qₛ (the caller turns dQₛ into dQ = dQₛ · scale).
#
# The bias is added to S, so a learned float mask gets dS itself. Masked entries
# have P = 0, hence dS = 0: nothing flows through a masked connection, and a
# fully masked row sends no gradient at all. We reuse P from the forward pass
# instead of recomputing the softmax: one (Tq × Tk) array kept per head.
#
# *Dropout on the weights.* With dropout, O = (P ⊙ M) V where M holds 0
# (dropped) or 1/(1−p) (kept). Then dV = (P ⊙ M)ᵀ dO and the gradient reaching
# P is (dO Vᵀ) ⊙ M; step 2 is unchanged.
#
# *Worked check*, one query and two keys: P = [0.12, 0.88], dP = [1, 0]. Then
# rowsum(dP ⊙ P) = 0.12 and dS = [0.12·(1 − 0.12), 0.88·(0 − 0.12)] =
# [0.106, −0.106]. Each row of dS sums to 0: adding a constant to a row of
# scores does not change its softmax.
#
# ### Exercise 3: `attention_backward(d_out, q, k, v, weights, keep=None)`
#
# `q` is the scaled query Qₛ, `weights` the P of the forward, `keep` None or the
# dropout multiplier M. Return `(d_q, d_k, d_v, d_scores)`, with `d_q` = dQₛ.
#
# - **Hint 1.** Walk the forward backwards: the value matmul, then the softmax,
#   then the score matmul; dropout's M multiplies P wherever P was used.
# - **Hint 2.** dV = (P ⊙ M)ᵀ dO; dP = (dO Vᵀ) ⊙ M;
#   dS = P ⊙ (dP − rowsum(dP ⊙ P)); dQₛ = dS K; dK = dSᵀ Qₛ.
# - **Hint 3.** Transpose the trailing two axes with `.swapaxes(-1, -2)` (a
#   contiguous copy when it is a matmul's right operand); `_row_sum(a, b)`
#   gives the (..., Tq, 1) row sums of a ⊙ b. Shapes: d_scores (..., Tq, Tk),
#   d_q (..., Tq, D), d_k (..., Tk, D), d_v (..., Tk, Dv).

# %% nbgrader={"grade": false, "grade_id": "attention-backward", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def attention_backward(d_out, q, k, v, weights, keep=None):
    """Gradients of out = (weights ⊙ keep) v, weights = softmax(q kᵀ + bias): (d_q, d_k, d_v, d_scores)."""
    xp = _array_namespace(q)
    ### BEGIN SOLUTION
    attended = weights if keep is None else weights * keep
    d_v = xp.matmul(attended.swapaxes(-1, -2), d_out)  # Pᵀ dO: (..., Tk, Dv)
    d_scores = xp.matmul(d_out, xp.ascontiguousarray(v.swapaxes(-1, -2)))  # dP = dO Vᵀ: (..., Tq, Tk)
    if keep is not None:
        d_scores *= keep
    d_scores -= _row_sum(d_scores, weights)  # dS = P ⊙ (dP - rowsum(dP ⊙ P)),
    d_scores *= weights  # in place
    d_q = xp.matmul(d_scores, k)  # (..., Tq, D)
    d_k = xp.matmul(d_scores.swapaxes(-1, -2), q)  # (..., Tk, D)
    return d_q, d_k, d_v, d_scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-attention-backward", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_attention_backward():
    p, d_o = np.array([[0.12, 0.88]], np.float32), np.ones((1, 1), np.float32)
    q, k = np.array([[0.5]], np.float32), np.array([[0.0], [2.0]], np.float32)
    v = np.array([[1.0], [0.0]], np.float32)  # dP = dO vᵀ = [1, 0]
    d_q, d_k, d_v, d_s = attention_backward(d_o, q, k, v, p)
    assert d_s.shape == (1, 2) and d_v.shape == (2, 1), f"d_scores is (1, 2), d_v (2, 1); got {d_s.shape}, {d_v.shape}"
    assert np.allclose(d_s, [[0.1056, -0.1056]], atol=1e-4), f"dS = P ⊙ (dP - rowsum(dP ⊙ P)): got {d_s}"
    assert np.allclose(d_v, [[0.12], [0.88]]), f"dV = Pᵀ dO, got {d_v}"
    assert d_q.shape == (1, 1) and np.allclose(d_q, [[-0.2112]], atol=1e-4), f"dQ = dS K, got {d_q}"
    assert d_k.shape == (2, 1) and np.allclose(d_k, [[0.0528], [-0.0528]], atol=1e-4), f"dK = dSᵀ Q, got {d_k}"
    keep = np.array([[2.0, 0.0]], np.float32)  # dropout with p = 0.5 dropped key 1
    _, _, d_v, d_s = attention_backward(d_o, q, k, v, p, keep)
    assert np.allclose(d_v, [[0.24], [0.0]]), f"with dropout, dV = (P ⊙ keep)ᵀ dO, got {d_v}"
    assert np.allclose(d_s, [[0.2112, -0.2112]], atol=1e-4), f"with dropout, dP = (dO Vᵀ) ⊙ keep; dS = {d_s}"
    p2 = np.array([[0.12, 0.88], [0.5, 0.5]], np.float32)  # two queries: each row subtracts its own row sum
    d_s = attention_backward(np.ones((2, 1), np.float32), np.repeat(q, 2, 0), k, v, p2)[3]
    assert np.allclose(d_s, [[0.1056, -0.1056], [0.25, -0.25]], atol=1e-4), \
        f"2 queries: dS = [[0.1056, -0.1056], [0.25, -0.25]] (rowsum of shape (Tq, 1), one per query), got {d_s}"


test_attention_backward()

# %% [markdown]
# ## 5. The op, with grouped-query heads
#
# `scaled_dot_product_attention` has PyTorch's signature, plus `window`. The
# provided `_plan_attention` checks its arguments and returns a plan: `bias` (the
# causal mask, window and `attn_mask` as one additive array, or None), `group`
# (g below: query heads per key/value head),
# `learned_mask` (the mask Tensor if it needs a gradient, else None) and
# `mask_grad(d_scores)`, its gradient. You write the rest: scale, weights,
# dropout, output, and the backward closure recorded with `from_op`.
#
# *Grouped-query attention (GQA).* A model may give its H query heads only
# Hkv < H key/value heads, each shared by a group of g = H / Hkv query heads
# (Hkv = 1 is *multi-query* attention). Query head h uses key/value head h // g,
# PyTorch's `enable_gqa` convention. Copying K and V g times would cost g times
# the memory. Instead, notice that the g query heads of a group are just g·Tq
# queries against the *same* keys: **fold** the group into the query axis,
# (B, H, Tq, D) → (B, Hkv, g·Tq, D), and run the same matmuls. Heads h·g ..
# h·g + g − 1 are adjacent in memory, so the fold is a reshape, free. In the
# backward, dK = dSᵀ Qₛ then sums over the group's queries by itself: a shared
# head's gradient is the sum over the heads that used it. (The plan's bias is
# already in the folded layout.) With H = Hkv the fold changes nothing.
#
# *Dropout* on the weights uses `dropout_mask(shape, p, dtype, device)`, the one
# mask of the package, whenever `dropout_p > 0` (as in PyTorch: pass 0 in eval).
#
# ### Exercise 4: `scaled_dot_product_attention`
#
# - **Hint 1.** Forward: fold, weights, optional dropout, output, unfold. The
#   backward closure unfolds its gradient the same way, calls your
#   `attention_backward`, and undoes the scaling.
# - **Hint 2.** scale = 1/√D unless given. Qₛ = Q · scale, folded;
#   O = (P ⊙ M) V; dQ = dQₛ · scale. `from_op` expects one gradient per input:
#   query, key, value and `plan.learned_mask`.
# - **Hint 3.** The folded shape is key's shape without its last two axes,
#   then (g·Tq, D): it works for any number of leading axes, for H = Hkv, and
#   for an empty batch (where a −1 axis could not be inferred). O
#   comes out as (*batch, Hkv, g·Tq, Dv); reshape it to q's shape with Dv last.
#   Name the closure `scaled_dot_product_attention_backward(g)`. For the
#   weights, call your `attention_weights` or the provided
#   `_fast_attention_weights` (the same weights, cheaper on a CPU: see
#   `provided.py`).

# %% nbgrader={"grade": false, "grade_id": "scaled-dot-product-attention", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
@_autocast_op("scaled_dot_product_attention")  # mixed precision: module 10
def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, *, enable_gqa=False, window=None):
    """softmax(query keyᵀ · scale + mask) value, as one op with a hand-written backward.

    Shapes (..., H, Tq, D), (..., Hkv, Tk, D), (..., Hkv, Tk, Dv) -> (..., H, Tq, Dv). PyTorch's
    arguments, except that `is_causal` aligns query i to position Tk - Tq + i (the KV-cache
    convention; the same when Tq == Tk), and `window`: each query sees its last `window` keys.
    A query that may attend to no key outputs 0 and passes no gradient.
    """
    plan = _plan_attention(query, key, value, attn_mask, dropout_p, is_causal, window, enable_gqa)
    ### BEGIN SOLUTION
    q, k, v, dev = query.data, key.data, value.data, query._device
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q_scaled = (q * scale).reshape(k.shape[:-2] + (plan.group * q.shape[-2], q.shape[-1]))  # (*batch, Hkv, g*Tq, D)
    weights = _fast_attention_weights(q_scaled, k, plan.bias)  # your attention_weights, cheaper on a CPU
    keep = dropout_mask(weights.shape, dropout_p, weights.dtype, dev) if dropout_p > 0 else None
    out = get_xp(dev).matmul(weights if keep is None else weights * keep, v)  # (*batch, Hkv, g*Tq, Dv)

    def scaled_dot_product_attention_backward(g):
        d_out = g.reshape(out.shape)
        d_q, d_k, d_v, d_scores = attention_backward(d_out, q_scaled, k, v, weights, keep)
        d_q *= scale
        return d_q.reshape(q.shape), d_k, d_v, plan.mask_grad(d_scores)
    return from_op(out.reshape(q.shape[:-1] + v.shape[-1:]), dev, (query, key, value, plan.learned_mask),
                   scaled_dot_product_attention_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-scaled-dot-product-attention", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_scaled_dot_product_attention():
    rng = np.random.default_rng(0)
    q, k, v = (tensor(rng.standard_normal((2, 4, 5, 8))) for _ in range(3))
    out = scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 4, 5, 8), f"(B, H, Tq, D) in, (B, H, Tq, Dv) out; got {out.shape}"
    s = q.data @ k.data.swapaxes(-1, -2)

    def softmax_v(s):  # softmax(s) v in NumPy
        p = np.exp(s - s.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True) @ v.data
    assert np.allclose(out.data, softmax_v(s / np.sqrt(8))), "out = softmax(q kᵀ / √D) v"
    off = np.abs(scaled_dot_product_attention(q, k, v, scale=0.1).data - softmax_v(s * 0.1)).max()
    assert off < 1e-5, f"scale=0.1 replaces 1/√D: expected softmax(q kᵀ · 0.1) v, got an output off by up to {off:.3g}"
    off = np.abs(scaled_dot_product_attention(q, k, v, scale=0.0).data - v.data.mean(-2, keepdims=True)).max()
    assert off < 1e-5, "scale=0.0 is a scale too (only scale=None means 1/√D): all scores 0, so each query " \
        f"averages the values; got an output off from that mean by up to {off:.3g}"
    first = scaled_dot_product_attention(q, k, v, is_causal=True).data[:, :, 0]
    assert np.allclose(first, v.data[:, :, 0]), "causal: the first query sees only the first key, so it outputs v[0]"
    k2, v2 = tensor(k.data[:, :2]), tensor(v.data[:, :2])
    grouped = scaled_dot_product_attention(q, k2, v2, is_causal=True, enable_gqa=True)
    repeated = scaled_dot_product_attention(q, *(tensor(np.repeat(t.data, 2, axis=1)) for t in (k2, v2)),
                                            is_causal=True)
    assert grouped.shape == (2, 4, 5, 8), f"GQA keeps the query's heads: (2, 4, 5, 8), got {grouped.shape}"
    assert np.allclose(grouped.data, repeated.data), "GQA: query head h must use key/value head h // (H / Hkv)"
    small = [tensor(rng.standard_normal((1, 2, 3, 4)), requires_grad=True) for _ in range(3)]
    assert gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c, is_causal=True), small), "causal backward"
    assert gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b[:, :1], c[:, :1], enable_gqa=True),
                     small), "GQA backward: a shared head's gradient sums over the query heads of its group"

    def dropped(a, b, c):
        tt.manual_seed(5)  # the same dropout mask at every evaluation
        return scaled_dot_product_attention(a, b, c, dropout_p=0.5, is_causal=True)
    assert gradcheck(dropped, small, raise_exception=False), \
        "dropout backward: out = (P ⊙ keep) V, so pass the same keep mask to attention_backward"
    qk, v3 = tensor(rng.standard_normal((2, 3, 4))), tensor(rng.standard_normal((2, 3, 6)))  # no batch axis; Dv != D
    try:
        got = scaled_dot_product_attention(qk, qk, v3).data
        ok = got.shape == (2, 3, 6) and np.allclose(got, scaled_dot_product_attention(
            *(tensor(t.data[None]) for t in (qk, qk, v3))).data[0], atol=1e-6)
    except ValueError as error:
        got, ok = error, False
    assert ok, "any number of leading axes, and Dv may differ from D: q, k (H, T, D) = (2, 3, 4) and v (2, 3, 6) " \
        f"give (H, T, Dv) = (2, 3, 6), the same as with a batch axis; got {getattr(got, 'shape', repr(got))}"
    s = qk.data @ qk.data.swapaxes(-1, -2) / 2  # scale 1/√D with D = 4, the size of q and k (not Dv = 6)
    p = np.exp(s - s.max(-1, keepdims=True))
    assert np.allclose(got, p / p.sum(-1, keepdims=True) @ v3.data), "the default scale is 1/√D, D = q's last axis"
    single = scaled_dot_product_attention(*(tensor(t.data, dtype=tt.float32) for t in (q, k, v)))
    assert single.dtype == np.float32, f"float32 in, float32 out (a NumPy float64 scale promotes), got {single.dtype}"
    mask = tensor(rng.standard_normal((3, 3)), requires_grad=True)  # a learned additive mask gets dS
    assert gradcheck(lambda a, m: scaled_dot_product_attention(a, small[1], small[2], attn_mask=m), (small[0], mask)), \
        "a float attn_mask that requires grad gets the gradient of the scores: return plan.mask_grad(d_scores)"
    ### BEGIN HIDDEN TESTS
    assert gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c, is_causal=True, window=2), small)
    tt.manual_seed(0)
    assert not np.allclose(scaled_dot_product_attention(q, k, v, dropout_p=0.5).data, out.data), "dropout"
    ### END HIDDEN TESTS


test_scaled_dot_product_attention()

# %% [markdown]
# ## 6. Rotary position embeddings (RoPE)
#
# Attention by itself ignores order: shuffle the tokens and every query gets
# the same weighted average. GPT-2 adds a *learned* vector per position. The
# model must then learn separately that "3 tokens back" means the same thing at
# position 10 and at position 500, and has no vector at all past its training
# length.
#
# **RoPE** (Su et al., 2021; used by Llama, GPT-NeoX, Mistral) *rotates* q and
# k instead. Split the D features into D/2 pairs; pair i of the vector at
# position t turns by the angle t·θᵢ, with θᵢ = base^(−2i/D) and base = 10000:
# fast-turning pairs resolve nearby positions, slow ones distant positions.
# Rotations keep dot products up to the difference of their angles, so for q
# at position m and k at position n,
#
# ⟨R(mθ) q, R(nθ) k⟩ = ⟨q, R((n − m)θ) k⟩:
#
# the score depends on the positions only through the **offset** n − m. No
# parameters, and every position has a rotation.
#
# *Which features pair up?* We use the **rotate-half** layout of GPT-NeoX and
# Hugging Face's Llama: feature i pairs with feature i + D/2. With x = [x₁, x₂]
# (its two halves), tables whose two halves repeat the D/2 angles, and
# rotate_half(x) = [−x₂, x₁]:
#
# RoPE(x) = x ⊙ cos + rotate_half(x) ⊙ sin = [x₁cos − x₂sin, x₂cos + x₁sin].
#
# *Worked example*: D = 2 has one pair with θ₀ = 1, so position t turns the
# pair by t radians: (1, 0) at position 2 becomes (cos 2, sin 2) = (−0.42, 0.91).
#
# *The other layout.* The RoPE paper and Meta's original Llama code pair
# *neighbouring* features instead, (0, 1), (2, 3), …: the **interleaved**
# layout. It is the same rotation on a permuted vector, so a model trained in
# one layout needs its q/k weights permuted to run in the other; the tables then
# repeat each angle twice in a row instead of repeating the half.
# `interleaved=True` picks it.
#
# The tables are computed once per model, in float64 (an angle such as
# 4000·θ₀ needs more digits than float32 keeps before taking its cosine), then
# stored in the model's dtype: two (T, D) arrays.
#
# ### Exercise 5: `rope_tables(seq_len, head_dim, base=10000.0, dtype=None, device=None, interleaved=False)`
#
# Return Tensors `cos` and `sin` of shape (seq_len, head_dim).
#
# - **Hint 1.** One angle per (position, pair); both features of a pair share it.
# - **Hint 2.** angle[t, i] = t · base^(−2i/D) for i < D/2, and
#   angle[t, i + D/2] = angle[t, i] (interleaved: features 2i and 2i + 1 get
#   angle i).
# - **Hint 3.** The D/2 frequencies from `np.arange(0, head_dim, 2)` in float64;
#   `np.outer` of the positions with them gives (T, D/2); `np.concatenate` two
#   copies along axis 1 gives (T, D) (interleaved: `np.repeat` each column twice). Build each Tensor with
#   `Tensor(array, dtype=dtype, device=device)`.

# %% nbgrader={"grade": false, "grade_id": "rope-tables", "locked": false, "schema_version": 3, "solution": true}
#| export
def rope_tables(seq_len, head_dim, base=10000.0, dtype=None, device=None, interleaved=False):
    """cos and sin Tensors (seq_len, head_dim) for RoPE: rotate-half layout (pair i: features i, i + D/2),
    or with interleaved=True pair i: features 2i, 2i + 1."""
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of features: head_dim must be even, got {head_dim}")
    dtype = resolve_dtype(dtype) or DEFAULT_FLOAT
    ### BEGIN SOLUTION
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # θᵢ: (D/2,)
    angles = np.outer(np.arange(seq_len, dtype=np.float64), inv_freq)  # t·θᵢ: (T, D/2)
    if interleaved:
        angles = np.repeat(angles, 2, axis=1)  # (T, D): features 2i and 2i + 1 share an angle
    else:
        angles = np.concatenate([angles, angles], axis=1)  # (T, D): both halves of a pair share an angle
    return Tensor(np.cos(angles), dtype=dtype, device=device), Tensor(np.sin(angles), dtype=dtype, device=device)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-rope-tables", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_rope_tables():
    cos, sin = rope_tables(3, 4)
    assert cos.shape == sin.shape == (3, 4), f"tables of (seq_len, head_dim) = (3, 4), got {cos.shape}, {sin.shape}"
    assert cos.dtype == np.float32, f"the default dtype is float32, got {cos.dtype}"
    angles = np.array([[0, 0], [1, 0.01], [2, 0.02]])  # θ = 10000^(-0/4), 10000^(-2/4)
    assert np.allclose(cos.data, np.cos(np.hstack([angles, angles])), atol=1e-6), f"cos(t·θᵢ), both halves:\n{cos}"
    assert np.allclose(sin.data, np.sin(np.hstack([angles, angles])), atol=1e-6), f"sin(t·θᵢ), both halves:\n{sin}"
    got = rope_tables(3, 4, dtype=tt.float64)[1].dtype
    assert got == np.float64, f"rope_tables(..., dtype=tt.float64) stores the tables as float64, got {got}"
    wide = rope_tables(3, 4, base=100.0)[1].data[2]
    assert np.allclose(wide, np.sin([2, 0.2, 2, 0.2]), atol=1e-6), f"base=100: θ = 100^(-2i/4) = [1, 0.1], got {wide}"
    _, pairs = rope_tables(3, 4, interleaved=True)
    assert np.allclose(pairs.data, np.sin(np.repeat(angles, 2, axis=1)), atol=1e-6), \
        f"interleaved: each angle twice in a row, [θ₀, θ₀, θ₁, θ₁]; got\n{pairs}"
    off = np.abs(rope_tables(4096, 64)[0].data[-1, :32] - np.cos(4095 * 10000.0 ** (-np.arange(0, 64, 2) / 64))).max()
    assert off < 1e-6, f"position 4095: compute the angles t·θᵢ in float64, then cast the tables; cos is off by {off:.1e}"


test_rope_tables()

# %% [markdown]
# *Backward.* RoPE(x) = x ⊙ cos + R x ⊙ sin, with R the linear map rotate_half.
# So dx = g ⊙ cos + Rᵀ(g ⊙ sin), and Rᵀ[y₁, y₂] = [y₂, −y₁]: rotating back by
# 90°. (A composed version, built from Tensor slicing, `cat` and products, would
# work too but allocates ~6 temporaries per call; a GPT calls it twice per layer.)
#
# ### Exercise 6: `apply_rotary_emb(x, cos, sin)`
#
# `x` is a Tensor (..., T, D); `cos` and `sin` are (T, D) arrays, or arrays that
# broadcast to x such as (B, 1, T, D) when every batch row has its own
# positions (the provided `_rotary_tables` checks them). `first` and `second`
# (from the provided `_rotary_pairs`) are slices that pick the first and second
# member of every pair: the two halves, or the even and odd features when
# `interleaved`. Return RoPE(x) with its backward.
#
# - **Hint 1.** Start from x ⊙ cos for the whole vector, then add the rotated
#   half's contribution into each half, in place. The backward has the same
#   shape, with sin's sign flipped between the halves.
# - **Hint 2.** out₁ = x₁cos₁ − x₂sin₁, out₂ = x₂cos₂ + x₁sin₂;
#   dx₁ = g₁cos₁ + g₂sin₂, dx₂ = g₂cos₂ − g₁sin₁ (subscripts: the two halves).
# - **Hint 3.** The members are `a[..., first]` and `a[..., second]` (views:
#   basic slices); `-=`/`+=` into slices of the output avoids `concatenate`. Name the closure
#   `apply_rotary_emb_backward(g)`; it returns a one-tuple; record with `from_op`.

# %% nbgrader={"grade": false, "grade_id": "apply-rotary-emb", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def apply_rotary_emb(x, cos, sin, interleaved=False):
    """Rotary position embedding of x (..., T, D); cos, sin: (T, D) tables or (B, 1, T, D) per batch row.
    Rotate-half layout (pair i: features i, i + D/2), or interleaved=True (pair i: features 2i, 2i + 1)."""
    cos, sin = _rotary_tables(x, cos, sin)
    first, second = _rotary_pairs(x.shape[-1], interleaved)
    ### BEGIN SOLUTION
    data = x.data
    out = data * cos
    out[..., first] -= data[..., second] * sin[..., first]
    out[..., second] += data[..., first] * sin[..., second]

    def apply_rotary_emb_backward(g):
        d_x = g * cos
        d_x[..., first] += g[..., second] * sin[..., second]
        d_x[..., second] -= g[..., first] * sin[..., first]
        return (d_x,)
    return from_op(out, x._device, (x,), apply_rotary_emb_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-apply-rotary-emb", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_apply_rotary_emb():
    def tables(angles):  # (T, D/2) angles -> (T, D) cos and sin tables, both halves alike
        return np.cos(np.hstack([angles, angles])), np.sin(np.hstack([angles, angles]))
    cos, sin = tables(np.arange(4, dtype=np.float32)[:, None])  # D = 2: one pair turning 1 rad per position
    y = apply_rotary_emb(tensor([[1.0, 0.0]] * 4), cos, sin)  # the same vector at positions 0..3
    assert y.shape == (4, 2) and y.dtype == np.float32, f"shape and dtype are kept, got {y.shape} {y.dtype}"
    expected = [[np.cos(t), np.sin(t)] for t in range(4)]
    assert np.allclose(y.data, expected, atol=1e-6), f"position t turns (1, 0) by t radians:\n{y.data}"
    rng = np.random.default_rng(0)
    cos, sin = tables(rng.uniform(0, 6, (5, 4)))
    xs = tensor(rng.standard_normal((2, 3, 5, 8)), requires_grad=True)
    assert np.allclose((apply_rotary_emb(xs, cos, sin).data ** 2).sum(-1), (xs.data ** 2).sum(-1)), \
        "a rotation keeps each vector's length"
    assert gradcheck(lambda a: apply_rotary_emb(a, cos, sin), (xs,)), "dx = g ⊙ cos + rotate_halfᵀ(g ⊙ sin)"
    c1, s1 = np.cos(np.ones((1, 4))), np.sin(np.ones((1, 4)))
    inter = apply_rotary_emb(tensor([[1.0, 0.0, 0.0, 0.0]]), c1, s1, interleaved=True)
    assert np.allclose(inter.data, [[np.cos(1), np.sin(1), 0, 0]], atol=1e-6), \
        f"interleaved: features 0 and 1 form a pair, so (1, 0, 0, 0) turns into (cos 1, sin 1, 0, 0); got {inter.data}"
    assert gradcheck(lambda a: apply_rotary_emb(a, cos, sin, interleaved=True), (xs,)), "interleaved gradients"
    per_row = rng.uniform(0, 6, (2, 1, 5, 4))  # each batch row at positions of its own
    both = np.concatenate([per_row, per_row], axis=-1)  # (B, 1, T, D)
    rows = apply_rotary_emb(xs, np.cos(both), np.sin(both))
    assert rows.shape == xs.shape, f"(B, 1, T, D) tables broadcast over the heads, got {rows.shape}"
    second = apply_rotary_emb(tensor(xs.data[1]), *tables(per_row[1, 0]))
    assert np.allclose(rows.data[1], second.data, atol=1e-6), "batch row 1 is rotated by row 1's own tables"


test_apply_rotary_emb()

# %% [markdown]
# The promise, checked with your tables: the same q and k at positions (m, n)
# give the same score whenever the offset n − m is the same.

# %%
cos, sin = rope_tables(1000, 16)
q_all, k_all = (apply_rotary_emb(tt.randn(1, 16).expand(1000, 16), cos, sin).data for _ in range(2))
for m, n in ((5, 2), (905, 902), (45, 5)):
    print(f"query at {m:3d}, key at {n:3d} (offset {n - m:+d}): score {q_all[m] @ k_all[n]: .5f}")

# %% [markdown]
# ## 7. The KV cache
#
# A GPT generates one token at a time: to produce token t+1 it runs on tokens
# 0..t. Done naively, step t recomputes the keys and values of all t earlier
# tokens, which have not changed (in causal attention earlier tokens never
# look at later ones). Generating T tokens costs O(T²) token-forwards.
#
# A **KV cache** keeps every layer's keys and values. Each step runs the model
# on the new token only: its query attends to the cached keys plus its own, and
# its key and value are appended. One token-forward per step, plus attention
# over t keys.
#
# The price is memory, per token: 2 (K and V) × n_layer × n_kv_head × head_dim
# × bytes per number. That is why grouped-query heads exist: 4x fewer key/value
# heads, a 4x smaller cache.
#
# Appending with `concatenate` would copy the whole cache at every step, O(T²)
# bytes in total. So the cache **preallocates** (B, n_kv_head, max_len,
# head_dim) arrays and writes each new token in place; `length` counts the
# tokens stored, and is also the next token's position (RoPE needs it). The
# cache holds plain arrays: it is for inference under `tinytorch.no_grad()`,
# and the provided `_check_kv_append` refuses inputs that would need a gradient
# rather than silently dropping it.
#
# ### Exercise 7: `KVCache`
#
# In `__init__`, allocate `self.keys` and `self.values` (zeros) and start
# `length` at 0. In `update(k, v)`, with k and v of shape (B, n_kv_head, T,
# head_dim): store them at positions length .. length + T − 1, advance
# `length`, and return all keys and all values so far as Tensors.
#
# - **Hint 1.** The returned Tensors are *views* of the cache, not copies: they
#   share its memory, and cost nothing.
# - **Hint 2.** Positions are axis 2. Writing: the slice from the old length to
#   the new end; reading: the slice from 0 to the new end.
# - **Hint 3.** Allocate with `xp.zeros(shape, dtype=dtype)`, shape (B, n_kv_head,
#   max_len, head_dim). Assigning `k.data` into a slice of axis 2 (the first two
#   axes taken whole) writes in place; wrap each read-back view with
#   `from_op(array, self.device)` (no inputs: no graph).

# %% nbgrader={"grade": false, "grade_id": "kv-cache", "locked": false, "schema_version": 3, "solution": true}
#| export
class KVCache:
    """One layer's keys and values so far (inference only): `keys`, `values` (B, n_kv_head, max_len,
    head_dim), preallocated and filled in place; `length` tokens are stored."""

    def __init__(self, batch_size, n_kv_head, max_len, head_dim, dtype=None, device=None):
        self.device = _as_device(device)
        xp, dtype = get_xp(self.device), resolve_dtype(dtype) or DEFAULT_FLOAT
        ### BEGIN SOLUTION
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.keys = xp.zeros(shape, dtype=dtype)
        self.values = xp.zeros(shape, dtype=dtype)
        self.length = 0
        ### END SOLUTION

    max_len = property(lambda self: self.keys.shape[2])
    nbytes = property(lambda self: self.keys.nbytes + self.values.nbytes)

    def reset(self):
        """Forget every token (the arrays are reused)."""
        self.length = 0

    def update(self, k, v):
        """Append k, v (B, n_kv_head, T, head_dim); return all keys and values so far (views)."""
        _check_kv_append(self, k, v)
        ### BEGIN SOLUTION
        end = self.length + k.shape[2]
        self.keys[:, :, self.length:end] = k.data
        self.values[:, :, self.length:end] = v.data
        self.length = end
        return from_op(self.keys[:, :, :end], self.device), from_op(self.values[:, :, :end], self.device)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-kv-cache", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_kv_cache():
    cache = KVCache(batch_size=1, n_kv_head=2, max_len=5, head_dim=3)
    assert cache.keys.shape == (1, 2, 5, 3) and cache.length == 0, "preallocate (B, n_kv_head, max_len, head_dim)"
    assert cache.values.dtype == np.float32, f"float32 by default, got {cache.values.dtype}"
    half = KVCache(1, 2, 5, 3, dtype=tt.float16)
    assert (half.keys.dtype, half.values.dtype) == (np.float16, np.float16), \
        f"KVCache(..., dtype=tt.float16) stores keys and values as float16, got {half.keys.dtype}, {half.values.dtype}"
    keys, values = cache.update(tensor(np.ones((1, 2, 2, 3))), tensor(np.full((1, 2, 2, 3), 2.0)))
    assert cache.length == 2, f"after 2 tokens, length is 2, got {cache.length}"
    assert keys.shape == (1, 2, 2, 3), f"update returns all keys so far, (1, 2, 2, 3); got {keys.shape}"
    assert np.all(keys.data == 1) and np.all(values.data == 2), "the returned keys/values are the ones appended"
    keys, values = cache.update(tensor(np.full((1, 2, 1, 3), 3.0)), tensor(np.full((1, 2, 1, 3), 4.0)))
    assert keys.shape == (1, 2, 3, 3) and cache.length == 3, f"a third token makes 3, got {keys.shape}"
    assert np.all(keys.data[:, :, 2] == 3) and np.all(values.data[:, :, :2] == 2), "new token goes at position 2"
    assert np.shares_memory(keys.data, cache.keys), "return views of the cache, not copies"
    ### BEGIN HIDDEN TESTS
    cache.reset()
    keys, _ = cache.update(tensor(np.full((1, 2, 1, 3), 7.0)), tensor(np.zeros((1, 2, 1, 3))))
    assert keys.shape == (1, 2, 1, 3) and np.all(keys.data == 7), "reset starts over at position 0"
    ### END HIDDEN TESTS


test_kv_cache()

# %% [markdown]
# ## 8. The layer: `CausalSelfAttention`
#
# Everything together, in the layout of nanoGPT and GPT-2's weight names. The
# provided base `_AttentionLayer` builds `c_attn` (one Linear making q, k and v
# for all heads: n_embd → (H + 2·Hkv)·hd, with hd = n_embd / H, laid out
# [all q | all k | all v]), `c_proj` (n_embd → n_embd), `resid_dropout`, and, with
# `rope=True`, the buffers `rope_cos`, `rope_sin` (block_size, hd). The forward:
#
# 1. `c_attn` on x (B, T, C), then split into heads: q (B, H, T, hd), k and v
#    (B, Hkv, T, hd);
# 2. RoPE on q and k at positions start .. start + T − 1, where `start` is the
#    number of tokens already cached (0 without a cache), or at the explicit
#    `positions` (B, T) when given (Hugging Face's `position_ids`: a left-padded
#    row starts its real tokens at 0); the provided `self._rope_rows(start, T,
#    positions)` picks the table rows, and the layer's `rope_interleaved` says
#    which layout;
# 3. with a cache: append k and v, and attend over everything it returns;
# 4. attention (causal unless the class says otherwise, with the layer's
#    window, grouped heads, and dropout only in training mode), heads side by
#    side again (B, T, C), then `c_proj` and `resid_dropout`.
#
# `MultiHeadAttention` is the same layer with `is_causal = False`: every token
# sees every token, as in an encoder.
#
# ### Exercise 8: `CausalSelfAttention.forward(x, kv_cache=None, attn_mask=None)`
#
# - **Hint 1.** One projection, a reshape and a transpose give all heads at
#   once; slices along the head axis separate q, k and v.
# - **Hint 2.** (B, T, (H + 2Hkv)·hd) → (B, T, H + 2Hkv, hd) → (B, H + 2Hkv, T,
#   hd); q = heads [0, H), k = [H, H + Hkv), v = the rest. Afterwards (B, H, T,
#   hd) → (B, T, H, hd) → (B, T, C).
# - **Hint 3.** `.reshape`, `.transpose(1, 2)`, slicing `[:, a:b]`; the RoPE rows
#   come from `self._rope_rows`; `kv_cache.update(k, v)`; call
#   `scaled_dot_product_attention` with `attn_mask`, the dropout probability
#   when `self.training` (else 0), `self.is_causal`, `enable_gqa=True` and
#   `window=self.window`.

# %% nbgrader={"grade": false, "grade_id": "causal-self-attention", "locked": false, "schema_version": 3, "solution": true}
#| export
class CausalSelfAttention(_AttentionLayer):
    """Multi-head causal self-attention (GPT), with grouped-query heads, RoPE, a window and a KV cache.

    Constructor arguments: see `_AttentionLayer`. forward(x, kv_cache=None, attn_mask=None, positions=None):
    x (B, T, n_embd) holds the T tokens after the `kv_cache.length` cached ones; with RoPE, `positions`
    (B, T) gives each token's position explicitly (e.g. left-padded rows), else start .. start+T-1."""

    is_causal = True

    def forward(self, x, kv_cache=None, attn_mask=None, positions=None):
        start = 0 if kv_cache is None else kv_cache.length
        self._check_length(x, start)
        ### BEGIN SOLUTION
        B, T, C = x.shape
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        qkv = self.c_attn(x).reshape(B, T, H + 2 * Hkv, hd).transpose(1, 2)  # (B, H + 2Hkv, T, hd)
        q, k, v = qkv[:, :H], qkv[:, H:H + Hkv], qkv[:, H + Hkv:]  # (B, H, T, hd), (B, Hkv, T, hd) twice
        if self.rope:
            cos, sin = self._rope_rows(start, T, positions)  # (T, hd), or (B, 1, T, hd) per batch row
            q = apply_rotary_emb(q, cos, sin, self.rope_interleaved)
            k = apply_rotary_emb(k, cos, sin, self.rope_interleaved)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, Hkv, start + T, hd)
        y = scaled_dot_product_attention(q, k, v, attn_mask, self.dropout if self.training else 0.0,
                                         self.is_causal, enable_gqa=True, window=self.window)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))
        ### END SOLUTION


class MultiHeadAttention(CausalSelfAttention):
    """Self-attention where every token sees every token (an encoder's); `attn_mask` can hide padding."""

    is_causal = False


# %% [markdown]
# The test that matters for a cache: decoding a prompt and then one token at a
# time must give exactly what the full causal forward gives, for every kind of
# head sharing, with RoPE and with a window.

# %% nbgrader={"grade": true, "grade_id": "test-causal-self-attention", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def decode_matches_full(**config):
    tt.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=4, block_size=10, **config)
    x = tt.randn(2, 10, 16)
    with tt.no_grad():
        full = attn(x).data
        cache = attn.new_kv_cache(batch_size=2)
        steps = [attn(x[:, :3], kv_cache=cache).data]  # a 3-token prompt, then one token at a time
        steps += [attn(x[:, t:t + 1], kv_cache=cache).data for t in range(3, 10)]
    return np.abs(np.concatenate(steps, axis=1) - full).max()


def test_causal_self_attention():
    tt.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=4, block_size=8)
    x = tt.randn(2, 6, 16)
    y = attn(x)
    assert y.shape == (2, 6, 16), f"(B, T, n_embd) in and out, got {y.shape}"
    heads = attn.c_attn(x).data.reshape(2, 6, 12, 4).transpose(0, 2, 1, 3)  # (B, 3H, T, hd)
    by_hand = scaled_dot_product_attention(*(tensor(heads[:, i:i + 4]) for i in (0, 4, 8)), is_causal=True)
    expected = attn.c_proj(tensor(by_hand.data.transpose(0, 2, 1, 3).reshape(2, 6, 16))).data
    assert np.allclose(y.data, expected, atol=1e-5), "c_attn, split into [q | k | v] heads, attention, merge, c_proj"
    later = x.data.copy()
    later[:, -1] += 1
    assert np.allclose(attn(tensor(later)).data[:, :-1], y.data[:, :-1], atol=1e-6), "a token must not see later ones"
    hidden = attn(x, attn_mask=tensor(np.arange(6) < 5)).data  # hide key 5 (padding): only query 5 saw it
    assert not np.allclose(hidden[:, 5], y.data[:, 5]), "pass attn_mask on to the attention: " \
        "hiding key 5 (attn_mask False there) must change query 5's output, but it stayed the same"
    encoder = MultiHeadAttention(n_embd=16, n_head=4, block_size=8)
    encoder.load_state_dict(attn.state_dict())
    assert not np.allclose(encoder(tensor(later)).data[:, 0], encoder(x).data[:, 0]), "MultiHeadAttention sets " \
        "is_causal = False (pass self.is_causal on, not True): token 0 must see the last token, but changing it did nothing"
    drop = CausalSelfAttention(n_embd=16, n_head=4, block_size=8, dropout=0.5).eval()
    drop.load_state_dict(attn.state_dict())
    assert np.allclose(drop(x).data, y.data, atol=1e-6), \
        "in eval mode (model.eval()) attention has no dropout: pass dropout_p = 0 unless self.training"
    share = (drop.train()(x).data == 0).mean()
    assert 0.3 < share < 0.7, f"in training, resid_dropout(p=0.5) zeroes about half the outputs, got {share:.0%}"
    win, first = CausalSelfAttention(n_embd=16, n_head=4, block_size=8, window=3), x.data.copy()
    first[:, 0] += 1  # with window=3, queries 3-5 see only their last 3 tokens
    assert np.allclose(win(tensor(first)).data[:, 3:], win(x).data[:, 3:], atol=1e-6), "pass window=self.window on: " \
        "with window=3 token 0 must not change the outputs of tokens 3-5"
    rot = CausalSelfAttention(n_embd=16, n_head=4, block_size=8, rope=True, rope_interleaved=True)
    heads, (cos, sin) = rot.c_attn(x).data.reshape(2, 6, 12, 4).transpose(0, 2, 1, 3), rope_tables(6, 4, interleaved=True)
    q, k = (apply_rotary_emb(tensor(heads[:, i:i + 4]), cos.data, sin.data, True) for i in (0, 4))
    want = scaled_dot_product_attention(q, k, tensor(heads[:, 8:]), is_causal=True).data.transpose(0, 2, 1, 3)
    assert np.allclose(rot(x).data, rot.c_proj(tensor(want.reshape(2, 6, 16))).data, atol=1e-5), \
        "rope=True: rotate q and k (not v) by their positions, in the layer's layout (self.rope_interleaved)"
    for config in ({}, {"n_kv_head": 2}, {"n_kv_head": 1, "rope": True}, {"window": 3, "rope": True}):
        error = decode_matches_full(**config)
        layer = "CausalSelfAttention(n_embd=16, n_head=4, block_size=10" + "".join(f", {k}={v}" for k, v in config.items())
        assert error < 1e-5, f"{layer}): decoding with the KV cache differs from the full forward by {error:.1e}"


test_causal_self_attention()

# %% [markdown]
# ## 9. What it costs
#
# **KV-cache memory per token** is 2 · n_layer · n_kv_head · head_dim · bytes.
# For a GPT-2-small shape (12 layers, 12 heads of 64, float32), measured from
# real `KVCache` arrays against that formula:

# %%
for name, n_kv in (("MHA", 12), ("GQA", 4), ("MQA", 1)):
    per_token = KVCache(1, n_kv, 256, 64).nbytes / 256 * 12  # one layer's cache per token, times 12 layers
    print(f"{name} (n_kv_head={n_kv:2d}): {per_token / 1024:5.1f} KiB per token, "
          f"{per_token * 1024 / 2**20:5.1f} MiB for 1024 tokens (formula: {2 * 12 * n_kv * 64 * 4 / 1024:.1f} KiB)")

# %% [markdown]
# **Decode time with and without the cache.** Four attention layers (n_embd
# 128, 4 heads) generate 64 positions one at a time; without the cache every
# step recomputes the whole prefix.

# %%
layers = [CausalSelfAttention(n_embd=128, n_head=4, block_size=64) for _ in range(4)]
tokens = tt.randn(1, 64, 128)


def decode(use_cache):
    caches = [layer.new_kv_cache(batch_size=1) for layer in layers]
    with tt.no_grad():
        for t in range(64):
            h = tokens[:, t:t + 1] if use_cache else tokens[:, :t + 1]  # the new token, or the whole prefix
            for layer, cache in zip(layers, caches):
                h = layer(h, kv_cache=cache if use_cache else None)


for use_cache in (False, True):
    start = time.perf_counter()
    decode(use_cache)
    print(f"64 steps {'with' if use_cache else 'without'} the cache: {(time.perf_counter() - start) * 1e3:.0f} ms")

# %% [markdown]
# The gap grows with the length: without a cache step t does O(t) work, so T
# steps cost O(T²); with it each step processes one token (its attention still
# reads t cached keys, a much smaller O(t)).
#
# **Training: forward and backward** at the shapes of the nanoGPT
# shakespeare-char model (batch 12, 4 heads of 32, 64 tokens). P, one
# (B, H, T, T) array, is what the backward keeps: 12·4·64·64·4 bytes = 768 KiB
# per layer, growing with T². `bench/attention.py` runs the same step against
# PyTorch.

# %%
q, k, v = (tt.randn(12, 4, 64, 32, requires_grad=True) for _ in range(3))
start = time.perf_counter()
for _ in range(10):
    scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
print(f"forward + backward: {(time.perf_counter() - start) / 10 * 1e3:.2f} ms")

# %% [markdown]
# **What a window costs and saves.** A window of w keeps w of the T keys per
# query. Our dense implementation still computes all T×T scores and then masks
# them, so its time barely changes. The window pays off in the cache (only the
# last w keys are ever needed, so a rolling cache of w entries bounds memory
# however long the text) and in kernels that skip masked blocks
# (FlashAttention-style), where time falls to O(T·w). For T = 512 and w = 64,
# `causal_mask(512, 512, 64).mean()` is 12% of the scores, against 50% for the
# plain causal mask.
#
# **Next:** module 09 stacks these layers into a GPT, trains it on text and
# generates from it with the KV cache.
