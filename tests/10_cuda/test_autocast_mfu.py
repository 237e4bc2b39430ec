"""A Trainer run inside autocast reports its MFU against the low-precision peak (module 07's efficiency)."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.data import DataLoader, TensorDataset
from tinytorch.training import Trainer, efficiency

CPU_PEAKS = {"float32": 1e11, "bfloat16": 2e9, "float16": 1e9}  # made up: measuring takes time


@pytest.fixture(autouse=True)
def measured(monkeypatch):
    monkeypatch.setattr(efficiency, "measure_peak_flops", lambda dtype="float32", **_: CPU_PEAKS[np.dtype(dtype).name])
    monkeypatch.setattr(efficiency, "_MEASURED", {})


def _trainer():
    V, T = 7, 5
    rng = np.random.default_rng(0)
    data = TensorDataset(tt.tensor(rng.integers(0, V, (16, T))), tt.tensor(rng.integers(0, V, (16, T))))
    model = nn.Sequential(nn.Embedding(V, 8), nn.Linear(8, V))

    def loss_fn(logits, targets):
        return nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))
    return Trainer(model, tt.optim.SGD(model.parameters(), lr=0.1), loss_fn, DataLoader(data, batch_size=4),
                   quiet=True, flops_per_token=1e6)


@pytest.mark.parametrize("dtype", [tt.bfloat16, tt.float16])
def test_fit_inside_autocast_uses_that_dtypes_peak(dtype):
    trainer = _trainer()
    with tt.autocast("cpu", dtype=dtype):
        history = trainer.fit(max_steps=2)
    assert history.peak_flops == CPU_PEAKS[dtype.name]
    assert all(r["mfu"] == pytest.approx(r["tokens_per_s"] * 1e6 / history.peak_flops, rel=1e-3) for r in history.train)
    assert trainer.fit(max_steps=3).peak_flops == CPU_PEAKS["float32"], "outside autocast again: float32's peak"


def test_autocast_for_another_device_type_leaves_the_float32_peak():
    with tt.autocast("cuda"):
        assert _trainer().fit(max_steps=1).peak_flops == CPU_PEAKS["float32"], "cpu matmuls stay float32"
