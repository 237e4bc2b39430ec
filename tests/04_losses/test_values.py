"""Loss values against float64 NumPy formulas: reductions, weights, ignore_index,
label smoothing, layouts, stability on huge logits, dtypes."""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F


def t32(a, device, **kw):
    return tt.tensor(np.asarray(a, dtype=np.float32), device=device, **kw)


def ints(a, device):
    return tt.tensor(np.asarray(a, dtype=np.int64), device=device)


def reference_cross_entropy(z, t, weight=None, ignore_index=-100, smoothing=0.0):
    """Per-row losses and the mean's denominator, in float64, straight from the definition."""
    z = z.astype(np.float64)
    C = z.shape[1]
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    rows, denom = [], 0.0
    for i, ti in enumerate(t):
        if ti == ignore_index:
            rows.append(0.0)
            continue
        q = np.full(C, smoothing / C) * w
        q[ti] += (1 - smoothing) * w[ti]
        rows.append(-(q * logp[i]).sum())
        denom += w[ti]
    return np.array(rows), denom


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_matches_definition(weighted, smoothing, rng, device):
    z = rng.standard_normal((7, 5)).astype(np.float32) * 3
    t = rng.integers(0, 5, 7)
    t[[2, 5]] = -100
    w = rng.uniform(0.5, 2, 5).astype(np.float32) if weighted else None
    rows, denom = reference_cross_entropy(z, t, w, smoothing=smoothing)
    kw = dict(weight=t32(w, device) if weighted else None, label_smoothing=smoothing)
    none = F.cross_entropy(t32(z, device), ints(t, device), reduction="none", **kw)
    assert none.shape == (7,) and none.dtype == tt.float32
    np.testing.assert_allclose(none.numpy(), rows, rtol=1e-5, atol=1e-6)
    assert none.numpy()[2] == 0 and none.numpy()[5] == 0, "ignored targets add nothing"
    np.testing.assert_allclose(F.cross_entropy(t32(z, device), ints(t, device), reduction="sum", **kw).item(),
                               rows.sum(), rtol=1e-5)
    np.testing.assert_allclose(F.cross_entropy(t32(z, device), ints(t, device), **kw).item(),
                               rows.sum() / denom, rtol=1e-5)


def test_cross_entropy_is_stable_for_huge_logits(device):
    z = t32([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [3e38, 0.0, 0.0]], device, requires_grad=True)
    losses = F.cross_entropy(z, ints([2, 0, 0], device), reduction="none")
    np.testing.assert_allclose(losses.numpy(), [2e4, np.log(3), 0.0], rtol=1e-6)
    losses.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [[1, 0, -1], [1 / 3 - 1, 1 / 3, 1 / 3], [0, 0, 0]], atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy on the non-finite row
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_ignores_non_finite_ignored_rows(bad, smoothing, device):
    # an ignored row's loss is masked, not multiplied by 0: 0 * nan would be nan (PyTorch: a finite loss)
    z = t32([[1.0, 2.0], [bad, 0.0], [0.0, 1.0]], device, requires_grad=True)
    t = ints([1, -100, 1], device)
    losses = F.cross_entropy(z, t, reduction="none", label_smoothing=smoothing)
    np.testing.assert_allclose(losses.numpy()[1], 0.0)
    loss = F.cross_entropy(z, t, label_smoothing=smoothing)
    want = np.log1p(np.exp(-1.0)) + smoothing / 2  # each kept row: LSE - z_1, and smoothing adds eps/2
    np.testing.assert_allclose(loss.item(), want, rtol=1e-6)
    loss.backward()
    assert np.isfinite(z.grad.numpy()[[0, 2]]).all()


def test_cross_entropy_class_dim_is_one(rng, device):
    """(N, C, d) logits give the same losses as the (N*d, C) rows they contain."""
    z = rng.standard_normal((2, 4, 3)).astype(np.float32)
    t = rng.integers(0, 4, (2, 3))
    spatial = F.cross_entropy(t32(z, device), ints(t, device), reduction="none")
    assert spatial.shape == (2, 3)
    rows = F.cross_entropy(t32(z.transpose(0, 2, 1).reshape(-1, 4), device), ints(t.reshape(-1), device),
                           reduction="none")
    np.testing.assert_allclose(spatial.numpy().reshape(-1), rows.numpy(), rtol=1e-6)
    single = F.cross_entropy(t32(z[0, :, 0], device), ints(t[0, 0], device))
    assert single.shape == () and np.isclose(single.item(), spatial.numpy()[0, 0])
    assert F.cross_entropy(t32(z[0, :, 0], device), ints(t[0, 0], device), reduction="none").shape == ()


def test_gpt_layout_with_view(rng, device):
    """nanoGPT's spelling: (B, T, C) logits flattened to (B*T, C), targets to (B*T,)."""
    B, T, C = 2, 3, 7
    logits = t32(rng.standard_normal((B, T, C)), device, requires_grad=True)
    targets = ints(rng.integers(0, C, (B, T)), device)
    loss = F.cross_entropy(logits.view(-1, C), targets.view(-1), ignore_index=-1)
    loss.backward()
    assert logits.grad.shape == (B, T, C)
    np.testing.assert_allclose(logits.grad.numpy().sum(-1), 0, atol=1e-6)  # softmax - onehot sums to 0


def test_ignore_index_custom_and_all_ignored(device):
    z = t32([[1.0, 2.0], [3.0, 4.0]], device, requires_grad=True)
    loss = F.cross_entropy(z, ints([1, 5], device), ignore_index=5)
    np.testing.assert_allclose(loss.item(), np.log1p(np.exp(-1.0)), rtol=1e-6)
    loss.backward()
    assert np.all(z.grad.numpy()[1] == 0), "an ignored row gets no gradient"
    with np.errstate(all="ignore"):
        empty = F.cross_entropy(z, ints([-100, -100], device))
    assert np.isnan(empty.item()), "mean over no targets is nan, as in PyTorch"
    assert F.cross_entropy(z, ints([-100, -100], device), reduction="sum").item() == 0


def test_nll_loss_equals_cross_entropy_of_log_softmax(rng, device):
    z = rng.standard_normal((6, 4)).astype(np.float32)
    t = np.array([0, 3, -100, 1, 2, 2])
    w = t32([1.0, 2.0, 0.5, 1.5], device)
    for reduction in ("mean", "sum", "none"):
        ce = F.cross_entropy(t32(z, device), ints(t, device), weight=w, reduction=reduction)
        nll = F.nll_loss(t32(z, device).log_softmax(dim=1), ints(t, device), weight=w, reduction=reduction)
        np.testing.assert_allclose(ce.numpy(), nll.numpy(), rtol=1e-5, atol=1e-6)


def test_nll_loss_ignored_minus_inf_stays_out(device):
    logp = t32([[0.0, -np.inf], [-np.inf, 0.0]], device)
    assert F.nll_loss(logp, ints([0, -100], device), reduction="sum").item() == 0


def test_int32_targets_work(device):
    z = t32([[1.0, 2.0]], device)
    t = tt.tensor(np.array([1], dtype=np.int32), device=device)
    np.testing.assert_allclose(F.cross_entropy(z, t).item(), np.log1p(np.exp(-1.0)), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(reduction, device):
    x, y = t32([[1.0, -2.0], [0.5, 3.0]], device), t32([[0.0, 0.0], [0.5, 1.0]], device)
    diff = np.array([[1.0, -2.0], [0.0, 2.0]])
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    np.testing.assert_allclose(F.mse_loss(x, y, reduction=reduction).numpy(), reduce(diff ** 2))
    np.testing.assert_allclose(F.l1_loss(x, y, reduction=reduction).numpy(), reduce(np.abs(diff)))
    assert F.mse_loss(x, y, reduction=reduction).dtype == tt.float32


def bce_reference(x, y, w=None, pw=None):
    x, y = x.astype(np.float64), y.astype(np.float64)
    pw = 1.0 if pw is None else pw
    loss = -(pw * y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))
    return loss if w is None else loss * w


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_with_logits_values(reduction, rng, device):
    x = rng.standard_normal((5, 3)).astype(np.float32) * 2
    y = rng.uniform(0, 1, (5, 3)).astype(np.float32)
    w = rng.uniform(0.5, 2, (5, 1)).astype(np.float32)
    pw = rng.uniform(0.5, 3, 3).astype(np.float32)
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    got = F.binary_cross_entropy_with_logits(t32(x, device), t32(y, device), weight=t32(w, device),
                                             pos_weight=t32(pw, device), reduction=reduction)
    assert got.dtype == tt.float32
    np.testing.assert_allclose(got.numpy(), reduce(bce_reference(x, y, w, pw)), rtol=1e-5)
    probs = F.binary_cross_entropy(t32(1 / (1 + np.exp(-x)), device), t32(y, device), weight=t32(w, device),
                                   reduction=reduction)
    np.testing.assert_allclose(probs.numpy(), reduce(bce_reference(x, y, w)), rtol=1e-4)


def test_bce_with_logits_is_stable(device):
    x = t32([-1e4, -100.0, 100.0, 1e4], device, requires_grad=True)
    y = t32([0.0, 1.0, 0.0, 1.0], device)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    np.testing.assert_allclose(loss.numpy(), [0.0, 100.0, 100.0, 0.0], atol=1e-6)
    loss.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, -1.0, 1.0, 0.0], atol=1e-6)


def test_bce_with_logits_keeps_tiny_losses(device):
    """A confident right answer (x = 40, y = 1) costs softplus(-40) = log1p(e^-40) = 4.248e-18, as in
    PyTorch; log(1 + e^-40) would round to log(1) = 0."""
    loss = F.binary_cross_entropy_with_logits(t32([40.0], device), t32([1.0], device))
    np.testing.assert_allclose(loss.item(), 4.248354e-18, rtol=1e-5)


def test_bce_with_logits_is_exact_past_ten(device):
    """softplus needs no cut-off: y = 1 at logit -10.5 costs 10.5 + log1p(e^-10.5) = 10.5000277, as in PyTorch."""
    loss = F.binary_cross_entropy_with_logits(t32([-10.5], device), t32([1.0], device))
    np.testing.assert_allclose(loss.item(), 10.5000277, rtol=0, atol=3e-6)


def test_bce_clamps_log_at_minus_100(device):
    p = t32([0.0, 1.0, 1.0], device, requires_grad=True)
    y = t32([1.0, 0.0, 1.0], device)
    loss = F.binary_cross_entropy(p, y, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [100.0, 100.0, 0.0])
    loss.sum().backward()
    assert np.isfinite(p.grad.numpy()).all(), "the gradient divides by at least 1e-12"


def test_float64_in_float64_out(device):
    z = tt.tensor([[1.0, 2.0]], dtype=tt.float64, device=device, requires_grad=True)
    loss = F.cross_entropy(z, ints([0], device), weight=t32([1.0, 2.0], device), label_smoothing=0.1)
    loss.backward()
    assert loss.dtype == tt.float64 and z.grad.dtype == tt.float64
