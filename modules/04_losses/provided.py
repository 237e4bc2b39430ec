# %% [markdown]
# # Module 04 — provided code
#
# Infrastructure for the losses lesson: argument checks with helpful errors, the
# reshaping of any logits layout into rows (M, C), class weights and
# `ignore_index`, the elementwise reductions, the losses the lesson does not teach
# (`l1_loss`, `binary_cross_entropy`), the `nn.Module` wrappers and
# the metrics plumbing. Read it if you like; you never edit it.

# %%
#| default_exp nn.functional

# %%
#| export
# Loss functions, as in `torch.nn.functional`. Each returns a tensor in the autograd graph.
import builtins

import numpy as np

from tinytorch.core.backend import check_later, get_xp, is_floating, to_host
from tinytorch.core.tensor import Tensor, from_op

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, name):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_tensor(x, what, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(x).__name__}")


def _check_same_device(input, other, what, name):
    if other._device != input._device:
        raise RuntimeError(f"{name}: input is on {input._device} but {what} is on {other._device}; "
                           f"move one of them with .to()")


def _check_pair(input, target, name):
    """Elementwise losses: float tensors of one shape, on one device."""
    _check_tensor(input, "input", name)
    _check_tensor(target, "target", name)
    _check_same_device(input, target, "target", name)
    for what, t in (("input", input), ("target", target)):
        if not is_floating(t.dtype):
            raise TypeError(f"{name}: {what} must be floating point, got {t.dtype.name}; "
                            f"convert it with .float()")
    if input.shape != target.shape:
        # PyTorch only warns: (N, 1) against (N,) broadcasts to (N, N), a loss that is computable and wrong
        raise ValueError(f"{name}: target of shape {tuple(target.shape)} does not match input of "
                         f"shape {tuple(input.shape)}; broadcasting them would compute a different "
                         f"loss, so reshape one (e.g. target.view{tuple(input.shape)})")


def _reduce(loss, reduction):
    """Apply `reduction` to a tensor of per-element losses (tensor ops: the graph is kept)."""
    if reduction == "mean":
        return loss.mean()
    return loss.sum() if reduction == "sum" else loss


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error, |input - target| reduced by `reduction` (gradient 0 where equal)."""
    _check_reduction(reduction, "l1_loss")
    _check_pair(input, target, "l1_loss")
    return _reduce((input - target).abs(), reduction)


# %% [markdown]
# ## Class-index losses: layouts, targets, weights, reductions
#
# Logits are (N, C), a single (C,) with a 0-d target, or (N, C, d1, ...) with
# targets (N, d1, ...): the class dim is 1, as in PyTorch. `_class_rows` turns
# every layout into rows (M, C) and returns the map back; `_class_targets`
# checks the indices and masks `ignore_index`; `_target_weights` gives each
# row's weight w[t] (0 for an ignored row).

# %%
#| export
def _class_rows(input, target, name):
    """Logits with the class dim at 1 as rows (M, C), and a map from row grads back to input's shape."""
    _check_tensor(input, "input", name)
    _check_tensor(target, "target", name)
    _check_same_device(input, target, "target", name)
    if input.ndim == 0:
        raise ValueError(f"{name}: input must have a class dimension, got a 0-d tensor")
    if not is_floating(input.dtype):
        raise TypeError(f"{name}: input must be floating point (logits), got {input.dtype.name}")
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold class indices (int64), got {target.dtype.name}; "
                        f"class-probability targets are not supported; convert indices with .long()")
    C = input.shape[0] if input.ndim == 1 else input.shape[1]
    expected = () if input.ndim == 1 else (input.shape[0],) + tuple(input.shape[2:])
    if tuple(target.shape) != expected:
        hint = ""
        if input.ndim >= 3 and tuple(target.shape) == tuple(input.shape[:-1]):
            hint = (f"; the class dim is 1, so for (B, T, C) logits as in a GPT pass "
                    f"logits.view(-1, {input.shape[-1]}) and targets.view(-1)")
        raise ValueError(f"{name}: input of shape {tuple(input.shape)} has C={C} classes in dim "
                         f"{0 if input.ndim == 1 else 1} and needs a target of shape {expected}, "
                         f"got {tuple(target.shape)}{hint}")
    xp = get_xp(input._device)
    if input.ndim <= 2:
        rows = input.data.reshape(-1, C)                             # (M, C)
    else:
        rows = xp.moveaxis(input.data, 1, -1).reshape(-1, C)        # (N, d1.., C) -> (M, C)

    def to_input_shape(grad_rows):                                   # (M, C) -> input's shape
        if input.ndim <= 2:
            return grad_rows.reshape(input.shape)
        moved = grad_rows.reshape((input.shape[0],) + tuple(input.shape[2:]) + (C,))
        return xp.moveaxis(moved, -1, 1)
    return rows, to_input_shape


def _class_targets(target, num_classes, ignore_index, name):
    """Flat targets (M,) with ignored entries replaced by 0, and the (M,) mask of kept ones."""
    xp = get_xp(target._device)
    t = target.data.reshape(-1)
    keep = t != ignore_index
    bad = keep & ((t < 0) | (t >= num_classes))

    def out_of_range():  # checked on the device: raises now on cpu, at the next sync on cuda
        first = builtins.int(to_host(bad).argmax())
        position = tuple(builtins.int(i) for i in np.unravel_index(first, tuple(target.shape)))
        return IndexError(f"{name}: target {builtins.int(to_host(t)[first])} at position {position} is out "
                          f"of range for {num_classes} classes (expected 0 to {num_classes - 1}, or "
                          f"ignore_index={ignore_index})")
    check_later(bad.any(), out_of_range)
    return xp.where(keep, t, 0), keep


def _target_weights(weight, targets, keep, rows, name):
    """Each row's weight w[t] (1 without class weights), 0 for ignored rows: (M,); and w (C,) or None."""
    if weight is None:
        return keep.astype(rows.dtype), None
    C = rows.shape[1]
    _check_tensor(weight, "weight", name)
    if tuple(weight.shape) != (C,):
        raise ValueError(f"{name}: weight needs one entry per class, shape ({C},), "
                         f"got {tuple(weight.shape)}")
    w = weight.data.astype(rows.dtype, copy=False)                  # (C,)
    return get_xp(weight._device).where(keep, w[targets], 0).astype(rows.dtype, copy=False), w


def _check_label_smoothing(label_smoothing, name):
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{name}: label_smoothing must be in [0, 1], got {label_smoothing}")


# %% [markdown]
# ## Elementwise losses: weights, reductions, and BCE on probabilities

# %%
#| export
def _elementwise_weight(weight, input, what, name):
    """An optional tensor that broadcasts to input's shape (and does not enlarge it), as an array."""
    if weight is None:
        return None
    _check_tensor(weight, what, name)
    _check_same_device(input, weight, what, name)
    try:
        shape = np.broadcast_shapes(tuple(weight.shape), tuple(input.shape))
    except ValueError:
        shape = None
    if shape != tuple(input.shape):
        raise ValueError(f"{name}: {what} of shape {tuple(weight.shape)} does not broadcast to the "
                         f"input's shape {tuple(input.shape)}")
    return weight.data.astype(input.dtype, copy=False)


def _reduce_elements(loss, reduction, weight=None):
    """Per-element losses, times their weights (None: 1), reduced by `reduction`."""
    if weight is not None:
        loss = loss * weight
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _element_scale(g, reduction, count, weight=None):
    """dL/d(each element's loss): g ('none', 'sum') or g / count ('mean'), times the weights."""
    a = g / count if reduction == "mean" else g
    return a if weight is None else a * weight


def _log_clamped(a, xp):
    """max(log a, -100), as PyTorch's binary_cross_entropy (log 0 -> -100, without a warning)."""
    positive = a > 0
    return xp.where(positive, xp.maximum(xp.log(xp.where(positive, a, 1)), -100), -100).astype(a.dtype, copy=False)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities in [0, 1]; logs clamped at -100 as in PyTorch.

    Prefer `binary_cross_entropy_with_logits`: it never saturates.
    """
    name = "binary_cross_entropy"
    _check_reduction(reduction, name)
    _check_pair(input, target, name)
    xp = get_xp(input._device)
    w = _elementwise_weight(weight, input, "weight", name)
    p, y = input.data, target.data.astype(input.dtype, copy=False)
    outside = ~((p >= 0) & (p <= 1))  # written so that nan counts as outside
    if outside.any():
        raise ValueError(f"{name}: input must hold probabilities in [0, 1], found {float(p[outside][0]):g}; "
                         f"for logits use binary_cross_entropy_with_logits")
    log_p, log_not_p = _log_clamped(p, xp), _log_clamped(1 - p, xp)
    loss = -(y * log_p + (1 - y) * log_not_p)

    def binary_cross_entropy_backward(g):
        a = _element_scale(g, reduction, p.size, w)
        # the gradient (p - y) / (p (1 - p)) divides by at least 1e-12
        grad_p = a * (p - y) / xp.maximum((1 - p) * p, 1e-12) if input.requires_grad else None
        grad_y = (a * (log_not_p - log_p)).astype(target.dtype, copy=False) if target.requires_grad else None
        return grad_p, grad_y
    out = _reduce_elements(loss, reduction, w)
    return from_op(out, input._device, (input, target), binary_cross_entropy_backward)


# %% [markdown]
# ## `nn.Module` wrappers
#
# `nn.CrossEntropyLoss(label_smoothing=0.1)` is the function with its options
# fixed at construction. As in PyTorch, `weight` and `pos_weight` are buffers:
# `.to(device)` moves them and `state_dict()` saves them.

# %%
#| export nn.losses
"""Loss modules, as in `torch.nn`: options fixed at construction, `forward(input, target)`."""
from tinytorch.nn import functional as F
from tinytorch.nn.layers import Module


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        F._check_reduction(reduction, type(self).__name__)
        self.reduction = reduction


class MSELoss(_Loss):
    """Mean squared error: `F.mse_loss`."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    """Mean absolute error: `F.l1_loss`."""

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities: `F.nll_loss`."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy of logits: `F.cross_entropy`."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of logits: `F.binary_cross_entropy_with_logits`."""

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, weight=self.weight,
                                                  pos_weight=self.pos_weight, reduction=self.reduction)


class BCELoss(_Loss):
    """Binary cross-entropy of probabilities: `F.binary_cross_entropy`."""

    def __init__(self, weight=None, reduction="mean"):
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


# %% [markdown]
# ## Metrics plumbing
#
# Metrics have no gradient: they run on host NumPy arrays and return Python
# floats. `Mean` keeps a running (weighted) mean of an epoch's losses as two
# floats, so it never holds a tensor, a graph or GPU memory.

# %%
#| export metrics
"""Training metrics, computed on plain arrays: `accuracy`, and a running `Mean`."""
import numpy as np

from tinytorch.core.backend import to_numpy
from tinytorch.core.tensor import Tensor


def _host_array(x):
    """The numbers of a tensor, array or number, as a NumPy array (a host copy for cuda)."""
    return to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)


def _predicted(scores, target, threshold):
    """Predicted classes from logits (class dim 1), class indices, or binary scores."""
    if scores.ndim == target.ndim + 1:
        expected = scores.shape[:1] + scores.shape[2:] if target.ndim else ()
        if target.shape != expected:
            raise ValueError(f"accuracy: scores of shape {scores.shape} (class dim 1) need a target of "
                             f"shape {expected}, got {target.shape}")
        return scores.argmax(axis=1 if target.ndim else 0)
    if scores.shape != target.shape:
        raise ValueError(f"accuracy: predictions of shape {scores.shape} do not fit a target of shape "
                         f"{target.shape}; pass logits (N, C, ...) or predictions of the target's shape")
    return scores > threshold if scores.dtype.kind == "f" else scores


class Mean:
    """A running (weighted) mean of numbers or tensors, e.g. an epoch's loss.

    `update(value, weight=1)`: every element of `value` counts with `weight`.
    Stores Python floats only: it never holds a tensor, a graph or GPU memory.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.total = 0.0
        self.weight = 0.0

    def update(self, value, weight=1):
        if weight < 0:
            raise ValueError(f"Mean.update: weight must be >= 0, got {weight}")
        values = _host_array(value)
        self.total += float(values.sum(dtype=np.float64)) * weight
        self.weight += values.size * weight
        return self

    def compute(self):
        """The mean so far (nan before the first update)."""
        return self.total / self.weight if self.weight else float("nan")

    def __repr__(self):
        return f"Mean({self.compute():.6g}, weight={self.weight:g})"
