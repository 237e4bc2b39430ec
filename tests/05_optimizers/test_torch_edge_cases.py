"""Edge inputs where the optimizers once disagreed with PyTorch (clipping's are in test_clip_grad.py)."""

import numpy as np
import pytest

import tinytorch as tt
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
    np.testing.assert_allclose(tt.to_numpy(buf0), tt.to_numpy(buf1)[0], rtol=1e-6)


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
