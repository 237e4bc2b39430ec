"""`tito doctor` names the GPU extra that fits the driver; pyproject offers one per CUDA major."""
import ctypes
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


def test_driver_version_from_nvidia_smi_when_libcuda_is_missing(tmp_path, monkeypatch):
    def no_libcuda(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(ctypes, "CDLL", no_libcuda)
    smi = tmp_path / "nvidia-smi"  # the header line nvidia-smi prints
    smi.write_text("#!/bin/sh\necho '| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cuda_driver_version() == (12, 4)
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\n")
    assert cuda_driver_version() is None, "no version in the output: no driver to name"


def test_pyproject_has_a_cupy_and_nccl_pair_per_cuda_major():
    extras = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = extras["project"]["optional-dependencies"]
    assert any(r.startswith("cupy-cuda12x") for r in extras["gpu-cuda12"]) and "nvidia-nccl-cu12" in extras["gpu-cuda12"]
    assert any(r.startswith("cupy-cuda13x") for r in extras["gpu-cuda13"]) and "nvidia-nccl-cu13" in extras["gpu-cuda13"]
    assert extras["gpu"] == ["tinytorch[gpu-cuda12]"]
