"""A second backward through a retained graph under FSDP adds the gradient again, as without FSDP."""

from functools import partial

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed import ThreadGroup
from tinytorch.distributed.fsdp import FullyShardedDataParallel
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy

CONFIG = dict(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.0, bias=False)
TOKENS = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (4, CONFIG["block_size"] + 1))
tt.manual_seed(0)
INIT = {k: v.numpy().copy() for k, v in GPT(GPTConfig(**CONFIG)).state_dict().items()}  # ranks' threads share the RNG


def model():
    gpt = GPT(GPTConfig(**CONFIG))
    gpt.load_state_dict(INIT)
    return gpt


def loss_of(model, tokens):
    logits, _ = model(tt.tensor(tokens[:, :-1], dtype=tt.int64))
    return cross_entropy(logits.view(-1, logits.shape[-1]), tt.tensor(tokens[:, 1:], dtype=tt.int64).view(-1))


def shard_grads(backwards, zero_stage):
    """Each unit's shard gradient after `backwards` backward passes through one forward's graph."""
    gpt = model()
    net = FullyShardedDataParallel(gpt, units=gpt.transformer.h, zero_stage=zero_stage)
    part = len(TOKENS) // dist.get_world_size()
    loss = loss_of(net, TOKENS[dist.get_rank() * part:][:part])
    for i in range(backwards):
        loss.backward(retain_graph=i < backwards - 1)
    return [unit.shard.grad.numpy().copy() for unit in net.units]


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("zero_stage", [2, 3])
def test_backward_twice_with_retain_graph_accumulates_twice(world_size, zero_stage):
    once = ThreadGroup.run(world_size, partial(shard_grads, 1, zero_stage))
    twice = ThreadGroup.run(world_size, partial(shard_grads, 2, zero_stage))
    for rank, (g1, g2) in enumerate(zip(once, twice)):
        for unit, (a, b) in enumerate(zip(g1, g2)):
            assert b.dtype == np.float32
            np.testing.assert_allclose(b, 2 * a, rtol=1e-5, atol=1e-7,
                                       err_msg=f"rank {rank}, unit {unit}: the second backward was not added")


def test_plain_model_accumulates_twice_too():
    """The reference: the same two backward passes without FSDP (what torch does as well)."""
    gpt = model()
    loss = loss_of(gpt, TOKENS)
    loss.backward(retain_graph=True)
    first = {name: p.grad.numpy().copy() for name, p in gpt.named_parameters()}
    loss.backward()
    for name, p in gpt.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), 2 * first[name], rtol=1e-5, atol=1e-7, err_msg=name)
