"""Numeric gradient checks for every differentiable op, on fixed and random (hypothesis) shapes,
contiguous and transposed inputs; and gradcheck itself must catch wrong gradients."""

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import tinytorch as tt
from tinytorch.autograd import GradcheckError, gradcheck
from tinytorch.core.autograd import numerical_gradient
from tinytorch.core.tensor import from_op

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
CLAMP_KINKS = (-0.5, 0.5)


def sample(shape, domain, rng):
    """float64 values where the op is smooth: 'pos' for log/sqrt/pow bases,
    'nonzero' away from 0 (abs, relu, division), 'clamp' away from +-0.5."""
    a = rng.standard_normal(shape)
    if domain == "pos":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":
        return np.where(a >= 0, 1.0, -1.0) * rng.uniform(0.3, 2.0, shape)
    if domain == "clamp":
        for k in CLAMP_KINKS:
            near = np.abs(a - k) < 0.05
            a = np.where(near, k + np.where(a >= k, 0.1, -0.1), a)
        return a
    return a


def make_input(a, device, layout):
    """A float64 leaf holding `a`, either contiguous or a transposed view of contiguous data."""
    if layout == "contiguous" or a.ndim < 2:
        return tt.tensor(a, dtype=tt.float64, device=device, requires_grad=True)
    base = tt.tensor(np.ascontiguousarray(a.T), dtype=tt.float64, device=device)
    view = base.T if a.ndim == 2 else base.permute(*reversed(range(a.ndim)))
    x = view.detach().requires_grad_(True)
    assert x.shape == a.shape
    return x


def check(fn, shapes, domains, device, rng, layout="contiguous"):
    domains = domains.split() if domains else ["any"] * len(shapes)
    inputs = tuple(make_input(sample(s, d, rng), device, layout) for s, d in zip(shapes, domains))
    assert gradcheck(fn, inputs) is True


# (name, fn, input shapes, per-input domains)
OPS = [
    ("add", lambda a, b: a + b, [(3, 4), (3, 4)], ""),
    ("add_bcast", lambda a, b: a + b, [(3, 1, 5), (4, 1)], ""),
    ("sub_bcast", lambda a, b: a - b, [(2, 3), (3,)], ""),
    ("mul_bcast", lambda a, b: a * b, [(3, 1), (1, 4)], ""),
    ("div_bcast", lambda a, b: a / b, [(2, 3, 4), (3, 1)], "any nonzero"),
    ("pow_tensor", lambda a, b: a ** b, [(3, 4), (3, 4)], "pos any"),
    ("pow_2", lambda a: a ** 2, [(3, 4)], ""),
    ("pow_3", lambda a: a ** 3, [(3, 4)], ""),
    ("pow_neg_frac", lambda a: a ** -1.5, [(3, 4)], "pos"),
    ("rpow", lambda a: 2.0 ** a, [(3, 4)], ""),
    ("radd", lambda a: 1.5 + a, [(3, 4)], ""),
    ("rsub", lambda a: 1.5 - a, [(3, 4)], ""),
    ("rmul", lambda a: 2.5 * a, [(3, 4)], ""),
    ("rdiv", lambda a: 2.0 / a, [(3, 4)], "nonzero"),
    ("div_scalar", lambda a: a / 4.0, [(3, 4)], ""),
    ("neg", lambda a: -a, [(3, 4)], ""),
    ("exp", lambda a: a.exp(), [(3, 4)], ""),
    ("log", lambda a: a.log(), [(3, 4)], "pos"),
    ("sqrt", lambda a: a.sqrt(), [(3, 4)], "pos"),
    ("abs", lambda a: a.abs(), [(3, 4)], "nonzero"),
    ("tanh", lambda a: a.tanh(), [(3, 4)], ""),
    ("sigmoid", lambda a: a.sigmoid(), [(3, 4)], ""),
    ("relu", lambda a: a.relu(), [(3, 4)], "nonzero"),
    ("gelu", lambda a: a.gelu(), [(3, 4)], ""),
    ("gelu_tanh", lambda a: a.gelu(approximate="tanh"), [(3, 4)], ""),
    ("clamp", lambda a: a.clamp(min=-0.5, max=0.5), [(3, 4)], "clamp"),
    ("clamp_min", lambda a: a.clamp(min=-0.5), [(3, 4)], "clamp"),
    ("clamp_max", lambda a: a.clamp(max=0.5), [(3, 4)], "clamp"),
    ("tt_exp", lambda a: tt.exp(a), [(3, 4)], ""),
    ("softmax_last", lambda a: a.softmax(dim=-1), [(3, 4)], ""),
    ("softmax_0", lambda a: a.softmax(dim=0), [(2, 3, 4)], ""),
    ("log_softmax", lambda a: a.log_softmax(dim=-1), [(3, 4)], ""),
    ("log_softmax_1", lambda a: tt.log_softmax(a, dim=1), [(2, 3, 4)], ""),
    ("sum", lambda a: a.sum(), [(3, 4)], ""),
    ("sum_dim", lambda a: a.sum(dim=1), [(2, 3, 4)], ""),
    ("sum_dims_keep", lambda a: a.sum(dim=(0, 2), keepdim=True), [(2, 3, 4)], ""),
    ("mean", lambda a: a.mean(), [(3, 4)], ""),
    ("mean_dim_keep", lambda a: a.mean(dim=-1, keepdim=True), [(2, 3, 4)], ""),
    ("var", lambda a: a.var(), [(3, 4)], ""),
    ("var_dim_c0", lambda a: a.var(dim=1, correction=0), [(2, 3, 4)], ""),
    ("var_dims_keep", lambda a: a.var(dim=(0, 2), keepdim=True), [(2, 3, 4)], ""),
    ("max", lambda a: a.max(), [(3, 4)], ""),
    ("min", lambda a: a.min(), [(3, 4)], ""),
    ("max_dim", lambda a: a.max(dim=1).values, [(2, 3, 4)], ""),
    ("min_dim_keep", lambda a: a.min(dim=0, keepdim=True).values, [(3, 4)], ""),
    ("reshape", lambda a: a.reshape(4, -1), [(2, 3, 4)], ""),
    ("view", lambda a: a.view(6, 4), [(2, 3, 4)], ""),
    ("transpose", lambda a: a.transpose(0, 2), [(2, 3, 4)], ""),
    ("transpose_01", lambda a: a.transpose(0, 1), [(2, 3, 4)], ""),  # on 3 dims, g.T is not the inverse
    ("permute", lambda a: a.permute(1, 2, 0), [(2, 3, 4)], ""),
    ("permute_neg", lambda a: a.permute(-1, 0, 1), [(2, 3, 4)], ""),
    ("T", lambda a: a.T, [(3, 4)], ""),
    ("squeeze", lambda a: a.squeeze(1), [(3, 1, 4)], ""),
    ("squeeze_all", lambda a: a.squeeze(), [(3, 1, 4)], ""),
    ("unsqueeze", lambda a: a.unsqueeze(1), [(3, 4)], ""),
    ("expand", lambda a: a.expand(-1, 4) * tt.arange(4.0, dtype=tt.float64, device=a.device),
     [(3, 1)], ""),
    ("expand_new_dim", lambda a: a.expand(2, 3, 4), [(3, 1)], ""),
    ("flatten", lambda a: a.flatten(), [(2, 3, 4)], ""),
    ("flatten_1", lambda a: a.flatten(1), [(2, 3, 4)], ""),
    ("index_int", lambda a: a[1], [(3, 4)], ""),
    ("index_slice", lambda a: a[:, 1:3], [(3, 4)], ""),
    ("index_step_neg", lambda a: a[::2, -1], [(3, 4)], ""),
    ("index_none_ellipsis", lambda a: a[..., None, 1], [(2, 3, 4)], ""),
    ("index_repeat", lambda a: a[[0, 0, 2]], [(3, 4)], ""),
    ("index_2d_repeat", lambda a: a[[0, 0, 2], [1, 1, 3]], [(3, 4)], ""),
    ("index_tensor", lambda a: a[tt.tensor([2, 2, 0], device=a.device)], [(3, 4)], ""),
    ("index_mask", lambda a: a[a > 0], [(3, 4)], "nonzero"),
    ("cat", lambda a, b: tt.cat([a, b], dim=1), [(3, 2), (3, 4)], ""),
    ("cat_0", lambda a, b: tt.cat([a, b, a]), [(2, 3), (1, 3)], ""),
    ("stack", lambda a, b: tt.stack([a, b], dim=1), [(3, 4), (3, 4)], ""),
    ("split", lambda a: a.split([1, 3], dim=1)[0] * 2 + a.split([1, 3], dim=1)[1].sum(1, True),
     [(3, 4)], ""),
    ("split_size", lambda a: tt.split(a, 2)[1], [(3, 4)], ""),
    ("where", lambda a, b: tt.where(a > 0, a, b), [(3, 4), (4,)], "nonzero any"),
    ("masked_fill", lambda a: a.masked_fill(a > 0, 0.5), [(3, 4)], "nonzero"),
    ("matmul_1d_1d", lambda a, b: a @ b, [(4,), (4,)], ""),
    ("matmul_2d_1d", lambda a, b: a @ b, [(3, 4), (4,)], ""),
    ("matmul_1d_2d", lambda a, b: a @ b, [(4,), (4, 3)], ""),
    ("matmul_2d_2d", lambda a, b: a @ b, [(3, 4), (4, 5)], ""),
    ("matmul_batched", lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)], ""),
    ("matmul_batched_1d", lambda a, b: tt.matmul(a, b), [(2, 3, 4), (4,)], ""),
    ("matmul_1d_batched", lambda a, b: a.matmul(b), [(3,), (2, 3, 4)], ""),
    ("mse", lambda a, b: ((a - b) ** 2).mean(), [(3, 4), (3, 4)], ""),
    ("cross_entropy", lambda a: -a.log_softmax(-1)[[0, 1, 2], [1, 0, 3]].mean(), [(3, 4)], ""),
    ("attention_like", lambda q, k: (q @ k.transpose(-2, -1) / 2.0).softmax(-1) @ k,
     [(2, 3, 4), (2, 3, 4)], ""),
]
NON_CONTIGUOUS_OK = [op for op in OPS if op[0] != "view"]  # view needs contiguous data, like PyTorch


@pytest.mark.parametrize("name, fn, shapes, domains", OPS, ids=[op[0] for op in OPS])
def test_gradcheck_contiguous(name, fn, shapes, domains, device, rng):
    check(fn, shapes, domains, device, rng)


@pytest.mark.parametrize("name, fn, shapes, domains", NON_CONTIGUOUS_OK,
                         ids=[op[0] for op in NON_CONTIGUOUS_OK])
def test_gradcheck_transposed_inputs(name, fn, shapes, domains, device, rng):
    check(fn, shapes, domains, device, rng, layout="transposed")


BINARY = {
    "add": (lambda a, b: a + b, "any any"),
    "sub": (lambda a, b: a - b, "any any"),
    "mul": (lambda a, b: a * b, "any any"),
    "div": (lambda a, b: a / b, "any nonzero"),
    "pow": (lambda a, b: a ** b, "pos any"),
    "where": (lambda a, b: tt.where(a > 0, a, b), "nonzero any"),
}
LAYOUTS = st.sampled_from(["contiguous", "transposed"])


@FAST
@given(name=st.sampled_from(sorted(BINARY)),
       shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4),
       layout=LAYOUTS, seed=st.integers(0, 2**32 - 1))
def test_gradcheck_broadcasting_binary_ops(name, shapes, layout, seed, device):
    fn, domains = BINARY[name]
    check(fn, shapes.input_shapes, domains, device, np.random.default_rng(seed), layout)


UNARY = {
    "exp": (lambda a: a.exp(), "any"), "log": (lambda a: a.log(), "pos"),
    "sqrt": (lambda a: a.sqrt(), "pos"), "abs": (lambda a: a.abs(), "nonzero"),
    "tanh": (lambda a: a.tanh(), "any"), "sigmoid": (lambda a: a.sigmoid(), "any"),
    "relu": (lambda a: a.relu(), "nonzero"), "gelu": (lambda a: a.gelu(), "any"),
    "gelu_tanh": (lambda a: a.gelu(approximate="tanh"), "any"),
    "clamp": (lambda a: a.clamp(-0.5, 0.5), "clamp"),
    "softmax": (lambda a: a.softmax(dim=-1), "any"),
    "log_softmax": (lambda a: a.log_softmax(dim=0), "any"),
    "flatten": (lambda a: a.flatten(), "any"), "transpose_ends": (lambda a: a.transpose(0, -1), "any"),
    "neg_pow": (lambda a: (-a) ** 2, "any"),
}


@FAST
@given(name=st.sampled_from(sorted(UNARY)), shape=array_shapes(min_dims=1, max_dims=3, max_side=4),
       layout=LAYOUTS, seed=st.integers(0, 2**32 - 1))
def test_gradcheck_unary_random_shapes(name, shape, layout, seed, device):
    fn, domain = UNARY[name]
    check(fn, [shape], domain, device, np.random.default_rng(seed), layout)


@st.composite
def reduction_case(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    ndim = len(shape)
    dim = draw(st.one_of(st.none(), st.integers(-ndim, ndim - 1),
                         st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True)
                         .map(tuple)))
    return shape, dim, draw(st.booleans())


@settings(FAST, max_examples=40)
@given(name=st.sampled_from(["sum", "mean", "var", "var0", "max", "min"]), case=reduction_case(),
       layout=LAYOUTS, seed=st.integers(0, 2**32 - 1))
def test_gradcheck_reductions_random_dims(name, case, layout, seed, device):
    shape, dim, keepdim = case
    if name in ("max", "min"):
        if isinstance(dim, tuple):
            dim = dim[0]
        if dim is None:
            fn = (lambda a: a.max()) if name == "max" else (lambda a: a.min())
        else:
            fn = lambda a: getattr(a, name)(dim=dim, keepdim=keepdim).values  # noqa: E731
    elif name.startswith("var"):
        correction = 0 if name == "var0" else 1
        fn = lambda a: a.var(dim=dim, correction=correction, keepdim=keepdim)  # noqa: E731
    else:
        fn = lambda a: getattr(a, name)(dim=dim, keepdim=keepdim)  # noqa: E731
    check(fn, [shape], "any", device, np.random.default_rng(seed), layout)


@st.composite
def matmul_shapes(draw):
    batch = draw(mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3))
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    a = batch.input_shapes[0] + (n, k) if draw(st.booleans()) else (k,)
    b = batch.input_shapes[1] + (k, m) if draw(st.booleans()) else (k,)
    return a, b


@FAST
@given(shapes=matmul_shapes(), layout=LAYOUTS, seed=st.integers(0, 2**32 - 1))
def test_gradcheck_matmul_broadcast_batches(shapes, layout, seed, device):
    check(lambda a, b: a @ b, list(shapes), "", device, np.random.default_rng(seed), layout)


# --- gradcheck itself ---------------------------------------------------------------------

def test_gradcheck_returns_true_and_accepts_list(device):
    x = tt.tensor([1.0, 2.0], dtype=tt.float64, device=device, requires_grad=True)
    assert gradcheck(lambda t: (t * t).sum(), [x]) is True
    assert gradcheck(lambda t: t * t, (x,), eps=1e-6, atol=1e-5, rtol=1e-3) is True


def test_gradcheck_float32_inputs_use_float64_differences(device):
    x = tt.tensor([0.3, -1.2, 2.0], device=device, requires_grad=True)
    assert gradcheck(lambda t: (t * t * t).sum(), (x,)) is True


def test_gradcheck_catches_missing_gradient_term(device):
    x = tt.tensor([1.0, 2.0, 7.25], dtype=tt.float64, device=device, requires_grad=True)
    with pytest.raises(GradcheckError):
        gradcheck(lambda t: t * t.detach(), (x,))  # analytic grad misses one x


def test_gradcheck_catches_backward_that_ignores_incoming_gradient(device):
    # with all-ones output weights g is 1 everywhere, so a constant backward would look right
    x = tt.tensor(np.linspace(-1.0, 1.0, 6).reshape(2, 3), dtype=tt.float64, device=device, requires_grad=True)

    def ignores_g(t):  # forward 2t, backward 2 instead of 2 * g
        return from_op(t.data * 2.0, t._device, (t,), lambda g: (g * 0 + 2.0,))

    assert gradcheck(lambda t: t * 2.0, (x,)) is True
    with pytest.raises(GradcheckError):
        gradcheck(ignores_g, (x,))


def test_numerical_gradient_is_central_difference():
    # for x^2 the central difference is exact at any eps; one-sided ones give 6 +- eps
    x = np.array([3.0])
    assert numerical_gradient(lambda: float(x[0] ** 2), x, eps=0.1)[0] == pytest.approx(6.0, abs=1e-9)
    assert x.tolist() == [3.0]


def test_numerical_gradient_is_float64_for_a_float32_array():
    x = np.array([1.0, 2.0], dtype=np.float32)
    g = numerical_gradient(lambda: float(x.astype(np.float64).sum()), x, eps=1e-3)
    assert g.dtype == np.float64
    np.testing.assert_allclose(g, [1.0, 1.0], rtol=1e-4)


def test_gradcheck_error_names_worst_element(device):
    a = tt.tensor([0.5, 0.5], dtype=tt.float64, device=device, requires_grad=True)
    b = tt.tensor([1.0, 2.0, 7.25], dtype=tt.float64, device=device, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda p, q: p.sum() + (q * q.detach()).sum(), (a, b))
    assert isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert re.search(r"analytic", msg, re.I) and re.search(r"numer", msg, re.I), msg
    assert re.search(r"input\w*\W{0,3}1\b", msg, re.I), msg  # input index 1
    assert re.search(r"\b2\b", msg), msg  # element index 2: the largest |analytic - numeric|


def test_gradcheck_skips_inputs_without_requires_grad(device):
    a = tt.tensor([1.0, 2.0], dtype=tt.float64, device=device, requires_grad=True)
    b = tt.tensor([3.0, 4.0], dtype=tt.float64, device=device)  # wrong grad here is not checked
    assert gradcheck(lambda p, q: p * q.detach() * q, (a, b)) is True
    b.requires_grad_(True)
    with pytest.raises(GradcheckError):
        gradcheck(lambda p, q: p * q.detach() * q, (a, b))


def test_gradcheck_catches_wrong_broadcast_reduction(device):
    # the bias gradient of a broadcast add must sum over the batch; drop half of it
    w = tt.tensor(np.linspace(-1, 1, 6).reshape(2, 3), dtype=tt.float64, device=device)
    b = tt.tensor([0.1, 0.2, 0.3], dtype=tt.float64, device=device, requires_grad=True)
    mask = tt.tensor([[1.0], [0.0]], dtype=tt.float64, device=device)

    def wrong(bias):  # row 1 sees a detached copy of bias
        return (w + bias * mask + bias.detach() * (1 - mask)) ** 2

    with pytest.raises(GradcheckError):
        gradcheck(wrong, (b,))
