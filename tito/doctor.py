"""`tito doctor`: what this environment can run (CPU BLAS, threads, CUDA, MPI, grading tools).

Every probe returns text and never raises: a missing or broken package is a finding.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

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


def mpi() -> str:
    venv_bin = Path(sys.executable).parent / "mpiexec"
    where = shutil.which("mpiexec") or (str(venv_bin) if venv_bin.exists() else None)
    return f"mpi4py {version_of('mpi4py')}; mpiexec: {where or 'not found'}"


def rows() -> list[tuple[str, str]]:
    probes = [
        ("python", lambda: f"{sys.version.split()[0]} ({sys.executable})"),
        ("numpy", lambda: version_of("numpy")),
        ("numpy BLAS", numpy_blas),
        ("threads", threads),
        ("cupy", cupy_version),
        ("CUDA device", cuda),
        ("MPI", mpi),
        ("nbgrader", lambda: version_of("nbgrader")),
        ("jupytext", lambda: version_of("jupytext")),
    ]
    found = []
    for name, probe in probes:
        try:
            found.append((name, probe()))
        except Exception as err:  # a probe must never take the doctor down
            found.append((name, f"check failed: {type(err).__name__}: {err}"))
    return found


def doctor_command() -> None:
    """Show the Python, BLAS, threads, CUDA, MPI and grading tools this machine has."""
    table = Table(title="tito doctor")
    table.add_column("check")
    table.add_column("finding")
    for name, finding in rows():
        table.add_row(name, finding)
    console.print(table)
