"""Devices: the Device object, moving tensors, and the clear errors when CUDA is missing."""

import numpy as np
import pytest

import tinytorch as tt


def test_device_object():
    cpu = tt.device("cpu")
    assert cpu.type == "cpu" and cpu.index is None
    assert str(cpu) == "cpu"
    assert cpu == "cpu"
    assert cpu == tt.device("cpu")
    cuda = tt.device("cuda:0")  # creating the object never needs a GPU
    assert cuda.type == "cuda" and cuda.index == 0
    assert str(cuda) == "cuda:0"
    assert cuda == "cuda:0"
    assert cuda != "cpu"
    assert tt.device("cuda:1").index == 1


def test_tensor_device_attribute(device):
    t = tt.ones(2, device=device)
    assert isinstance(t.device, type(tt.device("cpu")))
    assert t.device == device or str(t.device).startswith(device)
    assert tt.ones(2).device == "cpu"
    assert tt.ones(2, device=tt.device("cpu")).device.type == "cpu"


def test_results_stay_on_device(device):
    x = tt.ones(2, 2, device=device, requires_grad=True)
    y = (x @ x).exp().sum()
    assert y.device.type == x.device.type
    (g,) = y._backward(tt.get_xp(y.device).ones((), dtype=np.float32))  # sum's own rule
    assert type(g) is type(x.data)


def test_cuda_available_api():
    assert isinstance(tt.cuda_available(), bool)
    reason = tt.cuda_unavailable_reason()
    if tt.cuda_available():
        assert reason is None
    else:
        assert isinstance(reason, str) and reason


@pytest.mark.skipif(tt.cuda_available(), reason="CUDA is available here")
@pytest.mark.parametrize(
    "make",
    [lambda: tt.zeros(2, device="cuda"), lambda: tt.tensor([1.0], device="cuda:0"),
     lambda: tt.ones(2).cuda(), lambda: tt.ones(2).to("cuda"),
     lambda: tt.randn(2, device=tt.device("cuda:0"))],
)
def test_cuda_unavailable_raises_with_reason(make):
    with pytest.raises(RuntimeError) as info:
        make()
    msg = str(info.value)
    assert "CuPy" in msg or "CUDA" in msg, msg


def _fake_cuda_tensor(b=None):
    b = tt.ones(2) if b is None else b
    b._device = tt.device("cuda:0")
    return b


@pytest.mark.parametrize(
    "op",
    [lambda a, b: a + b, lambda a, b: b + a, lambda a, b: a * b, lambda a, b: a - b,
     lambda a, b: a / b, lambda a, b: a @ b, lambda a, b: tt.cat([a, b]),
     lambda a, b: tt.where(a > 0, a, b), lambda a, b: a.masked_fill(a > 0, _fake_cuda_tensor(tt.tensor(5.0))),
     lambda a, b: a.masked_fill(_fake_cuda_tensor(tt.tensor([True, False])), 5.0)],
    ids=["add", "radd", "mul", "sub", "div", "matmul", "cat", "where", "masked_fill-value", "masked_fill-mask"],
)
def test_mixing_devices_names_both(op):
    a, b = tt.ones(2), _fake_cuda_tensor()
    with pytest.raises(RuntimeError) as info:
        op(a, b)
    msg = str(info.value)
    assert "cpu" in msg and "cuda:0" in msg, msg


@pytest.mark.skipif(not tt.cuda_available(), reason="needs a GPU")
def test_roundtrip_to_cuda():
    x = tt.tensor([1.0, 2.0])
    g = x.cuda()
    assert g.device == "cuda:0"
    assert type(g.data).__module__.startswith("cupy")
    np.testing.assert_array_equal(g.cpu().numpy(), [1.0, 2.0])
