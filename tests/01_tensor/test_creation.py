"""Creating tensors: tensor(), factories, *_like, from_numpy, seeding."""

import numpy as np
import pytest

import tinytorch as tt


def arr(t):
    return t.cpu().numpy()


@pytest.mark.parametrize(
    "data, dtype",
    [
        ([1.0, 2.0], tt.float32),
        ([1, 2], tt.int64),
        ([True, False], tt.bool),
        ([[1, 2], [3, 4]], tt.int64),
        ([1, 2.5], tt.float32),  # mixed int/float lists are float
        (3.0, tt.float32),
        (3, tt.int64),
    ],
)
def test_tensor_infers_pytorch_default_dtype(data, dtype, device):
    t = tt.tensor(data, device=device)
    assert t.dtype == dtype
    np.testing.assert_array_equal(arr(t), np.array(data))


def test_tensor_scalar_is_zero_dim(device):
    t = tt.tensor(3.5, device=device)
    assert t.shape == ()
    assert t.ndim == 0
    assert t.numel() == 1
    assert t.item() == 3.5


def test_tensor_explicit_dtype_and_requires_grad(device):
    t = tt.tensor([1, 2], dtype=tt.float64, device=device, requires_grad=True)
    assert t.dtype == tt.float64
    assert t.requires_grad is True
    assert t.is_leaf is True
    assert t.grad is None


def test_tensor_from_numpy_array_and_from_tensor(device):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tt.tensor(a, device=device)
    assert t.shape == (2, 3) and t.dtype == tt.float32
    # tt.tensor copies: changing the source does not change the tensor
    a[0, 0] = 100
    assert arr(t)[0, 0] == 0
    t2 = tt.tensor(arr(t), device=device)
    np.testing.assert_array_equal(arr(t2), arr(t))


@pytest.mark.parametrize("factory, value", [(tt.zeros, 0.0), (tt.ones, 1.0)])
def test_zeros_ones_sizes_as_ints_or_tuple(factory, value, device):
    a = factory(2, 3, device=device)
    b = factory((2, 3), device=device)
    for t in (a, b):
        assert t.shape == (2, 3)
        assert t.dtype == tt.float32
        assert t.device == device
        assert np.all(arr(t) == value)
    assert factory(4, device=device).shape == (4,)
    assert factory((), device=device).shape == ()
    assert factory(2, dtype=tt.int32, device=device).dtype == tt.int32
    assert factory(2, requires_grad=True, device=device).requires_grad is True


def test_full(device):
    t = tt.full((2, 2), 1.5, device=device)
    assert t.shape == (2, 2) and t.dtype == tt.float32
    assert np.all(arr(t) == 1.5)
    t64 = tt.full((3,), 7, dtype=tt.float64, device=device)
    assert t64.dtype == tt.float64 and np.all(arr(t64) == 7)


def test_full_integer_fill_is_int64(device):
    # PyTorch infers the dtype from the fill value
    assert tt.full((2,), 3, device=device).dtype == tt.int64


@pytest.mark.parametrize(
    "args, expected, dtype",
    [
        ((5,), np.arange(5), tt.int64),
        ((2, 7), np.arange(2, 7), tt.int64),
        ((0, 10, 3), np.arange(0, 10, 3), tt.int64),
        ((0.0, 1.0, 0.25), np.arange(0, 1, 0.25), tt.float32),
        ((5.0,), np.arange(5.0), tt.float32),
        ((5, 0, -1), np.arange(5, 0, -1), tt.int64),
    ],
)
def test_arange(args, expected, dtype, device):
    t = tt.arange(*args, device=device)
    assert t.dtype == dtype
    np.testing.assert_allclose(arr(t), expected)


def test_arange_keywords(device):
    t = tt.arange(0, end=4, step=2, dtype=tt.float64, device=device)
    assert t.dtype == tt.float64
    np.testing.assert_array_equal(arr(t), [0.0, 2.0])


def test_rand_randn_shapes_dtypes_ranges(device):
    r = tt.rand(1000, device=device)
    assert r.shape == (1000,) and r.dtype == tt.float32
    assert arr(r).min() >= 0.0 and arr(r).max() < 1.0
    n = tt.randn(100, 100, device=device)
    assert n.shape == (100, 100) and n.dtype == tt.float32
    assert abs(arr(n).mean()) < 0.05 and abs(arr(n).std() - 1) < 0.05
    assert tt.randn((2, 3), device=device).shape == (2, 3)
    assert tt.rand(2, dtype=tt.float64, device=device).dtype == tt.float64


def test_manual_seed_reproducible(device):
    tt.manual_seed(123)
    a, b = tt.rand(5, device=device), tt.randn(5, device=device)
    tt.manual_seed(123)
    c, d = tt.rand(5, device=device), tt.randn(5, device=device)
    np.testing.assert_array_equal(arr(a), arr(c))
    np.testing.assert_array_equal(arr(b), arr(d))
    tt.manual_seed(124)
    assert not np.array_equal(arr(tt.rand(5, device=device)), arr(a))


def test_like_factories(device):
    src = tt.ones(2, 3, dtype=tt.float64, device=device)
    for t, value in [
        (tt.zeros_like(src), 0.0),
        (tt.ones_like(src), 1.0),
        (tt.full_like(src, 2.5), 2.5),
    ]:
        assert t.shape == (2, 3) and t.dtype == tt.float64 and t.device == device
        assert np.all(arr(t) == value)
        assert t.requires_grad is False
    for t in (tt.rand_like(src), tt.randn_like(src)):
        assert t.shape == (2, 3) and t.dtype == tt.float64
    assert tt.zeros_like(src, dtype=tt.float32).dtype == tt.float32
    assert tt.ones_like(src, requires_grad=True).requires_grad is True


def test_like_does_not_inherit_requires_grad(device):
    src = tt.ones(2, device=device, requires_grad=True)
    assert tt.zeros_like(src).requires_grad is False


@pytest.mark.parametrize("np_dtype", [np.float64, np.float16, np.int32, np.uint8, np.bool_])
def test_from_numpy_keeps_dtype_and_shares_memory(np_dtype):
    a = np.zeros(4, dtype=np_dtype)
    t = tt.from_numpy(a)
    assert t.dtype == np_dtype
    assert t.device == "cpu"
    a[1] = 1
    assert t.numpy()[1] == 1
    assert np.shares_memory(t.data, a)


def test_data_is_raw_array(device):
    t = tt.ones(3, device=device)
    if t.device.type == "cpu":
        assert isinstance(t.data, np.ndarray)
    else:
        cp = pytest.importorskip("cupy")
        assert isinstance(t.data, cp.ndarray)


def test_attributes(device):
    t = tt.zeros(2, 3, 4, device=device)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.ndim == 3
    assert t.numel() == 24
    assert t.size() == (2, 3, 4)
    assert t.size(0) == 2 and t.size(-1) == 4
    assert t.requires_grad is False
    assert t.grad is None
    assert t.is_leaf is True
