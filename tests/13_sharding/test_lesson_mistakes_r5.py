"""Module 13, round 5 of mutation testing: flatten's padding written as zeros, a memory model in true division,
checkpoint with an int tensor argument and with two backward passes through one graph."""

import numpy as np

import tinytorch as tt
from tinytorch.distributed.fsdp import _FlatUnit, _Poisoned
from tinytorch.distributed.memory import predict_memory
from tinytorch.utils import checkpoint



def test_flatten_writes_zeros_into_the_padding_whatever_empty_returns():
    params = [tt.nn.Parameter(tt.tensor(np.arange(5, dtype=np.float32)))]
    unit = _FlatUnit(None, params, [], 0, 4, False)  # 5 values on 4 ranks: 8, 3 of padding
    unit.xp = _Poisoned(unit.xp)  # empty() gives NaN
    flat = unit.flatten([np.ones(5, np.float32)])
    assert flat.tolist() == [1.0] * 5 + [0.0] * 3 and flat.dtype == np.float32


def test_predict_memory_divides_exactly():
    got = predict_memory(1000, 3, "zero3")
    assert got == {"params": 4000 / 3, "grads": 4000 / 3, "optimizer": 8000 / 3, "activations": 0}
    assert predict_memory(1001, 3, "zero2")["grads"] == 4004 / 3


def test_checkpoint_takes_int_tensor_arguments():
    x, ids = tt.randn(2, 3, requires_grad=True), tt.tensor([[1], [2]])
    checkpoint(lambda t, i: (t * t * i).sum(), x, ids).backward()
    assert np.allclose(x.grad.numpy(), 2 * x.numpy() * [[1], [2]])


def test_checkpoint_backward_twice_through_a_retained_graph_accumulates_twice():
    x = tt.randn(2, 3, requires_grad=True)
    y = checkpoint(lambda t: (t * t).sum(), x)
    y.backward(retain_graph=True)
    y.backward()
    assert np.allclose(x.grad.numpy(), 4 * x.numpy()), "each backward recomputes on fresh leaves of its own"
