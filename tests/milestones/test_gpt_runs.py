"""Runs of the main job never lose work: each run its own folder, nothing written by a failed
start, resume only from the run's own checkpoints, and every bad input one line with exit 2."""

import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tinytorch as tt
from tito.main import app

ROOT = Path(__file__).resolve().parents[2]
FOX = "the quick brown fox jumps over the lazy dog. " * 40  # 1,800 characters: enough for --config tiny
CAT = "a cat sat on a mat, and bit a rat!\n" * 40
TINY = ["--config", "tiny", "--steps", "3", "--sample-tokens", "0"]


@pytest.fixture
def workdir(run_folder):
    """conftest's run_folder, with a second corpus, cat.txt."""
    (run_folder / "cat.txt").write_text(CAT, encoding="utf-8")
    return run_folder


def tito(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def train(*args):
    """`tito train gpt ARGS --json` on the tiny preset; the run's result."""
    done = tito("train", "gpt", *TINY, *args, "--json")
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


def one_line_error(done, expected):
    assert done.exit_code == 2, done.output  # an unexpected exception would be exit code 1
    assert expected in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def truncate(path):
    path = Path(path)
    path.write_bytes(path.read_bytes()[:1000])


def damage_run(what):
    """Each way a finished run can be broken on disk."""
    if what == "model":
        truncate("runs/a/model.safetensors")
    elif what == "config":
        Path("runs/a/config.json").write_text('{"gpt": ', encoding="utf-8")
    elif what == "tokenizer":
        Path("runs/a/tokenizer.json").unlink()
    elif what == "checkpoint":
        truncate("runs/a/checkpoints/step_00000003.safetensors")
    elif what == "shapes":  # weights of another model under this run's config
        tt.save({"lm_head.weight": tt.zeros(2, 2)}, "runs/a/model.safetensors")


def test_each_run_gets_its_own_folder_and_both_stay_loadable(workdir):
    first = train("--data", "fox.txt")
    second = train("--data", "cat.txt")
    assert (first["out"], second["out"]) == ("runs/gpt", "runs/gpt-2")
    for run, text in (("runs/gpt", "the "), ("runs/gpt-2", "a cat")):
        done = tito("sample", "--checkpoint", run, "--prompt", text, "--max-new-tokens", 5, "--seed", 1)
        assert done.exit_code == 0 and done.stdout.startswith(text), done.output
    assert json.loads(Path("runs/gpt/config.json").read_text())["data"] == "fox.txt"


def test_sample_without_checkpoint_uses_the_newest_run(workdir):
    train("--data", "fox.txt")
    train("--data", "cat.txt")
    done = tito("sample", "--prompt", "a cat", "--max-new-tokens", 5)
    assert done.exit_code == 0 and done.stdout.startswith("a cat"), done.output
    assert "runs/gpt-2" in done.stderr


def test_a_failing_start_leaves_the_previous_run_byte_identical(workdir):
    train("--data", "fox.txt", "--out", "runs/mine")
    before = snapshot("runs/mine")
    (workdir / "short.txt").write_text("too short", encoding="utf-8")
    (workdir / "empty.txt").write_text("", encoding="utf-8")
    for args, expected in [
        (["--data", "cat.txt"], "already holds a run"),
        (["--data", "cat.txt", "--overwrite", "--device", "cuda:63"], "--device cuda:63"),
        (["--data", "short.txt", "--overwrite"], "too short"),
        (["--data", "empty.txt", "--overwrite"], "is empty"),
        (["--data", "cat.txt", "--resume"], "was trained on fox.txt"),
        (["--config", "small", "--resume"], "was trained with --config tiny"),
    ]:
        one_line_error(tito("train", "gpt", "--steps", "3", "--out", "runs/mine", *args), expected)
        assert snapshot("runs/mine") == before, f"{args} changed the run"
    assert sorted(Path("runs").iterdir()) == [Path("runs/mine")], "a failed start made a new folder"


def test_overwrite_replaces_the_run_and_its_checkpoints(workdir):
    train("--data", "fox.txt", "--out", "runs/mine")
    (workdir / "runs/mine/notes.txt").write_text("mine", encoding="utf-8")
    stale = Path("runs/mine/checkpoints/step_00000003.safetensors").read_bytes()
    result = train("--data", "cat.txt", "--out", "runs/mine", "--overwrite")
    assert result["out"] == "runs/mine" and result["vocab_size"] != 28
    assert Path("runs/mine/checkpoints/step_00000003.safetensors").read_bytes() != stale
    assert Path("runs/mine/notes.txt").read_text() == "mine", "--overwrite removes only the run's own files"


def test_resume_continues_the_newest_run_from_its_own_checkpoint(workdir):
    train("--data", "fox.txt")
    train("--data", "cat.txt")
    result = train("--resume", "--steps", "5")  # --steps after TINY's: 5 in all
    assert result["out"] == "runs/gpt-2" and result["steps"] == 5
    steps = [r["step"] for r in map(json.loads, Path("runs/gpt-2/log.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5], "resumed at step 3, not from scratch"


@pytest.mark.parametrize("same_data", [True, False])
def test_resume_refuses_a_checkpoint_of_another_run(workdir, same_data):
    train("--data", "fox.txt", "--out", "runs/a")
    train("--data", "fox.txt" if same_data else "cat.txt", "--out", "runs/b", "--steps", "4")
    shutil.copy("runs/b/checkpoints/step_00000004.safetensors", "runs/a/checkpoints/")
    before = snapshot("runs/a")
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a", "--steps", "6"), "belongs to another run")
    assert snapshot("runs/a") == before


def test_resume_refuses_changed_data(workdir):
    train("--data", "fox.txt", "--out", "runs/a")
    (workdir / "fox.txt").write_text(FOX.upper(), encoding="utf-8")
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a"), "changed since runs/a started")


def test_resume_with_only_damaged_checkpoints_is_one_line(workdir):
    train("--data", "fox.txt", "--out", "runs/a")
    truncate("runs/a/checkpoints/step_00000003.safetensors")
    before = snapshot("runs/a")
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a"), "every checkpoint in runs/a/checkpoints is "
                                                                        "truncated or corrupt")
    assert snapshot("runs/a") == before


def test_sample_of_a_stopped_run_uses_its_newest_checkpoint(workdir):
    train("--data", "fox.txt", "--out", "runs/a")
    Path("runs/a/model.safetensors").unlink()  # as if stopped before the end
    done = tito("sample", "--checkpoint", "runs/a", "--prompt", "the", "--max-new-tokens", 3)
    assert done.exit_code == 0 and done.stdout.startswith("the"), done.output


@pytest.mark.parametrize("what, target, expected", [
    ("model", "runs/a", "runs/a/model.safetensors: file is truncated or corrupt: retrain or restore it"),
    ("checkpoint", "runs/a/checkpoints/step_00000003.safetensors", "file is truncated or corrupt: retrain or restore"),
    ("config", "runs/a", "runs/a/config.json: file is truncated or corrupt"),
    ("tokenizer", "runs/a", "tokenizer.json: file is missing, truncated or corrupt"),
    ("shapes", "runs/a", "does not fit runs/a/config.json"),
])
def test_a_damaged_run_is_a_one_line_error_for_sample(workdir, what, target, expected):
    train("--data", "fox.txt", "--out", "runs/a")
    damage_run(what)
    one_line_error(tito("sample", "--checkpoint", target), expected)


@pytest.mark.parametrize("args, expected", [
    (["sample", "--checkpoint", "/nonexistent"], "--checkpoint /nonexistent: no such path"),
    (["sample"], "no run in runs/ to sample from"),
    (["sample", "--top-k", "0"], "--top-k must be at least 1"),
    (["sample", "--temperature", "-1"], "--temperature must be 0"),
    (["train", "gpt", "--data", "empty.txt"], "is empty: give a text file of at least 330 characters"),
    (["train", "gpt", "--data", "short.txt"], "too short: 9 characters, and --config small needs at least 650; use "
                                              "a longer file (--config tiny needs 330)"),
    (["train", "gpt", "--data", "mid.txt"], "needs at least 650; use --config tiny (needs 330) or a longer file"),
    (["train", "gpt", "--data", "short.txt", "--tokenizer", "bpe", "--config", "tiny"], "BPE tokens"),
    (["train", "gpt", "--data", "."], "is a folder"),
    (["train", "gpt", "--out", "fox.txt"], "is a file"),
    (["train", "gpt", "--out", "."], "not a run: choose a new or empty folder"),
    (["train", "gpt", "--resume"], "no run in runs/ to continue"),
    (["train", "gpt", "--resume", "--out", "."], "holds no run to continue"),
    (["train", "gpt", "--overwrite"], "--overwrite needs --out"),
    (["train", "gpt", "--resume", "--overwrite"], "contradict"),
    (["train", "gpt", "--device", "tpu"], "--device tpu: unknown device"),
    (["train", "gpt", "--nproc", "0"], "--nproc must be at least 1"),
    (["train", "gpt", "--sample-tokens", "-1"], "--sample-tokens must be 0 or more"),
    (["train", "gpt", "--peak-tflops", "0"], "--peak-tflops must be positive"),
])
def test_each_bad_input_is_one_line_and_exit_2(workdir, args, expected):
    (workdir / "short.txt").write_text("too short", encoding="utf-8")
    (workdir / "empty.txt").write_text("", encoding="utf-8")
    (workdir / "mid.txt").write_text("x" * 400, encoding="utf-8")
    one_line_error(tito(*args), expected)
    assert not Path("runs").exists(), "a bad input wrote a run"


def test_summary_reports_mean_and_median_speed_mfu_and_memory(workdir):
    """Speeds are integers (the mean over the whole run, the median step apart); MFU uses the given peak."""
    result = train("--data", "fox.txt", "--peak-tflops", "0.5")
    assert isinstance(result["tokens_per_s"], int) and isinstance(result["tokens_per_s_median"], int), result
    flops = 6 * 2 * 12 * 64**2 + 12 * 2 * 64 * 32 + 6 * 64 * result["vocab_size"]  # tiny: 2 layers, 64 wide, T=32
    assert result["mfu"] == pytest.approx(result["tokens_per_s"] * flops / 0.5e12, rel=0.01)
    assert result["peak"] == "0.5 TFLOPS (given)" and result["memory"] == "peak RSS" and result["peak_memory_mib"] > 1
    table = tito("train", "gpt", *TINY, "--data", "fox.txt", "--out", "runs/b", "--peak-tflops", "0.5").stdout
    assert "tokens/s, mean over the run" in table and "tokens/s, median step" in table and "MFU" in table, table


def test_a_folder_another_run_is_writing_is_refused_and_left_alone(workdir):
    sys.path.insert(0, str(ROOT / "milestones"))  # milestone scripts are plain files, not a package
    import gpt_text

    train("--data", "fox.txt", "--out", "runs/mine")
    before = snapshot("runs/mine")
    held = gpt_text.lock_run_dir(Path("runs/mine"), gpt_text.read_run_config(Path("runs/mine")))  # a 2nd run
    try:
        for extra in (["--resume", "--steps", "4"], ["--overwrite"]):
            done = tito("train", "gpt", *TINY, "--data", "fox.txt", "--out", "runs/mine", *extra)
            one_line_error(done, "is being written by another `tito train gpt` run")
            assert snapshot("runs/mine") == before, f"{extra} wrote into a folder another run holds"
    finally:
        held.close()
    assert train("--data", "fox.txt", "--out", "runs/mine", "--resume", "--steps", "4")["steps"] == 4


def test_a_run_that_a_folder_no_longer_matches_after_its_checks_stops(workdir, monkeypatch, capsys):
    """Between a run's checks and its lock, another run may have written the folder: the lock sees it."""
    sys.path.insert(0, str(ROOT / "milestones"))
    import gpt_text

    train("--data", "fox.txt", "--out", "runs/mine")
    with pytest.raises(gpt_text.RunError, match="changed while this run was starting"):
        gpt_text.lock_run_dir(Path("runs/mine"), None)  # the checks saw no run there
    other = dict(gpt_text.read_run_config(Path("runs/mine")), run="another run's id")
    with pytest.raises(gpt_text.RunError, match="changed while this run was starting"):
        gpt_text.lock_run_dir(Path("runs/mine"), other)
    gpt_text.lock_run_dir(Path("runs/mine"), gpt_text.read_run_config(Path("runs/mine"))).close()

    def no_locks(handle, how):  # a file system without locks: the run goes on, and says so
        raise OSError(37, "No locks available")
    monkeypatch.setattr("fcntl.flock", no_locks)
    assert gpt_text.lock_run_dir(Path("runs/mine"), gpt_text.read_run_config(Path("runs/mine"))) is None
    assert "cannot lock" in capsys.readouterr().err


def test_threads_in_process_leave_the_callers_blas_alone(workdir, monkeypatch):
    """`tito train gpt --threads 1` called in-process (a notebook, a test) sets BLAS's threads for the run
    only: the caller's BLAS threads and environment are what they were before."""
    from threadpoolctl import threadpool_info, threadpool_limits

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    with threadpool_limits(limits=2, user_api="blas"):
        before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        train("--threads", "1", "--out", workdir / "threads-run")
        after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert after == before, f"BLAS threads {before} before the run, {after} after"
    assert os.environ.get("OPENBLAS_NUM_THREADS") == "7" and "OMP_NUM_THREADS" not in os.environ


def train_lrs(run):
    rows = [json.loads(line) for line in Path(run, "log.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if r["kind"] == "train"}


def test_resume_keeps_the_runs_plan_and_a_new_plan_replaces_it(workdir, monkeypatch):
    """--resume without --steps finishes the run's own plan (not the preset's), and a run extended with more
    --steps follows the new plan, as nanoGPT computes the rate from the step and its settings: from where
    the run is, the cosine of the new count down to min_lr, instead of climbing back up the old one."""
    from tinytorch.training import Trainer

    train("--data", "fox.txt", "--out", "runs/a", "--steps", "30")  # tiny warms up for 20 steps, then decays
    after_step = Trainer._after_step

    def stop_at_33(self, end_of_epoch):
        after_step(self, end_of_epoch)
        if self.step == 33:
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_after_step", stop_at_33)
    assert tito("train", "gpt", *TINY, "--resume", "--out", "runs/a", "--steps", "40").exit_code == 130
    monkeypatch.setattr(Trainer, "_after_step", after_step)
    assert json.loads(Path("runs/a/config.json").read_text())["steps"] == 40, "the new plan was not recorded"
    result = train("--resume", "--out", "runs/a", "--steps", "40")
    assert result["steps"] == 40
    monkeypatch.chdir(workdir)
    lrs = train_lrs("runs/a")
    later = [lrs[step] for step in range(32, 41)]  # step 31 ran at the rate the checkpoint restored
    assert all(a >= b for a, b in zip(later, later[1:])), f"the rate climbed after the old plan's end: {later}"
    cosine = (1 + math.cos(math.pi * (39 - 20) / 20)) / 2  # the rate of step 40: epoch 19 of the new 20-step cosine
    assert lrs[40] == pytest.approx(2e-4 + (2e-3 - 2e-4) * cosine, rel=1e-4), "not the new plan's rate"
    done = tito("train", "gpt", "--config", "tiny", "--sample-tokens", "0", "--resume", "--out", "runs/a", "--json")
    assert done.exit_code == 0 and json.loads(done.stdout)["steps"] == 40, "a resume without --steps kept the plan"


@pytest.mark.parametrize("flag, value, expected", [("--seed", "5", "was started with --seed 0, not 5"),
                                                   ("--amp", "bf16", "was started with --amp off, not bf16")])
def test_resume_refuses_another_seed_or_precision(workdir, flag, value, expected):
    train("--data", "fox.txt", "--out", "runs/a")
    before = snapshot("runs/a")
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a", flag, value), expected)
    assert snapshot("runs/a") == before


def test_overwrite_removes_the_old_runs_adapters(workdir):
    """A LoRA run's adapters file belongs to the run: `tito sample` would load it into the new run's model."""
    train("--data", "fox.txt", "--out", "runs/mine")
    Path("runs/mine/adapters.safetensors").write_bytes(b"old adapters")
    train("--data", "fox.txt", "--out", "runs/mine", "--overwrite")
    assert not Path("runs/mine/adapters.safetensors").exists()


def test_sample_of_a_run_resumed_past_its_end_uses_the_newer_checkpoint(workdir, monkeypatch):
    """A finished run resumed for more steps and stopped: its model file is the old end, the newest checkpoint
    is newer, and sample takes the checkpoint's weights."""
    from tinytorch.training import Trainer
    from tinytorch.training.checkpoint import load_checkpoint

    train("--data", "fox.txt", "--out", "runs/a")
    after_step = Trainer._after_step

    def stop_at_5(self, end_of_epoch):
        after_step(self, end_of_epoch)
        if self.step == 5:
            self.save_checkpoint()  # as an evaluation would
            raise KeyboardInterrupt
    monkeypatch.setattr(Trainer, "_after_step", stop_at_5)
    assert tito("train", "gpt", *TINY, "--resume", "--out", "runs/a", "--steps", "8").exit_code == 130
    monkeypatch.setattr(Trainer, "_after_step", after_step)
    sys.path.insert(0, str(ROOT / "milestones"))
    import gpt_text

    newest = sorted(Path("runs/a/checkpoints").glob("step_*.safetensors"))[-1]
    model, _ = gpt_text.load_run("runs/a")
    want = load_checkpoint(newest)["model"]
    name = next(iter(want))
    np.testing.assert_array_equal(model.state_dict()[name].data, want[name], err_msg=f"sample did not use {newest}")
