"""Tests that can fail: with every solution stripped (as nbgrader's release does), every
graded test cell must fail; with the solutions in place, every one must pass.

Each check works on a copy of the repo (modules/, tito/, pyproject.toml) whose tinytorch/
is exported from the (stripped) modules, run with PYTHONPATH=<copy> so that
`import tinytorch` resolves to the copy, not the developer's package.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tito.notebooks import list_modules, strip_solutions

REPO = Path(__file__).resolve().parents[2]

FIXTURE = '''\
# %%
#| default_exp core.fixture

# %% nbgrader={"grade": false, "grade_id": "scale", "locked": false, "schema_version": 3, "solution": true}
#| export
def scale(x, k):
    ### BEGIN SOLUTION
    return x * k
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test-scale-import", "locked": true, "points": 1, "schema_version": 3, "solution": false}
from tinytorch.core.fixture import scale as exported_scale
assert exported_scale(2, 3) == 6, "the exported scale(2, 3) should be 6"

# %% nbgrader={"grade": true, "grade_id": "test-scale", "locked": true, "points": 2, "schema_version": 3, "solution": false}
assert scale(1, 0) == 0, "scale(1, 0) should be 0"
### BEGIN HIDDEN TESTS
assert scale(-1, 2) == -2, "scale(-1, 2) should be -2"
### END HIDDEN TESTS
'''


def python(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)


def build_copy(source: Path, dest: Path, strip: bool) -> Path:
    """Copy the repo's sources, optionally strip solutions, export tinytorch/ in the copy."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source / "modules", dest / "modules", ignore=ignore)
    shutil.copytree(REPO / "tito", dest / "tito", ignore=ignore)
    shutil.copy(source / "pyproject.toml", dest / "pyproject.toml")
    if strip:
        for module in list_modules(dest):
            module.path.write_text(strip_solutions(module.path.read_text()))
    export = python(dest, "-m", "tito", "export", "--all")
    assert export.returncode == 0, export.stdout + export.stderr
    where = python(dest, "-c", "import tinytorch, tito; print(tinytorch.__file__); print(tito.__file__)")
    assert where.stdout.split() == [str(dest / "tinytorch/__init__.py"), str(dest / "tito/__init__.py")], where.stderr
    return dest


def graded_results(root: Path) -> dict[str, dict]:
    """Cellrunner results of every module in `root`, by module path."""
    results = {}
    for module in list_modules(root):
        out = root / f"{module.folder}.json"
        run = python(root, "-m", "tito.cellrunner", str(module.path), "--json", str(out))
        assert run.returncode == 0, run.stderr
        results[module.rel] = json.loads(out.read_text())
    return results


def check_release_and_solution(source: Path, tmp_path: Path) -> None:
    assert list_modules(source), f"no modules under {source / 'modules'}"
    solved = graded_results(build_copy(source, tmp_path / "solved", strip=False))
    stripped = graded_results(build_copy(source, tmp_path / "stripped", strip=True))

    for module, result in solved.items():
        assert result["graded"], f"{module} has no graded test cells, so nothing in it can fail"
        failing = {g["grade_id"]: g["failure"] for g in result["graded"] if not g["passed"]}
        assert not failing, f"{module}: graded cells fail WITH the solutions: {failing}"
        assert not result["errors"], f"{module}: cells raise WITH the solutions: {result['errors']}"

    passing = {m: [g["grade_id"] for g in r["graded"] if g["passed"]] for m, r in stripped.items()}
    passing = {m: ids for m, ids in passing.items() if ids}
    assert not passing, f"graded cells that PASS with the solutions stripped (they test nothing): {passing}"


def test_fixture_module_fails_when_stripped(tmp_path):
    source = tmp_path / "source"
    (source / "modules/01_fixture").mkdir(parents=True)
    (source / "modules/01_fixture/fixture.py").write_text(textwrap.dedent(FIXTURE))
    (source / "pyproject.toml").write_text('[project]\nname = "fixture"\n')
    check_release_and_solution(source, tmp_path)


def test_a_graded_cell_that_tests_nothing_is_caught(tmp_path):
    source = tmp_path / "source"
    (source / "modules/01_fixture").mkdir(parents=True)
    weak = FIXTURE + (
        '\n# %% nbgrader={"grade": true, "grade_id": "test-weak", "locked": true, "points": 1, '
        '"schema_version": 3, "solution": false}\nassert callable(scale)\n'
    )
    (source / "modules/01_fixture/fixture.py").write_text(weak)
    (source / "pyproject.toml").write_text('[project]\nname = "fixture"\n')
    with pytest.raises(AssertionError, match="test-weak"):
        check_release_and_solution(source, tmp_path)


# The repo's own modules: tests/grading/test_standalone.py checks each one stripped on its own.
