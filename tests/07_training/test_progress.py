"""The JSONL log reader, sparklines and plot_history (matplotlib optional)."""

import json
import sys

import pytest

from tinytorch.training import plot_history, read_log, sparkline


def test_sparkline():
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([3.0, 3.0]) == "▁▁", "a flat curve is drawn at the bottom"
    assert sparkline([1.0, float("nan"), None, 2.0]) == "▁  █", "missing and non-finite values are gaps"
    assert len(sparkline(list(range(1000)), width=40)) == 40
    assert sparkline(list(range(1000)), width=40)[0] == "▁" and sparkline(list(range(1000)), width=40)[-1] == "█"
    assert sparkline([]) == ""


def _write_log(path):
    records = [{"kind": "train", "step": s, "loss": 2.0 / s} for s in range(1, 11)]
    records.append({"kind": "eval", "step": 10, "val_loss": 0.3, "val_accuracy": 0.9})
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "train", "st')  # cut by a crash
    return records


def test_read_log_skips_a_line_cut_short(tmp_path):
    records = _write_log(tmp_path / "log.jsonl")
    assert read_log(tmp_path / "log.jsonl") == records
    assert read_log(tmp_path / "missing.jsonl") == []


def test_plot_history_falls_back_to_sparklines(tmp_path, monkeypatch, capsys):
    _write_log(tmp_path / "log.jsonl")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert plot_history(tmp_path / "log.jsonl", tmp_path / "loss.png") is None
    out = capsys.readouterr().out
    assert "loss" in out and "█" in out and "val_loss" in out
    assert not (tmp_path / "loss.png").exists()


def test_plot_history_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    _write_log(tmp_path / "log.jsonl")
    png = plot_history(tmp_path / "log.jsonl", tmp_path / "loss.png")
    assert png == tmp_path / "loss.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
