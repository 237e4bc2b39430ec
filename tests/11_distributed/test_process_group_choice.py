"""Which group moves which tensor, and a process group's lifecycle (issue 13, items 1, 2, 5)."""
import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.core.backend import count_host_syncs
from tinytorch.distributed import ThreadGroup
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


def test_rank_device_is_where_a_rank_picks_its_gpu(monkeypatch):
    monkeypatch.setattr(pg, "cuda_device_count", lambda: 2)
    picked = ThreadGroup.run(3, lambda: str(dist.rank_device()))  # 3 ranks, 2 GPUs: the third wraps around
    assert picked == ["cuda:0", "cuda:1", "cuda:0"], picked
    monkeypatch.setattr(pg, "cuda_device_count", lambda: 0)
    with pytest.raises(RuntimeError, match="local rank 0 needs a GPU, but CuPy sees none"):
        dist.rank_device()


def _auto_choice():
    """On a ThreadGroup rank: which group an AutoGroup over it picks for a GPU array, "nccl" or "host"."""
    host = pg._group(None)
    chosen = pg.AutoGroup(host=host)._for(_GpuArray([1.0, 2.0]))
    return "host" if chosen is host else "nccl"


@pytest.mark.parametrize("can_use_nccl, expected", [((True, True), "nccl"), ((True, False), "host"),
                                                    ((False, True), "host"), ((True, True, False), "host")])
def test_auto_ranks_choose_nccl_together_or_not_at_all(monkeypatch, can_use_nccl, expected):
    """One rank without NCCL (no library, another machine) must keep every rank off NCCL: a rank in NCCL and
    one in MPI would each wait in a collective the other never calls."""
    monkeypatch.setattr(pg, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(pg, "NCCLGroup", _RecordingNCCL)
    monkeypatch.setattr(pg, "_nccl_usable", lambda: can_use_nccl[pg._group(None).rank])  # each thread rank's own
    chosen = ThreadGroup.run(len(can_use_nccl), _auto_choice)
    assert chosen == [expected] * len(can_use_nccl), f"ranks able to use NCCL: {can_use_nccl}; chose {chosen}"


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



class _VoteRefusingHost:
    """A 3-rank host group that records sends and receives and fails any collective."""
    rank, size, local_rank, timeout, backend = 0, 3, 0, None, "mpi"

    def __init__(self):
        self.moved = []

    def all_reduce(self, *args, **kwargs):
        raise AssertionError("a collective (the NCCL vote) ran inside a send or recv")

    def send(self, array, dst):
        self.moved.append(("send", dst))

    def recv(self, array, src):
        self.moved.append(("recv", src))


def test_a_first_gpu_send_or_recv_does_not_vote(monkeypatch):
    """send/recv involve two ranks: a vote there would wait for a third rank that is elsewhere."""
    monkeypatch.setattr(pg, "_nccl_usable", lambda: True)
    monkeypatch.setattr(pg, "cuda_device_count", lambda: 3)
    host = _VoteRefusingHost()
    group = pg.AutoGroup(host=host)
    group.send(_GpuArray([1.0]), 1)
    group.recv(_GpuArray([1.0]), 2)
    assert host.moved == [("send", 1), ("recv", 2)], "undecided, a GPU send/recv goes through MPI"
    assert group._nccl_ok is None, "only a collective decides on NCCL"
