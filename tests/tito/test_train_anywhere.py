"""`tito train gpt` and `tito sample` from a folder outside the repo: the recipe comes from the repo tito was
installed from (pip install -e .), the run goes under the working folder."""

import json
from pathlib import Path

from typer.testing import CliRunner

from tito.main import app

REPO = Path(__file__).resolve().parents[2]


def test_train_and_sample_outside_the_repo(tmp_path, monkeypatch):
    """It failed with 'no TinyTorch repo above <folder>' although the package was installed."""
    (tmp_path / "fox.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert REPO not in tmp_path.parents
    trained = CliRunner().invoke(app, ["train", "gpt", "--config", "tiny", "--steps", "2", "--sample-tokens", "0",
                                       "--data", "fox.txt", "--json"])
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.output)["steps"] == 2
    assert (tmp_path / "runs" / "gpt").is_dir(), "the run goes under the working folder"
    sampled = CliRunner().invoke(app, ["sample", "--prompt", "the", "--max-new-tokens", "5"])
    assert sampled.exit_code == 0, sampled.output
