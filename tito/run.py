"""`tito run --nproc N script.py [args]`: start N ranks of a script under the venv's `mpiexec`.

The ranks find each other through MPI (`tinytorch.distributed.init_process_group`). An uncaught
exception on any rank stops every rank (`python -m mpi4py` calls MPI_Abort), so a job never hangs
on a crashed rank, and the exit code is non-zero. If tito itself is killed (a timeout, `kill`,
a closed terminal), the kernel sends mpiexec SIGTERM and mpiexec ends the ranks: none is left
spinning in a blocking MPI call.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import typer

from tito.errors import TitoError, user_errors

_INSTALL = "pip install -e '.[dist]' (mpi4py and mpich, which puts mpiexec in the venv's bin/)"
RUN_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def find_mpiexec() -> str:
    """The `mpiexec` beside this Python (the `dist` extra's), else one on PATH; a TitoError if none."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if found is None:
        raise TitoError(f"running several ranks needs MPI, and no mpiexec was found: {_INSTALL}")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise TitoError(f"running several ranks needs mpi4py, which is not installed: {_INSTALL}") from None
    return found


def under_launcher() -> bool:
    """True inside a rank that an MPI launcher started (so we must not launch again)."""
    return any(os.environ.get(name) for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))


def rank_environment(nproc: int) -> dict:
    """This environment, with BLAS threads split between the ranks unless the user set them."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, threads)
    return env


def launch(nproc: int, python_args: List[str]) -> int:
    """Run `python -m mpi4py <python_args>` as `nproc` ranks; returns the job's exit code."""
    if nproc < 1:
        raise TitoError(f"--nproc must be at least 1, got {nproc}")
    command = [find_mpiexec(), "-n", str(nproc), sys.executable, "-m", "mpi4py", *python_args]
    return subprocess.call(command, env=rank_environment(nproc), preexec_fn=_end_with_parent)


_PR_SET_PDEATHSIG = 1


def _end_with_parent():
    """In the child, before exec: have the kernel send it SIGTERM when tito dies, however it dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_command(
    ctx: typer.Context,
    script: Path = typer.Argument(..., help="The Python script every rank runs."),
    nproc: int = typer.Option(1, "--nproc", "-n", help="How many ranks (processes) to start."),
) -> None:
    """Run a script as N data-parallel ranks (MPI); arguments after the script are passed to it."""
    with user_errors():
        if not script.is_file():
            raise TitoError(f"{script}: no such script")
        code = launch(nproc, [str(script), *ctx.args])
    raise typer.Exit(code)
