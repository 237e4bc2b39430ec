"""Attention against PyTorch (the oracle): outputs and input/parameter gradients, float32."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
from tinytorch.nn.functional import scaled_dot_product_attention as sdpa  # noqa: E402

pytestmark = pytest.mark.parity
RTOL, ATOL = 1e-5, 1e-6
# Gradients: dS = P ⊙ (dP - rowsum(dP ⊙ P)) cancels large terms, so both float32 implementations
# sit ~1e-6 x (largest gradient) away from a float64 reference (measured: PyTorch's own error is
# as large as ours). Their absolute tolerance is therefore 2e-6 x max(1, max |gradient|).
GRAD_ATOL = 2e-6
F = torch.nn.functional


def close(ours, theirs, what, rtol=RTOL, atol=ATOL):
    ours = ours.cpu().numpy() if isinstance(ours, tt.Tensor) else ours
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=rtol, atol=atol, err_msg=what)


def close_grad(ours, theirs, what):
    scale = max(1.0, float(theirs.abs().max()))
    close(ours, theirs, what, atol=GRAD_ATOL * scale)


def run_both(shapes, device, rng, tt_kwargs=None, torch_kwargs=None, mask=None):
    """Attention in both frameworks on the same inputs; compare out and dq, dk, dv."""
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    ours = [tt.tensor(a, device=device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    tt_mask = None if mask is None else tt.tensor(mask, device=device)
    torch_mask = None if mask is None else torch.tensor(mask)
    out = sdpa(*ours, attn_mask=tt_mask, **(tt_kwargs or {}))
    ref = F.scaled_dot_product_attention(*theirs, attn_mask=torch_mask, **(torch_kwargs or tt_kwargs or {}))
    assert out.shape == tuple(ref.shape) and out.dtype == tt.float32
    close(out, ref, "output")
    w = rng.standard_normal(ref.shape).astype(np.float32)
    (out * tt.tensor(w, device=device)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    for name, a, b in zip("qkv", ours, theirs):
        assert a.grad.dtype == tt.float32, f"d{name} must stay float32"
        close_grad(a.grad, b.grad, f"gradient of {name}")


SHAPES = [(2, 3, 5, 8)] * 3


@pytest.mark.parametrize("kwargs", [{}, {"is_causal": True}, {"scale": 0.3}, {"is_causal": True, "scale": 1.7}],
                         ids=["plain", "causal", "scale", "causal_scale"])
def test_sdpa_matches_torch(kwargs, device, rng):
    run_both(SHAPES, device, rng, kwargs)


def test_bool_mask(device, rng):
    mask = rng.random((2, 1, 5, 5)) > 0.3
    mask[..., 0] = True  # torch's fully masked rows are a separate test
    run_both(SHAPES, device, rng, mask=mask)


def test_float_mask(device, rng):
    mask = rng.standard_normal((5, 5)).astype(np.float32)
    mask[1, 2:] = -np.inf
    run_both(SHAPES, device, rng, mask=mask)


def test_cross_attention_lengths(device, rng):
    run_both([(2, 3, 4, 8), (2, 3, 7, 8), (2, 3, 7, 6)], device, rng)


def test_grouped_query(device, rng):
    kwargs = {"is_causal": True, "enable_gqa": True}
    run_both([(2, 6, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8)], device, rng, kwargs)
    run_both([(2, 4, 5, 8), (2, 1, 5, 8), (2, 1, 5, 8)], device, rng, kwargs)  # multi-query


def test_grouped_query_with_per_head_mask(device, rng):
    mask = rng.random((1, 6, 5, 5)) > 0.4
    mask[..., 0] = True
    run_both([(2, 6, 5, 8), (2, 2, 5, 8), (2, 2, 5, 8)], device, rng, {"enable_gqa": True}, mask=mask)


def test_window_equals_banded_bool_mask(device, rng):
    t = 6
    i, j = np.arange(t)[:, None], np.arange(t)[None, :]
    band = (j <= i) & (i - j < 3)
    arrays = [rng.standard_normal((1, 2, t, 4)).astype(np.float32) for _ in range(3)]
    out = sdpa(*(tt.tensor(a, device=device) for a in arrays), is_causal=True, window=3)
    ref = F.scaled_dot_product_attention(*(torch.tensor(a) for a in arrays), attn_mask=torch.tensor(band))
    close(out, ref, "window=3 is the banded causal mask")


def test_fully_masked_row_gives_zeros_like_torch(device, rng):
    mask = np.ones((5, 5), dtype=bool)
    mask[2] = False
    arrays = [rng.standard_normal((1, 2, 5, 4)).astype(np.float32) for _ in range(3)]
    ours = [tt.tensor(a, device=device, requires_grad=True) for a in arrays]
    out = sdpa(*ours, attn_mask=tt.tensor(mask, device=device))
    ref = F.scaled_dot_product_attention(*(torch.tensor(a) for a in arrays), attn_mask=torch.tensor(mask))
    assert np.all(out.cpu().numpy()[:, :, 2] == 0), "a query that sees nothing outputs 0"
    if not torch.isnan(ref).any():  # torch >= 2.5 also returns 0 there
        close(out, ref, "fully masked row")
    out.sum().backward()
    for t in ours:
        assert np.isfinite(t.grad.cpu().numpy()).all(), "no NaN in the backward of a fully masked row"
    assert np.all(ours[0].grad.cpu().numpy()[:, :, 2] == 0)


def test_learned_float_mask_gets_torch_gradient(device, rng):
    arrays = [rng.standard_normal((2, 3, 4, 8)).astype(np.float32) for _ in range(3)]
    bias = rng.standard_normal((3, 4, 4)).astype(np.float32)
    ours = [tt.tensor(a, device=device) for a in arrays]
    ours_bias = tt.tensor(bias, device=device, requires_grad=True)
    theirs_bias = torch.tensor(bias, requires_grad=True)
    out = sdpa(*ours, attn_mask=ours_bias)
    ref = F.scaled_dot_product_attention(*(torch.tensor(a) for a in arrays), attn_mask=theirs_bias)
    close(out, ref, "output with a float mask")
    out.sum().backward()
    ref.sum().backward()
    close_grad(ours_bias.grad, theirs_bias.grad, "gradient of the float mask")


def torch_rope(x, cos, sin):
    """Hugging Face Llama's apply_rotary_pos_emb: x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


def torch_causal_self_attention(x, w_attn, b_attn, w_proj, b_proj, n_head, n_kv_head, rope, window, base=10000.0):
    """The same layer written with torch ops (nanoGPT / Llama layout)."""
    B, T, C = x.shape
    hd = C // n_head
    qkv = F.linear(x, w_attn, b_attn)
    q, k, v = qkv.split([n_head * hd, n_kv_head * hd, n_kv_head * hd], dim=2)
    q = q.view(B, T, n_head, hd).transpose(1, 2)
    k = k.view(B, T, n_kv_head, hd).transpose(1, 2)
    v = v.view(B, T, n_kv_head, hd).transpose(1, 2)
    if rope:
        inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        freqs = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().float(), emb.sin().float()
        q, k = torch_rope(q, cos, sin), torch_rope(k, cos, sin)
    if window is None:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    else:
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=(j <= i) & (i - j < window), enable_gqa=True)
    return F.linear(y.transpose(1, 2).reshape(B, T, C), w_proj, b_proj)


@pytest.mark.parametrize("config", [{}, {"n_kv_head": 2}, {"n_kv_head": 1}, {"rope": True, "n_kv_head": 2},
                                    {"window": 3, "rope": True}],
                         ids=["mha", "gqa", "mqa", "rope-gqa", "window-rope"])
def test_causal_self_attention_matches_torch(config, device, rng):
    from tinytorch.nn.attention import CausalSelfAttention
    tt.manual_seed(0)
    n_kv_head = config.get("n_kv_head", 4)
    attn = CausalSelfAttention(32, 4, block_size=16, **config).to(device)
    x = rng.standard_normal((2, 9, 32)).astype(np.float32)
    params = [attn.c_attn.weight, attn.c_attn.bias, attn.c_proj.weight, attn.c_proj.bias]
    theirs = [torch.tensor(p.cpu().numpy(), requires_grad=True) for p in params]
    x_ours = tt.tensor(x, device=device, requires_grad=True)
    x_theirs = torch.tensor(x, requires_grad=True)
    out = attn(x_ours)
    ref = torch_causal_self_attention(x_theirs, *theirs, 4, n_kv_head, config.get("rope", False),
                                      config.get("window"))
    close(out, ref, "layer output")
    w = rng.standard_normal(ref.shape).astype(np.float32)
    (out * tt.tensor(w, device=device)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    close_grad(x_ours.grad, x_theirs.grad, "gradient of the input")
    for name, p, t in zip(("c_attn.weight", "c_attn.bias", "c_proj.weight", "c_proj.bias"), params, theirs):
        close_grad(p.grad, t.grad, f"gradient of {name}")
