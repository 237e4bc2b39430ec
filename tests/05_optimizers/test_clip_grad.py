"""clip_grad_norm_ and clip_grad_value_ (tinytorch.nn.utils)."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn.utils import clip_grad_norm_, clip_grad_value_


def with_grads(device, *grads):
    params = []
    for g in grads:
        p = tt.tensor(np.zeros(np.shape(g), np.float32), device=device, requires_grad=True)
        p.grad = tt.tensor(np.asarray(g, np.float32), device=device)
        params.append(p)
    return params


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, float("inf")])
def test_norm_and_scaling(norm_type, device):
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    params = with_grads(device, *grads)
    flat = np.concatenate([g.ravel() for g in grads]).astype(np.float64)
    want = np.abs(flat).max() if norm_type == float("inf") else (np.abs(flat) ** norm_type).sum() ** (1 / norm_type)
    total = clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    assert total.shape == () and total.dtype == np.float32 and total.device == params[0].device
    np.testing.assert_allclose(total.item(), want, rtol=1e-5)
    coef = 0.5 / (want + 1e-6)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.cpu().numpy(), g * coef, rtol=1e-5)


def test_below_max_norm_is_untouched_and_in_place(device):
    params = with_grads(device, [0.3, 0.4])
    array = params[0].grad.data
    total = clip_grad_norm_(params, max_norm=1.0)
    assert np.isclose(total.item(), 0.5)
    assert params[0].grad.data is array
    np.testing.assert_array_equal(params[0].grad.cpu().numpy(), np.float32([0.3, 0.4]))
    clip_grad_norm_(params, max_norm=0.1)
    assert params[0].grad.data is array, "clipping scales the gradient array in place"
    np.testing.assert_allclose(params[0].grad.cpu().numpy(), [0.06, 0.08], rtol=1e-5)


def test_params_without_grad_and_generators(device):
    a, b = with_grads(device, [3.0], [4.0])
    c = tt.tensor([1.0], device=device, requires_grad=True)
    total = clip_grad_norm_((p for p in (a, c, b)), max_norm=100.0)
    assert np.isclose(total.item(), 5.0)
    assert clip_grad_norm_([c], 1.0).item() == 0.0
    assert clip_grad_norm_([], 1.0).item() == 0.0


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf * 0, as in PyTorch
def test_non_finite(device):
    params = with_grads(device, [np.inf, 1.0])
    with pytest.raises(RuntimeError, match="non-finite.*error_if_nonfinite=False"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    total = clip_grad_norm_(params, 1.0)  # as PyTorch: scales by max_norm / inf = 0
    assert np.isinf(total.item())
    assert np.all(params[0].grad.cpu().numpy()[1:] == 0.0)
    nan = with_grads(device, [np.nan, 1.0])
    assert np.isnan(clip_grad_norm_(nan, 1.0).item())
    assert np.all(np.isnan(nan[0].grad.cpu().numpy())), "a NaN norm makes the gradients NaN, as in PyTorch"


def test_clip_grad_value(device):
    params = with_grads(device, [-3.0, 0.5, 2.0], [[10.0]])
    array = params[0].grad.data
    assert clip_grad_value_(params, 1.0) is None
    np.testing.assert_array_equal(params[0].grad.cpu().numpy(), np.float32([-1.0, 0.5, 1.0]))
    np.testing.assert_array_equal(params[1].grad.cpu().numpy(), np.float32([[1.0]]))
    assert params[0].grad.data is array
    clip_grad_value_(params[1], 0.25)
    assert params[1].grad.item() == 0.25


def test_available_as_nn_utils():
    assert tt.nn.utils.clip_grad_norm_ is clip_grad_norm_


def test_float16_gradients_are_summed_in_float32(device):
    # 1000 entries of 10: the squares add up to 1e5, past float16's 65504, but the norm (316) fits
    p = tt.tensor(np.zeros(1000, np.float16), device=device, requires_grad=True)
    p.grad = tt.tensor(np.full(1000, 10.0, np.float16), device=device)
    total = clip_grad_norm_([p], max_norm=1.0)
    assert total.dtype == np.float16
    np.testing.assert_allclose(total.item(), 316.25, rtol=1e-3)
    np.testing.assert_allclose(p.grad.cpu().numpy(), 10.0 / 316.25, rtol=1e-3)


def test_norm_type_zero_counts_nonzeros(device):
    # as PyTorch: each gradient's count of nonzero entries, then the count of nonzero counts
    params = with_grads(device, [1.0, 0.0, 3.0], [[0.0, 4.0]], [0.0])
    total = clip_grad_norm_(params, max_norm=1.0, norm_type=0)
    assert total.item() == 2.0
    np.testing.assert_allclose(params[0].grad.cpu().numpy(), np.array([1.0, 0.0, 3.0]) / (2 + 1e-6), rtol=1e-6)


@pytest.mark.parametrize("norm_type", [0.0, 1.0, 2.0, float("inf")])
def test_empty_gradients_add_nothing(norm_type, device):
    params = with_grads(device, np.zeros((0, 3)), [3.0, -4.0])
    total = clip_grad_norm_(params, max_norm=100.0, norm_type=norm_type)
    want = {0.0: 1.0, 1.0: 7.0, 2.0: 5.0, float("inf"): 4.0}[norm_type]
    np.testing.assert_allclose(total.item(), want, rtol=1e-6)
    assert clip_grad_norm_(params[:1], max_norm=1.0, norm_type=norm_type).item() == 0.0


def test_max_norm_may_be_a_tensor(device):
    params = with_grads(device, [3.0, 4.0])
    total = clip_grad_norm_(params, max_norm=tt.tensor(0.5, device=device))
    assert total.item() == 5.0
    np.testing.assert_allclose(params[0].grad.cpu().numpy(), [0.3, 0.4], rtol=1e-5)


def test_clip_grad_norm_minus_inf_is_the_smallest_entry(device):
    """PyTorch's norm of order -inf is the smallest |entry| (of all gradients); it was 1 whatever the gradients."""
    params = with_grads(device, [3.0, -4.0], [12.0])
    total = clip_grad_norm_(params, max_norm=1.0, norm_type=-math.inf)
    assert total.item() == 3.0
    np.testing.assert_allclose(params[0].grad.cpu().numpy(), np.float32([3.0, -4.0]) / (3.0 + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(params[1].grad.cpu().numpy(), np.float32([12.0]) / (3.0 + 1e-6), rtol=1e-6)
    small = with_grads(device, [0.5, -0.25])
    assert clip_grad_norm_(small, max_norm=1.0, norm_type=float("-inf")).item() == 0.25
    np.testing.assert_array_equal(small[0].grad.cpu().numpy(), np.float32([0.5, -0.25]))  # below max_norm: untouched


@pytest.mark.parity
@pytest.mark.parametrize("grads", [[[3.0, -4.0], [12.0]], [[0.0, 1.0], [2.0]], [[np.nan, 1.0], [2.0]]],
                         ids=["plain", "a zero", "nan"])
def test_clip_grad_norm_minus_inf_matches_torch(grads):
    torch = pytest.importorskip("torch")
    params = with_grads("cpu", *grads)
    tparams = [torch.zeros(len(g), requires_grad=True) for g in grads]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.tensor(g, dtype=torch.float32)
    total = clip_grad_norm_(params, 1.0, norm_type=-math.inf)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, 1.0, norm_type=-math.inf)
    np.testing.assert_allclose(total.item(), ttotal.item(), rtol=1e-6)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad.numpy(), tp.grad.numpy(), rtol=1e-6)
