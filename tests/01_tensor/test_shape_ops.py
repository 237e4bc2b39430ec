"""Shape ops: reshape/view, transpose/permute/T, squeeze/unsqueeze, expand, flatten."""

import numpy as np
import pytest

import tinytorch as tt


def arr(t):
    return t.cpu().numpy()


@pytest.fixture
def x_np():
    return np.arange(24, dtype=np.float32).reshape(2, 3, 4)


@pytest.mark.parametrize("method", ["reshape", "view"])
@pytest.mark.parametrize(
    "args, shape",
    [((6, 4), (6, 4)), ((-1,), (24,)), ((4, -1), (4, 6)), (((2, 12),), (2, 12)),
     (((-1, 3, 2),), (4, 3, 2)), ((24,), (24,)), ((1, 24, 1), (1, 24, 1))],
)
def test_reshape_view(method, args, shape, x_np, device):
    out = getattr(tt.tensor(x_np, device=device), method)(*args)
    assert out.shape == shape
    np.testing.assert_array_equal(arr(out), x_np.reshape(shape))


def test_reshape_bad_size_raises(x_np, device):
    with pytest.raises((ValueError, RuntimeError)):
        tt.tensor(x_np, device=device).reshape(5, 5)


@pytest.mark.parametrize("d0, d1", [(0, 1), (1, 2), (0, 2), (-1, 0), (2, 2)])
def test_transpose(d0, d1, x_np, device):
    out = tt.tensor(x_np, device=device).transpose(d0, d1)
    np.testing.assert_array_equal(arr(out), np.swapaxes(x_np, d0, d1))


@pytest.mark.parametrize("dims", [(2, 0, 1), (0, 1, 2), (1, 2, 0), (-1, 0, 1)])
def test_permute(dims, x_np, device):
    x = tt.tensor(x_np, device=device)
    expected = np.transpose(x_np, [d % 3 for d in dims])
    np.testing.assert_array_equal(arr(x.permute(*dims)), expected)
    np.testing.assert_array_equal(arr(x.permute(dims)), expected)


def test_T(device):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = tt.tensor(a, device=device).T
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(arr(out), a.T)


def test_squeeze_unsqueeze(device):
    x = tt.zeros(2, 1, 3, 1, device=device)
    assert x.squeeze().shape == (2, 3)
    assert x.squeeze(1).shape == (2, 3, 1)
    assert x.squeeze(-1).shape == (2, 1, 3)
    assert x.squeeze(0).shape == (2, 1, 3, 1)  # not size 1: no-op, like PyTorch
    y = tt.zeros(2, 3, device=device)
    assert y.unsqueeze(0).shape == (1, 2, 3)
    assert y.unsqueeze(1).shape == (2, 1, 3)
    assert y.unsqueeze(-1).shape == (2, 3, 1)
    assert y.unsqueeze(2).shape == (2, 3, 1)


def test_expand(device):
    a = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
    x = tt.tensor(a, device=device)
    assert x.expand(3, 4).shape == (3, 4)
    assert x.expand(-1, 4).shape == (3, 4)
    assert x.expand((2, 3, 4)).shape == (2, 3, 4)
    np.testing.assert_array_equal(arr(x.expand(2, -1, 4)), np.broadcast_to(a, (2, 3, 4)))


def test_expand_non_singleton_raises(device):
    with pytest.raises((ValueError, RuntimeError)):
        tt.zeros(3, 2, device=device).expand(3, 4)


@pytest.mark.parametrize(
    "args, shape",
    [((), (24,)), ((1,), (2, 12)), ((0, 1), (6, 4)), ((1, 2), (2, 12)), ((-2, -1), (2, 12)),
     ((0, -2), (6, 4))],
)
def test_flatten(args, shape, x_np, device):
    out = tt.tensor(x_np, device=device).flatten(*args)
    assert out.shape == shape
    np.testing.assert_array_equal(arr(out), x_np.reshape(shape))


def test_top_level_shape_functions(x_np, device):
    x = tt.tensor(x_np, device=device)
    assert tt.reshape(x, (4, 6)).shape == (4, 6)
    assert tt.transpose(x, 0, 2).shape == (4, 3, 2)
    assert tt.permute(x, (1, 0, 2)).shape == (3, 2, 4)
    assert tt.unsqueeze(x, 0).shape == (1, 2, 3, 4)
    assert tt.squeeze(tt.unsqueeze(x, 0)).shape == (2, 3, 4)
    assert tt.flatten(x, 1).shape == (2, 12)
