"""Module 11 on edge inputs, against torch.distributed's semantics: send/recv to the own rank, collectives whose
ranks or outputs disagree in shape or dtype (a clear error, never a silent broadcast or cast, never a hang),
non-contiguous tensors and aliased buffers (refused in every group), and DDP's no_sync(), decided by the forward
as in PyTorch. Multi-rank cases run as ThreadGroup ranks, with a timeout."""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.nn import Linear, Module


def test_send_and_recv_to_the_own_rank_are_errors():
    """PyTorch: "Invalid destination rank: ... should not be the same as the rank of the current process".
    A recv from itself used to wait for the timeout; a send to itself went through."""
    def rank_main():
        rank = dist.get_rank()
        for call in (dist.send, dist.recv):
            with pytest.raises(ValueError, match="is this rank"):
                call(tt.ones(1), rank)
        return True

    assert dist.ThreadGroup.run(2, rank_main, timeout=5.0) == [True, True]


def test_recv_into_a_buffer_of_another_dtype_is_an_error():
    def rank_main():
        if dist.get_rank() == 0:
            dist.send(tt.tensor([1.5]), 1)
            return None
        with pytest.raises(ValueError, match="float32"):
            dist.recv(tt.zeros(1, dtype=tt.int64), 0)  # was silently cast to [1]
        return True

    assert dist.ThreadGroup.run(2, rank_main, timeout=5.0) == [None, True]


def _broadcast_of_other_shapes():
    t = tt.full((1,), 5.0) if dist.get_rank() == 0 else tt.zeros(3)
    dist.broadcast(t, 0)  # was [5, 5, 5] on rank 1: rank 0's one value, broadcast by NumPy


def _all_reduce_of_other_dtypes():
    dist.all_reduce(tt.ones(2, dtype=tt.float32 if dist.get_rank() == 0 else tt.float64))  # was summed, then cast


def _all_gather_of_other_shapes():
    t = tt.ones(dist.get_rank() + 1)
    dist.all_gather([tt.zeros(t.shape) for _ in range(2)], t)


@pytest.mark.parametrize("out", [dict(shape=(3,), dtype=tt.float32), dict(shape=(1,), dtype=tt.int64)])
def test_all_gather_into_outputs_of_another_shape_or_dtype_is_an_error(device, out):
    """PyTorch: "invalid tensor size" / "Invalid usage of tensors with different dtypes"; here the tensor's
    value was broadcast into the bigger output, or cast into the int one."""
    with pytest.raises(ValueError, match=r"tensor_list\[0\]"):
        dist.all_gather([tt.zeros(*out["shape"], dtype=out["dtype"], device=device)], tt.tensor([1.5], device=device))


def test_reduce_scatter_with_another_output_dtype_is_an_error(device):
    output = tt.zeros(1, dtype=tt.int64, device=device)
    with pytest.raises(ValueError, match="one dtype"):
        dist.reduce_scatter(output, [tt.tensor([1.5], device=device)])  # was cast to [1]
    with pytest.raises(ValueError, match="one dtype"):
        dist.reduce_scatter(tt.zeros(1, device=device), [tt.tensor([1.0], dtype=tt.float64, device=device)])


@pytest.mark.parametrize("forward_inside", [False, True])
def test_ddp_no_sync_is_decided_by_the_forward(forward_inside):
    """PyTorch: "The forward pass should be included inside the context manager, or else gradients will still be
    synchronized." A forward outside with its backward inside averages; a forward inside with its backward
    outside only accumulates locally."""
    def rank_main():
        rank = dist.get_rank()
        tt.manual_seed(1)
        net = Linear(2, 1)
        ddp = dist.DistributedDataParallel(net)
        if forward_inside:
            with ddp.no_sync():
                loss = ddp(tt.ones(1, 2) * (rank + 1)).sum()
            loss.backward()
        else:
            loss = ddp(tt.ones(1, 2) * (rank + 1)).sum()
            with ddp.no_sync():
                loss.backward()
        return net.weight.grad.tolist()

    got = dist.ThreadGroup.run(2, rank_main, timeout=10.0)
    assert got == ([[[1.0, 1.0]], [[2.0, 2.0]]] if forward_inside else [[[1.5, 1.5]]] * 2)


class _OneHeadUsed(Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = Linear(3, 2), Linear(3, 2)

    def forward(self, x):
        return self.used(x)


def test_ddp_pass_with_an_unused_parameter_then_a_no_sync_forward_is_an_error(device):
    """PyTorch raises "Expected to have finished reduction in the prior iteration" at the no_sync forward; the
    unaveraged buckets were silently forgotten."""
    ddp = dist.DistributedDataParallel(_OneHeadUsed().to(device))
    x = tt.randn(4, 3, device=device)
    ddp(x).sum().backward()
    with pytest.raises(RuntimeError, match="unused"):
        with ddp.no_sync():
            ddp(x)


def test_ddp_of_a_model_without_trainable_parameters_is_an_error(device):
    """PyTorch: "DistributedDataParallel is not needed when a module doesn't have any parameter that requires a
    gradient"."""
    net = Linear(2, 1).to(device)
    net.requires_grad_(False)
    with pytest.raises(RuntimeError, match="no parameter that requires grad"):
        dist.DistributedDataParallel(net)



# Each collective's errors name it; its tensors are contiguous; a group's gather or scatter output does not share
# memory with its input. The same rules in every group: thread ranks, one process, and MPI (here at world size 1).

def _reduce_scatter_of_other_shapes():
    n = dist.get_rank() + 1
    dist.reduce_scatter(tt.zeros(n), [tt.ones(n), tt.ones(n)])  # consistent on each rank, not between them


@pytest.mark.parametrize("name, collective", [("broadcast", _broadcast_of_other_shapes),
                                              ("all_reduce", _all_reduce_of_other_dtypes),
                                              ("all_gather", _all_gather_of_other_shapes),
                                              ("reduce_scatter", _reduce_scatter_of_other_shapes)])
def test_thread_group_mismatch_error_names_its_own_collective(name, collective):
    """reduce_scatter's said "all_reduce: the ranks passed different shapes", the collective it is built on."""
    with pytest.raises(ValueError, match=rf"^{name}: the ranks passed different shapes or dtypes \(rank 0: .*, rank 1: "):
        dist.ThreadGroup.run(2, collective, timeout=5.0)


class _ArraysAsCupy:
    ndarray = np.ndarray


def _nccl_checks_only():
    """An NCCLGroup of world size 1 that takes NumPy arrays for CuPy ones and has no communicator: enough to run
    its argument checks on a machine without a GPU (a call that passes them fails at the launch)."""
    group = object.__new__(dist.process_group.NCCLGroup)
    group.cupy, group.rank, group.size, group.device_index = _ArraysAsCupy, 0, 1, 0
    group._types = {np.dtype(np.float32): 0, np.dtype(np.float64): 1}
    return group


def _groups():
    """The groups the checks run in: thread ranks (made inside ThreadGroup.run), and at world size 1 one
    process, NCCL's checks, and MPI when mpi4py is installed."""
    kinds = ["threads", "single", "nccl-checks"]
    try:
        import mpi4py  # noqa: F401
        kinds.append("mpi")
    except ImportError:
        pass
    return kinds


def _on(kind, fn):
    """fn(group), on each of 2 thread ranks or on a world-size-1 group of that kind."""
    if kind == "threads":
        return dist.ThreadGroup.run(2, lambda: fn(dist.process_group._group(None)), timeout=5.0)
    make = {"mpi": dist.process_group.MPIGroup, "single": dist.process_group.SingleProcessGroup,
            "nccl-checks": _nccl_checks_only}[kind]
    return [fn(make())]


@pytest.mark.parametrize("kind", _groups())
@pytest.mark.parametrize("name", ["all_gather", "reduce_scatter"])
def test_group_refuses_an_output_that_shares_memory_with_the_input(kind, name):
    """MPI refuses aliased buffers (an obscure MPI.Exception, "Buffers must not be aliased"); thread ranks and one
    process accepted them. Now every group says so, naming the collective."""
    def fn(group):
        out = np.zeros((group.size, 3), np.float32)
        with pytest.raises(ValueError, match=rf"^{name}: the array sent shares memory with the output"):
            if name == "all_gather":
                group.all_gather(out, out[group.rank])
            else:
                group.reduce_scatter(out[group.rank], out.reshape(-1))
        return True

    assert all(_on(kind, fn))


_STRIDED = {  # a collective on a strided view; each runs on every rank of the group
    "all_reduce": lambda g: dist.all_reduce(tt.tensor(np.arange(6.0))[::2], group=g),
    "broadcast": lambda g: dist.broadcast(tt.tensor(np.arange(6.0).reshape(2, 3)).T, 0, group=g),
    "all_gather": lambda g: dist.all_gather([tt.zeros(3) for _ in range(g.size)], tt.ones(6)[::2], group=g),
    "reduce_scatter": lambda g: dist.reduce_scatter(tt.zeros(6)[::2], [tt.ones(3)] * g.size, group=g),
    "all_gather(out, array)": lambda g: g.all_gather(np.zeros((3, g.size * 2))[:, 0], np.zeros(3)),
}


@pytest.mark.parametrize("kind", _groups())
@pytest.mark.parametrize("case", sorted(_STRIDED))
def test_collectives_refuse_non_contiguous_tensors(kind, case):
    """PyTorch's c10d: ValueError "Tensors must be contiguous". A strided view went through unchecked: correct on
    thread ranks and MPI's host arrays, but a collective that moves a copy writes its result into the copy."""
    name = case.split("(")[0]

    def fn(group):
        with pytest.raises(ValueError, match=rf"^{name}: tensors must be contiguous"):
            _STRIDED[case](group)
        return True

    assert all(_on(kind, fn))


def test_send_and_recv_refuse_non_contiguous_tensors():
    def rank_main():
        other = 1 - dist.get_rank()
        with pytest.raises(ValueError, match="^send: tensors must be contiguous"):
            dist.send(tt.tensor(np.arange(4.0))[::2], other)
        with pytest.raises(ValueError, match="^recv: tensors must be contiguous"):
            dist.recv(tt.zeros(4)[::2], other)
        return True

    assert dist.ThreadGroup.run(2, rank_main, timeout=5.0) == [True, True]


def test_ddp_and_zero_take_a_strided_parameter():
    """The wrappers never hand a collective a strided array of their own: a weight made from a transpose is
    broadcast from rank 0 (through a contiguous copy), averaged and gathered like any other."""
    def rank_main():
        rank = dist.get_rank()
        net = Linear(3, 2)
        net.weight = tt.nn.Parameter(tt.tensor(np.arange(6.0, dtype=np.float32).reshape(3, 2).T * (rank + 1)))
        assert not net.weight.data.flags.c_contiguous
        ddp = dist.DistributedDataParallel(net)
        start = net.weight.tolist()
        opt = dist.ZeroRedundancyOptimizer(net.parameters(), lr=0.1)
        ddp(tt.ones(1, 3) * (rank + 1)).sum().backward()
        grad = net.weight.grad.tolist()
        opt.step()
        return start, grad, net.weight.tolist()

    (start0, grad0, after0), (start1, grad1, after1) = dist.ThreadGroup.run(2, rank_main, timeout=10.0)
    assert start0 == start1 == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]], "rank 0's weight everywhere"
    assert grad0 == grad1 == [[1.5] * 3] * 2, "the gradients of inputs 1 and 2, averaged"
    assert after0 == after1, "ZeRO's all-gather leaves one weight on every rank"


def test_thread_group_all_gather_copies_each_ranks_values_once():
    """Thread ranks' all_gather stacked the ranks' copies into a new array, then copied that into the output: a
    second pass over the data and a temporary of the whole output on every rank. It now copies straight into
    the output, so a gather takes no memory beyond each rank's copy of its own input."""
    import tracemalloc

    n, values = 2, 1 << 17  # 1 MiB of float64 per rank
    inputs = [np.full(values, float(r)) for r in range(n)]
    outs = [np.empty((n, values)) for _ in range(n)]

    def rank_main():
        rank = dist.get_rank()
        dist.process_group._group(None).all_gather(outs[rank], inputs[rank])

    tracemalloc.start()
    try:
        dist.ThreadGroup.run(n, rank_main, timeout=10.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for out in outs:
        assert out[:, 0].tolist() == [0.0, 1.0] and out[1].min() == 1.0
    copies = n * inputs[0].nbytes
    assert peak < copies + inputs[0].nbytes, f"peak {peak / 2**20:.2f} MiB for {copies / 2**20:.0f} MiB of copies"
