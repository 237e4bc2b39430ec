"""Helpers of the distributed checks: launch `mpiexec -n 2 python -m mpi4py tests/distributed/ranks.py`."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def find_mpiexec():
    """The venv's mpiexec (the `dist` extra), else one on PATH, else None."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def mpi_missing():
    """Why the distributed checks cannot run here, or None."""
    try:
        import mpi4py  # noqa: F401  (the package only: MPI itself starts with mpi4py.MPI)
    except ImportError:
        return "mpi4py is not installed: pip install -e '.[dist]'"
    if find_mpiexec() is None:
        return "no mpiexec found: pip install -e '.[dist]' (mpich)"
    return None


def launch(checks, out_dir, nproc=2, timeout=120, script="ranks.py"):
    """Run `script`'s `checks` (ranks.py by default) on `nproc` ranks; returns (exit code, output, seconds)."""
    env = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([find_mpiexec(), "-n", str(nproc), sys.executable, "-m", "mpi4py",
                           str(HERE / script), ",".join(checks), str(out_dir)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def load_ranks_module(script="ranks.py"):
    spec = importlib.util.spec_from_file_location(f"distributed_{Path(script).stem}", HERE / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
