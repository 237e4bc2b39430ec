"""backward(): grads' dtype/shape, accumulation, retain_graph, no_grad, errors, deep graphs, memory."""

import gc
import weakref

import numpy as np
import pytest

import tinytorch as tt


def arr(t):
    return t.cpu().numpy()


@pytest.mark.parametrize("dtype", [tt.float32, tt.float64])
@pytest.mark.parametrize("shape_x, shape_y", [((3, 1), (2, 3, 4)), ((4,), (3, 4)), ((), (2, 2)),
                                              ((1, 1), (5,)), ((2, 3), (2, 3))])
def test_grad_dtype_and_shape_match_parameter(dtype, shape_x, shape_y, device):
    x = tt.ones(shape_x, dtype=dtype, device=device, requires_grad=True)
    y = tt.ones(shape_y, dtype=dtype, device=device, requires_grad=True)
    (x * y * 2.0).sum().backward()
    for p in (x, y):
        assert isinstance(p.grad, tt.Tensor)
        assert p.grad.dtype == dtype
        assert p.grad.shape == p.shape
        assert p.grad.requires_grad is False
    # each x element is broadcast over numel(out) / numel(x) elements
    n = int(np.prod(np.broadcast_shapes(shape_x, shape_y)))
    np.testing.assert_allclose(arr(x.grad), np.full(shape_x, 2.0 * n / max(1, int(np.prod(shape_x)))))


def test_grad_dtype_follows_leaf_under_promotion(device):
    x = tt.ones(3, dtype=tt.float32, device=device, requires_grad=True)
    w = tt.ones(3, dtype=tt.float64, device=device, requires_grad=True)
    out = (x * w).sum()
    assert out.dtype == tt.float64
    out.backward()
    assert x.grad.dtype == tt.float32
    assert w.grad.dtype == tt.float64


def test_known_gradients(device):
    x = tt.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    ((x * x).sum() + (3 * x).sum()).backward()
    assert x.grad.tolist() == [5.0, 7.0, 9.0]


def test_grads_accumulate_across_backward_calls(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0]
    x.grad = None
    (x * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_accumulation_is_in_place_and_keeps_float32(device):
    # a float64 operand sends float64 g to a float32 leaf; .grad stays the same float32 array
    w = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    c = tt.tensor([3.0, 4.0], dtype=tt.float64, device=device)
    (w * c).sum().backward()
    first = w.grad.data
    (w * c).sum().backward()
    assert w.grad.dtype == tt.float32 and w.grad.data is first
    assert w.grad.tolist() == [6.0, 8.0]


def test_tensor_used_twice_accumulates_within_graph(device):
    x = tt.tensor([2.0], device=device, requires_grad=True)
    a = x * 3
    (a + a * x + x).sum().backward()  # d/dx (3x + 3x^2 + x) = 4 + 6x
    assert x.grad.tolist() == [16.0]


def test_leaves_given_the_same_gradient_array_do_not_share_grad(device):
    # add passes one g array to both parents: each leaf's first .grad must be its own copy
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = tt.tensor([3.0, 4.0], device=device, requires_grad=True)
    (x + y).sum().backward()
    (x * 2).sum().backward()  # reaches x only
    assert x.grad.tolist() == [3.0, 3.0]
    assert y.grad.tolist() == [1.0, 1.0], "y.grad changed with x.grad: they share one array"


def test_retain_graph_allows_second_backward(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]


def test_second_backward_through_freed_graph_raises(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = (x * x).exp().sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_non_leaf_has_no_grad_and_is_leaf_flags(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    c = tt.tensor([1.0, 1.0], device=device)
    y = x * 2
    (y * y).sum().backward()
    assert x.is_leaf and c.is_leaf and not y.is_leaf
    assert y.grad is None
    assert c.grad is None
    assert x.grad.tolist() == [8.0, 16.0]


def test_requires_grad_propagation(device):
    x = tt.ones(2, device=device, requires_grad=True)
    c = tt.ones(2, device=device)
    assert (x + c).requires_grad is True
    assert (c + c).requires_grad is False
    assert (c * 2).is_leaf is True
    assert x.detach().requires_grad is False
    assert (x > 0).requires_grad is False


def test_detach_blocks_gradient(device):
    x = tt.tensor([3.0], device=device, requires_grad=True)
    (x * x.detach()).sum().backward()
    assert x.grad.tolist() == [3.0]


def test_non_scalar_backward_needs_gradient(device):
    x = tt.ones(2, 3, device=device, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar outputs"):
        y.backward()
    y.backward(tt.full((2, 3), 0.5, device=device))
    np.testing.assert_array_equal(arr(x.grad), np.ones((2, 3)))


def test_backward_gradient_on_scalar(device):
    x = tt.tensor(2.0, device=device, requires_grad=True)
    (x * x).backward(tt.tensor(3.0, device=device))
    assert x.grad.item() == 12.0


def test_no_grad_context(device):
    x = tt.ones(2, device=device, requires_grad=True)
    assert tt.is_grad_enabled() is True
    with tt.no_grad():
        assert tt.is_grad_enabled() is False
        y = x * 2 + 1
        z = y.exp().sum()
    assert tt.is_grad_enabled() is True
    assert y.requires_grad is False and z.requires_grad is False
    assert y.is_leaf is True


def test_no_grad_decorator(device):
    x = tt.ones(2, device=device, requires_grad=True)

    @tt.no_grad()
    def f(t):
        assert tt.is_grad_enabled() is False
        return t * 2

    assert f(x).requires_grad is False
    assert tt.is_grad_enabled() is True
    assert f.__name__ == "f"


def test_no_grad_restores_state_after_exception():
    with pytest.raises(KeyError):
        with tt.no_grad():
            raise KeyError("boom")
    assert tt.is_grad_enabled() is True


def test_set_grad_enabled_context_and_call(device):
    x = tt.ones(2, device=device, requires_grad=True)
    with tt.set_grad_enabled(False):
        assert (x * 2).requires_grad is False
        with tt.set_grad_enabled(True):
            assert (x * 2).requires_grad is True
        assert tt.is_grad_enabled() is False
    assert tt.is_grad_enabled() is True
    try:
        tt.set_grad_enabled(False)
        assert tt.is_grad_enabled() is False
        assert (x * 2).requires_grad is False
    finally:
        tt.set_grad_enabled(True)
    assert tt.is_grad_enabled() is True
    assert (x * 2).requires_grad is True


def test_enable_grad_inside_no_grad(device):
    x = tt.ones(2, device=device, requires_grad=True)
    with tt.no_grad():
        with tt.set_grad_enabled(True):
            y = x * 2
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]


def test_100k_op_chain_backprops_without_recursion_error(device):
    x = tt.tensor([1.0], device=device, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0]
    del y  # freeing a deep graph must not overflow the stack either
    gc.collect()


def test_graph_released_after_backward_by_refcount(device):
    x = tt.randn(10, device=device, requires_grad=True)
    h = x.exp()
    ref = weakref.ref(h)
    out = (h * h).sum()
    was_enabled = gc.isenabled()
    gc.disable()  # PyTorch frees this by reference counting alone
    try:
        out.backward()
        del out, h
        assert ref() is None, "intermediate tensor still alive after backward"
    finally:
        if was_enabled:
            gc.enable()


def test_graph_released_without_backward(device):
    x = tt.randn(10, device=device, requires_grad=True)
    h = x.tanh()
    ref = weakref.ref(h)
    out = (h * 2).sum()
    del out, h
    gc.collect()
    assert ref() is None


def test_leaf_grad_kept_after_graph_released(device):
    x = tt.ones(3, device=device, requires_grad=True)
    ref = weakref.ref(x)
    (x * 2).sum().backward()
    assert ref() is x and x.grad.tolist() == [2.0, 2.0, 2.0]
