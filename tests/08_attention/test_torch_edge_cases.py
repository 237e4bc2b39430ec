"""Edge inputs where scaled_dot_product_attention and the attention layers once disagreed with PyTorch."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn.attention import CausalSelfAttention, MultiHeadAttention
from tinytorch.nn.functional import scaled_dot_product_attention as sdpa


def leaves(device, rng, dtype, *shapes):
    return [tt.tensor(rng.standard_normal(s).astype(dtype), device=device, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("heads", [(4, 4), (4, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("is_causal", [False, True])
def test_empty_batch(heads, is_causal, device, rng):
    """A batch of 0 sequences gives an empty output and empty gradients (the fold to (*batch, Hkv, g*Tq, D)
    could not infer a -1 axis from 0 entries)."""
    h, hkv = heads
    q, k, v = leaves(device, rng, np.float32, (0, h, 3, 5), (0, hkv, 3, 5), (0, hkv, 3, 2))
    out = sdpa(q, k, v, is_causal=is_causal, enable_gqa=True)
    assert out.shape == (0, h, 3, 2) and out.dtype == np.float32
    out.sum().backward()
    assert (q.grad.shape, k.grad.shape, v.grad.shape) == ((0, h, 3, 5), (0, hkv, 3, 5), (0, hkv, 3, 2))


@pytest.mark.parametrize("cls", [CausalSelfAttention, MultiHeadAttention])
def test_layers_take_an_empty_batch(cls, device):
    tt.manual_seed(0)
    layer = cls(n_embd=8, n_head=2, n_kv_head=1, block_size=4, device=device)
    x = tt.zeros(0, 3, 8, device=device, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 3, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 8)


def test_no_keys_gives_zeros(device, rng):
    """Tk = 0: every query averages over no value, so the output is 0 (PyTorch's). float16, which takes the
    lesson's per-row softmax (as a GPU does), failed with a max over an empty axis."""
    q, k, v = leaves(device, rng, np.float16, (2, 3, 4, 5), (2, 3, 0, 5), (2, 3, 0, 6))
    out = sdpa(q, k, v)
    assert out.shape == (2, 3, 4, 6) and out.dtype == np.float16
    np.testing.assert_array_equal(out.cpu().numpy(), np.zeros((2, 3, 4, 6), np.float16))
    out.sum().backward()
    np.testing.assert_array_equal(q.grad.cpu().numpy(), np.zeros((2, 3, 4, 5), np.float16))
    assert k.grad.shape == (2, 3, 0, 5) and v.grad.shape == (2, 3, 0, 6)


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_empty_inputs_match_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    for shapes in [((0, 2, 3, 4), (0, 2, 5, 4), (0, 2, 5, 3)), ((2, 2, 3, 4), (2, 2, 0, 4), (2, 2, 0, 3))]:
        arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
        out = sdpa(*(tt.tensor(a) for a in arrays))
        want = torch.nn.functional.scaled_dot_product_attention(*(torch.tensor(a) for a in arrays))
        assert out.shape == tuple(want.shape) and str(out.dtype).endswith(dtype)
        np.testing.assert_array_equal(out.numpy(), want.numpy())
