"""Every loss against torch.nn.functional (the oracle) with the same float32 inputs: values and
the gradients of the input (and of the target where PyTorch has one), tolerance 1e-5."""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
import tinytorch.nn.functional as F  # noqa: E402
from tinytorch.nn import losses  # noqa: E402

pytestmark = pytest.mark.parity
TF = torch.nn.functional
RTOL = ATOL = 1e-5
REDUCTIONS = ["mean", "sum", "none"]


def compare(ours_fn, theirs_fn, arrays, grads, device, rng, consts=()):
    """Run a loss in both frameworks; compare values and the grads of sum(loss * v).

    arrays: float32/int64 inputs; grads[i] says whether input i requires grad.
    consts: extra arrays (weights) passed to both as constants.
    """
    ours = [tt.tensor(a, device=device, requires_grad=g) for a, g in zip(arrays, grads)]
    theirs = [torch.tensor(a, requires_grad=g) for a, g in zip(arrays, grads)]
    oc = [None if c is None else tt.tensor(c, device=device) for c in consts]
    tc = [None if c is None else torch.tensor(c) for c in consts]
    out, ref = ours_fn(*ours, *oc), theirs_fn(*theirs, *tc)
    assert out.shape == tuple(ref.shape)
    assert out.dtype == tt.float32
    np.testing.assert_allclose(out.cpu().numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    v = rng.standard_normal(ref.shape).astype(np.float32)
    (out * tt.tensor(v, device=device)).sum().backward()
    (ref * torch.tensor(v)).sum().backward()
    for a, b, g in zip(ours, theirs, grads):
        if not g:
            continue
        assert a.grad is not None, "PyTorch has a gradient for this input; we have none"
        assert a.grad.dtype == tt.float32
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), rtol=RTOL, atol=ATOL)


def class_data(rng, shape, ignore_index=-100, ignored=0.2, scale=3.0):
    C = shape[1] if len(shape) > 1 else shape[0]
    t_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = rng.integers(0, C, t_shape)
    if t.ndim:
        t[rng.uniform(size=t.shape) < ignored] = ignore_index
    return (rng.standard_normal(shape) * scale).astype(np.float32), t.astype(np.int64), C


CE_OPTIONS = list(itertools.product(REDUCTIONS, [False, True], [-100, 1], [0.0, 0.1, 1.0]))


@pytest.mark.parametrize("reduction, weighted, ignore_index, smoothing", CE_OPTIONS)
@pytest.mark.parametrize("shape", [(8, 5), (3, 4, 2, 3)])
def test_cross_entropy(shape, reduction, weighted, ignore_index, smoothing, rng, device):
    z, t, C = class_data(rng, shape, ignore_index)
    w = rng.uniform(0.2, 2.0, C).astype(np.float32) if weighted else None
    kw = dict(ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    compare(lambda a, b, c: F.cross_entropy(a, b, weight=c, **kw),
            lambda a, b, c: TF.cross_entropy(a, b, weight=c, **kw),
            [z, t], [True, False], device, rng, consts=[w])


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_single_sample_and_huge_logits(reduction, rng, device):
    z, t, _ = class_data(rng, (6,))
    compare(lambda a, b: F.cross_entropy(a, b, reduction=reduction),
            lambda a, b: TF.cross_entropy(a, b, reduction=reduction), [z, t], [True, False], device, rng)
    z, t, _ = class_data(rng, (4, 7), scale=1e4)
    compare(lambda a, b: F.cross_entropy(a, b, reduction=reduction, label_smoothing=0.1),
            lambda a, b: TF.cross_entropy(a, b, reduction=reduction, label_smoothing=0.1),
            [z, t], [True, False], device, rng)


@pytest.mark.parametrize("reduction, weighted, ignore_index", list(itertools.product(REDUCTIONS, [False, True], [-100, 2])))
@pytest.mark.parametrize("shape", [(8, 5), (3, 4, 5), (5,)])
def test_nll_loss(shape, reduction, weighted, ignore_index, rng, device):
    z, t, C = class_data(rng, shape, ignore_index)
    z = z - np.log(np.exp(z).sum(axis=1 if z.ndim > 1 else 0, keepdims=True))  # log-probabilities
    w = rng.uniform(0.2, 2.0, C).astype(np.float32) if weighted else None
    kw = dict(ignore_index=ignore_index, reduction=reduction)
    compare(lambda a, b, c: F.nll_loss(a, b, weight=c, **kw), lambda a, b, c: TF.nll_loss(a, b, weight=c, **kw),
            [z, t], [True, False], device, rng, consts=[w])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_regression_losses(name, reduction, rng, device):
    x = rng.standard_normal((4, 3, 2)).astype(np.float32)
    y = rng.standard_normal((4, 3, 2)).astype(np.float32)
    compare(lambda a, b: getattr(F, name)(a, b, reduction=reduction),
            lambda a, b: getattr(TF, name)(a, b, reduction=reduction), [x, y], [True, True], device, rng)


BCE_OPTIONS = list(itertools.product(REDUCTIONS, [None, (6, 1), (4,)], [None, (4,)]))


@pytest.mark.parametrize("reduction, weight_shape, pos_weight_shape", BCE_OPTIONS)
def test_bce_with_logits(reduction, weight_shape, pos_weight_shape, rng, device):
    x = (rng.standard_normal((6, 4)) * 4).astype(np.float32)
    x[0, :2] = [80.0, -80.0]  # where the naive form overflows
    y = rng.uniform(0, 1, (6, 4)).astype(np.float32)
    y[1] = np.round(y[1])
    w = None if weight_shape is None else rng.uniform(0.2, 2, weight_shape).astype(np.float32)
    pw = None if pos_weight_shape is None else rng.uniform(0.2, 3, pos_weight_shape).astype(np.float32)
    compare(lambda a, b, c, d: F.binary_cross_entropy_with_logits(a, b, weight=c, pos_weight=d, reduction=reduction),
            lambda a, b, c, d: TF.binary_cross_entropy_with_logits(a, b, weight=c, pos_weight=d, reduction=reduction),
            [x, y], [True, True], device, rng, consts=[w, pw])


@pytest.mark.parametrize("reduction, weighted", list(itertools.product(REDUCTIONS, [False, True])))
def test_bce(reduction, weighted, rng, device):
    p = rng.uniform(0.02, 0.98, (5, 3)).astype(np.float32)
    y = rng.uniform(0, 1, (5, 3)).astype(np.float32)
    w = rng.uniform(0.2, 2, (3,)).astype(np.float32) if weighted else None
    compare(lambda a, b, c: F.binary_cross_entropy(a, b, weight=c, reduction=reduction),
            lambda a, b, c: TF.binary_cross_entropy(a, b, weight=c, reduction=reduction),
            [p, y], [True, True], device, rng, consts=[w])


def test_bce_saturated_probabilities(rng, device):
    """Probabilities of exactly 0 and 1: both clamp the log at -100 (values, input gradient)."""
    p = np.array([0.0, 1.0, 1.0, 0.0, 0.5], dtype=np.float32)
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0], dtype=np.float32)
    compare(lambda a, b: F.binary_cross_entropy(a, b, reduction="none"),
            lambda a, b: TF.binary_cross_entropy(a, b, reduction="none"), [p, y], [True, False], device, rng)


def test_modules_against_torch_modules(rng, device):
    z, t, C = class_data(rng, (6, 4))
    w = rng.uniform(0.5, 2, C).astype(np.float32)
    ours = losses.CrossEntropyLoss(weight=tt.tensor(w, device=device), label_smoothing=0.2, reduction="sum")
    theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=0.2, reduction="sum")
    compare(ours, theirs, [z, t], [True, False], device, rng)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    ours = losses.BCEWithLogitsLoss(pos_weight=tt.tensor(w, device=device))
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w))
    compare(ours, theirs, [x, rng.uniform(0, 1, (6, 4)).astype(np.float32)], [True, False], device, rng)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy on the non-finite row
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("weighted, smoothing", [(False, 0.0), (True, 0.1)])
def test_cross_entropy_non_finite_ignored_row(bad, weighted, smoothing, device):
    z = np.array([[1.0, 2.0, 0.5], [bad, 0.0, bad], [0.0, 1.0, -1.0]], np.float32)
    t = np.array([0, -100, 2])
    w = np.array([0.5, 2.0, 1.0], np.float32) if weighted else None
    ours = tt.tensor(z, device=device, requires_grad=True)
    theirs = torch.tensor(z, requires_grad=True)
    out = F.cross_entropy(ours, tt.tensor(t, device=device), weight=None if w is None else tt.tensor(w, device=device),
                          label_smoothing=smoothing)
    ref = TF.cross_entropy(theirs, torch.tensor(t), weight=None if w is None else torch.tensor(w),
                           label_smoothing=smoothing)
    np.testing.assert_allclose(out.item(), ref.item(), rtol=RTOL, atol=ATOL)
    out.backward()
    ref.backward()
    kept = [0, 2]  # PyTorch's gradient of the ignored row is nan too
    np.testing.assert_allclose(ours.grad.cpu().numpy()[kept], theirs.grad.numpy()[kept], rtol=RTOL, atol=ATOL)


def test_bce_nan_input_is_refused_as_in_pytorch(device):
    p, y = np.array([np.nan, 0.5], np.float32), np.array([0.0, 1.0], np.float32)
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        TF.binary_cross_entropy(torch.tensor(p), torch.tensor(y))
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        F.binary_cross_entropy(tt.tensor(p, device=device), tt.tensor(y, device=device))
