"""Round-5 student mistakes in module 11 that the older tests let through: each test fails on one of them."""

import numpy as np

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed.ring import ring_all_reduce
from tinytorch.nn import Linear, Sequential
from tinytorch.optim import AdamW


def test_ring_all_reduce_writes_into_a_non_contiguous_tensor():
    """reshape(-1) of a transposed array is a copy: the sums must be written back into the tensor."""
    def rank_main():
        t = tt.tensor(np.arange(12.0).reshape(3, 4) * (dist.get_rank() + 1)).T
        assert ring_all_reduce(t) is t
        return t.numpy()

    for got in dist.ThreadGroup.run(3, rank_main):
        np.testing.assert_array_equal(got, np.arange(12.0).reshape(3, 4).T * 6)


def test_sampler_order_is_the_permutation_of_the_seed_epoch_pair_in_one_generator():
    sampler = dist.DistributedSampler(range(10), num_replicas=2, rank=1, seed=3)
    generator = sampler.generator
    sampler.set_epoch(2)
    assert sampler.generator is generator  # reset in place: a Trainer saves and restores this object
    assert list(sampler) == np.random.default_rng([3, 2]).permutation(10)[1::2].tolist()  # not seed + epoch


def test_assign_buckets_counts_bytes_and_takes_any_iterable():
    f64 = [tt.zeros(10, dtype=tt.float64) for _ in range(3)]  # 80 bytes each
    assert [len(b) for b in dist.assign_buckets((p for p in f64), cap_bytes=170)] == [2, 1]


def test_ddp_averages_a_gradient_the_user_replaced():
    """A .grad set by hand lives outside the bucket: pack() must bring it in before the all-reduce."""
    tt.manual_seed(5)
    nets = [Sequential(Linear(3, 4), Linear(4, 2)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    x = tt.randn(4, 3)

    def rank_main():
        rank = dist.get_rank()
        ddp = dist.DistributedDataParallel(nets[rank], bucket_cap_mb=64 / 2 ** 20)
        nets[rank][0].weight.grad = tt.full((4, 3), 10.0 * rank)  # the user's own tensor
        (ddp(x[2 * rank:2 * rank + 2]) ** 2).sum().backward()
        return nets[rank][0].weight.grad.numpy()

    got = dist.ThreadGroup.run(2, rank_main)
    np.testing.assert_array_equal(got[0], got[1])  # averaged: the same on both ranks


def test_partition_counts_values_not_rows():
    shapes = [(1, 5), (2, 50), (60,), (5, 10)]  # 5, 100, 60, 50 values
    assert list(dist.partition_parameters([tt.zeros(*s) for s in shapes], 2)) == [0, 0, 1, 1]


def test_zero_copies_every_group_setting_before_stepping():
    """A schedule may change weight_decay (or betas), not only lr: step() copies all of them."""
    inits = [np.random.default_rng(i).standard_normal(s).astype(np.float32) for i, s in enumerate([(4, 3), (5,)])]
    grad = [np.ones((4, 3), np.float32), np.ones(5, np.float32)]

    def train(make):
        params = [tt.tensor(v, requires_grad=True) for v in inits]
        opt = make(params)
        opt.param_groups[0]["weight_decay"] = 0.5
        for _ in range(2):
            for p, g in zip(params, grad):
                p.grad = tt.tensor(g)
            opt.step()
        return [p.numpy() for p in params]

    want = train(lambda ps: AdamW(ps, lr=0.1, weight_decay=0.0))
    for got in dist.ThreadGroup.run(2, lambda: train(lambda ps: dist.ZeroRedundancyOptimizer(ps, lr=0.1))):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=1e-6)
