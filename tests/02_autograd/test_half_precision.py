"""16-bit floats: two bfloat16 tensors multiply into bfloat16, gradients included (ml_dtypes' `@` alone gives
float32; PyTorch keeps bfloat16), and `_is_half`, the one test for float16/bfloat16 that mean uses.
bfloat16 is an ml_dtypes (CPU) dtype: CuPy has none, so its tests run on the CPU."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import backend
from tinytorch.core.tensor import _bfloat16_in_float32, _cast, from_op

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

SHAPES = [((2, 3), (3, 4)), ((5, 2, 3), (3, 4)), ((3,), (3, 4)), ((2, 3), (3,)), ((3,), (3,)),
          ((2, 1, 2, 3), (4, 3, 5)), ((5, 2, 3), (3,))]


def bf16(array, requires_grad=False):
    """A bfloat16 leaf (tt.tensor takes no bfloat16 array: the dtype comes by a cast, as autocast makes it)."""
    return _cast(tt.tensor(np.asarray(array, dtype=np.float32)), BF16).detach().requires_grad_(requires_grad)


def test_is_half():
    is_half, is_bfloat16 = backend._is_half, backend._is_bfloat16
    assert is_half(np.dtype("float16")) and is_half(BF16)
    assert not any(is_half(np.dtype(d)) for d in ("float32", "float64", "int8", "int16", "uint8", "bool"))
    assert is_bfloat16(BF16) and not is_bfloat16(np.dtype("float16")) and not is_bfloat16(np.dtype("float32"))


@pytest.mark.parametrize("sa, sb", SHAPES)
@pytest.mark.parametrize("how", ["@", "matmul", "method"])
def test_bfloat16_matmul_stays_bfloat16(sa, sb, how, rng):
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    a, b = bf16(A, requires_grad=True), bf16(B, requires_grad=True)
    out = {"@": lambda: a @ b, "matmul": lambda: tt.matmul(a, b), "method": lambda: a.matmul(b)}[how]()
    assert out.dtype == BF16
    a32, b32 = (t.numpy().astype(np.float32) for t in (a, b))
    want = a32 @ b32  # the product of the bfloat16 numbers, rounded once
    np.testing.assert_array_equal(out.numpy(), want.astype(BF16))
    G = rng.standard_normal(out.shape)
    out.backward(bf16(G))
    assert a.grad.dtype == BF16 and b.grad.dtype == BF16
    g32 = bf16(G).numpy().astype(np.float32)
    ref_a, ref_b = tt.tensor(a32, requires_grad=True), tt.tensor(b32, requires_grad=True)
    (ref_a @ ref_b).backward(tt.tensor(g32))
    np.testing.assert_array_equal(a.grad.numpy(), ref_a.grad.numpy().astype(BF16))
    np.testing.assert_array_equal(b.grad.numpy(), ref_b.grad.numpy().astype(BF16))


def test_gradients_reaching_an_inner_bfloat16_node_are_bfloat16(rng):
    """Not only the leaves (whose .grad takes their dtype anyway): the gradient matmul hands back is bfloat16."""
    a, b = bf16(rng.standard_normal((2, 3)), requires_grad=True), bf16(rng.standard_normal((3, 4)))
    seen = []
    h = a + a  # an inner bfloat16 node (a * 1.0 would be float32: ml_dtypes promotes with Python floats)
    inner = h._backward_fn

    def spy(g):
        seen.append(g.dtype)
        return inner(g)
    h._backward = spy
    (h @ b).backward(bf16(np.ones((2, 4))))
    assert seen == [BF16]


def test_float32_matmul_takes_no_detour(rng):
    """No casts on the float32 path: the output is matmul's own node, in float32."""
    a = tt.tensor(rng.standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    b = tt.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    out = a @ b
    assert out.dtype == tt.float32
    assert out._parents[0] is a and out._parents[1] is b


def test_bfloat16_with_float32_promotes_as_before(rng):
    """Only two bfloat16 operands take the float32 detour; a mixed pair keeps NumPy's float32 (PyTorch refuses it)."""
    out = bf16(rng.standard_normal((2, 3))) @ tt.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    assert out.dtype == tt.float32


def test_bfloat16_mean_stays_bfloat16():
    x = bf16([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    out = x.mean(dim=1)
    assert out.dtype == BF16 and out.numpy().astype(np.float32).tolist() == [1.5, 3.5]
    out.sum().backward()
    assert x.grad.dtype == BF16


@pytest.mark.parity
@pytest.mark.parametrize("sa, sb", SHAPES)
def test_bfloat16_matmul_matches_torch(sa, sb, rng):
    torch = pytest.importorskip("torch")
    A, B = rng.standard_normal(sa), rng.standard_normal(sb)
    a, b = bf16(A, requires_grad=True), bf16(B, requires_grad=True)
    ta, tb = (torch.tensor(t.numpy().astype(np.float32)).bfloat16().requires_grad_() for t in (a, b))
    out, tout = a @ b, ta @ tb
    assert out.dtype == BF16 and tout.dtype == torch.bfloat16 and out.shape == tuple(tout.shape)
    close = dict(rtol=2 ** -7, atol=1e-2)  # one bfloat16 rounding apart at most (summation order differs)
    np.testing.assert_allclose(out.numpy().astype(np.float32), tout.detach().float().numpy(), **close)
    G = bf16(rng.standard_normal(out.shape))
    out.backward(G)
    tout.backward(torch.tensor(G.numpy().astype(np.float32)).bfloat16())
    for mine, theirs in ((a.grad, ta.grad), (b.grad, tb.grad)):
        assert mine.dtype == BF16 and theirs.dtype == torch.bfloat16
        np.testing.assert_allclose(mine.numpy().astype(np.float32), theirs.float().numpy(), **close)


def test_bfloat16_detour_finds_a_weight_named_after_a_none(rng):
    """linear(x, bias=None, weight=w): the two bfloat16 operands are the first two tensors, not the first two
    arguments, so the product stays bfloat16 (it gave float32 while a None bias stood second)."""
    @_bfloat16_in_float32
    def f(a, bias=None, weight=None):  # ml_dtypes' own `@` (Tensor's `@` would take matmul's detour)
        return from_op(a.data @ weight.data.T, a._device)
    x, w = bf16(rng.standard_normal((2, 3))), bf16(rng.standard_normal((4, 3)))
    assert f(x, bias=None, weight=w).dtype == BF16
