"""A GPT training step on cuda makes no device->host transfer until the caller asks for one.

Run on FakeCupy (see conftest.py), so it checks the cuda code paths on any CPU: a hidden
`int()`/`bool()`/`.item()` on a device array raises HostSyncError, and `to_host` is counted."""
import numpy as np

import tinytorch as tt
from tinytorch.core.backend import count_host_syncs
from tinytorch.models.gpt import GPT, GPTConfig
from tinytorch.nn.utils import clip_grad_norm_
from tinytorch.optim import AdamW


def _model_and_batch(device, dropout=0.1):
    tt.manual_seed(0)
    config = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=dropout)
    model = GPT(config).to(device)
    rng = np.random.default_rng(0)
    x = tt.tensor(rng.integers(0, 17, (2, 8)), device=device)
    y = tt.tensor(rng.integers(0, 17, (2, 8)), device=device)
    return model, AdamW(model.parameters(), lr=1e-3), x, y


def _step(model, opt, x, y):
    _, loss = model(x, y)
    loss.backward()
    clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    return loss


def test_a_training_step_on_cuda_makes_no_host_sync(fake_gpu):
    model, opt, x, y = _model_and_batch("cuda")
    assert isinstance(model.lm_head.weight.data, fake_gpu.DeviceArray), "the fake GPU is not in use"
    with count_host_syncs(include_cpu=True) as syncs:
        _step(model, opt, x, y)  # the first step also builds the optimizer state and the causal bias
        loss = _step(model, opt, x, y)
    assert syncs.count == 0, f"a training step made {syncs.count} device->host conversions"
    with count_host_syncs(include_cpu=True) as syncs:
        value = loss.item()
    assert syncs.count == 1 and np.isfinite(value)


def test_a_training_step_on_the_test_device_makes_no_host_sync(device):
    """The same on the suite's device: real CuPy under TINYTORCH_TEST_DEVICE=cuda, NumPy otherwise."""
    model, opt, x, y = _model_and_batch(device)
    with count_host_syncs(include_cpu=True) as syncs:
        _step(model, opt, x, y)
        loss = _step(model, opt, x, y)
    assert syncs.count == 0, f"a training step made {syncs.count} device->host conversions"
    with count_host_syncs(include_cpu=True) as syncs:
        assert np.isfinite(loss.item())
    assert syncs.count == 1


def test_explicit_positions_make_no_host_sync_and_fail_at_the_next_one(fake_gpu):
    """Explicit positions are checked in the model and again in each RoPE layer: on a GPU each check is
    queued (check_later), not read back at once; a bad position raises when the caller next reads a value
    (on the CPU at once: tests/09_gpt/test_llama_style.py)."""
    import pytest

    tt.manual_seed(0)
    config = GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16, rope=True)
    model = GPT(config).to("cuda")
    x = tt.tensor(np.random.default_rng(0).integers(0, 17, (2, 8)), device="cuda")
    good = tt.tensor(np.tile(np.arange(8), (2, 1)), device="cuda")
    with count_host_syncs(include_cpu=True) as syncs:
        logits, _ = model(x, positions=good)
        logits.sum().backward()
    assert syncs.count == 0, f"a forward and backward with explicit positions made {syncs.count} host syncs"
    from tinytorch.nn.attention import _check_positions

    _check_positions(tt.tensor(np.tile(np.arange(1, 9), (2, 1)), device="cuda"), 8, 8, "cuda")  # 8: past the end
    with pytest.raises(ValueError, match=r"positions must lie in \[0, block_size=8\), got 1 .. 8"):
        tt.tensor(1.0, device="cuda").item()
