"""Checkpoints: the format, atomic writes, damaged files, keep_last and exact resume (also after SIGKILL)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core import serialization
from tinytorch.training import Trainer, checkpoint
from tinytorch.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from tinytorch.training.progress import read_log

REPO = Path(__file__).resolve().parents[2]


def test_state_round_trip(tmp_path, device):
    state = {
        "model": {"0.weight": tt.randn(3, 2, device=device), "scalar": tt.tensor(2.5)},
        "optimizer": {"state": {0: {"step": 7, "exp_avg": np.arange(4, dtype=np.float32)}},
                      "param_groups": [{"lr": 0.1, "betas": (0.9, 0.999), "params": [0]}]},
        "misc": [None, True, "text", float("inf"), np.float32(1.5), np.int64(3)],
        "rng": np.random.default_rng(5).bit_generator.state,
    }
    back = load_checkpoint(save_checkpoint(tmp_path / "c.safetensors", state), device=device)
    np.testing.assert_array_equal(back["model"]["0.weight"].numpy(), state["model"]["0.weight"].numpy())
    assert back["model"]["scalar"].shape == () and back["model"]["scalar"].item() == 2.5
    assert list(back["optimizer"]["state"]) == [0], "integer keys stay integers"
    np.testing.assert_array_equal(tt.to_numpy(back["optimizer"]["state"][0]["exp_avg"]), np.arange(4))
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999), "tuples stay tuples"
    assert back["misc"][:4] == [None, True, "text", float("inf")]
    assert back["misc"][4] == np.float32(1.5) and back["misc"][4].dtype == np.float32
    assert back["rng"] == state["rng"]
    with pytest.raises(TypeError, match="state/bad"):
        save_checkpoint(tmp_path / "d.safetensors", {"bad": object()})


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "step_00000001.safetensors"
    save_checkpoint(path, {"w": np.ones(1000, dtype=np.float32)})
    good = path.read_bytes()

    def crash(fd):  # the bytes are written but not yet durable, nor renamed into place
        raise OSError("simulated crash")
    monkeypatch.setattr(serialization.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"w": np.zeros(1000, dtype=np.float32)})
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "step_00000002.safetensors", {"w": np.zeros(3, dtype=np.float32)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no temporary or half file is left"
    assert path.read_bytes() == good
    assert load_checkpoint(path)["w"].sum() == 1000


def test_checkpoints_use_the_one_atomic_write(tmp_path, monkeypatch):
    written = []
    monkeypatch.setattr(checkpoint, "atomic_write", lambda path, data: written.append(path))
    save_checkpoint(tmp_path / "c.safetensors", {"w": np.ones(2, dtype=np.float32)})
    assert written == [tmp_path / "c.safetensors"] and not (tmp_path / "c.safetensors").exists()
    assert checkpoint.atomic_write_bytes is serialization.atomic_write, "the old name stays an alias"


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_checkpoint_raises_naming_the_file(tmp_path, damage):
    path = save_checkpoint(tmp_path / "step_00000003.safetensors", {"w": np.arange(100, dtype=np.float32)})
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 40]
    elif damage == "flip":
        data[-5] ^= 0xFF
    else:
        data = bytearray(b"not a checkpoint at all")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step_00000003.safetensors"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_state_dict_without_a_scheduler_or_early_stopping_saves_none(parts):
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    state = Trainer(model, opt, loss, loader, quiet=True).state_dict()
    assert state["scheduler"] is None and state["trainer"]["early_stopping"] is None


def test_keep_last(parts, tmp_path):
    model, opt, loss, loader, _ = parts(n=32, batch_size=8)
    Trainer(model, opt, loss, loader, checkpoint_dir=tmp_path, checkpoint_every=1, keep_last=2,
            quiet=True).fit(max_steps=5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004.safetensors", "step_00000005.safetensors"]


def _trainer(parts, folder, **kwargs):
    model, opt, loss, loader, val = parts(n=40, batch_size=8, shuffle=True, optimizer="adamw", lr=0.01, dropout=0.2)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    return Trainer(model, opt, loss, loader, val_loader=val, scheduler=sched, accum_steps=2, clip_grad_norm=1.0,
                   eval_every=4, checkpoint_dir=folder / "ckpt", log_path=folder / "log.jsonl", seed=3,
                   quiet=True, **kwargs)


def _losses(folder):
    return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss"))
            for r in read_log(folder / "log.jsonl") if r["kind"] in ("train", "eval")]


def test_resume_in_process_is_exact(parts, tmp_path):
    _trainer(parts, tmp_path / "a").fit(max_steps=12)
    stopped = _trainer(parts, tmp_path / "b", checkpoint_every=5)
    stopped.fit(max_steps=7)  # 5 is mid-epoch (3 steps per epoch); 7 is saved at the end of fit
    (tmp_path / "b/ckpt/step_00000007.safetensors").unlink()
    _trainer(parts, tmp_path / "b", resume=True).fit(max_steps=12)
    assert _losses(tmp_path / "b") == _losses(tmp_path / "a")


def test_resume_falls_back_past_a_corrupted_newest(parts, tmp_path):
    _trainer(parts, tmp_path, checkpoint_every=2).fit(max_steps=6)
    newest = tmp_path / "ckpt/step_00000006.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])
    trainer = _trainer(parts, tmp_path, resume=True)
    with pytest.warns(RuntimeWarning, match="step_00000006.safetensors"):
        trainer.fit(max_steps=6)
    assert trainer.step == 6 and (tmp_path / "ckpt/step_00000004.safetensors").exists()
    newest.write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="step_00000006.safetensors"):
        _trainer(parts, tmp_path).fit(max_steps=8, resume_from=newest)



def test_pruning_after_resuming_past_damaged_checkpoints_keeps_the_good_ones(parts, tmp_path):
    """Resumed from step 2 past damaged 4 and 6: those must not count among the kept, or pruning
    deletes step 2 and the step 3 just written, and the next resume finds nothing readable."""
    _trainer(parts, tmp_path, checkpoint_every=2, keep_last=3).fit(max_steps=6)
    for step in (4, 6):
        damaged = tmp_path / f"ckpt/step_{step:08d}.safetensors"
        damaged.write_bytes(damaged.read_bytes()[:-100])
    with pytest.warns(RuntimeWarning, match="falling back"):
        _trainer(parts, tmp_path, checkpoint_every=1, keep_last=2, resume=True).fit(max_steps=3)
    names = [p.name for p in list_checkpoints(tmp_path / "ckpt")]
    assert names[:2] == ["step_00000002.safetensors", "step_00000003.safetensors"], names
    with pytest.warns(RuntimeWarning, match="falling back"):
        again = _trainer(parts, tmp_path, resume=True)
        again.fit(max_steps=3)
    assert again.step == 3

SCRIPT = textwrap.dedent("""\
    import os, signal, sys
    import numpy as np
    import tinytorch as tt
    from tinytorch import nn
    from tinytorch.data import DataLoader, TensorDataset
    from tinytorch.training import Trainer

    folder, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume"
    tt.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 5)).astype(np.float32), rng.integers(0, 3, 60)
    loader = DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)), batch_size=8, shuffle=True)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    opt = tt.optim.AdamW(model.parameters(), lr=1e-2)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)

    class KillAt:
        def on_step_end(self, trainer, step, logs):
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    trainer = Trainer(model, opt, nn.functional.cross_entropy, loader, scheduler=sched, accum_steps=2,
                      clip_grad_norm=1.0, checkpoint_dir=folder + "/ckpt", checkpoint_every=3, keep_last=2,
                      log_path=folder + "/log.jsonl", seed=1, quiet=True, resume=resume, callbacks=[KillAt()])
    trainer.fit(max_steps=20)
""")


@pytest.mark.skipif(not hasattr(os, "kill") or os.name != "posix", reason="needs SIGKILL")
def test_killed_run_resumes_bit_for_bit(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(folder, kill_at, mode):
        return subprocess.run([sys.executable, str(script), str(folder), str(kill_at), mode], env=env,
                              capture_output=True, text=True, timeout=120)
    whole = run(tmp_path / "whole", 0, "fresh")
    assert whole.returncode == 0, whole.stderr
    killed = run(tmp_path / "killed", 7, "fresh")  # 4 steps per epoch: the step-6 checkpoint is mid-epoch
    assert killed.returncode == -9, f"the run should die by SIGKILL: {killed.returncode} {killed.stderr}"
    assert [p.name for p in list_checkpoints(tmp_path / "killed/ckpt")] == ["step_00000003.safetensors",
                                                                            "step_00000006.safetensors"]
    resumed = run(tmp_path / "killed", 0, "resume")
    assert resumed.returncode == 0, resumed.stderr

    def losses(folder):
        return [(r["step"], r["loss"]) for r in read_log(folder / "log.jsonl") if r["kind"] == "train"]
    assert len(losses(tmp_path / "whole")) == 20
    assert losses(tmp_path / "killed") == losses(tmp_path / "whole"), "resumed losses differ from the uninterrupted run"
