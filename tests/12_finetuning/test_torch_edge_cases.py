"""Edge inputs where module 12's functions once disagreed with PyTorch."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn import functional as F


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
def test_kl_div_negative_target_is_nan(reduction, device):
    """A negative 'probability' has no logarithm: PyTorch's xlogy(p, p) gives nan; kl_div took log p as 0 there and
    returned a finite loss."""
    x = tt.tensor(np.log([[0.25, 0.75], [0.5, 0.5]]), device=device, requires_grad=True)
    t = tt.tensor([[-0.5, 1.5], [0.5, 0.5]], device=device, requires_grad=True)
    with np.errstate(invalid="ignore"):
        out = F.kl_div(x, t, reduction=reduction)
        out.sum().backward()
    values = out.numpy()
    if reduction == "none":
        assert np.isnan(values[0, 0]) and np.isfinite(values[0, 1]) and np.isfinite(values[1]).all()
        assert np.isnan(t.grad.numpy()[0, 0]) and np.isfinite(t.grad.numpy()[1]).all()
    else:
        assert np.isnan(values) and np.isnan(t.grad.numpy()[0, 0])
    assert np.allclose(x.grad.numpy() * {"none": 1, "sum": 1, "mean": 4, "batchmean": 2}[reduction],
                       [[0.5, -1.5], [-0.5, -0.5]]), "d/d input = -p stays finite, as in PyTorch"


@pytest.mark.parity
def test_kl_div_matches_torch_on_zero_and_negative_targets():
    torch = pytest.importorskip("torch")
    x = np.log(np.array([[0.25, 0.75, 1e-30], [0.5, 0.5, 1.0]]))
    t = np.array([[0.0, 1.0, -0.25], [0.5, 0.5, 0.0]])
    for reduction in ("none", "sum", "mean", "batchmean"):
        with pytest.warns(UserWarning) if reduction == "mean" else np.errstate():  # torch: 'mean' is not KL
            want = torch.nn.functional.kl_div(torch.tensor(x), torch.tensor(t), reduction=reduction).numpy()
        with np.errstate(invalid="ignore"):
            got = F.kl_div(tt.tensor(x), tt.tensor(t), reduction=reduction).numpy()
        assert np.allclose(got, want, equal_nan=True), (reduction, got, want)


@pytest.mark.parametrize("pool", ["last_token_pool", "mean_pool"])
@pytest.mark.parametrize("mask", [[[2, 0, 0], [1, 1, 0]], [[1, 0.5, 0], [1, 1, 1]], [[1, -1, 0], [1, 1, 0]],
                                  [[1, np.nan, 0], [1, 0, 0]]], ids=["2", "0.5", "-1", "nan"])
def test_pools_refuse_mask_values_other_than_0_and_1(pool, mask, device):
    """A mask [[2, 0, 0]] read as 2 real tokens (last_token_pool picked the padding position 1; mean_pool
    weighted position 0 by 2/2); HF's masks are 0/1."""
    from tinytorch.finetune import classify
    hidden = tt.tensor(np.arange(18, dtype=np.float32).reshape(2, 3, 3), device=device)
    with pytest.raises(ValueError, match="0 or 1"):
        getattr(classify, pool)(hidden, tt.tensor(np.array(mask, dtype=np.float32), device=device))
    bools = getattr(classify, pool)(hidden, np.array([[True, False, False], [True, True, False]]))
    ints = getattr(classify, pool)(hidden, [[1, 0, 0], [1, 1, 0]])
    assert bools.tolist() == ints.tolist()


def test_lstm_and_gru_take_no_mode_argument():
    """mode= is how RNN picks its cell; an LSTM given mode="GRU" was built with GRU-shaped weights."""
    for cls in (tt.nn.LSTM, tt.nn.GRU):
        with pytest.raises(TypeError, match="unexpected keyword argument 'mode'"):
            cls(3, 4, mode="GRU")
    assert tt.nn.LSTM(3, 4).weight_ih_l0.shape == (16, 3) and tt.nn.RNN(3, 4, nonlinearity="relu").mode == "RNN_RELU"
