"""Which group moves which tensor, and a process group's lifecycle (issue 13, items 1, 2, 5)."""
import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.core.backend import count_host_syncs
from tinytorch.distributed import process_group as pg


class _GpuArray:
    """Stands for a CuPy array: it lives on a device and copies to the host with .get()."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=np.float32)[::2]  # not contiguous: a copy is needed
        self.dtype, self.shape = self.values.dtype, self.values.shape

    def get(self):
        return self.values.copy()


class _RecordingNCCL:
    made = []

    def __init__(self, timeout=None, host=None):
        self.host, self.calls = host, []
        _RecordingNCCL.made.append(self)

    def all_reduce(self, array, op=dist.ReduceOp.SUM, async_op=False):
        self.calls.append(array)

    def close(self):
        pass


@pytest.fixture
def nccl_usable(monkeypatch):
    """As on a GPU machine with CuPy and NCCL: _nccl_usable() is True; NCCLGroup records its calls."""
    _RecordingNCCL.made.clear()
    monkeypatch.setattr(pg, "_nccl_usable", lambda: True)
    monkeypatch.setattr(pg, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(pg, "NCCLGroup", _RecordingNCCL)
    return _RecordingNCCL.made


def test_auto_keeps_cpu_tensors_off_nccl_even_when_nccl_is_usable(nccl_usable):
    x = tt.tensor([1.0, 2.0])
    dist.all_reduce(x)  # joins "auto" on first use
    assert dist.get_world_size() == 1 and x.tolist() == [1.0, 2.0]
    assert nccl_usable == [], "a CPU tensor was handed to NCCL (it takes only GPU arrays)"
    assert "nccl" not in dist.get_backend()


def test_auto_sends_gpu_arrays_through_nccl(nccl_usable):
    group = dist.init_process_group("auto")
    array = _GpuArray([1.0, 2.0, 3.0])
    group.all_reduce(array)
    assert len(nccl_usable) == 1 and nccl_usable[0].calls == [array], "a GPU array must go through NCCL"
    assert nccl_usable[0].host is group.host, "NCCL must start from the same host group"
    assert dist.get_backend().endswith("cuda:nccl")


def test_ranks_share_the_gpus_of_their_machine():
    assert [pg._gpu_index(rank, 1) for rank in range(3)] == [0, 0, 0]
    assert [pg._gpu_index(rank, 2) for rank in range(4)] == [0, 1, 0, 1]


def test_host_copy_of_a_gpu_array_goes_through_the_backend():
    with count_host_syncs() as syncs:
        host = pg._host_contiguous(_GpuArray([1.0, 2.0, 3.0, 4.0]))
    assert isinstance(host, np.ndarray) and host.flags.c_contiguous and host.tolist() == [1.0, 3.0]
    assert syncs.count == 1, "the device->host copy must be the backend's (counted) to_host"


def test_destroy_then_init_again_in_one_process():
    for backend in ("single", "auto", "single"):
        group = dist.init_process_group(backend)
        assert dist.is_initialized() and dist.get_world_size() == 1
        with pytest.raises(RuntimeError, match="already called"):
            dist.init_process_group(backend)
        dist.destroy_process_group()
        assert not dist.is_initialized()
        group.close()  # closing twice is harmless

