"""Conversions (numpy, item, tolist, to, detach, requires_grad_) and PyTorch-like repr."""

import numpy as np
import pytest

import tinytorch as tt


def test_numpy_cpu():
    t = tt.tensor([[1.0, 2.0]])
    a = t.numpy()
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, [[1.0, 2.0]])


@pytest.mark.parametrize("scalar, dtype", [(np.float64(1.5), np.float64), (np.float32(1.5), np.float32),
                                           (np.int32(2), np.int32), (np.bool_(True), np.bool_), (1.5, np.float32)])
def test_tensor_of_a_numpy_scalar_keeps_its_dtype(scalar, dtype):
    """As torch.tensor(np.float64(1.5)) is float64: only Python floats mean float32."""
    t = tt.tensor(scalar)
    assert t.shape == () and t.dtype == dtype and t.item() == scalar


def test_item(device):
    f = tt.tensor([2.5], device=device).item()
    i = tt.tensor(3, device=device).item()
    b = tt.tensor(True, device=device).item()
    assert f == 2.5 and type(f) is float
    assert i == 3 and type(i) is int
    assert b is True


def test_item_on_many_elements_raises(device):
    with pytest.raises((ValueError, RuntimeError)):
        tt.ones(2, device=device).item()


def test_tolist(device):
    assert tt.tensor([[1, 2], [3, 4]], device=device).tolist() == [[1, 2], [3, 4]]
    out = tt.tensor([0.5, 1.5], device=device).tolist()
    assert out == [0.5, 1.5] and all(type(v) is float for v in out)
    assert tt.tensor(2.0, device=device).tolist() == 2.0


def test_to_and_cpu(device):
    t = tt.tensor([1.0, 2.0], device=device)
    c = t.cpu()
    assert c.device == "cpu" and isinstance(c.data, np.ndarray)
    assert t.to("cpu").device == "cpu"
    assert t.to(tt.device("cpu")).device == "cpu"
    back = c.to(device)
    assert back.device == device
    assert back.tolist() == [1.0, 2.0]


def test_cpu_on_cpu_tensor_keeps_values():
    t = tt.tensor([1.0])
    assert t.cpu().tolist() == [1.0]


def test_detach(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (x * 2).detach()
    assert y.requires_grad is False and y.is_leaf is True
    d = x.detach()
    assert d.requires_grad is False
    if d.device.type == "cpu":  # like PyTorch, detach shares storage
        assert np.shares_memory(d.data, x.data)


def test_requires_grad_(device):
    x = tt.ones(2, device=device)
    assert x.requires_grad_() is x
    assert x.requires_grad is True
    x.requires_grad_(False)
    assert x.requires_grad is False


def test_to_preserves_grad_flow(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = x.to(tt.float64)
    assert y.dtype == tt.float64 and y.requires_grad
    (g,) = y._backward(y.data * 2)  # the cast's own rule (the engine is module 02's)
    assert g.dtype == np.float32
    assert g.tolist() == [2.0, 4.0]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: tt.tensor([1.0, 2.0]), "tensor([1., 2.])"),
        (lambda: tt.tensor([1.0, 2.0], requires_grad=True), "tensor([1., 2.], requires_grad=True)"),
        (lambda: tt.tensor([1, 2]), "tensor([1, 2])"),
        (lambda: tt.tensor(3.0), "tensor(3.)"),
        (lambda: tt.tensor([0.5, 1.25]), "tensor([0.5000, 1.2500])"),
        (lambda: tt.tensor([True, False]), "tensor([ True, False])"),
    ],
)
def test_repr_exact(make, expected):
    assert repr(make()) == expected


def test_repr_2d():
    assert repr(tt.tensor([[1.0, 2.0], [3.0, 4.0]])) == "tensor([[1., 2.],\n        [3., 4.]])"


@pytest.mark.parametrize("dtype, name", [(tt.float64, "float64"), (tt.int32, "int32"),
                                         (tt.float16, "float16"), (tt.uint8, "uint8")])
def test_repr_shows_non_default_dtype(dtype, name):
    r = repr(tt.tensor([1, 2], dtype=dtype))
    assert r.startswith("tensor([")
    assert "dtype=" in r and name in r


def test_repr_default_dtypes_hide_dtype():
    assert "dtype" not in repr(tt.tensor([1.0]))
    assert "dtype" not in repr(tt.tensor([1]))
    assert "dtype" not in repr(tt.tensor([True]))


def test_repr_shows_cuda_device(device):
    if not device.startswith("cuda"):
        pytest.skip("needs a CUDA test device")
    assert "device='cuda:0'" in repr(tt.tensor([1.0], device="cuda:0"))
