"""Feedback HTML shows no hidden test: neither its code nor the message of one that failed.

A small fixture course (one module with a hidden test) graded end to end; marker `grading`.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
import nbformat  # noqa: E402

from tito import sandbox  # noqa: E402
from tito.grading import HIDDEN_FAILED, hide_hidden_failures  # noqa: E402
from tito.notebooks import to_notebook  # noqa: E402

pytestmark = pytest.mark.grading
REPO = Path(__file__).resolve().parents[2]
SECRET = "secret-hidden-message"
UNSAFE = ["--unsafe-no-sandbox"] if sandbox.why_unavailable() else []  # sandboxed where the machine can

MODULE = '''\
# %%
#| default_exp fixture

# %% nbgrader={"grade": false, "grade_id": "scale", "locked": false, "schema_version": 3, "solution": true}
#| export
def scale(x, k):
    ### BEGIN SOLUTION
    return x * k
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test-scale", "locked": true, "points": 2, "schema_version": 3, "solution": false}
assert scale(2, 3) == 6, "scale(2, 3) should be 6"
### BEGIN HIDDEN TESTS
zero = scale(0, 5)
assert zero == 0, f"{SECRET}: scale(0, 5) gave {zero}"
### END HIDDEN TESTS
print("all scale tests passed")
'''.replace("{SECRET}", SECRET)


def tito(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "tito", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"tito {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def submission(body: str):
    """The module as a student notebook with `body` as the solution."""
    return to_notebook(MODULE.replace("return x * k", body))


def test_feedback_hides_failing_hidden_tests_but_keeps_visible_messages(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "tito", repo / "tito", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "pyproject.toml").write_text('[project]\nname = "fixture"\n')
    (repo / "modules" / "01_fixture").mkdir(parents=True)
    (repo / "modules" / "01_fixture" / "fixture.py").write_text(MODULE)
    course = tmp_path / "course"
    tito(repo, "course", "generate", "--course", str(course))
    inbox = tmp_path / "inbox"
    students = {
        "hidden": "return 6 if (x, k) == (2, 3) else 1",  # passes the visible test only
        "visible": "return x + k",  # fails the visible test
        "full": "return x * k",
    }
    for student, body in students.items():
        (inbox / student).mkdir(parents=True)
        nbformat.write(submission(body), inbox / student / "fixture.ipynb")
    tito(repo, "course", "collect", str(inbox), "--course", str(course))
    tito(repo, "course", "autograde", "--course", str(course), "--timeout", "20", "-j", "2", *UNSAFE)
    tito(repo, "course", "feedback", "--course", str(course))

    def feedback(student):
        return (course / "feedback" / student / "01_fixture" / "fixture.html").read_text()

    def score(student):
        return json.loads((course / "tito" / "results" / student / "01_fixture.json").read_text())["score"]

    assert (score("hidden"), score("visible"), score("full")) == (0, 0, 2)
    hidden, visible, full = feedback("hidden"), feedback("visible"), feedback("full")
    for html in (hidden, visible, full):
        assert SECRET not in html and "scale(0, 5)" not in html, "feedback shows a hidden test"
    assert HIDDEN_FAILED in hidden
    assert "scale(2, 3) should be 6" in visible and HIDDEN_FAILED not in visible
    assert "all scale tests passed" in full and HIDDEN_FAILED not in full
    # the points stay the gradebook's: 0 of 2 for the failed cell, 2 of 2 for the full marks
    assert "Score: 0.0 / 2.0" in hidden or "0.0 / 2.0" in hidden, hidden[-2000:]
    assert "2.0 / 2.0" in full


def _cell(source: str, traceback: list[str], ename: str = "AssertionError", evalue: str = "boom"):
    return nbformat.from_dict({"cell_type": "code", "source": source, "metadata": {}, "execution_count": 1,
                               "outputs": [{"output_type": "stream", "name": "stdout", "text": "printed\n"},
                                           {"output_type": "error", "ename": ename, "evalue": evalue,
                                            "traceback": traceback}]})


SOURCE = "assert ok\n### BEGIN HIDDEN TESTS\nassert secret\n### END HIDDEN TESTS\n"


def test_hide_hidden_failures_by_failing_line():
    hidden = _cell(SOURCE, ["\x1b[0;31mAssertionError\x1b[0m",
                            "Cell \x1b[0;32mIn[3], line 3\x1b[0m\n  ----> 3 assert secret"], evalue="secret")
    hide_hidden_failures(hidden)
    assert [(o.output_type, o.evalue) for o in hidden.outputs] == [("error", HIDDEN_FAILED)]
    assert "secret" not in json.dumps(hidden.outputs)

    context = "----> 1 assert ok\n      2 ### BEGIN HIDDEN TESTS\n      3 assert secret"
    visible = _cell(SOURCE, [f"Cell In[3], line 1\n{context}"])
    hide_hidden_failures(visible)
    assert [(o.ename, o.evalue, o.traceback) for o in visible.outputs] == [("AssertionError", "boom",
                                                                            ["AssertionError: boom"])]

    unknown = _cell(SOURCE, ["no line here"])
    hide_hidden_failures(unknown)
    assert unknown.outputs[0].evalue == HIDDEN_FAILED

    plain = _cell("assert ok\n", ["Cell In[3], line 1"])
    hide_hidden_failures(plain)
    assert len(plain.outputs) == 2, "a cell without hidden tests is left as it is"
