"""Ctrl-C during `tito train gpt`: the newest checkpoint stays whole and tito says where it is."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinytorch.training import Trainer
from tinytorch.training.checkpoint import list_checkpoints
from tito.main import app

TINY = ["--config", "tiny", "--sample-tokens", "0", "--data", "fox.txt"]


@pytest.fixture
def workdir(run_folder):
    return run_folder


def ctrl_c_at(monkeypatch, at_step):
    after_step = Trainer._after_step

    def interrupted(self, end_of_epoch):
        after_step(self, end_of_epoch)
        if self.step == at_step:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_after_step", interrupted)


def tito(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_ctrl_c_keeps_the_newest_checkpoint_and_says_how_to_resume(workdir, monkeypatch):
    first = tito("train", "gpt", *TINY, "--steps", "3", "--out", "runs/a", "--json")
    assert first.exit_code == 0, first.output
    saved = Path("runs/a/checkpoints/step_00000003.safetensors")
    good = saved.read_bytes()
    ctrl_c_at(monkeypatch, 5)
    done = tito("train", "gpt", *TINY, "--steps", "10", "--resume", "--out", "runs/a")
    assert done.exit_code == 130, done.output
    assert "Traceback" not in done.output
    assert f"kept the newest checkpoint, {saved}" in done.stderr, done.stderr
    assert "tito train gpt --resume --out runs/a" in done.stderr
    assert list_checkpoints("runs/a/checkpoints") == [saved] and saved.read_bytes() == good


def test_ctrl_c_before_the_first_checkpoint_says_there_is_nothing_to_resume(workdir, monkeypatch):
    ctrl_c_at(monkeypatch, 2)
    done = tito("train", "gpt", *TINY, "--steps", "10")
    assert done.exit_code == 130, done.output
    assert "runs/gpt has no checkpoint yet" in done.stderr, done.stderr
    assert json.loads(Path("runs/gpt/config.json").read_text())["preset"] == "tiny"


def test_ctrl_c_in_a_resume_without_out_names_the_resumed_run(workdir, monkeypatch):
    assert tito("train", "gpt", *TINY, "--steps", "3", "--json").exit_code == 0  # runs/gpt
    ctrl_c_at(monkeypatch, 5)
    done = tito("train", "gpt", *TINY, "--steps", "10", "--resume")
    assert done.exit_code == 130, done.output
    assert "kept the newest checkpoint, runs/gpt/checkpoints/step_00000003.safetensors" in done.stderr, done.stderr
    assert "tito train gpt --resume --out runs/gpt" in done.stderr, done.stderr


def test_a_failed_write_is_one_line_and_keeps_the_last_checkpoint(workdir, monkeypatch):
    """A checkpoint that cannot be written (disk full, a file-size cap) ends the run with one line that names
    the error and the checkpoint to resume from, not a traceback."""
    import errno

    from tinytorch.training import checkpoint

    first = tito("train", "gpt", *TINY, "--steps", "3", "--out", "runs/a", "--json")
    assert first.exit_code == 0, first.output
    saved = Path("runs/a/checkpoints/step_00000003.safetensors")
    good = saved.read_bytes()

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(checkpoint, "atomic_write", disk_full)
    done = tito("train", "gpt", *TINY, "--steps", "6", "--resume", "--out", "runs/a")
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "No space left on device" in done.stderr and f"kept the newest checkpoint, {saved}" in done.stderr
    assert saved.read_bytes() == good
