"""nn.RMSNorm and F.rms_norm: PyTorch's signature, eps=None as the dtype's epsilon, gradients."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.autograd import gradcheck
from tinytorch.nn import functional as F


def test_layer_has_pytorchs_signature_and_parameters():
    layer = nn.RMSNorm([2, 3])
    assert layer.normalized_shape == (2, 3) and layer.eps is None
    assert list(layer.state_dict()) == ["weight"] and np.array_equal(layer.weight.numpy(), np.ones((2, 3)))
    assert nn.RMSNorm(4, elementwise_affine=False).weight is None
    assert nn.RMSNorm(4, dtype="float64").weight.dtype == np.float64
    assert "RMSNorm((4,), eps=1e-06" in repr(nn.RMSNorm(4, eps=1e-6))


def test_values_and_eps_default():
    x = tt.tensor([[3.0, 4.0], [0.0, 0.0]])
    y = F.rms_norm(x, (2,))
    np.testing.assert_allclose(y.numpy()[0], np.array([3, 4]) / np.sqrt(12.5), rtol=1e-6)
    assert np.all(np.isfinite(y.numpy())), "a zero row stays finite thanks to eps"
    tiny = tt.tensor([[1e-4, 1e-4]])
    expected = 1e-4 / np.sqrt(1e-8 + np.finfo(np.float32).eps)
    np.testing.assert_allclose(F.rms_norm(tiny, 2).numpy(), expected, rtol=1e-4,
                               err_msg="eps=None is the float32 machine epsilon, as in PyTorch")
    with pytest.raises(RuntimeError, match="normalized_shape"):
        F.rms_norm(x, 3)


def test_gradients_float64():
    rng = np.random.default_rng(0)
    x = tt.tensor(rng.standard_normal((2, 3, 4)), dtype="float64", requires_grad=True)
    w = nn.Parameter(tt.tensor(rng.standard_normal(4), dtype="float64"))
    assert gradcheck(lambda a, b: F.rms_norm(a, 4, b, eps=1e-5), (x, w))
    layer = nn.RMSNorm(4, dtype="float64")
    out = layer(x)
    (out * out).sum().backward()
    assert layer.weight.grad.shape == (4,) and x.grad.shape == (2, 3, 4)
