"""`tito milestone run finetune --quick`: LoRA teacher, distilled GRU, GRU from scratch, end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "milestones"))  # milestone scripts are plain files, not a package
import finetune  # noqa: E402


def test_task_split_is_fixed_balanced_and_disjoint():
    verses = finetune.book_verses(finetune.kjv_text())
    assert set(finetune.BOOKS) <= set(verses) and len(verses["Genesis"]) > 1000 and len(verses["Leviticus"]) > 800
    train, test = finetune.split_task(verses, 160, 250, chars=48)
    assert (train, test) == finetune.split_task(verses, 160, 250, chars=48), "the split depends only on its seed"
    for part, n in ((train, 160), (test, 250)):
        assert np.bincount([label for _, label in part]).tolist() == [n, n], "balanced classes"
    test_inputs = {v[:48] for v, _ in test}
    assert not any(v[:48] in test_inputs for v, _ in train), "no test input is also a training input"
    assert len({v[:48] for v, _ in train + test}) == len(train) + len(test), "each input once, one label"


def test_quick_run_prints_the_table_and_beats_the_majority():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "tito", "milestone", "run", "finetune", "--quick", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    lines = run.stdout.strip().splitlines()
    assert lines, run.stdout + run.stderr
    result = json.loads(lines[-1])
    assert result["quick"] is True and result["seeds"] == 1
    assert [row["model"] for row in result["table"]][:3] == ["LoRA GPT (r=4)", "GRU, distilled", "GRU, from scratch"]
    assert result["lora_trainable_fraction"] <= 0.02, "LoRA r=4 trains at most 2 % of the GPT's parameters"
    assert result["majority_accuracy"] == 0.5, "the test set is balanced"
    assert result["lora_accuracy"] >= 0.65, f"even the quick LoRA run should beat chance clearly: {result}"
    assert result["passed"] == (result["order_holds"] and result["lora_over_majority"] >= 0.15)
    assert run.returncode == (0 if result["passed"] else 1)


def test_quick_is_refused_by_a_milestone_without_it(monkeypatch):
    from typer.testing import CliRunner

    from tito.main import app
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["milestone", "run", "mlp", "--quick"])
    assert result.exit_code == 2 and "has no --quick mode" in result.output, result.output
