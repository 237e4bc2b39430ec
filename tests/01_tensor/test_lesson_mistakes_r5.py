"""Round-5 lesson mistakes in module 01: each test fails for one plausible wrong student answer
that the other tests let through (first operand broadcast, zeros, tuple dims, batch of 1, rounding)."""
import importlib

import numpy as np
import pytest

ct = importlib.import_module("tinytorch.core.tensor")  # the module (tinytorch.core.tensor is also a function)


def grads(op, *args, g=None, **kwargs):
    out = op(*(a if isinstance(a, (int, float)) else ct.tensor(a, requires_grad=True) for a in args), **kwargs)
    out = out.values if isinstance(out, tuple) else out
    return out._backward(np.ones(out.shape, out.dtype) if g is None else np.asarray(g, out.dtype))


B, B0 = [[1.0, 2.0, 4.0], [2.0, 4.0, 1.0]], [[0.0, 2.0, 3.0], [2.0, 1.0, 1.0]]


@pytest.mark.parametrize("name, rhs, ga, gb", [
    ("add", B, [2.0] * 3, [[1.0] * 3] * 2),
    ("sub", B, [2.0] * 3, [[-1.0] * 3] * 2),
    ("mul", B, [3.0, 6.0, 5.0], [[0.0, 1.0, 2.0]] * 2),
    ("div", B, [1.5, 0.75, 1.25], [[0.0, -0.25, -0.125], [0.0, -0.0625, -2.0]]),
    ("pow", B0, [0.0, 3.0, 13.0], [[0.0, 0.0, 8 * np.log(2)], [0.0, 0.0, 2 * np.log(2)]]),
])
def test_first_operand_broadcast_and_zero(name, rhs, ga, gb):
    """a (3,) holding a 0, broadcast against b (2, 3): both grads unbroadcast, no 0/0 (values from PyTorch)."""
    got_a, got_b = grads(getattr(ct, name), [0.0, 1.0, 2.0], rhs)
    assert np.shape(got_a) == (3,) and np.shape(got_b) == (2, 3)
    np.testing.assert_allclose(got_a, ga, rtol=1e-6)
    np.testing.assert_allclose(got_b, gb, rtol=1e-6)


def test_division_and_mean_round_once():
    assert np.array_equal(ct.div(ct.tensor([5.0, 7.0]), 3).numpy(), np.float32([5, 7]) / np.float32(3))
    assert ct.mean(ct.tensor([1.0, 2.0, 3.0, 4.0, 11.0])).item() == np.float32(21) / np.float32(5)


def test_sum_backward_over_two_trailing_dims():
    (g,) = grads(ct.sum, np.zeros((2, 2, 2)), g=[1.0, 2.0], dim=(1, 2))
    assert np.array_equal(g, [[[1, 1], [1, 1]], [[2, 2], [2, 2]]])


def test_unbroadcast_batch_of_one_and_empty():
    assert ct.unbroadcast(np.ones((1, 3, 5)), (1, 5)).tolist() == [[3.0] * 5]
    assert ct.unbroadcast(np.ones((0, 2)), (1, 2)).tolist() == [[0.0, 0.0]]


def test_max_batch_of_one_keepdim_grad_shape_and_nan():
    one = ct.max(ct.tensor([[1.0, 5.0, 2.0]]), dim=1)
    assert one.values.shape == one.indices.shape == (1,)
    (g,) = grads(ct.max, [[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]], dim=0, keepdim=True)
    assert np.shape(g) == (2, 3) and np.array_equal(g, [[0, 1, 0], [1, 0, 1]])
    (g,) = grads(ct.max, [1.0, np.nan, 3.0])
    assert np.array_equal(g, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_over_dim_0_shifts_along_dim_0(name):
    v = np.array([[1.0, 2.0], [3.0, 5.0]])
    p = np.exp(v) / np.exp(v).sum(axis=0)
    want = p if name == "softmax" else np.log(p)
    np.testing.assert_allclose(getattr(ct, name)(ct.tensor(v), dim=0).numpy(), want, rtol=1e-5)
