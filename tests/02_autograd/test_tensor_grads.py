"""Module 01's ops through the engine: `.backward()` end to end (moved here from tests/01_tensor,
which may not use module 02)."""

import numpy as np
import pytest

import tinytorch as tt


def test_to_preserves_grad_flow(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = x.to(tt.float64)
    assert y.dtype == tt.float64 and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.dtype == tt.float32
    assert x.grad.tolist() == [2.0, 4.0]


def test_grads_stay_on_device(device):
    x = tt.ones(2, 2, device=device, requires_grad=True)
    y = (x @ x).exp().sum()
    y.backward()
    assert x.grad.device.type == x.device.type


FLOAT32_OPS = [
    ("add", lambda x, y, m: x + y), ("mul_scalar", lambda x, y, m: x * 0.5),
    ("div", lambda x, y, m: x / y), ("pow", lambda x, y, m: x ** 2),
    ("matmul", lambda x, y, m: x @ y.T), ("mean", lambda x, y, m: x.mean(dim=1)),
    ("max_dim", lambda x, y, m: x.max(dim=1).values), ("var", lambda x, y, m: x.var(dim=0)),
    ("log_softmax", lambda x, y, m: x.log_softmax(dim=1)), ("gelu_tanh", lambda x, y, m: x.gelu("tanh")),
    ("index_list", lambda x, y, m: x[[0, 0, 2]]), ("index_mask", lambda x, y, m: x[m]),
    ("cat", lambda x, y, m: tt.cat([x, y], dim=1)), ("where", lambda x, y, m: tt.where(m, x, y)),
    ("to_float64", lambda x, y, m: x.to(tt.float64)),
]


@pytest.mark.parametrize("name, fn", FLOAT32_OPS, ids=[n for n, _ in FLOAT32_OPS])
def test_float32_leaves_get_float32_grads(name, fn, device, rng):
    x = tt.tensor(rng.standard_normal((3, 4)) + 0.1, dtype=tt.float32, device=device, requires_grad=True)
    y = tt.tensor(rng.standard_normal((3, 4)), dtype=tt.float32, device=device, requires_grad=True)
    m = tt.tensor(rng.standard_normal((3, 4)) > 0, device=device)
    fn(x, y, m).sum().backward()
    assert x.grad is not None, f"{name}: x got no gradient"
    for leaf in (x, y):
        if leaf.grad is not None:
            assert leaf.grad.dtype == tt.float32, f"{name}: grad is {leaf.grad.dtype}"


def test_softmax_large_logits_backward_finite(device):
    x = tt.tensor([[1000.0, 0.0, -1000.0]], device=device, requires_grad=True)
    (x.log_softmax(dim=-1)[:, 1]).sum().backward()
    assert np.all(np.isfinite(x.grad.cpu().numpy()))


def test_indexing_backward_scatter_adds_repeats(device):
    x = tt.zeros(5, device=device, requires_grad=True)
    x[[0, 0, 1]].sum().backward()
    assert x.grad.tolist() == [2.0, 1.0, 0.0, 0.0, 0.0]


def test_indexing_backward_basic_and_mask(device):
    x = tt.zeros(3, 4, device=device, requires_grad=True)
    (x[1:, ::2] * 3).sum().backward()
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[1:, ::2] = 3
    np.testing.assert_array_equal(x.grad.cpu().numpy(), expected)
    y = tt.tensor([1.0, -2.0, 3.0], device=device, requires_grad=True)
    y[y > 0].sum().backward()
    assert y.grad.tolist() == [1.0, 0.0, 1.0]


def test_indexing_backward_2d_repeats(device):
    x = tt.zeros(3, 3, device=device, requires_grad=True)
    x[[0, 0, 2], [1, 1, 0]].sum().backward()
    expected = np.zeros((3, 3), dtype=np.float32)
    expected[0, 1] = 2
    expected[2, 0] = 1
    np.testing.assert_array_equal(x.grad.cpu().numpy(), expected)
