"""`tito train gpt --init-from RUN --lora-rank R`: LoRA fine-tuning of a finished run into a new run
that keeps the adapters alone, and `tito sample` of it (base + adapters, merged)."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tinytorch as tt
from tinytorch.finetune import LoRALinear
from tinytorch.training.checkpoint import list_checkpoints, load_checkpoint
from tito.main import app

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "milestones"))  # milestone scripts are plain files, not a package
import gpt_text  # noqa: E402

FOX = "the quick brown fox jumps over the lazy dog. " * 40  # the base run's text (and its characters)
DOG = "a lazy dog sat by the quick brown fox. " * 40  # new text, only characters the base knows
TINY = ["--config", "tiny", "--steps", "3", "--sample-tokens", "0", "--json"]
LORA = ["--steps", "3", "--sample-tokens", "0", "--json", "--data", "dog.txt", "--lora-rank", "2"]


def tito(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny base run, and a LoRA run fine-tuned from it on other text (and the base's files before that)."""
    root = tmp_path_factory.mktemp("lora")
    for name in ("modules", "milestones", "pyproject.toml"):
        (root / name).symlink_to(ROOT / name)
    (root / "fox.txt").write_text(FOX, encoding="utf-8")
    (root / "dog.txt").write_text(DOG, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        base = tito("train", "gpt", *TINY, "--data", "fox.txt", "--out", "base")
        assert base.exit_code == 0, base.output
        before = snapshot(root / "base")
        done = tito("train", "gpt", *LORA, "--init-from", "base", "--out", "lora")
        assert done.exit_code == 0, done.output
    return root, before, json.loads(done.stdout)


def test_lora_run_keeps_only_adapters_and_leaves_the_base_alone(runs):
    root, before, result = runs
    assert snapshot(root / "base") == before, "fine-tuning must not change the base run's files"
    lora = root / "lora"
    assert (lora / "adapters.safetensors").is_file() and not (lora / "model.safetensors").exists()
    size, base_size = (lora / "adapters.safetensors").stat().st_size, (root / "base/model.safetensors").stat().st_size
    assert size < 0.1 * base_size, f"adapters {size} bytes, base model {base_size}: should be a tiny fraction"
    saved = json.loads((lora / "config.json").read_text())["lora"]
    assert Path(saved["base"]) == (root / "base").resolve() and saved["rank"] == 2
    assert saved["base_sha256"] == gpt_text.file_sha256(root / "base/model.safetensors")
    assert result["steps"] == 3 and 0 < result["trainable_parameters"] < result["parameters"] / 10


def test_sample_loads_base_plus_merged_adapters(runs):
    root, _, _ = runs
    base = tt.load(root / "base/model.safetensors")
    adapters = tt.load(root / "lora/adapters.safetensors")
    model, _ = gpt_text.load_run(root / "lora")
    merged = model.state_dict()
    adapted = 0
    for name, weight in base.items():
        prefix = name[: -len(".weight")]
        a, b = adapters.get(f"{prefix}.lora_A.weight"), adapters.get(f"{prefix}.lora_B.weight")
        got = merged[name].numpy()
        if a is None:
            assert np.array_equal(got, weight.numpy()), f"{name} is not adapted and must equal the base"
            continue
        adapted += 1
        assert np.abs(b.numpy()).max() > 0, "3 steps must move the adapters' B off zero"
        expected = weight.numpy() + (16 / 2) * b.numpy() @ a.numpy()  # alpha/rank · B·A
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.array_equal(got, weight.numpy()), f"{name}: the merged weight must differ from the base"
    assert adapted == 4, "two layers × (attn.c_attn, attn.c_proj)"
    done = tito("sample", "--checkpoint", root / "lora", "--prompt", "the ", "--max-new-tokens", "8", "--seed", "0")
    assert done.exit_code == 0 and done.stdout.startswith("the "), done.output


def test_lora_checkpoints_keep_only_the_adapters(runs):
    root, _, _ = runs
    checkpoint = list_checkpoints(root / "lora/checkpoints")[-1]
    weights = load_checkpoint(checkpoint)["model"]
    adapters = tt.load(root / "lora/adapters.safetensors")
    assert sorted(weights) == sorted(adapters), "a LoRA run's checkpoint holds its adapters, not the frozen base"
    for name, value in adapters.items():
        assert np.array_equal(weights[name].numpy(), value.numpy()), f"{name}: the last checkpoint is the last step"
    size, base_size = checkpoint.stat().st_size, (root / "base/model.safetensors").stat().st_size
    assert size < 0.2 * base_size, f"checkpoint {size} bytes, base model {base_size}: the base must not be in it"


def test_resume_continues_a_lora_run_exactly(runs, tmp_path):
    root, _, _ = runs
    shutil.copytree(root / "lora", tmp_path / "lora")
    result = gpt_text.train(data=root / "dog.txt", steps=5, out=tmp_path / "lora", resume=True, quiet=True,
                            sample_tokens=0)
    assert result["steps"] == 5 and (tmp_path / "lora/adapters.safetensors").is_file()
    steps = [r["step"] for r in map(json.loads, (tmp_path / "lora/log.jsonl").read_text().splitlines())
             if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5], "resumed at step 3, not from scratch"
    straight = gpt_text.train(data=root / "dog.txt", steps=5, out=tmp_path / "straight", init_from=root / "base",
                              lora_rank=2, quiet=True, sample_tokens=0)
    assert straight["steps"] == 5
    resumed, uninterrupted = (tt.load(tmp_path / run / "adapters.safetensors") for run in ("lora", "straight"))
    for name, value in uninterrupted.items():  # the checkpoint's adapters were loaded, not left at their init
        np.testing.assert_array_equal(resumed[name].numpy(), value.numpy(), err_msg=name)


def test_sample_from_a_lora_checkpoint(runs):
    root, _, _ = runs
    from_run, _ = gpt_text.load_run(root / "lora")
    from_checkpoint, _ = gpt_text.load_run(list_checkpoints(root / "lora/checkpoints")[-1])
    for name, value in from_run.state_dict().items():
        np.testing.assert_array_equal(from_checkpoint.state_dict()[name].numpy(), value.numpy(), err_msg=name)


def test_load_run_gives_a_plain_gpt_merged_in_place(runs):
    root, _, _ = runs
    model, _ = gpt_text.load_run(root / "lora")
    assert not any(isinstance(m, LoRALinear) for m in model.modules()), "the merge swaps LoRALinear for Linear"
    assert sorted(model.state_dict()) == sorted(tt.load(root / "base/model.safetensors")), "the base run's names"
    saved = json.loads((root / "lora/config.json").read_text())
    lora = gpt_text.lora_model(saved["lora"], gpt_text.GPTConfig.from_dict(saved["gpt"]))
    assert gpt_text.merged_gpt(lora) is lora, "merged in place: no second model alive"


def rewrite_adapters(path, change):
    """Write back the adapter file at `path` after `change(tensors)`, as a damaged or foreign file would be."""
    tensors = dict(tt.load(path))
    change(tensors)
    tt.save(tensors, path)


A_0 = "transformer.h.0.attn.c_attn.lora_A.weight"


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.pop(A_0), f"missing ['{A_0}']"),  # the old load_run took the init's A here, silently
    (lambda t: t.update({"transformer.h.0.attn.c_q.lora_A.weight": t[A_0]}), "unexpected ['transformer.h.0"),
    (lambda t: t.update({A_0: t[A_0][:1]}), "was it saved with another rank?"),
], ids=["missing", "unexpected", "shape"])
def test_load_run_checks_the_adapters_as_load_adapters_does(runs, tmp_path, change, expected):
    root, _, _ = runs
    shutil.copytree(root / "lora", tmp_path / "lora")
    rewrite_adapters(tmp_path / "lora/adapters.safetensors", change)
    with pytest.raises(gpt_text.RunError, match="inject the same adapters|another rank") as err:
        gpt_text.load_run(tmp_path / "lora")
    assert expected in str(err.value) and "adapters.safetensors" in str(err.value), err.value
    done = tito("sample", "--checkpoint", tmp_path / "lora", "--max-new-tokens", "2")
    assert done.exit_code == 2 and expected in done.stderr, done.output


def test_sample_refuses_a_changed_base(runs, tmp_path):
    root, _, _ = runs
    shutil.copytree(root / "lora", tmp_path / "lora")
    config = tmp_path / "lora/config.json"
    saved = json.loads(config.read_text())
    saved["lora"]["base_sha256"] = "0" * 64  # as if the base model file had been retrained since
    config.write_text(json.dumps(saved))
    done = tito("sample", "--checkpoint", tmp_path / "lora", "--max-new-tokens", "2")
    assert done.exit_code == 2 and "changed" in done.stderr, done.output
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("args, expected", [
    (["--data", "dog.txt", "--lora-rank", "2"], "--lora-rank needs --init-from"),
    (["--data", "dog.txt", "--init-from", "base", "--lora-rank", "0"], "--lora-rank must be at least 1"),
    (["--data", "dog.txt", "--init-from", "base", "--lora-rank", "2", "--zero", "1"], "not supported"),
    (["--data", "dog.txt", "--init-from", "empty", "--lora-rank", "2"], "is not a finished run"),
    (["--data", "odd.txt", "--init-from", "base", "--lora-rank", "2"], "lacks: '!XZ'"),
])
def test_bad_lora_options_are_one_line_errors(runs, monkeypatch, args, expected):
    root, _, _ = runs
    monkeypatch.chdir(root)
    (root / "empty").mkdir(exist_ok=True)
    (root / "odd.txt").write_text("Zebra! X" + DOG, encoding="utf-8")
    done = tito("train", "gpt", "--steps", "3", "--sample-tokens", "0", "--out", "refused", *args)
    assert done.exit_code == 2, done.output  # an unexpected exception would be exit code 1
    assert expected in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (root / "refused").exists(), "a refused run writes nothing"


def test_resuming_from_an_old_whole_model_lora_checkpoint_says_so(runs, tmp_path):
    """A LoRA run's checkpoint from before adapters-only checkpoints holds the whole model: resuming says
    that, not that the file belongs to another run."""
    from tinytorch.training.checkpoint import save_checkpoint

    root, _, _ = runs
    shutil.copytree(root / "lora", tmp_path / "lora")
    path = list_checkpoints(tmp_path / "lora/checkpoints")[-1]
    state = load_checkpoint(path)
    state["model"] = {**tt.load(root / "base/model.safetensors"), **state["model"]}  # base + adapters, as before
    save_checkpoint(path, state)
    with pytest.raises(gpt_text.RunError) as err:
        gpt_text.train(data=root / "dog.txt", steps=5, out=tmp_path / "lora", resume=True, quiet=True, sample_tokens=0)
    message = str(err.value)
    assert "is this run's" in message and "kept the adapters alone" in message, message
    assert "another run" not in message
