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
