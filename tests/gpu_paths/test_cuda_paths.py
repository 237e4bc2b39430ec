"""The cuda code paths, run on FakeCupy (conftest.py) on a machine without a GPU (issue 13)."""
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import backend
from tinytorch.core.backend import count_host_syncs
from tinytorch.nn.functional import _embedding_indices, _row_mean, _row_sum, dropout_mask


def test_setitem_takes_lists_and_numpy_values_on_cuda(fake_gpu):
    x = tt.zeros(2, 3, device="cuda")
    x[0] = [1.0, 2.0, 3.0]  # CuPy refuses a list or a NumPy array as the value: convert first
    x[1] = np.array([4.0, 5.0, 6.0])
    x[:, 0] = tt.tensor([7.0, 8.0], device="cuda")
    assert isinstance(x.data, fake_gpu.DeviceArray)
    assert x.tolist() == [[7.0, 2.0, 3.0], [8.0, 5.0, 6.0]]


def test_boolean_mask_setitem_does_not_sync(fake_gpu):
    x = tt.tensor([[1.0, -2.0], [-3.0, 4.0]], device="cuda")
    with count_host_syncs(include_cpu=True) as syncs:
        x[x < 0] = 0.0  # a select on the device; x[mask] by nonzero() would read the count on the host
        x[np.array([True, False])] = 9  # a mask over the leading dim, from the host
    assert syncs.count == 0
    assert x.tolist() == [[9.0, 9.0], [0.0, 4.0]]


def test_where_and_masked_fill_take_host_conditions_on_cuda(fake_gpu):
    x = tt.tensor([1.0, 2.0, 3.0], device="cuda", requires_grad=True)
    y = tt.where(np.array([True, False, True]), x, 0.0)
    z = x.masked_fill([False, True, False], -1.0)
    assert y.tolist() == [1.0, 0.0, 3.0] and z.tolist() == [1.0, -1.0, 3.0]
    (y.sum() + z.sum()).backward()
    assert x.grad.tolist() == [2.0, 0.0, 2.0]


def test_scatter_add_on_cuda_uses_add_at(fake_gpu, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_gpu)
    monkeypatch.setitem(sys.modules, "cupyx", types.SimpleNamespace(scatter_add=None))  # warns in CuPy 14
    target = fake_gpu.zeros(3)
    backend.scatter_add(target, fake_gpu.asarray([0, 2, 0]), fake_gpu.asarray([1.0, 2.0, 3.0]))
    assert target.get().tolist() == [4.0, 0.0, 2.0]


def test_get_xp_sets_the_gpu_only_when_it_changes(fake_gpu, monkeypatch):
    used = []
    monkeypatch.setattr(fake_gpu.cuda, "Device", lambda index: types.SimpleNamespace(use=lambda: used.append(index)))
    x = tt.ones(4, device="cuda")
    for _ in range(5):
        x = x * 2 + 1
    assert used == [0], f"cudaSetDevice ran {len(used)} times for one GPU"


def test_gpu_generator_is_seeded_by_manual_seed(fake_gpu):
    draws = []
    for _ in range(2):
        tt.manual_seed(3)
        draws.append(dropout_mask((4, 5), 0.5, np.float32, tt.device("cuda")))
    assert all(isinstance(d, fake_gpu.DeviceArray) for d in draws), "the mask must be made on the device"
    assert np.array_equal(draws[0].get(), draws[1].get()), "manual_seed must make GPU draws repeat"
    assert backend.generator_for("cuda") is not backend.default_generator()


def test_row_reductions_on_the_gpu_are_plain_reductions(fake_gpu, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a CPU-BLAS trick on the GPU path")
    for name in ("einsum", "matmul", "vecdot"):
        monkeypatch.setattr(fake_gpu, name, refuse, raising=False)
    a = fake_gpu.asarray(np.arange(6.0).reshape(2, 3))
    assert _row_sum(a).get().tolist() == [[3.0], [12.0]]
    assert _row_sum(a, a).get().tolist() == [[5.0], [50.0]]
    assert _row_mean(a).get().tolist() == [[1.0], [4.0]]


def test_index_checks_on_cuda_raise_at_the_next_sync(fake_gpu):
    weight = tt.zeros(5, 3, device="cuda")
    _embedding_indices(tt.tensor([[1, 7]], device="cuda"), weight)  # no sync: the check waits on the device
    with pytest.raises(IndexError, match="index 7 is out of range"):
        tt.tensor(1.0, device="cuda").item()
    assert backend._pending_checks == [], "a raised check is not raised twice"
    assert tt.tensor(1.0, device="cuda").item() == 1.0


def test_index_checks_on_cpu_raise_at_once():
    with pytest.raises(IndexError, match="index 7 is out of range"):
        _embedding_indices(tt.tensor([[1, 7]]), tt.zeros(5, 3))


def _fake_nccl(fake_gpu, monkeypatch):
    nccl = types.SimpleNamespace(available=True, get_unique_id=lambda: b"id",
                                 NcclCommunicator=lambda size, uid, rank: object(),
                                 **{f"NCCL_{n}": n for n in ("SUM", "MAX", "FLOAT16", "FLOAT32", "FLOAT64",
                                                             "INT32", "INT64", "UINT8")})
    monkeypatch.setattr(fake_gpu.cuda, "Stream", lambda non_blocking: object(), raising=False)
    monkeypatch.setattr(fake_gpu.cuda, "nccl", nccl, raising=False)
    monkeypatch.setitem(sys.modules, "cupy", fake_gpu)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fake_gpu.cuda)


def _host(rank, size, local_rank, local_size):
    return types.SimpleNamespace(rank=rank, size=size, local_rank=local_rank, local_size=local_size,
                                 timeout=1.0, comm=types.SimpleNamespace(bcast=lambda uid, root: uid))


def test_nccl_takes_the_rank_gpu_through_the_backend(fake_gpu, monkeypatch):
    from tinytorch.distributed import process_group as pg
    _fake_nccl(fake_gpu, monkeypatch)
    group = pg.NCCLGroup(host=_host(rank=1, size=2, local_rank=0, local_size=1))  # 2 machines, 1 GPU each
    assert group.device_index == 0 and backend._current_gpu.index == 0


def test_nccl_refuses_two_ranks_on_one_gpu_with_a_clear_error(fake_gpu, monkeypatch):
    from tinytorch.distributed import process_group as pg
    _fake_nccl(fake_gpu, monkeypatch)
    with pytest.raises(RuntimeError, match="2 ranks share 1 GPU"):  # mpiexec -n 2 on a 1-GPU machine
        pg.NCCLGroup(host=_host(rank=1, size=2, local_rank=1, local_size=2))


def test_auto_sends_gpu_arrays_through_mpi_when_ranks_share_a_gpu(fake_gpu, monkeypatch):
    from tinytorch.distributed import process_group as pg
    monkeypatch.setattr(pg, "_nccl_usable", lambda: True)
    group = pg.AutoGroup()
    reduced = []
    group.host = types.SimpleNamespace(local_size=2, all_reduce=lambda array, op, async_op: reduced.append(array))
    array = fake_gpu.asarray([1.0, 2.0])
    group.all_reduce(array)
    assert reduced == [array] and group._nccl is None, "NCCL cannot take two ranks on one GPU: MPI must"


@pytest.mark.skipif(tt.cuda_available(), reason="this machine has a usable GPU")
def test_a_cuda_test_run_without_a_gpu_fails_instead_of_skipping():
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TINYTORCH_TEST_DEVICE="cuda")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                          "tests/gpu_paths/test_sync_free_step.py"], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0, f"the run passed without a GPU:\n{run.stdout}"
    assert "TINYTORCH_TEST_DEVICE=cuda but this device is unusable" in run.stdout + run.stderr


def test_pending_device_checks_are_bounded(fake_gpu):
    ok = fake_gpu.asarray(False)
    for _ in range(backend._MAX_PENDING_CHECKS - 1):
        backend.check_later(ok, lambda: AssertionError("passed checks never raise"))
    assert len(backend._pending_checks) == backend._MAX_PENDING_CHECKS - 1, "checks must wait for a sync"
    backend.check_later(ok, lambda: AssertionError("passed checks never raise"))
    assert backend._pending_checks == [], "past the bound the checks are read (their arrays freed)"
