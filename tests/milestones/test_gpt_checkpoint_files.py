"""A run's checkpoint files as `tito sample` and `--resume` read them: a damaged newest one is skipped with a
warning, a file that is not the run's checkpoint is named for what it is, and a killed save's temporary
file does not outlive the next save."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tinytorch as tt
from tinytorch.training.checkpoint import load_checkpoint, save_checkpoint
from tito.main import app

TINY = ["--config", "tiny", "--steps", "3", "--sample-tokens", "0"]
CKPT = Path("runs/a/checkpoints")


def tito(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(*args):
    done = tito("train", "gpt", *TINY, "--data", "fox.txt", "--out", "runs/a", *args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def sample(*args):
    return tito("sample", "--prompt", "the", "--max-new-tokens", 3, "--seed", 1, *args)


def one_line_error(done, expected):
    assert done.exit_code == 2, done.output
    assert expected in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.fixture
def stopped_run(run_folder):
    """runs/a stopped before its end (no model file), with two checkpoints: steps 2 and 3."""
    train()
    shutil.copy(CKPT / "step_00000003.safetensors", CKPT / "step_00000002.safetensors")
    Path("runs/a/model.safetensors").unlink()
    return run_folder


def test_sample_skips_a_damaged_newest_checkpoint_with_a_warning(stopped_run):
    truncate(CKPT / "step_00000003.safetensors")
    done = sample("--checkpoint", "runs/a")
    assert done.exit_code == 0 and done.stdout.startswith("the"), done.output
    assert "skipped truncated or corrupt step_00000003.safetensors; sampling from step_00000002" in done.stderr


def test_sample_with_every_checkpoint_damaged_is_one_line(stopped_run):
    for path in CKPT.iterdir():
        truncate(path)
    one_line_error(sample("--checkpoint", "runs/a"), "every checkpoint in runs/a/checkpoints is truncated or corrupt "
                                                     "(2 tried)")


def test_sample_names_what_is_wrong_with_a_file_that_is_not_the_runs_checkpoint(stopped_run):
    newest = CKPT / "step_00000003.safetensors"
    state = load_checkpoint(newest)
    tt.save(state["model"], newest)  # a valid safetensors file: the weights alone
    one_line_error(sample("--checkpoint", "runs/a"), "step_00000003.safetensors is not a TinyTorch checkpoint")
    save_checkpoint(newest, {"weights": state["model"]})
    one_line_error(sample("--checkpoint", "runs/a"), "step_00000003.safetensors is not a checkpoint of a `tito train "
                                                     "gpt` run: it has no 'model' entries")
    wrong = dict(state, model=dict(state["model"], **{"lm_head.weight": tt.zeros(2, 2)}))
    save_checkpoint(newest, wrong)
    want = tuple(state["model"]["lm_head.weight"].shape)
    one_line_error(sample("--checkpoint", newest), f"parameter lm_head.weight has shape (2, 2) in the file, {want} in "
                                                   f"the model")
    del wrong["model"]["lm_head.weight"]
    save_checkpoint(newest, wrong)
    one_line_error(sample("--checkpoint", newest), "it lacks 1 of the model's tensors, e.g. lm_head.weight")


def test_resume_names_a_foreign_newest_file_and_leaves_the_run_alone(run_folder):
    train()
    foreign = CKPT / "step_00000009.safetensors"
    tt.save({"w": tt.zeros(2)}, foreign)
    before = snapshot("runs/a")
    done = tito("train", "gpt", "--resume", "--out", "runs/a", "--steps", "12")
    one_line_error(done, "step_00000009.safetensors is not a TinyTorch checkpoint")
    assert "truncated or corrupt" not in done.stderr
    assert snapshot("runs/a") == before


def test_resume_names_the_parameter_whose_shape_differs(run_folder):
    train()
    path = CKPT / "step_00000003.safetensors"
    state = load_checkpoint(path)
    state["model"]["lm_head.weight"] = tt.zeros(2, 2)
    save_checkpoint(path, state)
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a", "--steps", "5"),
                   "parameter lm_head.weight has shape (2, 2) in the file")


def test_the_next_save_of_a_run_removes_a_killed_saves_temporary_file(run_folder):
    train()
    stale = CKPT / ".step_00000004.safetensors.x1y2z3_a.tmp"
    stale.write_bytes(b"half a checkpoint")
    notes = CKPT / "notes.tmp"
    notes.write_text("mine", encoding="utf-8")
    train("--resume", "--steps", "4")
    assert not stale.exists(), "the killed save's temporary file outlived the next save"
    assert notes.read_text(encoding="utf-8") == "mine", "only temporary files of checkpoints are removed"
