"""Mistakes in module 13's lesson code that the other tests let through (mutation review, round 4):
gradient accumulation through a reused buffer, a persistent gather buffer, a forward that raises, kwargs,
checkpoint with non-grad and non-tensor arguments, and the activation model off the square configs."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.distributed import ThreadGroup
from tinytorch.distributed.fsdp import FullyShardedDataParallel, _FlatUnit
from tinytorch.distributed.memory import gpt_activation_bytes, measure_memory, predict_memory
from tinytorch.distributed.process_group import _group
from tinytorch.models import GPT, GPTConfig
from tinytorch.utils import checkpoint

CONFIG = GPTConfig(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
TOKENS = np.random.default_rng(0).integers(0, 23, (2, 9))


def _accumulate():
    pg = _group(None)
    unit = _FlatUnit(None, [tt.nn.Parameter(tt.tensor(np.zeros(6, np.float32)))], [], pg.rank, pg.size, False)
    g = np.full(6, pg.rank + 1.0, np.float32)  # the average over 2 ranks is 1.5
    unit.reduce_scatter_grad(pg, g)
    unit.reduce_scatter_grad(pg, 3 * g)
    return unit.shard.grad.numpy().tolist()


def test_reduce_scatter_grad_accumulates_different_micro_batches():
    got = ThreadGroup.run(2, _accumulate)
    assert got == [[6.0] * 3] * 2, f"micro-batches of mean gradient 1.5 then 4.5 add up to 6 in shard.grad, got {got}"


def _wrapped(zero_stage=3):
    tt.manual_seed(0)
    model = GPT(CONFIG)
    return model, FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=zero_stage)


def _at_rest():
    model, net = _wrapped()
    net(tt.tensor(TOKENS[:, :-1]), tt.tensor(TOKENS[:, 1:]))[1].backward()
    return measure_memory(net)["buffers"]


def test_zero3_keeps_no_gathered_buffer_between_passes():
    assert ThreadGroup.run(2, _at_rest) == [0, 0], "ZeRO-3: gather into a fresh buffer each time, none kept at rest"


def _after_a_raise():
    model, net = _wrapped()
    with pytest.raises(RuntimeError):
        model.transformer.h[0](tt.randn(1, 4, 15))  # the width is 16
    return all(getattr(owner, name) is p for u in net.units for owner, name, p in u.slots)


def test_a_unit_forward_that_raises_still_puts_the_parameters_back():
    assert all(ThreadGroup.run(2, _after_a_raise)), "a signal was left in a module after its forward raised"


def _loss_by_keyword():
    model, net = _wrapped()
    return net(tt.tensor(TOKENS[:, :-1]), targets=tt.tensor(TOKENS[:, 1:]))[1]


def test_keyword_arguments_reach_the_units_forward():
    losses = ThreadGroup.run(2, _loss_by_keyword)
    assert all(loss is not None for loss in losses), "model(idx, targets=...) under FSDP gave no loss"


@pytest.mark.parity
def test_checkpoint_with_a_constant_tensor_and_a_float_matches_torch():
    torch = pytest.importorskip("torch")
    x, w = tt.randn(2, 3, requires_grad=True), tt.randn(3, 3)
    checkpoint(lambda t, m, s: ((t @ m) * s).sum(), x, w, 2.0).backward()
    tx = torch.tensor(x.numpy(), requires_grad=True)
    torch.utils.checkpoint.checkpoint(lambda t, m, s: ((t @ m) * s).sum(), tx, torch.tensor(w.numpy()), 2.0,
                                      use_reentrant=False).backward()
    assert w.grad is None
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), atol=1e-5)


def test_activation_bytes_use_seq_heads_and_vocab():
    odd = GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=4, n_embd=8)
    B, T, H, C, V = 3, 16, 4, 8, 50  # B != H, V != C, T = seq < block_size
    want = 4 * (B * (26 * T * C + H * T * T + 2 * T) + B * (4 * T * C + T * V) + T * C)
    assert want == 68864
    assert gpt_activation_bytes(odd, B, T) == want


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="zero-3"):
        predict_memory(1000, 4, "zero-3")
