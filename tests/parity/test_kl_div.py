"""F.kl_div against torch.nn.functional.kl_div: every reduction, log_target, grads of input and target."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
from tinytorch.nn import functional as F  # noqa: E402

pytestmark = [pytest.mark.parity, pytest.mark.filterwarnings("ignore:reduction. .mean. divides")]


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
def test_kl_div_matches_torch(reduction, log_target):
    rng = np.random.default_rng(0)
    x = np.log(rng.dirichlet(np.ones(5), size=4)).astype(np.float32)
    p = rng.dirichlet(np.ones(5), size=4).astype(np.float32)
    t = np.log(p) if log_target else p
    tx, tt_ = torch.tensor(x, requires_grad=True), torch.tensor(t, requires_grad=True)
    ox, ot = tt.tensor(x, requires_grad=True), tt.tensor(t, requires_grad=True)
    ref = torch.nn.functional.kl_div(tx, tt_, reduction=reduction, log_target=log_target)
    out = F.kl_div(ox, ot, reduction=reduction, log_target=log_target)
    assert out.shape == tuple(ref.shape) and out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-6)
    w = rng.standard_normal(tuple(ref.shape)).astype(np.float32)
    (ref * torch.tensor(w)).sum().backward()
    (out * tt.tensor(w)).sum().backward()
    np.testing.assert_allclose(ox.grad.numpy(), tx.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg="grad of input")
    np.testing.assert_allclose(ot.grad.numpy(), tt_.grad.numpy(), rtol=1e-5, atol=1e-6, err_msg="grad of target")


def test_zero_target_probabilities_count_as_zero():
    x = np.log(np.array([[0.5, 0.25, 0.25]], dtype=np.float32))
    p = np.array([[0.0, 0.5, 0.5]], dtype=np.float32)
    ref = torch.nn.functional.kl_div(torch.tensor(x), torch.tensor(p), reduction="sum")
    assert abs(F.kl_div(tt.tensor(x), tt.tensor(p), reduction="sum").item() - ref.item()) < 1e-6


def test_shape_mismatch_and_bad_reduction_are_named():
    with pytest.raises(ValueError, match="one shape"):
        F.kl_div(tt.zeros(2, 3), tt.zeros(2, 4))
    with pytest.raises(ValueError, match="batchmean"):
        F.kl_div(tt.zeros(2, 3), tt.zeros(2, 3), reduction="avg")
