"""linear on bfloat16 input and weight returns bfloat16, computed in float32 and rounded once, forward and backward,
as PyTorch does (it multiplied the ml_dtypes arrays directly, and ml_dtypes' `@` returns float32).
bfloat16 is an ml_dtypes (CPU) dtype: CuPy has none, so these tests run on the CPU."""

import builtins

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F
from tinytorch.core.tensor import _cast

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

SHAPES = [(4, 8), (2, 5, 8), (8,)]


def bf16(array, requires_grad=False):
    """A bfloat16 leaf (tt.tensor takes no bfloat16 array: the dtype comes by a cast, as autocast makes it)."""
    return _cast(tt.tensor(np.asarray(array, dtype=np.float32)), BF16).detach().requires_grad_(requires_grad)


def f32(t, requires_grad=False):
    return tt.tensor(t.numpy().astype(np.float32), requires_grad=requires_grad)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bfloat16_linear_is_float32_rounded_once(shape, with_bias, rng):
    x, w = bf16(rng.standard_normal(shape), True), bf16(rng.standard_normal((3, 8)), True)
    b = bf16(rng.standard_normal(3), True) if with_bias else None
    h = x + x  # an inner node: the gradient reaching it must be bfloat16 too
    inner, seen = h._backward_fn, []

    def spy(g):
        seen.append(g.dtype)
        return inner(g)
    h._backward = spy
    out = F.linear(h, w, b)
    assert out.dtype == BF16 and out.shape == shape[:-1] + (3,)
    ref = [f32(t, True) if t is not None else None for t in (x, w, b)]
    want = F.linear(ref[0] + ref[0], ref[1], ref[2])
    np.testing.assert_array_equal(out.numpy(), want.numpy().astype(BF16))
    G = bf16(rng.standard_normal(out.shape))
    out.backward(G)
    want.backward(f32(G))
    assert seen == [BF16]
    for mine, theirs in zip((x, w, b), ref):
        if mine is not None:
            assert mine.grad.dtype == BF16
            np.testing.assert_array_equal(mine.grad.numpy(), theirs.grad.numpy().astype(BF16))


def test_bfloat16_bias_by_keyword_and_the_linear_module(rng):
    x, w, b = bf16(rng.standard_normal((4, 8))), bf16(rng.standard_normal((3, 8))), bf16(rng.standard_normal(3))
    assert F.linear(x, w, bias=b).dtype == BF16 and F.linear(x, weight=w, bias=b).dtype == BF16
    assert F.linear(input=x, weight=w).dtype == BF16
    layer = tt.nn.Linear(8, 3)
    layer.weight.data, layer.bias.data = w.data, b.data
    assert layer(x).dtype == BF16


def test_float32_linear_takes_no_detour(rng):
    """No casts on the float32 path: the output is linear's own node, its parents the tensors passed in."""
    x, w, b = (tt.tensor(rng.standard_normal(s).astype(np.float32), requires_grad=True) for s in ((4, 8), (3, 8), (3,)))
    out = F.linear(x, w, b)
    assert out.dtype == tt.float32 and out._backward_fn.__name__ == "linear_backward"
    assert builtins.all(p is t for p, t in zip(out._parents, (x, w, b)))


@pytest.mark.parity
@pytest.mark.parametrize("shape", SHAPES)
def test_bfloat16_linear_matches_torch(shape, rng):
    torch = pytest.importorskip("torch")
    x, w, b = (bf16(rng.standard_normal(s), True) for s in (shape, (3, 8), (3,)))
    tx, tw, tb = (torch.tensor(t.numpy().astype(np.float32)).bfloat16().requires_grad_() for t in (x, w, b))
    out, tout = F.linear(x, w, b), torch.nn.functional.linear(tx, tw, tb)
    assert out.dtype == BF16 and tout.dtype == torch.bfloat16
    close = dict(rtol=2 ** -7, atol=1e-2)  # one bfloat16 rounding apart at most (summation order may differ)
    np.testing.assert_allclose(out.numpy().astype(np.float32), tout.detach().float().numpy(), **close)
    G = rng.standard_normal(out.shape)
    out.backward(bf16(G))
    tout.backward(torch.tensor(G, dtype=torch.float32).bfloat16())
    for mine, theirs in ((x, tx), (w, tw), (b, tb)):
        assert mine.grad.dtype == BF16 and theirs.grad.dtype == torch.bfloat16
        np.testing.assert_allclose(mine.grad.numpy().astype(np.float32), theirs.grad.float().numpy(), **close)
