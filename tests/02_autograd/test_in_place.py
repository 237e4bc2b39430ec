"""In-place operators and assignments: a weight update under no_grad changes the tensor itself (every
name for it sees it, as in PyTorch); nothing in place may lose a gradient silently."""

import warnings

import numpy as np
import pytest

import tinytorch as tt


def host(t):
    return t.cpu().numpy()


def test_a_hand_written_update_under_no_grad_changes_the_parameter(device, rng):
    """p -= lr * p.grad over a model's parameter list, PyTorch's manual SGD step: the parameters themselves
    move (it used to rebind the loop's name p to a new tensor and leave the model as it was)."""
    weight = tt.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True, device=device)
    bias = tt.tensor(np.zeros(2, np.float32), requires_grad=True, device=device)
    parameters = [weight, bias]  # what model.parameters() hands out: the tensors the model holds
    x = tt.tensor(np.ones((4, 3), np.float32), device=device)
    ((x @ weight.T) + bias).sum().backward()
    before = host(weight).copy()  # on the CPU, host() is the array itself
    with tt.no_grad():
        for p in parameters:
            p -= 0.1 * p.grad
    np.testing.assert_allclose(host(weight), before - 0.1 * host(weight.grad), rtol=1e-6)
    with tt.no_grad():
        w = weight
        w *= 2
        w /= 4
        w += 1
    assert w is weight
    np.testing.assert_allclose(host(weight), (before - 0.1 * host(weight.grad)) / 2 + 1, rtol=1e-6)


def test_while_a_graph_is_recorded_the_operators_make_new_tensors(device):
    """total += loss in a loop keeps its gradient, and a tensor a graph saved is not changed under it."""
    x = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    total = 0
    for _ in range(3):
        total += (x * x).sum()
    total.backward()
    np.testing.assert_allclose(host(x.grad), [6.0, 12.0])
    c = tt.tensor([3.0, 4.0], device=device)
    y = (x * c).sum()
    alias = c
    alias += 1  # not under no_grad: a new tensor, c (saved by y's graph) stays
    assert alias is not c and host(c).tolist() == [3.0, 4.0]
    x.grad = None
    y.backward()
    np.testing.assert_allclose(host(x.grad), [3.0, 4.0])


def test_in_place_results_that_do_not_fit_are_refused(device):
    ints = tt.tensor([1, 2, 3], device=device)
    with tt.no_grad():
        with pytest.raises(TypeError, match="cannot be stored in the tensor's int64"):
            ints += 1.5
        with pytest.raises(TypeError, match="int64"):
            ints /= 2
        with pytest.raises(ValueError, match=r"shape \(2,\) does not broadcast to the tensor's shape \(3,\)"):
            floats = tt.zeros(3, device=device)
            floats += tt.ones(2, device=device)
    assert host(ints).tolist() == [1, 2, 3]


def test_assigning_a_tensor_that_needs_its_gradient_is_refused(device):
    h = tt.zeros(3, device=device)
    b = tt.tensor([1.0, 2.0], requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match="value requires grad"):
        h[0:2] = b
    with tt.no_grad():
        h[0:2] = b  # no graph is recorded anyway: a plain copy
    assert host(h).tolist() == [1.0, 2.0, 0.0]


def test_masked_fill_takes_a_0d_tensor_and_refuses_one_that_needs_grad(device):
    x = tt.tensor([1.0, 2.0], device=device)
    mask = tt.tensor([True, False], device=device)
    assert host(x.masked_fill(mask, tt.tensor(7.0, device=device))).tolist() == [7.0, 2.0]
    with pytest.raises(ValueError, match="0-d tensor without grad"):
        x.masked_fill(mask, tt.tensor(7.0, requires_grad=True, device=device))
    with pytest.raises(ValueError, match="0-d tensor"):
        x.masked_fill(mask, tt.tensor([7.0, 8.0], device=device))


def test_var_without_degrees_of_freedom_is_nan_not_an_exception(device):
    v = tt.tensor([3.0], requires_grad=True, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's division by zero, as PyTorch warns
        out = v.var()
        out.backward()
    assert np.isnan(out.item()) and np.isnan(host(v.grad)).all()


def test_clamp_keeps_float32_and_takes_tensor_bounds(device):
    assert tt.tensor([1, 2, 3], device=device).clamp(0.5).dtype == np.float32
    assert tt.tensor([1, 2, 3], device=device).clamp(0, 2).dtype == np.int64
    x = tt.tensor([1.0, 5.0], requires_grad=True, device=device)
    out = x.clamp(min=tt.tensor([2.0, 2.0], device=device))
    out.sum().backward()
    assert host(out).tolist() == [2.0, 5.0] and host(x.grad).tolist() == [0.0, 1.0]
    with pytest.raises(RuntimeError, match="requires grad"):
        x.clamp(max=tt.tensor([2.0, 2.0], requires_grad=True, device=device))
    with pytest.raises(ValueError, match="enlarge"):
        x.clamp(min=tt.zeros((3, 2), device=device))
