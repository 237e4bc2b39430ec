"""dtypes: float32 is the default and is never silently promoted; PyTorch's promotion rules."""

import numpy as np
import pytest

import tinytorch as tt


def test_dtypes_are_numpy_dtypes():
    pairs = [
        (tt.float16, np.float16), (tt.float32, np.float32), (tt.float64, np.float64),
        (tt.int8, np.int8), (tt.int16, np.int16), (tt.int32, np.int32),
        (tt.int64, np.int64), (tt.uint8, np.uint8), (tt.bool, np.bool_),
    ]
    for ours, theirs in pairs:
        assert ours == theirs
        assert np.dtype(ours) == np.dtype(theirs)


# Every op on float32 inputs (and Python scalars) must give float32.
# Each entry: (id, fn(x, y, m) -> Tensor) with x (3, 4), y (3, 4) float32, m a (3, 4) bool mask.
FLOAT32_OPS = [
    ("add", lambda x, y, m: x + y),
    ("sub", lambda x, y, m: x - y),
    ("mul", lambda x, y, m: x * y),
    ("div", lambda x, y, m: x / y),
    ("pow_tensor", lambda x, y, m: x.abs() ** y),
    ("add_float", lambda x, y, m: x + 1.5),
    ("add_int", lambda x, y, m: x + 1),
    ("radd", lambda x, y, m: 1.5 + x),
    ("rsub", lambda x, y, m: 1.5 - x),
    ("mul_float", lambda x, y, m: x * 2.5),
    ("rmul", lambda x, y, m: 2.5 * x),
    ("div_int", lambda x, y, m: x / 3),
    ("rdiv", lambda x, y, m: 3.0 / x),
    ("pow_2", lambda x, y, m: x ** 2),
    ("pow_half", lambda x, y, m: x.abs() ** 0.5),
    ("rpow", lambda x, y, m: 2.0 ** x),
    ("neg", lambda x, y, m: -x),
    ("matmul", lambda x, y, m: x @ y.T),
    ("matmul_1d", lambda x, y, m: x[0] @ y[0]),
    ("exp", lambda x, y, m: x.exp()),
    ("log", lambda x, y, m: x.abs().log()),
    ("sqrt", lambda x, y, m: x.abs().sqrt()),
    ("abs", lambda x, y, m: x.abs()),
    ("tanh", lambda x, y, m: x.tanh()),
    ("sigmoid", lambda x, y, m: x.sigmoid()),
    ("relu", lambda x, y, m: x.relu()),
    ("gelu", lambda x, y, m: x.gelu()),
    ("gelu_tanh", lambda x, y, m: x.gelu(approximate="tanh")),
    ("clamp", lambda x, y, m: x.clamp(min=-0.5, max=0.5)),
    ("clamp_min", lambda x, y, m: x.clamp(min=0)),
    ("softmax", lambda x, y, m: x.softmax(dim=-1)),
    ("log_softmax", lambda x, y, m: x.log_softmax(dim=1)),
    ("sum", lambda x, y, m: x.sum()),
    ("sum_dim", lambda x, y, m: x.sum(dim=0)),
    ("mean", lambda x, y, m: x.mean()),
    ("mean_dim", lambda x, y, m: x.mean(dim=1, keepdim=True)),
    ("var", lambda x, y, m: x.var()),
    ("var_dim", lambda x, y, m: x.var(dim=0, correction=0)),
    ("max", lambda x, y, m: x.max()),
    ("max_dim", lambda x, y, m: x.max(dim=1).values),
    ("min", lambda x, y, m: x.min()),
    ("min_dim", lambda x, y, m: x.min(dim=0).values),
    ("reshape", lambda x, y, m: x.reshape(4, 3)),
    ("view", lambda x, y, m: x.view(-1)),
    ("transpose", lambda x, y, m: x.transpose(0, 1)),
    ("permute", lambda x, y, m: x.permute(1, 0)),
    ("T", lambda x, y, m: x.T),
    ("unsqueeze", lambda x, y, m: x.unsqueeze(0)),
    ("squeeze", lambda x, y, m: x.unsqueeze(1).squeeze(1)),
    ("expand", lambda x, y, m: x[:, :1].expand(3, 5)),
    ("flatten", lambda x, y, m: x.flatten()),
    ("index_int", lambda x, y, m: x[1]),
    ("index_slice", lambda x, y, m: x[:, 1:3]),
    ("index_list", lambda x, y, m: x[[0, 0, 2]]),
    ("index_mask", lambda x, y, m: x[m]),
    ("cat", lambda x, y, m: tt.cat([x, y], dim=1)),
    ("stack", lambda x, y, m: tt.stack([x, y])),
    ("split", lambda x, y, m: x.split(2, dim=1)[0]),
    ("where", lambda x, y, m: tt.where(m, x, y)),
    ("masked_fill", lambda x, y, m: x.masked_fill(m, 0.0)),
    ("masked_fill_inf", lambda x, y, m: x.masked_fill(m, float("-inf"))),
    ("detach", lambda x, y, m: x.detach()),
]


@pytest.mark.parametrize("name, fn", FLOAT32_OPS, ids=[n for n, _ in FLOAT32_OPS])
def test_float32_in_float32_out(name, fn, device, rng):
    x = tt.tensor(rng.standard_normal((3, 4)) + 0.1, dtype=tt.float32, device=device,
                  requires_grad=True)
    y = tt.tensor(rng.standard_normal((3, 4)), dtype=tt.float32, device=device,
                  requires_grad=True)
    m = tt.tensor(rng.standard_normal((3, 4)) > 0, device=device)
    out = fn(x, y, m)
    assert out.dtype == tt.float32, f"{name} gave {out.dtype}"
    assert out.data.dtype == np.float32
    if out.requires_grad:  # the op's own backward rule keeps float32 (the engine is module 02's)
        grads = out._backward(tt.get_xp(out.device).ones(out.shape, dtype=np.float32))
        for g in grads:
            if g is not None:
                assert g.dtype == np.float32, f"{name}: backward gave {g.dtype}"


@pytest.mark.parametrize(
    "make",
    [
        lambda d: tt.zeros(2, device=d),
        lambda d: tt.ones(2, device=d),
        lambda d: tt.full((2,), 0.5, device=d),
        lambda d: tt.rand(2, device=d),
        lambda d: tt.randn(2, device=d),
        lambda d: tt.arange(0.0, 1.0, 0.5, device=d),
        lambda d: tt.tensor([1.0, 2.0], device=d),
        lambda d: tt.tensor(1.0, device=d),
        lambda d: tt.tensor([1, 2], device=d).float(),
    ],
)
def test_creation_defaults_to_float32(make, device):
    assert make(device).dtype == tt.float32


@pytest.mark.parametrize(
    "fn, expected",
    [
        (lambda d: tt.tensor([1, 2], device=d) + 1, tt.int64),
        (lambda d: tt.tensor([1, 2], device=d) * 2.5, tt.float32),
        (lambda d: tt.tensor([1, 2], device=d) / 2, tt.float32),
        (lambda d: tt.tensor([1, 2], device=d) / tt.tensor([3, 4], device=d), tt.float32),
        (lambda d: tt.tensor([1, 2], device=d).exp(), tt.float32),
        (lambda d: tt.tensor([1, 2], device=d).log(), tt.float32),
        (lambda d: tt.tensor([1, 2], device=d).sqrt(), tt.float32),
        (lambda d: tt.tensor([1, 2], device=d).sigmoid(), tt.float32),
        (lambda d: tt.tensor([1, 2], device=d).tanh(), tt.float32),
        (lambda d: tt.ones(2, device=d) + tt.ones(2, dtype=tt.float64, device=d), tt.float64),
        (lambda d: tt.ones(2, dtype=tt.float64, device=d) * tt.ones(2, device=d), tt.float64),
        (lambda d: tt.ones(2, dtype=tt.float16, device=d) + 1.0, tt.float16),
        (lambda d: tt.ones(2, dtype=tt.float16, device=d) + tt.ones(2, device=d), tt.float32),
        (lambda d: tt.ones(2, dtype=tt.float64, device=d) * 2.5, tt.float64),
        # a 0-d tensor does not widen a float tensor with dimensions (PyTorch), unlike NumPy's 0-d arrays
        (lambda d: tt.ones(2, device=d) * tt.tensor(2.0, dtype=tt.float64, device=d), tt.float32),
        (lambda d: tt.tensor(2.0, dtype=tt.float64, device=d) - tt.ones((2, 2), device=d), tt.float32),
        (lambda d: tt.ones(2, dtype=tt.float16, device=d) * tt.tensor(0.5, device=d), tt.float16),
        (lambda d: tt.where(tt.tensor([True, False], device=d), tt.ones(2, device=d),
                            tt.tensor(0.0, dtype=tt.float64, device=d)), tt.float32),
        # ... but one of a higher kind does, and two 0-d tensors promote as usual
        (lambda d: tt.tensor([1, 2], device=d) * tt.tensor(2.0, dtype=tt.float64, device=d), tt.float64),
        (lambda d: tt.tensor(1.0, device=d) * tt.tensor(2.0, dtype=tt.float64, device=d), tt.float64),
        (lambda d: tt.tensor([1, 2], device=d) + tt.ones(2, device=d), tt.float32),
        (lambda d: tt.ones(2, dtype=tt.int32, device=d) + tt.ones(2, dtype=tt.int64, device=d),
         tt.int64),
        (lambda d: tt.ones(2, dtype=tt.int32, device=d) + 1, tt.int32),
        (lambda d: tt.ones(2, dtype=tt.uint8, device=d) + 1, tt.uint8),
        (lambda d: tt.tensor([True, False], device=d) + tt.tensor([1, 2], device=d), tt.int64),
        (lambda d: tt.tensor([1, 2], device=d) ** 2, tt.int64),
        (lambda d: tt.tensor([1.0, 2.0], device=d) < 1.5, tt.bool),
        (lambda d: tt.tensor([1, 2], device=d) == tt.tensor([1, 3], device=d), tt.bool),
        (lambda d: tt.tensor([1, 2], dtype=tt.int32, device=d).sum(), tt.int64),
        (lambda d: tt.tensor([True, True], device=d).sum(), tt.int64),
    ],
)
def test_type_promotion(fn, expected, device):
    assert fn(device).dtype == expected


@pytest.mark.parametrize(
    "method, dtype",
    [("float", tt.float32), ("double", tt.float64), ("long", tt.int64),
     ("int", tt.int32), ("bool", tt.bool)],
)
def test_cast_methods(method, dtype, device):
    t = getattr(tt.tensor([0.0, 1.5, -2.0], device=device), method)()
    assert t.dtype == dtype
    np.testing.assert_array_equal(t.cpu().numpy(), np.array([0.0, 1.5, -2.0]).astype(dtype))


def test_to_dtype(device):
    t = tt.tensor([1.5, 2.5], device=device)
    assert t.to(tt.float64).dtype == tt.float64
    assert t.to(tt.int64).tolist() == [1, 2]
    assert t.to(tt.float32).dtype == tt.float32
