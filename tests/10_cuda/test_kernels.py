"""The numba-cuda kernels of module 10 against NumPy and module 01's ops (simulator on a CPU, CuPy on a GPU)."""

import numpy as np
import pytest

import tinytorch as tt

pytest.importorskip("numba", reason="module 10's kernels need numba-cuda: pip install 'tinytorch[kernels]'")

from tinytorch.cuda import kernels  # noqa: E402
from tinytorch.cuda.launch import grid_for, kernel_array, _simulated_atomic_adds, uses_simulator  # noqa: E402


@pytest.fixture
def put(device):
    """Moves a NumPy array to where the kernels run: NumPy in the simulator, CuPy on the GPU."""
    if uses_simulator():
        return lambda a: a
    return lambda a: tt.tensor(a, device=device).data


def host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def test_grid_for_rounds_up_and_checks_its_arguments():
    assert grid_for(21, 16) == 2 and grid_for(32, 16) == 2 and grid_for(1, 16) == 1
    assert grid_for((7, 6), (4, 4)) == (2, 2)
    with pytest.raises(ValueError, match="same number of dimensions"):
        grid_for((7, 6), 4)
    with pytest.raises(ValueError, match=">= 1"):
        grid_for(8, 0)


def test_a_kernel_called_like_a_function_says_how_to_launch_it():
    with pytest.raises(TypeError, match=r"bias_gelu_kernel\[grid, block\]"):
        kernels.bias_gelu_kernel(np.ones((1, 1)), np.ones(1), np.ones((1, 1)))


def test_kernel_array_gives_contiguous_float32():
    x = tt.tensor(np.arange(6.0).reshape(2, 3)).T  # a transposed view
    if not uses_simulator():
        x = x.to("cuda")
    a = kernel_array(x)
    assert a.dtype == np.float32 and a.flags.c_contiguous and a.shape == (3, 2)
    assert np.array_equal(host(a), np.arange(6.0).reshape(2, 3).T)


@pytest.mark.parametrize("shape", [(8, 16), (3, 7)])
def test_bias_gelu_equals_gelu_of_the_sum(shape, rng, put):
    x = rng.standard_normal(shape).astype(np.float32) * 3
    b = rng.standard_normal(shape[1]).astype(np.float32)
    out = host(kernels.bias_gelu(put(x), put(b)))
    expected = tt.gelu(tt.tensor(x + b), approximate="tanh").data
    assert out.shape == shape
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match=rf"bias_gelu: bias has shape \({shape[1] + 1},\), but x has {shape[1]} col"):
        kernels.bias_gelu(put(x), put(np.zeros(shape[1] + 1, np.float32)))  # a GPU thread would read past it


def test_softmax_rows_equals_softmax_including_large_logits(rng, put):
    x = (rng.standard_normal((8, 16)) * 4).astype(np.float32)
    x[0] += 1000.0  # would overflow without the running max
    x[1, ::-1].sort()  # the max comes first: only the no-rescale branch
    x[2, 0] = x[3, 5] = -np.inf  # masked positions, one before any finite value
    x[4] -= 1000.0  # every logit far below 0: a running max started at 0 gives 0 / 0
    out = host(kernels.softmax_rows(put(x)))
    np.testing.assert_allclose(out, tt.softmax(tt.tensor(x), dim=-1).data, atol=1e-6)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, atol=1e-6)


def test_layer_norm_rows_equals_layer_norm(rng, put):
    x = rng.standard_normal((8, 16)).astype(np.float32) + 50.0  # a large mean next to unit spread
    w, b = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    out = host(kernels.layer_norm_rows(put(x), put(w), put(b), eps=1e-5))
    expected = tt.nn.functional.layer_norm(tt.tensor(x), (16,), tt.tensor(w), tt.tensor(b), eps=1e-5).data
    np.testing.assert_allclose(out, expected, atol=2e-4)
    with pytest.raises(ValueError, match=r"layer_norm_rows: weight has shape \(15,\)"):
        kernels.layer_norm_rows(put(x), put(w[:15]), put(b))  # a GPU thread would read past it


@pytest.mark.parametrize("n", [1, 16, 70])
def test_sum_all_adds_every_block_once(n, rng, put):
    x = rng.standard_normal(n).astype(np.float32)
    out = host(kernels.sum_all(put(x)))
    assert out.shape == (1,)
    assert abs(out[0] - x.sum(dtype=np.float64)) < 1e-4
    assert host(kernels.sum_all(put(np.ones(n, np.float32))))[0] == n
    with _simulated_atomic_adds() as adds:
        kernels.sum_all(put(x))
    assert adds is None or adds == [0] * grid_for(n, kernels.THREADS), "one atomic add per block, blocks race"


@pytest.mark.parametrize("m,k,n", [(6, 10, 7), (1, 5, 3), (8, 8, 8), (4, 8, 12)])  # (4, 8, 12): 3 x 1 blocks
def test_tiled_matmul_equals_numpy(m, k, n, rng, put):
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = host(kernels.matmul_tiled(put(a), put(b)))
    assert c.shape == (m, n)
    np.testing.assert_allclose(c, a @ b, atol=1e-4)


def test_tiled_matmul_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="cannot be multiplied"):
        kernels.matmul_tiled(np.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


def test_kernels_leave_their_inputs_alone(rng, put):
    x = rng.standard_normal((3, 5)).astype(np.float32) + 2.0
    w, xd = np.ones(5, np.float32), put(x.copy())
    kernels.bias_gelu(xd, put(w))
    kernels.softmax_rows(xd)
    kernels.layer_norm_rows(xd, put(w), put(w))
    kernels.sum_all(xd)
    kernels.matmul_tiled(xd, put(np.ones((5, 2), np.float32)))
    np.testing.assert_array_equal(host(xd), x, err_msg="a kernel writes only `out`")
