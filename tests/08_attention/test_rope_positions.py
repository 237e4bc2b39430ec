"""RoPE with explicit per-row positions and the interleaved layout, in the function and in the layer."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.autograd import gradcheck
from tinytorch.nn import functional as F
from tinytorch.nn.attention import rope_tables


def test_interleaved_tables_and_rotation_pair_neighbours():
    cos, sin = rope_tables(4, 6, interleaved=True)
    half_cos, _ = rope_tables(4, 6)
    np.testing.assert_allclose(cos.numpy()[:, 0::2], half_cos.numpy()[:, :3], rtol=1e-6)
    np.testing.assert_array_equal(cos.numpy()[:, 0::2], cos.numpy()[:, 1::2])
    x = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    perm = np.r_[0:6:2, 1:6:2]  # interleaved = rotate-half on the features reordered evens-then-odds
    inter = F.apply_rotary_emb(tt.tensor(x), cos, sin, interleaved=True).numpy()
    halves = F.apply_rotary_emb(tt.tensor(x[..., perm]), *rope_tables(4, 6)).numpy()
    np.testing.assert_allclose(inter[..., perm], halves, atol=1e-6)
    xs = tt.tensor(x, dtype="float64", requires_grad=True)
    assert gradcheck(lambda a: F.apply_rotary_emb(a, cos.numpy().astype(np.float64), sin.numpy().astype(np.float64),
                                                  interleaved=True), (xs,))


def test_tables_are_accurate_at_long_positions():
    """Angles t·θ computed in float32 are off by ~1e-4 at t = 4095; in float64, then cast, only by rounding."""
    cos, sin = rope_tables(4096, 64)
    angles = np.outer(np.arange(4096), 10000.0 ** (-np.arange(0, 64, 2) / 64))
    np.testing.assert_allclose(cos.numpy()[:, :32], np.cos(angles), atol=1e-6)
    np.testing.assert_allclose(sin.numpy()[:, 32:], np.sin(angles), atol=1e-6)


def test_tables_must_fit_x():
    cos, sin = rope_tables(5, 4)
    with pytest.raises(ValueError, match=r"\(B, 1, T, D\)"):
        F.apply_rotary_emb(tt.ones(2, 3, 5, 4), cos.numpy()[None, None].repeat(3, 0), sin.numpy()[None, None].repeat(3, 0))


@pytest.mark.parametrize("interleaved", [False, True])
def test_layer_positions_default_and_decode_with_a_cache(interleaved):
    tt.manual_seed(0)
    attn = nn.CausalSelfAttention(16, 4, n_kv_head=2, rope=True, block_size=12, rope_interleaved=interleaved)
    x = tt.randn(2, 6, 16)
    positions = np.array([[0, 0, 1, 2, 3, 4], [2, 3, 4, 5, 6, 7]])
    with tt.no_grad():
        np.testing.assert_allclose(attn(x, positions=np.arange(6)).numpy(), attn(x).numpy(), atol=1e-6)
        full = attn(x, positions=positions).numpy()
        cache = attn.new_kv_cache(batch_size=2)
        steps = [attn(x[:, :4], kv_cache=cache, positions=positions[:, :4]).numpy()]
        steps += [attn(x[:, t:t + 1], kv_cache=cache, positions=positions[:, t:t + 1]).numpy() for t in (4, 5)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="block_size=12"):
        attn(x, positions=positions + 6)
    with pytest.raises(ValueError, match="shape \\(B, T\\)"):
        attn(x, positions=np.arange(5))
