"""Layers and nn.functional: values, shapes, errors, and gradcheck of every differentiable op."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.autograd import gradcheck
from tinytorch.nn import functional as F


def leaf(rng, *shape, device="cpu"):
    return tt.tensor(rng.standard_normal(shape), device=device, requires_grad=True)  # float64 for gradcheck


def test_linear_values_and_leading_dims(device, rng):
    layer = nn.Linear(3, 2, device=device)
    x = tt.tensor(rng.standard_normal((4, 5, 3)).astype(np.float32), device=device)
    y = layer(x)
    assert y.shape == (4, 5, 2) and y.dtype == np.float32 and y.device == tt.device(device)
    expected = x.numpy() @ layer.weight.numpy().T + layer.bias.numpy()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert layer(tt.ones(3, device=device)).shape == (2,), "a single vector works too"


def test_linear_gradcheck(device, rng):
    x, w, b = leaf(rng, 2, 3, 4, device=device), leaf(rng, 5, 4, device=device), leaf(rng, 5, device=device)
    assert gradcheck(F.linear, (x, w, b))
    assert gradcheck(lambda a, c: F.linear(a, c), (x, w))


def test_linear_grads_only_what_requires_grad(device):
    """A first layer (data input) still trains its weight; a frozen layer still passes dL/dx back."""
    x = tt.tensor([[1.0, 2.0]], device=device)
    layer = nn.Linear(2, 3, device=device)
    layer(x).sum().backward()
    assert x.grad is None and layer.weight.grad is not None, "the input needs no grad, the weight does"
    np.testing.assert_allclose(layer.weight.grad.cpu().numpy(), [[1, 2]] * 3)
    layer.zero_grad()
    layer.weight.requires_grad_(False)
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert layer.weight.grad is None and x.grad is not None, "a frozen weight gets none, the input does"
    np.testing.assert_allclose(x.grad.cpu().numpy(), layer.weight.cpu().numpy().sum(axis=0)[None], rtol=1e-6)


def test_linear_errors_name_shapes(device):
    layer = nn.Linear(3, 2, device=device)
    with pytest.raises(RuntimeError, match=r"\(4, 5\).*in_features=3"):
        layer(tt.ones(4, 5, device=device))
    with pytest.raises(TypeError, match="floating"):
        layer(tt.ones(4, 3, dtype=tt.int64, device=device))


def test_linear_init_bounds_and_dtype():
    tt.manual_seed(0)
    layer = nn.Linear(400, 300, dtype=tt.float64)
    bound = 1 / math.sqrt(400)
    for p in (layer.weight, layer.bias):
        assert p.dtype == np.float64 and np.abs(p.data).max() <= bound
    assert abs(layer.weight.data.std() - bound / math.sqrt(3)) < 0.02 * bound
    assert nn.Linear(2, 2, bias=False).bias is None


def test_embedding_forward_and_scatter_add_backward(device):
    emb = nn.Embedding(5, 3, device=device)
    idx = tt.tensor([[1, 1, 4], [1, 0, 0]], device=device)
    out = emb(idx)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out.numpy()[0, 2], emb.weight.numpy()[4])
    g = np.arange(18, dtype=np.float32).reshape(2, 3, 3)
    out.backward(tt.tensor(g, device=device))
    grad = emb.weight.grad.numpy()
    np.testing.assert_allclose(grad[1], g[0, 0] + g[0, 1] + g[1, 0], err_msg="repeated indices add up")
    np.testing.assert_allclose(grad[0], g[1, 1] + g[1, 2])
    np.testing.assert_array_equal(grad[[2, 3]], 0)


def test_embedding_padding_idx(device):
    tt.manual_seed(0)
    emb = nn.Embedding(4, 2, padding_idx=-1, device=device)
    assert emb.padding_idx == 3 and (emb.weight.numpy()[3] == 0).all(), "the padding row starts at zero"
    emb(tt.tensor([3, 3, 1], device=device)).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[3], 0)
    np.testing.assert_array_equal(emb.weight.grad.numpy()[1], 1)


def test_embedding_gradcheck_through_weight(device, rng):
    weight = leaf(rng, 6, 3, device=device)
    idx = tt.tensor([[0, 2, 2], [5, 0, 1]], device=device)
    assert gradcheck(lambda w: F.embedding(idx, w), (weight,))
    weight.grad = None
    F.embedding(idx, weight, padding_idx=2).sum().backward()
    assert (weight.grad.numpy()[2] == 0).all()


def test_embedding_errors(device):
    emb = nn.Embedding(5, 2, device=device)
    with pytest.raises(IndexError, match=r"index 7 is out of range for num_embeddings=5"):
        emb(tt.tensor([1, 7], device=device))
    with pytest.raises(IndexError, match=r"index -1 is out of range"):
        emb(tt.tensor([-1, 2], device=device))
    with pytest.raises(TypeError, match=r"integers.*float32.*\.long\(\)"):
        emb(tt.tensor([1.0, 2.0], device=device))
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(5, 2, padding_idx=5)


def test_embedding_init_is_standard_normal():
    tt.manual_seed(0)
    w = nn.Embedding(1000, 100).weight.numpy()
    assert abs(w.mean()) < 0.01 and abs(w.std() - 1) < 0.01


@pytest.mark.parametrize("shape, normalized", [((4, 6), 6), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((5,), 5)])
def test_layer_norm_gradcheck(device, rng, shape, normalized):
    norm = (normalized,) if isinstance(normalized, int) else normalized
    x, w, b = leaf(rng, *shape, device=device), leaf(rng, *norm, device=device), leaf(rng, *norm, device=device)
    assert gradcheck(lambda a, c, d: F.layer_norm(a, normalized, c, d), (x, w, b))
    assert gradcheck(lambda a: F.layer_norm(a, normalized), (x,))


def test_layer_norm_module(device, rng):
    ln = nn.LayerNorm((3, 4), device=device)
    assert ln.weight.shape == (3, 4) and (ln.weight.numpy() == 1).all() and (ln.bias.numpy() == 0).all()
    x = tt.tensor(rng.standard_normal((2, 3, 4)).astype(np.float32) * 10 + 3, device=device)
    y = ln(x).numpy().reshape(2, -1)
    np.testing.assert_allclose(y.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=1), 1, atol=1e-3)
    assert ln(x).dtype == np.float32
    plain = nn.LayerNorm(4, elementwise_affine=False)
    assert plain.weight is None and plain.num_parameters() == 0
    assert nn.LayerNorm(4, bias=False).bias is None
    with pytest.raises(RuntimeError, match=r"normalized_shape \[3, 4\].*\(2, 4, 3\)"):
        ln(tt.ones(2, 4, 3, device=device))


def test_layer_norm_is_one_node_and_saves_little(device):
    x = tt.randn(8, 16, device=device, requires_grad=True)
    ln = nn.LayerNorm(16, device=device)
    out = ln(x)
    assert out._parents[0] is x and out._parents[1] is ln.weight and out._parents[2] is ln.bias
    saved = [c.cell_contents for c in out._backward.__closure__ if hasattr(c.cell_contents, "nbytes")]
    assert sum(a.size == x.numel() for a in saved) == 1, "only x-hat is input-sized"
    assert sum(a.nbytes for a in saved) <= x.data.nbytes + 8 * 4, "x-hat and one 1/sigma per row"


def test_dropout_gradcheck_with_fixed_mask(device, rng):
    x = leaf(rng, 6, 5, device=device)

    def fixed(a):
        tt.manual_seed(3)  # the same mask on every call
        return F.dropout(a, 0.4)
    assert gradcheck(fixed, (x,))


def test_dropout_statistics_and_modes(device):
    tt.manual_seed(0)
    x = tt.ones(100_000, device=device)
    y = F.dropout(x, 0.3).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.01 and abs(y.mean() - 1) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    assert F.dropout(x, 0.3, training=False) is x
    assert (F.dropout(x, 1.0).numpy() == 0).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(-0.1)


@pytest.mark.parametrize("name, fn", [
    ("silu", F.silu), ("gelu", F.gelu), ("gelu_tanh", lambda a: F.gelu(a, approximate="tanh")),
    ("tanh", F.tanh), ("sigmoid", F.sigmoid), ("softmax", lambda a: F.softmax(a, dim=1)),
    ("log_softmax", lambda a: F.log_softmax(a, dim=-1)),
])
def test_activation_gradcheck(device, rng, name, fn):
    x = leaf(rng, 3, 4, device=device)
    assert gradcheck(fn, (x,)), name


def test_silu_values_and_stability(device):
    x = tt.tensor([-1000.0, -1.0, 0.0, 1.0, 1000.0], device=device)
    y = F.silu(x).numpy()
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, [0.0, -1 / (1 + math.e), 0.0, 1 / (1 + math.exp(-1)), 1000.0], rtol=1e-6, atol=1e-6)
    assert nn.SiLU()(x).dtype == np.float32


def test_activation_modules(device):
    x = tt.tensor([[-1.0, 0.5], [2.0, -3.0]], device=device)
    np.testing.assert_array_equal(nn.ReLU()(x).numpy(), [[0, 0.5], [2, 0]])
    np.testing.assert_allclose(nn.Softmax(dim=1)(x).numpy().sum(axis=1), 1, rtol=1e-6)
    assert nn.Identity()(x) is x
    assert nn.Flatten()(tt.ones(2, 3, 4, device=device)).shape == (2, 12)
    assert nn.Flatten(0, 1)(tt.ones(2, 3, 4, device=device)).shape == (6, 4)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")
