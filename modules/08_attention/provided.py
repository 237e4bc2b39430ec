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
# # Module 08 — provided code
#
# The plumbing around the attention lesson: input checks with clear errors, the
# cached additive mask, the bookkeeping that lines an `attn_mask` up with
# grouped-query heads, and the constructor side of the attention layers. The
# lesson (`attention.py`) writes the math; nothing here computes attention.

# %%
#| default_exp nn.functional

# %%
#| export nn.functional
import functools
import math
from typing import NamedTuple

import numpy as np

from tinytorch.core.backend import (  # noqa: F401  (_as_device: causal_mask)
    _check_whole, device as _as_device, get_xp, is_floating, namespace_of, to_device,
)
from tinytorch.core.tensor import Tensor, _autocast_op, from_op, unbroadcast  # noqa: F401  (the lesson's ops)


def _array_namespace(array):
    """numpy or cupy, whichever holds `array`."""
    return namespace_of(array)


# %% [markdown]
# ### The softmax's shift, cheaper on the CPU
#
# The lesson's `attention_weights` shifts every row of scores by its own
# maximum. Any shift gives the same softmax as long as no exponent overflows
# and no row's sum vanishes, and the row maxima are the step's most expensive
# reduction on a CPU (NumPy reduces a 64-long row ~4x slower than it streams
# it). `_fast_attention_weights`, which `scaled_dot_product_attention` calls,
# shifts each (batch, head) block of scores by the block's largest entry: one
# reduction over long contiguous blocks, and every exponent is ≤ 0. A row
# whose entries all lie far below its block's maximum would lose precision or
# underflow to zeros, so every row whose sum comes out below 1e-30 (and every
# fully masked row) is recomputed with the lesson's exact row shift. Above that
# sum, each weight is off by at most ~1e-8 (float32's smallest normal number
# divided by the sum). Measured on (12, 4, 64, 64) causal scores: ~450 µs
# instead of ~650 µs. A GPU runs the lesson's version, and so do float16 and
# bfloat16 scores: their exponentials flush to zero a few units below the
# block's maximum, long before a row's sum falls under 1e-30.

# %%
#| export nn.functional
_VANISHING_ROW_SUM = 1e-30
_FAST_SOFTMAX_DTYPES = (np.float32, np.float64)  # half precision takes the lesson's per-row shift


def _fast_attention_weights(q, k, bias=None):
    """`attention_weights(q, k, bias)`, on the CPU with one shift per (batch, head) block."""
    if k.shape[-2] == 0:  # no keys: empty (..., Tq, 0) weights on every path (an empty row has no max)
        return _array_namespace(q).matmul(q, k.swapaxes(-1, -2))
    if _array_namespace(q) is not np or q.ndim < 3 or q.dtype not in _FAST_SOFTMAX_DTYPES:
        return attention_weights(q, k, bias)  # noqa: F821  (the lesson's exercise, same file)
    scores = np.matmul(q, np.ascontiguousarray(k.swapaxes(-1, -2)))  # (..., Tq, Tk)
    if scores.size == 0:
        return scores
    if bias is not None:
        scores += bias
    blocks = scores.reshape(scores.shape[:-2] + (-1,))  # one row per (batch, head): a view
    shift = blocks.max(axis=-1, keepdims=True)
    np.copyto(shift, 0, where=shift == -np.inf)  # a fully masked block: e^(-inf - 0) = 0
    blocks -= shift
    np.exp(scores, out=scores)
    total = _row_sum(scores)  # (..., Tq, 1)  # noqa: F821  (module 03's, same file)
    redo = ~(total[..., 0] > _VANISHING_ROW_SUM)  # vanishing, fully masked or NaN rows
    if redo.any():
        rows = np.nonzero(redo)  # index arrays over (..., Tq)
        row_bias = None if bias is None else np.broadcast_to(bias, scores.shape)[rows][:, None, :]
        exact = attention_weights(q[rows][:, None, :], k[rows[:-1]], row_bias)  # noqa: F821
        scores[rows] = exact[:, 0, :]
        total[rows] = 1.0
    scores /= total
    return scores


# %% [markdown]
# The causal mask depends only on (t_q, t_k, window), and a GPT asks for the same
# few shapes thousands of times: build its additive form once per shape. The
# cached array is read-only so no caller can corrupt it; when nothing is masked
# (one query at the end, no window) there is no bias at all.

# %%
#| export nn.functional
@functools.lru_cache(maxsize=256)
def _causal_bias(t_q, t_k, window, dev, dtype):
    """Additive (t_q, t_k) mask from `causal_mask`: 0 where allowed, -inf elsewhere; None if all allowed."""
    allowed = causal_mask(t_q, t_k, window, "cpu")  # noqa: F821  (the lesson's exercise, same file)
    if allowed.all():  # built on the host, so this test reads no GPU number
        return None
    bias = to_device(np.where(allowed, 0.0, -math.inf).astype(dtype), dev)
    if isinstance(bias, np.ndarray):
        bias.flags.writeable = False
    return bias


# %% [markdown]
# `scaled_dot_product_attention` takes PyTorch's arguments. `_plan_attention`
# checks them all, turns `attn_mask` (bool: True = attend; float: added) plus
# the causal mask into one additive bias, and, for grouped-query attention,
# lays that bias out like the folded queries: (*batch, Hkv, group·Tq, Tk).

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
    if window is not None:
        if not is_causal:
            raise ValueError(f"attention: window={window!r} needs is_causal=True (it is a sliding causal window)")
        window = _check_whole(window, "attention: window", hint=" (each query sees the last `window` tokens)")
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


class _AttentionPlan(NamedTuple):
    """What scaled_dot_product_attention needs once its inputs are checked."""
    bias: object  # additive mask in the grouped layout (*batch, Hkv, g*Tq, Tk), or None
    scores_shape: tuple  # (*batch, H, Tq, Tk)
    learned_mask: object  # attn_mask when it is a Tensor that requires grad, else None
    group: int  # g: query heads per key/value head (1 without grouped-query attention)

    def mask_grad(self, d_scores):
        """The gradient of a learned float mask: dS, summed back to the mask's shape (None if none)."""
        if self.learned_mask is None:
            return None
        return unbroadcast(d_scores.reshape(self.scores_shape), self.learned_mask.shape)


def _plan_attention(query, key, value, attn_mask, dropout_p, is_causal, window, enable_gqa):
    """Check the arguments of scaled_dot_product_attention and build its bias."""
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor) or not is_floating(t.dtype):
            raise TypeError(f"attention: {name} must be a floating-point Tensor")
        if t._device != query._device:
            raise RuntimeError(f"attention: {name} is on {t._device} but query is on {query._device}")
    if not 0.0 <= dropout_p <= 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1], got {dropout_p}")
    q, k, v = query.data, key.data, value.data
    dev = query._device
    batch, _, kv_heads, group = _attention_shapes(q, k, v, enable_gqa)
    scores_shape = q.shape[:-1] + (k.shape[-2],)
    bias = _attention_bias(attn_mask, is_causal, window, q, k.shape[-2], scores_shape, dev)
    if group > 1 and bias is not None:
        bias = _fold_groups(bias, len(batch), kv_heads, group, q.shape[-2], get_xp(dev))
    learned = attn_mask if isinstance(attn_mask, Tensor) and attn_mask.requires_grad else None
    return _AttentionPlan(bias, scores_shape, learned, group)


# %% [markdown]
# RoPE's input checks: an even feature size, and (T, D) tables that match x, or
# (B, 1, T, D) tables, one row of positions per batch row (explicit `positions`).
# `_rotary_pairs` names the two members of every pair: the two halves
# (rotate-half, GPT-NeoX/Llama in Hugging Face) or even and odd features
# (interleaved, the original RoPE and Meta's Llama).

# %%
#| export nn.functional
def _rotary_tables(x, cos, sin):
    """The cos and sin tables of `apply_rotary_emb` as arrays, checked against x (..., T, D)."""
    cos = cos.data if isinstance(cos, Tensor) else cos
    sin = sin.data if isinstance(sin, Tensor) else sin
    fits = x.ndim >= 2 and x.shape[-1] % 2 == 0 and cos.shape == sin.shape and cos.ndim <= x.ndim \
        and tuple(cos.shape[-2:]) == tuple(x.shape[-2:])
    if fits:
        try:
            fits = np.broadcast_shapes(tuple(x.shape), tuple(cos.shape)) == tuple(x.shape)
        except ValueError:
            fits = False
    if not fits:
        raise ValueError(f"apply_rotary_emb: x of shape {tuple(x.shape)} needs an even feature size and "
                         f"cos/sin tables of shape (T, D) = {tuple(x.shape[-2:])} (or per batch row, "
                         f"(B, 1, T, D)), got {tuple(cos.shape)} and {tuple(sin.shape)}")
    return cos, sin


def _rotary_pairs(head_dim, interleaved):
    """(first, second): slices picking the two members of every rotated pair of features."""
    if interleaved:
        return slice(0, None, 2), slice(1, None, 2)  # pairs (0, 1), (2, 3), ...
    half = head_dim // 2
    return slice(0, half), slice(half, None)  # pairs (i, i + D/2)


# %% [markdown]
# ## The layers' constructor side
#
# `CausalSelfAttention` (the lesson writes its `forward`) builds on this base:
# argument checks, the fused `c_attn` and `c_proj` projections, the RoPE tables
# as non-persistent buffers (derived, so never saved), the cache factory and the
# printed summary. The KV cache's input checks are here too.

# %%
#| export nn.attention
"""Attention layers: `CausalSelfAttention`, `MultiHeadAttention`, rotary tables and the KV cache."""
import numpy as np  # noqa: F401, F811

from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.backend import (  # noqa: F401, F811
    DEFAULT_FLOAT, _check_whole, check_later, device as _as_device, get_xp, resolve_dtype, to_host,
)
from tinytorch.core.tensor import Tensor, from_op  # noqa: F401, F811
from tinytorch.nn.functional import apply_rotary_emb, scaled_dot_product_attention  # noqa: F401
from tinytorch.nn.layers import Dropout, Linear, Module


def _check_positions(positions, T, block_size, device):
    """Explicit token positions (B, T) as an integer array on `device`, each in [0, block_size)."""
    pos = positions.data if isinstance(positions, Tensor) else get_xp(device).asarray(positions)
    if pos.ndim == 1:
        pos = pos[None]  # one row of positions shared by every batch row
    if pos.ndim != 2 or pos.shape[1] != T or pos.dtype.kind not in "iu":
        raise ValueError(f"positions must be integers of shape (B, T) with T = {T} tokens, got "
                         f"{tuple(pos.shape)} of dtype {pos.dtype}")
    if pos.size:  # read on the host only when it fails: on a GPU at the next sync, not once per layer now
        def out_of_range():
            low, high = to_host(pos.min()), to_host(pos.max())
            return ValueError(f"positions must lie in [0, block_size={block_size}), got {low} .. {high}")
        failed = pos.min() < 0
        if block_size is not None:
            failed = failed | (pos.max() >= block_size)
        check_later(failed, out_of_range)
    return pos


def _check_kv_append(cache, k, v):
    """Errors for KVCache.update: k, v must fit the cache's (batch, n_kv_head, ·, head_dim) and its room."""
    expected = cache.keys.shape[:2] + cache.keys.shape[3:]
    for name, t in (("k", k), ("v", v)):
        if t.ndim != 4 or t.shape[:2] + t.shape[3:] != expected:
            raise ValueError(f"KVCache.update: {name} of shape {tuple(t.shape)} does not fit a cache of "
                             f"(batch, n_kv_head, ·, head_dim) = ({expected[0]}, {expected[1]}, ·, {expected[2]})")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"KVCache.update: k has {k.shape[2]} tokens but v has {v.shape[2]}")
    if cache.length + k.shape[2] > cache.max_len:
        raise ValueError(f"KVCache is full: it holds at most max_len={cache.max_len} tokens, has {cache.length} "
                         f"and {k.shape[2]} more were appended ({cache.length + k.shape[2]} > {cache.max_len})")
    if is_grad_enabled() and (k.requires_grad or v.requires_grad):
        raise RuntimeError("KVCache is for inference and does not carry gradients: "
                           "run decoding under `with tinytorch.no_grad():`")


class _AttentionLayer(Module):
    """Constructor, cache factory and repr shared by CausalSelfAttention and MultiHeadAttention.

    n_kv_head < n_head gives grouped-query attention (n_kv_head = 1: multi-query). rope=True
    rotates q and k (rotate-half layout, tables for block_size positions, non-persistent
    buffers `rope_cos`/`rope_sin`). window=w: each token sees the last w tokens, itself
    included. dropout applies to the attention weights and the output, in training mode.
    """

    is_causal = True

    def __init__(self, n_embd, n_head, n_kv_head=None, rope=False, window=None, dropout=0.0, bias=True,
                 block_size=None, rope_base=10000.0, rope_interleaved=False, device=None, dtype=None):
        super().__init__()
        n_embd, n_head = _check_whole(n_embd, "n_embd"), _check_whole(n_head, "n_head")
        n_kv_head = n_head if n_kv_head is None else _check_whole(n_kv_head, "n_kv_head")
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head} "
                             f"(each head gets n_embd // n_head features)")
        if n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head} "
                             f"(each key/value head serves n_head // n_kv_head query heads)")
        if window is not None:
            if not self.is_causal:
                raise ValueError(f"window={window!r} needs causal attention (it is a sliding causal window)")
            window = _check_whole(window, "window", hint=" (each token sees the last `window` tokens)")
        self.n_embd, self.n_head, self.n_kv_head = n_embd, n_head, n_kv_head
        self.head_dim = n_embd // n_head
        self.window, self.dropout, self.block_size, self.rope = window, dropout, block_size, rope
        self.rope_interleaved = rope_interleaved
        # one fused projection for q, k and v: [all q | all k | all v], GPT-2's layout when n_kv_head == n_head
        self.c_attn = Linear(n_embd, (n_head + 2 * n_kv_head) * self.head_dim, bias=bias, device=device, dtype=dtype)
        self.c_proj = Linear(n_embd, n_embd, bias=bias, device=device, dtype=dtype)
        self.resid_dropout = Dropout(dropout)
        if rope:
            if block_size is None:
                raise ValueError("rope=True needs block_size: the cos/sin tables are precomputed for "
                                 "positions 0 .. block_size-1")
            cos, sin = rope_tables(block_size, self.head_dim, rope_base, dtype, device,  # noqa: F821  (lesson)
                                   interleaved=rope_interleaved)
            self.register_buffer("rope_cos", cos, persistent=False)  # (block_size, head_dim)
            self.register_buffer("rope_sin", sin, persistent=False)

    def new_kv_cache(self, batch_size, max_len=None):
        """An empty KVCache for this layer (max_len defaults to block_size), on its device and dtype."""
        max_len = self.block_size if max_len is None else max_len
        if max_len is None:
            raise ValueError("new_kv_cache: pass max_len (this layer has no block_size)")
        weight = self.c_attn.weight
        return KVCache(batch_size, self.n_kv_head, max_len, self.head_dim, weight.dtype, weight.device)  # noqa: F821

    def _rope_rows(self, start, T, positions=None):
        """The cos and sin rows of the T new tokens: (T, hd) at start .. start+T-1, or (B, 1, T, hd) at
        explicit `positions` (B, T) (a Tensor or array of ints), one row of positions per batch row."""
        if positions is None:
            return self.rope_cos.data[start:start + T], self.rope_sin.data[start:start + T]
        pos = _check_positions(positions, T, self.block_size, self.rope_cos._device)
        return self.rope_cos.data[pos][:, None], self.rope_sin.data[pos][:, None]  # (B, 1, T, hd)

    def _check_length(self, x, start):
        if x.ndim != 3 or x.shape[-1] != self.n_embd:
            raise ValueError(f"{type(self).__name__} expects x of shape (B, T, n_embd={self.n_embd}), "
                             f"got {tuple(x.shape)}")
        end = start + x.shape[1]
        if self.block_size is not None and end > self.block_size:
            raise ValueError(f"sequence of {end} positions is longer than block_size={self.block_size}"
                             + (f" ({start} cached + {x.shape[1]} new)" if start else ""))

    def extra_repr(self):
        extras = [f"n_embd={self.n_embd}", f"n_head={self.n_head}"]
        if self.n_kv_head != self.n_head:
            extras.append(f"n_kv_head={self.n_kv_head}")
        extras += [f"{name}={getattr(self, name)}" for name in ("rope", "rope_interleaved", "window", "block_size")
                   if getattr(self, name) not in (None, False)]
        return ", ".join(extras)
