"""A tensor changed in place after an op recorded it: backward refuses, as PyTorch's version counters do,
instead of differentiating the new numbers (a silently wrong gradient)."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.tensor import _Writes


def host(t):
    return t.cpu().numpy()


def weights(device):
    return tt.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)


def refused(loss, op="mul"):
    with pytest.raises(RuntimeError, match=f"the gradient of {op}: .*changed in place"):
        loss.backward()


def test_an_input_overwritten_before_backward_is_refused(device):
    """A batch buffer refilled before the last batch's backward: W's gradient would be the new batch's."""
    x = tt.tensor([1.0, 1.0, 1.0], device=device)
    w = weights(device)
    loss = (x * w).sum()
    x[0] = 100.0
    refused(loss)
    assert w.grad is None


def test_a_parameter_updated_under_no_grad_before_backward_is_refused(device):
    w = weights(device)
    loss = (w * w).sum()
    with tt.no_grad():
        w -= 0.1
    refused(loss)


def test_writes_through_a_detached_tensor_or_a_view_count(device):
    """detach() and views share the memory: PyTorch counts their writes too."""
    w = weights(device)
    loss = (w * w).sum()
    w.detach()[0] = 5.0
    refused(loss)
    x = tt.tensor(np.ones((2, 3), np.float32), device=device)
    loss = (x * w).sum()
    row = x[1]
    row[0] = 7.0
    refused(loss)


def test_an_output_changed_under_no_grad_is_refused(device):
    """exp's backward uses its output: a change to it would change the gradient."""
    x = tt.tensor([0.0, 1.0], requires_grad=True, device=device)
    y = x.exp()
    with tt.no_grad():
        y += 1
    assert "ExpBackward" in repr(y)  # printing it asks nothing of the saved arrays
    refused(y.sum(), op="exp")


def test_a_retained_graph_is_checked_again(device):
    w = weights(device)
    loss = (w * w).sum()
    loss.backward(retain_graph=True)
    with tt.no_grad():
        w *= 2
    refused(loss)


def test_writes_before_the_forward_or_after_backward_are_fine(device):
    """The training loop's order: change, forward, backward, update, forward, backward."""
    w = weights(device)
    x = tt.tensor([1.0, 1.0, 1.0], device=device)
    x[0] = 2.0
    for _ in range(2):
        (x * w * w).sum().backward()
        with tt.no_grad():
            w -= 0.1 * w.grad
    # d/dw of sum(x w²) is 2xw: [4, 4, 6] at w = [1, 2, 3], then [2.4, 3.2, 4.8] at w = [0.6, 1.6, 2.4]
    np.testing.assert_allclose(host(w.grad), [6.4, 7.2, 10.8], rtol=1e-5)


def test_clone_is_a_copy_in_the_graph(device):
    """Change a clone, not the original: the original's gradient is untouched and flows through the clone."""
    w = weights(device)
    loss_of_w = (w * w).sum()
    c = w.clone()
    with tt.no_grad():
        c += 10
    np.testing.assert_allclose(host(w), [1.0, 2.0, 3.0])
    loss_of_w.backward()
    np.testing.assert_allclose(host(w.grad), [2.0, 4.0, 6.0])
    w.grad = None
    (w.clone() * 3).sum().backward()
    np.testing.assert_allclose(host(w.grad), [3.0, 3.0, 3.0])
    assert "CloneBackward" in repr(w.clone())


def test_the_record_of_writes_stays_bounded(device):
    """A loop that writes into a fresh tensor every step must not grow the record forever: entries of
    arrays that are gone are dropped."""
    for _ in range(5000):
        t = tt.zeros(2, device=device)
        t[0] = 1.0
    assert len(_Writes.last) < 2048


def test_many_later_writes_do_not_hide_an_earlier_one(device):
    """Thousands of writes to other tensors after the one that matters: it is still seen."""
    w = weights(device)
    x = tt.tensor([2.0, 2.0, 2.0], device=device)
    loss = (x * w).sum()
    x[0] = 100.0
    others = [tt.zeros(1, device=device) for _ in range(9000)]
    for t in others:
        t[0] = 1.0
    refused(loss)


def test_a_new_array_that_reuses_an_old_id_is_not_taken_for_it(device):
    """Replacing a tensor's .data (as sharding's re-gather does) may hand it the id of an array that was
    written and freed after the node was recorded: that write was not to this memory."""
    w = weights(device)
    b = tt.tensor([1.0, 2.0, 3.0], device=device)
    loss = (w * b).sum()
    for _ in range(50):  # a freed array's id is soon reused: try until it is
        scratch = tt.zeros(3, device=device)
        scratch[0] = 1.0
        array = scratch.data
        freed = id(array)
        del scratch, array
        b.data = b.data.copy()
        if id(b.data) == freed:
            break
    assert id(b.data) == freed, "no id was reused: the case was not reached"
    loss.backward()  # no write touched b's numbers: no error
    np.testing.assert_allclose(host(w.grad), [1.0, 2.0, 3.0])
