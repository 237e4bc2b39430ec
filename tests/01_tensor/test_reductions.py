"""Reductions: sum, mean, max/min (namedtuple with dim), var, argmax."""

import numpy as np
import pytest

import tinytorch as tt


def arr(t):
    return t.cpu().numpy()


@pytest.fixture
def x_np(rng):
    return rng.standard_normal((2, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("dim", [None, 0, 1, 2, -1, -2, (0, 2), (-1, 0), (0, 1, 2)])
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("name", ["sum", "mean"])
def test_sum_mean(name, dim, keepdim, x_np, device):
    x = tt.tensor(x_np, device=device)
    out = getattr(x, name)(dim=dim, keepdim=keepdim)
    expected = getattr(np, name)(x_np, axis=dim, keepdims=keepdim)
    assert out.shape == expected.shape
    np.testing.assert_allclose(arr(out), expected, rtol=1e-5, atol=1e-6)


def test_sum_no_dim_is_zero_dim(device):
    out = tt.ones(2, 3, device=device).sum()
    assert out.shape == () and out.item() == 6.0


def test_sum_positional_dim(x_np, device):
    x = tt.tensor(x_np, device=device)
    np.testing.assert_allclose(arr(x.sum(1)), x_np.sum(1), rtol=1e-5)
    np.testing.assert_allclose(arr(x.mean(0, True)), x_np.mean(0, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("name", ["max", "min"])
def test_max_min_no_dim_returns_tensor(name, x_np, device):
    out = getattr(tt.tensor(x_np, device=device), name)()
    assert out.shape == ()
    assert out.item() == pytest.approx(float(getattr(np, name)(x_np)))


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_with_dim_returns_values_indices(name, dim, keepdim, x_np, device):
    x = tt.tensor(x_np, device=device)
    res = getattr(x, name)(dim=dim, keepdim=keepdim)
    values, indices = res  # unpacks like a tuple
    assert res.values is values and res.indices is indices
    np_val = getattr(np, name)(x_np, axis=dim, keepdims=keepdim)
    np_idx = getattr(np, "arg" + name)(x_np, axis=dim, keepdims=keepdim)
    np.testing.assert_array_equal(arr(values), np_val)
    np.testing.assert_array_equal(arr(indices), np_idx)
    assert indices.dtype == tt.int64
    assert values.dtype == tt.float32


def test_max_with_dim_positional(device):
    x = tt.tensor([[1.0, 5.0], [7.0, 2.0]], device=device)
    values, indices = x.max(1)
    assert values.tolist() == [5.0, 7.0]
    assert indices.tolist() == [1, 0]


@pytest.mark.parametrize("dim", [None, 0, 1, -1, (0, 2)])
@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_var(dim, correction, keepdim, x_np, device):
    out = tt.tensor(x_np, device=device).var(dim=dim, correction=correction, keepdim=keepdim)
    expected = np.var(x_np.astype(np.float64), axis=dim, ddof=correction, keepdims=keepdim)
    assert out.shape == expected.shape
    np.testing.assert_allclose(arr(out), expected, rtol=1e-5, atol=1e-6)


def test_var_default_is_unbiased(device):
    assert tt.tensor([1.0, 2.0, 3.0, 4.0], device=device).var().item() == pytest.approx(5 / 3)


@pytest.mark.parametrize("dim", [None, 0, 1, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax(dim, keepdim, x_np, device):
    out = tt.tensor(x_np, device=device).argmax(dim=dim, keepdim=keepdim)
    assert out.dtype == tt.int64
    if dim is None:
        expected = np.argmax(x_np)
        if keepdim:  # PyTorch: keepdim with dim=None keeps every dim as size 1
            expected = np.array(expected).reshape((1,) * x_np.ndim)
    else:
        expected = np.argmax(x_np, axis=dim, keepdims=keepdim)
    assert out.shape == np.shape(expected)
    np.testing.assert_array_equal(arr(out), expected)


def test_reductions_on_int_tensor(device):
    x = tt.tensor([[1, 2], [3, 4]], device=device)
    assert x.sum().item() == 10 and x.sum().dtype == tt.int64
    assert x.max().item() == 4
    assert x.argmax().item() == 3
    with pytest.raises(RuntimeError, match="floating-point"):  # as torch: an integer mean has no dtype
        x.mean()


@pytest.mark.parametrize(
    "name, kwargs",
    [("sum", {}), ("sum", {"dim": 1}), ("mean", {"dim": 0}), ("var", {"dim": 1}),
     ("argmax", {"dim": 1}), ("max", {}), ("min", {})],
)
def test_top_level_reductions(name, kwargs, x_np, device):
    x = tt.tensor(x_np, device=device)
    np.testing.assert_allclose(arr(getattr(tt, name)(x, **kwargs)),
                               arr(getattr(x, name)(**kwargs)))


def test_top_level_max_with_dim(x_np, device):
    values, indices = tt.max(tt.tensor(x_np, device=device), dim=1)
    np.testing.assert_array_equal(arr(values), x_np.max(1))
    np.testing.assert_array_equal(arr(indices), x_np.argmax(1))
