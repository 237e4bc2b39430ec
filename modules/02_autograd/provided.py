# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 02 — provided code
#
# The plumbing under the lesson (`autograd.py`): the imports, the grad-mode helpers
# that are not `no_grad`, the checks around the backward pass (its seed, gradient
# shapes, a freed graph), gradcheck's error type and float64 copies, and
# `tinytorch.autograd`, the PyTorch-style name for these functions. It exports before
# the lesson, into the same file (`tinytorch/core/autograd.py`).

# %%
#| default_exp core.autograd

# %%
#| export
import functools

import numpy as np

from tinytorch.core.backend import get_xp, is_floating, to_device
from tinytorch.core.tensor import Tensor, _grad_mode, from_op


class set_grad_enabled:
    """`set_grad_enabled(False)` turns recording off now; as a `with` block, until it ends."""

    def __init__(self, mode):
        self._restore_to = _grad_mode.enabled  # flipped now, not on entering a `with`
        _grad_mode.enabled = mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._restore_to


def is_grad_enabled():
    """Whether ops record the graph right now (in this thread)."""
    return _grad_mode.enabled


# %% [markdown]
# ## Checks around the backward pass
#
# They turn a misuse into an error that says what to do: a non-scalar root without a
# `gradient`, a gradient of the wrong shape or device, a backward rule that returns the
# wrong shape, a second pass through a freed graph.

# %%
#| export
_FREED = ("backward: this graph was already used by a backward pass and freed. "
          "Pass retain_graph=True to the first backward() to run it again, or recompute the forward.")


def _seed(root, gradient):
    """dL/droot: 1 for a scalar root, else the `gradient` the caller passed."""
    if not root.requires_grad:
        raise RuntimeError("backward: this tensor does not require grad and has no graph. Create the "
                           "inputs with requires_grad=True, and do not compute it under no_grad().")
    xp = get_xp(root._device)
    if gradient is None:
        if root.data.size != 1:
            raise RuntimeError(f"grad can be implicitly created only for scalar outputs; this one has "
                               f"shape {tuple(root.shape)}: pass backward(gradient=...) of that shape")
        return xp.array(1, dtype=root.data.dtype).reshape(root.shape)
    if isinstance(gradient, Tensor):
        if gradient._device != root._device:
            raise RuntimeError(f"backward: gradient is on {gradient._device} but the tensor is on "
                               f"{root._device}")
        gradient = gradient.data
    seed = xp.asarray(gradient, dtype=root.data.dtype)
    if seed.shape != root.shape:
        raise RuntimeError(f"backward: gradient has shape {tuple(seed.shape)}, but the tensor has "
                           f"shape {tuple(root.shape)}")
    return seed


def _check_shape(node, parent, grad):
    """A backward rule must return a gradient of its input's shape; name the rule if not."""
    if grad.shape != parent.data.shape:
        raise RuntimeError(f"{node._backward_fn.__name__} returned a gradient of shape {tuple(grad.shape)} "
                           f"for an input of shape {tuple(parent.shape)}")


# %% [markdown]
# ## gradcheck's error and inputs
#
# gradcheck works on float64 copies of the inputs (float32's 7 digits are too few for
# finite differences) and reports a mismatch as a `GradcheckError`.

# %%
#| export
class GradcheckError(RuntimeError):
    """Analytic and numerical gradients disagree."""


def _float64_copy(t):
    """A float64 leaf copy of an input (other inputs are passed through)."""
    if not isinstance(t, Tensor) or not is_floating(t.dtype):
        return t
    copy = from_op(get_xp(t._device).array(t.data, dtype=np.float64), t._device)
    return copy.requires_grad_(t.requires_grad)


def _projection(out):
    """Random weights v (fixed seed) on out's device: gradcheck checks d(Σ v·out)/dx."""
    weights = np.random.default_rng(0).standard_normal(out.shape)
    return to_device(np.asarray(weights), out._device)


# %% [markdown]
# ## `tinytorch.autograd`
#
# PyTorch's name for the engine's functions.

# %%
#| export autograd
"""`tinytorch.autograd`, as in PyTorch: the backward engine, grad mode and gradcheck."""
from tinytorch.core.autograd import (  # noqa: F401 -- re-exported names
    GradcheckError, backward, enable_grad, gradcheck, is_grad_enabled, no_grad,
    numerical_gradient, set_grad_enabled, topological_order,
)
