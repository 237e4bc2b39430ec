"""`tito course release` of the whole course: a student copy with no solution text in it
(solution lines are looked for in every released file: lessons, provided.py, tests, tinytorch/)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_release_of_every_module_holds_no_solution(tmp_path):
    out = tmp_path / "student"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "tito", "course", "release", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no solution text found" in proc.stdout
    assert (out / "modules" / "01_tensor" / "provided.py").is_file() or not (REPO / "modules/01_tensor/provided.py").exists()
