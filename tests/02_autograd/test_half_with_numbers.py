"""A 16-bit tensor with a plain number keeps its dtype, forward and backward, as in PyTorch (a Python scalar never
promotes a tensor's float dtype). ml_dtypes computes bfloat16 with a Python float in float32 and returned float32
(float64 in where); a NumPy float64 scalar widened float16 to float32; bfloat16's var summed in bfloat16.
bfloat16 is an ml_dtypes (CPU) dtype: CuPy has none, so these tests run on the CPU."""

import builtins

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.tensor import _cast

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype("float16")

VALUES = [[1.0, 2.0, 3.0], [0.5, 0.25, 4.0]]

# op, what PyTorch computes (float32 in, one rounding to the 16-bit dtype, checked against torch below)
NUMBER_OPS = {
    "x * 1.1": lambda x: x * 1.1,
    "1.1 * x": lambda x: 1.1 * x,
    "x + 0.3": lambda x: x + 0.3,
    "x - 0.3": lambda x: x - 0.3,
    "2.0 - x": lambda x: 2.0 - x,
    "x / 3.0": lambda x: x / 3.0,
    "3.0 / x": lambda x: 3.0 / x,
    "x ** 2.0": lambda x: x ** 2.0,
    "x ** 0.5": lambda x: x ** 0.5,
    "2.0 ** x": lambda x: 2.0 ** x,
    "x * 2": lambda x: x * 2,
    "x * np.float32(1.1)": lambda x: x * np.float32(1.1),
    "x * np.float64(1.1)": lambda x: x * np.float64(1.1),
}

UNARY_OPS = {
    "sigmoid": lambda x: x.sigmoid(),
    "log": lambda x: x.log(),
    "sqrt": lambda x: x.sqrt(),
    "gelu": lambda x: x.gelu() if isinstance(x, tt.Tensor) else lib(x).nn.functional.gelu(x),
    "var": lambda x: x.var(),
    "var(dim=0)": lambda x: x.var(dim=0),
    "clamp(0.6, 2.5)": lambda x: x.clamp(0.6, 2.5),
    "where(x > 1, x, 0.5)": lambda x: lib(x).where(x > 1, x, 0.5),
    "where(x > 1, 0.5, x)": lambda x: lib(x).where(x > 1, 0.5, x),
}


def lib(x):
    """tinytorch for a tinytorch tensor, torch for a torch one."""
    return tt if isinstance(x, tt.Tensor) else __import__("torch")


def half(array, dtype, requires_grad=False):
    """A 16-bit leaf (tt.tensor takes no bfloat16 array: the dtype comes by a cast, as autocast makes it)."""
    return _cast(tt.tensor(np.asarray(array, dtype=np.float32)), dtype).detach().requires_grad_(requires_grad)


def run_with_spy(op, dtype):
    """op on an inner 16-bit node h = x + x; the dtypes of the gradients reaching h, and x.grad."""
    x = half(VALUES, dtype, requires_grad=True)
    h = x + x  # an inner node: the engine casts nothing on the way to it
    inner, seen = h._backward_fn, []

    def spy(g):
        seen.append(g.dtype)
        return inner(g)
    h._backward = spy
    out = op(h)
    out.backward(half(np.ones(out.shape), out.dtype))
    return out, seen, x


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", list(NUMBER_OPS) + list(UNARY_OPS))
def test_a_number_keeps_the_16_bit_dtype_forward_and_backward(name, dtype):
    out, seen, x = run_with_spy({**NUMBER_OPS, **UNARY_OPS}[name], dtype)
    assert out.dtype == dtype, f"{name}: {out.dtype}"
    assert seen == [dtype], f"{name}: the gradient reaching a {dtype} node is {seen}"
    assert x.grad.dtype == dtype


@pytest.mark.parametrize("name", ["x * 1.1", "3.0 / x", "x ** 0.5", "2.0 ** x"])
def test_bfloat16_with_a_number_is_computed_in_float32_and_rounded_once(name):
    op = NUMBER_OPS[name]
    x = half(VALUES, BF16, requires_grad=True)
    out = op(x)
    x32 = tt.tensor(x.numpy().astype(np.float32), requires_grad=True)
    want = op(x32)
    np.testing.assert_array_equal(out.numpy(), want.numpy().astype(BF16))
    out.backward(half(np.ones(out.shape), BF16))
    want.backward(tt.tensor(np.ones(out.shape, dtype=np.float32)))
    np.testing.assert_array_equal(x.grad.numpy(), x32.grad.numpy().astype(BF16))


def test_a_0d_float32_tensor_keeps_bfloat16():
    """A 0-d operand of the same kind (float) does not promote, as in PyTorch: bfloat16 * 0-d float32 is bfloat16."""
    x = half(VALUES, BF16)
    assert (x * tt.tensor(1.5)).dtype == BF16 and (tt.tensor(1.5) * x).dtype == BF16
    assert (half([1.5], BF16).reshape(()) * tt.tensor(VALUES)).dtype == tt.float32


def test_float32_with_a_number_takes_no_detour():
    """The float32 path: the op's own node, its own parents, no cast on the way."""
    a = tt.tensor(VALUES, requires_grad=True)
    for out, name in ((a * 1.5, "mul_backward"), (2.0 - a, "sub_backward"), (a ** 2.0, "pow_backward")):
        assert out.dtype == tt.float32 and out._backward_fn.__name__ == name
        assert builtins.any(p is a for p in out._parents)


def test_bfloat16_var_sums_in_float32():
    """bfloat16 summed in bfloat16 stalls: var of 4096 numbers near 100 (true var ~1) was 1024."""
    rng = np.random.default_rng(0)
    x = half(rng.standard_normal(4096) + 100, BF16)
    exact = x.numpy().astype(np.float64).var(ddof=1)
    assert x.var().dtype == BF16
    assert abs(float(x.var().numpy().astype(np.float32)) - exact) <= exact * 2 ** -7


@pytest.mark.parity
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("name", list(NUMBER_OPS) + list(UNARY_OPS))
def test_a_number_with_a_16_bit_tensor_matches_torch(name, dtype):
    torch = pytest.importorskip("torch")
    op = {**NUMBER_OPS, **UNARY_OPS}[name]
    tdtype = torch.bfloat16 if dtype == BF16 else torch.float16
    x = half(VALUES, dtype, requires_grad=True)
    tx = torch.tensor(x.numpy().astype(np.float32)).to(tdtype).requires_grad_()
    out = op(x)
    tout = op(tx)
    assert out.dtype == dtype and tout.dtype == tdtype
    # one rounding apart; atol: PyTorch's CPU add/sub/pow round the number to the 16-bit dtype first (0.25 - 0.3)
    close = dict(rtol=2 ** -7, atol=2 ** -8) if dtype == BF16 else dict(rtol=2 ** -10, atol=2 ** -11)
    np.testing.assert_allclose(out.numpy().astype(np.float32), tout.detach().float().numpy(), **close)
    out.backward(half(np.ones(out.shape), dtype))
    tout.backward(torch.ones(tout.shape, dtype=tdtype))
    assert x.grad.dtype == dtype and tx.grad.dtype == tdtype
    np.testing.assert_allclose(x.grad.numpy().astype(np.float32), tx.grad.float().numpy(), rtol=2 * close["rtol"],
                               atol=close["atol"])
