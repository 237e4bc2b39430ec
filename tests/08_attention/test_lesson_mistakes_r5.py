"""Wrong answers a mutation review saw pass both the graded cells and pytest (round 5): one test each."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn.attention import CausalSelfAttention, rope_tables
from tinytorch.nn.functional import apply_rotary_emb, attention_weights, scaled_dot_product_attention as sdpa


def numpy_attention(q, k, v, scale):
    s = q @ k.swapaxes(-1, -2) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True) @ v


def test_the_default_scale_uses_the_query_size_even_when_the_values_are_wider(rng):
    q, k, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4)), rng.standard_normal((2, 5, 6))
    out = sdpa(tt.tensor(q), tt.tensor(k), tt.tensor(v)).numpy()
    np.testing.assert_allclose(out, numpy_attention(q, k, v, 1 / np.sqrt(4)), atol=1e-6)


def test_a_nan_score_stays_nan():
    # only fully masked rows (row max -inf) are patched to zeros; a NaN from upstream must show
    weights = attention_weights(np.array([[np.nan], [1.0]], np.float32), np.array([[0.0], [2.0]], np.float32))
    assert np.isnan(weights[0]).all() and np.isfinite(weights[1]).all()


def test_rope_tables_use_their_base():
    cos, sin = rope_tables(5, 4, base=100.0)
    angles = np.outer(np.arange(5), [1.0, 0.1])
    np.testing.assert_allclose(sin.numpy(), np.sin(np.hstack([angles, angles])), atol=1e-6)
    np.testing.assert_allclose(cos.numpy(), np.cos(np.hstack([angles, angles])), atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_rope_tables_are_stored_in_the_dtype_asked_for(dtype):
    assert all(t.dtype == np.dtype(dtype) for t in rope_tables(4, 8, dtype=dtype))


def test_the_layer_passes_its_window_on():
    tt.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=4, block_size=8, window=2)
    x = tt.randn(1, 6, 16)
    moved = x.numpy().copy()
    moved[:, :3] += 1  # queries 4 and 5 see only tokens 3-5
    np.testing.assert_allclose(attn(tt.tensor(moved)).numpy()[:, 4:], attn(x).numpy()[:, 4:], atol=1e-6)


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_the_layer_rotates_queries_and_keys_only_in_its_layout(interleaved, n_kv_head):
    tt.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=4, n_kv_head=n_kv_head, block_size=8, rope=True,
                               rope_interleaved=interleaved)
    x = tt.randn(2, 5, 16)
    heads = attn.c_attn(x).numpy().reshape(2, 5, 4 + 2 * n_kv_head, 4).transpose(0, 2, 1, 3)
    cos, sin = (t.numpy() for t in rope_tables(5, 4, interleaved=interleaved))
    q, k = (apply_rotary_emb(tt.tensor(h), cos, sin, interleaved) for h in (heads[:, :4], heads[:, 4:4 + n_kv_head]))
    y = sdpa(q, k, tt.tensor(heads[:, 4 + n_kv_head:]), is_causal=True, enable_gqa=True).numpy()
    expected = attn.c_proj(tt.tensor(y.transpose(0, 2, 1, 3).reshape(2, 5, 16))).numpy()
    np.testing.assert_allclose(attn(x).numpy(), expected, atol=1e-5)


def test_residual_dropout_applies_in_training():
    tt.manual_seed(0)
    attn = CausalSelfAttention(n_embd=16, n_head=4, block_size=8, dropout=0.5).train()
    share = (attn(tt.randn(4, 8, 16)).numpy() == 0).mean()
    assert 0.35 < share < 0.65, f"resid_dropout(p=0.5) zeroes about half the outputs, got {share:.0%}"
