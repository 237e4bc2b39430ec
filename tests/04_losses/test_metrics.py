"""accuracy follows the shapes (logits, class predictions, binary scores); Mean is a running
mean that stores plain floats."""

import gc
import weakref

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.metrics import Mean, accuracy


def test_accuracy_from_logits_class_dim_one(device):
    logits = tt.tensor([[[2.0, 0.0], [0.0, 1.0]], [[0.0, 5.0], [1.0, 0.0]]], device=device)  # (N=2, C=2, d=2)
    target = tt.tensor([[0, 1], [1, 1]], device=device)  # argmax over dim 1: [[0, 1], [1, 0]]
    assert accuracy(logits, target) == 0.75
    assert accuracy(tt.tensor([0.1, 0.9, 0.0], device=device), tt.tensor(1, device=device)) == 1.0


def test_accuracy_inputs_and_types(device):
    got = accuracy(np.array([[0.0, 1.0], [1.0, 0.0]]), [1, 1])
    assert isinstance(got, float) and got == 0.5
    assert accuracy(tt.tensor([0.2, 0.7], device=device), tt.tensor([0.0, 1.0], device=device), threshold=0.5) == 1
    assert accuracy(tt.tensor([0.2, 0.7], device=device), tt.tensor([0.0, 1.0], device=device)) == 0.5
    assert np.isnan(accuracy(tt.tensor([[1.0, 0.0]], device=device), tt.tensor([-1], device=device), ignore_index=-1))


def test_accuracy_shape_errors(device):
    with pytest.raises(ValueError, match=r"scores of shape \(3, 2\).*target of shape \(3,\), got \(4,\)"):
        accuracy(tt.zeros(3, 2, device=device), tt.tensor([0, 1, 0, 1], device=device))
    with pytest.raises(ValueError, match=r"predictions of shape \(3, 2, 2\) do not fit a target of shape \(3,\)"):
        accuracy(tt.zeros(3, 2, 2, device=device), tt.tensor([0, 1, 0], device=device))


def test_mean_weighted_running_average(device):
    m = Mean()
    assert np.isnan(m.compute())
    m.update(1.0, weight=3).update(tt.tensor(3.0, device=device))
    assert m.compute() == pytest.approx(1.5)
    m.update(tt.tensor([4.0, 6.0], device=device), weight=0.5)  # each element counts with weight 0.5
    assert m.compute() == pytest.approx((3 + 3 + 2 + 3) / 5)
    m.reset()
    assert np.isnan(m.compute())
    with pytest.raises(ValueError, match="weight must be >= 0"):
        m.update(1.0, weight=-1)


def test_mean_never_holds_the_graph(device):
    x = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    loss = (x * x).sum()
    probe = weakref.ref(loss)
    m = Mean()
    m.update(loss, weight=2)
    assert all(isinstance(v, float) for v in vars(m).values())
    del loss
    gc.collect()
    assert probe() is None, "Mean kept a reference to the loss tensor"
    assert m.compute() == 5.0
