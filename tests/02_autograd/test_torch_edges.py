"""Module 01's ops where NumPy's answer differs from PyTorch's, through backward (module 02): pow at 0 and
below, max/min with NaN, sum/mean/var over dim=()."""

import warnings

import numpy as np
import pytest

import tinytorch as tt

NAN = float("nan")


def host(t):
    return t.cpu().numpy()


def _both(torch, fn, *arrays, device):
    """fn on tinytorch and on torch tensors (grad on all), NumPy warnings as errors; (out, grads) of each."""
    ours = [tt.tensor(a, dtype=tt.float32, requires_grad=True, device=device) for a in arrays]
    theirs = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 ** -1 = inf and log(-2) = nan are answers, not warnings
        out = fn(*ours)
        out.sum().backward()
    ref = fn(*theirs)
    ref.sum().backward()
    assert out.dtype == np.float32
    np.testing.assert_allclose(host(out), ref.detach().numpy(), rtol=1e-6, equal_nan=True)
    for a, b in zip(ours, theirs):
        assert a.grad.dtype == np.float32
        np.testing.assert_allclose(host(a.grad), b.grad.numpy(), rtol=1e-6, equal_nan=True)


EXPONENTS = [0.0, 0.5, 1.0, 2.0, -1.0, -0.5]


@pytest.mark.parity
@pytest.mark.parametrize(
    "fn",
    [lambda x: x ** 0, lambda x: x ** 0.0, lambda x: x ** 2, lambda x: x ** 0.5, lambda x: x ** -1],
    ids=["int0", "float0", "square", "sqrt", "inverse"],
)
def test_pow_with_a_number_exponent_matches_torch_at_zero(fn, device):
    torch = pytest.importorskip("torch")
    _both(torch, fn, [0.0, 1.0, 2.0, -3.0], device=device)


@pytest.mark.parity
@pytest.mark.parametrize("base", [0.0, 0, -2.0, 2.0])
def test_pow_with_a_number_base_matches_torch(base, device):
    torch = pytest.importorskip("torch")
    _both(torch, lambda e: base ** e, EXPONENTS, device=device)


@pytest.mark.parity
def test_pow_of_two_tensors_matches_torch_at_zero_and_below(device):
    torch = pytest.importorskip("torch")
    bases = [0.0] * len(EXPONENTS) + [-2.0] * len(EXPONENTS) + [3.0] * len(EXPONENTS)
    _both(torch, lambda a, b: a ** b, bases, EXPONENTS * 3, device=device)


NAN_INPUTS = [
    [[1.0, NAN, 3.0], [4.0, 5.0, 2.0]],
    [[1.0, NAN, NAN], [NAN, 5.0, 2.0]],  # three NaNs share the gradient
    [[NAN, NAN], [NAN, NAN]],
]


@pytest.mark.parity
@pytest.mark.parametrize("data", NAN_INPUTS)
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [None, 0, 1])
def test_max_min_with_nan_match_torch(data, name, dim, device):
    torch = pytest.importorskip("torch")
    x = tt.tensor(data, requires_grad=True, device=device)
    ref_x = torch.tensor(data, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = getattr(x, name)() if dim is None else getattr(x, name)(dim=dim)
        ref = getattr(ref_x, name)() if dim is None else getattr(ref_x, name)(dim=dim)
        if dim is not None:
            np.testing.assert_array_equal(host(out.indices), ref.indices.numpy())
            out, ref = out.values, ref.values
        out.sum().backward()
    ref.sum().backward()
    np.testing.assert_array_equal(host(out), ref.detach().numpy())
    np.testing.assert_array_equal(host(x.grad), ref_x.grad.numpy())


@pytest.mark.parity
@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [-1, -2])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_with_a_negative_dim_match_torch(name, dim, keepdim, device):
    torch = pytest.importorskip("torch")
    data = [[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]]
    x = tt.tensor(data, requires_grad=True, device=device)
    ref_x = torch.tensor(data, requires_grad=True)
    out = getattr(x, name)(dim=dim, keepdim=keepdim).values
    ref = getattr(ref_x, name)(dim=dim, keepdim=keepdim).values
    (out * tt.tensor(np.arange(1, out.numel() + 1, dtype=np.float32).reshape(out.shape), device=device)).sum().backward()
    (ref * torch.arange(1, ref.numel() + 1, dtype=torch.float32).reshape(ref.shape)).sum().backward()
    np.testing.assert_array_equal(host(out), ref.detach().numpy())
    np.testing.assert_array_equal(host(x.grad), ref_x.grad.numpy())


@pytest.mark.parity
@pytest.mark.parametrize("dim", [(), []])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean", "var"])
def test_an_empty_dim_reduces_over_all_as_in_torch(name, dim, keepdim, device):
    torch = pytest.importorskip("torch")
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = tt.tensor(data, requires_grad=True, device=device)
    ref_x = torch.tensor(data, requires_grad=True)
    out = getattr(x, name)(dim=dim, keepdim=keepdim)
    ref = getattr(ref_x, name)(dim=dim, keepdim=keepdim)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(host(out), ref.detach().numpy(), rtol=1e-6)
    out.sum().backward()
    # torch's var backward with dim=() does not match its forward (it divides by 0: inf), so the
    # gradient is checked against dim=None, the same reduction
    getattr(ref_x, name)(dim=None, keepdim=keepdim).sum().backward()
    np.testing.assert_allclose(host(x.grad), ref_x.grad.numpy(), rtol=1e-6)
