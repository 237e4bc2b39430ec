"""Every loss is in the graph (backward reaches its input) and its gradient matches
float64 central differences, for every reduction and option; float32 stays float32."""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F
from tinytorch.autograd import GradcheckError, gradcheck

REDUCTIONS = ["mean", "sum", "none"]


def leaf(a, device, dtype=tt.float64):
    return tt.tensor(a, dtype=dtype, device=device, requires_grad=True)


def const(a, device, dtype=None):
    return tt.tensor(a, dtype=dtype, device=device)


def logits_and_targets(shape, rng, device, ignore=()):
    """Random logits of `shape` (class dim 1) and int64 targets, some set to -100."""
    C = shape[1] if len(shape) > 1 else shape[0]
    t_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    t = rng.integers(0, C, t_shape)
    for index in ignore:
        t[index] = -100
    return leaf(rng.standard_normal(shape) * 2, device), const(t, device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(4, 5), (5,), (2, 3, 4), (2, 3, 2, 2)])
def test_cross_entropy_gradcheck_layouts(shape, reduction, rng, device):
    x, t = logits_and_targets(shape, rng, device)
    assert gradcheck(lambda a: F.cross_entropy(a, t, reduction=reduction), (x,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_gradcheck_options(reduction, weighted, smoothing, rng, device):
    x, t = logits_and_targets((6, 4), rng, device, ignore=[1, 4])
    w = const(rng.uniform(0.5, 2.0, 4), device, tt.float32) if weighted else None
    fn = lambda a: F.cross_entropy(a, t, weight=w, reduction=reduction, label_smoothing=smoothing)  # noqa: E731
    assert gradcheck(fn, (x,))
    x2, t2 = logits_and_targets((2, 4, 3), rng, device, ignore=[(0, 1)])
    fn2 = lambda a: F.cross_entropy(a, t2, weight=w, reduction=reduction, label_smoothing=smoothing)  # noqa: E731
    assert gradcheck(fn2, (x2,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_gradcheck(reduction, weighted, rng, device):
    x, t = logits_and_targets((5, 3), rng, device, ignore=[2])
    w = const(rng.uniform(0.5, 2.0, 3), device) if weighted else None
    assert gradcheck(lambda a: F.nll_loss(a.log_softmax(dim=1), t, weight=w, reduction=reduction), (x,))
    x3, t3 = logits_and_targets((2, 3, 2), rng, device)
    assert gradcheck(lambda a: F.nll_loss(a, t3, weight=w, reduction=reduction), (x3,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("loss", [F.mse_loss, F.l1_loss])
def test_regression_losses_gradcheck_input_and_target(loss, reduction, rng, device):
    x = leaf(rng.standard_normal((3, 4)), device)
    y = leaf(rng.standard_normal((3, 4)), device)
    assert gradcheck(lambda a, b: loss(a, b, reduction=reduction), (x, y))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("pos_weighted", [False, True])
def test_bce_with_logits_gradcheck(reduction, weighted, pos_weighted, rng, device):
    x = leaf(rng.standard_normal((4, 3)) * 3, device)
    y = leaf(rng.uniform(0, 1, (4, 3)), device)
    w = const(rng.uniform(0.5, 2, (4, 1)), device) if weighted else None
    pw = const(rng.uniform(0.5, 3, 3), device) if pos_weighted else None
    fn = lambda a, b: F.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=pw, reduction=reduction)  # noqa: E731
    assert gradcheck(fn, (x, y))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_gradcheck(reduction, weighted, rng, device):
    p = leaf(rng.uniform(0.05, 0.95, (4, 3)), device)
    y = leaf(rng.uniform(0, 1, (4, 3)), device)
    w = const(rng.uniform(0.5, 2, 3), device) if weighted else None
    assert gradcheck(lambda a, b: F.binary_cross_entropy(a, b, weight=w, reduction=reduction), (p, y))


def test_gradcheck_catches_a_wrong_loss_gradient(rng, device, monkeypatch):
    """The checks above can fail: a backward that forgets the one-hot is caught."""
    x, t = logits_and_targets((3, 4), rng, device)
    assert gradcheck(lambda a: F.cross_entropy(a, t), (x,))
    correct = F._softmax_minus_target
    monkeypatch.setattr(F, "_softmax_minus_target",
                        lambda z, m, log_sum, tg, ps, ts, xp: correct(z, m, log_sum, tg, ps, ts * 0, xp))
    x.grad = None
    with pytest.raises(GradcheckError):
        gradcheck(lambda a: F.cross_entropy(a, t), (x,))


ALL_LOSSES = {
    "mse_loss": lambda x, c: F.mse_loss(x, c["y"]),
    "l1_loss": lambda x, c: F.l1_loss(x, c["y"]),
    "cross_entropy": lambda x, c: F.cross_entropy(x, c["t"]),
    "cross_entropy_smooth_weighted": lambda x, c: F.cross_entropy(x, c["t"], weight=c["w"], label_smoothing=0.1),
    "nll_loss": lambda x, c: F.nll_loss(x, c["t"]),
    "bce_with_logits": lambda x, c: F.binary_cross_entropy_with_logits(x, c["y01"], pos_weight=c["w"]),
    "bce": lambda x, c: F.binary_cross_entropy(x.sigmoid(), c["y01"]),
}


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
@pytest.mark.parametrize("reduction_sum", [False, True])
def test_every_loss_keeps_the_graph_and_float32(name, reduction_sum, rng, device):
    """The classic bug: a loss that returns a fresh tensor without a graph trains nothing."""
    x = tt.tensor(rng.standard_normal((4, 3)).astype(np.float32), device=device, requires_grad=True)
    c = {"y": const(rng.standard_normal((4, 3)).astype(np.float32), device),
         "y01": const(rng.uniform(0, 1, (4, 3)).astype(np.float32), device),
         "t": const(np.array([0, 2, 1, 2]), device),
         "w": const(np.array([1.0, 2.0, 0.5], dtype=np.float32), device)}
    loss = ALL_LOSSES[name](x, c)
    assert loss.shape == () and loss.dtype == tt.float32, f"{name}: {loss.shape} {loss.dtype}"
    assert loss.requires_grad and not loss.is_leaf, f"{name} returned a tensor without a graph"
    (loss * 2 if reduction_sum else loss).backward()
    assert x.grad is not None, f"{name}: backward() did not reach the logits"
    assert x.grad.dtype == tt.float32, f"{name}: gradient dtype {x.grad.dtype}"
    assert np.isfinite(x.grad.numpy()).all() and np.abs(x.grad.numpy()).sum() > 0


def test_no_graph_under_no_grad(device):
    x = tt.tensor([[1.0, 2.0]], device=device, requires_grad=True)
    with tt.no_grad():
        loss = F.cross_entropy(x, const([1], device))
    assert not loss.requires_grad


def test_fused_cross_entropy_makes_no_float64_and_keeps_no_probabilities(rng, device):
    """The backward closure holds the logits and (M,) vectors only; everything is float32."""
    x = tt.tensor(rng.standard_normal((8, 6)).astype(np.float32), device=device, requires_grad=True)
    loss = F.cross_entropy(x, const(rng.integers(0, 6, 8), device), label_smoothing=0.1)
    assert loss.dtype == tt.float32
    held = [cell.cell_contents for cell in loss._backward.__closure__]
    arrays = [a for a in held if hasattr(a, "shape") and hasattr(a, "dtype")]
    big = [a for a in arrays if a.shape == (8, 6)]
    assert len(big) == 1 and np.shares_memory(tt.to_numpy(big[0]), x.numpy()), \
        "only the logits themselves should be (M, C) in the closure"
    assert all(a.dtype != np.float64 for a in arrays), [a.dtype for a in arrays]


@pytest.mark.parametrize("loss", ["cross_entropy", "smoothed", "weighted", "nll_loss"])
def test_a_batch_with_every_target_ignored_has_zero_gradients(loss, device):
    """D = 0 (all padding): the mean is 0/0 = nan, as PyTorch's, but the gradient is 0, not nan in every row."""
    logits = tt.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32), requires_grad=True,
                       device=device)
    target = tt.tensor(np.full(5, -100), device=device)
    with np.errstate(all="ignore"):
        out = {"cross_entropy": lambda: F.cross_entropy(logits, target),
               "smoothed": lambda: F.cross_entropy(logits, target, label_smoothing=0.2),
               "weighted": lambda: F.cross_entropy(logits, target, weight=tt.tensor(np.ones(4, np.float32) / 2,
                                                                                     device=device)),
               "nll_loss": lambda: F.nll_loss(logits.log_softmax(1), target)}[loss]()
        out.backward()
    assert np.isnan(out.item())
    grad = logits.grad.cpu().numpy()
    assert not np.isnan(grad).any() and not grad.any(), f"{loss}: gradient {grad} (should be all 0)"


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_mean_with_class_weights_summing_below_one(loss, rng, device):
    """'mean' divides by D = Σ w_t also when D < 1 (here 0.1 + 0.2): the gradient is g / D, not g / max(D, 1)."""
    x, _ = logits_and_targets((2, 3), rng, device)
    t, w = const([0, 2], device), const([0.1, 1.0, 0.2], device, tt.float32)
    fn = (lambda a: F.cross_entropy(a, t, weight=w)) if loss == "cross_entropy" else \
        (lambda a: F.nll_loss(a.log_softmax(dim=1), t, weight=w))
    assert gradcheck(fn, (x,))
