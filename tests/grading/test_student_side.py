"""`tito module start / complete / list` on a small fake repo (jupytext only; no nbgrader needed)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat

from tito.exercises import not_complete_message
from tito.notebooks import strip_solutions

SOURCE = '''\
# %% [markdown]
# # Module 01 — Scale

# %%
#| default_exp scale

# %% nbgrader={"grade": false, "grade_id": "scale", "locked": false, "schema_version": 3, "solution": true}
#| export
def scale(x, k):
    ### BEGIN SOLUTION
    return x * k
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test-scale", "locked": true, "points": 2, "schema_version": 3, "solution": false}
assert scale(2, 3) == 6, "scale(2, 3) should be 6"
'''
LATER = SOURCE.replace("Scale", "Twice").replace("default_exp scale", "default_exp twice").replace(
    "scale", "twice").replace("x * k", "2 * x")


def tito(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "tito", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def make_repo(root: Path) -> Path:
    for folder, text in [("01_scale", SOURCE), ("02_twice", LATER)]:
        path = root / "modules" / folder / f"{folder[3:]}.py"
        path.parent.mkdir(parents=True)
        path.write_text(strip_solutions(text))
    (root / "pyproject.toml").write_text('[project]\nname = "student"\n')
    assert tito(root, "export").returncode == 0
    return root


def test_message_wording():
    assert not_complete_message("3", "losses") == "module 03 (losses) is not complete: `tito module start 03`"


def test_start_edit_notebook_complete(tmp_path):
    root = make_repo(tmp_path)
    listing = tito(root, "module", "list")
    assert "not started" in listing.stdout and "Module 01 — Scale" in listing.stdout, listing.stdout

    started = tito(root, "module", "start", "02")
    assert started.returncode == 0, started.stderr
    assert "module 01 (scale) is not complete: `tito module start 01`" in " ".join(started.stdout.split())
    refused = tito(root, "module", "complete", "02")
    assert refused.returncode == 2 and "module 01 (scale) is not complete" in refused.stderr, refused.stderr

    assert tito(root, "module", "start", "01").returncode == 0
    ipynb = root / "modules" / "01_scale" / "scale.ipynb"
    notebook = nbformat.read(ipynb, as_version=4)
    assert notebook.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    failing = tito(root, "module", "complete", "01")
    assert failing.returncode == 1 and "0/2" in failing.stdout, failing.stdout

    cell = next(c for c in notebook.cells if "raise NotImplementedError(" in c.source)
    stub = next(line for line in cell.source.splitlines() if "raise NotImplementedError(" in line)
    assert "scale: not written yet" in stub, stub  # the stub names the exercise
    cell.source = cell.source.replace(stub.strip(), "return x * k")
    nbformat.write(notebook, ipynb)
    os.utime(ipynb, (ipynb.stat().st_mtime + 5,) * 2)  # the notebook is the newer of the pair
    done = tito(root, "module", "complete", "01")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "updated scale.py from scale.ipynb" in done.stdout and "2/2" in done.stdout
    assert "return x * k" in (root / "modules" / "01_scale" / "scale.py").read_text()
    assert "return x * k" in (root / "tinytorch" / "scale.py").read_text()
    progress = json.loads((root / ".tito" / "progress.json").read_text())
    assert progress["01_scale"]["points"] == 2
    assert "tests passing" in tito(root, "module", "list").stdout
