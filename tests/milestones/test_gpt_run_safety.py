"""`tito train gpt` / `tito sample` keep the user's work usable: a LoRA run outlives changes to its base run, a
run's text may move, a resume asked to go backwards writes nothing, and wrong files get errors that say so."""

import json
import os
from pathlib import Path

import pytest

from tests.milestones.test_gpt_runs import TINY, one_line_error, snapshot, tito, train


def sample(run):
    done = tito("sample", "--checkpoint", run, "--prompt", "the ", "--max-new-tokens", 8, "--seed", 0)
    assert done.exit_code == 0, done.output
    return done.stdout


@pytest.mark.parametrize("change", [["--resume", "--steps", "5"], ["--overwrite"]])
def test_a_lora_run_outlives_its_base_run_resumed_or_overwritten(run_folder, change):
    train("--data", "fox.txt", "--out", "runs/base")
    train("--data", "fox.txt", "--out", "runs/lora", "--init-from", "runs/base", "--lora-rank", "2")
    assert os.path.samefile("runs/lora/base_model.safetensors", "runs/base/model.safetensors"), "a link, not a copy"
    before, base_weights = sample("runs/lora"), Path("runs/base/model.safetensors").read_bytes()
    train("--data", "fox.txt", "--out", "runs/base", *change, "--seed", "0" if change[0] == "--resume" else "1")
    assert Path("runs/base/model.safetensors").read_bytes() != base_weights, "the base run was rewritten"
    assert sample("runs/lora") == before, "the LoRA run samples from the base weights it was trained on"
    resumed = train("--out", "runs/lora", "--resume", "--steps", "4")  # and it can still be resumed
    assert resumed["steps"] == 4


def test_a_lora_run_made_before_it_kept_its_base_gets_it_on_resume(run_folder):
    train("--data", "fox.txt", "--out", "runs/base")
    train("--data", "fox.txt", "--out", "runs/lora", "--init-from", "runs/base", "--lora-rank", "2")
    Path("runs/lora/base_model.safetensors").unlink()  # as a LoRA run written by an earlier TinyTorch
    before = sample("runs/lora")
    train("--out", "runs/lora", "--resume", "--steps", "3")
    assert Path("runs/lora/base_model.safetensors").is_file()
    train("--data", "fox.txt", "--out", "runs/base", "--overwrite", "--seed", "1")
    assert sample("runs/lora") == before


def test_init_from_a_lora_run_names_its_base(run_folder):
    train("--data", "fox.txt", "--out", "runs/base")
    train("--data", "fox.txt", "--out", "runs/lora", "--init-from", "runs/base", "--lora-rank", "2")
    done = tito("train", "gpt", *TINY, "--data", "fox.txt", "--init-from", "runs/lora", "--lora-rank", "2")
    one_line_error(done, "runs/lora is itself a LoRA run: fine-tune its base run")


def test_resume_after_the_text_moved(run_folder):
    train("--data", "fox.txt", "--out", "runs/a")
    os.rename("fox.txt", "moved.txt")
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a"), "pass --data NEWPATH")
    Path("fox.txt").write_text("something else entirely. " * 80, encoding="utf-8")  # same name, other text
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a"), "changed since runs/a started")
    Path("fox.txt").unlink()
    assert train("--resume", "--out", "runs/a", "--data", "moved.txt", "--steps", "4")["steps"] == 4
    saved = json.loads(Path("runs/a/config.json").read_text())
    assert (saved["data"], saved["data_path"]) == ("moved.txt", str(Path("moved.txt").resolve()))
    assert train("--resume", "--out", "runs/a", "--steps", "5")["steps"] == 5  # the new path is the run's now


def test_resume_with_other_text_under_a_new_name_is_refused(run_folder):
    train("--data", "fox.txt", "--out", "runs/a")
    Path("cat.txt").write_text("a cat sat on a mat, and bit a rat!\n" * 40, encoding="utf-8")
    one_line_error(tito("train", "gpt", "--resume", "--out", "runs/a", "--data", "cat.txt"), "was trained on fox.txt")


def test_resume_with_fewer_steps_than_done_is_refused_and_writes_nothing(run_folder):
    train("--data", "fox.txt", "--out", "runs/a", "--steps", "6")
    before = snapshot("runs/a")
    done = tito("train", "gpt", "--resume", "--out", "runs/a", "--steps", "2")
    one_line_error(done, "runs/a is already at step 6: pass --steps above 6 to train further")
    assert snapshot("runs/a") == before


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "log.jsonl", ".lock"])
def test_sample_from_a_file_that_holds_no_weights_says_what_to_pass(run_folder, name):
    train("--data", "fox.txt", "--out", "runs/a")
    assert Path("runs/a", name).is_file()
    done = tito("sample", "--checkpoint", f"runs/a/{name}")
    one_line_error(done, f"--checkpoint runs/a/{name} is neither the run's model nor one of its checkpoints: "
                         f"pass the run folder (runs/a)")
