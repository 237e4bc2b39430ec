"""The main job (`tito train gpt`, `tito sample`) end to end, on a tiny preset."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "milestones"))  # milestone scripts are plain files, not a package
import gpt_text  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog. " * 200


def tito(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tito", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "fox.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path_factory.mktemp("run")
    result = gpt_text.train(data=data, preset="tiny", steps=40, out=out, quiet=True, sample_tokens=30)
    return out, result


def test_train_writes_a_complete_run(run_dir):
    out, result = run_dir
    for name in ("config.json", "tokenizer.json", "model.safetensors", "log.jsonl"):
        assert (out / name).is_file(), f"{name} missing from the run directory"
    assert list((out / "checkpoints").glob("step_*.safetensors")), "no checkpoint written"
    assert result["steps"] == 40
    assert result["val_loss"] < result["initial_loss_estimate"], "40 steps should beat a uniform guess"
    assert len(result["sample"]) == 31, "prompt (one character) + 30 generated"


def test_sample_from_run_dir_and_from_checkpoint(run_dir):
    out, _ = run_dir
    model, tok = gpt_text.load_run(out)
    a = gpt_text.generate_text(model, tok, "the ", max_new_tokens=20, seed=3)
    b = gpt_text.generate_text(model, tok, "the ", max_new_tokens=20, seed=3)
    assert a == b and a.startswith("the ") and len(a) == 24, "sampling under a seed is deterministic"
    checkpoint = sorted((out / "checkpoints").glob("step_*.safetensors"))[-1]
    model2, _ = gpt_text.load_run(checkpoint)
    greedy = dict(max_new_tokens=15, temperature=0.0)
    assert gpt_text.generate_text(model, tok, "the ", **greedy) == gpt_text.generate_text(model2, tok, "the ", **greedy)


def test_resume_continues_the_run(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT, encoding="utf-8")
    first = gpt_text.train(data=data, preset="tiny", steps=20, out=tmp_path / "run", quiet=True, sample_tokens=1)
    again = gpt_text.train(data=data, preset="tiny", steps=30, out=tmp_path / "run", quiet=True, sample_tokens=1,
                           resume=True)
    assert (first["steps"], again["steps"]) == (20, 30), "resume starts from the saved step"
    steps = [r["step"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == list(range(1, 31)), "the log holds each step once, across the resume"


def test_bpe_tokenizer_run(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT, encoding="utf-8")
    result = gpt_text.train(data=data, tokenizer="bpe", preset="tiny", steps=5, out=tmp_path / "run", quiet=True,
                            sample_tokens=5)
    assert result["tokenizer"] == "bpe" and result["vocab_size"] > 256


def test_cli_json_and_sample(tmp_path):
    data = tmp_path / "fox.txt"
    data.write_text(TEXT, encoding="utf-8")
    done = tito("train", "gpt", "--data", str(data), "--config", "tiny", "--steps", "5", "--out", str(tmp_path / "r"),
                "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["steps"] == 5 and result["parameters"] > 0
    sampled = tito("sample", "--checkpoint", str(tmp_path / "r"), "--prompt", "the", "--max-new-tokens", "10",
                   "--seed", "1")
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith("the")


@pytest.mark.parametrize("make, expected", [
    (lambda p: p / "missing.txt", "no such file"),
    (lambda p: (p / "latin1.txt").write_bytes(b"caf\xe9 " * 100) and p / "latin1.txt", "not UTF-8"),
])
def test_bad_data_is_a_one_line_error(tmp_path, make, expected):
    done = tito("train", "gpt", "--data", str(make(tmp_path)), "--config", "tiny", "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_sample_without_a_run_is_a_clean_error(tmp_path):
    done = tito("sample", "--checkpoint", str(tmp_path))
    assert done.returncode == 2 and "not a run directory" in done.stderr and "Traceback" not in done.stderr


def test_threads_split_the_step_and_train_the_same_model(tmp_path):
    """--threads 2 splits each batch over two threads (module 07's ThreadedStep): the same run, up to rounding."""
    data = tmp_path / "fox.txt"
    data.write_text(TEXT, encoding="utf-8")
    runs = {n: gpt_text.train(data=data, preset="tiny", steps=12, out=tmp_path / f"run{n}", quiet=True,
                              sample_tokens=1, threads=n) for n in (1, 2)}
    assert (runs[1]["threads"], runs[2]["threads"]) == (1, 2)
    assert runs[2]["final_train_loss"] == pytest.approx(runs[1]["final_train_loss"], rel=1e-4)
    assert runs[2]["val_loss"] == pytest.approx(runs[1]["val_loss"], rel=1e-4)


@pytest.mark.parametrize("threads, device, world, zero, preset, cpus, expected", [
    (None, "cpu", 1, None, "small", 2, 2),  # large enough halves: split (+15 % on 2 cores)
    (None, "cpu", 1, None, "tiny", 2, 1),  # small halves: the hand-overs cost more than they gain
    (None, "cpu", 1, None, "small", 1, 1),  # one CPU
    (3, "cpu", 1, None, "tiny", 2, 3),  # asked for
    (4, "cuda", 1, None, "small", 2, 1),  # the GPU runs the step
    (4, "cpu", 2, None, "small", 2, 1),  # ranks already spread it
    (None, "cpu", 1, 1, "small", 2, 1),  # --zero in one process: DDP's wrapper, not a model to copy
    (2, "cpu", 1, 3, "small", 2, 1),  # ... nor FSDP's
])
def test_step_threads(monkeypatch, threads, device, world, zero, preset, cpus, expected):
    monkeypatch.setattr(gpt_text, "cpu_count", lambda: cpus)
    assert gpt_text.step_threads(threads, device, world, zero, gpt_text.PRESETS[preset]) == expected


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_bad_threads_is_a_one_line_error(tmp_path, bad):
    done = tito("train", "gpt", "--config", "tiny", "--steps", "2", "--threads", bad, "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "--threads must be at least 1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
