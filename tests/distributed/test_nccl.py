"""DDP over NCCL on the GPUs of this machine (one rank per GPU). Skipped without CuPy, NCCL or a GPU.

On a GPU machine: pip install -e '.[dist]' cupy-cuda12x nvidia-nccl-cu12 (or the -cu13 pair), then
pytest -m gpu tests/distributed.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("distributed_launch", Path(__file__).with_name("launch.py"))
_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_launch)


def _gpus():
    """(number of GPUs usable with NCCL, or 0, and why not)."""
    try:
        import cupy
        from cupy.cuda import nccl
    except Exception as err:  # ImportError, or a CUDA error while cupy starts
        return 0, f"cupy is not usable: {err}"
    if not nccl.available:
        return 0, "NCCL is not installed (nvidia-nccl-cu12 or -cu13 beside cupy)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        return 0, f"no CUDA device: {err}"
    return count, "no CUDA device"


GPUS, WHY = _gpus()
pytestmark = [pytest.mark.gpu, pytest.mark.distributed, pytest.mark.skipif(GPUS == 0, reason=WHY)]


def test_ddp_over_nccl_matches_one_process(tmp_path):
    nproc = min(GPUS, 2)
    if nproc > 1 and _launch.mpi_missing():
        pytest.skip(_launch.mpi_missing())
    if nproc > 1:
        code, output, _ = _launch.launch(["check_nccl"], tmp_path, nproc=nproc, timeout=300)
        assert code == 0, output[-4000:]
    else:  # one GPU: a world of one rank still goes through NCCL's calls
        import tinytorch.distributed as dist
        dist.init_process_group("nccl")
        try:
            np.savez(tmp_path / "check_nccl.npz", **_launch.load_ranks_module().check_nccl(tmp_path))
        finally:
            dist.destroy_process_group()
    r = dict(np.load(tmp_path / "check_nccl.npz"))
    n = int(r["world"])
    np.testing.assert_allclose(r["all_reduce"], np.full(1000, n * (n + 1) / 2))
    np.testing.assert_allclose(r["bcast"], np.full(4, n - 1 + 5.0))
    ranks = _launch.load_ranks_module()
    ranks.STEPS = 5
    reference, _, _ = ranks.train_gpt("plain", world_size=n, rank=0)
    for name, expected in reference.items():
        np.testing.assert_allclose(r[f"params/{name}"], expected, atol=1e-4,
                                   err_msg=f"{name}: NCCL DDP on {n} GPU(s) vs one CPU process")
