"""Edge inputs where TinyTorch disagreed with PyTorch, through backward and gradcheck: gradcheck passing NaN
gradients, and the gradients of module 01's fixes (0-d max/min/transpose, empty softmax, float16 mean)."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import GradcheckError


def host(t):
    return t.cpu().numpy()


def _leaf(values, device, dtype=tt.float64):
    return tt.tensor(values, dtype=dtype, requires_grad=True, device=device)


def _nan_backward(a):  # forward 2a, backward NaN
    return tt.from_op(a.data * 2.0, a.device, (a,), lambda g: (g * np.nan,))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # log(-1), sqrt(-eps): NaN on purpose
@pytest.mark.parametrize("fn, values", [
    (lambda a: a.log(), [-1.0]),     # analytic -1, numeric NaN (log of a negative number)
    (lambda a: a.sqrt(), [0.0]),     # analytic inf, numeric NaN (sqrt(-eps))
    (_nan_backward, [1.0, 2.0]),     # analytic NaN, numeric 2
])
def test_gradcheck_fails_on_nan(fn, values, device):
    """torch.autograd.gradcheck fails when either gradient is NaN; TinyTorch's `excess.max() > 0` was False for
    NaN, so it passed."""
    x = _leaf(values, device)
    assert tt.autograd.gradcheck(fn, (x,), raise_exception=False) is False
    with pytest.raises(GradcheckError, match="input 0"):
        tt.autograd.gradcheck(fn, (x,))


def test_gradcheck_names_the_nan_element(device):
    x = _leaf([1.0, 2.0, 3.0], device)

    def nan_at_1(a):
        return tt.from_op(a.data * 2.0, a.device, (a,), lambda g: (g * np.array([2.0, np.nan, 2.0]),))
    with pytest.raises(GradcheckError, match=r"element \(1,\)"):
        tt.autograd.gradcheck(nan_at_1, (x,))


def test_gradcheck_still_passes_good_gradients(device):
    x = _leaf([[0.5, 1.0], [2.0, 3.0]], device)
    assert tt.autograd.gradcheck(lambda a: (a.log() * a).sum(dim=1), (x,)) is True


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [0, -1])
def test_max_min_of_a_0d_tensor_along_a_dim_backward(name, dim, device):
    x = _leaf(2.5, device, tt.float32)
    out = getattr(x, name)(dim=dim, keepdim=True)
    (out.values * 3.0).backward()
    assert x.grad.shape == () and x.grad.item() == 3.0


def test_transpose_of_a_0d_tensor_backward(device):
    x = _leaf(2.0, device, tt.float32)
    (x.transpose(0, -1) * 4.0).backward()
    assert x.grad.item() == 4.0


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_of_an_empty_tensor_backward(name, device):
    x = tt.zeros(0, 3, requires_grad=True, device=device)
    getattr(x, name)(0).sum().backward()
    assert x.grad.shape == (0, 3) and x.grad.dtype == tt.float32


def test_mean_of_float16_backward(device):
    """The float32 detour keeps the gradient float16: g / n."""
    x = _leaf([60000.0, 60000.0, 100.0, 4.0], device, tt.float16)
    out = x.mean()
    assert out.dtype == tt.float16 and out.item() == 30032.0
    out.backward()
    assert x.grad.dtype == tt.float16
    np.testing.assert_array_equal(host(x.grad), np.full(4, 0.25, np.float16))
