"""Edge inputs where the layers must agree with PyTorch: dims of size 0, and float16 norms."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.nn import functional as F


def f32(a, device, **kw):
    return tt.tensor(np.asarray(a, dtype=np.float32), device=device, **kw)


def f16(a, device, **kw):
    return tt.tensor(np.asarray(a, dtype=np.float16), device=device, **kw)


def test_linear_without_input_features(device):
    """in_features = 0: every output is the bias (an empty sum), as in PyTorch (it raised a reshape error)."""
    x = f32(np.zeros((2, 0)), device, requires_grad=True)
    w = f32(np.zeros((3, 0)), device, requires_grad=True)
    b = f32([1.0, 2.0, 3.0], device, requires_grad=True)
    y = F.linear(x, w, b)
    assert y.shape == (2, 3)
    np.testing.assert_array_equal(y.numpy(), [[1, 2, 3]] * 2)
    y.sum().backward()
    assert x.grad.shape == (2, 0) and w.grad.shape == (3, 0)
    np.testing.assert_array_equal(b.grad.numpy(), [2, 2, 2])
    assert F.linear(f32(np.zeros(0), device), w).shape == (3,), "a 1-D input of 0 features"
    assert nn.Linear(0, 3, device=device)(f32(np.zeros((4, 0)), device)).shape == (4, 3)


@pytest.mark.parametrize("batch", [(2,), (0,), (2, 5)])
def test_linear_without_output_features(device, batch):
    """out_features = 0: an empty output, and a zero gradient for the input (the backward raised)."""
    x = f32(np.ones(batch + (4,)), device, requires_grad=True)
    w = f32(np.ones((0, 4)), device, requires_grad=True)
    y = F.linear(x, w, f32(np.zeros(0), device, requires_grad=True))
    assert y.shape == batch + (0,)
    y.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.numpy().any()
    assert w.grad.shape == (0, 4)


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_norms_over_zero_size_dims(device, norm):
    """normalized_shape (0,) gives an empty output as in PyTorch (it raised a reshape error)."""
    x = f32(np.zeros((2, 0)), device, requires_grad=True)
    w = f32(np.zeros(0), device, requires_grad=True)
    y = getattr(F, norm)(x, (0,), w)
    assert y.shape == (2, 0) and y.dtype == tt.float32
    y.sum().backward()
    assert x.grad.shape == (2, 0) and w.grad.shape == (0,)
    layer = nn.LayerNorm(0, device=device) if norm == "layer_norm" else nn.RMSNorm(0, device=device)
    assert layer(f32(np.zeros((3, 2, 0)), device)).shape == (3, 2, 0)


def test_embedding_of_zero_width_backward(device):
    """embedding_dim = 0: the weight's gradient is an empty (n, 0) array (the backward raised)."""
    w = f32(np.zeros((5, 0)), device, requires_grad=True)
    y = F.embedding(tt.tensor(np.array([[1, 2, 1]]), device=device), w)
    assert y.shape == (1, 3, 0)
    y.sum().backward()
    assert w.grad.shape == (5, 0)


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_float16_norms_of_large_values(device, norm):
    """float16 rows whose mean square passes 65504 are normalised as PyTorch does, in float32 (they
    came out 0: the statistics overflowed to inf in float16)."""
    x = f16([[6e4, -6e4, 0.0, 0.0]], device, requires_grad=True)
    y = getattr(F, norm)(x, (4,))
    assert y.dtype == tt.float16
    np.testing.assert_allclose(y.numpy().astype(np.float64), [[2**0.5, -(2**0.5), 0, 0]], rtol=1e-3)
    y.backward(f16([[1.0, 2.0, 3.0, 4.0]], device))
    assert x.grad.dtype == tt.float16 and np.isfinite(x.grad.numpy()).all() and x.grad.numpy().any()


def test_rms_norm_float16_default_eps(device):
    """eps=None for float16 is float32's machine epsilon, as in PyTorch (which computes in float32);
    float16's own (9.8e-4) swamped a row of mean square 1e-4: [0.01, 0.01] gave 0.305, not 1."""
    y = F.rms_norm(f16([[0.01, 0.01]], device), 2)
    np.testing.assert_allclose(y.numpy().astype(np.float64), [[1.0, 1.0]], rtol=1e-3)
    layer = nn.RMSNorm(2, dtype="float16", device=device)
    np.testing.assert_allclose(layer(f16([[0.01, -0.01]], device)).numpy().astype(np.float64), [[1.0, -1.0]], rtol=1e-3)


@pytest.mark.parity
@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_float16_norms_match_torch(device, norm, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((3, 8)) * np.array([[1e-3], [1.0], [3e3]])).astype(np.float16)
    w = rng.uniform(0.5, 2, 8).astype(np.float16)
    g = rng.standard_normal((3, 8)).astype(np.float16)
    ours_x, ours_w = f16(x, device, requires_grad=True), f16(w, device, requires_grad=True)
    ours = getattr(F, norm)(ours_x, (8,), ours_w)
    ours.backward(f16(g, device))
    ref_x, ref_w = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ref = getattr(torch.nn.functional, norm)(ref_x, (8,), ref_w)
    ref.backward(torch.tensor(g))
    assert ours.dtype == tt.float16 and ours_x.grad.dtype == tt.float16 and ours_w.grad.dtype == tt.float16
    for got, want in ((ours, ref), (ours_x.grad, ref_x.grad), (ours_w.grad, ref_w.grad)):
        want = want.detach().numpy().astype(np.float64)
        np.testing.assert_allclose(got.numpy().astype(np.float64), want, rtol=1e-2, atol=1e-2 * np.abs(want).max())


@pytest.mark.parametrize("norm", ["layer_norm", "rms_norm"])
def test_norms_refuse_an_empty_normalized_shape(device, norm):
    """normalized_shape=() raises, as in PyTorch (it normalised every number alone, to 0)."""
    with pytest.raises(RuntimeError, match="at least one dimension"):
        getattr(F, norm)(f32(np.ones((2, 3)), device), ())
