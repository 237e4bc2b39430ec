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
# # Module 02 — Autograd
#
# Training a network means following the gradient of a loss with respect to
# millions of parameters. Writing those derivatives by hand for every model is
# slow and error-prone; **automatic differentiation** computes them exactly, for
# any program built from differentiable operations, at the cost of about one
# extra forward pass.
#
# In module 01 every operation recorded its inputs (`_parents`) and a backward
# rule (`_backward`). Together they form a **graph**, built while the program
# runs (define-by-run, as in PyTorch). Here you build the engine that walks it.
#
# **You will implement:** `topological_order`, `backward` and
# `numerical_gradient` (the heart of `gradcheck`).

# %%
#| default_exp core.autograd

# %% [markdown]
# ## 1. The chain rule on a graph
#
# Take `c = a * b; d = c + a; L = d.sum()`. The loss reaches `a` along two
# paths (through `c` and directly into `d`), so dL/da is the **sum** of the two
# contributions: dL/da = dL/dc · b + dL/dd · 1.
#
# Reverse-mode autodiff does this for every node at once:
#
# 1. Seed dL/dL = 1.
# 2. Visit nodes so that a node comes **after every node that uses it**
#    (reverse topological order). When we reach a node, all contributions to
#    its gradient have arrived.
# 3. Call the node's `_backward(g)` to get its parents' contributions and
#    **add** them into the parents' running totals.
# 4. At a leaf (a tensor the user created with `requires_grad=True`), add the
#    total into `.grad`. Gradients accumulate across `backward()` calls, as in
#    PyTorch: that is why training loops call `zero_grad()`.
#
# Worked example: a = 2, b = 3. c = 6, d = 8, L = 8. dL/dd = 1, dL/dc = 1,
# dL/da = 1·3 + 1 = 4, dL/db = 1·2 = 2.
#
# *Cost.* One backward pass visits each node once and does roughly the work of
# its forward (matmul: twice). Memory: every node keeps what its backward needs
# (inputs, outputs) until the backward pass runs, which is why training needs
# far more memory than inference, and why we free the graph afterwards.

# %%
#| export
import functools

import numpy as np

from tinytorch.core.backend import get_xp, is_floating, to_device
from tinytorch.core.tensor import Tensor, _grad_mode, _wrap

# %% [markdown]
# ## 2. Turning recording off: `no_grad`
#
# Evaluation, sampling and optimizer updates need no graph. Recording one
# anyway costs time and keeps memory alive. `no_grad()` switches recording off
# for a `with` block or a decorated function; `set_grad_enabled(flag)` does the
# same conditionally. The switch is per thread (module 01's `_grad_mode`).

# %%
#| export
class _GradModeSwitch:
    """A context manager and decorator that sets grad mode, then restores it."""

    enabled = None

    def __new__(cls, func=None):
        switch = super().__new__(cls)
        return switch(func) if func is not None else switch  # allow @no_grad without ()

    def __enter__(self):
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._previous

    def __call__(self, func):
        @functools.wraps(func)
        def run_with_mode(*args, **kwargs):
            with type(self)():
                return func(*args, **kwargs)
        return run_with_mode


class no_grad(_GradModeSwitch):
    """Ops inside do not record the graph: `with no_grad(): ...` or `@no_grad()`."""

    enabled = False


class enable_grad(_GradModeSwitch):
    """Record the graph again inside a `no_grad` region."""

    enabled = True


class set_grad_enabled:
    """`set_grad_enabled(False)` turns recording off now; as a `with` block, until it ends."""

    def __init__(self, mode):
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = self._previous


def is_grad_enabled():
    """Whether ops record the graph right now (in this thread)."""
    return _grad_mode.enabled


# %% [markdown]
# ## 3. Ordering the graph
#
# We need every node to be processed after all the nodes computed from it. A
# depth-first search that appends a node only once all its parents are appended
# gives the opposite order (parents first); we then walk it backwards.
#
# The textbook DFS is recursive, but Python stops at about 1,000 nested calls,
# and a recurrent network unrolled over many steps, or a loop of 100,000 small
# updates, makes a graph that deep. So we keep our own stack of
# `(node, parents_done)` pairs: a node is pushed once to visit its parents and
# once more, below them, to be appended after them.
#
# Only nodes that require grad matter: a constant has nothing to receive.
#
# ### Exercise: `topological_order(root)`
# Return a list of the tensors reachable from `root` through `_parents`
# (skipping `None` parents and those that do not require grad), each exactly
# once, every tensor after all of its parents. Use a set of `id(node)` for the
# visited nodes (tensors compare elementwise with `==`, so they cannot be
# compared directly).

# %% nbgrader={"grade": false, "grade_id": "topological-order", "locked": false, "schema_version": 3, "solution": true}
#| export
def topological_order(root):
    """Nodes reachable from `root`, parents before children, without recursion."""
    ### BEGIN SOLUTION
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for parent in node._parents or ():
            if parent is not None and parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-topological-order", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_topological_order():
    a = Tensor([2.0], requires_grad=True)
    b = Tensor([3.0], requires_grad=True)
    c = a * b
    d = c + a
    order = topological_order(d)
    assert len(order) == 4, f"a, b, c, d should each appear once, got {len(order)} nodes"
    position = {id(t): i for i, t in enumerate(order)}
    for child, parent in ((c, a), (c, b), (d, c), (d, a)):
        assert position[id(parent)] < position[id(child)], "every tensor must come after its parents"
    constant = Tensor([1.0])
    assert len(topological_order(d * constant)) == 5, "tensors without requires_grad are not visited"
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    assert len(topological_order(y)) == 5001, "a chain of 5,000 ops must work (no recursion limit)"
    ### BEGIN HIDDEN TESTS
    z = x + x
    assert len(topological_order(z)) == 2, "a parent used twice is still listed once"
    ### END HIDDEN TESTS


test_topological_order()
print("topological_order: ok")

# %% [markdown]
# ## 4. The backward pass
#
# `backward(root, gradient=None, retain_graph=False)`:
#
# - **Seed.** For a scalar root the seed is 1. For a non-scalar root (a
#   vector of losses, say) "the" gradient is not defined: the caller must pass
#   `gradient`, the vector dL/droot, and we compute the vector-Jacobian product.
# - **Walk** `reversed(topological_order(root))`, keeping a dict
#   `id(node) -> gradient array`. Pop a node's total; if it is a leaf, add it
#   into `.grad` with `_accumulate` (provided); else call `node._backward(g)`
#   and add each returned gradient into its parent's total (skip `None`s and
#   parents that do not require grad). The shape check (provided) turns a wrong
#   backward rule into an error naming the op.
# - **Free.** Unless `retain_graph=True`, drop each node's `_backward` and
#   `_parents` once used (set `_parents = ()`, not `None`: `None` would make it
#   look like a leaf). The arrays saved for the backward pass are released, and
#   a second `backward()` through the same graph is a clear error.

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


def _accumulate(leaf, g):
    """leaf.grad += g, storing a fresh array of the leaf's dtype the first time."""
    if leaf.grad is None:
        # a copy: g may be a read-only broadcast view, or shared with another tensor
        leaf.grad = _wrap(get_xp(leaf._device).array(g, dtype=leaf.data.dtype), leaf._device)
    else:
        leaf.grad.data += g


def _check_shape(node, parent, grad):
    if grad.shape != parent.data.shape:
        raise RuntimeError(f"{node._backward.__name__} returned a gradient of shape {tuple(grad.shape)} "
                           f"for an input of shape {tuple(parent.shape)}")


# %% nbgrader={"grade": false, "grade_id": "backward", "locked": false, "schema_version": 3, "solution": true}
#| export
def backward(root, gradient=None, retain_graph=False):
    """Accumulate d(root)/d(leaf) into `.grad` of every leaf that requires grad."""
    seed = _seed(root, gradient)
    ### BEGIN SOLUTION
    grads = {id(root): seed}
    for node in reversed(topological_order(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if node._parents is None:  # a leaf
            _accumulate(node, g)
            continue
        if node._backward is None:
            raise RuntimeError(_FREED)
        for parent, parent_grad in zip(node._parents, node._backward(g)):
            if parent_grad is None or parent is None or not parent.requires_grad:
                continue
            _check_shape(node, parent, parent_grad)
            total = grads.get(id(parent))
            grads[id(parent)] = parent_grad if total is None else total + parent_grad
        if not retain_graph:
            node._parents, node._backward = (), None
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-backward", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_backward():
    a = Tensor(2.0, requires_grad=True)
    b = Tensor(3.0, requires_grad=True)
    loss = (a * b + a).sum()
    backward(loss)
    assert a.grad is not None and b.grad is not None, "leaves that require grad must get .grad"
    assert a.grad.item() == 4.0, f"dL/da = b + 1 = 4 (two paths add up), got {a.grad.item()}"
    assert b.grad.item() == 2.0, f"dL/db = a = 2, got {b.grad.item()}"
    assert a.grad.dtype == np.float32, f"grads have the leaf's dtype, got {a.grad.dtype}"
    backward((a * b).sum())
    assert a.grad.item() == 7.0, f"a second backward adds to .grad: 4 + 3 = 7, got {a.grad.item()}"

    x = Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x * x
    try:
        backward(y)
    except RuntimeError as err:
        assert "scalar" in str(err), f"the error should say outputs must be scalar: {err}"
    else:
        raise AssertionError("backward on a (2, 2) output without gradient= must raise")
    backward(y, Tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert np.allclose(x.grad.data, [[2.0, 0.0], [0.0, 8.0]]), f"vector-Jacobian product wrong: {x.grad}"

    x.grad = None
    s = (x * 3.0).sum()
    backward(s)
    try:
        backward(s)
    except RuntimeError as err:
        assert "retain_graph" in str(err), f"the error should mention retain_graph: {err}"
    else:
        raise AssertionError("a second backward through a freed graph must raise")
    x.grad = None
    s = (x * 3.0).sum()
    backward(s, retain_graph=True)
    backward(s)
    assert np.allclose(x.grad.data, 6.0), f"retain_graph=True allows a second pass: expected 6s, got {x.grad}"
    ### BEGIN HIDDEN TESTS
    w = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    backward((w[[0, 0, 2]] * 1.0).sum())
    assert np.allclose(w.grad.data, [2.0, 0.0, 1.0]), "repeated index picks add up"
    ### END HIDDEN TESTS


test_backward()
print("backward: ok")

# %% [markdown]
# `Tensor.backward()` (module 01) calls this function, so from now on you can
# write `loss.backward()` as in PyTorch:

# %%
w = Tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
x = Tensor([1.0, 3.0])
loss = (w @ x).relu().sum()
loss.backward()
print("loss", loss.item(), "dloss/dw", w.grad.tolist())

# %% [markdown]
# ## 5. Checking gradients numerically: `gradcheck`
#
# How do we know a backward rule is right? Compare it with the definition of
# the derivative. The **central difference**
#
# f'(x) ≈ (f(x + ε) - f(x - ε)) / (2ε)
#
# has error O(ε²) (the one-sided version, O(ε)). In float32 (7 digits) the
# subtraction f(x+ε) - f(x-ε) cancels most digits, so we check in **float64**
# with ε = 1e-6: truncation error ~1e-12, rounding error ~1e-16/1e-6 = 1e-10.
#
# For a function with many outputs, comparing the whole Jacobian costs one
# backward pass per output. Instead `gradcheck` contracts the output with a
# random vector v and checks the gradient of the scalar Σ v·f(x): a wrong
# Jacobian entry changes that gradient for almost every v. That needs one
# backward pass and 2 forward passes per input element.
#
# ### Exercise: `numerical_gradient(f, array, eps)`
# `f()` returns a Python float computed from the current contents of `array`.
# For every index `i` of `array`: set `array[i]` to old + eps, evaluate; to
# old - eps, evaluate; **restore** it; store the central difference. Return a
# float64 array of `array`'s shape. (`np.ndindex(shape)` walks all indices.)

# %% nbgrader={"grade": false, "grade_id": "numerical-gradient", "locked": false, "schema_version": 3, "solution": true}
#| export
def numerical_gradient(f, array, eps=1e-6):
    """Central-difference estimate of df/darray, perturbing `array` in place."""
    ### BEGIN SOLUTION
    grad = np.zeros(array.shape, dtype=np.float64)
    for index in np.ndindex(*array.shape):
        old = array[index].item()
        array[index] = old + eps
        plus = f()
        array[index] = old - eps
        minus = f()
        array[index] = old
        grad[index] = (plus - minus) / (2 * eps)
    return grad
    ### END SOLUTION


# %%
#| export
class GradcheckError(RuntimeError):
    """Analytic and numerical gradients disagree."""


def _float64_copy(t):
    """A float64 leaf copy of an input (other inputs are passed through)."""
    if not isinstance(t, Tensor) or not is_floating(t.dtype):
        return t
    copy = _wrap(get_xp(t._device).array(t.data, dtype=np.float64), t._device)
    return copy.requires_grad_(t.requires_grad)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True):
    """Compare backward() of `fn(*inputs)` with float64 central differences.

    Returns True when every input that requires grad agrees within
    atol + rtol * |numeric|; otherwise raises GradcheckError naming the worst
    element (or returns False when raise_exception=False).
    """
    inputs = [_float64_copy(t) for t in (inputs if isinstance(inputs, (tuple, list)) else (inputs,))]
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check")
    out = fn(*inputs)
    weights = np.random.default_rng(0).standard_normal(out.shape)
    weights = to_device(np.asarray(weights), out._device)
    if out.requires_grad:
        backward(out, weights)

    def projected():
        with no_grad():
            return float((fn(*inputs).data * weights).sum())

    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else np.asarray(x.grad.numpy(), dtype=np.float64)
        numeric = numerical_gradient(projected, x.data, eps)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if excess.size and excess.max() > 0:
            worst = tuple(int(i) for i in np.unravel_index(np.argmax(excess), excess.shape))
            message = (f"gradcheck failed for input {i} (shape {tuple(x.shape)}) at element {worst}: "
                       f"analytic {analytic[worst]:.6g} vs numeric {numeric[worst]:.6g} "
                       f"(|difference| {abs(analytic[worst] - numeric[worst]):.3g} > "
                       f"tolerance {atol + rtol * abs(numeric[worst]):.3g})")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True


# %% nbgrader={"grade": true, "grade_id": "test-gradcheck", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_gradcheck():
    values = np.array([1.0, 2.0, 3.0])
    g = numerical_gradient(lambda: float((values ** 2).sum()), values)
    assert np.allclose(g, [2.0, 4.0, 6.0], atol=1e-6), f"d/dx sum(x^2) = 2x, got {g}"
    assert np.array_equal(values, [1.0, 2.0, 3.0]), "numerical_gradient must restore every entry"
    x = Tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    w = Tensor(np.random.default_rng(2).standard_normal((4, 2)), requires_grad=True)
    assert gradcheck(lambda a, b: (a @ b).tanh(), (x, w)), "tanh(x @ w) has correct gradients"
    assert gradcheck(lambda a: a.log_softmax(dim=1), (x,)), "log_softmax has correct gradients"

    def wrong(a):  # the detached factor hides half of d(a*a)/da
        return a * a.detach()
    try:
        gradcheck(wrong, (x,))
    except GradcheckError as err:
        assert "input 0" in str(err), f"the error should name the input: {err}"
    else:
        raise AssertionError("gradcheck must catch a wrong gradient")
    ### BEGIN HIDDEN TESTS
    assert gradcheck(lambda a: a.sum(dim=0), (x,)), "sum over a dim"
    ### END HIDDEN TESTS


test_gradcheck()
print("gradcheck: ok")

# %% [markdown]
# ## 6. What it costs
#
# Time: the engine does a little Python work per node (a dict lookup, a call,
# an addition), on top of the array work. Memory: the graph holds on to every
# array a backward rule saved until the backward pass frees it. Both, measured:

# %%
import time
import weakref

a = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
start = time.perf_counter()
for _ in range(2000):
    backward((a + a).sum())
print(f"2x2 add + sum + backward: {(time.perf_counter() - start) / 2000 * 1e6:.1f} µs per step")

x = Tensor([1.0], requires_grad=True)
y = x
start = time.perf_counter()
for _ in range(100_000):
    y = y * 1.0001
backward(y.sum())
factor = float(np.float32(1.0001))  # the float32 nearest to 1.0001
print(f"100,000-op chain: forward + backward in {time.perf_counter() - start:.2f} s, "
      f"dy/dx = {x.grad.item():.1f} (expected {factor ** 100000:.1f}, up to float32 rounding)")

big = Tensor(np.ones((1000, 1000), dtype=np.float32), requires_grad=True)
hidden = big * 2.0
probe = weakref.ref(hidden)
loss = hidden.sum()
del hidden
print("intermediate alive before backward:", probe() is not None)
backward(loss)
print("intermediate alive after backward: ", probe() is not None, "(its 4 MB were released)")

# %% [markdown]
# **Next:** module 03 builds layers (`Linear`, `LayerNorm`, ...) from these
# tensors, and trusts this engine to train them.

# %%
#| export autograd
"""`tinytorch.autograd`, as in PyTorch: the backward engine, grad mode and gradcheck."""
from tinytorch.core.autograd import (  # noqa: F401 -- re-exported names
    GradcheckError, backward, enable_grad, gradcheck, is_grad_enabled, no_grad,
    numerical_gradient, set_grad_enabled, topological_order,
)
