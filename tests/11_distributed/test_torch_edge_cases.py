"""Module 11 on edge inputs, against torch.distributed's semantics: send/recv to the own rank, collectives whose
ranks or outputs disagree in shape or dtype (a clear error, never a silent broadcast or cast, never a hang), and
DDP's no_sync(), decided by the forward as in PyTorch. Multi-rank cases run as ThreadGroup ranks, with a timeout."""

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


@pytest.mark.parametrize("collective", [_broadcast_of_other_shapes, _all_reduce_of_other_dtypes,
                                        _all_gather_of_other_shapes])
def test_thread_group_collective_whose_ranks_disagree_is_a_clear_error(collective):
    with pytest.raises(ValueError, match=r"ranks passed different shapes or dtypes \(rank 0: .*, rank 1: "):
        dist.ThreadGroup.run(2, collective, timeout=5.0)


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

