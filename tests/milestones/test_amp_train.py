"""`tito train gpt --amp`: the training step runs under autocast (fp16 with a GradScaler), the
checkpoints stay float32, the MFU uses the low-precision peak, and bad settings are one line."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tinytorch as tt
import tinytorch.core.amp as amp_module
import tinytorch.training.efficiency as efficiency
from tinytorch.models import GPT
from tinytorch.training.checkpoint import load_checkpoint
from tito.main import app

TINY = ["train", "gpt", "--config", "tiny", "--steps", "3", "--sample-tokens", "0", "--data", "fox.txt"]


@pytest.fixture
def workdir(run_folder, monkeypatch):
    """conftest's run_folder; the MFU's peak is recorded, not measured."""
    peaks = []
    monkeypatch.setattr(efficiency, "peak_flops", lambda device, dtype, tflops: peaks.append(dtype) or (1e12, "test"))
    return peaks


@pytest.fixture
def logits_dtypes(monkeypatch):
    """The dtype of every training forward's logits."""
    seen = []
    forward = GPT.forward

    def recording(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        seen.append(logits.dtype)
        return logits, loss
    monkeypatch.setattr(GPT, "forward", recording)
    return seen


def tito(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(*args):
    done = tito(*TINY, *args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def checkpoint(run):
    return load_checkpoint(next(Path(run, "checkpoints").glob("*.safetensors")), "cpu")


def test_bf16_trains_under_autocast_and_keeps_float32_checkpoints(workdir, logits_dtypes):
    pytest.importorskip("ml_dtypes", reason="bfloat16 on the CPU needs ml_dtypes: pip install 'tinytorch[bfloat16]'")
    result = train("--amp", "bf16", "--out", "bf16")
    assert result["precision"] == "bf16" and result["steps"] == 3
    assert tt.bfloat16 in logits_dtypes, f"the forward passes ran in {set(logits_dtypes)}, not under autocast"
    assert workdir == ["bf16"], f"the MFU must use the bf16 peak, asked for {workdir}"
    reference = train("--out", "fp32")
    assert abs(result["val_loss"] - reference["val_loss"]) < 0.05, (result["val_loss"], reference["val_loss"])
    state = checkpoint("bf16")
    for name, array in [*state["model"].items(), *tt.load("bf16/model.safetensors").items()]:
        assert str(array.dtype) == "float32", f"{name} saved as {array.dtype}: the master weights stay float32"
    assert "grad_scaler" not in state["optimizer"], "bf16 needs no loss scaling"


def test_fp16_steps_through_a_grad_scaler_saved_with_the_optimizer(workdir, logits_dtypes):
    result = train("--amp", "fp16", "--out", "fp16")
    assert result["precision"] == "fp16" and workdir == ["fp16"]
    assert tt.float16 in logits_dtypes, f"the forward passes ran in {set(logits_dtypes)}, not under autocast"
    assert result["final_train_loss"] < result["initial_loss_estimate"] + 0.1, result
    state = checkpoint("fp16")
    assert state["optimizer"]["grad_scaler"]["scale"] == 2.0 ** 16, "no overflow in 3 steps: the scale stays"
    assert all(str(a.dtype) == "float32" for a in state["model"].values())


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_amp_with_the_step_split_over_threads(workdir, monkeypatch, amp):
    """--threads 2 runs the split step (module 07's ThreadedStep): autocast reaches the pool's thread, and
    fp16's GradScaler behind the split optimizer still zeroes and steps."""
    import threading

    if amp == "bf16":
        pytest.importorskip("ml_dtypes", reason="bfloat16 on the CPU needs ml_dtypes")
    in_pool = []
    forward = GPT.forward

    def recording(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            in_pool.append(logits.dtype)
        return logits, loss
    monkeypatch.setattr(GPT, "forward", recording)
    result = train("--amp", amp, "--threads", "2", "--out", f"{amp}-threads")
    assert result["threads"] == 2 and result["precision"] == amp and result["steps"] == 3
    assert set(in_pool) == {tt.float16 if amp == "fp16" else tt.bfloat16}, f"the pool's forwards ran in {in_pool}"
    assert result["final_train_loss"] < result["initial_loss_estimate"] + 0.1, result


@pytest.mark.parametrize("args, expected", [
    (["--amp", "fp8"], "choose bf16 or fp16"),
    (["--amp", "fp8", "--nproc", "2"], "choose bf16 or fp16"),  # refused before any rank starts
    (["--amp", "bf16", "--device", "cuda"], "use --amp fp16 on cuda"),
    (["--amp", "fp16", "--zero", "1"], "--amp fp16 with --zero"),
])
def test_bad_amp_settings_are_one_line_and_exit_2(workdir, args, expected):
    done = tito(*TINY, *args)
    assert done.exit_code == 2, done.output
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not Path("runs").exists(), "a refused run must write nothing"


def test_bf16_without_ml_dtypes_names_the_extra(workdir, monkeypatch):
    monkeypatch.setattr(amp_module, "ml_dtypes", None)
    done = tito(*TINY, "--amp", "bf16")
    assert done.exit_code == 2, done.output
    assert "pip install 'tinytorch[bfloat16]'" in done.stderr, done.stderr
