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
# millions of parameters. Writing those derivatives by hand for every model is slow
# and error-prone; **automatic differentiation** computes them exactly, for any
# program built from differentiable operations, at the cost of about one extra
# forward pass.
#
# In module 01 every operation recorded its inputs (`_parents`) and a backward rule
# (`_backward`), and you tested each rule alone. Together they form a **graph**,
# built while the program runs (define-by-run, as in PyTorch). Here you build the
# engine that walks it, the switch that stops recording it, and the tool that checks
# every backward rule against the definition of the derivative.
#
# **You will write:** `no_grad` (the context manager),
# `topological_order`, `backward` with its gradient accumulation,
# `numerical_gradient`, and the comparison at the heart of `gradcheck`.

# %%
#| default_exp core.autograd

# %% [markdown]
# ## 0. What is provided
#
# `provided.py` exports into the same package file before this lesson. From it, and
# from module 01, the next cell imports: `Tensor` and `from_op`; `_grad_mode`, the
# per-thread flag that `from_op` reads before recording the graph; `_seed`, which
# builds dL/droot and explains a missing `gradient`; `_check_shape`, which names a
# backward rule that returns the wrong shape; `_FREED`, the error message for a graph
# used twice; and gradcheck's `GradcheckError`, `_float64_copy` and `_projection`.

# %%
import functools

import numpy as np

from tinytorch.core.backend import get_xp
from tinytorch.core.autograd import (
    GradcheckError, _FREED, _check_shape, _float64_copy, _projection, _seed, is_grad_enabled,
)
from tinytorch.core.tensor import Tensor, _expect, _grad_mode, from_op

# %% [markdown]
# ## 1. Turning recording off: `no_grad`
#
# *Why.* Evaluation, sampling and the optimizer's update need no graph. Recording one
# anyway costs time (a closure per op) and memory: every recorded op keeps the arrays
# its backward needs alive until a backward pass that never comes. PyTorch's answer is
# a switch: `with torch.no_grad(): ...`, or `@torch.no_grad()` on a function.
#
# *How.* `from_op` records only when `_grad_mode.enabled` is true. A `with` block
# calls `__enter__` on the way in and `__exit__` on the way out, even when the block
# raises. So `__enter__` remembers the current flag and sets the class's `enabled`;
# `__exit__` puts the remembered flag back. Restoring (not setting to True) is what
# makes nesting work: `no_grad` inside `no_grad` must leave recording off when the
# inner block ends. `enable_grad` is the same switch with `enabled = True`.
#
# A switch used as a decorator, `@no_grad()`, receives the function and returns a
# wrapper that runs it inside a fresh switch of the same class (`__call__`, given: later
# modules decorate functions with it while the package is being imported).
#
# ### Exercise 1: `_GradModeSwitch.__enter__` and `__exit__`
# - Hint 1: remember, set, restore.
# - Hint 2: keep the old flag on `self`, so each `with` block restores its own.
# - Hint 3: `__enter__` stores `_grad_mode.enabled` as `self._previous`, assigns the
#   class's `enabled`, and returns `self`; `__exit__` assigns the stored value back.

# %% nbgrader={"grade": false, "grade_id": "no-grad", "locked": false, "schema_version": 3, "solution": true}
#| export
class _GradModeSwitch:
    """A context manager and decorator that sets grad mode, then restores it."""

    enabled = None

    def __new__(cls, func=None):
        switch = super().__new__(cls)
        return switch(func) if func is not None else switch  # allow @no_grad without ()

    def __enter__(self):
        ### BEGIN SOLUTION
        self._previous = _grad_mode.enabled
        _grad_mode.enabled = self.enabled
        return self
        ### END SOLUTION

    def __exit__(self, *exc):
        ### BEGIN SOLUTION
        _grad_mode.enabled = self._previous
        ### END SOLUTION

    def __call__(self, func):  # as a decorator: run func inside a fresh switch of this class
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


# %% nbgrader={"grade": true, "grade_id": "test-no-grad", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_no_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        assert not is_grad_enabled(), "inside no_grad(), grad mode must be off"
        y = x * 2
    assert is_grad_enabled(), "grad mode must be back on after the block"
    assert not y.requires_grad and y._parents is None, "an op under no_grad records no graph"
    assert (x * 2).requires_grad, "outside the block, ops record again"
    with no_grad():
        with no_grad():
            pass
        assert not is_grad_enabled(), "nested no_grad: the outer block is still off after the inner one"
        with enable_grad():
            assert (x * 2).requires_grad, "enable_grad turns recording back on inside no_grad"
        assert not is_grad_enabled(), "leaving enable_grad restores the outer no_grad"
    assert is_grad_enabled(), "after nested blocks grad mode must be on again: each switch restores its own saved mode"
    try:
        with no_grad():
            raise KeyError("boom")
    except KeyError:
        pass
    else:
        raise AssertionError("a KeyError raised inside no_grad() vanished: __exit__ must not return True (swallow it)")
    assert is_grad_enabled(), "grad mode is restored even when the block raises"

    @no_grad()
    def double(t):
        return t * 2
    assert not double(x).requires_grad, "@no_grad() runs the function without recording"
    assert double.__name__ == "double", "the decorator keeps the function's name (functools.wraps)"
    assert is_grad_enabled(), "after the decorated call, grad mode is back on"
    ### BEGIN HIDDEN TESTS
    @no_grad
    def triple(t):
        return t * 3
    assert not triple(x).requires_grad, "@no_grad without parentheses"
    ### END HIDDEN TESTS


try:
    test_no_grad()
finally:  # a failed check here must not leave grad mode off for the cells below
    _grad_mode.enabled = True
print("no_grad: ok")

# %% [markdown]
# ## 2. The chain rule on a graph
#
# Take `c = a * b; d = c + a; L = d.sum()`. The loss reaches `a` along two paths
# (through `c`, and directly into `d`), so dL/da is the **sum** of the two
# contributions: dL/da = dL/dc · b + dL/dd · 1.
#
# Reverse-mode autodiff does this for every node at once:
#
# 1. Seed dL/dL = 1.
# 2. Visit nodes so that a node comes **after every node that uses it** (reverse
#    topological order). When we reach a node, all contributions to its gradient have
#    arrived.
# 3. Call the node's `_backward(g)` to get its parents' contributions, and **add** them
#    into the parents' running totals.
# 4. At a leaf (a tensor the user created with `requires_grad=True`), add the total
#    into `.grad`. Gradients accumulate across `backward()` calls, as in PyTorch: that
#    is why training loops call `zero_grad()`.
#
# Worked example: a = 2, b = 3. c = 6, d = 8, L = 8. dL/dd = 1, dL/dc = 1,
# dL/da = 1·3 + 1 = 4, dL/db = 1·2 = 2.
#
# ## 3. Ordering the graph
#
# We need every node processed after all the nodes computed from it. A depth-first
# search that appends a node only once all its parents are appended gives the opposite
# order (parents first); the backward pass walks it from the end.
#
# The textbook DFS is recursive, but Python stops at about 1,000 nested calls, and a
# recurrent network unrolled over many steps, or a loop of 100,000 small updates, makes
# a graph that deep. So keep your own stack of `(node, parents_done)` pairs: a node is
# pushed once to visit its parents, and once more, below them, to be appended after
# them. Only nodes that require grad matter: a constant has nothing to receive.
#
# Worked example: for the graph above, one valid order is [a, b, c, d]; [b, a, c, d] is
# another. [a, c, b, d] is not: c comes before its parent b.
#
# ### Exercise 2: `topological_order(root)`
# Return a list of the tensors reachable from `root` through `_parents` (skipping `None`
# parents and those that do not require grad), each exactly once, every tensor after all
# of its parents.
#
# - Hint 1: iterative DFS, post-order: a node goes into the list after its parents.
# - Hint 2: tensors compare elementwise with `==`, so keep a set of `id(node)` for
#   visited nodes; a leaf's `_parents` is `None`.
# - Hint 3: an output list, a visited set and a stack holding `(root, False)`; pop until
#   empty: a `True` entry is appended; an unvisited `False` entry is marked, pushed back
#   as `True`, then its eligible parents are pushed as `False`.

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
        assert position[id(parent)] < position[id(child)], \
            f"every tensor must come after its parents (a, b before c, c before d), got the order " \
            f"{[{id(a): 'a', id(b): 'b', id(c): 'c', id(d): 'd'}[id(t)] for t in order]}"
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
# - **Seed.** For a scalar root the seed is 1. For a non-scalar root (a vector of
#   losses, say) "the" gradient is not defined: the caller passes `gradient`, the
#   vector dL/droot, and the engine computes the vector-Jacobian product. `_seed`
#   (provided) does both, and explains a mistake.
# - **Walk** the order from the end, keeping a dict `id(node) -> gradient array`. Pop a
#   node's total (a node no gradient reached is skipped). At a leaf, add the total into
#   `.grad`. Otherwise call `node._backward(g)` and add each returned gradient into its
#   parent's total, skipping `None`s and parents that do not require grad; run
#   `_check_shape` (provided) on each first, so a wrong rule is named.
# - **Free.** Unless `retain_graph=True`, drop each node's `_backward` and `_parents`
#   once used. Set `_parents = ()`, not `None`: `None` would make the node look like a
#   leaf. The arrays saved for the backward pass are released, and a second pass through
#   the same graph finds `_backward` missing: raise `RuntimeError(_FREED)`.
#
# **Saved arrays must not change.** A rule reads arrays kept from the forward pass (`mul`'s
# other operand, `exp`'s output). Write into one between forward and backward (`x[0] = 5`,
# `w -= ...` under `no_grad`, an optimizer's `step()`) and the rule would differentiate
# the new numbers, a wrong gradient with no error. So each in-place write through a tensor
# is counted, per block of memory (views and detached tensors share it), and reading
# `node._backward` (provided) raises if the node's inputs or output were written since it
# was recorded, as PyTorch's version counters do. Change a `.clone()` instead.
#
# **Accumulating into a leaf** (`_accumulate`): the first time, `.grad` becomes a new
# `Tensor` holding a **copy** of `g` in the leaf's dtype. A copy, because `g` may be a
# read-only broadcast view, or the very array another tensor holds; later in-place
# additions would corrupt it. After that, add in place into `.grad.data`.
#
# Worked example, with the graph of section 2: the dict starts as {L: 1}. L's rule gives
# d: 1. d's rule gives c: 1 and a: 1. c's rule gives a: 3 (now a: 4) and b: 2. a and b are
# leaves: a.grad = 4, b.grad = 2.
#
# ### Exercise 3: `_accumulate(leaf, g)` and `backward`
# - Hint 1: `_accumulate`: create once, then add in place. `backward`: a dict of running
#   totals, filled in reverse topological order.
# - Hint 2: a node is a leaf when `node._parents is None`; a freed node has
#   `_backward is None` but is not a leaf. The new total is `parent_grad` if the parent
#   had none yet, else the sum (not in place: the first array may belong to someone else).
# - Hint 3: `_accumulate` copies with the namespace's `array` (dtype: the leaf's) and
#   wraps it with `from_op`. `backward`: a dict keyed by `id`, seeded with the root; walk
#   the topological order reversed: pop, skip None, leaf → accumulate, freed → raise,
#   else pair each parent with its entry of the node's backward output; after each node,
#   free it unless `retain_graph`.

# %% nbgrader={"grade": false, "grade_id": "backward", "locked": false, "schema_version": 3, "solution": true}
#| export
def _accumulate(leaf, g):
    """leaf.grad += g, storing a fresh array of the leaf's dtype the first time."""
    ### BEGIN SOLUTION
    if leaf.grad is None:
        leaf.grad = from_op(get_xp(leaf._device).array(g, dtype=leaf.data.dtype), leaf._device)
    else:
        leaf.grad.data += g
    ### END SOLUTION


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
        rule = node._backward
        if rule is None:
            raise RuntimeError(_FREED)
        for parent, parent_grad in zip(node._parents, rule(g)):
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
    backward((a * b + a).sum())
    assert a.grad is not None and b.grad is not None, "leaves that require grad must get .grad"
    assert a.grad.shape == () and b.grad.shape == (), f"a 0-d leaf gets a 0-d grad, got {a.grad.shape}"
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
    assert x.grad.shape == (2, 2), f"x.grad has x's shape (2, 2), got {x.grad.shape}"
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

    p = Tensor([1.0, 2.0], requires_grad=True)
    q = Tensor([3.0, 4.0], requires_grad=True)
    backward((p + q).sum())  # add hands the same g array to both leaves
    backward((p * 2.0).sum())  # reaches p only
    assert q.grad.tolist() == [1.0, 1.0], \
        f"q.grad must stay [1, 1] after a backward that reaches only p, got {q.grad.tolist()}: " \
        f"p.grad and q.grad share one array; _accumulate must store a copy of g the first time"
    assert p.grad.tolist() == [3.0, 3.0], f"p.grad = 1 + 2 = 3 per entry, got {p.grad.tolist()}"
    w = Tensor([1.0, 2.0], requires_grad=True)
    backward((w * Tensor(np.array([3.0, 4.0]))).sum())  # a float64 operand: g reaches w as float64
    assert w.grad.dtype == np.float32, \
        f"a float32 leaf gets a float32 .grad even when g arrives as float64, got {w.grad.dtype}: " \
        f"_accumulate's first copy takes the leaf's dtype"
    first = w.grad.data
    backward((w * Tensor(np.array([3.0, 4.0]))).sum())
    assert w.grad.data is first and w.grad.dtype == np.float32 and w.grad.tolist() == [6.0, 8.0], \
        f"a second backward adds into the same float32 .grad array in place (+=): expected [6, 8] float32, got " \
        f"{w.grad.tolist()} {w.grad.dtype}, same array: {w.grad.data is first}"
    h = x * 3.0
    backward(h.sum())
    assert h._parents == (), f"after backward (retain_graph=False) every node of the graph is freed, the " \
        f"intermediate h = x * 3 too (its _parents set to ()), got {h._parents}"
    c = from_op(x.data * 2.0, x._device, (x,), lambda g: (None,))  # a rule that gives x no gradient
    x.grad = None
    _expect(lambda: (backward((c * 1.0).sum()), x.grad)[1], None,
            "a None gradient from a rule is skipped: x.grad must stay None (nothing accumulated into it)")
    p, q = Tensor([1.0], requires_grad=True), Tensor([1.0], requires_grad=True)
    backward(((p + q) + p).sum())  # add hands one g array to both parents
    assert p.grad.tolist() == [2.0] and q.grad.tolist() == [1.0], f"L = (p + q) + p: expected p.grad [2], " \
        f"q.grad [1], got {p.grad.tolist()}, {q.grad.tolist()}: add up paths into a new array (total + g), not +="
    ### BEGIN HIDDEN TESTS
    w = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    backward((w[[0, 0, 2]] * 1.0).sum())
    assert np.allclose(w.grad.data, [2.0, 0.0, 1.0]), "repeated index picks add up"
    ### END HIDDEN TESTS


test_backward()
print("backward: ok")

# %% [markdown]
# `Tensor.backward()` (module 01) calls this function, so from now on you can write
# `loss.backward()` as in PyTorch. A one-layer example: d/dW of Σ relu(W x) is the outer
# product of the relu mask with x.

# %%
w = Tensor([[0.5, -1.0], [2.0, 0.0]], requires_grad=True)
x = Tensor([1.0, 3.0])
loss = (w @ x).relu().sum()
loss.backward()
print("loss", loss.item(), "dloss/dw", w.grad.tolist())

# %% [markdown]
# ## 5. Checking gradients numerically
#
# *Why.* A backward rule with a wrong sign or a missing term still produces numbers, and
# a model still trains a little. The only reliable check is the definition of the
# derivative itself. The **central difference**
#
# f'(x) ≈ (f(x + ε) - f(x - ε)) / (2ε)
#
# has error O(ε²) (the one-sided version, O(ε)). In float32 (7 digits), the subtraction
# f(x+ε) - f(x-ε) cancels most digits, so we check in **float64** with ε = 1e-6:
# truncation error ~1e-12, rounding error ~1e-16 / 1e-6 = 1e-10.
#
# Worked example: f(x) = x², x = 3, ε = 0.1: (3.1² - 2.9²) / 0.2 = (9.61 - 8.41) / 0.2 = 6,
# exactly f'(3): for a quadratic the central difference has no truncation error at all.
#
# ### Exercise 4: `numerical_gradient(f, array, eps)`
# `f()` returns a Python float computed from the current contents of `array`. For every
# index `i` of `array`, estimate df/darray[i], and leave `array` as you found it.
#
# - Hint 1: perturb one entry up, evaluate; down, evaluate; restore.
# - Hint 2: the estimate is (f₊ - f₋) / (2 eps); read the old value as a Python float
#   (`.item()`) so that restoring is exact.
# - Hint 3: a float64 array of zeros for the result; walk every index with `np.ndindex`;
#   three assignments to the entry (old + eps, old - eps, old) around two calls of `f`.

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


# %% nbgrader={"grade": true, "grade_id": "test-numerical-gradient", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_numerical_gradient():
    values = np.array([1.0, 2.0, 3.0])
    g = numerical_gradient(lambda: float((values ** 2).sum()), values)
    assert g.shape == (3,), f"one estimate per entry: shape (3,), got {np.shape(g)}"
    assert np.allclose(g, [2.0, 4.0, 6.0], atol=1e-6), f"d/dx sum(x^2) = 2x, got {g}"
    assert g.dtype == np.float64, f"estimates are float64, got {g.dtype}"
    assert np.array_equal(values, [1.0, 2.0, 3.0]), "numerical_gradient must restore every entry"
    m = np.array([[1.0, 2.0], [3.0, 4.0]])
    g = numerical_gradient(lambda: float(m[0, 1] * m[1, 0]), m)
    assert g.shape == (2, 2) and np.allclose(g, [[0, 3], [2, 0]], atol=1e-6), f"2-D input: got {g}"
    three = np.array([3.0])
    g = numerical_gradient(lambda: float(three[0] ** 2), three, eps=0.1)
    assert abs(g[0] - 6.0) < 1e-9, \
        f"x^2 at 3 with eps=0.1: the central difference (3.1^2 - 2.9^2) / 0.2 gives exactly 6, got {g[0]} " \
        f"(6.1 or 5.9 come from a one-sided difference such as (f(x + eps) - f(x)) / eps)"
    mt = np.array([[1.0, 2.0], [3.0, 4.0]]).T  # a transposed view: not contiguous
    g = numerical_gradient(lambda: float((mt ** 2).sum()), mt)
    assert np.allclose(g, 2 * mt, atol=1e-6), f"d/dx sum(x^2) on a transposed array is 2x = {(2 * mt).tolist()}, " \
        f"got {g.tolist()}: perturb array[index] itself (array.reshape(-1) of a transposed array is a copy)"
    g = numerical_gradient(lambda: 0.0, np.float32([3.0]))
    assert g.dtype == np.float64, f"estimates are float64 even for a float32 array, got {g.dtype} (zeros_like keeps float32)"
    ### BEGIN HIDDEN TESTS
    assert np.allclose(numerical_gradient(lambda: float(np.sin(values).sum()), values), np.cos(values), atol=1e-6)
    ### END HIDDEN TESTS


test_numerical_gradient()
print("numerical_gradient: ok")

# %% [markdown]
# ## 6. `gradcheck`
#
# For a function with many outputs, comparing the whole Jacobian would cost one backward
# pass per output. Instead, contract the output with a fixed random vector v
# (`_projection`, provided) and check the gradient of the scalar Σ v·f(x): a wrong Jacobian
# entry changes that gradient for almost every v. That is one backward pass, plus 2
# forward passes per input element.
#
# *The comparison.* Entry by entry, analytic and numeric agree when
# |analytic - numeric| <= atol + rtol · |numeric|: an absolute floor for entries near
# zero, a relative tolerance for large ones. On failure, name the input and its worst
# element (largest excess over the tolerance), with both values, so the bug can be found.
#
# ### Exercise 5: `gradcheck`
# The inputs are given as float64 copies, with `checked`, the positions of those that
# require grad. Write the rest: one backward pass of Σ v·f (v from `_projection(out)`;
# skip the pass when the output has no graph), a function `projected()` that recomputes
# Σ v·f(x) as a Python float under `no_grad`, and the comparison, input by input.
#
# - Hint 1: for each checked input, compare its `.grad` with `numerical_gradient` of
#   `projected` over that input's array.
# - Hint 2: an input the output does not depend on has `.grad` None: its analytic
#   gradient is zeros. The excess is |analytic - numeric| - (atol + rtol·|numeric|); an
#   entry passes when it is <= 0, or when the two are equal (equal infinities); a NaN
#   never passes.
# - Hint 3: `np.argmax` of the failing entries' excess (-inf elsewhere), turned into an
#   index tuple by `np.unravel_index`, is the worst element; the message starts
#   "gradcheck failed for input <i>", and goes into a `GradcheckError` or, when
#   `raise_exception` is False, becomes `return False`; after the loop, return True.

# %% nbgrader={"grade": false, "grade_id": "gradcheck", "locked": false, "schema_version": 3, "solution": true}
#| export
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
    ### BEGIN SOLUTION
    out = fn(*inputs)
    weights = _projection(out)
    if out.requires_grad:  # an output that does not depend on the inputs has no graph
        backward(out, weights)

    def projected():
        with no_grad():
            return float((fn(*inputs).data * weights).sum())

    for i in checked:
        x = inputs[i]
        analytic = np.zeros(x.shape) if x.grad is None else np.asarray(x.grad.numpy(), dtype=np.float64)
        numeric = numerical_gradient(projected, x.data, eps)
        excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        failed = ~((excess <= 0) | (analytic == numeric))  # NaN fails; equal infinities agree
        if failed.any():
            score = np.where(failed, excess, -np.inf)  # np.argmax picks a NaN first, then the largest excess
            worst = tuple(int(i) for i in np.unravel_index(np.argmax(score), excess.shape))
            message = (f"gradcheck failed for input {i} (shape {tuple(x.shape)}) at element {worst}: "
                       f"analytic {analytic[worst]:.6g} vs numeric {numeric[worst]:.6g} "
                       f"(|difference| {abs(analytic[worst] - numeric[worst]):.3g} > "
                       f"tolerance {atol + rtol * abs(numeric[worst]):.3g})")
            if raise_exception:
                raise GradcheckError(message)
            return False
    return True
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-gradcheck", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_gradcheck():
    x = Tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    w = Tensor(np.random.default_rng(2).standard_normal((4, 2)), requires_grad=True)
    assert gradcheck(lambda a, b: (a @ b).tanh(), (x, w)) is True, "tanh(x @ w) has correct gradients"
    assert gradcheck(lambda a: a.log_softmax(dim=1), (x,)) is True, "log_softmax has correct gradients"

    def wrong(a):  # the detached factor hides half of d(a*a)/da
        return a * a.detach()
    try:
        gradcheck(wrong, (x,))
    except GradcheckError as err:
        assert "input 0" in str(err), f"the error should name the input: {err}"
    else:
        raise AssertionError("gradcheck must catch a wrong gradient")
    assert gradcheck(wrong, (x,), raise_exception=False) is False, "raise_exception=False returns False"
    assert x.grad is None, "gradcheck works on float64 copies and leaves the inputs' .grad alone"

    def ignores_g(a):  # forward 2a, but the backward returns 2 instead of 2 * g
        return from_op(a.data * 2.0, a._device, (a,), lambda g: (np.full(g.shape, 2.0),))
    assert gradcheck(ignores_g, (x,), raise_exception=False) is False, \
        "gradcheck passed a backward that ignores its incoming gradient g: weight the output with the " \
        "random vector _projection(out), since with all-ones weights g is 1 everywhere and 2 looks like 2 * g"

    def half(a):  # the scalar loss Σ a², with a backward claiming g·a (the true one is 2·g·a)
        return from_op((a.data ** 2).sum(), a._device, (a,), lambda g: (g * a.data,))
    assert gradcheck(half, (Tensor([1.0, 2.0, 3.0], requires_grad=True),), raise_exception=False) is False, \
        "gradcheck passed a gradient half the true one (analytic below numeric): a difference fails " \
        "in either direction, so compare |analytic - numeric| with the tolerance"

    def wrong_b(a, b):  # d(a*b)/db is a; this backward claims 2a
        return from_op(a.data * b.data, a._device, (a, b), lambda g: (g * b.data, 2 * g * a.data))
    y = Tensor([3.0, -1.0], requires_grad=True)
    assert gradcheck(wrong_b, (Tensor([1.0, 2.0], requires_grad=True), y), raise_exception=False) is False, \
        "gradcheck passed a wrong gradient for input 1: check every input, and return True only after the loop"
    lost_b = gradcheck(lambda a, b: from_op(a.data * b.data, a._device, (a, b), lambda g: (g * b.data, None)),
                       (Tensor([1.0, 2.0], requires_grad=True), y), raise_exception=False)
    assert lost_b is False, "gradcheck passed a backward that gives input 1 no gradient (None): its analytic " \
        "gradient is then 0, and the numeric one, a (not 0), must show the difference"
    one = Tensor([1.0], requires_grad=True)
    assert gradcheck(lambda a: a ** 3, (one,), eps=0.5, atol=0.0, rtol=0.01, raise_exception=False) is False, \
        "with eps=0.5 the central difference of a³ at 1 is 3.25, not 3: pass eps on to numerical_gradient"
    _expect(lambda: gradcheck(wrong, (x,), atol=100.0), True, "atol=100 accepts this wrong gradient (its error is < 100)")
    _expect(lambda: gradcheck(lambda a: a * 2.0, (Tensor(np.ones((0, 3)), requires_grad=True),)), True,
            "an empty (0, 3) input has no element that could fail")
    ### BEGIN HIDDEN TESTS
    assert gradcheck(lambda a: a.sum(dim=0), (x,)), "sum over a dim"
    ### END HIDDEN TESTS


test_gradcheck()
print("gradcheck: ok")

# %% [markdown]
# ## 7. What it costs
#
# *Time.* One backward pass visits each node once and does roughly the work of its
# forward (a matmul: twice), plus a little Python per node: a dict lookup, a call, an
# addition. For tiny tensors that Python work dominates. *Memory.* Every recorded node
# keeps what its backward needs (inputs, outputs) until the backward pass frees it: that
# is why training needs far more memory than inference, and why the engine frees the graph
# as it goes. The cell measures a small step, and shows an intermediate released by the pass.

# %%
import time
import weakref

a = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
start = time.perf_counter()
for _ in range(2000):
    backward((a + a).sum())
print(f"2x2 add + sum + backward: {(time.perf_counter() - start) / 2000 * 1e6:.1f} µs per step")

big = Tensor(np.ones((1000, 1000), dtype=np.float32), requires_grad=True)
hidden = big * 2.0
probe = weakref.ref(hidden)
loss = hidden.sum()
del hidden
print("intermediate alive before backward:", probe() is not None)
backward(loss)
print("intermediate alive after backward: ", probe() is not None, "(its 4 MB were released)")

# %% [markdown]
# A chain of 100,000 ops also works (the order is built without recursion), in about a
# second: the per-node Python cost, times 100,000.
#
# **Next:** module 03 builds layers (`Linear`, `LayerNorm`, ...) from these tensors, and
# trusts this engine to train them.
