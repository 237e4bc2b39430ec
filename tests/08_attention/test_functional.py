"""scaled_dot_product_attention and apply_rotary_emb: gradients, masks, shapes, errors."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.autograd import gradcheck
from tinytorch.nn.functional import apply_rotary_emb, causal_mask, scaled_dot_product_attention as sdpa
from tinytorch.nn.attention import rope_tables


def leaves(device, rng, *shapes):
    return [tt.tensor(rng.standard_normal(s), device=device, requires_grad=True) for s in shapes]


QKV = [(2, 2, 4, 3)] * 3


@pytest.mark.parametrize("kwargs", [
    {}, {"is_causal": True}, {"is_causal": True, "window": 2}, {"scale": 0.7}, {"is_causal": True, "window": 1},
], ids=["plain", "causal", "window2", "scale", "window1"])
def test_gradcheck_qkv(kwargs, device, rng):
    assert gradcheck(lambda q, k, v: sdpa(q, k, v, **kwargs), leaves(device, rng, *QKV))


@pytest.mark.parametrize("scale", [None, 0.1, 2.0])
def test_scale_matches_torch(scale, device, rng):
    """scale= replaces 1/sqrt(D) in the forward and the backward (gradcheck alone passes a forward that ignores it)."""
    torch = pytest.importorskip("torch")
    q, k, v = leaves(device, rng, *QKV)
    ref = [torch.tensor(t.numpy(), requires_grad=True) for t in (q, k, v)]
    want = torch.nn.functional.scaled_dot_product_attention(*ref, is_causal=True, scale=scale)
    (want * want).sum().backward()  # a non-uniform upstream gradient
    out = sdpa(q, k, v, is_causal=True, scale=scale)
    (out * out).sum().backward()
    np.testing.assert_allclose(out.numpy(), want.detach().numpy(), atol=1e-5)
    for t, r in zip((q, k, v), ref):
        np.testing.assert_allclose(t.grad.numpy(), r.grad.numpy(), atol=1e-5)



def test_scale_zero_averages_the_values(device, rng):
    """scale=0.0 is a scale (every score 0: each query averages the values it sees), not "use 1/sqrt(D)".
    (torch's CPU kernel gives NaN rows for scale=0.0 with is_causal, from 0 * -inf, so no torch oracle here.)"""
    q, k, v = leaves(device, rng, *QKV)
    np.testing.assert_allclose(sdpa(q, k, v, scale=0.0).numpy(), v.numpy().mean(-2, keepdims=True).repeat(4, -2),
                               atol=1e-6)
    running = v.numpy().cumsum(-2) / np.arange(1, 5)[:, None]
    np.testing.assert_allclose(sdpa(q, k, v, scale=0.0, is_causal=True).numpy(), running, atol=1e-6)


def test_gradcheck_bool_mask(device, rng):
    mask = rng.random((2, 1, 4, 4)) > 0.4
    mask[..., 1] = True
    m = tt.tensor(mask, device=device)
    assert gradcheck(lambda q, k, v: sdpa(q, k, v, attn_mask=m), leaves(device, rng, *QKV))


def test_gradcheck_additive_mask_and_its_gradient(device, rng):
    q, k, v, bias = leaves(device, rng, *QKV, (2, 4, 4))
    assert gradcheck(lambda q, k, v, b: sdpa(q, k, v, attn_mask=b, is_causal=True), (q, k, v, bias))


def test_gradcheck_cross_lengths_and_decode_alignment(device, rng):
    assert gradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True),
                     leaves(device, rng, (1, 2, 2, 3), (1, 2, 5, 3), (1, 2, 5, 4)))


@pytest.mark.parametrize("kv_heads", [2, 1], ids=["gqa", "mqa"])
def test_gradcheck_grouped_query(kv_heads, device, rng):
    shapes = [(2, 4, 3, 2), (2, kv_heads, 3, 2), (2, kv_heads, 3, 2)]
    assert gradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True, enable_gqa=True), leaves(device, rng, *shapes))
    mask = tt.tensor(rng.random((1, 4, 3, 3)) > 0.3, device=device)
    assert gradcheck(lambda q, k, v: sdpa(q, k, v, attn_mask=mask, enable_gqa=True), leaves(device, rng, *shapes))


def test_grouped_query_equals_repeated_heads(device, rng):
    q, k, v = leaves(device, rng, (1, 6, 4, 3), (1, 2, 4, 3), (1, 2, 4, 3))
    out = sdpa(q, k, v, is_causal=True, enable_gqa=True)
    out.sum().backward()
    k3, v3 = (tt.tensor(np.repeat(t.data, 3, axis=1), device=device, requires_grad=True) for t in (k, v))
    ref = sdpa(tt.tensor(q.data, device=device), k3, v3, is_causal=True)
    ref.sum().backward()
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-12)
    np.testing.assert_allclose(k.grad.numpy(), k3.grad.numpy().reshape(1, 2, 3, 4, 3).sum(2), atol=1e-12,
                               err_msg="a shared key head's gradient is the sum over the heads that use it")


def test_gradcheck_rope_then_attention(device, rng):
    cos, sin = (t.to(tt.float64) for t in rope_tables(4, 4))

    def fn(q, k, v):
        return sdpa(apply_rotary_emb(q, cos, sin), apply_rotary_emb(k, cos, sin), v, is_causal=True)
    assert gradcheck(fn, leaves(device, rng, (1, 2, 4, 4), (1, 2, 4, 4), (1, 2, 4, 4)))


def test_any_leading_dims_and_2d(device, rng):
    q = tt.randn(2, 3, 4, 5, 8, device=device)
    assert sdpa(q, q, q).shape == (2, 3, 4, 5, 8)
    x = tt.randn(5, 8, device=device)
    ref = sdpa(x[None], x[None], x[None], is_causal=True)
    np.testing.assert_allclose(sdpa(x, x, x, is_causal=True).numpy(), ref.numpy()[0], atol=1e-6)


def test_float32_in_float32_out_and_grads(device):
    q = tt.randn(2, 2, 6, 4, device=device, requires_grad=True)
    out = sdpa(q, q, q, is_causal=True, window=3)
    out.sum().backward()
    assert out.dtype == tt.float32 and q.grad.dtype == tt.float32


def test_fully_masked_rows_are_zero_and_finite(device, rng):
    q, k, v = leaves(device, rng, (1, 1, 3, 2), (1, 1, 3, 2), (1, 1, 3, 2))
    mask = tt.tensor(np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=bool), device=device)
    out = sdpa(q, k, v, attn_mask=mask)
    assert np.all(out.numpy()[0, 0, 1] == 0), "a query that may see nothing outputs zeros"
    out.sum().backward()
    for t in (q, k, v):
        assert np.isfinite(t.grad.numpy()).all(), "no NaN in the backward"
    assert gradcheck(lambda a, b, c: sdpa(a, b, c, attn_mask=mask), (q, k, v))
    # decode convention: with more queries than keys, early queries see nothing
    q2, k2, v2 = leaves(device, rng, (1, 1, 4, 2), (1, 1, 2, 2), (1, 1, 2, 2))
    out = sdpa(q2, k2, v2, is_causal=True)
    assert np.all(out.numpy()[0, 0, :2] == 0) and np.isfinite(out.numpy()).all()


def test_causal_mask_is_cached_and_read_only(device):
    from tinytorch.nn.functional import _causal_bias
    dev = tt.device(device)
    a = _causal_bias(7, 7, None, dev, np.dtype(np.float32))
    assert a is _causal_bias(7, 7, None, dev, np.dtype(np.float32)), "one mask per shape, built once"
    assert _causal_bias(1, 9, None, dev, np.dtype(np.float32)) is None, "nothing to mask for a last query"
    if isinstance(a, np.ndarray):
        assert not a.flags.writeable


def test_window_mask_shape():
    m = causal_mask(6, 6, window=3)
    assert m.sum(1).tolist() == [1, 2, 3, 3, 3, 3]


def test_dropout_is_seeded_and_scaled(device):
    q = tt.randn(1, 1, 50, 4, device=device)
    v = tt.ones(1, 1, 50, 4, device=device)
    tt.manual_seed(3)
    a = sdpa(q, q, v, dropout_p=0.5)
    tt.manual_seed(3)
    b = sdpa(q, q, v, dropout_p=0.5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert abs(a.numpy().mean() - 1) < 0.2, "inverted dropout keeps the expected output"
    assert np.all(sdpa(q, q, v, dropout_p=1.0).numpy() == 0)


def test_dropout_draws_the_package_mask(device):
    """Attention's dropout is tinytorch's one mask: nn.functional.dropout_mask, drawn after the seed."""
    from tinytorch.nn.functional import attention_weights, dropout_mask
    q, k, v = (tt.randn(1, 2, 5, 4, device=device) for _ in range(3))
    tt.manual_seed(7)
    out = sdpa(q, k, v, dropout_p=0.4).numpy()
    tt.manual_seed(7)
    keep = dropout_mask((1, 2, 5, 5), 0.4, np.float32, tt.device("cpu"))
    weights = attention_weights(q.numpy() * 0.5, k.numpy())  # scale 1/sqrt(4)
    np.testing.assert_allclose(out, (weights * keep) @ v.numpy(), atol=1e-6)


def test_dropout_gradient(device, rng):
    q, k, v = leaves(device, rng, *QKV)

    def fn(a, b, c):
        tt.manual_seed(5)  # the same dropout mask at every evaluation
        return sdpa(a, b, c, dropout_p=0.3, is_causal=True)
    assert gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("call, match", [
    (lambda q: sdpa(q, q[..., :3], q), "feature size"),
    (lambda q: sdpa(q, q[:, :1], q[:, :1]), "enable_gqa"),
    (lambda q: sdpa(q, q[:, :1, :, :], q[:, :2]), "feature size|dimensions"),
    (lambda q: sdpa(q, q, q, window=2), "is_causal"),
    (lambda q: sdpa(q, q, q, is_causal=True, window=0), "window"),
    (lambda q: sdpa(q, q, q, attn_mask=tt.ones(3, 3)), "does not broadcast"),
    (lambda q: sdpa(q, q, q, dropout_p=1.5), "dropout_p"),
    (lambda q: sdpa(q, q, q, attn_mask=tt.ones(4, 4, dtype=tt.int64)), "bool"),
], ids=["head-dim", "gqa-flag", "kv-mismatch", "window-not-causal", "window-0", "mask-shape", "dropout",
        "mask-dtype"])
def test_errors_name_the_problem(call, match, device):
    q = tt.randn(1, 2, 4, 4, device=device)
    with pytest.raises((ValueError, TypeError), match=match):
        call(q)


def test_gqa_heads_must_divide(device):
    q = tt.randn(1, 3, 4, 4, device=device)
    k = tt.randn(1, 2, 4, 4, device=device)
    with pytest.raises(ValueError, match=r"\(2\) must divide query heads \(3\)"):
        sdpa(q, k, k, enable_gqa=True)


def test_rope_relative_and_backward(device, rng):
    cos, sin = rope_tables(20, 8, device=device)
    q, k = (np.tile(rng.standard_normal(8).astype(np.float32), (20, 1)) for _ in range(2))
    qs = apply_rotary_emb(tt.tensor(q, device=device), cos, sin).numpy()
    ks = apply_rotary_emb(tt.tensor(k, device=device), cos, sin).numpy()
    scores = {(m, n): qs[m] @ ks[n] for m in range(20) for n in range(20)}
    for m in range(3, 20):
        assert np.isclose(scores[(m, m - 3)], scores[(3, 0)], atol=1e-4), "q·k depends only on the offset"
    assert np.allclose(qs[0], q[0]), "position 0 is not rotated"
    cos64, sin64 = (t.to(tt.float64) for t in rope_tables(5, 6, device=device))
    assert gradcheck(lambda x: apply_rotary_emb(x, cos64, sin64), leaves(device, rng, (2, 5, 6)))
    with pytest.raises(ValueError, match="even"):
        rope_tables(4, 5)
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        apply_rotary_emb(tt.randn(3, 8, device=device), cos, sin)


def test_rope_matches_rotate_half_reference():
    """Hugging Face Llama's formulation, written out: x * cos + rotate_half(x) * sin."""
    x = np.random.default_rng(1).standard_normal((3, 6, 8)).astype(np.float32)
    inv_freq = 1.0 / (10000 ** (np.arange(0, 8, 2) / 8))
    freqs = np.outer(np.arange(6), inv_freq)
    emb = np.concatenate([freqs, freqs], -1)
    rotate_half = np.concatenate([-x[..., 4:], x[..., :4]], -1)
    ref = x * np.cos(emb) + rotate_half * np.sin(emb)
    cos, sin = rope_tables(6, 8)
    np.testing.assert_allclose(apply_rotary_emb(tt.tensor(x), cos, sin).numpy(), ref, atol=1e-5)
