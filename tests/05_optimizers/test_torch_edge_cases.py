"""Edge inputs where the optimizers and gradient clipping once disagreed with PyTorch."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn.utils import clip_grad_norm_
from tinytorch.optim import SGD


@pytest.mark.parametrize("options", [{"weight_decay": 0.5}, {"maximize": True}, {"dampening": 0.5, "weight_decay": 0.1}],
                         ids=["weight_decay", "maximize", "dampening"])
def test_sgd_momentum_on_a_0d_parameter_matches_a_1_entry_one(options, device):
    """-grad and grad + wd*θ of a 0-d array are NumPy scalars: the momentum buffer must still be an array
    that later steps update (it was a scalar that stayed at the first gradient)."""
    def run(shape):
        p = tt.tensor(np.full(shape, 1.0, np.float32), device=device, requires_grad=True)
        opt = SGD([p], lr=0.1, momentum=0.9, **options)
        for g in (0.5, -1.0, 2.0):
            p.grad = tt.tensor(np.full(shape, g, np.float32), device=device)
            opt.step()
        return p, opt.state[p]["momentum_buffer"]
    p0, buf0 = run(())
    p1, buf1 = run((1,))
    assert p0.shape == () and p0.dtype == np.float32
    np.testing.assert_allclose(p0.cpu().numpy(), p1.cpu().numpy()[0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(buf0.get() if hasattr(buf0, "get") else buf0), np.asarray(
        buf1.get() if hasattr(buf1, "get") else buf1)[0], rtol=1e-6)


@pytest.mark.parity
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_0d_parameter_matches_torch(nesterov):
    torch = pytest.importorskip("torch")
    p, tp = tt.tensor(np.float32(1.0), requires_grad=True), torch.tensor(1.0, requires_grad=True)
    options = dict(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=nesterov, maximize=True)
    opt, topt = SGD([p], **options), torch.optim.SGD([tp], **options)
    for g in (0.5, -1.0, 2.0, 0.25):
        p.grad, tp.grad = tt.tensor(np.float32(g)), torch.tensor(g)
        opt.step()
        topt.step()
        np.testing.assert_allclose(p.item(), tp.item(), rtol=1e-6)


def with_grads(device, *grads):
    params = []
    for g in grads:
        p = tt.tensor(np.zeros(np.shape(g), np.float32), device=device, requires_grad=True)
        p.grad = tt.tensor(np.asarray(g, np.float32), device=device)
        params.append(p)
    return params


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
