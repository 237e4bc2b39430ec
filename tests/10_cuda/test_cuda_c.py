"""Module 10's CUDA C: every source compiles with NVRTC (no GPU needed); its numbers on a GPU."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.cuda.raw import CUDA_SOURCES, compile_ptx, nvrtc_unavailable_reason, softmax_cross_entropy_rows

NVRTC = nvrtc_unavailable_reason()
needs_nvrtc = pytest.mark.skipif(NVRTC is not None, reason=str(NVRTC))


@needs_nvrtc
@pytest.mark.parametrize("name", sorted(CUDA_SOURCES))
def test_every_cuda_c_source_compiles_to_ptx(name):
    ptx = compile_ptx(CUDA_SOURCES[name], name)
    assert ".target sm_90" in ptx and ".entry" in ptx, ptx[:400]


@needs_nvrtc
def test_the_fused_kernel_is_in_the_ptx_under_its_c_name():
    ptx = compile_ptx(CUDA_SOURCES["softmax_cross_entropy.cu"])
    assert ".entry softmax_cross_entropy_forward(" in ptx  # extern "C": no C++ name mangling


@needs_nvrtc
def test_a_compile_error_comes_with_the_compiler_log():
    broken = 'extern "C" __global__ void k(float* x) { x[0] = undefined_name; }'
    with pytest.raises(RuntimeError, match=r"(?s)broken\.cu does not compile.*undefined_name"):
        compile_ptx(broken, "broken.cu")


def test_softmax_cross_entropy_kernel_on_the_gpu(device, rng):
    if not device.startswith("cuda"):
        pytest.skip("runs the CUDA C kernel on a GPU: TINYTORCH_TEST_DEVICE=cuda on a machine with one")
    logits = (rng.standard_normal((37, 1000)) * 3).astype(np.float32)
    logits[0] += 500.0  # large logits: the row max keeps exp finite
    targets = rng.integers(0, 1000, 37)
    z = logits.astype(np.float64)
    m = z.max(axis=1)
    expected = np.log(np.exp(z - m[:, None]).sum(axis=1)) + m - z[np.arange(37), targets]
    for threads in (32, 256):
        loss = softmax_cross_entropy_rows(tt.tensor(logits, device=device).data,
                                          tt.tensor(targets, device=device).data, threads=threads)
        np.testing.assert_allclose(loss.get(), expected, rtol=1e-5, atol=1e-4)


@needs_nvrtc
def test_the_kernel_flags_an_out_of_range_target_instead_of_reading_past_the_row():
    ptx = compile_ptx(CUDA_SOURCES["softmax_cross_entropy.cu"])
    assert "min.s32" in ptx, "the kernel should atomically record the first row whose target is out of range"


@pytest.mark.parametrize("threads", [0, 3, 2048, 2.0])
def test_threads_must_be_a_power_of_two_a_block_can_hold(threads):
    with pytest.raises(ValueError, match=r"threads=.* must be a power of two from 1 to 1024"):
        softmax_cross_entropy_rows(np.zeros((2, 3), np.float32), np.zeros(2, np.int64), threads=threads)


def test_host_arrays_are_refused_with_the_shape_it_needs():
    pytest.importorskip("cupy")
    with pytest.raises(TypeError, match=r"logits must be a 2-D CuPy array \(rows, classes\)"):
        softmax_cross_entropy_rows(np.zeros((2, 3), np.float32), np.zeros(2, np.int64))


def test_bad_targets_on_the_gpu_are_named(device):
    if not device.startswith("cuda"):
        pytest.skip("runs the CUDA C kernel on a GPU: TINYTORCH_TEST_DEVICE=cuda on a machine with one")
    logits = tt.zeros(4, 5, device=device).data
    for targets, row in (([0, 1, 5, 2], 2), ([-1, 0, 0, 7], 0)):
        with pytest.raises(IndexError, match=rf"target -?\d of row {row} is out of range: logits have 5 classes"):
            softmax_cross_entropy_rows(logits, tt.tensor(targets, device=device).data)
    for targets in ([0, 1, 2], [0.0, 1.0, 2.0, 3.0]):
        with pytest.raises(TypeError, match=r"targets must be a CuPy integer array of shape \(4,\)"):
            softmax_cross_entropy_rows(logits, tt.tensor(targets, device=device).data)
