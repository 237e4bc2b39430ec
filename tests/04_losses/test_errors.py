"""Bad inputs give errors that name the problem: the bad index and where it is, dtypes, shapes."""

import re

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F


def t32(a, device, **kw):
    return tt.tensor(np.asarray(a, dtype=np.float32), device=device, **kw)


def ints(a, device):
    return tt.tensor(np.asarray(a, dtype=np.int64), device=device)


@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
def test_target_out_of_range_names_value_position_and_class_count(loss, device):
    z = t32(np.zeros((4, 3)), device)
    with pytest.raises(IndexError, match=re.escape("target 3 at position (2,) is out of range for 3 classes")):
        loss(z, ints([0, 1, 3, 2], device))
    with pytest.raises(IndexError, match=re.escape("target -1 at position (1, 0)")):
        loss(t32(np.zeros((2, 3, 2)), device), ints([[0, 1], [-1, 2]], device))


def test_ignored_targets_are_not_range_checked(device):
    F.cross_entropy(t32(np.zeros((2, 3)), device), ints([-100, 2], device))
    F.cross_entropy(t32(np.zeros((2, 3)), device), ints([7, 2], device), ignore_index=7)


@pytest.mark.parametrize("loss", [F.cross_entropy, F.nll_loss])
def test_float_targets_are_rejected_with_their_dtype(loss, device):
    with pytest.raises(TypeError, match="class indices.*float32"):
        loss(t32(np.zeros((2, 3)), device), t32([0, 1], device))


def test_integer_logits_are_rejected(device):
    with pytest.raises(TypeError, match="floating point.*int64"):
        F.cross_entropy(ints([[0, 1]], device), ints([0], device))


def test_wrong_target_shape_names_both_shapes(device):
    with pytest.raises(ValueError, match=re.escape("input of shape (4, 3)") + ".*" + re.escape("(4,), got (3,)")):
        F.cross_entropy(t32(np.zeros((4, 3)), device), ints([0, 1, 2], device))


def test_gpt_layout_mistake_gets_a_hint(device):
    with pytest.raises(ValueError, match=re.escape("logits.view(-1, 5) and targets.view(-1)")):
        F.cross_entropy(t32(np.zeros((2, 3, 5)), device), ints(np.zeros((2, 3)), device))


def test_bad_weight_shape(device):
    with pytest.raises(ValueError, match=re.escape("shape (3,), got (2,)")):
        F.cross_entropy(t32(np.zeros((2, 3)), device), ints([0, 1], device), weight=t32([1, 2], device))
    with pytest.raises(ValueError, match="pos_weight of shape .2,. does not broadcast"):
        F.binary_cross_entropy_with_logits(t32(np.zeros((2, 3)), device), t32(np.zeros((2, 3)), device),
                                           pos_weight=t32([1, 2], device))


@pytest.mark.parametrize("loss", [F.mse_loss, F.l1_loss, F.binary_cross_entropy_with_logits,
                                  F.binary_cross_entropy])
def test_elementwise_losses_refuse_mismatched_shapes(loss, device):
    with pytest.raises(ValueError, match=re.escape("target of shape (3,) does not match input of shape (3, 1)")):
        loss(t32(np.full((3, 1), 0.5), device), t32([0.0, 1.0, 0.0], device))


def test_bce_needs_float_targets(device):
    with pytest.raises(TypeError, match="target must be floating point, got int64"):
        F.binary_cross_entropy_with_logits(t32([0.0, 1.0], device), ints([0, 1], device))


def test_bce_needs_probabilities(device):
    with pytest.raises(ValueError, match="probabilities in .0, 1.*binary_cross_entropy_with_logits"):
        F.binary_cross_entropy(t32([0.5, 2.0], device), t32([0.0, 1.0], device))


@pytest.mark.parametrize("loss, target", [(F.cross_entropy, [0]), (F.mse_loss, [[0.0]]),
                                          (F.binary_cross_entropy_with_logits, [[0.0]])])
def test_bad_reduction(loss, target, device):
    t = tt.tensor(target, device=device)  # int64 class indices, or a float32 (1, 1) target
    with pytest.raises(ValueError, match="reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        loss(t32([[0.0]], device), t, reduction="avg")


def test_bad_label_smoothing_and_non_tensor_target(device):
    z = t32(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        F.cross_entropy(z, ints([0, 1], device), label_smoothing=1.5)
    with pytest.raises(TypeError, match="target must be a Tensor, got list"):
        F.cross_entropy(z, [0, 1])


@pytest.mark.parametrize("bad", [np.nan, -0.5])
def test_bce_refuses_nan_probabilities(bad, device):
    # a NaN would otherwise reach the clamped log as -100 and give a finite loss
    with pytest.raises(ValueError, match=r"probabilities in .0, 1.*found nan" if np.isnan(bad) else "found -0.5"):
        F.binary_cross_entropy(t32([0.5, bad], device), t32([0.0, 1.0], device))
