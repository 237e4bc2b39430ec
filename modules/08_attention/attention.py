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
# A layer like `Linear` mixes the features *of one token*. A language model also
# needs to move information *between tokens*: to predict the word after "the
# cat sat on the", the last position must look back and find "cat" and "sat".
# **Attention** does this with weights that are computed from the data: every
# position asks a question (a *query*), every position offers a label (a *key*)
# and a content (a *value*), and each query collects the values, weighted by how
# well its question matches each key.
#
# This is the layer a GPT spends most of its time in, so we build it as one
# fused operation with a hand-derived backward, and then add what modern models
# put around it: causal and sliding-window masks, grouped-query attention,
# rotary position embeddings (RoPE) and a key/value cache for fast generation.
#
# **You will implement:** `causal_mask`, `attention_weights` (the stable,
# masked softmax), `attention_backward`, `apply_rotary_emb` and
# `KVCache.update`. The rest is provided and worth reading.
#
# **Cost to keep in mind:** attention over T tokens builds a T×T matrix of
# scores per head: time and memory grow with T². A KV cache turns generation
# from O(T²) work per new token into O(T); grouped-query attention shrinks that
# cache. We measure all of these at the end.

# %%
#| default_exp nn.attention

# %% [markdown]
# ## 1. Scaled dot-product attention
#
# Stack the queries of one head into Q (Tq × D), the keys into K (Tk × D) and
# the values into V (Tk × Dv). Then
#
# S = Q Kᵀ · scale  (Tq × Tk: how well query i matches key j)
# P = softmax(S), row by row  (each row sums to 1: how query i splits its attention)
# O = P V  (Tq × Dv: query i's weighted average of the values)
#
# *Why scale = 1/√D.* If the entries of q and k are independent with variance 1,
# q·k is a sum of D such products and has variance D. With D = 64 the scores
# would have a standard deviation of 8, the softmax would put nearly all weight
# on one key, and its gradient would vanish. Dividing by √D brings the variance
# back to 1.
#
# Worked example (D = 1, so scale = 1): q = [1], keys [[0], [2]], values
# [[10], [20]]. Scores [0, 2], P = softmax([0, 2]) = [0.12, 0.88],
# O = 0.12·10 + 0.88·20 = 18.8.
#
# Shapes: we work on (B, H, T, D) arrays, batch × heads × tokens × head size
# (any number of leading dimensions works). `np.matmul` treats every leading
# dimension as a batch of independent matrices, so one call computes all
# B·H score matrices.
#
# ## 2. Masks: who may look at whom
#
# A language model predicts token t+1 from tokens 0..t: if position t could see
# t+1 it would just copy the answer. The **causal mask** allows query i to
# attend to key j only if j ≤ i. A **sliding window** of size w further limits
# query i to the last w keys (itself included): i - w < j ≤ i. Masks are
# applied to the scores before the softmax, as an additive **bias**: 0 where
# allowed, -∞ where not, so that e^(-∞) = 0 gives those keys no weight.
#
# `attn_mask` follows PyTorch: a **bool** mask is True where attention is
# *allowed*; a **float** mask is added to the scores (it can hold -∞ or any
# learned bias).
#
# *Queries shorter than keys.* During generation with a KV cache (section 7) we
# run one new query against all Tk keys seen so far. The queries are then the
# *last* Tq positions: query i sits at absolute position Tk - Tq + i. Our causal
# mask is aligned to that end (the common KV-cache convention). PyTorch's
# `is_causal` aligns to the top-left corner instead, so the two agree only when
# Tq == Tk.
#
# ### Exercise: `causal_mask(t_q, t_k, window=None)`
# Return a (t_q, t_k) bool array, True where query i may attend to key j:
# key position j ≤ query position (t_k - t_q + i), and, when `window` is given,
# query position - j < window. Build it from two `xp.arange` columns/rows and
# broadcasting (no Python loops).

# %%
#| export nn.functional
import functools
import math

import numpy as np

from tinytorch.core.backend import default_generator, device as _as_device, get_xp, is_floating, to_device
from tinytorch.core.tensor import Tensor, _wrap, unbroadcast


def _array_namespace(array):
    """numpy or cupy, whichever holds `array`."""
    if isinstance(array, np.ndarray):
        return np
    import cupy
    return cupy

# %% nbgrader={"grade": false, "grade_id": "causal-mask", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def causal_mask(t_q, t_k, window=None, device="cpu"):
    """(t_q, t_k) bool array, True where query i may attend to key j.

    The queries are the last t_q of the t_k positions (query i sits at position
    t_k - t_q + i); with `window`, each query sees at most the last `window` keys,
    itself included.
    """
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
    expected = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=bool)
    assert m.shape == (3, 3) and m.dtype == bool, f"expected a (3, 3) bool array, got {m.shape} {m.dtype}"
    assert np.array_equal(m, expected), f"causal mask for 3 tokens should be lower-triangular:\n{m}"
    decode = causal_mask(1, 4)
    assert np.array_equal(decode, [[True] * 4]), \
        f"one new query after 3 cached tokens is at position 3 and sees all 4 keys, got {decode}"
    m = causal_mask(2, 4)
    assert np.array_equal(m, [[1, 1, 1, 0], [1, 1, 1, 1]]), f"queries are the LAST 2 positions (2 and 3):\n{m}"
    w = causal_mask(4, 4, window=2)
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    assert np.array_equal(w, expected), f"window=2: each query sees itself and one key before it:\n{w}"
    ### BEGIN HIDDEN TESTS
    assert causal_mask(5, 5, window=1).sum() == 5, "window=1: each query sees only itself"
    assert np.array_equal(causal_mask(1, 6, window=3), [[0, 0, 0, 1, 1, 1]]), "decode with a window"
    ### END HIDDEN TESTS


test_causal_mask()
print("causal_mask: ok")

# %% [markdown]
# The mask depends only on (t_q, t_k, window), so we build its additive form
# once per shape and reuse it: a GPT calls attention with the same shapes
# thousands of times. The cached array is read-only, so no caller can corrupt
# it. When nothing is masked (one query at the end, no window), there is no
# bias at all.

# %%
#| export nn.functional
@functools.lru_cache(maxsize=256)
def _causal_bias(t_q, t_k, window, dev, dtype):
    """Additive (t_q, t_k) mask, 0 where allowed and -inf elsewhere (cached); None if all allowed."""
    xp = get_xp(dev)
    allowed = causal_mask(t_q, t_k, window, dev)
    if bool(allowed.all()):
        return None
    bias = xp.where(allowed, 0.0, -math.inf).astype(dtype)
    if isinstance(bias, np.ndarray):
        bias.flags.writeable = False
    return bias


# %% [markdown]
# ## 3. A stable, masked softmax
#
# Module 01's softmax subtracts the row maximum m before exponentiating:
# softmax(s) = e^(s - m) / Σ e^(s - m) is exactly the same function and never
# overflows. Masks add one more case. A row whose scores are *all* -∞ (a query
# that may see nothing: padding, or a query before the first key) has
# m = -∞, and s - m = -∞ - (-∞) = NaN. One NaN in a forward pass spreads
# through every later layer and its gradients. We define such a row's weights
# as all **zeros** (so its output is 0 and no gradient flows through it), as
# recent PyTorch versions do: use m = 0 for those rows (every e^(-∞ - 0) is 0),
# and divide by 1 instead of by their zero sum.
#
# We compute in place (the scores array becomes the weights): the T×T arrays
# are the biggest ones in a transformer, and every extra copy costs time.
#
# Two NumPy facts, measured on (12, 4, 64, 64) float32 scores: summing rows of
# 64 numbers with `a.sum(axis=-1)` takes ~6x longer than the same sum as a
# matrix-vector product `a @ ones` (which runs in BLAS), and `np.matmul(q, kᵀ)`
# is ~1.7x slower when kᵀ is a transposed *view* than when it is a contiguous
# copy. The two helpers below package the first fact; use them.
#
# ### Exercise: `attention_weights(q, k, bias=None)`
# `q` (..., Tq, D) is already multiplied by the scale; `k` is (..., Tk, D);
# `bias` is None or an array that broadcasts to (..., Tq, Tk). Return
# P = softmax(q kᵀ + bias) over the last axis, with the max subtracted and
# fully masked rows set to 0. Use `xp.matmul` with
# `xp.ascontiguousarray(k.swapaxes(-1, -2))`, `_rowwise_sum`, and in-place
# operations (`+=`, `-=`, `/=`, `xp.exp(a, out=a)`) on the scores.

# %%
#| export nn.functional
def _rowwise_sum(a):
    """a.sum(axis=-1, keepdims=True), as a BLAS matrix-vector product (much faster for short rows)."""
    xp = _array_namespace(a)
    return xp.matmul(a, xp.ones((a.shape[-1], 1), dtype=a.dtype))


def _rowwise_dot(a, b):
    """(a * b).sum(axis=-1, keepdims=True) without the temporary product array."""
    return _array_namespace(a).einsum("...ij,...ij->...i", a, b)[..., None]


# %% nbgrader={"grade": false, "grade_id": "attention-weights", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def attention_weights(q, k, bias=None):
    """softmax(q kᵀ + bias) over the last axis (q pre-scaled); rows with no allowed key give zeros."""
    xp = _array_namespace(q)
    ### BEGIN SOLUTION
    scores = xp.matmul(q, xp.ascontiguousarray(k.swapaxes(-1, -2)))  # (..., Tq, Tk)
    if bias is not None:
        scores += bias
    row_max = scores.max(axis=-1, keepdims=True)
    row_max[row_max == -xp.inf] = 0  # a fully masked row: e^(-inf - 0) = 0, not e^(nan)
    scores -= row_max
    xp.exp(scores, out=scores)
    total = _rowwise_sum(scores)
    total[total == 0] = 1  # ... and it stays all zeros
    scores /= total
    return scores
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-attention-weights", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_attention_weights():
    q = np.array([[1.0]], dtype=np.float32)
    k = np.array([[0.0], [2.0]], dtype=np.float32)
    p = attention_weights(q, k)
    assert p.shape == (1, 2), f"weights of 1 query over 2 keys have shape (1, 2), got {p.shape}"
    assert np.allclose(p, [[0.1192029, 0.8807971]]), f"softmax([0, 2]) = [0.119, 0.881], got {p}"
    assert p.dtype == np.float32, f"float32 in, float32 out; got {p.dtype}"
    big = attention_weights(np.array([[1000.0]], dtype=np.float32), k)
    assert np.isfinite(big).all() and np.allclose(big, [[0, 1]]), f"scores of 2000 must not overflow: {big}"
    bias = np.array([[0.0, -np.inf]], dtype=np.float32)
    masked = attention_weights(q, k, bias)
    assert np.allclose(masked, [[1, 0]]), f"a -inf bias must remove key 1 entirely: {masked}"
    none_allowed = attention_weights(np.ones((2, 1), np.float32), k, np.array([[0.0, 0.0], [-np.inf, -np.inf]],
                                                                              dtype=np.float32))
    assert not np.isnan(none_allowed).any(), f"a fully masked row must not give NaN: {none_allowed}"
    assert np.allclose(none_allowed[1], 0), f"a fully masked row gives weights 0, got {none_allowed[1]}"
    rng = np.random.default_rng(0)
    batch = attention_weights(rng.standard_normal((2, 3, 4, 5)).astype(np.float32),
                              rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    assert batch.shape == (2, 3, 4, 6), f"(B, H, Tq, D) with (B, H, Tk, D) gives (B, H, Tq, Tk), got {batch.shape}"
    assert np.allclose(batch.sum(-1), 1, atol=1e-6), "every row of the weights sums to 1"
    ### BEGIN HIDDEN TESTS
    causal = attention_weights(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32), _causal_bias(3, 3, None, _as_device("cpu"), np.dtype(np.float32)))
    assert np.allclose(causal, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]]), "equal scores, causal"
    ### END HIDDEN TESTS


test_attention_weights()
print("attention_weights: ok")

# %% [markdown]
# ## 4. The backward pass, by hand
#
# We could let autograd differentiate matmul, softmax and matmul separately, but
# the fused version is faster, saves less memory and is a derivation worth
# doing once. Given dO = dL/dO (Tq × Dv), and reading every product as a
# matrix product:
#
# 1. **O = P V.** Matmul's rule (module 01): dV = Pᵀ dO and dP = dO Vᵀ.
# 2. **P = softmax(S), row by row.** For one row, ∂Pⱼ/∂Sᵢ = Pⱼ(δᵢⱼ - Pᵢ), so
#    dSᵢ = Σⱼ dPⱼ Pⱼ(δᵢⱼ - Pᵢ) = Pᵢ (dPᵢ - Σⱼ dPⱼ Pⱼ). For all rows at once:
#    **dS = P ⊙ (dP − rowsum(dP ⊙ P))**, with the row sum broadcast along the row.
# 3. **S = Q Kᵀ · scale.** Matmul again: dQ = dS K · scale and
#    dK = dSᵀ Q · scale. (We scale Q once in the forward, so with Qₛ = Q·scale:
#    dK = dSᵀ Qₛ, and dQ = (dS K) · scale.)
#
# The bias (the mask) is added to S, so its gradient, if it is a learned float
# mask, is dS itself. Masked entries have P = 0, hence dS = 0 there: nothing
# flows through a masked connection, and a fully masked row (P = 0) sends no
# gradient at all, never NaN. We reuse P from the forward pass instead of
# recomputing the softmax: one (Tq × Tk) array kept per head.
#
# *Dropout on the weights.* With dropout, O = (P ⊙ M) V where M holds 0 (dropped)
# or 1/(1-p) (kept). Then dV = (P ⊙ M)ᵀ dO and the gradient reaching P is
# (dO Vᵀ) ⊙ M; step 2 is unchanged.
#
# Worked check with one query and two keys: P = [0.12, 0.88], dP = [1, 0]:
# rowsum(dP ⊙ P) = 0.12, dS = [0.12·(1 - 0.12), 0.88·(0 - 0.12)] = [0.105, -0.105].
# The entries of dS sum to 0 in every row: adding a constant to a row of scores
# does not change the softmax.
#
# ### Exercise: `attention_backward(d_out, q, k, v, weights, keep=None)`
# `q` is the scaled query, `weights` the P of the forward, `keep` None or the
# dropout multiplier M. Return `(d_q, d_k, d_v, d_scores)` where `d_q` is the
# gradient with respect to the *scaled* query (the caller multiplies by scale).
# Work on the trailing two axes with `xp.matmul` and `.swapaxes(-1, -2)`
# (a contiguous copy for a transposed *right* operand, as above); `_rowwise_dot`
# gives the row sums of a product.

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
    d_scores -= _rowwise_dot(d_scores, weights)  # dS = P ⊙ (dP - rowsum(dP ⊙ P)),
    d_scores *= weights  # in place
    d_q = xp.matmul(d_scores, k)  # (..., Tq, D)
    d_k = xp.matmul(d_scores.swapaxes(-1, -2), q)  # (..., Tk, D)
    ### END SOLUTION
    return d_q, d_k, d_v, d_scores


# %% [markdown]
# ## 5. The fused op: `scaled_dot_product_attention`
#
# The provided function below checks its inputs, builds the bias (causal mask,
# window, `attn_mask`), calls your two functions and records one node in the
# graph. Its signature is PyTorch's, plus `window`.
#
# *Grouped-query attention (GQA).* A model may give its H query heads only
# Hkv < H key/value heads, each shared by a group of g = H / Hkv query heads
# (Hkv = 1 is *multi-query* attention). With `enable_gqa=True` (PyTorch's flag)
# key and value may have Hkv heads; query head h uses key/value head h // g,
# as PyTorch's `repeat_interleave` convention. We never copy K and V g times:
# the g query heads of a group are simply g·Tq queries against the *same* keys,
# so we fold the group into the query axis, (B, Hkv, g·Tq, D), and run the same
# matmuls. The backward's dK = dSᵀ Q then sums over the group's queries by
# itself: the gradient of a shared head is the sum over the heads that used it.
#
# *Dropout* on the weights uses the generator that `tinytorch.manual_seed` sets,
# and is applied whenever `dropout_p > 0` (as in PyTorch: pass 0 in evaluation).

# %%
#| export nn.functional
def _attention_shapes(q, k, v, enable_gqa):
    """Check (..., H, T, D) inputs; return (batch dims, heads of q, heads of k, group size)."""
    if not (q.ndim == k.ndim == v.ndim) or q.ndim < 2:
        raise ValueError(f"attention: query, key and value need the same number (>= 2) of dimensions, "
                         f"got shapes {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape[-1] != q.shape[-1] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"attention: key {tuple(k.shape)} must have query's feature size "
                         f"({q.shape[-1]}) and value {tuple(v.shape)} key's (..., T, ·) dimensions")
    if q.ndim == 2:
        return (), 1, 1, 1
    if q.shape[:-3] != k.shape[:-3]:
        raise ValueError(f"attention: query {tuple(q.shape)} and key {tuple(k.shape)} must share "
                         f"their batch dimensions {tuple(q.shape[:-3])}")
    heads, kv_heads = q.shape[-3], k.shape[-3]
    if heads != kv_heads:
        if not enable_gqa:
            raise ValueError(f"attention: query has {heads} heads but key/value {kv_heads}; pass "
                             f"enable_gqa=True to share each key/value head among query heads")
        if kv_heads == 0 or heads % kv_heads:
            raise ValueError(f"attention: key/value heads ({kv_heads}) must divide query heads ({heads})")
    return q.shape[:-3], heads, kv_heads, heads // kv_heads


def _attention_bias(attn_mask, is_causal, window, q, t_k, full_shape, dev):
    """The additive bias for the scores (causal/window + attn_mask), or None."""
    xp = get_xp(dev)
    if window is not None and (not is_causal or int(window) != window or window < 1):
        raise ValueError(f"attention: window={window!r} must be a positive int and needs is_causal=True "
                         f"(it is a sliding causal window)")
    bias = _causal_bias(q.shape[-2], t_k, window, dev, q.dtype) if is_causal else None
    if attn_mask is None:
        return bias
    mask = attn_mask.data if isinstance(attn_mask, Tensor) else xp.asarray(attn_mask)
    try:
        broadcast = np.broadcast_shapes(mask.shape, full_shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(full_shape):
        raise ValueError(f"attention: attn_mask of shape {tuple(mask.shape)} does not broadcast to the "
                         f"scores' shape {tuple(full_shape)} (..., heads, Tq, Tk)")
    if mask.dtype == np.bool_:
        mask = xp.where(mask, 0.0, -math.inf).astype(q.dtype)
    elif is_floating(mask.dtype):
        mask = mask.astype(q.dtype, copy=False)
    else:
        raise TypeError(f"attention: attn_mask must be bool (True = attend) or float (added to the "
                        f"scores), got {mask.dtype.name}")
    return mask if bias is None else mask + bias


def _fold_groups(bias, n_batch, kv_heads, group, t_q, xp):
    """Bias broadcastable to (*batch, H, Tq, Tk) -> to (*batch, Hkv, group*Tq, Tk)."""
    bias = bias.reshape((1,) * (n_batch + 3 - bias.ndim) + bias.shape)
    lead, (heads, _, t_k) = bias.shape[:-3], bias.shape[-3:]
    split = lead + ((1, 1) if heads == 1 else (kv_heads, group)) + bias.shape[-2:]
    spread = lead + split[-4:-3] + (group, t_q, t_k)
    return xp.broadcast_to(bias.reshape(split), spread).reshape(lead + split[-4:-3] + (group * t_q, t_k))


def _attention_dropout(shape, p, dtype, dev):
    """Dropout's multiplier M: 0 with probability p, else 1/(1-p) (drawn like `nn.functional.dropout`)."""
    keep = default_generator().random(shape, dtype=np.float32) >= p
    multiplier = keep.astype(dtype) * (0.0 if p == 1.0 else 1.0 / (1.0 - p))
    return to_device(multiplier, dev)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, *, enable_gqa=False, window=None):
    """softmax(query keyᵀ · scale + mask) value, as one op with a hand-written backward.

    Shapes (..., H, Tq, D), (..., Hkv, Tk, D), (..., Hkv, Tk, Dv) -> (..., H, Tq, Dv).
    `attn_mask`: bool (True = attend) or float (added to the scores), broadcastable
    to (..., H, Tq, Tk); a float mask that requires grad gets one. `is_causal`: query i
    sits at position Tk - Tq + i (aligned to the END, the KV-cache convention; PyTorch
    aligns to the top-left, so they agree for Tq == Tk). `window`: with is_causal, each
    query sees at most the last `window` keys, itself included. `scale` defaults to
    1/sqrt(D). `enable_gqa`: key/value may have Hkv heads dividing H; query head h uses
    key/value head h // (H / Hkv). A query row that may attend to no key outputs 0
    and passes no gradient (no NaN).
    """
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or not is_floating(t.dtype):
            raise TypeError(f"attention: {name} must be a floating-point Tensor")
        if t._device != query._device:
            raise RuntimeError(f"attention: {name} is on {t._device} but query is on {query._device}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1], got {dropout_p}")
    dev, xp = query._device, get_xp(query._device)
    q, k, v = query.data, key.data, value.data
    batch, heads, kv_heads, group = _attention_shapes(q, k, v, enable_gqa)
    t_q, t_k = q.shape[-2], k.shape[-2]
    full_shape = q.shape[:-1] + (t_k,)  # (*batch, H, Tq, Tk)
    bias = _attention_bias(attn_mask, is_causal, window, q, t_k, full_shape, dev)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)

    q_scaled = q * scale  # a fresh array; python floats keep float32
    if group > 1:  # fold each group of query heads into the query axis
        q_scaled = q_scaled.reshape(batch + (kv_heads, group * t_q, q.shape[-1]))
        if bias is not None:
            bias = _fold_groups(bias, len(batch), kv_heads, group, t_q, xp)
    weights = attention_weights(q_scaled, k, bias)  # (*batch, Hkv, g*Tq, Tk)
    keep = _attention_dropout(weights.shape, dropout_p, weights.dtype, dev) if dropout_p > 0 else None
    out = xp.matmul(weights if keep is None else weights * keep, v)  # (*batch, Hkv, g*Tq, Dv)
    out = out.reshape(q.shape[:-1] + v.shape[-1:])  # (*batch, H, Tq, Dv)
    mask_needs_grad = isinstance(attn_mask, Tensor) and attn_mask.requires_grad

    def scaled_dot_product_attention_backward(g):
        d_out = g.reshape(q_scaled.shape[:-1] + v.shape[-1:])
        d_q, d_k, d_v, d_scores = attention_backward(d_out, q_scaled, k, v, weights, keep)
        d_q *= scale
        d_mask = unbroadcast(d_scores.reshape(full_shape), attn_mask.shape) if mask_needs_grad else None
        return d_q.reshape(q.shape), d_k, d_v, d_mask
    parents = (query, key, value, attn_mask if mask_needs_grad else None)
    return _wrap(out, dev, parents, scaled_dot_product_attention_backward)


# %% [markdown]
# Now the exercise's test can check the whole op against numerical derivatives
# too (`gradcheck` from module 02, in float64):

# %%
from tinytorch import tensor  # noqa: E402
from tinytorch.autograd import gradcheck  # noqa: E402

# %% nbgrader={"grade": true, "grade_id": "test-attention-backward", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_attention_backward():
    p = np.array([[0.12, 0.88]], dtype=np.float32)
    v = np.array([[1.0], [0.0]], dtype=np.float32)  # dP = dO vᵀ = [1, 0] for dO = [[1]]
    q = np.array([[0.5]], dtype=np.float32)
    k = np.array([[0.0], [2.0]], dtype=np.float32)
    d_q, d_k, d_v, d_s = attention_backward(np.ones((1, 1), np.float32), q, k, v, p)
    assert d_s.shape == (1, 2), f"d_scores has the weights' shape (1, 2), got {d_s.shape}"
    assert np.allclose(d_s, [[0.1056, -0.1056]], atol=1e-4), f"dS = P ⊙ (dP - rowsum(dP ⊙ P)): got {d_s}"
    assert np.allclose(d_v, [[0.12], [0.88]]), f"dV = Pᵀ dO, got {d_v}"
    assert np.allclose(d_q, [[-0.2112]], atol=1e-4), f"dQ = dS K, got {d_q}"
    assert np.allclose(d_k, [[0.0528], [-0.0528]], atol=1e-4), f"dK = dSᵀ Q, got {d_k}"
    keep = np.array([[2.0, 0.0]], dtype=np.float32)  # dropout p = 0.5 dropped key 1
    _, _, d_v, _ = attention_backward(np.ones((1, 1), np.float32), q, k, v, p, keep)
    assert np.allclose(d_v, [[0.24], [0.0]]), f"with dropout, dV = (P ⊙ keep)ᵀ dO, got {d_v}"

    # the whole op, against numerical derivatives (gradcheck works in float64)
    rng = np.random.default_rng(0)
    qt, kt, vt = (tensor(rng.standard_normal((2, 2, 3, 4)), requires_grad=True) for _ in range(3))
    assert gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c), (qt, kt, vt)), "plain attention"
    assert gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c, is_causal=True), (qt, kt, vt)), \
        "causal attention"
    ### BEGIN HIDDEN TESTS
    assert gradcheck(lambda a, b, c: scaled_dot_product_attention(a, b, c, is_causal=True, window=2),
                     (qt, kt, vt)), "sliding window"
    ### END HIDDEN TESTS


test_attention_backward()
print("attention_backward: ok")

# %% [markdown]
# The same small example in float32, then a check of the decode convention:
# running the last query alone against all keys gives the last row of the full
# causal attention.

# %%
rng = np.random.default_rng(0)
q, k, v = (tensor(rng.standard_normal((1, 2, 5, 4)).astype(np.float32)) for _ in range(3))
full = scaled_dot_product_attention(q, k, v, is_causal=True)
last = scaled_dot_product_attention(q[:, :, 4:], k, v, is_causal=True)
print("last query alone == last row of the full causal attention:",
      np.allclose(full.data[:, :, 4:], last.data, atol=1e-6))

# %% [markdown]
# ## 6. Rotary position embeddings (RoPE)
#
# Attention by itself ignores order: shuffle the tokens and every query gets the
# same weighted average. GPT-2 adds a *learned* vector per position to the token
# embeddings. That has two weaknesses: the model must learn separately that
# "3 tokens back" means the same thing at position 10 and at position 500, and
# there is no vector at all for positions past the training length.
#
# **RoPE** (Su et al., 2021; used by Llama, GPT-NeoX, Mistral...) instead
# *rotates* q and k. Split the D features into D/2 pairs; pair i of the vector
# at position t is rotated by the angle t·θᵢ, with θᵢ = base^(-2i/D)
# (base = 10000: fast-turning pairs for fine positions, slow ones for coarse
# positions). Rotations preserve dot products up to the difference of their
# angles, so for q at position m and k at position n:
#
# ⟨R(mθ) q, R(nθ) k⟩ = ⟨q, R((n - m)θ) k⟩,
#
# which depends on the positions only through the **offset** n - m. Relative
# position is built into every score, there are no parameters, and any
# position has a rotation (whether a model trained on short sequences *uses*
# longer ones well is another matter: that needs tricks such as rescaling θ).
#
# *Which features form a pair?* Two layouts exist. GPT-J interleaves
# (features 2i, 2i+1). We use the **rotate-half** layout of GPT-NeoX and
# Hugging Face's Llama: feature i pairs with feature i + D/2. With x = [x₁, x₂]
# (the two halves), cos and sin tables whose two halves repeat the D/2 angles,
# and rotate_half(x) = [-x₂, x₁]:
#
# RoPE(x) = x ⊙ cos + rotate_half(x) ⊙ sin
#
# i.e. [x₁cos - x₂sin, x₂cos + x₁sin]: each pair (x₁ᵢ, x₂ᵢ) rotated by its angle.
#
# *Backward.* RoPE(x) = x ⊙ cos + R x ⊙ sin with R the linear map
# rotate_half, so dx = g ⊙ cos + Rᵀ(g ⊙ sin), and Rᵀ[y₁, y₂] = [y₂, -y₁]
# (the inverse rotation by 90°).
#
# ### Exercise: `apply_rotary_emb(x, cos, sin)`
# `x` is a Tensor (..., T, D); `cos` and `sin` are (T, D) arrays. Compute the
# forward with slices of the two halves (no `concatenate` needed: start from
# `x * cos` and add the rotated halves into its two halves), and the backward
# closure `apply_rotary_emb_backward(g)` from the formula above.

# %% nbgrader={"grade": false, "grade_id": "apply-rotary-emb", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def apply_rotary_emb(x, cos, sin):
    """Rotary position embedding of x (..., T, D), rotate-half layout; cos, sin: (T, D) tables."""
    cos = cos.data if isinstance(cos, Tensor) else cos
    sin = sin.data if isinstance(sin, Tensor) else sin
    if x.shape[-1] % 2 or cos.shape != sin.shape or cos.shape[-1] != x.shape[-1] \
            or x.ndim < 2 or cos.shape[-2] != x.shape[-2]:
        raise ValueError(f"apply_rotary_emb: x of shape {tuple(x.shape)} needs an even feature size and "
                         f"cos/sin tables of shape (T, D) = {tuple(x.shape[-2:])}, got {tuple(cos.shape)} "
                         f"and {tuple(sin.shape)}")
    half = x.shape[-1] // 2
    data = x.data
    ### BEGIN SOLUTION
    out = data * cos
    out[..., :half] -= data[..., half:] * sin[..., :half]
    out[..., half:] += data[..., :half] * sin[..., half:]

    def apply_rotary_emb_backward(g):
        d_x = g * cos
        d_x[..., :half] += g[..., half:] * sin[..., half:]
        d_x[..., half:] -= g[..., :half] * sin[..., :half]
        return (d_x,)
    ### END SOLUTION
    return _wrap(out, x._device, (x,), apply_rotary_emb_backward)


# %% [markdown]
# The tables are computed once per model (in float64, then stored in the
# model's dtype: an angle like 4000·θ₀ needs more digits than float32 keeps
# before taking its cosine).

# %%
#| export
"""Attention layers: `CausalSelfAttention`, `MultiHeadAttention`, rotary tables and the KV cache."""
import numpy as np

from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.backend import DEFAULT_FLOAT, device as _as_device, get_xp, resolve_dtype
from tinytorch.core.tensor import Tensor, _wrap
from tinytorch.nn.functional import apply_rotary_emb, scaled_dot_product_attention
from tinytorch.nn.layers import Dropout, Linear, Module


def rope_tables(seq_len, head_dim, base=10000.0, dtype=None, device=None):
    """cos and sin Tensors (seq_len, head_dim) for RoPE, in the rotate-half layout.

    Position t, pair i (features i and i + head_dim/2) turns by t·base^(-2i/head_dim).
    """
    if head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of features: head_dim must be even, got {head_dim}")
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (D/2,)
    angles = np.outer(np.arange(seq_len, dtype=np.float64), inv_freq)  # (T, D/2)
    angles = np.concatenate([angles, angles], axis=1)  # (T, D): both halves of a pair share an angle
    dtype = resolve_dtype(dtype) or DEFAULT_FLOAT
    return Tensor(np.cos(angles), dtype=dtype, device=device), Tensor(np.sin(angles), dtype=dtype, device=device)


# %% nbgrader={"grade": true, "grade_id": "test-apply-rotary-emb", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_apply_rotary_emb():
    cos, sin = rope_tables(4, 2)
    x = tensor([[1.0, 0.0]] * 4)  # the same vector at positions 0..3
    y = apply_rotary_emb(x, cos, sin)
    assert y.shape == (4, 2) and y.dtype == np.float32, f"shape and dtype are kept, got {y.shape} {y.dtype}"
    expected = [[np.cos(t), np.sin(t)] for t in range(4)]  # D = 2: one pair, θ = 1 rad per position
    assert np.allclose(y.data, expected, atol=1e-6), f"position t rotates (1, 0) by t radians:\n{y.data}"
    assert np.allclose((y.data ** 2).sum(-1), 1), "a rotation keeps the length of each pair"
    rng = np.random.default_rng(0)
    cos, sin = rope_tables(5, 8)
    xs = tensor(rng.standard_normal((2, 3, 5, 8)), requires_grad=True)
    assert gradcheck(lambda a: apply_rotary_emb(a, cos.data.astype(np.float64), sin.data.astype(np.float64)),
                     (xs,)), "the backward of RoPE: dx = g ⊙ cos + rotate_halfᵀ(g ⊙ sin)"
    ### BEGIN HIDDEN TESTS
    q = rng.standard_normal(8).astype(np.float32)
    k = rng.standard_normal(8).astype(np.float32)
    cos, sin = rope_tables(10, 8)
    qs = apply_rotary_emb(tensor(np.tile(q, (10, 1))), cos, sin).data
    ks = apply_rotary_emb(tensor(np.tile(k, (10, 1))), cos, sin).data
    assert np.isclose(qs[7] @ ks[5], qs[4] @ ks[2], atol=1e-5), "scores depend only on the offset"
    ### END HIDDEN TESTS


test_apply_rotary_emb()
print("apply_rotary_emb: ok")

# %% [markdown]
# The promise, checked: put the same q and k at positions (m, n) with the same
# offset n - m and the score does not change; change the offset and it does.

# %%
cos, sin = rope_tables(1000, 16)
q_vec, k_vec = (np.random.default_rng(seed).standard_normal(16).astype(np.float32) for seed in (1, 2))
q_all = apply_rotary_emb(tensor(np.tile(q_vec, (1000, 1))), cos, sin).data  # q at every position
k_all = apply_rotary_emb(tensor(np.tile(k_vec, (1000, 1))), cos, sin).data
for m, n in ((5, 2), (105, 102), (905, 902), (45, 5)):
    print(f"query at {m:3d}, key at {n:3d} (offset {n - m:+d}): score {q_all[m] @ k_all[n]: .5f}")

# %% [markdown]
# ## 7. The KV cache
#
# A GPT generates one token at a time: to produce token t+1 it runs the model
# on tokens 0..t. Done naively, step t recomputes the keys and values of all t
# earlier tokens, which have not changed (causal attention: earlier tokens never
# look at later ones). Generating T tokens costs O(T²) token-forwards.
#
# A **KV cache** keeps every layer's keys and values. Each step then runs the
# model on the one new token: its query attends to the cached keys plus its
# own, and its key and value are appended. Each step costs O(1) token-forwards
# (plus attention over t keys).
#
# The price is memory, per token: 2 (K and V) × n_layer × n_kv_head × head_dim
# × bytes per number. That is why grouped-query attention exists: with 4 times
# fewer key/value heads, the cache is 4 times smaller (section 9 measures it).
#
# Our cache preallocates (B, n_kv_head, max_len, head_dim) arrays and writes
# each new token in place: appending with `concatenate` would copy the whole
# cache at every step (O(T²) bytes copied in total). `length` counts the tokens
# stored; the next token's position is `length` (RoPE needs it).
#
# The cache holds plain arrays: it is for inference (under `tinytorch.no_grad()`),
# and it refuses inputs that would need a gradient rather than silently
# dropping it.
#
# ### Exercise: `KVCache.update(k, v)`
# Write `k` and `v` (B, n_kv_head, T, head_dim) into `self.keys` and
# `self.values` at positions `length .. length+T-1` (axis 2), advance `length`,
# and return all keys and values so far as Tensors (views of the cache, no
# copy): `_wrap(self.keys[:, :, :end], self.device)`. The checks are provided.

# %% nbgrader={"grade": false, "grade_id": "kv-cache-update", "locked": false, "schema_version": 3, "solution": true}
#| export
class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer (inference only).

    Preallocated arrays `keys` and `values` of shape (batch_size, n_kv_head, max_len,
    head_dim), filled in place; `length` tokens are stored.
    """

    def __init__(self, batch_size, n_kv_head, max_len, head_dim, dtype=None, device=None):
        self.device = _as_device(device)
        xp = get_xp(self.device)
        shape = (batch_size, n_kv_head, max_len, head_dim)
        dtype = resolve_dtype(dtype) or DEFAULT_FLOAT
        self.keys = xp.zeros(shape, dtype=dtype)
        self.values = xp.zeros(shape, dtype=dtype)
        self.length = 0

    max_len = property(lambda self: self.keys.shape[2])
    nbytes = property(lambda self: self.keys.nbytes + self.values.nbytes)

    def reset(self):
        """Forget every token (the arrays are reused)."""
        self.length = 0

    def _check(self, k, v):
        expected = self.keys.shape[:2] + self.keys.shape[3:]
        for name, t in (("k", k), ("v", v)):
            if t.ndim != 4 or t.shape[:2] + t.shape[3:] != expected:
                raise ValueError(f"KVCache.update: {name} of shape {tuple(t.shape)} does not fit a cache of "
                                 f"(batch, n_kv_head, ·, head_dim) = ({expected[0]}, {expected[1]}, ·, {expected[2]})")
        if k.shape[2] != v.shape[2]:
            raise ValueError(f"KVCache.update: k has {k.shape[2]} tokens but v has {v.shape[2]}")
        if self.length + k.shape[2] > self.max_len:
            raise ValueError(f"KVCache is full: it holds at most max_len={self.max_len} tokens, has {self.length} "
                             f"and {k.shape[2]} more were appended ({self.length + k.shape[2]} > {self.max_len})")
        if is_grad_enabled() and (k.requires_grad or v.requires_grad):
            raise RuntimeError("KVCache is for inference and does not carry gradients: "
                               "run decoding under `with tinytorch.no_grad():`")

    def update(self, k, v):
        """Append k, v (B, n_kv_head, T, head_dim); return all keys and values so far (views)."""
        self._check(k, v)
        end = self.length + k.shape[2]
        ### BEGIN SOLUTION
        self.keys[:, :, self.length:end] = k.data
        self.values[:, :, self.length:end] = v.data
        self.length = end
        return _wrap(self.keys[:, :, :end], self.device), _wrap(self.values[:, :, :end], self.device)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-kv-cache-update", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_kv_cache_update():
    cache = KVCache(batch_size=1, n_kv_head=2, max_len=5, head_dim=3)
    k1, v1 = tensor(np.ones((1, 2, 2, 3))), tensor(np.full((1, 2, 2, 3), 2.0))
    keys, values = cache.update(k1, v1)
    assert cache.length == 2, f"after 2 tokens, length is 2, got {cache.length}"
    assert keys.shape == (1, 2, 2, 3), f"update returns all keys so far, (1, 2, 2, 3); got {keys.shape}"
    assert np.all(keys.data == 1) and np.all(values.data == 2), "the returned keys/values are the ones appended"
    keys, values = cache.update(tensor(np.full((1, 2, 1, 3), 3.0)), tensor(np.full((1, 2, 1, 3), 4.0)))
    assert keys.shape == (1, 2, 3, 3) and cache.length == 3, f"a third token makes 3, got {keys.shape}"
    assert np.all(keys.data[:, :, 2] == 3) and np.all(values.data[:, :, :2] == 2), "new token goes at position 2"
    assert np.shares_memory(keys.data, cache.keys), "return views of the cache, not copies"
    try:
        cache.update(tensor(np.zeros((1, 2, 3, 3))), tensor(np.zeros((1, 2, 3, 3))))
    except ValueError as err:
        assert "max_len=5" in str(err), f"the error should name the capacity: {err}"
    else:
        raise AssertionError("appending past max_len must raise ValueError")
    ### BEGIN HIDDEN TESTS
    cache.reset()
    keys, _ = cache.update(tensor(np.full((1, 2, 1, 3), 7.0)), tensor(np.zeros((1, 2, 1, 3))))
    assert keys.shape == (1, 2, 1, 3) and np.all(keys.data == 7), "reset starts over at position 0"
    ### END HIDDEN TESTS


test_kv_cache_update()
print("KVCache.update: ok")

# %% [markdown]
# ## 8. The layers: `CausalSelfAttention` and `MultiHeadAttention`
#
# Everything together, in the layout of nanoGPT (and GPT-2's weight names):
#
# 1. one fused projection `c_attn` makes q, k and v for all heads in a single
#    matmul: (B, T, C) -> (B, T, (H + 2·Hkv)·hd), with hd = C / H;
# 2. split into heads: q (B, H, T, hd), k and v (B, Hkv, T, hd);
# 3. RoPE on q and k (at positions `start .. start+T-1`), if enabled;
# 4. with a cache: append k, v and attend over everything cached;
# 5. attention (causal, windowed, grouped), heads back side by side (B, T, C),
#    and the output projection `c_proj`.
#
# With n_kv_head = n_head (the default) the layout of `c_attn` is GPT-2's:
# [all q | all k | all v]. Dropout (if any) applies to the attention weights and
# to the output, in training mode only.

# %%
#| export
class CausalSelfAttention(Module):
    """Multi-head causal self-attention (GPT), with grouped-query heads, RoPE, a window and a KV cache.

    n_kv_head < n_head gives grouped-query attention (n_kv_head = 1: multi-query).
    rope=True rotates q and k (rotate-half layout, tables for block_size positions,
    non-persistent buffers `rope_cos`/`rope_sin`). window=w: each token sees the last w
    tokens, itself included. forward(x, kv_cache=None, attn_mask=None): x is (B, T, n_embd);
    with a `KVCache` (see `new_kv_cache`), x holds the next T tokens after the
    `kv_cache.length` already cached ones.
    """

    is_causal = True

    def __init__(self, n_embd, n_head, n_kv_head=None, rope=False, window=None, dropout=0.0, bias=True,
                 block_size=None, rope_base=10000.0, device=None, dtype=None):
        super().__init__()
        n_kv_head = n_head if n_kv_head is None else n_kv_head
        if n_head < 1 or n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head} "
                             f"(each head gets n_embd // n_head features)")
        if n_kv_head < 1 or n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head} "
                             f"(each key/value head serves n_head // n_kv_head query heads)")
        if window is not None and (not self.is_causal or window < 1):
            raise ValueError(f"window={window} must be >= 1 and needs causal attention")
        self.n_embd, self.n_head, self.n_kv_head = n_embd, n_head, n_kv_head
        self.head_dim = n_embd // n_head
        self.window, self.dropout, self.block_size, self.rope = window, dropout, block_size, rope
        self.c_attn = Linear(n_embd, (n_head + 2 * n_kv_head) * self.head_dim, bias=bias, device=device, dtype=dtype)
        self.c_proj = Linear(n_embd, n_embd, bias=bias, device=device, dtype=dtype)
        self.resid_dropout = Dropout(dropout)
        if rope:
            if block_size is None:
                raise ValueError("rope=True needs block_size: the cos/sin tables are precomputed for "
                                 "positions 0 .. block_size-1")
            cos, sin = rope_tables(block_size, self.head_dim, rope_base, dtype, device)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, head_dim)
            self.register_buffer("rope_sin", sin, persistent=False)

    def new_kv_cache(self, batch_size, max_len=None):
        """An empty KVCache for this layer (max_len defaults to block_size), on its device and dtype."""
        max_len = self.block_size if max_len is None else max_len
        if max_len is None:
            raise ValueError("new_kv_cache: pass max_len (this layer has no block_size)")
        weight = self.c_attn.weight
        return KVCache(batch_size, self.n_kv_head, max_len, self.head_dim, weight.dtype, weight.device)

    def _check_length(self, x, start):
        if x.ndim != 3 or x.shape[-1] != self.n_embd:
            raise ValueError(f"{type(self).__name__} expects x of shape (B, T, n_embd={self.n_embd}), "
                             f"got {tuple(x.shape)}")
        end = start + x.shape[1]
        if self.block_size is not None and end > self.block_size:
            raise ValueError(f"sequence of {end} positions is longer than block_size={self.block_size}"
                             + (f" ({start} cached + {x.shape[1]} new)" if start else ""))

    def forward(self, x, kv_cache=None, attn_mask=None):
        start = 0 if kv_cache is None else kv_cache.length
        self._check_length(x, start)
        B, T, C = x.shape
        H, Hkv, hd = self.n_head, self.n_kv_head, self.head_dim
        qkv = self.c_attn(x).reshape(B, T, H + 2 * Hkv, hd).transpose(1, 2)  # (B, H + 2Hkv, T, hd)
        q = qkv[:, :H]  # (B, H, T, hd)
        k = qkv[:, H:H + Hkv]  # (B, Hkv, T, hd)
        v = qkv[:, H + Hkv:]  # (B, Hkv, T, hd)
        if self.rope:
            cos, sin = self.rope_cos.data[start:start + T], self.rope_sin.data[start:start + T]
            q, k = apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, Hkv, start + T, hd)
        y = scaled_dot_product_attention(q, k, v, attn_mask, self.dropout if self.training else 0.0,
                                         self.is_causal, enable_gqa=True, window=self.window)
        y = y.transpose(1, 2).reshape(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def extra_repr(self):
        extras = [f"n_embd={self.n_embd}", f"n_head={self.n_head}"]
        if self.n_kv_head != self.n_head:
            extras.append(f"n_kv_head={self.n_kv_head}")
        extras += [f"{name}={getattr(self, name)}" for name in ("rope", "window", "block_size")
                   if getattr(self, name) not in (None, False)]
        return ", ".join(extras)


class MultiHeadAttention(CausalSelfAttention):
    """Self-attention where every token sees every token (an encoder's); `attn_mask` can hide padding."""

    is_causal = False


# %% [markdown]
# The test that matters for a cache: decoding token by token must give exactly
# what the full causal forward gives, for every kind of head sharing, with RoPE
# and with a window.

# %%
import tinytorch as tt  # noqa: E402


def decode_matches_full(**config):
    tt.manual_seed(0)
    attn = CausalSelfAttention(n_embd=32, n_head=4, block_size=16, **config)
    x = tt.randn(2, 10, 32)
    with tt.no_grad():
        full = attn(x).data
        cache = attn.new_kv_cache(batch_size=2)
        steps = [attn(x[:, :3], kv_cache=cache).data]  # a 3-token prompt, then one token at a time
        steps += [attn(x[:, t:t + 1], kv_cache=cache).data for t in range(3, 10)]
    return np.abs(np.concatenate(steps, axis=1) - full).max()


for config in ({}, {"n_kv_head": 2}, {"n_kv_head": 1}, {"rope": True, "n_kv_head": 2}, {"window": 4, "rope": True}):
    print(f"{str(config):32s} max |cached - full| = {decode_matches_full(**config):.1e}")

# %% [markdown]
# ## 9. What it costs
#
# **KV-cache memory per token** is 2 · n_layer · n_kv_head · head_dim · bytes.
# For a GPT-2-small-shaped model (12 layers, 12 heads of 64, float32), measured
# from real `KVCache` arrays:

# %%
for name, n_kv in (("MHA", 12), ("GQA", 4), ("MQA", 1)):
    layer = CausalSelfAttention(n_embd=768, n_head=12, n_kv_head=n_kv, block_size=256)
    per_token = layer.new_kv_cache(batch_size=1).nbytes / 256 * 12  # one layer's cache, times 12 layers
    print(f"{name} (n_kv_head={n_kv:2d}): {per_token / 1024:5.1f} KiB per token, "
          f"{per_token * 1024 / 2**20:5.1f} MiB for 1024 tokens "
          f"(formula: {2 * 12 * n_kv * 64 * 4 / 1024:.1f} KiB)")

# %% [markdown]
# **Decode time with and without the cache.** Four attention layers
# (n_embd 128, 4 heads), generating 64 positions one at a time; without the
# cache, every step recomputes the whole prefix:

# %%
import time  # noqa: E402

tt.manual_seed(0)
layers = [CausalSelfAttention(n_embd=128, n_head=4, block_size=64) for _ in range(4)]
tokens = tt.randn(1, 64, 128)


def decode(use_cache):
    caches = [layer.new_kv_cache(batch_size=1) for layer in layers]
    outputs = []
    with tt.no_grad():
        for t in range(tokens.shape[1]):
            h = tokens[:, t:t + 1] if use_cache else tokens[:, :t + 1]
            for layer, cache in zip(layers, caches):
                h = layer(h, kv_cache=cache if use_cache else None)
            outputs.append(h.data[:, -1])
    return np.stack(outputs, axis=1)


timings = {}
for use_cache in (False, True):
    start = time.perf_counter()
    result = decode(use_cache)
    timings[use_cache] = (time.perf_counter() - start, result)
(slow, a), (fast, b) = timings[False], timings[True]
print(f"64 steps: without cache {slow * 1e3:.0f} ms, with cache {fast * 1e3:.0f} ms "
      f"({slow / fast:.1f}x faster), same outputs: {np.allclose(a, b, atol=1e-5)}")

# %% [markdown]
# The gap grows with the length: without a cache step t does O(t) work, so T
# steps cost O(T²); with it, each step processes one token (its attention still
# reads t cached keys, a much smaller O(t)).
#
# **Forward and backward of attention**, the training-time cost, at the shapes
# of the nanoGPT shakespeare-char model (batch 12, 4 heads of 32, 64 tokens).
# The weights P are the one (B, H, T, T) array kept for the backward pass:

# %%
q, k, v = (tt.randn(12, 4, 64, 32, requires_grad=True) for _ in range(3))


def attention_step():
    scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()


attention_step()
start = time.perf_counter()
for _ in range(20):
    attention_step()
print(f"forward + backward: {(time.perf_counter() - start) / 20 * 1e3:.2f} ms; "
      f"P kept for the backward: {12 * 4 * 64 * 64 * 4 / 1024:.0f} KiB per layer")

# %% [markdown]
# `bench/attention.py` runs the same step against PyTorch's
# `scaled_dot_product_attention` on the CPU.
#
# **What a window costs and saves.** A window of w keys leaves w of the T keys
# per query (for T ≫ w). Our dense implementation still computes all T×T
# scores and then masks them, so the time hardly changes; what the window buys is
# in the *cache* (only the last w keys are ever needed, so a rolling cache of w
# entries bounds memory however long the text) and in kernels that skip masked
# blocks (FlashAttention-style), where time falls to O(T·w):

# %%
x_long = tt.randn(1, 4, 512, 32)
for window in (None, 64):
    with tt.no_grad():
        start = time.perf_counter()
        for _ in range(5):
            scaled_dot_product_attention(x_long, x_long, x_long, is_causal=True, window=window)
    kept = causal_mask(512, 512, window).mean()
    print(f"window={str(window):4s}: {(time.perf_counter() - start) / 5 * 1e3:5.1f} ms, "
          f"{kept:.1%} of the 512x512 scores used")

# %% [markdown]
# **Next:** module 09 stacks these layers into a GPT, trains it on text and
# generates from it with the KV cache.
