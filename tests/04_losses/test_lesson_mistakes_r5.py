"""Round-5 mutation escapes of module 04: plausible wrong answers that the older tests let through."""

import numpy as np

import tinytorch as tt
from tinytorch.metrics import accuracy
from tinytorch.nn.functional import mse_loss


def test_mse_squares_the_difference_not_the_expansion():
    # x² - 2xy + y² cancels catastrophically in float32 when x ≈ y are large: 0 here instead of 1
    assert mse_loss(tt.tensor([10001.0, -20000.0]), tt.tensor([10000.0, -20002.0]), reduction="none").tolist() == [1, 4]


def test_accuracy_ignore_index_zero_is_not_none():
    # `if ignore_index:` treats class 0 as "no ignore_index"
    assert accuracy(tt.tensor([1, 1, 2]), tt.tensor([0, 1, 1]), ignore_index=0) == 0.5
    logits = tt.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert accuracy(logits, tt.tensor([0, 0, 1]), ignore_index=0) == 1.0


def test_bce_target_gradient_with_pos_weight_is_stable():
    # (pos_weight - 1) * log1p(exp(-x)) overflows for x << 0; the stable softplus gives -x here
    x = tt.tensor([-100.0, -30.0, 50.0])
    y = tt.tensor([1.0, 0.0, 0.5], requires_grad=True)
    with np.errstate(over="raise", invalid="raise"):
        tt.nn.functional.binary_cross_entropy_with_logits(x, y, pos_weight=tt.tensor([3.0]), reduction="sum").backward()
    softplus = np.logaddexp(0, -x.data.astype(np.float64))
    assert np.allclose(y.grad.data, -x.data + 2 * softplus, rtol=1e-6)
