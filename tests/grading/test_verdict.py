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
    "verdict-module": "import sys\nv = sys.modules['__main__']\nv._stray_thread = lambda *a, **k: None\n"
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
    # (np.allclose is the grader's honest asker, bound to (numpy's own allclose, ...): see verdict._ask_honestly)
    "code-swap": "import numpy as np\nnp.allclose.__self__[0]._implementation.__code__ = "
                 "(lambda a, b, rtol=1e-05, atol=1e-08, equal_nan=False: True).__code__",
    "code-swap-of-the-honest-asker": "import numpy as np\n"
                                     "np.allclose.__func__.__code__ = (lambda bound, *a, **k: True).__code__",
    # a module the tests import only later
    "late-module": "import numpy.testing\nnumpy.testing.assert_array_equal = lambda *a, **k: None",
    # a thread threading does not count
    "raw-thread": "import _thread, time\ndef _spin():\n    while True:\n        time.sleep(0.01)\n"
                  "_thread.start_new_thread(_spin, ())",
    # threads running the submission's code, looping or waiting to wake up in a later cell
    "thread-patching-in-a-loop": "import threading, time, json\ndef _patch():\n    while True:\n"
                                 "        json.JSONEncoder.encode = lambda self, obj: '{}'\n        time.sleep(0.01)\n"
                                 "threading.Thread(target=_patch, daemon=True).start()",
    "thread-waking-later": "import threading\ndef _later():\n    threading.Event().wait(30)\n"
                           "threading.Thread(target=_later, daemon=True).start()",
    "excepthook": "import sys\nsys.excepthook = lambda *a: None",
}
REPORTED = {"verdict-module", "json-dumps", "json-encoder-class", "code-swap", "code-swap-of-the-honest-asker",
            "late-module", "raw-thread", "thread-patching-in-a-loop", "thread-waking-later", "excepthook"}


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


# Results that claim to equal anything (or to differ from everything), against the tests' own comparisons:
# the verdict runs each graded cell's ==, !=, in and not in through its referee, which refuses them.
LIARS = ("class Yes:\n    def __eq__(self, other):\n        return True\n"
         "class No:\n    def __eq__(self, other):\n        return False\n"
         "    def __ne__(self, other):\n        return True\n"
         "class Same:\n    def __ne__(self, other):\n        return False\n"
         "class Holds:\n    def __contains__(self, item):\n        return True\n"
         "class YesArray:\n    def __eq__(self, other):\n        return np.ones(2, dtype=bool)\n"
         "class PassesForInt(type):\n    def __eq__(cls, other):\n        return True\n"
         "    def __hash__(cls):\n        return hash(int)\n"
         "class Impostor(metaclass=PassesForInt):\n    def __eq__(self, other):\n        return True\n")
LIES = {  # what f() returns -> a test it passes by that alone
    "equal": ("Yes()", "assert f() == 6"),
    "equal-reflected": ("Yes()", "assert 6 == f()"),
    "type-passing-for-int": ("Impostor()", "assert f() == 6"),
    "inside-a-tuple": ("(Yes(), 7)", "assert f() == (6, 7)"),
    "tuple-subclass": ("type('Pair', (tuple,), {})((Yes(), 7))", "assert f() == (6, 7)"),
    "inside-a-dict": ("{'a': Yes()}", "assert f() == {'a': 6}"),
    "object-array": ("np.array([Yes(), Yes()], dtype=object)", "assert (f() == np.array([6, 7])).all()"),
    "array-answer": ("YesArray()", "assert (f() == np.array([6, 7])).all()"),
    "in": ("Yes()", "assert f() in (6, 7)"),
    "element-of-a-list": ("[Yes()]", "assert 6 in f()"),
    "holds-anything": ("Holds()", "assert 6 in f()"),
    "not-equal": ("No()", "assert f() != 5"),
    "not-in": ("No()", "assert f() not in (1, 2)"),
    "if-not-equal": ("Same()", "if f() != 6:\n    raise AssertionError('f() should be 6')"),
    "in-all-and-a-generator": ("Yes()", "assert all(x == 6 for x in [f()]) and True"),
    "chained": ("Yes()", "assert 0 < 6 == f() == 6"),
    "in-a-function": ("Yes()", "def check():\n    assert f() == 6\ncheck()"),
}


def graded(tmp_path, solution: str, tests: dict) -> dict:
    """The verdict on `tests` (graded cells) after a student cell `solution`; fails if it gave no answer."""
    answer = run_verdict([{"source": GRADER, "grade_id": None, "grader": True},
                          {"source": solution, "grade_id": None, "grader": False, "theirs": ["f"]},
                          *({"source": source, "grade_id": gid, "grader": True} for gid, source in tests.items())],
                         tmp_path, None, 10, 60)
    assert "error" not in answer, answer
    return answer


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_value_that_ignores_what_it_is_compared_with_passes_nothing(tmp_path, lie):
    result, test = LIES[lie]
    answer = graded(tmp_path, f"import numpy as np\n{LIARS}def f():\n    return {result}", {"test-f": test})
    cell = answer["cells"]["test-f"]
    assert cell["passed"] is False and "claims to" in cell["error"] and not answer["tampered"], (lie, answer)


HONEST = {  # each passes with honest values: Python's, numpy's, tinytorch's and the student's own classes
    "ints": "assert f(3) == 6 and f(3) != 5 and 6 == f(3) and f(3) in (5, 6) and f(3) not in [1, 2]",
    "floats": "assert f(1.5) == 3.0 and f(float('nan')) != f(float('nan'))",
    "tuples": "assert (f(1), f(2)) == (2, 4) and [f(1), (f(2),)] == [2, (4,)] and {'a': f(1)} == {'a': 2}",
    "strings-and-none": "assert f('ab') == 'abab' and f('a') in 'xaay' and None == g() and g() is None",
    "chained": "assert 0 < f(3) == 6 <= 7 and not (f(1) == 2 == 3) and 1 != f(1) in (2, 3)",
    "numpy": "a = np.arange(3)\nassert (f(a) == a * 2).all() and (f(a) != a).any() and f(np.float64(2)) == 4\n"
             "assert np.int64(4) in [f(2)] and f(np.array([np.nan])) != 1 and (f(a.astype(object)) == a * 2).all()",
    "own-classes": "p = Point(1, 2)\nassert p == Point(1, 2) and p != Point(2, 1) and p in [Point(1, 2)] and p == p\n"
                   "assert Bare() != Bare() and {p: 1} == {Point(1, 2): 1} and type(p) == Point",
    "containers": "assert 2 in range(3) and 'k' in {'k': 1}.keys() and 3 in set([f(1), 3]) and [] == []",
    "tensors": "from tinytorch import Tensor\nt = Tensor([3.0, 3.0])\nassert (t == 3).data.all() and "
               "not (t != 3).data.any()\nassert Tensor([2.0]) == 2 and t.device == 'cpu'",
    "line-numbers": "import sys\ntry:\n    assert f(1) == 3\nexcept AssertionError:\n"
                    "    assert sys.exc_info()[2].tb_lineno == 3\nelse:\n    raise AssertionError('f(1) == 3 passed')",
    "name": "assert __name__ == '__main__', __name__",
}
HONEST_SOLUTION = ("import numpy as np\ndef f(x):\n    return x * 2\ndef g():\n    return None\n"
                   "class Point:\n    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
                   "    def __eq__(self, other):\n"
                   "        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)\n"
                   "    def __hash__(self):\n        return hash((self.x, self.y))\n"
                   "class Bare:\n    pass\n")


def test_honest_values_pass_the_referee(tmp_path):
    answer = graded(tmp_path, HONEST_SOLUTION, HONEST)
    failed = {gid: cell["error"] for gid, cell in answer["cells"].items() if not cell["passed"]}
    assert failed == {} and not answer["tampered"], answer
    assert graded(tmp_path, HONEST_SOLUTION, {"broken": "assert f(1) == (2"})["cells"]["broken"]["error"] \
        .startswith("SyntaxError"), "a cell that does not parse fails as written"


def test_rebinding_the_referee_is_tampering(tmp_path):
    """A student's function reaching the test's globals through its frame (to drop the referee) is caught."""
    unwrap = ("import sys\nclass Yes:\n    def __eq__(self, other):\n        return True\n"
              "def f():\n    space = sys._getframe(1).f_globals\n"
              "    for name in [n for n in space if n.startswith('_grader_referee_')]:\n"
              "        space[name] = lambda value: value\n    return Yes()")
    answer = graded(tmp_path, unwrap, {"test-f": "assert f() == 6\nassert f() == 6"})
    assert answer["cells"]["test-f"]["passed"] is False and "referee" in answer["tampered"], answer


# Honest code that the invariants used to call tampering (a whole notebook scored 0).
LEFT_RUNNING = {  # a thread still alive when a graded cell starts or ends
    "idle-thread-pool": "from concurrent.futures import ThreadPoolExecutor\npool = ThreadPoolExecutor(2)\n"
                        "assert pool.submit(pow, 2, 3).result() == 8",
    "producer-on-a-full-queue": "import queue, threading\nq = queue.Queue(maxsize=1)\n"
                                "def produce():\n    for i in range(10):\n        q.put(i)\n"
                                "threading.Thread(target=produce, daemon=True).start()",
    "finishing-after-the-cell": "import threading, time\ndone = []\n"
                                "def log(x):\n    time.sleep(0.2)\n    done.append(x)\n"
                                "def scale(x, k):\n    threading.Thread(target=log, args=(x,)).start()\n"
                                "    return x * k",
}


@pytest.mark.parametrize("case", sorted(LEFT_RUNNING))
def test_an_honest_thread_left_running_is_no_tampering(tmp_path, case):
    """A thread waiting in the library's code (an idle pool, a producer parked on a full queue) or
    ending shortly after the cell runs none of the submission's code behind the test's back."""
    answer = verdict(tmp_path, "def scale(x, k):\n    return x * k\n" + LEFT_RUNNING[case])
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), (case, answer)


def test_tqdms_monitor_thread_is_no_tampering(tmp_path):
    pytest.importorskip("tqdm")
    answer = verdict(tmp_path, "from tqdm import tqdm\nfor _ in tqdm(range(3)):\n    pass\n"
                               "def scale(x, k):\n    return x * k")
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer


def test_asyncio_mock_and_coroutine_generators_are_no_tampering(tmp_path):
    """types.coroutine sets a generator function's __code__ (a flag changes, not the code)."""
    honest = ("import asyncio, types\nfrom unittest import mock\n"
              "@types.coroutine\ndef tick():\n    yield\n"
              "async def twice(x):\n    await tick()\n    return 2 * x\n"
              "def scale(x, k):\n    return x * k\nassert asyncio.run(twice(3)) == 6")
    answer = verdict(tmp_path, honest)
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer


def test_thread_and_unraisable_hooks_are_the_students(tmp_path):
    """A distributed-training lesson reports a rank's failure with threading.excepthook: it cannot
    turn a failed assert of the main thread into a pass."""
    honest = ("import sys, threading\nthreading.excepthook = lambda args: None\n"
              "sys.unraisablehook = lambda unraisable: None\ndef scale(x, k):\n    return x * k")
    answer = verdict(tmp_path, honest)
    assert answer["tampered"] == "" and all(c["passed"] for c in answer["cells"].values()), answer
