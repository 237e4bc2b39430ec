"""`tito doctor` names the GPU extra that fits the driver; pyproject offers one per CUDA major."""
import tomllib
from pathlib import Path

from tito.doctor import cuda_driver_version, gpu_extra_for


def test_doctor_picks_the_extra_from_the_driver_cuda_version():
    assert "gpu-cuda13" in gpu_extra_for((13, 0), "not installed")
    assert "gpu-cuda12" in gpu_extra_for((12, 8), "not installed")
    assert "too old" in gpu_extra_for((11, 8), "not installed")
    assert "no GPU" in gpu_extra_for(None, "not installed")
    mismatch = gpu_extra_for((13, 0), "cupy-cuda12x 14.2.0")
    assert "gpu-cuda13" in mismatch and "conflict" in mismatch, "a CuPy for the other CUDA must be named"
    assert "conflict" not in gpu_extra_for((13, 0), "cupy-cuda13x 14.2.0")


def test_driver_version_is_a_pair_or_none():
    found = cuda_driver_version()
    assert found is None or (len(found) == 2 and found[0] >= 1)


def test_pyproject_has_a_cupy_and_nccl_pair_per_cuda_major():
    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = extras["project"]["optional-dependencies"]
    assert any(r.startswith("cupy-cuda12x") for r in extras["gpu-cuda12"]) and "nvidia-nccl-cu12" in extras["gpu-cuda12"]
    assert any(r.startswith("cupy-cuda13x") for r in extras["gpu-cuda13"]) and "nvidia-nccl-cu13" in extras["gpu-cuda13"]
    assert extras["gpu"] == ["tinytorch[gpu-cuda12]"]
