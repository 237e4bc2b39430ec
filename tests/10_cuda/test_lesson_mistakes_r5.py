"""Round-5 student mistakes in module 10 that the older tests let through: each test fails on one of them."""

import numpy as np
import pytest

import tinytorch as tt

pytest.importorskip("numba", reason="module 10's kernels need numba-cuda: pip install 'tinytorch[kernels]'")

from tinytorch.cuda import kernels  # noqa: E402
from tinytorch.cuda.fixtures import _reference_layer_norm, _reference_softmax  # noqa: E402
from tinytorch.cuda.launch import _constants, uses_simulator  # noqa: E402


def host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def test_bias_gelu_saturates_instead_of_overflowing():
    """A tanh written as (e^2z - 1) / (e^2z + 1) overflows for |x| of a few tens."""
    got = host(kernels.bias_gelu(np.array([[-60.0, 60.0, -3.0]], np.float32), np.zeros(3, np.float32)))
    np.testing.assert_allclose(got, [[0.0, 60.0, -0.00363739]], atol=1e-5)


@pytest.mark.parametrize("op", ["softmax_rows", "layer_norm_rows"])
def test_row_kernels_cover_rows_past_the_first_block(op, rng):
    """row = cuda.threadIdx.x instead of cuda.grid(1) leaves every row past the first block unwritten."""
    x = rng.standard_normal((kernels.THREADS + 5, 6)).astype(np.float32)
    if op == "softmax_rows":
        got, want = kernels.softmax_rows(x), _reference_softmax(x)
    else:
        w, b = np.ones(6, np.float32), np.zeros(6, np.float32)
        got, want = kernels.layer_norm_rows(x, w, b), _reference_layer_norm(x, w, b, 1e-5)
    np.testing.assert_allclose(host(got), want, atol=1e-5)


def test_layer_norm_uses_its_eps_argument():
    x, ones, zeros = np.array([[1.0, 2.0, 3.0]], np.float32), np.ones(3, np.float32), np.zeros(3, np.float32)
    got = host(kernels.layer_norm_rows(x, ones, zeros, eps=1 / 3))  # var + eps = 2/3 + 1/3 = 1
    np.testing.assert_allclose(got, [[-1.0, 0.0, 1.0]], atol=1e-5)


@pytest.mark.skipif(not uses_simulator(), reason="on a GPU the kernel is compiled once, with THREADS = 16")
def test_sum_kernel_follows_the_threads_constant():
    """A tree that starts at stride 8 is right only while THREADS == 16."""
    with _constants(vars(kernels), THREADS=32):
        assert kernels.sum_all(np.ones(40, np.float32))[0] == 40


def test_grad_scaler_treats_nan_as_inf_and_grows_past_float16s_max():
    w = tt.nn.Parameter(np.ones(2, np.float32))
    opt = tt.optim.SGD([w], lr=0.1)
    scaler = tt.amp.GradScaler(init_scale=2.0 ** 16, growth_interval=1)
    w.grad = tt.tensor([np.nan, 1.0])
    scaler.step(opt)
    scaler.update()
    assert w.data.tolist() == [1.0, 1.0] and scaler.get_scale() == 2.0 ** 15
    w.grad = tt.tensor([1.0, 1.0])
    scaler.step(opt)
    scaler.update()
    assert (scaler.get_scale(), scaler._growth_tracker) == (2.0 ** 16, 0)


def test_grad_scaler_step_passes_the_closure_and_records_a_skipped_step():
    a, b = tt.nn.Parameter(np.ones(1, np.float32)), tt.nn.Parameter(np.ones(1, np.float32))
    opt_a, opt_b = tt.optim.SGD([a], lr=0.1), tt.optim.SGD([b], lr=0.1)
    scaler = tt.amp.GradScaler(init_scale=4.0)
    a.grad, b.grad = tt.tensor([np.inf]), tt.tensor([4.0])
    assert scaler.step(opt_a) is None  # skipped
    assert scaler.step(opt_b, lambda: 3.0) == 3.0  # the closure reaches SGD.step, its loss comes back
    for opt in (opt_a, opt_b):
        with pytest.raises(RuntimeError, match="twice"):
            scaler.step(opt)
