"""`tito milestone`: the registry, the module checks, and the MLP milestone itself (a real training run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tito import milestone
from tito.main import app

REPO = Path(__file__).resolve().parents[2]


def tito(*args):
    return CliRunner().invoke(app, ["milestone", *args])


def test_mlp_milestone_reaches_97_percent_in_under_a_minute():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "tito", "milestone", "run", "mlp", "--json", "--seed", "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json prints one JSON object and nothing else, got {run.stdout!r}"
    result = json.loads(lines[0])
    assert result["test_accuracy"] >= 0.97, result
    assert result["seconds"] < 60, result
    assert result["parameters"] == 64 * 256 + 256 + 256 * 10 + 10
    assert result["passed"] is True
    confusion = result["confusion"]
    assert sum(map(sum, confusion)) == 359 and sum(confusion[i][i] for i in range(10)) / 359 == result["test_accuracy"]


def test_list_shows_every_milestone(monkeypatch):
    monkeypatch.chdir(REPO)
    result = tito("list")
    assert result.exit_code == 0, result.output
    assert "mlp" in result.output and "ready" in result.output and "01, 02" in result.output


def test_an_unfinished_module_is_named_not_a_traceback(monkeypatch):
    monkeypatch.chdir(REPO)

    def stripped():
        raise NotImplementedError()
    monkeypatch.setitem(milestone.CHECKS, "05", stripped)
    result = tito("run", "mlp", "--json")
    assert result.exit_code == 2
    assert "module 05 (optimizers) is not complete: `tito module start 05`" in result.output
    assert "Traceback" not in result.output
    listing = tito("list")
    assert "(optimizers)" in listing.output and "ready" not in listing.output


def test_a_not_implemented_error_during_the_run_names_its_module(monkeypatch):
    monkeypatch.chdir(REPO)

    class Script:
        @staticmethod
        def run(seed, quiet):
            from tinytorch.data import Sampler
            iter(Sampler())  # module 06's base class: raises NotImplementedError
    monkeypatch.setattr(milestone, "load_script", lambda root, m: Script)
    result = tito("run", "mlp")
    assert result.exit_code == 2
    assert "module 06 (data) is not complete" in result.output, result.output


def test_unknown_milestone(monkeypatch):
    monkeypatch.chdir(REPO)
    result = tito("run", "gpt2-xl")
    assert result.exit_code == 2 and "no milestone named 'gpt2-xl'" in result.output and "mlp" in result.output
