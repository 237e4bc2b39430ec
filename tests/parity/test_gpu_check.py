"""bench/gpu.py, the one-shot GPU check, in its --dry-run: the plan, the imports, and its GPT phase on a
tiny config on the CPU (PyTorch and TinyTorch from the same weights), so the script is known to work before
a GPU machine is lent."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.parity


def load_gpu_check(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts bench/ first; undone after the test
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_plans_every_phase_and_matches_torch_on_a_tiny_gpt(capsys, monkeypatch):
    load_gpu_check(monkeypatch).main(["--dry-run"])
    out = capsys.readouterr().out
    assert "-m gpu" in out, out  # the nccl phase selects the gpu-marked tests
    assert "--maxfail=1" in out and str(ROOT / "tests") in out, out
    assert "tiny fp32 on cpu (float32)" in out and "(ok)" in out and "host syncs per step 0" in out, out
    assert out.rstrip().endswith("dry run: ok"), out


def test_parity_verdict_and_options(monkeypatch):
    gpu = load_gpu_check(monkeypatch)
    check = {"loss_torch": 4.0, "loss_tinytorch": 4.0001, "logits_max_rel": 1e-6, "grad_max_rel": {"w": 1e-5}}
    assert gpu.parity_ok(check, "fp32")
    assert not gpu.parity_ok({**check, "grad_max_rel": {"w": 0.5}}, "fp32")
    assert not gpu.parity_ok({**check, "loss_tinytorch": 4.1}, "fp32")
    with pytest.raises(SystemExit):
        gpu.parse_args(["--only", "gpt,nope"])
    assert gpu.parse_args(["--only", "gpt, suite"]).only == ["gpt", "suite"]
