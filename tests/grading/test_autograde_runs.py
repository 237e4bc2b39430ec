"""Runs of `tito course autograde` cut short, `release` of a partial selection, and the report's notes.

Fast: grade_all runs with fake workers (no nbgrader, no kernels); the report reads hand-written results.
"""

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")

from tito import course as course_cli  # noqa: E402
from tito import grading  # noqa: E402
from tito.errors import TitoError  # noqa: E402
from tito.notebooks import list_modules, select_modules  # noqa: E402

pytestmark = pytest.mark.grading
REPO = Path(__file__).resolve().parents[2]


def old_result(course: Path, student: str, module: str = "01_tensor") -> dict:
    result = {"student": student, "module": module, "status": "graded", "score": 7, "max_score": 10,
              "reason": "", "tests_edited": [], "cells": []}
    grading.write_result(grading.Job(course, REPO, student, module, 5, 0), result)
    return result


def result_of(course: Path, student: str, module: str = "01_tensor") -> dict | None:
    path = course / grading.RESULTS / student / f"{module}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def fake_workers(monkeypatch, grade):
    """grading.Worker replaced by one that calls grade(worker, student, module) -> problem."""

    class FakeWorker:
        def __init__(self, course, root, timeout, memory_mb, log, sandboxed=True, budget=600.0):
            self.course, self.log, self.killed = course, log, threading.Event()

        def start(self):
            pass

        def grade(self, student, module, budget):
            return grade(self, student, module)

        def kill(self):
            self.killed.set()

        def close(self):
            pass

    monkeypatch.setattr(grading, "Worker", FakeWorker)


def write_new(worker, student: str, module: str) -> str:
    grading.write_result(grading.Job(worker.course, REPO, student, module, 5, 0),
                         {"student": student, "module": module, "status": "graded", "score": 10, "max_score": 10,
                          "reason": "", "tests_edited": [], "cells": []})
    return ""


def test_a_rerun_cut_short_keeps_every_result_it_did_not_replace(tmp_path, monkeypatch):
    students = ["ann", "ben", "cat"]
    for student in students:
        old_result(tmp_path, student)

    def grade(worker, student, module):
        if student == "ben":
            raise KeyboardInterrupt  # the run dies here (Ctrl-C, SSH drop, OOM)
        return write_new(worker, student, module)

    fake_workers(monkeypatch, grade)
    with pytest.raises(KeyboardInterrupt):
        course_cli.grade_all(tmp_path, REPO, [(s, "01_tensor") for s in students], 5, 0, 1)
    assert result_of(tmp_path, "ann")["score"] == 10  # regraded
    assert result_of(tmp_path, "ben")["score"] == 7  # interrupted: the old grade stays
    assert result_of(tmp_path, "cat")["score"] == 7  # never reached: the old grade stays


def test_a_worker_that_writes_nothing_is_not_credited_with_the_old_result(tmp_path, monkeypatch):
    """An earlier result stays on disk during a re-run: a grader that answers without writing one must not
    pass it off as this run's."""
    old_result(tmp_path, "dan")
    fake_workers(monkeypatch, lambda worker, student, module: "")
    (result,) = course_cli.grade_all(tmp_path, REPO, [("dan", "01_tensor")], 5, 0, 1)
    assert result["status"] == "not graded" and result["reason"] == "the grader wrote no result"


def test_one_ctrl_c_stops_autograde_promptly(tmp_path, monkeypatch):
    students = [f"s{n}" for n in range(8)]
    for student in students[:2]:
        old_result(tmp_path, student)

    def grade(worker, student, module):
        if worker.killed.wait(0.5):  # a submission takes 0.5 s unless its worker is killed
            return "grader exited -9: "
        return write_new(worker, student, module)

    fake_workers(monkeypatch, grade)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    main = threading.main_thread().ident
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
    start = time.perf_counter()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            course_cli.grade_all(tmp_path, REPO, [(s, "01_tensor") for s in students], 5, 0, 2)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - start < 1.5  # not the 2 s that grading all 8 takes
    assert [s for s in students if result_of(tmp_path, s)] == students[:2]  # no job started after Ctrl-C
    assert all(result_of(tmp_path, s)["score"] == 7 for s in students[:2])  # killed jobs keep their old grade


def test_release_refuses_a_module_without_the_ones_it_builds_on():
    modules = list_modules(REPO)
    with pytest.raises(TitoError, match=r"02_autograd builds on 01_tensor.*--out OUT 01 02"):
        course_cli.check_release_selection(modules, select_modules(REPO, ["02"]))
    course_cli.check_release_selection(modules, select_modules(REPO, ["01", "02"]))  # a prefix is whole


def test_release_command_names_what_is_missing(tmp_path):
    out = tmp_path / "student"
    proc = subprocess.run([sys.executable, "-m", "tito", "course", "release", "--out", str(out), "03"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "COLUMNS": "300",
                                                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "01_tensor, 02_autograd" in proc.stdout + proc.stderr
    assert not out.exists()


def test_report_shows_why_a_graded_score_is_low(tmp_path, capsys):
    course = tmp_path / "course"
    grading.init_course(course)
    (course / "release" / "01_tensor").mkdir(parents=True)
    result = old_result(course, "dora")
    result["reason"] = "export failed: modules/01_tensor/tensor.py:12: does not parse"
    grading.write_result(grading.Job(course, REPO, "dora", "01_tensor", 5, 0), result)
    course_cli.report_command(course=course, csv_path=None)
    assert "dora 01_tensor: graded export failed: modules/01_tensor/tensor.py:12: does not parse" in \
        " ".join(capsys.readouterr().out.split())


def test_a_result_write_cut_short_keeps_the_old_result(tmp_path, monkeypatch):
    """The new result is written beside the old one and swapped in whole: a worker killed while writing
    leaves the student's earlier grade, not nothing."""
    old = old_result(tmp_path, "erin")

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        grading.write_result(grading.Job(tmp_path, REPO, "erin", "01_tensor", 5, 0), {**old, "score": 0})
    monkeypatch.undo()
    assert result_of(tmp_path, "erin") == old
