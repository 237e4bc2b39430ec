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
# # Module 01 — Tensor
#
# Every number a neural network touches lives in a **tensor**: an n-dimensional
# array of one dtype, on one device. A framework is, first of all, a set of
# operations on tensors: arithmetic that broadcasts, reductions, reshapes and
# indexing. Training adds one demand: each operation must also say how to send a
# gradient back to its inputs. In this module you write those operations, forward
# and backward, side by side, the way PyTorch and micrograd do.
#
# **You will write:** `unbroadcast`; `add`, `sub`, `mul`, `div`, `pow`; `matmul` with its
# batched and 1-D backward; `sum`, `mean` and `max`/`min` with `dim` and `keepdim`;
# `reshape`, `transpose`, `permute`; the backward of indexing; `softmax` and
# `log_softmax`. Module 02 then builds the engine that calls your backward rules in
# the right order. Here you test each rule by calling it directly.
#
# **Cost to keep in mind:** a tensor op in Python pays a fixed overhead (a few
# microseconds of interpreter work) plus the array work. For tiny tensors the
# overhead dominates; for large ones the array library (NumPy, or CuPy on a GPU)
# does. We measure both at the end.

# %%
#| default_exp core.tensor

# %% [markdown]
# ## 0. What is provided
#
# The plumbing lives in `provided.py`, which exports into the same package file
# before this lesson: the `Tensor` class (attributes, conversions, printing), the
# creation functions (`tensor`, `zeros`, `randn`, ...), devices and dtypes, and
# small helpers that check operands. The next cell imports the ones your code
# uses: `from_op` to build an op's output, `_operands`/`_binary`/`_keep_float32`
# for binary ops, `_dims` to normalise a `dim` argument, and `get_xp` for the
# array namespace (`numpy` on cpu, `cupy` on cuda). The graded cells use two more:
# `_backward_of` (an op's gradients on fresh tensors) and `_expect` (a result
# compared with the expected one, both shown when they differ).

# %%
import builtins

import numpy as np

from tinytorch.core.backend import _is_half, get_xp, scatter_add
from tinytorch.core.tensor import (
    MinMax, _F32, _autocast_op, _bfloat16_in_float32, _bfloat16_number_in_float32, _binary, _cast, _check_matmul,
    _check_permutation, _count, _dev, _dims, _float_data, _index_arrays, _keep_float32, _needs, _operands,
    _reduce_axes, _require_float, _shape_arg, _xp_add, _xp_div, _xp_mul, _xp_pow, _xp_sub, from_op, tensor,
    _backward_of, _expect,
)

# %% [markdown]
# ## 1. A tensor remembers how it was made
#
# A `Tensor` holds `data` (the raw NumPy or CuPy array), `requires_grad`, `grad`,
# and two fields that make up the **graph**: `_parents`, the tensors it was
# computed from, and `_backward`, a function that sends a gradient back to them.
#
# Every op ends the same way: `from_op(data, device, inputs, backward)` wraps the
# output array, and records `inputs` and `backward` only when some input requires
# grad and grad mode is on (module 02 adds `no_grad`). Inference pays nothing.
#
# The contract of `backward` is the chain rule, one op at a time: given
# `g` = dL/d(out), an array of the output's shape, return a tuple with one entry per
# input: dL/d(input), an array of that input's shape, or `None` for an input that
# needs no gradient. Worked example, an op that doubles its input:

# %%
def double(x):
    def double_backward(g):
        return (2 * g,)  # d(2x)/dx = 2, times the incoming gradient
    return from_op(x.data * 2, x.device, (x,), double_backward)


a = tensor([1.0, 2.0], requires_grad=True)
y = double(a)
print(y, "| parent is a:", y._parents[0] is a, "| backward of ones:", y._backward(np.ones(2)))

# %% [markdown]
# ## 2. Broadcasting, and its mirror image: `unbroadcast`
#
# *Why.* Adding a bias of shape `(4,)` to a batch of shape `(32, 4)` should not
# need a copy of the bias per row. **Broadcasting** lines shapes up from the
# right; a dimension of size 1, or a missing one, is stretched to match:
#
# ```
# (32, 4) + (4,)   -> (32, 4)      (3, 1, 5) + (4, 1) -> (3, 4, 5)
# ```
#
# *The math of the backward pass.* The bias `b` was used in all 32 rows, and each
# use contributes to the loss, so dL/db is the **sum** over the rows of dL/dout.
# In general the gradient arriving at an input has the broadcast shape, and must
# be summed over (1) the leading dimensions that broadcasting added and (2) every
# dimension where the input had size 1 but the output did not (keeping it as 1).
#
# Worked example: out = a + b with a (2, 3), b (1, 3), dL/dout all ones (2, 3).
# Dimension 0 of b was stretched from 1 to 2, so grad_b = [[2, 2, 2]], shape (1, 3).
# For b of shape (3,) instead, dimension 0 of the output was added, and
# grad_b = [2, 2, 2], shape (3,).
#
# ### Exercise 1: `unbroadcast(grad, shape)`
# Reduce `grad` (an array of the broadcast shape) to `shape` by summing. Return
# `grad` itself, not a copy, when the shapes already agree: that is the common case
# and it should cost nothing.
#
# - Hint 1: two kinds of axes to sum: the extra leading ones, and the stretched ones.
# - Hint 2: with `extra = grad.ndim - len(shape)`, input axis `i` sits at grad axis
#   `i + extra`; it was stretched when `shape[i] == 1` and grad's size there is not 1.
# - Hint 3: collect a tuple of axes, sum over it with `keepdims=True` (so the
#   stretched axes stay as size 1), then reshape to `shape` (which drops the extra ones).

# %% nbgrader={"grade": false, "grade_id": "unbroadcast", "locked": false, "schema_version": 3, "solution": true}
#| export
def unbroadcast(grad, shape):
    """Sum `grad` over the dimensions that broadcasting stretched, so it has `shape`."""
    ### BEGIN SOLUTION
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)  # leading dims that broadcasting added
    stretched = tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    axes = tuple(range(extra)) + stretched
    return grad.sum(axis=axes, keepdims=True).reshape(shape)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-unbroadcast", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_unbroadcast():
    g = np.ones((2, 3), dtype=np.float32)
    got = unbroadcast(g, (1, 3))
    assert got.shape == (1, 3), f"unbroadcast to (1, 3) should keep the size-1 dim, got shape {got.shape}"
    assert np.allclose(got, 2), f"each bias entry was used twice, so its gradient is 2, got {got}"
    got = unbroadcast(g, (3,))
    assert got.shape == (3,), f"unbroadcast to (3,) should drop the added leading dim, got {got.shape}"
    got = unbroadcast(np.ones((3, 4, 5), dtype=np.float32), (4, 1))
    assert got.shape == (4, 1), f"expected shape (4, 1), got {got.shape}"
    assert np.allclose(got, 15), f"(3,4,5) -> (4,1) sums 3*5 = 15 values per entry, got {got.ravel()}"
    assert unbroadcast(g, (2, 3)) is g, "when shapes already match, return grad itself (no copy)"
    assert unbroadcast(np.ones((2, 3)), ()).shape == (), "unbroadcast to a scalar shape () sums everything"
    _expect(lambda: unbroadcast(np.ones((1, 3, 5)), (1, 5)), [[3.0] * 5], "(1, 3, 5) -> (1, 5): grad's axis 1 "
            "(size 3) is shape's axis 0 (size 1), stretched; look up grad's size at i + extra")
    _expect(lambda: unbroadcast(np.ones((0, 2)), (1, 2)), [[0.0, 0.0]], "(1, 2) stretched over 0 rows: an empty sum")
    ### BEGIN HIDDEN TESTS
    got = unbroadcast(np.arange(6.0).reshape(2, 3), (2, 1))
    assert np.allclose(got, [[3], [12]]), f"row sums expected, got {got.ravel()}"
    ### END HIDDEN TESTS


test_unbroadcast()
print("unbroadcast: ok")

# %% [markdown]
# ## 3. Elementwise arithmetic
#
# *Why.* Almost every line of a model is arithmetic on tensors: `x * w + b`,
# `(x - mean) / std`. Each operand is a `Tensor` or a plain number.
#
# *The provided pieces.* `_operands(a, b, name)` returns `(ta, x, tb, y)`: each
# operand as a tensor (or `None` for a plain number) and its raw array (or the
# number); it refuses two devices. `_binary(name, fn, x, y)` applies one of
# `_xp_add`, `_xp_sub`, `_xp_mul`, `_xp_div` and turns a broadcasting failure into an
# error that shows both shapes. `_keep_float32(out, ta, tb)` undoes NumPy's habit of
# promoting `int / int` or `int * 0.5` to float64: only a float64 input may give a
# float64 output. `_dev(ta, tb)` is the device of whichever operand is a tensor,
# and `_needs(t)` says whether gradient must flow into `t`. The decorator
# `_bfloat16_number_in_float32` runs a bfloat16 tensor with a plain number in float32
# and rounds the result back to bfloat16, as PyTorch keeps it (NumPy's bfloat16 would
# turn into float32); every other call reaches your function unchanged.
#
# *The math.* With g = dL/dout:
#
# | out | dL/da | dL/db |
# | --- | --- | --- |
# | a + b | g | g |
# | a - b | g | -g |
# | a · b | g · b | g · a |
# | a / b | g / b | -g · a / b² = -g · out / b |
# | aᵇ | g · b · aᵇ⁻¹ | g · aᵇ · ln a = g · out · ln a |
#
# Where the formulas meet 0 · ∞ or ln 0, PyTorch's convention: dL/da = 0 wherever b = 0
# (a⁰ is flat, even at a = 0), and dL/db = 0 wherever a = 0 and b ≥ 0. Elsewhere inf and
# nan are results (0⁻¹ = inf, ln(-2) = nan), so `np.errstate(all="ignore")` silences NumPy.
#
# Then each gradient is unbroadcast to its operand's shape. Worked example:
# a = 3, b = 4, out = a · b = 12; with g = 1, dL/da = 4 and dL/db = 3.
# For division, a = 3, b = 4: out = 0.75, dL/da = 0.25, dL/db = -0.75 / 4 = -0.1875.
#
# ### Exercise 2: `add`, `sub`, `mul`, `div`, `pow`
# Each function receives its operands already split. Write the forward value, the
# backward closure, and return the op's output.
#
# - Hint 1: the forward is the array operation; the backward multiplies `g` by the
#   local derivative from the table, once per operand.
# - Hint 2: an operand that is a plain number, or a tensor without `requires_grad`,
#   gets `None`; every other gradient goes through `unbroadcast` to that operand's shape
#   (`x.shape` works for arrays; for a plain number `np.shape(x)` is `()`, but such an
#   operand never needs a gradient). In `pow`, either operand may be a plain number: turn
#   one into an array with `xp.asarray` (in `out`'s dtype for the base's logarithm).
# - Hint 3: three steps: `out` from `_binary` with the matching `_xp_` function,
#   passed through `_keep_float32`; a closure named `<op>_backward(g)` returning a
#   pair; `from_op` with `out`, the device `_dev` finds, both operands, and the closure.

# %% nbgrader={"grade": false, "grade_id": "arithmetic", "locked": false, "schema_version": 3, "solution": true}
#| export
@_bfloat16_number_in_float32  # (provided) a bfloat16 tensor with a number stays bfloat16
def add(a, b):
    """a + b, broadcasting."""
    ta, x, tb, y = _operands(a, b, "add")
    ### BEGIN SOLUTION
    out = _keep_float32(_binary("add", _xp_add, x, y), ta, tb)

    def add_backward(g):
        return (unbroadcast(g, x.shape) if _needs(ta) else None,
                unbroadcast(g, y.shape) if _needs(tb) else None)
    return from_op(out, _dev(ta, tb), (ta, tb), add_backward)
    ### END SOLUTION


@_bfloat16_number_in_float32
def sub(a, b):
    """a - b, broadcasting."""
    ta, x, tb, y = _operands(a, b, "sub")
    ### BEGIN SOLUTION
    out = _keep_float32(_binary("sub", _xp_sub, x, y), ta, tb)

    def sub_backward(g):
        return (unbroadcast(g, x.shape) if _needs(ta) else None,
                unbroadcast(-g, y.shape) if _needs(tb) else None)
    return from_op(out, _dev(ta, tb), (ta, tb), sub_backward)
    ### END SOLUTION


@_bfloat16_number_in_float32
def mul(a, b):
    """a * b, broadcasting."""
    ta, x, tb, y = _operands(a, b, "mul")
    ### BEGIN SOLUTION
    out = _keep_float32(_binary("mul", _xp_mul, x, y), ta, tb)

    def mul_backward(g):
        return (unbroadcast(g * y, x.shape) if _needs(ta) else None,
                unbroadcast(g * x, y.shape) if _needs(tb) else None)
    return from_op(out, _dev(ta, tb), (ta, tb), mul_backward)
    ### END SOLUTION


@_bfloat16_number_in_float32
def div(a, b):
    """a / b (true division: int / int gives float32)."""
    ta, x, tb, y = _operands(a, b, "div")
    ### BEGIN SOLUTION
    out = _keep_float32(_binary("div", _xp_div, x, y), ta, tb)

    def div_backward(g):
        return (unbroadcast(g / y, x.shape) if _needs(ta) else None,
                unbroadcast(-g * out / y, y.shape) if _needs(tb) else None)
    return from_op(out, _dev(ta, tb), (ta, tb), div_backward)
    ### END SOLUTION


@_bfloat16_number_in_float32
def pow(a, b):
    """a ** b, broadcasting."""
    ta, x, tb, y = _operands(a, b, "pow")
    ### BEGIN SOLUTION
    out = _keep_float32(_binary("pow", _xp_pow, x, y), ta, tb)

    def pow_backward(g):
        xp = get_xp(_dev(ta, tb))
        da = db = None
        with np.errstate(all="ignore"):  # 0 ** -1 = inf, log(-2) = nan: results, as in PyTorch
            if _needs(ta):
                da = g * y * x ** (y - 1)
                if not np.isscalar(y) or y == 0:  # a ** 0 is flat in a, even at a = 0 (0 · inf above)
                    da = xp.where(xp.asarray(y) == 0, 0, da)
                da = unbroadcast(da, x.shape)
            if _needs(tb):  # 0 ** b is flat in b for b >= 0 (x may be a number: log it in out's dtype)
                ln_x = xp.log(xp.asarray(x, dtype=out.dtype))
                db = unbroadcast(g * xp.where((x == 0) & (y >= 0), 0, out * ln_x), y.shape)
        return da, db
    return from_op(out, _dev(ta, tb), (ta, tb), pow_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-arithmetic", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_arithmetic():
    a = tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    b = tensor([10.0, 20.0, 30.0], requires_grad=True)
    ones = np.ones((2, 3), dtype=np.float32)
    s = add(a, b)
    assert s.shape == (2, 3), f"(2, 3) + (3,) broadcasts to (2, 3), got {s.shape}"
    assert s.tolist() == [[11, 22, 33], [14, 25, 36]], f"a + b with broadcasting gave {s.tolist()}"
    assert s.dtype == np.float32, f"float32 + float32 must stay float32, got {s.dtype}"
    ga, gb = s._backward(ones)
    assert ga.shape == (2, 3) and np.allclose(ga, 1), f"d(a+b)/da should be ones (2,3), got {ga}"
    assert gb.shape == (3,) and np.allclose(gb, 2), f"b was broadcast over 2 rows: grad 2s of shape (3,), got {gb}"
    d = sub(a, b)
    assert d.shape == (2, 3) and np.allclose(d.data[0], [-9, -18, -27]), f"a - b gave {d.tolist()}"
    ga, gb = d._backward(ones)
    assert np.allclose(ga, 1) and np.allclose(gb, -2), f"d(a-b)/db = -1 per use, summed: -2; got {gb}"
    p = mul(a, b)
    assert p.shape == (2, 3) and np.allclose(p.data, [[10, 40, 90], [40, 100, 180]]), f"a * b gave {p.tolist()}"
    ga, gb = p._backward(ones)
    assert np.allclose(ga, [[10, 20, 30]] * 2), f"d(a*b)/da = b (broadcast), got {ga}"
    assert np.allclose(gb, [5, 7, 9]), f"d(a*b)/db = a summed over rows = [5, 7, 9], got {gb}"
    ga, _ = mul(tensor([0.0, 2.0], requires_grad=True), tensor([3.0, 4.0]))._backward(ones[0, :2])
    assert np.allclose(ga, [3, 4]), f"d(a*b)/da = b = [3, 4], at a = 0 too; got {ga} (out / a there is 0 / 0)"
    q = div(tensor([3.0], requires_grad=True), tensor([4.0], requires_grad=True))
    assert q.shape == (1,) and np.allclose(q.data, 0.75), f"3 / 4 = 0.75, got {q.tolist()}"
    ga, gb = q._backward(np.ones(1, dtype=np.float32))
    assert np.allclose(ga, 0.25) and np.allclose(gb, -0.1875), f"d/da = 1/b = 0.25, d/db = -a/b² = -0.1875; got {ga}, {gb}"
    ga, _ = div(tensor([1.0, 2.0, 4.0], requires_grad=True), tensor([[1.0, 2.0, 4.0], [2.0, 4.0, 8.0]]))._backward(ones)
    assert np.shape(ga) == (3,) and np.allclose(ga, [1.5, 0.75, 0.375]), f"a (3,) / b (2, 3): d/da = g / b, " \
        f"then summed over b's 2 rows = [1.5, 0.75, 0.375]; got {ga.tolist()}: divide by b before unbroadcast"
    w = pow(tensor([2.0, 3.0], requires_grad=True), 2)
    assert w.shape == (2,) and np.allclose(w.data, [4, 9]), f"[2, 3] ** 2 = [4, 9], got {w.tolist()}"
    ga, gb = w._backward(np.ones(2, dtype=np.float32))
    assert np.allclose(ga, [4, 6]) and gb is None, f"d(a²)/da = 2a = [4, 6], exponent 2 gets None; got {ga}, {gb}"
    e = pow(2, tensor([3.0], requires_grad=True))
    _, gb = e._backward(np.ones(1, dtype=np.float32))
    assert np.allclose(e.data, 8) and np.allclose(gb, 8 * np.log(2)), f"d(2^b)/db = 2^b ln 2, got {gb}"
    ga, _ = pow(tensor([0.0, 2.0], requires_grad=True), 0)._backward(np.ones(2, dtype=np.float32))
    assert np.array_equal(ga, [0, 0]), \
        f"a ** 0 is flat in a, even at a = 0: d/da = [0, 0], got {ga} (0 · 0⁻¹ = 0 · inf = nan)"
    _, gb = pow(tensor([0.0, 0.0, 2.0]), tensor([0.0, 2.0, 3.0], requires_grad=True))._backward(ones[0])
    assert np.allclose(gb, [0, 0, 8 * np.log(2)]), f"0 ** b is flat in b for b >= 0, b = 0 included: " \
        f"d/db of [0, 0, 2] ** [0, 2, 3] is [0, 0, 8 ln 2], got {gb} (0 ** 0 · ln 0 = -inf, 0 · ln 0 = nan)"
    _, gb = pow(tensor([0.0]), tensor([-1.0], requires_grad=True))._backward(ones[0, :1])
    assert np.isneginf(gb).all(), f"0 ** -1 = inf; d/db = inf · ln 0 = -inf (as in PyTorch), got {gb}: only b >= 0 is flat"
    assert mul(a, 2).dtype == np.float32 and add(2, a).tolist()[0] == [3, 4, 5], "numbers work on either side"
    b, b0 = [[1.0, 2.0, 4.0], [2.0, 4.0, 1.0]], [[0.0, 2.0, 3.0], [2.0, 1.0, 1.0]]
    for op, rhs, want in ((add, b, ([2.0] * 3, [[1.0] * 3] * 2)), (sub, b, ([2.0] * 3, [[-1.0] * 3] * 2)),
                          (mul, b, ([3.0, 6.0, 5.0], [[0.0, 1.0, 2.0]] * 2)),
                          (div, b, ([1.5, 0.75, 1.25], [[0.0, -0.25, -0.125], [0.0, -0.0625, -2.0]])),
                          (pow, b0, ([0.0, 3.0, 13.0], [[0.0, 0.0, 8 * np.log(2)], [0.0, 0.0, 2 * np.log(2)]]))):
        _expect(lambda op=op, rhs=rhs: _backward_of(op, [0.0, 1.0, 2.0], rhs), want, f"{op.__name__}(a, b) with a = [0, 1, 2] "
                f"broadcast against b = {rhs} and g = ones: a's gradient summed to (3,), b's of shape (2, 3), no nan")
    _expect(lambda: div(tensor([5.0, 7.0]), 3), np.float32([5, 7]) / np.float32(3), "[5, 7] / 3 in float32, "
            "rounded once as NumPy's a / b (a * (1 / b) rounds twice)", exact=True)
    for op in (add, sub, mul, div, pow):
        dtype = op(a, np.float64(2)).dtype
        assert dtype == np.float32, f"{op.__name__}: float32 with a NumPy float64 number stays float32, got {dtype}"
    assert div(tensor([1, 2]), tensor([2, 4])).dtype == np.float32, "int / int gives float32, not float64"
    _, gc = mul(a, tensor([1.0, 2.0, 3.0]))._backward(ones)
    assert gc is None, "an operand that does not require grad gets None from the backward"
    ### BEGIN HIDDEN TESTS
    try:
        add(tensor([1.0, 2.0, 3.0]), tensor([1.0, 2.0]))
    except ValueError as err:
        assert "(3,)" in str(err) and "(2,)" in str(err), f"error should show both shapes: {err}"
    else:
        raise AssertionError("adding shapes (3,) and (2,) must raise")
    ### END HIDDEN TESTS


test_arithmetic()
print("add, sub, mul, div, pow: ok")

# %% [markdown]
# *Cost.* One pass over the data and one new array per op, forward; backward, one new
# array per operand that needs a gradient, plus a sum when it was broadcast. `mul` and
# `div` keep their inputs (and `div` its output) alive until the backward pass: memory
# that inference, with no graph, does not pay.
#
# ## 4. Matrix multiplication
#
# *Why.* A linear layer is `x @ W`; attention is two matmuls. Matmul is where
# nearly all the arithmetic of a network happens.
#
# *Rules (NumPy's and PyTorch's).* `a @ b` contracts the last dimension of `a` with
# the second-to-last of `b`. Leading **batch** dimensions broadcast: (B, n, k) @ (k, m)
# gives (B, n, m). A 1-D operand is a row vector on the left or a column vector on
# the right, and that dimension is dropped from the result: (k,) @ (k, m) gives (m,);
# (k,) @ (k,) is a 0-d dot product. `_check_matmul` (provided) refuses shapes that do
# not fit, naming both.
#
# *The math.* For C = A B with A (n, k) and B (k, m): dL/dA = G Bᵀ and
# dL/dB = Aᵀ G, where G = dL/dC is (n, m). The shapes prove it: (n, m)(m, k) = (n, k).
# Batched inputs use the same rule per batch (transpose only the last two axes), and
# then `unbroadcast` sums the gradient of an operand that was broadcast over the batch,
# such as a weight matrix shared by every example.
#
# Worked example: A = [[1, 2]] (1, 2), B = [[3], [4]] (2, 1), C = [[11]]. With G = [[1]],
# dL/dA = G Bᵀ = [[3, 4]] and dL/dB = Aᵀ G = [[1], [2]].
#
# *1-D operands.* The clean way: put the dropped dimension back (a vector on the left
# becomes (1, k), on the right (k, 1)), give G the matching size-1 dimension, apply the
# 2-D rule, and reshape each gradient back to its operand's shape.
#
# ### Exercise 3: `matmul`
# - Hint 1: the forward is NumPy's `@`; the backward is the two formulas above.
# - Hint 2: for batches, "transpose" means swapping the last two axes
#   (`swapaxes(-1, -2)`); after the product, `unbroadcast` to the (2-D-ified)
#   operand's shape, then reshape to the original shape.
# - Hint 3: handle the dot product (both 1-D, G is 0-d) first: its gradients are
#   g·y and g·x. Otherwise: x2 = x with a new axis 0 if 1-D, y2 = y with a new last
#   axis if 1-D; g2 = g with a size-1 axis at -2 if x was 1-D and at -1 if y was 1-D;
#   then ga from g2 and y2, gb from x2 and g2.

# %% nbgrader={"grade": false, "grade_id": "matmul", "locked": false, "schema_version": 3, "solution": true}
#| export
@_autocast_op("matmul")  # mixed precision (module 10) may pick the dtype; a plain call until then
@_bfloat16_in_float32  # (provided) two bfloat16 tensors multiply in float32 and stay bfloat16, as in PyTorch
def matmul(a, b):
    """a @ b with NumPy's rules (1-D vectors, broadcast batch dimensions)."""
    ta, x, tb, y = _operands(a, b, "matmul")
    _check_matmul(ta, tb, x, y)
    ### BEGIN SOLUTION
    out = x @ y

    def matmul_backward(g):
        if x.ndim == 1 and y.ndim == 1:  # dot product: g is a scalar
            return (g * y if _needs(ta) else None, g * x if _needs(tb) else None)
        x2 = x[None, :] if x.ndim == 1 else x  # restore the dropped vector dims
        y2 = y[:, None] if y.ndim == 1 else y
        g2 = g[..., None, :] if x.ndim == 1 else g
        g2 = g2[..., None] if y.ndim == 1 else g2
        ga = unbroadcast(g2 @ y2.swapaxes(-1, -2), x2.shape).reshape(x.shape) if _needs(ta) else None
        gb = unbroadcast(x2.swapaxes(-1, -2) @ g2, y2.shape).reshape(y.shape) if _needs(tb) else None
        return ga, gb
    return from_op(out, ta._device, (ta, tb), matmul_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-matmul", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_matmul():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((2, 3)).astype(np.float32)
    B = rng.standard_normal((3, 4)).astype(np.float32)
    out = matmul(tensor(A, requires_grad=True), tensor(B, requires_grad=True))
    assert out.shape == (2, 4), f"(2, 3) @ (3, 4) is (2, 4), got {out.shape}"
    assert np.allclose(out.data, A @ B, atol=1e-5), "2-D forward differs from NumPy's A @ B"
    G = rng.standard_normal((2, 4)).astype(np.float32)
    ga, gb = out._backward(G)
    assert ga.shape == (2, 3) and gb.shape == (3, 4), f"gradient shapes must be (2, 3) and (3, 4), got {ga.shape}, {gb.shape}"
    assert np.allclose(ga, G @ B.T, atol=1e-5), "dL/dA should be G @ B.T"
    assert np.allclose(gb, A.T @ G, atol=1e-5), "dL/dB should be A.T @ G"
    X = rng.standard_normal((5, 2, 3)).astype(np.float32)  # a batch of 5, one shared W
    out = matmul(tensor(X, requires_grad=True), tensor(B, requires_grad=True))
    assert out.shape == (5, 2, 4), f"(5, 2, 3) @ (3, 4) is (5, 2, 4), got {out.shape}"
    G = rng.standard_normal((5, 2, 4)).astype(np.float32)
    gx, gw = out._backward(G)
    assert gx.shape == (5, 2, 3) and gw.shape == (3, 4), f"batched grads: (5, 2, 3) and (3, 4), got {gx.shape}, {gw.shape}"
    assert np.allclose(gw, np.einsum("bnk,bnm->km", X, G), atol=1e-4), "the shared W's gradient sums over the batch"
    v = rng.standard_normal(3).astype(np.float32)
    out = matmul(tensor(v, requires_grad=True), tensor(B, requires_grad=True))
    assert out.shape == (4,), f"(3,) @ (3, 4) is (4,), got {out.shape}"
    gv, gb = out._backward(np.ones(4, dtype=np.float32))
    assert gv.shape == (3,) and gb.shape == (3, 4), f"1-D left operand: grads (3,) and (3, 4), got {gv.shape}, {gb.shape}"
    assert np.allclose(gv, B.sum(axis=1), atol=1e-5) and np.allclose(gb, np.outer(v, np.ones(4)), atol=1e-5), \
        "1-D left operand: gradients wrong"
    out = matmul(tensor([1.0, 2.0], requires_grad=True), tensor(np.arange(24, dtype=np.float32).reshape(3, 2, 4)))
    gu, _ = out._backward(np.ones((3, 4), dtype=np.float32))
    assert np.allclose(gu, [114, 162]), \
        f"(2,) @ (3, 2, 4) is (3, 4); with g = ones, the vector's grad sums b's rows over the batch and columns: " \
        f"[114, 162], got {gu}: g (3, 4) must become (3, 1, 4), its size-1 axis at -2, not (1, 3, 4)"
    out = matmul(tensor(A, requires_grad=True), tensor(v, requires_grad=True))
    ga, gv = out._backward(np.ones(2, dtype=np.float32))
    assert out.shape == (2,) and ga.shape == (2, 3) and gv.shape == (3,), "1-D right operand: shapes wrong"
    assert np.allclose(gv, A.sum(axis=0), atol=1e-5), "1-D right operand: dL/dv = A.T @ g"
    try:  # a batch of matrices times one vector
        gx, gv = matmul(tensor(X, requires_grad=True), tensor(v, requires_grad=True))._backward(np.ones((5, 2), np.float32))
    except ValueError as err:
        raise AssertionError(f"(5, 2, 3) @ (3,): the backward raised {err}; g (5, 2) must become (5, 2, 1)") from None
    assert gx.shape == (5, 2, 3) and np.allclose(gv, X.sum(axis=(0, 1)), atol=1e-4), f"(5, 2, 3) @ (3,) with " \
        f"g = ones (5, 2): grads (5, 2, 3) and X summed over batch and rows, got {gx.shape}, {gv}"
    dot = matmul(tensor(v, requires_grad=True), tensor(v, requires_grad=True))
    assert dot.shape == (), f"(3,) @ (3,) is a 0-d dot product, got shape {dot.shape}"
    g1, g2 = dot._backward(np.array(2.0, dtype=np.float32))
    assert np.allclose(g1, 2 * v) and np.allclose(g2, 2 * v), "dot product: d(u·v)/du = g·v"
    ### BEGIN HIDDEN TESTS
    W = rng.standard_normal((5, 3, 4)).astype(np.float32)
    out = matmul(tensor(A, requires_grad=True), tensor(W, requires_grad=True))
    ga, gw = out._backward(np.ones((5, 2, 4), dtype=np.float32))
    assert ga.shape == (2, 3) and gw.shape == (5, 3, 4), "left operand broadcast over the batch"
    ### END HIDDEN TESTS


test_matmul()
print("matmul: ok")

# %% [markdown]
# *Cost.* n·k·m multiply-adds forward and twice that backward (two matmuls of the same
# size): 256×256 @ 256×256 is 16.8 M multiply-adds, about a millisecond on one CPU core.
# Memory: the backward keeps `x` and `y` alive until it runs.
#
# ## 5. Reductions: `sum`, `mean`, `max`, `min`
#
# *Why.* A loss is a sum or a mean; LayerNorm takes the mean over features; softmax
# takes the max for stability; accuracy takes the argmax.
#
# *Arguments, as in PyTorch.* `dim` may be an int, a tuple, or `None` (all
# dimensions); negative dims count from the end. `_reduce_axes(dim, ndim)` (provided) turns it
# into a sorted tuple of non-negative axes, or `None` for all of them (as in PyTorch, an
# empty `dim=()` means all too, where NumPy would reduce nothing). `keepdim=True` keeps each
# reduced dimension as size 1, so the result still broadcasts against the input.
#
# *The math of `sum`.* Each input element contributes once to one output element,
# with slope 1, so the backward copies dL/dout back to every element it reduced. If
# the reduced dims were dropped, first put them back as size 1, then broadcast to the
# input's shape. Worked example: x (2, 3), out = sum(x, dim=1) of shape (2,);
# g = [1, 2] becomes (2, 1), then dL/dx = [[1, 1, 1], [2, 2, 2]].
#
# `mean` is the sum divided by the count of reduced elements, so its gradient is
# g / N: compose it from your `sum` and `div`, and the backward comes for free.
#
# ### Exercise 4: `sum` and `mean`
# - Hint 1: the forward is the array's own sum; the backward is a broadcast.
# - Hint 2: with `keepdim=False`, the gradient's shape is the input's shape without the
#   reduced axes; the shape with them back is `1 if i in axes else n` for each axis `i`
#   of size `n`.
# - Hint 3: forward: the array's `.sum` with `axis` and `keepdims`; in the closure,
#   reshape `g` when needed, make an empty array of x's shape in g's dtype, fill it by
#   assigning `g` to all of it (`[...]`; assignment broadcasts), return it in a 1-tuple. `mean`: `_require_float`, then
#   `_count(x.shape, axes)` elements, then one division. (A full reduction of NumPy
#   returns a scalar, not an array; `from_op` turns it back into a 0-d array.)

# %% nbgrader={"grade": false, "grade_id": "sum-mean", "locked": false, "schema_version": 3, "solution": true}
#| export
def sum(x, dim=None, keepdim=False):
    """Sum over `dim` (all dimensions when None)."""
    xp = get_xp(x._device)
    axes = _reduce_axes(dim, x.ndim)
    if x.dtype == np.uint8:  # PyTorch sums bytes into int64 (NumPy into uint64, where 1 - 2 wraps around)
        x = _cast(x, np.dtype("int64"))
    ### BEGIN SOLUTION
    out = x.data.sum(axis=axes, keepdims=keepdim)

    def sum_backward(g):
        if axes is not None and not keepdim:  # put the reduced dims back, as size 1
            g = g.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
        full = xp.empty(x.shape, dtype=g.dtype)
        full[...] = g  # broadcasting assignment: every element gets its slice's gradient
        return (full,)
    return from_op(out, x._device, (x,), sum_backward)
    ### END SOLUTION


def mean(x, dim=None, keepdim=False):
    """Average over `dim` (all dimensions when None)."""
    if _is_half(x.dtype):  # float16 and bfloat16 sum in float32, as in PyTorch: a float16 sum
        return _cast(mean(_cast(x, _F32), dim, keepdim), x.dtype)  # overflows past 65504
    ### BEGIN SOLUTION
    _require_float(x, "mean")
    n = _count(x.shape, _reduce_axes(dim, x.ndim))
    return div(sum(x, dim, keepdim), n)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-sum-mean", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_sum_mean():
    x = tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    total = sum(x)
    assert total.shape == (), f"a full sum is 0-dimensional, got shape {total.shape}"
    assert total.item() == 21, f"sum of all elements should be 21, got {total}"
    rows = sum(x, dim=1)
    assert rows.shape == (2,) and rows.tolist() == [6, 15], f"row sums should be [6, 15], got {rows.tolist()}"
    assert sum(x, dim=0, keepdim=True).shape == (1, 3), "keepdim=True keeps the reduced dim as size 1"
    assert sum(x, dim=-1).tolist() == [6, 15], "dim=-1 is the last dimension"
    (g,) = rows._backward(np.array([1.0, 2.0], dtype=np.float32))
    assert g.shape == (2, 3), f"sum backward returns a gradient of x's shape (2, 3), got {g.shape}"
    assert np.allclose(g, [[1, 1, 1], [2, 2, 2]]), f"sum backward copies each row's grad: got {g}"
    (g,) = total._backward(np.array(1.0, dtype=np.float32))
    assert g.shape == (2, 3) and np.allclose(g, 1), f"full-sum backward: ones of x's shape, got {g}"
    m = mean(x, dim=0)
    assert m.shape == (3,) and np.allclose(m.data, [2.5, 3.5, 4.5]), f"column means are [2.5, 3.5, 4.5], got {m.tolist()}"
    g_sum, _ = m._backward(np.ones(3, dtype=np.float32))  # mean = div(sum, n): two ops, walked by hand
    (g,) = m._parents[0]._backward(g_sum)
    assert g.shape == (2, 3) and np.allclose(g, 0.5), f"mean over 2 rows: gradient 1/2 everywhere, got {g}"
    assert mean(x).shape == () and np.isclose(mean(x).item(), 3.5), "mean of all elements is 3.5"
    kept = mean(x, dim=1, keepdim=True)
    assert kept.shape == (2, 1), f"mean(x, dim=1, keepdim=True) keeps dim 1 as size 1: (2, 1), got {kept.shape}"
    _expect(lambda: _backward_of(sum, np.zeros((2, 2, 2)), g=[1.0, 2.0], dim=(1, 2)), ([[[1.0] * 2] * 2, [[2.0] * 2] * 2],),
            "sum over dims (1, 2) of a (2, 2, 2) tensor with g = [1, 2]: each of g's entries fills its block")
    _expect(lambda: mean(tensor([1.0, 2.0, 3.0, 4.0, 11.0])), np.float32(21) / np.float32(5), "mean of "
            "[1, 2, 3, 4, 11] is the sum 21 divided by 5 in float32 (21 * (1 / 5) rounds twice)", exact=True)
    m = mean(x, dim=(0, 1)).item()
    assert np.isclose(m, 3.5), f"mean over dims (0, 1) divides the sum 21 by 2*3 = 6 elements: 3.5, got {m}"
    try:
        m = mean(tensor([1, 2]))
    except RuntimeError:
        m = None
    assert m is None, f"mean of an integer tensor must raise RuntimeError, as in PyTorch; got {m}"
    ### BEGIN HIDDEN TESTS
    (g,) = sum(x, dim=(0, 1), keepdim=True)._backward(np.ones((1, 1), dtype=np.float32))
    assert g.shape == (2, 3), "tuple dims with keepdim"
    ### END HIDDEN TESTS


test_sum_mean()
print("sum, mean: ok")

# %% [markdown]
# *`max` and `min`.* Over all elements, `max` returns one value, and its gradient goes
# to the element(s) that attained it: the others did not affect the output. Ties share
# the gradient evenly, so the total is conserved. With a `dim`, PyTorch returns a named
# tuple `(values, indices)`: the indices say which element won in each slice, and the
# backward routes each slice's gradient to that one position, zeros elsewhere.
#
# Worked example: x = [[1, 5, 2], [7, 0, 7]], max over dim 1: values [5, 7],
# indices [1, 0] (the first of equal values wins). With g = [1, 1],
# dL/dx = [[0, 1, 0], [1, 0, 0]].
#
# ### Exercise 5: `_extreme` (behind `max` and `min`)
# One function serves both: `pick` is `xp.max` or `xp.min`, `arg` is `xp.argmax` or
# `xp.argmin`.
#
# - Hint 1: full reduction: compare every element with the result (a NaN anywhere makes
#   the result NaN, and NaN != NaN, yet PyTorch counts the NaNs as winners); with a `dim`:
#   find the winning index per slice, gather the values there.
# - Hint 2: full reduction's gradient is `mask · g / (number of winners)`. With a
#   `dim`, keep the index with its axis (size 1) so it broadcasts: an element gets `g`
#   exactly where its position along the axis equals the index.
# - Hint 3: `arg` along the axis, then `xp.expand_dims` to keep that axis, gives the
#   index; `xp.take_along_axis` gathers the values. In the backward, restore the axis of
#   `g` when `keepdim` is False, lay `xp.arange` of the axis's size along that axis
#   (shape (size, 1, ..., 1)), and `xp.where` it equals the index: `g` there, 0 elsewhere,
#   in x's dtype. Return a `MinMax` of two tensors; the indices need no backward.

# %% nbgrader={"grade": false, "grade_id": "max-min", "locked": false, "schema_version": 3, "solution": true}
#| export
def _extreme(x, dim, keepdim, pick, arg):
    """The max (or min) of `x`: one value, or with `dim` the named tuple (values, indices)."""
    xp = get_xp(x._device)
    ### BEGIN SOLUTION
    if dim is None:  # a single value; ties share the gradient
        out = xp.asarray(pick(x.data))

        def extreme_backward(g):
            hit = (x.data == out) | xp.isnan(x.data)  # any NaN makes the result NaN: the NaNs won
            return (hit * (g / hit.sum(dtype=x.dtype)),)
        return from_op(out, x._device, (x,), extreme_backward)
    (axis,) = _dims(dim, x.ndim)
    idx = xp.expand_dims(arg(x.data, axis=axis), axis)
    values = xp.take_along_axis(x.data, idx, axis=axis)

    def extreme_backward(g):
        if not keepdim:
            g = xp.expand_dims(g, axis)
        positions = xp.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - axis - 1))
        return (xp.where(positions == idx, g, 0).astype(x.dtype, copy=False),)
    indices = idx if keepdim else idx.squeeze(axis)
    values = values if keepdim else values.squeeze(axis)
    return MinMax(from_op(values, x._device, (x,), extreme_backward), from_op(indices, x._device))
    ### END SOLUTION


def max(x, dim=None, keepdim=False):
    """Largest value; with `dim`, the named tuple (values, indices) along it."""
    xp = get_xp(x._device)
    if x.ndim == 0 and dim is not None:  # one slice holding one value (dim 0 or -1), as in PyTorch
        _dims(dim, 0)
        return _extreme(reshape(x, 1), 0, False, xp.max, xp.argmax)
    return _extreme(x, dim, keepdim, xp.max, xp.argmax)


def min(x, dim=None, keepdim=False):
    """Smallest value; with `dim`, the named tuple (values, indices) along it."""
    xp = get_xp(x._device)
    if x.ndim == 0 and dim is not None:  # one slice holding one value (dim 0 or -1), as in PyTorch
        _dims(dim, 0)
        return _extreme(reshape(x, 1), 0, False, xp.min, xp.argmin)
    return _extreme(x, dim, keepdim, xp.min, xp.argmin)


# %% nbgrader={"grade": true, "grade_id": "test-max-min", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_max_min():
    x = tensor([[1.0, 5.0, 2.0], [7.0, 0.0, 7.0]], requires_grad=True)
    top = max(x, dim=1)
    assert isinstance(top, tuple) and len(top) == 2, "max with a dim returns (values, indices)"
    assert top.values.shape == (2,), f"values over dim 1 have shape (2,), got {top.values.shape}"
    assert top.values.tolist() == [5, 7] and top.indices.tolist() == [1, 0], \
        f"max over dim 1: values [5, 7], indices [1, 0]; got {top.values.tolist()}, {top.indices.tolist()}"
    (g,) = top.values._backward(np.array([1.0, 1.0], dtype=np.float32))
    assert g.shape == (2, 3), f"the gradient has x's shape (2, 3), got {g.shape}"
    assert np.allclose(g, [[0, 1, 0], [1, 0, 0]]), f"the gradient goes to the winning index only, got {g}"
    kept = max(x, dim=0, keepdim=True)
    assert kept.values.shape == (1, 3) and kept.indices.shape == (1, 3), "keepdim keeps the reduced dim"
    _expect(lambda: kept.values._backward(np.ones((1, 3), dtype=np.float32)), ([[0, 1, 0], [1, 0, 1]],),
            "max over dim 0 with keepdim=True: g (1, 3) already has the reduced axis; the gradient has x's shape")
    whole = max(x)
    assert whole.shape == () and whole.item() == 7, f"max of all elements is 7, got {whole}"
    (g,) = whole._backward(np.array(1.0, dtype=np.float32))
    assert np.allclose(g, [[0, 0, 0], [0.5, 0, 0.5]]), f"two tied maxima share the gradient: got {g}"
    assert g.dtype == np.float32, f"float32 x, float32 g: the gradient stays float32, got {g.dtype} (count in x's dtype)"
    one = max(tensor([[1.0, 5.0, 2.0]]), dim=1)
    assert one.values.shape == one.indices.shape == (1,), f"max over dim 1 of a (1, 3) tensor: values and indices of " \
        f"shape (1,), got {one.values.shape}, {one.indices.shape}: remove only the reduced axis"
    _expect(lambda: _backward_of(max, [1.0, np.nan, 3.0]), ([0.0, 1.0, 0.0],), "max of [1, nan, 3] is nan; "
            "the NaN won, so it gets the gradient (as in PyTorch)")
    low = min(x, dim=1)
    assert low.values.tolist() == [1, 0] and low.indices.tolist() == [0, 1], "min over dim 1: [1, 0] at [0, 1]"
    (g,) = min(x, dim=-1).values._backward(np.ones(2, dtype=np.float32))
    assert np.array_equal(g, [[1, 0, 0], [0, 1, 0]]), f"min over dim -1 (dim 1 here) routes g to [[1, 0, 0], " \
        f"[0, 1, 0]], got {np.shape(g)} {g.tolist()}; make a negative dim non-negative first (_dims)"
    (g,) = max(tensor([[1.0, 5.0], [7.0, 0.0]], requires_grad=True), dim=0).values._backward(np.float32([1, 2]))
    assert np.array_equal(g, [[0, 2], [1, 0]]), f"max over dim 0 of [[1, 5], [7, 0]] with g = [1, 2]: each column's " \
        f"g goes to its winner, [[0, 2], [1, 0]]; got {g.tolist()}: put g's reduced axis back at `axis`, not last"
    ### BEGIN HIDDEN TESTS
    assert min(x).item() == 0, "min of all elements"
    ### END HIDDEN TESTS


test_max_min()
print("max, min: ok")

# %% [markdown]
# *Cost.* A reduction reads every element once: O(N) time, and its output is small. Its
# backward writes a full-size gradient, so it costs as much memory as the input.
#
# ## 6. Shapes: `reshape`, `transpose`, `permute`
#
# *Why.* Attention splits the feature dimension into heads, (B, T, C) -> (B, T, h, d),
# then moves the head dimension forward, (B, h, T, d). Such moves change how the numbers
# are viewed, not the numbers themselves.
#
# *The math.* A view moves each element to a new position without changing it, so the
# gradient of each element just moves back: the backward is the **inverse** view.
# Reshape back to the input's shape; transpose the same two dims again (a swap is its
# own inverse); permute by the inverse permutation. Worked example: dims = (2, 0, 1)
# puts old dim 2 first; the inverse is (1, 2, 0), which is `argsort(dims)`.
#
# *Cost.* Usually nothing: NumPy returns a *view* with new strides, sharing memory. A
# transposed array is not contiguous; a later reshape of it may have to copy.
#
# ### Exercise 6: `reshape` (backward), `transpose`, `permute`
# `reshape`'s forward is given, because it must turn NumPy's error into one naming the
# shapes; `permute` receives its dims already checked.
#
# - Hint 1: each backward applies the inverse view to `g`.
# - Hint 2: the inverse of permutation `p` is `q` with `q[p[i]] = i`.
# - Hint 3: reshape `g` to the input's shape; `swapaxes` with the same two dims in both
#   directions; `xp.transpose(array, axes)` for permute, with the inverse computed once,
#   outside the closure, by `np.argsort` (of the dims made non-negative).

# %% nbgrader={"grade": false, "grade_id": "shape-ops", "locked": false, "schema_version": 3, "solution": true}
#| export
def reshape(x, *shape):
    """The same numbers in a new shape (one entry may be -1)."""
    shape = _shape_arg(shape)
    try:
        out = x.data.reshape(shape)
    except ValueError:
        raise RuntimeError(f"shape {tuple(shape)} is invalid for a tensor of shape "
                           f"{tuple(x.shape)} ({x.data.size} elements)") from None
    ### BEGIN SOLUTION
    def reshape_backward(g):
        return (g.reshape(x.shape),)
    return from_op(out, x._device, (x,), reshape_backward)
    ### END SOLUTION


def transpose(x, dim0, dim1):
    """Swap two dimensions."""
    if x.ndim == 0:  # a 0-d tensor's dims are 0 and -1 (as in PyTorch), and it is its own transpose
        _dims((dim0, dim1), 0)
        return reshape(x, ())
    ### BEGIN SOLUTION
    def transpose_backward(g):
        return (g.swapaxes(dim0, dim1),)
    return from_op(x.data.swapaxes(dim0, dim1), x._device, (x,), transpose_backward)
    ### END SOLUTION


def permute(x, *dims):
    """Reorder dimensions: out.shape[i] = x.shape[dims[i]]."""
    dims = _check_permutation(x, _shape_arg(dims))
    xp = get_xp(x._device)
    ### BEGIN SOLUTION
    inverse = tuple(np.argsort([d % x.ndim for d in dims]))

    def permute_backward(g):
        return (xp.transpose(g, inverse),)
    return from_op(xp.transpose(x.data, dims), x._device, (x,), permute_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-shape-ops", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_shape_ops():
    x = tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 4), requires_grad=True)
    r = reshape(x, 6, 4)
    assert r.shape == (6, 4), f"reshape to (6, 4) gave {r.shape}"
    (g,) = r._backward(np.arange(24, dtype=np.float32).reshape(6, 4))
    assert g.shape == (2, 3, 4) and np.allclose(g.ravel(), np.arange(24)), "reshape's backward reshapes back"
    t = transpose(x, 0, 2)
    assert t.shape == (4, 3, 2), f"transpose(0, 2) of (2, 3, 4) is (4, 3, 2), got {t.shape}"
    assert t.data[3, 1, 0] == x.data[0, 1, 3], "transpose must swap the two indices"
    u = transpose(x, 0, 1)  # on 3 dims g.T would reverse all three
    assert u.shape == (3, 2, 4), f"transpose(x, 0, 1) of (2, 3, 4) swaps dims 0 and 1 only: (3, 2, 4), got {u.shape}"
    (g,) = u._backward(u.data)
    assert g.shape == (2, 3, 4) and np.array_equal(g, x.data), \
        f"transpose(x, 0, 1)'s backward swaps dims 0 and 1 back (only those): shape (2, 3, 4), got {g.shape}"
    p = permute(x, 2, 0, 1)
    assert p.shape == (4, 2, 3), f"permute(2, 0, 1) of (2, 3, 4) is (4, 2, 3), got {p.shape}"
    assert p.data[3, 1, 2] == x.data[1, 2, 3], "out[i, j, k] = x[j, k, i] for dims (2, 0, 1)"
    (g,) = p._backward(p.data)
    assert g.shape == (2, 3, 4) and np.allclose(g, x.data), "permute's backward applies the inverse permutation"
    assert permute(x, (1, 2, 0)).shape == (3, 4, 2), "dims may be given as one tuple"
    G = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    (g,) = permute(x, -1, 0, 1)._backward(G)  # -1 is dim 2: the same permutation as (2, 0, 1)
    assert g.shape == (2, 3, 4) and np.array_equal(g, np.moveaxis(G, 0, -1)), \
        f"permute(x, -1, 0, 1): -1 means dim 2, so the backward must undo (2, 0, 1) and x.grad[0, 0, 1] " \
        f"is G[1, 0, 0] = 6; got a grad of shape {g.shape}: make the dims non-negative before inverting them"
    ### BEGIN HIDDEN TESTS
    assert permute(x, -1, 0, 1).shape == (4, 2, 3), "negative dims"
    ### END HIDDEN TESTS


test_shape_ops()
print("reshape, transpose, permute: ok")

# %% [markdown]
# ## 7. Indexing, and the gradient of a gather
#
# *Why.* `x[1]`, `x[:, 2:5]`, `x[..., None]` are *basic* indexing: a view, each element
# picked at most once. `x[[0, 0, 2]]` or `x[mask]` are *advanced* indexing: a gather,
# which can pick the same element several times. An embedding lookup is exactly that:
# a batch with the token "the" five times reads row "the" five times.
#
# *The math.* Each pick is a use, and uses add up: dL/dx[i] is the sum of g over every
# output position that picked i; elements never picked get 0. For basic indexing,
# writing g into a zero array at the index is enough. For advanced indexing it is
# **wrong**: `full[index] += g` with a repeated index keeps only one of the repeats
# (NumPy buffers the reads). `scatter_add(full, index, g)` (provided; NumPy's
# `np.add.at`) adds them all. Worked example: x has 3 elements, out = x[[0, 0, 2]],
# g = [1, 1, 1]: dL/dx = [2, 0, 1].
#
# ### Exercise 7: the backward of `getitem`
# The forward (NumPy's own indexing) is given; `_index_arrays` has already turned
# tensors in the index into arrays and told you whether the index is basic.
#
# - Hint 1: start from zeros of x's shape, and put `g` where the index points.
# - Hint 2: basic: plain assignment; advanced: the scatter-add.
# - Hint 3: a zero array of x's shape in g's dtype; assignment at `index` when `basic`,
#   `scatter_add` otherwise; return it in a 1-tuple.

# %% nbgrader={"grade": false, "grade_id": "getitem", "locked": false, "schema_version": 3, "solution": true}
#| export
def getitem(x, index):
    """x[index] with NumPy semantics; repeated picks add up in the backward."""
    index, basic = _index_arrays(index, x._device)
    xp = get_xp(x._device)
    try:
        out = x.data[index]
    except IndexError as err:
        raise IndexError(f"index into a tensor of shape {tuple(x.shape)}: {err}") from None
    ### BEGIN SOLUTION
    def getitem_backward(g):
        full = xp.zeros(x.shape, dtype=g.dtype)
        if basic:
            full[index] = g
        else:
            scatter_add(full, index, g)
        return (full,)
    return from_op(out, x._device, (x,), getitem_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-getitem", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_getitem():
    x = tensor([10.0, 20.0, 30.0], requires_grad=True)
    picked = getitem(x, [0, 0, 2])
    assert picked.shape == (3,) and picked.tolist() == [10, 10, 30], f"x[[0, 0, 2]] gave {picked.tolist()}"
    (g,) = picked._backward(np.ones(3, dtype=np.float32))
    assert g.shape == (3,), f"the gradient has x's shape (3,), got {g.shape}"
    assert np.allclose(g, [2, 0, 1]), f"element 0 was picked twice: gradient [2, 0, 1], got {g}"
    m = tensor(np.arange(12, dtype=np.float32).reshape(3, 4), requires_grad=True)
    s = getitem(m, (slice(1, None), slice(None, None, 2)))
    assert s.shape == (2, 2), f"m[1:, ::2] has shape (2, 2), got {s.shape}"
    (g,) = s._backward(np.full((2, 2), 3.0, dtype=np.float32))
    assert g.shape == (3, 4) and g.sum() == 12 and g[1, 0] == 3 and g[0, 0] == 0, f"basic-index backward: got {g}"
    e = getitem(m, (tensor([0, 0, 2]), tensor([1, 1, 0])))
    (g,) = e._backward(np.ones(3, dtype=np.float32))
    assert g[0, 1] == 2 and g[2, 0] == 1 and g.sum() == 3, f"2-D advanced index with repeats: got {g}"
    ### BEGIN HIDDEN TESTS
    (g,) = getitem(x, x.data > 15)._backward(np.ones(2, dtype=np.float32))
    assert np.allclose(g, [0, 1, 1]), "boolean mask"
    ### END HIDDEN TESTS


test_getitem()
print("getitem: ok")

# %% [markdown]
# *Cost.* The forward of basic indexing is a view (free); a gather copies what it picks.
# The backward allocates a zero array of the input's full size, even for one picked row:
# for an embedding table that is the whole table, every step. `np.add.at` is also
# slower than plain assignment, which is why basic indices take the plain path.
#
# ## 8. Softmax and log-softmax, stably
#
# *Why.* softmax(x)ᵢ = eˣⁱ / Σⱼ eˣʲ turns a row of scores into probabilities: it is how a
# classifier or a language model says what comes next. log-softmax is its logarithm,
# the input of cross-entropy (module 04).
#
# *The numerical problem.* Computed as written, e¹⁰⁰⁰ overflows to `inf` and the result
# is `nan`. The fix is exact math: softmax is unchanged when the same constant c is
# subtracted from every xᵢ (e⁻ᶜ cancels between numerator and denominator). Take
# m = max x: the largest exponent becomes e⁰ = 1 and nothing overflows. For the log:
# log-softmax(x)ᵢ = (xᵢ - m) - log Σⱼ e^(xⱼ - m), the **log-sum-exp** trick.
#
# *Backward.* With s = softmax(x): dL/dxᵢ = sᵢ (gᵢ - Σⱼ gⱼ sⱼ). With y = log_softmax(x)
# and p = eʸ: dL/dxᵢ = gᵢ - pᵢ Σⱼ gⱼ. Worked example: x = [0, 0] gives p = [½, ½]; with
# g = [1, 0], log-softmax's gradient is [1 - ½, 0 - ½] = [½, -½]; softmax's is
# [½(1 - ½), ½(0 - ½)] = [¼, -¼].
#
# ### Exercise 8: `softmax` and `log_softmax` along `dim`
# - Hint 1: shift by the max along the axis, then exponentiate and normalise (or take
#   the log of the normaliser).
# - Hint 2: use `keepdims=True` in every reduction, so the results broadcast back over
#   the axis; keep the dtype of the input (float32 stays float32).
# - Hint 3: `data.max(axis=axis, keepdims=True)`, `xp.exp`, `.sum(axis=axis,
#   keepdims=True)`, `xp.log`; the closures follow the two formulas above, reusing the
#   forward's output (`out`) rather than recomputing it.

# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true}
#| export
def softmax(x, dim):
    """exp(x) / sum(exp(x)) along `dim`, shifted by the max for stability."""
    xp = get_xp(x._device)
    (axis,) = _dims(dim, x.ndim)
    data = _float_data(x)
    if data.size == 0:  # nothing to normalise (NumPy's max over an empty axis raises)
        return mul(x, 1.0)
    ### BEGIN SOLUTION
    e = xp.exp(data - data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)

    def softmax_backward(g):
        return (out * (g - (g * out).sum(axis=axis, keepdims=True)),)
    return from_op(out, x._device, (x,), softmax_backward)
    ### END SOLUTION


def log_softmax(x, dim):
    """log(softmax(x)) along `dim`, without overflow for large inputs."""
    xp = get_xp(x._device)
    (axis,) = _dims(dim, x.ndim)
    data = _float_data(x)
    if data.size == 0:  # nothing to normalise (NumPy's max over an empty axis raises)
        return mul(x, 1.0)
    ### BEGIN SOLUTION
    shifted = data - data.max(axis=axis, keepdims=True)
    out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))

    def log_softmax_backward(g):
        return (g - xp.exp(out) * g.sum(axis=axis, keepdims=True),)
    return from_op(out, x._device, (x,), log_softmax_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-softmax", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_softmax():
    x = tensor([[0.0, 0.0], [1000.0, 0.0]], requires_grad=True)
    y = log_softmax(x, dim=1)
    assert y.shape == (2, 2), f"log_softmax keeps the shape (2, 2), got {y.shape}"
    assert np.isfinite(y.data).all(), f"log_softmax must not overflow on 1000: got {y.tolist()}"
    assert np.allclose(y.data[0], np.log(0.5)), f"log_softmax([0, 0]) = [log ½, log ½], got {y.data[0]}"
    assert np.allclose(y.data[1], [0.0, -1000.0]), f"log_softmax([1000, 0]) = [0, -1000], got {y.data[1]}"
    assert y.dtype == np.float32, f"float32 in, float32 out; got {y.dtype}"
    (g,) = y._backward(np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32))
    assert g.shape == (2, 2) and np.allclose(g[0], [0.5, -0.5]), f"gradient at x=[0,0], g=[1,0] is [½, -½], got {g}"
    s = softmax(x, dim=-1)
    assert s.shape == (2, 2) and np.isfinite(s.data).all(), f"softmax must not overflow: got {s.tolist()}"
    assert np.allclose(s.data, [[0.5, 0.5], [1.0, 0.0]]), f"softmax rows are [½, ½] and [1, 0], got {s.tolist()}"
    (g,) = s._backward(np.array([[1.0, 0.0], [0.0, 0.0]], dtype=np.float32))
    assert np.allclose(g[0], [0.25, -0.25]), f"softmax gradient at x=[0,0], g=[1,0] is [¼, -¼], got {g[0]}"
    p = softmax(tensor([[1.0, 2.0], [3.0, 5.0]]), dim=0)
    assert np.allclose(p.data.sum(axis=0), 1), "softmax along dim 0 normalises columns"
    for f, want in ((softmax, [[0.1192, 0.0474], [0.8808, 0.9526]]), (log_softmax, [[-2.1269, -3.0486], [-0.1269, -0.0486]])):
        assert np.allclose(f(tensor([[1.0, 2.0], [3.0, 5.0]]), dim=0).data, want, atol=1e-4), f"{f.__name__} of " \
            f"[[1, 2], [3, 5]] over dim 0 is {want}: shift each column by its own max (along the softmax dim)"
    G, zeros = np.float32([[1, 0], [0, 0]]), tensor(np.zeros((2, 2), dtype=np.float32), requires_grad=True)
    for f, want in ((log_softmax, [[0.5, 0], [-0.5, 0]]), (softmax, [[0.25, 0], [-0.25, 0]])):
        (g,) = f(zeros, dim=0)._backward(G)
        assert np.allclose(g, want), f"{f.__name__} over dim 0 at x = 0 with g = [[1, 0], [0, 0]]: gradient " \
            f"{want}, got {g.tolist()}: the backward's sum runs along `axis`, the softmax dim"
        z = tensor([[1.0, 2.0, 3.0]])
        f(z, dim=1)
        assert z.tolist() == [[1, 2, 3]], f"{f.__name__} changed its input [[1, 2, 3]] to {z.tolist()}: " \
            f"shift into a new array (data - max), never the input's array in place"
    ### BEGIN HIDDEN TESTS
    z = log_softmax(tensor([[1.0, 2.0], [3.0, 5.0]]), dim=0)
    assert np.allclose(np.exp(z.data).sum(axis=0), 1), "dim=0 normalises columns"
    ### END HIDDEN TESTS


test_softmax()
print("softmax, log_softmax: ok")

# %% [markdown]
# *Cost.* Three passes over the data (max, exp-and-sum, normalise), and one array of
# the input's size kept for the backward. The stability fix costs one extra pass.
#
# ## 9. What it costs, measured
#
# A tensor op pays Python overhead (checking operands, building the output, making the
# backward closure) plus the array work. The cell below times `add` on a tiny and a
# larger tensor, against the bare NumPy addition.

# %%
import timeit

from tinytorch.core.tensor import rand

for shape in ((4, 4), (256, 256)):
    t = rand(*shape)
    raw = builtins.min(timeit.repeat(lambda: t.data + t.data, number=2000, repeat=3)) / 2000 * 1e6
    ours = builtins.min(timeit.repeat(lambda: add(t, t), number=2000, repeat=3)) / 2000 * 1e6
    print(f"add {shape}: numpy {raw:6.2f} µs, tinytorch {ours:6.2f} µs (overhead {ours - raw:5.2f} µs)")

# %% [markdown]
# For a 4×4 tensor nearly all of the time is overhead; for 256×256 the array work
# dominates. That is why frameworks fuse operations and why deep-learning code works
# on big batches. Memory follows the dtype: a 256×256 float32 tensor holds 256 KiB,
# float64 would double it. `bench/ops.py` compares these numbers with PyTorch.
#
# **Next:** module 02 builds the engine that runs the `_backward` closures you wrote
# here, in the right order, for a whole graph.
