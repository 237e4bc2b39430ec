# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 11 — provided code: process groups and collectives
#
# The lesson (`distributed.py`) builds data parallelism *on top of* a process
# group: the set of ranks and the collectives between them. This file is that
# plumbing, ready-made. Nothing here is an exercise; read it when you want to
# know how a collective reaches MPI or NCCL.
#
# - `init_process_group(backend)`: `"nccl"` (CuPy, one GPU per rank), `"mpi"`
#   (`mpi4py`, CPU processes), `"single"` (world size 1), or `"auto"` (the
#   default: MPI or one process for CPU tensors, NCCL for cuda tensors when it is there).
# - The collectives `all_reduce`, `broadcast`, `all_gather`, `reduce_scatter`,
#   `send`/`recv`, `all_gather_object`, on tensors, in place. As in PyTorch, the
#   tensors must be contiguous (a strided slice `x[::2]` is refused); a group's
#   `all_gather(out, array)` and `reduce_scatter(out, array)` refuse an `out`
#   that shares memory with `array`, as MPI does.
# - `ThreadGroup.run(n, fn)`: n ranks as threads of one process, for tests.
# - Fault handling: a rank that raises aborts the job; every wait has a
#   deadline (`DistributedTimeoutError`).
# - Conveniences the lesson's `DistributedDataParallel` and
#   `ZeroRedundancyOptimizer` inherit (checks, `no_sync`, checkpoints).

# %%
#| default_exp distributed.process_group

# %%
#| export
"""Process groups and collectives: MPI between CPU processes, NCCL between GPUs, or one process."""
import os
import pickle  # all_gather_object: Python objects between the ranks of one job, as PyTorch does
import sys
import threading
import time
import queue
import traceback

import numpy as np

from tinytorch.core.backend import cuda_device_count, device, get_xp, namespace_of, to_host
from tinytorch.core.tensor import Tensor

# %% [markdown]
# ## Reduce ops, timeouts, and `Work`
#
# A collective waits for every rank; if one rank dies, the others would wait
# forever. So every wait has a deadline (default 300 s, or
# `TINYTORCH_DIST_TIMEOUT`), and an async collective returns a `Work` whose
# `wait()` polls against it.

# %%
#| export
class ReduceOp:
    """How `all_reduce` combines the ranks' values."""
    SUM = "sum"
    AVG = "avg"
    MAX = "max"


class DistributedTimeoutError(RuntimeError):
    """A collective or send/recv waited longer than the process group's timeout."""


_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # MPICH's hydra, Open MPI
_DEFAULT_TIMEOUT = 300.0


def launched_world_size():
    """The number of ranks an MPI launcher started (1 when there is no launcher)."""
    for name in _LAUNCHER_SIZE_VARS:
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def _default_timeout():
    return float(os.environ.get("TINYTORCH_DIST_TIMEOUT", _DEFAULT_TIMEOUT))


def _check_op(op, array):
    if op not in (ReduceOp.SUM, ReduceOp.AVG, ReduceOp.MAX):
        raise ValueError(f"unknown reduce op {op!r}: use ReduceOp.SUM, ReduceOp.AVG or ReduceOp.MAX")
    if op == ReduceOp.AVG and array.dtype.kind not in "fc":
        raise TypeError(f"ReduceOp.AVG needs a floating-point tensor, got {array.dtype}")


def _check_contiguous(what, *arrays):
    """Every group's collectives take contiguous arrays only, as PyTorch's ("Tensors must be contiguous"). A
    strided view (x[::2], a transpose) would have to travel as a copy, and the result land in the copy, not in
    the memory the view shares with x."""
    for array in arrays:
        if not array.flags.c_contiguous:
            raise ValueError(f"{what}: tensors must be contiguous, got one of shape {tuple(array.shape)} with "
                             f"strides {array.strides} (a strided slice or a transpose): pass a contiguous copy "
                             f"(t.clone()) and copy the result back")


def _check_not_aliased(what, out, array):
    """The array sent must not share memory with the output, in every group, as MPI's rule ("Buffers must not
    be aliased"): thread ranks copy their input first and would not notice."""
    if namespace_of(array).may_share_memory(out, array):
        raise ValueError(f"{what}: the array sent shares memory with the output buffer (is it a view of it?); "
                         f"the buffers must not be aliased: send a copy")


class Work:
    """A collective in flight: `wait()` blocks until it is done (or the timeout passes)."""

    def __init__(self, is_done=None, finish=None, what="", timeout=None):
        self._is_done, self._finish, self.what = is_done, finish, what
        self.timeout = _default_timeout() if timeout is None else timeout

    def wait(self):
        if self._is_done is not None:
            deadline, spins = time.monotonic() + self.timeout, 0
            while not self._is_done():
                spins += 1
                if spins > 200:  # a busy machine: let the other ranks run
                    time.sleep(0.0002)
                if time.monotonic() > deadline:
                    raise DistributedTimeoutError(
                        f"{self.what} did not finish within {self.timeout:g} s: another rank crashed, hangs, "
                        f"or called a different collective. Raise the limit with "
                        f"init_process_group(timeout=...) or TINYTORCH_DIST_TIMEOUT")
            self._is_done = None
        if self._finish is not None:
            finish, self._finish = self._finish, None
            finish()
        return True


_DONE = Work()


# %%
#| export
class SingleProcessGroup:
    """World size 1: every collective leaves the data as it is (a copy where the output is separate)."""

    backend, rank, size, local_rank, local_size = "single", 0, 1, 0, 1

    def __init__(self, timeout=None):
        self.timeout = _default_timeout() if timeout is None else timeout

    def all_reduce(self, array, op=ReduceOp.SUM, async_op=False):
        _check_op(op, array)
        _check_contiguous("all_reduce", array)
        return _DONE

    def broadcast(self, array, src=0):
        _check_rank(src, 1)
        _check_contiguous("broadcast", array)

    def all_gather(self, out, array, async_op=False):
        _check_contiguous("all_gather", out, array)
        _check_not_aliased("all_gather", out, array)
        out[...] = array.reshape(out.shape)
        return _DONE

    def reduce_scatter(self, out, array, op=ReduceOp.SUM):
        _check_op(op, array)
        _check_contiguous("reduce_scatter", out, array)
        _check_not_aliased("reduce_scatter", out, array)
        out[...] = array.reshape(out.shape)

    def send(self, array, dst):
        raise RuntimeError("send: a world of size 1 has no other rank; start several with tito run --nproc N")

    recv = send

    def barrier(self):
        pass

    def all_gather_object(self, obj):
        return [obj]

    def close(self):
        pass


def _check_rank(rank, size):
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is out of range for a world of size {size}")


def _check_peer(peer, group, what):
    """send/recv: `peer` is another rank of `group` (as in PyTorch, a rank never sends to itself)."""
    _check_rank(peer, group.size)
    if peer == group.rank:
        raise ValueError(f"{what}: rank {peer} is this rank; send and recv pair two different ranks")


def _ranks(ranks):
    """'rank 2' or 'ranks 0, 1', for messages."""
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


# %%
#| export
def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise RuntimeError(f"the MPI backend needs mpi4py and an MPI library ({err}): "
                           f"pip install -e '.[dist]' (mpi4py + mpich)") from None
    return MPI


class MPIGroup:
    """Ranks as MPI processes; collectives are mpi4py's buffer calls on NumPy arrays."""

    backend = "mpi"

    def __init__(self, timeout=None):
        MPI = _import_mpi()
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        machine = self.comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks on this machine
        self.local_rank, self.local_size = machine.Get_rank(), machine.Get_size()
        machine.Free()
        self.timeout = _default_timeout() if timeout is None else timeout
        self._ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.MAX: MPI.MAX}

    def _work(self, request, what, finish=None, async_op=False):
        work = Work(request.Test, finish, f"{what} (rank {self.rank} of {self.size})", self.timeout)
        return work if async_op else work.wait()

    def all_reduce(self, array, op=ReduceOp.SUM, async_op=False):
        _check_op(op, array)
        _check_contiguous("all_reduce", array)
        host = _host_contiguous(array)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, host, self._ops[op])

        def finish():
            if op == ReduceOp.AVG and self.size > 1:
                host[...] /= self.size
            _copy_back(host, array)
        return self._work(request, "all_reduce", finish, async_op)

    def broadcast(self, array, src=0):
        _check_rank(src, self.size)
        _check_contiguous("broadcast", array)
        host = _host_contiguous(array)
        self._work(self.comm.Ibcast(host, root=src), "broadcast", lambda: _copy_back(host, array))

    def all_gather(self, out, array, async_op=False):
        _check_contiguous("all_gather", out, array)
        _check_not_aliased("all_gather", out, array)
        host_out, host_in = _host_buffer(out), _host_contiguous(array)
        return self._work(self.comm.Iallgather(host_in, host_out), "all_gather",
                          lambda: _copy_back(host_out, out), async_op)

    def reduce_scatter(self, out, array, op=ReduceOp.SUM):
        _check_op(op, array)
        _check_contiguous("reduce_scatter", out, array)
        _check_not_aliased("reduce_scatter", out, array)
        host_out, host_in = _host_buffer(out), _host_contiguous(array)

        def finish():
            if op == ReduceOp.AVG:
                host_out[...] /= self.size
            _copy_back(host_out, out)
        request = self.comm.Ireduce_scatter_block(host_in, host_out, self._ops[op])
        self._work(request, "reduce_scatter", finish)

    def send(self, array, dst):
        _check_peer(dst, self, "send")
        _check_contiguous("send", array)
        self._work(self.comm.Isend(_host_contiguous(array), dest=dst), f"send to rank {dst}")

    def recv(self, array, src):
        _check_peer(src, self, "recv")
        _check_contiguous("recv", array)
        host = _host_buffer(array)
        self._work(self.comm.Irecv(host, source=src), f"recv from rank {src}", lambda: _copy_back(host, array))

    def barrier(self):
        self._work(self.comm.Ibarrier(), "barrier")

    def all_gather_object(self, obj):
        """Small Python objects (shapes, optimizer state), pickled between this job's own ranks. Sent as
        bytes through the buffer calls, so that, like every collective, it waits at most the timeout."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        sizes = np.zeros(self.size, dtype=np.int64)
        self._work(self.comm.Iallgather(np.array([data.size], dtype=np.int64), sizes), "all_gather_object")
        out = np.empty(int(sizes.sum()), dtype=np.uint8)
        self._work(self.comm.Iallgatherv(data, [out, sizes.tolist()]), "all_gather_object")
        ends = np.cumsum(sizes)
        return [pickle.loads(out[end - size:end].tobytes()) for size, end in zip(sizes, ends)]

    def close(self):
        pass


def _host_contiguous(array):
    """A C-contiguous NumPy array holding `array`'s values (itself when it already is one)."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array
    return np.ascontiguousarray(to_host(array))  # a GPU array: copied (and counted) by the backend


def _host_buffer(array):
    """A C-contiguous NumPy array to receive into: `array` itself when it is one, else an empty one
    (an output's old values need not travel from the GPU)."""
    if isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array
    return np.empty(array.shape, dtype=array.dtype)


def _copy_back(host, array):
    if host is not array:
        array[...] = _xp_of(array).asarray(host).reshape(array.shape)


def _xp_of(array):
    """numpy or cupy: the module that owns `array`."""
    return namespace_of(array)


def _gpu_index(local_rank, device_count):
    """The GPU a rank drives, decided here only: local rank k takes GPU k % device_count.

    More ranks on a machine than GPUs wrap around and share GPUs: "auto" then moves their arrays
    through MPI, while "nccl" refuses to start (NCCL takes one GPU per rank)."""
    if device_count < 1:
        raise RuntimeError(f"local rank {local_rank} needs a GPU, but CuPy sees none on this machine")
    return local_rank % device_count


def _one_gpu_per_rank(host):
    """Whether NCCL can run: it refuses two ranks on one GPU ("Duplicate GPU detected")."""
    return getattr(host, "local_size", 1) <= cuda_device_count()


# %% [markdown]
# The NCCL group has the same interface. Its calls are enqueued on a CUDA
# stream of their own, so communication runs beside computation; before each
# call that stream waits for the work already queued on the current stream
# (the gradient it reads must exist), and `wait()` polls a CUDA event against
# the timeout (`comm.abort()` frees the GPU if it passes).

# %%
#| export
class NCCLGroup:
    """Ranks as GPUs: NCCL through `cupy.cuda.nccl`; MPI only to start (rank, size, the unique id)."""

    backend = "nccl"

    def __init__(self, timeout=None, host=None):
        import cupy
        from cupy.cuda import nccl
        if not nccl.available:
            raise RuntimeError("the nccl backend needs the NCCL library: pip install nvidia-nccl-cu12 "
                               "(or -cu13, to match your cupy wheel; `tito doctor` says which)")
        self.cupy, self.nccl = cupy, nccl
        if host is None:
            host = MPIGroup(timeout) if launched_world_size() > 1 else SingleProcessGroup(timeout)
        self.mpi = host  # starts the job (rank, size, the unique id) and runs barriers and objects
        self.rank, self.size, self.local_rank = self.mpi.rank, self.mpi.size, self.mpi.local_rank
        self.timeout = self.mpi.timeout
        if not _one_gpu_per_rank(host):
            raise RuntimeError(f"the nccl backend needs a GPU per rank, but {host.local_size} ranks share "
                               f"{cuda_device_count()} GPU(s) on this machine: start at most that many "
                               f"ranks per machine, or use backend 'auto' (GPU tensors then go through MPI)")
        self.device_index = _gpu_index(self.local_rank, cuda_device_count())
        get_xp(device(f"cuda:{self.device_index}"))  # make this rank's GPU current (through the backend's cache)
        uid = nccl.get_unique_id() if self.rank == 0 else None
        if self.size > 1:
            uid = self.mpi.comm.bcast(uid, root=0)
        self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._ops = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.AVG: nccl.NCCL_SUM, ReduceOp.MAX: nccl.NCCL_MAX}
        self._types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                       np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
                       np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8}

    def _dtype(self, array, what):
        if not isinstance(array, self.cupy.ndarray):
            raise TypeError(f"{what}: the nccl backend works on tensors on cuda, got a {type(array).__name__}: "
                            f"move the tensor with .to('cuda:{self.device_index}')")
        _check_contiguous(what, array)
        if array.dtype not in self._types:
            raise TypeError(f"NCCL cannot reduce {array.dtype}")
        return self._types[array.dtype]

    def _launch(self, what, call, finish=None, async_op=False):
        self.stream.wait_event(self.cupy.cuda.get_current_stream().record())  # inputs are ready
        call(self.stream.ptr)
        done = self.stream.record()

        def is_done():
            self.comm.check_async_error()
            return done.done

        work = Work(is_done, finish, f"{what} (rank {self.rank} of {self.size})", self.timeout)
        if async_op:
            return work
        try:
            return work.wait()
        except DistributedTimeoutError:
            self.comm.abort()
            raise

    def all_reduce(self, array, op=ReduceOp.SUM, async_op=False):
        _check_op(op, array)
        kind, ptr = self._dtype(array, "all_reduce"), array.data.ptr

        def finish():
            if op == ReduceOp.AVG:
                array[...] /= self.size
        return self._launch("all_reduce", lambda s: self.comm.allReduce(ptr, ptr, array.size, kind,
                                                                       self._ops[op], s), finish, async_op)

    def broadcast(self, array, src=0):
        _check_rank(src, self.size)
        kind, ptr = self._dtype(array, "broadcast"), array.data.ptr
        self._launch("broadcast", lambda s: self.comm.broadcast(ptr, ptr, array.size, kind, src, s))

    def all_gather(self, out, array, async_op=False):
        kind = self._dtype(array, "all_gather")
        self._dtype(out, "all_gather")
        _check_not_aliased("all_gather", out, array)
        return self._launch("all_gather", lambda s: self.comm.allGather(array.data.ptr, out.data.ptr, array.size,
                                                                       kind, s),
                            lambda: (array, out), async_op)  # both stay referenced until the gather is waited on

    def reduce_scatter(self, out, array, op=ReduceOp.SUM):
        _check_op(op, array)
        kind = self._dtype(array, "reduce_scatter")
        self._dtype(out, "reduce_scatter")
        _check_not_aliased("reduce_scatter", out, array)

        def finish():
            if op == ReduceOp.AVG:
                out[...] /= self.size
        self._launch("reduce_scatter", lambda s: self.comm.reduceScatter(array.data.ptr, out.data.ptr, out.size,
                                                                         kind, self._ops[op], s), finish)

    def send(self, array, dst):
        _check_peer(dst, self, "send")
        kind = self._dtype(array, "send")
        self._launch(f"send to rank {dst}", lambda s: self.comm.send(array.data.ptr, array.size, kind, dst, s))

    def recv(self, array, src):
        _check_peer(src, self, "recv")
        kind = self._dtype(array, "recv")
        self._launch(f"recv from rank {src}", lambda s: self.comm.recv(array.data.ptr, array.size, kind, src, s))

    def barrier(self):
        self.mpi.barrier()

    def all_gather_object(self, obj):
        return self.mpi.all_gather_object(obj)

    def close(self):
        self.stream.synchronize()
        self.comm.destroy()


# %% [markdown]
# ## Choosing the group
#
# `"auto"` chooses per tensor, as PyTorch's default does: CPU tensors go through
# MPI when `mpi4py` is installed (a single process otherwise), and cuda tensors
# through NCCL when CuPy sees a GPU and the NCCL library is there (its
# communicator is made at the first cuda collective), else through MPI with host
# copies. That choice is made by all ranks together, at the first cuda
# collective: NCCL only if every rank can use it, since a rank in NCCL and one in
# MPI would wait for each other for ever. Without a launcher
# a script is one process (world size 1), so one training script runs
# everywhere; `tito run --nproc N script.py` starts N ranks under `mpiexec`.

# %%
#| export
_state = threading.local()  # ThreadGroup ranks each see their own group
_world = {"group": None}


def _nccl_usable():
    try:
        import cupy
        from cupy.cuda import nccl
        return bool(nccl.available) and cupy.cuda.is_available()
    except Exception:  # cupy missing, or no driver: not usable, and not an error for "auto"
        return False


def _mpi_importable():
    try:
        import mpi4py  # noqa: F401  (the package only; MPI starts when mpi4py.MPI is imported)
        return True
    except ImportError:
        return False


class AutoGroup:
    """The "auto" group: host arrays through MPI (or one process), GPU arrays through NCCL when usable."""

    def __init__(self, timeout=None, host=None):
        if host is None:
            host = MPIGroup(timeout) if _mpi_importable() else SingleProcessGroup(timeout)
        self.host = host
        self.rank, self.size, self.local_rank = self.host.rank, self.host.size, self.host.local_rank
        self.timeout = self.host.timeout
        self._nccl, self._nccl_ok = None, None

    @property
    def backend(self):
        return f"cpu:{self.host.backend},cuda:nccl" if self._nccl is not None else self.host.backend

    def _for(self, array, collective=True):
        """The group that moves `array`: NCCL for a GPU array when usable, else the host group."""
        if namespace_of(array) is np:
            return self.host
        if self._nccl_ok is None:
            if not collective:  # a send or recv: two ranks, so no vote; MPI until a collective has decided
                return self.host
            # decided once, at the first GPU collective: every rank calls it, so every rank votes there
            self._nccl_ok = self._every_rank_can(_nccl_usable() and _one_gpu_per_rank(self.host))
        if not self._nccl_ok:  # GPU arrays through MPI, copied to the host and back
            return self.host
        if self._nccl is None:  # every rank reaches its first cuda collective together
            self._nccl = NCCLGroup(self.timeout, host=self.host)
        return self._nccl

    def _every_rank_can(self, can):
        """True when every rank can: NCCL for all ranks or for none. A rank in NCCL and another in MPI
        would each wait in a collective the other never calls. Collective: every rank votes, through
        the host group (an all-reduce with the group's deadline)."""
        if self.size == 1:
            return bool(can)
        votes = np.array([1 if can else 0], dtype=np.int64)
        self.host.all_reduce(votes, ReduceOp.SUM)
        return int(votes[0]) == self.size

    def all_reduce(self, array, op=ReduceOp.SUM, async_op=False):
        return self._for(array).all_reduce(array, op, async_op)

    def broadcast(self, array, src=0):
        self._for(array).broadcast(array, src)

    def all_gather(self, out, array, async_op=False):
        return self._for(array).all_gather(out, array, async_op)

    def reduce_scatter(self, out, array, op=ReduceOp.SUM):
        self._for(array).reduce_scatter(out, array, op)

    def send(self, array, dst):
        self._for(array, collective=False).send(array, dst)

    def recv(self, array, src):
        self._for(array, collective=False).recv(array, src)

    def barrier(self):
        self.host.barrier()

    def all_gather_object(self, obj):
        return self.host.all_gather_object(obj)

    def close(self):
        if self._nccl is not None:
            self._nccl.close()
        self.host.close()


def init_process_group(backend="auto", timeout=None):
    """Join the ranks the launcher started ("nccl", "mpi" or "auto"); world size 1 without a launcher.

    `timeout` (seconds, or a datetime.timedelta): how long any collective may wait before it raises
    DistributedTimeoutError (default 300 s, or TINYTORCH_DIST_TIMEOUT)."""
    if _world["group"] is not None:
        raise RuntimeError("init_process_group was already called; call destroy_process_group() first")
    if hasattr(timeout, "total_seconds"):
        timeout = timeout.total_seconds()
    launched = launched_world_size()
    if launched > 1 and (backend == "single" or backend == "auto" and not _mpi_importable()):
        raise RuntimeError(f"the launcher started {launched} ranks but mpi4py is not installed: "
                           f"pip install -e '.[dist]'")
    groups = {"auto": AutoGroup, "nccl": NCCLGroup, "mpi": MPIGroup, "single": SingleProcessGroup}
    if backend not in groups:
        raise ValueError(f"unknown backend {backend!r}: use 'nccl', 'mpi' or 'auto'")
    group = groups[backend](timeout)
    if group.size > 1:
        _abort_all_ranks_on_error(group)
    _world["group"] = group
    return group


def _abort_all_ranks_on_error(group):
    """An uncaught exception on this rank prints its traceback, then stops every rank (no hang).

    The rank exits (status 1, no MPI_Finalize) rather than calling MPI_Abort: the launcher then
    stops the other ranks as well, but only after it has read this rank's output to the end, whereas
    MPI_Abort tears the job down while the traceback may still sit unread in the pipe (it was lost
    that way under load)."""
    previous = sys.excepthook

    def excepthook(kind, value, tb):
        sys.stderr.write(f"[rank {group.rank}] " + "".join(traceback.format_exception(kind, value, tb)))
        sys.stderr.flush()
        if kind is not KeyboardInterrupt:
            sys.stdout.flush()
            os._exit(1)
        previous(kind, value, tb)

    sys.excepthook = excepthook


def _group(group=None):
    """The group to use: the one passed, this thread's (ThreadGroup), or the default one."""
    if group is not None:
        return group
    if getattr(_state, "group", None) is not None:
        return _state.group
    if _world["group"] is None:
        init_process_group("auto")  # a script that never called it still works
    return _world["group"]


def is_initialized():
    return _world["group"] is not None


def destroy_process_group():
    if _world["group"] is not None:
        _world["group"].close()
        _world["group"] = None


def get_rank(group=None):
    return _group(group).rank


def get_world_size(group=None):
    return _group(group).size


def get_local_rank(group=None):
    """This rank's index on its machine (`rank_device()` turns it into the GPU this rank drives)."""
    return _group(group).local_rank


def rank_device(group=None):
    """The GPU this rank drives, `cuda:k % G` for local rank k on a machine with G GPUs.

    With more ranks than GPUs, ranks share a GPU (backend "auto" then sends GPU tensors through MPI;
    "nccl" refuses). A RuntimeError where CuPy sees no GPU."""
    return device(f"cuda:{_gpu_index(_group(group).local_rank, cuda_device_count())}")


def get_backend(group=None):
    return _group(group).backend


def barrier(group=None):
    _group(group).barrier()


# %% [markdown]
# ## Collectives on tensors
#
# Thin wrappers: check the argument, hand the tensor's array to the group.

# %%
#| export
def _data(tensor, what):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what} expects a Tensor, got {type(tensor).__name__}")
    return tensor.data


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Combine `tensor` across ranks, in place; with async_op=True returns a Work to wait() on."""
    work = _group(group).all_reduce(_data(tensor, "all_reduce"), op, async_op=async_op)
    return work if async_op else None


def broadcast(tensor, src=0, group=None):
    """Copy rank `src`'s tensor into every rank's, in place."""
    _group(group).broadcast(_data(tensor, "broadcast"), src)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill tensor_list[k] with rank k's `tensor` (same shape on every rank); with async_op=True
    returns a Work, and tensor_list is filled when its wait() returns."""
    g = _group(group)
    array = _data(tensor, "all_gather")
    if len(tensor_list) != g.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} tensors for {g.size} ranks")
    for k, t in enumerate(tensor_list):  # as PyTorch: no broadcasting or casting into the outputs
        out_k = _data(t, "all_gather")
        if out_k.shape != array.shape or out_k.dtype != array.dtype:
            raise ValueError(f"all_gather: tensor_list[{k}] is {out_k.dtype} of shape {tuple(out_k.shape)}, "
                             f"the tensor {array.dtype} of shape {tuple(array.shape)}")
    out = _xp_of(array).empty((g.size,) + array.shape, dtype=array.dtype)
    gathering = g.all_gather(out, array, async_op=True)

    def fill():
        gathering.wait()
        for k, t in enumerate(tensor_list):
            _data(t, "all_gather")[...] = out[k]
    work = Work(finish=fill)
    if async_op:
        return work
    work.wait()


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None):
    """output on rank r = the sum (op) over ranks of their input_list[r]."""
    g = _group(group)
    if len(input_list) != g.size:
        raise ValueError(f"reduce_scatter: input_list has {len(input_list)} tensors for {g.size} ranks")
    out = _data(output, "reduce_scatter")
    inputs = [_data(t, "reduce_scatter") for t in input_list]
    dtypes = {str(a.dtype) for a in inputs} | {str(out.dtype)}
    if len(dtypes) > 1:  # as PyTorch: no casting
        raise ValueError(f"reduce_scatter: the inputs and the output must have one dtype, got {sorted(dtypes)}")
    stacked = _xp_of(out).stack(inputs)
    if stacked.shape[1:] != out.shape:
        raise ValueError(f"reduce_scatter: inputs of shape {tuple(stacked.shape[1:])} for an output "
                         f"of shape {tuple(out.shape)}")
    g.reduce_scatter(out, stacked, op)


def send(tensor, dst, group=None):
    _group(group).send(_data(tensor, "send"), dst)


def recv(tensor, src, group=None):
    """Receive into `tensor` (its shape and dtype must match what `src` sends)."""
    _group(group).recv(_data(tensor, "recv"), src)


def all_gather_object(object_list, obj, group=None):
    """object_list[k] = rank k's `obj` (pickled: for small things such as shapes or state dicts)."""
    object_list[:] = _group(group).all_gather_object(obj)


# %% [markdown]
# ## `ThreadGroup`: n ranks in one process
#
# For lessons and tests: n threads, one rank each; `send`/`recv` through queues
# and the collectives through a shared table and a barrier. Not for speed
# (Python threads share one interpreter lock).

# %%
#| export
class ThreadGroup:
    """n ranks as threads of this process: `ThreadGroup.run(n, fn)` returns [fn() on rank 0, ...]."""

    backend = "threads"

    def __init__(self, rank, size, shared, timeout):
        self.rank, self.size, self.local_rank = rank, size, rank
        self._shared, self.timeout = shared, timeout

    @classmethod
    def run(cls, n, fn, *args, timeout=30.0):
        shared = {"mailboxes": {(a, b): queue.Queue() for a in range(n) for b in range(n)},
                  "barrier": threading.Barrier(n), "slots": [None] * n}
        results, errors = [None] * n, [None] * n

        def rank_main(rank):
            _state.group = cls(rank, n, shared, timeout)
            try:
                results[rank] = fn(*args)
            except BaseException as err:
                errors[rank] = err
                shared["barrier"].abort()  # wakes the other ranks: they stop instead of waiting
            finally:
                _state.group = None

        threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 5)
        for rank, err in enumerate(errors):
            if err is not None and not isinstance(err, threading.BrokenBarrierError):
                if hasattr(err, "add_note"):  # Python 3.11+
                    err.add_note(f"(raised on rank {rank} of {n} in ThreadGroup.run)")
                raise err  # the rank's own exception: a failed assert reads as itself
        # No rank raised on its own, yet some have no result: a collective's barrier timed out on them, or they
        # never returned. Fail loudly instead of returning None for them.
        stuck = [r for r in range(n) if errors[r] is not None]
        running = [r for r in range(n) if threads[r].is_alive()]
        if stuck or running:
            done = [r for r in range(n) if r not in stuck + running]
            why = [f"{_ranks(stuck)} waited more than {timeout:g} s in a collective"] if stuck else []
            why += [f"{_ranks(running)} had not returned after {timeout + 5:g} s"] if running else []
            why += [f"{_ranks(done)} returned without joining it"] if stuck and done else []
            raise DistributedTimeoutError(f"ThreadGroup.run: {'; '.join(why)}. Every rank must call the same "
                                          f"collectives, in the same order")
        return results

    def send(self, array, dst):
        _check_peer(dst, self, "send")
        _check_contiguous("send", array)
        self._shared["mailboxes"][(self.rank, dst)].put(array.copy())

    def recv(self, array, src):
        _check_peer(src, self, "recv")
        _check_contiguous("recv", array)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                received = self._shared["mailboxes"][(src, self.rank)].get(timeout=0.02)
                break
            except queue.Empty:
                if self._shared["barrier"].broken:  # another rank failed: stop waiting
                    raise threading.BrokenBarrierError from None
                if time.monotonic() > deadline:
                    raise DistributedTimeoutError(f"recv from rank {src} waited more than {self.timeout:g} s") from None
        if received.shape != array.shape or received.dtype != array.dtype:
            raise ValueError(f"recv: rank {src} sent {received.dtype} of shape {received.shape}, this buffer is "
                             f"{array.dtype} of shape {array.shape}")
        array[...] = received

    def barrier(self):
        self._shared["barrier"].wait(self.timeout)

    def _everyone(self, value):
        """Every rank's `value`, in rank order. Collective: every rank must call it, in the same order."""
        slots = self._shared["slots"]
        slots[self.rank] = value
        self.barrier()
        values = list(slots)
        self.barrier()  # nobody overwrites a slot before everyone has read it
        return values

    def _everyones_array(self, array, what):
        """Every rank's copy of `array`. The ranks must pass one shape and dtype: a clear error on every
        rank otherwise, not a NumPy broadcast or cast (MPI and NCCL do not check it: they fail or hang)."""
        values = self._everyone(array.copy())
        if any(v.shape != values[0].shape or v.dtype != values[0].dtype for v in values):
            ranks = ", ".join(f"rank {r}: {v.dtype} {v.shape}" for r, v in enumerate(values))
            raise ValueError(f"{what}: the ranks passed different shapes or dtypes ({ranks}); "
                             f"every rank must pass the same")
        return values

    def _reduce(self, array, op, what):
        """The ranks' `array`s combined by `op`, a new array (the same on every rank)."""
        _check_op(op, array)
        values = self._everyones_array(array, what)
        total = np.maximum.reduce(values) if op == ReduceOp.MAX else np.sum(values, axis=0)
        return total / self.size if op == ReduceOp.AVG else total

    def all_reduce(self, array, op=ReduceOp.SUM, async_op=False):
        _check_contiguous("all_reduce", array)
        array[...] = self._reduce(array, op, "all_reduce")
        return _DONE if async_op else True

    def broadcast(self, array, src=0):
        _check_rank(src, self.size)
        _check_contiguous("broadcast", array)
        array[...] = self._everyones_array(array, "broadcast")[src]

    def all_gather(self, out, array, async_op=False):
        _check_contiguous("all_gather", out, array)
        _check_not_aliased("all_gather", out, array)
        if out.size != self.size * array.size or out.dtype != array.dtype:
            raise ValueError(f"all_gather: {self.size} ranks' {array.dtype} arrays of {array.size} values need an "
                             f"output of {self.size * array.size} {array.dtype} values, got {out.size} {out.dtype}")
        rows = out.reshape(self.size, array.size)  # a view: out is contiguous
        for row, value in zip(rows, self._everyones_array(array, "all_gather")):
            row[...] = value.reshape(-1)  # each rank's values, copied once, straight into the output
        return _DONE

    def reduce_scatter(self, out, array, op=ReduceOp.SUM):
        _check_contiguous("reduce_scatter", out, array)
        _check_not_aliased("reduce_scatter", out, array)
        total = self._reduce(array, op, "reduce_scatter")
        out[...] = total.reshape(self.size, -1)[self.rank].reshape(out.shape)

    def all_gather_object(self, obj):
        return self._everyone(obj)

    def close(self):
        pass


# %% [markdown]
# ## What `DistributedDataParallel` inherits
#
# The lesson writes DDP's bucket logic: what happens when a gradient is ready.
# Around it sit checks and conveniences, here in a base class:
#
# - construction: every rank must have the same parameters (names, shapes,
#   dtypes), and rank 0's values are broadcast so that all copies start equal
#   (its buffers too, unless `broadcast_buffers=False`; at construction only,
#   where PyTorch broadcasts them again before each forward: that matters for
#   a buffer that forward changes, such as BatchNorm's statistics, and no
#   TinyTorch layer has one);
# - the "gradient ready" signal: during `forward`, each parameter is read
#   through an identity op whose backward runs once that parameter's whole
#   gradient is known, and calls `self._grad_ready(param, g)` (the lesson's);
#   forwards before one backward share these identities, so that each
#   parameter is ready once per backward, and a gradient that comes after its
#   pass was averaged (a second backward through one graph) is a clear error;
# - a clear error when the last backward left some parameter without a
#   gradient (its bucket would never be reduced);
# - `no_sync()`: as in PyTorch, the forward decides whether its pass
#   averages, so `_grad_ready` sees `self.require_backward_grad_sync` as it
#   was at the pass's forward, even when the backward runs outside;
# - `state_dict()` without a `module.` prefix, and attribute access that
#   reaches the wrapped model (`ddp.config`).
#
# The first check and the attribute access live in `_ModelWrapper`, which
# module 13's `FullyShardedDataParallel` wraps its model with too.

# %%
#| export distributed.ddp
"""DistributedDataParallel: gradients averaged across ranks in buckets, during backward."""
import contextlib

from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import from_op
from tinytorch.distributed.process_group import ReduceOp, _group
from tinytorch.nn import Module


def _trainable_slots(module):
    """(owner module, attribute, Parameter) for every place a trainable parameter is read from."""
    return [(m, name, p) for m in module.modules() for name, p in m._parameters.items()
            if p is not None and p.requires_grad]


class _ModelWrapper(Module):
    """What DistributedDataParallel and module 13's FullyShardedDataParallel share: the wrapped model
    (its parameters' names, the check that every rank built the same one, rank 0's values everywhere)
    and attribute access that reaches it."""

    def _wrap(self, module, process_group, broadcast_buffers=True):
        self.module = module
        self._pg = _group(process_group)
        self._names = {}
        for name, p in module.named_parameters():
            self._names.setdefault(id(p), name)
        self._check_same_shapes()
        for t in list(module.parameters()) + (list(module.buffers()) if broadcast_buffers else []):
            # every copy starts from rank 0's values; a strided array (a weight made from a transpose) travels
            # as a contiguous copy, since collectives take contiguous arrays only
            values = t.data if t.data.flags.c_contiguous else t.data.copy()
            self._pg.broadcast(values, 0)
            if values is not t.data:
                t.data[...] = values

    def _check_same_shapes(self):
        mine = [(name, tuple(p.shape), str(p.dtype)) for name, p in self.module.named_parameters()]
        for rank, theirs in enumerate(self._pg.all_gather_object(mine)):
            if theirs != mine:
                diff = next((f"{a} vs {b}" for a, b in zip(mine, theirs) if a != b),
                            f"{len(mine)} vs {len(theirs)} parameters")
                raise ValueError(f"{type(self).__name__}: rank {self._pg.rank} and rank {rank} have different "
                                 f"parameters ({diff}); every rank must build the same model")

    def __getattr__(self, name):
        modules = self.__dict__.get("_modules", {})
        if "module" in modules and not name.startswith("_"):
            return getattr(modules["module"], name)  # ddp.config, ddp.generate(...) reach the model
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class _DataParallelBase(_ModelWrapper):
    """Checks, the gradient-ready signal and conveniences of DistributedDataParallel (see the lesson)."""

    def __init__(self, module, broadcast_buffers=True, process_group=None):
        super().__init__()
        self._wrap(module, process_group, broadcast_buffers)
        self._slots = _trainable_slots(module)  # forward shadows each of them
        if not self._slots:
            raise RuntimeError(f"{type(self).__name__}: the model has no parameter that requires grad, so there "
                               f"is no gradient to average; use the model itself")
        self._signals, self._ready = None, set()  # this pass's signals; the parameters they have reported
        self._syncs = [False]  # whether this pass averages: one cell per pass, shared by its signals
        self.require_backward_grad_sync = True

    def forward(self, *args, **kwargs):
        if not is_grad_enabled():
            return self.module(*args, **kwargs)
        signals = self._signals_of_this_pass()
        try:
            for m, name, p in self._slots:
                object.__setattr__(m, name, signals[id(p)])  # shadows the Parameter for this call only
            return self.module(*args, **kwargs)
        finally:
            for m, name, p in self._slots:
                object.__setattr__(m, name, p)

    def _signals_of_this_pass(self):
        """One ready signal per parameter and pass. A second forward before backward (a siamese loss
        f(ddp(a)) + f(ddp(b))) reads the same signals: the engine sums both uses' gradients into each,
        so every parameter is still ready once, with its whole gradient, as the buckets count."""
        again = (self._signals is not None and not self._ready  # no backward since the last forward
                 and all(self._signals[id(p)].data is p.data for _, _, p in self._slots))  # nor new weights
        if not again:
            self._check_last_backward()
            self._start_backward()
            self._signals, self._ready, self._syncs = {}, set(), [False]
            for _, _, p in self._slots:
                if id(p) not in self._signals:  # a tied weight gets one signal, read from both places
                    self._signals[id(p)] = self._ready_signal(p)
        # As in PyTorch, the forward decides: a pass averages when one of its forwards ran outside no_sync(),
        # wherever its backward runs
        self._syncs[0] = self._syncs[0] or self.require_backward_grad_sync
        return self._signals

    def _ready_signal(self, param):
        """Identity on `param`; the engine calls its backward once param's whole gradient of this pass is known."""
        signals, syncs = self._signals, self._syncs

        def grad_ready_backward(g):
            if syncs[0] and (signals is not self._signals or id(param) in self._ready):
                raise RuntimeError(
                    f"DistributedDataParallel: {self._names.get(id(param), '?')} got a gradient after this "
                    f"pass's gradients were averaged (a backward through a graph already used, retain_graph=True, "
                    f"or through an output of a forward from before the last backward). Gradients are averaged "
                    f"once per backward: run the forwards of one loss, then one backward; to accumulate over "
                    f"several backwards, run all but the last inside no_sync()")
            self._ready.add(id(param))
            now, self.require_backward_grad_sync = self.require_backward_grad_sync, syncs[0]  # the forward's
            try:
                self._grad_ready(param, g)
            finally:
                self.require_backward_grad_sync = now
            return (None,)  # _grad_ready stored the gradient itself
        return from_op(param.data, param._device, (param,), grad_ready_backward)

    def _check_last_backward(self):
        started = any(b.pending < len(b.params) for b in self.buckets)
        if self._syncs[0] and started and self._next_bucket < len(self.buckets):  # the last pass averaged
            frozen = [self._names.get(id(p), "?") for b in self.buckets for p in b.params if not p.requires_grad]
            if frozen:  # a frozen parameter never gets a gradient, so its bucket never completes
                raise RuntimeError(f"DistributedDataParallel: the buckets hold parameters that do not require grad "
                                   f"({frozen[:8]}), so the buckets from theirs on were never averaged. Bucket only "
                                   f"the parameters that require grad, and freeze layers before wrapping the model")
            missing = [self._names.get(id(p), "?") for b in self.buckets[self._next_bucket:]
                       for p in b.params][:8]
            raise RuntimeError(f"DistributedDataParallel: the last backward gave no gradient to some parameters "
                               f"(among {missing}), so their gradients were never averaged. Every parameter that "
                               f"requires grad must take part in the loss; freeze unused ones (requires_grad=False)")

    @contextlib.contextmanager
    def no_sync(self):
        """Forwards inside, and their backwards wherever they run, only accumulate gradients locally; the next
        pass whose forward runs outside averages the sum (PyTorch's rule: put the forward inside)."""
        previous, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        return self.module.load_state_dict(state_dict, strict)


# %% [markdown]
# ## What `ZeroRedundancyOptimizer` inherits
#
# Checkpoints. Each rank holds the optimizer state of its share only, but a
# checkpoint should not depend on the world size: `state_dict()` (collective:
# every rank calls it) gathers every rank's share into the plain optimizer's
# format, and `load_state_dict` keeps the part this rank owns. So a checkpoint
# moves between ZeRO and a plain `AdamW`, and between world sizes.

# %%
#| export distributed.zero
"""ZeroRedundancyOptimizer (ZeRO stage 1): each rank keeps and steps the optimizer state of its share."""
from tinytorch.optim import Optimizer


class _ShardedCheckpoints(Optimizer):
    """state_dict/load_state_dict of ZeroRedundancyOptimizer: the whole state, in the wrapped optimizer's format.

    Uses the lesson's attributes: self._all (every parameter), self._owner (rank of each),
    self._local_groups (indices of the param_groups this rank has a share of), self.optim."""

    def _mine(self):
        index = {id(p): i for i, p in enumerate(self._all)}
        mine = [p for i in self._local_groups for p in self.param_groups[i]["params"]
                if self._owner[index[id(p)]] == self._pg.rank]
        return index, mine

    def state_dict(self):
        full = super().state_dict()  # param_groups with global indices; state is empty here
        local = self.optim.state_dict()["state"] if self.optim is not None else {}
        index, mine = self._mine()
        ours = {index[id(mine[int(k)])]: v for k, v in local.items()}
        for part in self._pg.all_gather_object(ours):
            full["state"].update(part)
        full["state"] = dict(sorted(full["state"].items()))
        return full

    def load_state_dict(self, state_dict):
        super().load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        if self.optim is None:
            return
        index, mine = self._mine()
        state = {k: state_dict["state"][index[id(p)]] for k, p in enumerate(mine)
                 if index[id(p)] in state_dict["state"]}
        groups, start = [], 0
        for i, local in zip(self._local_groups, self.optim.param_groups):
            settings = {k: v for k, v in self.param_groups[i].items() if k != "params"}
            groups.append(dict(settings, params=list(range(start, start + len(local["params"])))))
            start += len(local["params"])
        self.optim.load_state_dict({"state": state, "param_groups": groups})
