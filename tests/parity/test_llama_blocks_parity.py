"""Llama-style blocks against PyTorch: RMSNorm, SwiGLU, RoPE with explicit positions and both layouts."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
from tinytorch import nn  # noqa: E402
from tinytorch.nn import functional as F  # noqa: E402

pytestmark = pytest.mark.parity
RTOL = ATOL = 1e-5


def grads_match(ours, theirs, ours_params, theirs_params):
    """Backward sum(out * w) on both; compare every named gradient."""
    w = np.random.default_rng(1).standard_normal(tuple(theirs.shape)).astype(np.float32)
    (theirs * torch.tensor(w)).sum().backward()
    (ours * tt.tensor(w)).sum().backward()
    for name, t in theirs_params.items():
        np.testing.assert_allclose(ours_params[name].grad.numpy(), t.grad.numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"grad of {name}")


@pytest.mark.parametrize("shape, eps", [(8, None), ((3, 8), 1e-6)])
def test_rms_norm_matches_torch(shape, eps):
    x = np.random.default_rng(0).standard_normal((2, 3, 8)).astype(np.float32) * 3
    theirs = torch.nn.RMSNorm(shape, eps=eps)
    ours = nn.RMSNorm(shape, eps=eps)
    gamma = np.random.default_rng(2).standard_normal(theirs.weight.shape).astype(np.float32)
    theirs.weight.data = torch.tensor(gamma)
    ours.load_state_dict({"weight": tt.tensor(gamma)})
    tx, ox = torch.tensor(x, requires_grad=True), tt.tensor(x, requires_grad=True)
    ref, out = theirs(tx), ours(ox)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    grads_match(out, ref, {"x": ox, "weight": ours.weight}, {"x": tx, "weight": theirs.weight})


def test_rms_norm_without_affine_and_eps_default():
    x = np.full((1, 4), 1e-5, dtype=np.float32)  # tiny rows: eps decides the output
    ref = torch.nn.RMSNorm(4, elementwise_affine=False)(torch.tensor(x)).numpy()
    layer = nn.RMSNorm(4, elementwise_affine=False)
    assert not list(layer.parameters())
    np.testing.assert_allclose(layer(tt.tensor(x)).numpy(), ref, rtol=1e-5)


def test_swiglu_matches_torch_composition():
    from tinytorch.models.gpt import GPTConfig, SwiGLU
    tt.manual_seed(0)
    ours = SwiGLU(GPTConfig.llama_style(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=12))
    assert ours.c_fc.weight.shape == (32, 12), "hidden width 8·12/3 = 32"
    w = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in ours.named_parameters()}
    x = np.random.default_rng(0).standard_normal((2, 5, 12)).astype(np.float32)
    tx, ox = torch.tensor(x, requires_grad=True), tt.tensor(x, requires_grad=True)
    gate = torch.nn.functional.silu(torch.nn.functional.linear(tx, w["c_gate.weight"]))
    ref = torch.nn.functional.linear(gate * torch.nn.functional.linear(tx, w["c_fc.weight"]), w["c_proj.weight"])
    out = ours(ox)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    grads_match(out, ref, {"x": ox, **dict(ours.named_parameters())}, {"x": tx, **w})


def torch_rope(x, positions, base, interleaved):
    """Reference RoPE written independently: complex multiplication (interleaved, Meta's Llama code)
    or Hugging Face's rotate_half (GPT-NeoX layout). x (B, H, T, D), positions (B, T)."""
    D = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # (B, T, D/2)
    if interleaved:
        rot = torch.polar(torch.ones_like(angles), angles)[:, None].to(torch.complex64)  # (B, 1, T, D/2)
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], D // 2, 2).contiguous())
        return torch.view_as_real(pairs * rot).flatten(-2)
    emb = torch.cat([angles, angles], dim=-1)[:, None].to(torch.float32)  # (B, 1, T, D)
    x1, x2 = x[..., :D // 2], x[..., D // 2:]
    return x * emb.cos() + torch.cat([-x2, x1], dim=-1) * emb.sin()


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_with_positions_matches_torch(interleaved):
    from tinytorch.nn.attention import rope_tables
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 8)).astype(np.float32)
    positions = np.array([[0, 0, 0, 1, 2], [7, 8, 9, 10, 11]])  # a left-padded row, and a row at an offset
    cos, sin = rope_tables(16, 8, base=100.0, interleaved=interleaved)
    cos, sin = cos.numpy()[positions][:, None], sin.numpy()[positions][:, None]  # (B, 1, T, D)
    tx, ox = torch.tensor(x, requires_grad=True), tt.tensor(x, requires_grad=True)
    ref = torch_rope(tx, torch.tensor(positions), 100.0, interleaved)
    out = F.apply_rotary_emb(ox, cos, sin, interleaved=interleaved)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    grads_match(out, ref, {"x": ox}, {"x": tx})


@pytest.mark.parametrize("interleaved", [False, True])
def test_attention_positions_match_torch(interleaved):
    """The layer with explicit positions: q and k rotated as the torch reference does, then causal attention."""
    tt.manual_seed(0)
    attn = nn.CausalSelfAttention(16, 4, n_kv_head=2, rope=True, bias=False, block_size=16,
                                  rope_interleaved=interleaved)
    x = np.random.default_rng(1).standard_normal((2, 5, 16)).astype(np.float32)
    positions = np.array([[0, 0, 0, 1, 2], [3, 4, 5, 6, 7]])
    out = attn(tt.tensor(x), positions=tt.tensor(positions)).numpy()
    Wqkv, Wo = (torch.tensor(attn.c_attn.weight.numpy()), torch.tensor(attn.c_proj.weight.numpy()))
    qkv = (torch.tensor(x) @ Wqkv.T).reshape(2, 5, 8, 4).transpose(1, 2)
    q, k, v = qkv[:, :4], qkv[:, 4:6], qkv[:, 6:]
    pos = torch.tensor(positions)
    q, k = torch_rope(q, pos, 10000.0, interleaved), torch_rope(k, pos, 10000.0, interleaved)
    y = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                         is_causal=True)
    ref = y.transpose(1, 2).reshape(2, 5, 16) @ Wo.T
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-4, atol=1e-5)
