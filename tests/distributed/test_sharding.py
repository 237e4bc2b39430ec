"""Real ranks (MPI) for module 13: ZeRO-2 and ZeRO-3 at world size 2 equal one process at the combined
batch, and a rank that raises under ZeRO-3 stops the job with its message. One launch for the numbers."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("distributed_launch", HERE / "launch.py")
_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_launch)

pytestmark = [pytest.mark.distributed,
              pytest.mark.skipif(_launch.mpi_missing() is not None, reason=str(_launch.mpi_missing()))]


def launch(checks, out_dir, nproc=2, timeout=120):
    return _launch.launch(checks, out_dir, nproc, timeout, script="ranks_sharding.py")


def _ranks_module():
    return _launch.load_ranks_module("ranks_sharding.py")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    code, output, _ = launch(["check_zero"], out)
    assert code == 0, f"mpiexec -n 2 ranks_sharding.py failed (exit {code}):\n{output[-4000:]}"
    return dict(np.load(out / "check_zero.npz"))


@pytest.mark.parametrize("stage", [2, 3])
def test_two_mpi_ranks_equal_one_process_with_twice_the_batch(two_ranks, stage):
    expected, losses = _ranks_module().train()
    for name, want in expected.items():
        worst = float(np.abs(two_ranks[f"zero{stage}/{name}"] - want).max())
        assert worst <= 1e-5, f"ZeRO-{stage} on 2 MPI ranks: {name} differs from one process by {worst:.3g}"
    assert np.abs(two_ranks[f"zero{stage}/losses"] - losses).max() <= 1e-5


def test_prefetch_over_mpi_gives_the_same_numbers_bit_for_bit(two_ranks):
    names = [k.split("/", 1)[1] for k in two_ranks if k.startswith("zero3/")]
    for name in names:  # the prefetched gathers (async all_gather on MPI) hold exactly the plain ones' values
        assert np.array_equal(two_ranks[f"zero3-prefetch/{name}"], two_ranks[f"zero3/{name}"]), name


def test_a_rank_that_raises_under_zero3_stops_the_job(tmp_path):
    code, output, seconds = launch(["fault"], tmp_path, timeout=60)
    assert code != 0, "the job must exit non-zero when a rank raises"
    assert seconds < 30, f"the job took {seconds:.1f} s to stop"
    assert "rank 1 failed on purpose at step 3 under ZeRO-3" in output, f"rank 1's error must be shown:\n{output[-2000:]}"
