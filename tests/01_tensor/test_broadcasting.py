"""Broadcasting follows NumPy/PyTorch; mismatches name both shapes."""

import numpy as np
import pytest

import tinytorch as tt

SHAPE_PAIRS = [
    ((3, 1, 5), (4, 1)),
    ((2, 3), (3,)),
    ((2, 3), ()),
    ((), (4,)),
    ((1,), (2, 2)),
    ((5, 1, 4), (1, 3, 1)),
    ((2, 1), (1, 2)),
]


@pytest.mark.parametrize("sa, sb", SHAPE_PAIRS)
@pytest.mark.parametrize(
    "op", [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b],
    ids=["add", "sub", "mul", "div"],
)
def test_broadcast_matches_numpy(sa, sb, op, device, rng):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32) + 3.0
    out = op(tt.tensor(a, device=device), tt.tensor(b, device=device))
    expected = op(a, b)
    assert out.shape == np.broadcast_shapes(sa, sb)
    np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "sa, sb",
    [((3, 2), (4,)), ((2, 3), (3, 2)), ((5, 1, 4), (2, 3))],
)
def test_broadcast_mismatch_names_both_shapes(sa, sb, device):
    a, b = tt.ones(sa, device=device), tt.ones(sb, device=device)
    with pytest.raises((ValueError, RuntimeError)) as info:
        a + b
    msg = str(info.value)
    assert str(sa) in msg and str(sb) in msg, msg


def test_broadcast_mismatch_other_ops(device):
    a, b = tt.ones(3, 2, device=device), tt.ones(4, device=device)
    for op in (lambda: a * b, lambda: a - b, lambda: a / b, lambda: b + a, lambda: a < b):
        with pytest.raises((ValueError, RuntimeError)) as info:
            op()
        assert "(3, 2)" in str(info.value) and "(4,)" in str(info.value)


def test_scalar_operands_broadcast(device):
    x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    np.testing.assert_allclose((x + 1).cpu().numpy(), [[2, 3], [4, 5]])
    np.testing.assert_allclose((2 * x).cpu().numpy(), [[2, 4], [6, 8]])
    np.testing.assert_allclose((1 - x).cpu().numpy(), [[0, -1], [-2, -3]])
    np.testing.assert_allclose((2 / x).cpu().numpy(), [[2, 1], [2 / 3, 0.5]], rtol=1e-6)
    np.testing.assert_allclose((2 ** x).cpu().numpy(), [[2, 4], [8, 16]])
    np.testing.assert_allclose((x ** 2).cpu().numpy(), [[1, 4], [9, 16]])
    np.testing.assert_allclose((-x).cpu().numpy(), [[-1, -2], [-3, -4]])
