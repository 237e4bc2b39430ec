"""The MFU divides by the peak of the dtype the matmuls run in: 16-bit tensor cores are ~15x faster than
float32 on an H100, so an autocast run measured against the float32 peak would be overstated ~15x.

Module 10's autocast is not importable here (module 07's tests use modules <= 07): an autocast is imitated
through module 01's hook, the way autocast installs itself."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.core.tensor import _autocast_state, _cast
from tinytorch.data import DataLoader, TensorDataset
from tinytorch.training import Trainer, efficiency
from tinytorch.training.efficiency import matmul_dtype, peak_dtype, peak_flops

CPU_PEAKS = {"float32": 1e11, "float16": 1e9}  # a CPU's measured matmul speed per dtype, made up


@pytest.fixture
def measured(monkeypatch):
    """The CPU's matmul is 'measured' from CPU_PEAKS; the dtypes measured are recorded."""
    dtypes = []

    def measure(seconds=0.2, n=None, dtype="float32"):
        dtypes.append(np.dtype(dtype).name)
        return CPU_PEAKS[np.dtype(dtype).name]
    monkeypatch.setattr(efficiency, "measure_peak_flops", measure)
    monkeypatch.setattr(efficiency, "_MEASURED", {})
    return dtypes


@pytest.fixture
def half_matmuls():
    """What autocast does to matmuls, through module 01's hook: they run in float16."""
    def run(name, fn, args, kwargs):
        if name != "matmul":
            return fn(*args, **kwargs)
        return fn(*[_cast(a, tt.float16) for a in args], **kwargs)
    _autocast_state.run = run
    yield
    _autocast_state.run = None


def test_peak_dtype_takes_the_tables_names_and_dtypes():
    for dtype, key in (("bf16", "bf16"), (tt.float32, "fp32"), (tt.float16, "fp16"), (tt.bfloat16, "bf16"),
                       ("float16", "fp16"), (np.float32, "fp32")):
        assert peak_dtype(dtype) == key, dtype
    for bad in ("int8", tt.float64, "fp8", 3):
        with pytest.raises(ValueError, match="no peak FLOP/s for dtype"):
            peak_dtype(bad)


def test_gpu_peaks_by_dtype(monkeypatch):
    monkeypatch.setattr(efficiency, "gpu_name", lambda dev: "NVIDIA H100 80GB HBM3")
    assert peak_flops("cuda", tt.bfloat16)[0] == peak_flops("cuda", "bf16")[0] == 989e12
    assert peak_flops("cuda", tt.float32)[0] == 67e12


def test_a_cpu_peak_is_measured_in_the_dtype_asked_for(measured):
    assert peak_flops("cpu", "fp16") == (1e9, "measured fp16 matmul")
    assert peak_flops("cpu")[0] == 1e11 and peak_flops("cpu", "fp16")[0] == 1e9
    assert measured == ["float16", "float32"], "one measurement per dtype and process"


def test_matmul_dtype_sees_an_autocast_in_force(half_matmuls):
    assert matmul_dtype("cpu") == tt.float16
    _autocast_state.run = None
    assert matmul_dtype("cpu") == tt.float32


def _trainer(**options):
    V, T = 7, 5
    rng = np.random.default_rng(0)
    data = TensorDataset(tt.tensor(rng.integers(0, V, (16, T))), tt.tensor(rng.integers(0, V, (16, T))))
    tt.manual_seed(0)
    model = nn.Sequential(nn.Embedding(V, 8), nn.Linear(8, V))

    def loss_fn(logits, targets):
        return nn.functional.cross_entropy(logits.view(-1, V), targets.view(-1))
    return Trainer(model, tt.optim.SGD(model.parameters(), lr=0.1), loss_fn, DataLoader(data, batch_size=4),
                   quiet=True, flops_per_token=1e6, **options)


def test_the_trainer_uses_the_peak_of_the_dtype_its_matmuls_run_in(measured, half_matmuls):
    """An autocast around fit(): the float16 peak (the float32 one would overstate the MFU 100x here)."""
    history = _trainer().fit(max_steps=2)
    assert history.peak_flops == 1e9
    assert all(r["mfu"] == pytest.approx(r["tokens_per_s"] * 1e6 / 1e9, rel=1e-3) for r in history.train)
    _autocast_state.run = None
    assert _trainer().fit(max_steps=1).peak_flops == 1e11, "without autocast: the float32 peak"


def test_compute_dtype_names_the_dtype_when_autocast_is_not_around_fit(measured):
    """autocast inside the loss function or the model's forward is invisible from fit(): say the dtype."""
    trainer = _trainer(compute_dtype=tt.float16)
    assert trainer.peak_flops == 1e9 and trainer.fit(max_steps=1).peak_flops == 1e9
    assert _trainer(compute_dtype="fp32", peak_flops=5e9).peak_flops == 5e9, "a given peak wins"
    with pytest.raises(ValueError, match="no peak FLOP/s for dtype 'int8'"):
        _trainer(compute_dtype="int8")
