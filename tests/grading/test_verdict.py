"""The verdict process against students who rewire the grader rather than solve (marker `grading`).

Each attacker writes a wrong `scale`, then tries to make the graded cells pass anyway: by
rewiring the verdict script or the modules it writes its answer with, by rebinding the
tests' names (from a cell, or from inside the function the test calls), by swapping a
library function's code, or by hiding a thread from the invariants. None may pass a cell;
the ones the invariants can see are reported as tampering. The verdict runs here without a
sandbox (a plain subprocess: fast, and the sandbox changes nothing of this).
"""

import pytest

from tito.grading import TRUSTED, run_verdict

pytestmark = pytest.mark.grading

GRADER = "import numpy as np\nfrom numpy.testing import assert_allclose\n"
TESTS = {
    "test-scale": 'assert scale(2, 3) == 6, "scale(2, 3) should be 6"',
    "test-array": "assert isinstance(scale(np.ones(2), 3), np.ndarray)\nassert np.allclose(scale(np.ones(2), 3), 3)",
    "test-from": "assert_allclose(scale(np.ones(2), 2), 2)",
    "test-npt": "import numpy.testing\nnumpy.testing.assert_array_equal(scale(np.ones(2), 2), [2, 2])",
}
YES = "{g: {'passed': True, 'error': ''} for g in obj['cells']}"
ATTACKS = {
    # the verdict script itself, and json, which it used to write its answer with
    "verdict-module": "import sys\nv = sys.modules['__main__']\nv._timed = lambda *a, **k: None\n"
                      "v._changed = lambda *a, **k: ''",
    "json-dumps": "import json\n_dumps = json.dumps\n"
                  "def _forge(obj, *a, **k):\n    if isinstance(obj, dict) and 'nonce' in obj:\n"
                  f"        obj = {{**obj, 'cells': {YES}, 'tampered': ''}}\n    return _dumps(obj, *a, **k)\n"
                  "json.dumps = _forge",
    "json-encoder-class": "import json\n_encode = json.JSONEncoder.encode\n"
                          "def _forge(self, obj):\n    if isinstance(obj, dict) and 'nonce' in obj:\n"
                          f"        obj = {{**obj, 'cells': {YES}, 'tampered': ''}}\n    return _encode(self, obj)\n"
                          "json.JSONEncoder.encode = _forge",
    # the tests' names: rebound from inside the function a test calls, or from a cell
    "globals-from-the-tested-function": "class _Yes:\n    def __getattr__(self, name):\n"
                                        "        return object if name == 'ndarray' else (lambda *a, **k: True)\n"
                                        "def scale(x, k):\n    globals()['np'] = _Yes()\n"
                                        "    globals()['assert_allclose'] = lambda *a, **k: None\n    return x + k",
    "rebound-from-import": "assert_allclose = lambda *a, **k: None",
    # a library function's code swapped in place (the module's attribute stays the same object)
    "code-swap": "import numpy as np\nnp.allclose._implementation.__code__ = "
                 "(lambda a, b, rtol=1e-05, atol=1e-08, equal_nan=False: True).__code__",
    # a module the tests import only later
    "late-module": "import numpy.testing\nnumpy.testing.assert_array_equal = lambda *a, **k: None",
    # a thread threading does not count
    "raw-thread": "import _thread, time\ndef _spin():\n    while True:\n        time.sleep(0.01)\n"
                  "_thread.start_new_thread(_spin, ())",
}
REPORTED = {"verdict-module", "json-dumps", "json-encoder-class", "code-swap", "late-module",
            "raw-thread"}


def cells(solution: str) -> list[dict]:
    return [{"source": GRADER, "grade_id": None, "grader": True},
            {"source": solution, "grade_id": None, "grader": False, "theirs": ["scale"]},
            *({"source": source, "grade_id": gid, "grader": True} for gid, source in TESTS.items())]


def verdict(tmp_path, solution: str) -> dict:
    answer = run_verdict(cells(solution), tmp_path, None, 10, 60)
    assert "error" not in answer, answer
    return answer


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_rewiring_the_grader_passes_nothing(tmp_path, attack):
    answer = verdict(tmp_path, "def scale(x, k):\n    return x + k\n" + ATTACKS[attack])
    passed = [gid for gid, cell in answer["cells"].items() if cell["passed"]]
    assert passed == [], (attack, answer)
    assert bool(answer["tampered"]) == (attack in REPORTED), (attack, answer)


def test_an_honest_student_using_the_same_tools_passes_everything(tmp_path):
    honest = ("import numpy as np, json, tempfile, threading\nfrom numpy.testing import assert_allclose\n"
              "json.dumps({'a': 1}); tempfile.gettempdir()\n"
              "worker = threading.Thread(target=lambda: None); worker.start(); worker.join()\n"
              "class Shape:\n    pass\nShape.area = lambda self: 0\n"
              "def scale(x, k):\n    return x * k")
    answer = verdict(tmp_path, honest)
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer
    assert sorted(answer["cells"]) == sorted(TESTS)


def test_the_grader_trusts_numpy():
    assert "numpy" in TRUSTED  # the tests above rely on numpy being pinned as a whole


def test_tests_keep_the_lessons_own_builtins_and_may_instrument_the_students_globals(tmp_path):
    """A lesson's own sum() is the student's to define; a test may swap a helper the student's code calls."""
    test = ("def check():\n    global record\n    seen = []\n    real, record = record, seen.append\n    try:\n"
            "        assert sum([1, 2]) == 'mine'\n    finally:\n        record = real\n    assert seen == [[1, 2]]\n"
            "check()")
    answer = run_verdict([{"source": "def record(x):\n    pass", "grade_id": None, "grader": True},
                          {"source": "def sum(xs):\n    record(xs)\n    return 'mine'", "grade_id": None,
                           "grader": False, "theirs": ["sum"]},
                          {"source": test, "grade_id": "test-sum", "grader": True}], tmp_path, None, 10, 60)
    assert answer.get("cells") == {"test-sum": {"passed": True, "error": ""}} and not answer["tampered"], answer


def test_the_submissions_package_runs_in_its_cells_not_before_the_snapshot(tmp_path):
    """The tests import the package built from the submission: its code is the student's, so it is
    imported by the cells (timed, after the snapshot), never by the grader beforehand."""
    (tmp_path / "tinytorch").mkdir()
    (tmp_path / "tinytorch" / "__init__.py").write_text("import numpy\nnumpy.allclose = lambda *a, **k: True\n"
                                                       "def scale(x, k):\n    return x + k\n")
    answer = run_verdict([{"source": "import numpy as np\nfrom tinytorch import scale", "grade_id": None,
                           "grader": True},
                          {"source": TESTS["test-array"], "grade_id": "test-array", "grader": True}],
                         tmp_path, None, 10, 60)
    assert answer["cells"]["test-array"]["passed"] is False and "numpy.allclose" in answer["tampered"], answer
