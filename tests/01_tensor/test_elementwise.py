"""Elementwise math, activations, softmax, matmul, and joining/selecting ops, against NumPy."""

import math

import numpy as np
import pytest

import tinytorch as tt


def arr(t):
    return t.cpu().numpy()


def np_gelu(x):
    erf = np.vectorize(math.erf)
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_softmax(x, dim):
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


UNARY = [
    ("exp", lambda t: t.exp(), np.exp, "any"),
    ("log", lambda t: t.log(), np.log, "pos"),
    ("sqrt", lambda t: t.sqrt(), np.sqrt, "pos"),
    ("abs", lambda t: t.abs(), np.abs, "any"),
    ("tanh", lambda t: t.tanh(), np.tanh, "any"),
    ("sigmoid", lambda t: t.sigmoid(), lambda a: 1 / (1 + np.exp(-a)), "any"),
    ("relu", lambda t: t.relu(), lambda a: np.maximum(a, 0), "any"),
    ("gelu", lambda t: t.gelu(), np_gelu, "any"),
    ("gelu_none", lambda t: t.gelu(approximate="none"), np_gelu, "any"),
    ("gelu_tanh", lambda t: t.gelu(approximate="tanh"), np_gelu_tanh, "any"),
    ("clamp", lambda t: t.clamp(min=-0.5, max=0.5), lambda a: np.clip(a, -0.5, 0.5), "any"),
    ("clamp_min", lambda t: t.clamp(min=0.1), lambda a: np.maximum(a, 0.1), "any"),
    ("clamp_max", lambda t: t.clamp(max=0.1), lambda a: np.minimum(a, 0.1), "any"),
    ("softmax", lambda t: t.softmax(dim=-1), lambda a: np_softmax(a, -1), "any"),
    ("softmax0", lambda t: t.softmax(0), lambda a: np_softmax(a, 0), "any"),
    ("log_softmax", lambda t: t.log_softmax(dim=1), lambda a: np.log(np_softmax(a, 1)), "any"),
]


@pytest.mark.parametrize("name, fn, ref, domain", UNARY, ids=[u[0] for u in UNARY])
def test_unary_matches_numpy(name, fn, ref, domain, device, rng):
    a = rng.standard_normal((3, 5)) * 2
    if domain == "pos":
        a = np.abs(a) + 0.1
    out = fn(tt.tensor(a.astype(np.float32), device=device))
    assert out.shape == a.shape
    np.testing.assert_allclose(arr(out), ref(a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name", ["exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "softmax", "log_softmax"]
)
def test_top_level_elementwise(name, device, rng):
    x = tt.tensor(np.abs(rng.standard_normal((2, 3))).astype(np.float32) + 0.1, device=device)
    args = {"dim": -1} if "softmax" in name else {}
    np.testing.assert_allclose(arr(getattr(tt, name)(x, **args)), arr(getattr(x, name)(**args)))


def test_top_level_clamp(device):
    x = tt.tensor([-2.0, 0.0, 2.0], device=device)
    assert tt.clamp(x, min=-1, max=1).tolist() == [-1.0, 0.0, 1.0]


def test_softmax_is_stable_for_large_logits(device):
    x = tt.tensor([[1000.0, 1000.0, 999.0], [-1000.0, 0.0, 1000.0]], device=device)
    s = arr(x.softmax(dim=-1))
    ls = arr(x.log_softmax(dim=-1))
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(ls))
    np.testing.assert_allclose(s.sum(-1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(ls[0], np.log(np_softmax(np.array([0.0, 0.0, -1.0]), 0)),
                               rtol=1e-5)
    np.testing.assert_allclose(ls[1], [-2000.0, -1000.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_leaves_its_input_alone(name, device):
    # shifting by the max must make a new array, not subtract from the input's own array
    x = tt.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, -1.0]], device=device)
    getattr(x, name)(dim=1)
    assert x.tolist() == [[1.0, 2.0, 3.0], [0.0, 5.0, -1.0]]


@pytest.mark.parametrize(
    "sa, sb",
    [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
     ((2, 3), (5, 3, 4)), ((2, 1, 2, 3), (4, 3, 2)), ((5, 2, 3), (5, 3, 1)), ((4, 3), (2, 3, 1))],
)
def test_matmul_matches_numpy(sa, sb, device, rng):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    ta, tb = tt.tensor(a, device=device), tt.tensor(b, device=device)
    for out in (ta @ tb, tt.matmul(ta, tb), ta.matmul(tb)):
        expected = a @ b
        assert out.shape == expected.shape
        np.testing.assert_allclose(arr(out), expected, rtol=1e-5, atol=1e-5)


def test_matmul_small_exact(device):
    a = tt.tensor([[1.0, 2.0]], device=device)
    b = tt.tensor([[3.0], [4.0]], device=device)
    assert (a @ b).tolist() == [[11.0]]


def test_comparisons(device):
    x = tt.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    y = tt.tensor([3.0, 2.0, 1.0], device=device)
    cases = [(x < y, [True, False, False]), (x <= y, [True, True, False]),
             (x > y, [False, False, True]), (x >= y, [False, True, True]),
             (x == y, [False, True, False]), (x != y, [True, False, True]),
             (x > 1.5, [False, True, True]), (2 < x, [False, False, True])]
    for out, expected in cases:
        assert out.dtype == tt.bool
        assert out.requires_grad is False
        assert out.tolist() == expected


def test_tensor_is_hashable_by_identity(device):
    a, b = tt.ones(2, device=device), tt.ones(2, device=device)
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"
    assert len({a, b}) == 2


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(dim, device, rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal((2, 3)).astype(np.float32)
    out = tt.cat([tt.tensor(a, device=device), tt.tensor(b, device=device)], dim=dim)
    np.testing.assert_array_equal(arr(out), np.concatenate([a, b], axis=dim))


def test_cat_uneven_and_default_dim(device):
    out = tt.cat((tt.ones(1, 2, device=device), tt.zeros(3, 2, device=device)))
    assert out.shape == (4, 2)


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_stack(dim, device, rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal((2, 3)).astype(np.float32)
    out = tt.stack([tt.tensor(a, device=device), tt.tensor(b, device=device)], dim=dim)
    np.testing.assert_array_equal(arr(out), np.stack([a, b], axis=dim))


def test_split_by_size_and_sections(device):
    a = np.arange(14, dtype=np.float32).reshape(7, 2)
    x = tt.tensor(a, device=device)
    parts = x.split(3)
    assert isinstance(parts, tuple)
    assert [p.shape for p in parts] == [(3, 2), (3, 2), (1, 2)]
    np.testing.assert_array_equal(arr(parts[2]), a[6:])
    parts = tt.split(x, [2, 5], dim=0)
    assert [p.shape for p in parts] == [(2, 2), (5, 2)]
    np.testing.assert_array_equal(arr(parts[1]), a[2:])
    parts = x.split(1, dim=1)
    assert [p.shape for p in parts] == [(7, 1), (7, 1)]


def test_where(device):
    cond = tt.tensor([[True, False], [False, True]], device=device)
    x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    y = tt.tensor([10.0, 20.0], device=device)  # broadcasts
    assert tt.where(cond, x, y).tolist() == [[1.0, 20.0], [10.0, 4.0]]


def test_masked_fill(device):
    x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    mask = tt.tensor([[False, True], [False, False]], device=device)
    assert x.masked_fill(mask, 0.0).tolist() == [[1.0, 0.0], [3.0, 4.0]]
    row = tt.tensor([True, False], device=device)  # broadcasts over rows
    out = x.masked_fill(row, float("-inf")).tolist()
    assert out == [[float("-inf"), 2.0], [float("-inf"), 4.0]]
    assert x.tolist() == [[1.0, 2.0], [3.0, 4.0]]  # not in place
