"""FLOPs per token, peaks, MFU and peak memory (tinytorch.training.efficiency) and the Trainer's report of them."""

import time

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.data import DataLoader, TensorDataset
from tinytorch.training import Trainer, efficiency
from tinytorch.training.efficiency import PeakMemory, flops_per_token, mfu, peak_flops


def hand_count(n_layer, n_embd, seq_len, vocab):
    """Training FLOPs per token of a tied GPT, one matmul at a time: 2 per multiply-add, backward twice forward."""
    C, T = n_embd, seq_len
    per_layer = (2 * C * 3 * C  # q, k, v projection
                 + 2 * T * C  # scores q·kᵀ against T keys, all heads together
                 + 2 * T * C  # weighted sum of T values
                 + 2 * C * C  # attention output projection
                 + 2 * C * 4 * C + 2 * 4 * C * C)  # MLP up and down
    forward = n_layer * per_layer + 2 * C * vocab  # + the output layer (the tied token table)
    return 3 * forward


@pytest.mark.parametrize("n_layer, n_embd, seq_len, vocab", [(1, 4, 3, 5), (2, 8, 16, 11)])
def test_flops_per_token_matches_a_hand_count(n_layer, n_embd, seq_len, vocab):
    n_params = n_layer * 12 * n_embd**2 + n_embd * vocab  # the matmul weights: blocks and the tied head
    assert flops_per_token(n_params, n_layer, n_embd, seq_len) == hand_count(n_layer, n_embd, seq_len, vocab)


def test_mfu_is_model_flops_over_peak():
    assert mfu(tokens_per_s=1000, flops_per_token=2e6, peak=1e10) == pytest.approx(0.2)
    for bad in ((1e10, "data sheet"), None, 0.0):  # peak_flops's pair, an unknown peak
        with pytest.raises(TypeError, match=r"peak_flops\(\.\.\.\)\[0\]"):
            mfu(1000, 2e6, bad)


def test_peak_flops_override_table_and_measurement(monkeypatch):
    assert peak_flops("cpu", tflops=2.5) == (2.5e12, "given")
    with pytest.raises(ValueError, match="positive"):
        peak_flops("cpu", tflops=0)
    flops, source = peak_flops("cpu")
    assert 1e8 < flops < 1e14 and "measured" in source
    for name, dtype, expected in (("NVIDIA H200", "bf16", 989e12), ("NVIDIA H100 80GB HBM3", "fp32", 67e12),
                                  ("NVIDIA H100 PCIe", "bf16", 756e12), ("NVIDIA A100-SXM4-80GB", "fp32", 19.5e12)):
        monkeypatch.setattr(efficiency, "gpu_name", lambda dev, name=name: name)
        assert peak_flops("cuda", dtype)[0] == expected, name
    for unknown in ("Tesla T4", "NVIDIA H100 NVL", "NVIDIA H200 NVL"):  # NVL boards run at other clocks than SXM
        monkeypatch.setattr(efficiency, "gpu_name", lambda dev, name=unknown: name)
        flops, source = peak_flops("cuda", "bf16")
        assert flops is None and "--peak-tflops" in source, unknown


def test_peak_memory_keeps_the_pools_maximum():
    class Pool:
        total = 0

        def total_bytes(self):
            return self.total

    meter, pool = PeakMemory("cpu"), Pool()
    assert meter.kind == "peak RSS" and meter.mib > 1  # this process holds at least a MiB
    meter.pool = pool
    for total in (3 * 2**20, 8 * 2**20, 2**20):
        pool.total = total
        meter.update()
    assert meter.mib == 8


class _SlowEval:
    def on_eval_end(self, trainer, step, metrics):
        time.sleep(0.15)


def test_trainer_reports_tokens_mfu_and_an_honest_mean():
    rng = np.random.default_rng(0)
    V, B, T = 7, 4, 5
    x, y = rng.integers(0, V, (32, T)), rng.integers(0, V, (32, T))
    loader = DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)), batch_size=B)
    tt.manual_seed(0)
    model = nn.Sequential(nn.Embedding(V, 8), nn.Linear(8, V))

    def loss_fn(logits, targets):
        return nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))

    trainer = Trainer(model, tt.optim.SGD(model.parameters(), lr=0.1), loss_fn, loader, val_loader=loader,
                      eval_every=4, callbacks=[_SlowEval()], quiet=True, flops_per_token=1e6, peak_flops=1e12)
    history = trainer.fit(max_steps=8)
    assert all(r["mfu"] == pytest.approx(r["tokens_per_s"] * 1e6 / 1e12, rel=1e-3) for r in history.train)
    summary = history.summary()
    assert history.seen == 8 * B * T and history.unit == "tokens"
    assert summary["tokens_per_s_mean"] == pytest.approx(history.seen / history.seconds)
    # the slow evaluation after step 4 is part of the run: the mean over the run is far below the median step
    assert history.seconds > 0.15 and summary["tokens_per_s_mean"] < summary["tokens_per_s_median"] / 2, summary
    assert summary["mfu"] == pytest.approx(summary["tokens_per_s_mean"] * 1e6 / 1e12)
    assert summary["memory_kind"] == "peak RSS" and summary["peak_memory_mib"] > 1


def test_trainer_checks_its_flops_settings():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="flops_per_token must be positive"):
        Trainer(model, tt.optim.SGD(model.parameters(), lr=0.1), None, [], flops_per_token=-1)
