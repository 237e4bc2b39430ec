"""Student code walking frames to the grader's bookkeeping (marker `grading`).

The verdict runs every cell in a worker thread of its own: a student's frame has no grader's
frame below it, and the ways to the grader's thread's frames (sys._current_frames, the collector's
lists, a frame read in the grader's thread) are refused and reported. Each attacker writes the
wrong answer, then looks for a frame holding the grader's plan, cell results or nonce, and, if it
finds one, rewrites them or forges the answer. None may pass a cell. Honest code that needs frames
in its own thread (namedtuple, typing, logging, traceback, warnings) still passes, and a cell past
its time is stopped, or left behind when it cannot be, and only it fails. Most run the verdict process
directly (as test_verdict.py does); one grades end to end in the sandbox (as test_hostile.py does).
"""

import importlib.util
import json
import time
from pathlib import Path

import pytest

from tito.grading import run_verdict

pytestmark = pytest.mark.grading

GRADER = "import numpy as np\n"
TESTS = {
    "test-scale": 'assert scale(2, 3) == 6, "scale(2, 3) should be 6"',
    "test-array": "assert np.allclose(scale(np.ones(2), 3), 3)",
}
WRONG = "def scale(x, k):\n    return x + k\n"
# Rewrites whatever of the grader's it finds below `frame`: forges the answer with main()'s nonce and
# copy of stdout, marks run()'s results passed, swaps its plan's test code for `pass`, clears its alarms.
HUNT = '''
import os, sys, gc, types, threading
def _hunt(frame):
    while frame is not None:
        space = frame.f_locals
        if "nonce" in space and "out" in space:
            cells = {"test-scale": {"passed": True, "error": ""}, "test-array": {"passed": True, "error": ""}}
            space["out"].write(json.dumps({"nonce": space["nonce"], "cells": cells, "tampered": ""}) + "\\n")
            space["out"].flush()
            os._exit(0)
        if isinstance(space.get("cells"), dict):
            for cell in space["cells"].values():
                cell.update(passed=True, error="")
        if "plan" in space:
            plan = space["plan"]
            try:
                plan[:] = [step[:4] + (compile("pass", "<x>", "exec"), None) for step in plan]
            except Exception:
                pass
        if isinstance(space.get("alarms"), list):
            space["alarms"].clear()
        frame = frame.f_back
import json
'''
STRATEGIES = {
    "getframe": "_hunt(sys._getframe())",
    "traceback": "try:\n    raise ValueError\nexcept ValueError as e:\n    _hunt(e.__traceback__.tb_frame)",
    "gc-referrers": "for o in gc.get_referrers(globals()):\n    if isinstance(o, types.FrameType):\n        _hunt(o)",
    "gc-objects": "for o in gc.get_objects():\n    if isinstance(o, types.FrameType):\n        _hunt(o)",
    "current-frames": "for f in sys._current_frames().values():\n    _hunt(f)",
    "from-a-thread": "def _look():\n    time.sleep(0.2)\n    for f in sys._current_frames().values():\n        _hunt(f)\n"
                     "import time\nthreading.Thread(target=_look, daemon=True).start()\ntime.sleep(0.5)",
    "finalizer": "class _Late:\n    def __del__(self):\n        try:\n            _hunt(sys._getframe())\n"
                 "        except Exception:\n            pass\n"
                 "gc.set_threshold(1)\nfor _ in range(200):\n    a = _Late(); a.me = a\ndel a",
}
REFUSED = {"gc-referrers", "gc-objects", "current-frames", "from-a-thread"}
# The grader's worker: its loop's locals hand out the cell it runs and its signals.
WORKER = '''
import sys, threading, time
def _worker_frame():
    frame = sys._getframe()
    while frame is not None and "slot" not in frame.f_locals:
        frame = frame.f_back
    return frame
def _forge(frame):
    space = frame.f_locals
    time.sleep(0.05)
    space["slot"][0] = (compile("pass", "<x>", "exec"), {})
    for lock in (space["go"], space["done"]):
        try:
            lock.release()
        except RuntimeError:
            pass
'''


def verdict(tmp_path, cells: list[dict], timeout: int = 10) -> dict:
    answer = run_verdict(cells, tmp_path, None, timeout, 60)
    assert "error" not in answer, answer
    return answer


def cells(solution: str, tests: dict = TESTS, extra: tuple = ()) -> list[dict]:
    return [{"source": GRADER, "grade_id": None, "grader": True},
            {"source": solution, "grade_id": None, "grader": False, "theirs": ["scale"]}, *extra,
            *({"source": source, "grade_id": gid, "grader": True} for gid, source in tests.items())]


def indent(code: str) -> str:
    return "".join("    " + line + "\n" for line in code.splitlines())


@pytest.mark.parametrize("where", ["cell", "tested-function"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_walking_frames_to_the_grader_passes_nothing(tmp_path, strategy, where):
    code = STRATEGIES[strategy]
    if where == "cell":
        solution = HUNT + WRONG + code
    else:
        solution = HUNT + "def scale(x, k):\n" + indent(code) + "    return x + k\n"
    answer = verdict(tmp_path, cells(solution))
    passed = [gid for gid, cell in answer["cells"].items() if cell["passed"]]
    assert passed == [], (strategy, where, answer)
    assert sorted(answer["cells"]) == sorted(TESTS), answer
    if strategy in REFUSED:
        assert answer["tampered"], (strategy, where, answer)


def test_forging_the_workers_outcome_is_tampering(tmp_path):
    solution = WORKER + ("def scale(x, k):\n    threading.Thread(target=_forge, args=(_worker_frame(),)).start()\n"
                         "    time.sleep(0.2)\n    return x + k\n")
    answer = verdict(tmp_path, cells(solution))
    assert [gid for gid, cell in answer["cells"].items() if cell["passed"]] == [], answer
    assert answer["tampered"], answer


def test_proc_mem_is_refused(tmp_path):
    solution = WRONG + "import os\nfor path in ('/proc/self/mem', f'/proc/{os.getpid()}/mem'):\n" \
                       "    try:\n        open(path, 'rb').close()\n    except OSError:\n        pass\n"
    answer = verdict(tmp_path, cells(solution))
    assert not any(cell["passed"] for cell in answer["cells"].values()) and "mem" in answer["tampered"], answer


HONEST_TOOLS = '''
import collections, logging, traceback, typing, warnings
Pair = collections.namedtuple("Pair", "a b")
class Named(typing.NamedTuple):
    a: int
    b: int = 0
def scale(x, k):
    Pair(1, 2), Named(1)
    logging.warning("scaling %s", k)
    warnings.warn("a student's warning")
    try:
        raise ValueError("seen")
    except ValueError:
        assert "seen" in traceback.format_exc()
    return x * k
scale(1, 2)
'''


def test_honest_code_using_frames_in_its_own_thread_passes(tmp_path):
    answer = verdict(tmp_path, cells(HONEST_TOOLS))
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer
    assert sorted(answer["cells"]) == sorted(TESTS)


def test_a_looping_cell_is_stopped_and_grading_goes_on(tmp_path):
    loop = {"source": "while True:\n    pass", "grade_id": None, "grader": False}
    start = time.monotonic()
    answer = verdict(tmp_path, cells("def scale(x, k):\n    return x * k\n", extra=(loop,)), timeout=2)
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer
    assert time.monotonic() - start < 2 + 10, answer


@pytest.mark.parametrize("blocked", ["import time\ntime.sleep(10**6)", "import threading\nthreading.Event().wait()"])
def test_a_cell_blocked_past_its_time_fails_alone(tmp_path, blocked):
    """Blocked in C (a sleep, a wait: no exception can reach it), the cell is left behind after its time and a
    grace; a new worker runs the cells after it, so only that cell fails."""
    stuck = {"source": blocked, "grade_id": "test-stuck", "grader": True}
    start = time.monotonic()
    answer = verdict(tmp_path, cells("def scale(x, k):\n    return x * k\n", extra=(stuck,)), timeout=2)
    took = time.monotonic() - start
    assert took < 2 + 2 + 8, (took, answer)  # the cell's time, the grace to stop, the process's start
    assert answer["tampered"] == "", answer
    assert answer["cells"]["test-stuck"]["passed"] is False and "past its time" in answer["cells"]["test-stuck"]["error"]
    assert all(answer["cells"][gid]["passed"] for gid in TESTS), answer


# Plants an object in the worker frame's locals dict whose __del__ (run wherever a refresh of that dict
# drops it, the grader's thread included) marks the cell passed.
PLANT = '''
import sys
class _Evil:
    def __init__(self, d):
        self.d = d
    def __del__(self):
        self.d["passed"], self.d["error"] = True, ""
def _plant():
    f = sys._getframe()
    while f is not None and "slot" not in f.f_locals:
        f = f.f_back
    d = f.f_locals
    for name in ("err", "passed", "error", "code", "space"):
        d[name] = _Evil(d)
def scale(x, k):
    _plant()
    return x + k
'''


def test_planting_finalizers_in_the_workers_locals_passes_nothing(tmp_path):
    answer = verdict(tmp_path, cells(PLANT))
    assert [gid for gid, cell in answer["cells"].items() if cell["passed"]] == [], answer


def test_a_finalizer_using_frames_in_the_graders_thread_is_not_tampering(tmp_path):
    """A student's object freed in the grader's thread (a test rebinds its name) may log in __del__: its
    frame access is refused there, quietly, and grading goes on."""
    solution = ("import logging, collections\nclass Res:\n    def __del__(self):\n        logging.warning('freed')\n"
                "        collections.namedtuple('P', 'a')\n"
                "def scale(x, k):\n    return x * k\nt = Res()\n")
    tests = {"test-rebind": "t = 1\nassert scale(2, 3) == 6", **TESTS}
    answer = verdict(tmp_path, cells(solution, tests=tests))
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer


def test_an_interrupt_of_the_graders_thread_changes_nothing(tmp_path):
    """A right answer that also interrupts the grader's thread: every cell is graded as usual."""
    solution = ("import _thread, os, signal\n_thread.interrupt_main()\nos.kill(os.getpid(), signal.SIGINT)\n"
                "def scale(x, k):\n    return x * k\n")
    answer = verdict(tmp_path, cells(solution))
    assert answer["tampered"] == "" and all(cell["passed"] for cell in answer["cells"].values()), answer


# ---------------------------------------------------------------- end to end, in the sandbox

def _hostile():
    """test_hostile.py's course and submission helpers (tests are not a package here)."""
    spec = importlib.util.spec_from_file_location("_hostile_helpers", Path(__file__).with_name("test_hostile.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sandbox_missing() -> str:
    try:
        from tito import sandbox
    except ImportError as err:
        return str(err)
    return sandbox.why_unavailable()


@pytest.mark.skipif(bool(_sandbox_missing()), reason=f"no sandbox here: {_sandbox_missing()}")
def test_frame_walkers_end_to_end(tmp_path):
    pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
    import nbformat

    hostile = _hostile()
    repo, course = hostile.make_course(tmp_path)
    inbox = tmp_path / "inbox"
    hunt = HUNT + "_hunt(sys._getframe())\n"
    hunt_in_scale = HUNT + "def _grader():\n    _hunt(sys._getframe())\n"
    students = {
        "walker": hostile.submission(hostile.WRONG, hunt),
        "scale-walker": hostile.submission("_grader()\n    " + hostile.WRONG, hunt_in_scale),
        "gc-walker": hostile.submission(hostile.WRONG, HUNT + STRATEGIES["gc-referrers"]),
        "tools": hostile.submission("return x * k", HONEST_TOOLS.replace("def scale", "def _unused")
                                    .replace("scale(1, 2)", "_unused(1, 2)")),
    }
    for name, notebook in students.items():
        (inbox / name).mkdir(parents=True)
        nbformat.write(notebook, inbox / name / "fixture.ipynb")
    hostile.tito(repo, "course", "collect", str(inbox), "--course", str(course))
    hostile.tito(repo, "course", "autograde", "--course", str(course), "--timeout", "10", "-j", "2")
    results = {name: json.loads((course / "tito" / "results" / hostile.student_id(name) / "01_fixture.json").read_text())
               for name in students}
    summary = {n: (r["status"], r["score"], r["reason"][:80]) for n, r in results.items()}
    for name in ("walker", "scale-walker", "gc-walker"):
        assert not results[name]["score"], summary
    assert results["gc-walker"]["status"] == "tampering", summary
    assert (results["tools"]["status"], results["tools"]["score"]) == ("graded", hostile.FULL), summary
