"""`tito doctor`: what this environment can run (CPU BLAS, threads, CUDA, MPI, grading tools).

Every probe returns text and never raises: a missing or broken package is a finding.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True, highlight=False)
THREAD_VARS = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]


def version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cupy_version() -> str:
    """CuPy ships under per-CUDA wheel names (cupy-cuda12x, cupy-cuda13x, ...)."""
    for package in ["cupy-cuda13x", "cupy-cuda12x", "cupy"]:
        if (version := version_of(package)) != "not installed":
            return f"{package} {version}"
    return "not installed"


def numpy_blas() -> str:
    try:
        import numpy

        config = numpy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception as err:  # old numpy has no mode="dicts"
        return f"unknown ({type(err).__name__})"


def threads() -> str:
    parts = [f"{os.cpu_count()} CPUs"]
    try:
        from threadpoolctl import threadpool_info

        parts += [f"{p['internal_api']}: {p['num_threads']} threads" for p in threadpool_info()]
    except ImportError:
        parts += [f"{v}={os.environ[v]}" for v in THREAD_VARS if v in os.environ] or ["no thread env vars set"]
    return "; ".join(parts)


def cuda() -> str:
    """Whether `cuda` tensors can work here, and if not, why."""
    try:
        cupy = importlib.import_module("cupy")
    except Exception as err:
        return f"unusable: cupy does not import ({type(err).__name__}: {err})"
    try:
        if not cupy.cuda.is_available():
            return "unusable: cupy.cuda.is_available() is False (no driver or no device)"
        count = cupy.cuda.runtime.getDeviceCount()
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
        cupy.ones(1).sum()  # a real kernel launch, not just a driver query
        return f"usable: {count} device(s), {name}"
    except Exception as err:
        return f"unusable: {type(err).__name__}: {err}"


def cuda_driver_version() -> tuple[int, int] | None:
    """The CUDA version the NVIDIA driver supports, as (major, minor); None without a driver.

    Asks libcuda (cuDriverGetVersion, no GPU context needed), then `nvidia-smi`'s header."""
    try:
        import ctypes

        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
            return version.value // 1000, version.value % 1000 // 10
    except OSError:  # no libcuda: no driver here
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
        if found:
            return int(found[1]), int(found[2])
    return None


def gpu_extra_for(driver: tuple[int, int] | None, installed: str) -> str:
    """Which `tinytorch[gpu-…]` extra fits a driver's CUDA version, and whether the installed CuPy does."""
    if driver is None:
        return "no NVIDIA driver found (no GPU here): the CPU needs no GPU extra"
    major = driver[0]
    if major < 12:
        return (f"driver supports CUDA {driver[0]}.{driver[1]}: too old for CuPy 13+ "
                f"(update the driver to one for CUDA 12 or later)")
    extra, wheel = ("gpu-cuda13", "cupy-cuda13x") if major >= 13 else ("gpu-cuda12", "cupy-cuda12x")
    advice = f"driver supports CUDA {driver[0]}.{driver[1]}: pip install -e '.[{extra}]'"
    if installed.startswith("cupy-cuda") and not installed.startswith(wheel):
        advice += f" (installed: {installed}; uninstall it first, two CuPy wheels conflict)"
    return advice


def mpi() -> str:
    venv_bin = Path(sys.executable).parent / "mpiexec"
    where = shutil.which("mpiexec") or (str(venv_bin) if venv_bin.exists() else None)
    return f"mpi4py {version_of('mpi4py')}; mpiexec: {where or 'not found'}"


def tinytorch_on_cuda() -> str:
    """A matmul, tanh and their backward on cuda against the same on the CPU: the package's GPU path end to end."""
    import numpy as np

    import tinytorch as tt

    if not tt.cuda_available():
        return f"unusable: {tt.cuda_unavailable_reason()}"
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((64, 32), dtype=np.float32), rng.standard_normal((32, 16), dtype=np.float32)
    grads = []
    for dev in ("cpu", "cuda"):
        x = tt.tensor(a, device=dev, requires_grad=True)
        (x @ tt.tensor(b, device=dev)).tanh().sum().backward()
        grads.append(x.grad.cpu().numpy())
    diff = float(np.max(np.abs(grads[0] - grads[1])))
    verdict = "usable" if diff < 1e-3 else "WRONG"
    return f"{verdict}: matmul, tanh and backward on cuda vs the CPU differ by {diff:.1e} at most"


def nccl() -> str:
    try:
        from cupy.cuda import nccl as lib
    except Exception as err:
        return f"unusable: cupy.cuda.nccl does not import ({type(err).__name__}: {err})"
    if not lib.available:
        return "not installed: pip install nvidia-nccl-cu13 (or -cu12: the one matching your cupy wheel)"
    return f"NCCL {lib.get_version()}"


def gpu_peak() -> str:
    """The peak TFLOPS that MFU is measured against (the GPU's data sheet), or how to give it."""
    import tinytorch as tt
    from tinytorch.training.efficiency import gpu_name, peak_flops

    if not tt.cuda_available():
        return "no usable GPU: MFU on a CPU is measured against a timed float32 matmul"
    found = {dtype: peak_flops("cuda", dtype) for dtype in ("bf16", "fp32")}
    if found["bf16"][0] is None:
        return found["bf16"][1]
    return f"{gpu_name('cuda')}: " + ", ".join(f"{d} {f / 1e12:g} TFLOPS" for d, (f, _) in found.items())


GPU_PROBES = [
    ("tinytorch on cuda", tinytorch_on_cuda),
    ("NCCL", nccl),
    ("numba-cuda", lambda: version_of("numba-cuda")),
    ("MFU peak", gpu_peak),
    ("full GPU check", lambda: "python3 bench/gpu.py (bench/README.md, the GPU section)"),
]


def rows(gpu: bool = False) -> list[tuple[str, str]]:
    probes = [
        ("python", lambda: f"{sys.version.split()[0]} ({sys.executable})"),
        ("numpy", lambda: version_of("numpy")),
        ("numpy BLAS", numpy_blas),
        ("threads", threads),
        ("cupy", cupy_version),
        ("CUDA device", cuda),
        ("GPU extra", lambda: gpu_extra_for(cuda_driver_version(), cupy_version())),
        ("MPI", mpi),
        ("nbgrader", lambda: version_of("nbgrader")),
        ("jupytext", lambda: version_of("jupytext")),
    ] + (GPU_PROBES if gpu else [])
    found = []
    for name, probe in probes:
        try:
            found.append((name, probe()))
        except Exception as err:  # a probe must never take the doctor down
            found.append((name, f"check failed: {type(err).__name__}: {err}"))
    return found


def doctor_command(
    gpu: bool = typer.Option(False, "--gpu", help="Also run tinytorch on the GPU and check NCCL and the MFU "
                                                  "peak; exit 1 when tinytorch cannot use the GPU."),
) -> None:
    """Show the Python, BLAS, threads, CUDA, MPI and grading tools this machine has."""
    table = Table(title="tito doctor")
    table.add_column("check")
    table.add_column("finding")
    found = rows(gpu)
    for name, finding in found:
        table.add_row(name, finding)
    console.print(table)
    if gpu and not dict(found)["tinytorch on cuda"].startswith("usable"):
        raise typer.Exit(1)
