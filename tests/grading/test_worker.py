"""The grading worker's parts: the memory cap lands on the kernel, and a wedged or dead
worker is reported and replaced (marker `grading`)."""

import resource
import sys

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from tito import grading  # noqa: E402
from tito.grading import Worker  # noqa: E402

pytestmark = pytest.mark.grading


def test_kernel_starts_with_the_memory_cap_and_the_grader_does_not(monkeypatch):
    limit = 3 * 1024**3
    monkeypatch.setitem(grading.KERNEL_MEMORY, "bytes", limit)
    cell = nbformat.v4.new_code_cell("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])")
    notebook = nbformat.v4.new_notebook(cells=[cell])
    NotebookClient(notebook, kernel_manager_class=grading.capped_kernel_manager(), timeout=60).execute()
    assert cell.outputs[0]["text"].strip() == str(limit)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != limit


def _worker(tmp_path, script: str) -> Worker:
    worker = Worker(tmp_path, tmp_path, 5, 0, tmp_path / "worker.log")
    worker.command = [sys.executable, "-c", script]
    return worker


READY = f"import json, sys, time; print(json.dumps({{'ready': {grading.READY!r}}}), flush=True); "


def test_a_worker_past_its_budget_is_killed_and_replaced(tmp_path):
    worker = _worker(tmp_path, READY + "time.sleep(60)")
    assert worker.grade("ann", "01_x", budget=1.5).startswith("timed out: the whole submission ran past 2 s")
    assert worker.proc is None
    worker.command = [sys.executable, "-c", READY + "sys.stdin.readline(); print(json.dumps({'status': 'graded'}))"]
    assert worker.grade("bob", "01_x", budget=30) == ""
    worker.close()


def test_a_worker_that_dies_is_reported_with_its_log(tmp_path):
    worker = _worker(tmp_path, "import sys; sys.stderr.write('boom in the grader'); sys.exit(3)")
    problem = worker.grade("ann", "01_x", budget=30)
    assert problem.startswith("grader exited 3") and "boom in the grader" in problem, problem
