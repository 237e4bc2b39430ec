"""Results that answer NumPy's own comparisons for themselves (marker `grading`).

A graded test compares with np.allclose, np.isclose, np.array_equal, numpy.testing's asserts, or
`np.abs(got - want).max() < tol`. A student's value can override NumPy's functions: an ndarray
subclass (or any object) whose __array_function__ answers np.allclose with True, or whose
__array_ufunc__ makes `got - want` zeros; a Tensor whose .data was set to one. The verdict asks
NumPy's comparisons with honest arguments only, and refuses such a value with a message saying
what it does. Honest values (arrays, NumPy scalars, Python numbers and containers, Tensors) are
graded as before. The verdict runs as a plain subprocess, as in test_verdict.py.
"""

import pytest

from tito.grading import run_verdict

pytestmark = pytest.mark.grading

GRADER = "import numpy as np\nfrom numpy.testing import assert_allclose\nfrom tinytorch import Tensor\n"
# Each f() returns the wrong [1, 2] (the tests want [6, 7]), dressed to answer NumPy itself.
OVERRIDERS = '''
import numpy as np
class Yes(np.ndarray):
    """Answers every NumPy function with True."""
    def __array_function__(self, func, types, args, kwargs):
        return True
class Zeros(np.ndarray):
    """Runs NumPy's ufuncs honestly, except that a difference, or an absolute value, is always zero."""
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [np.asarray(x).view(np.ndarray) for x in inputs]
        if ufunc in (np.subtract, np.absolute):
            return np.zeros(np.broadcast(*inputs).shape)
        return getattr(ufunc, method)(*inputs, **kwargs)
class Equal(np.ndarray):
    """Runs NumPy's ufuncs honestly, except that it equals any number, element by element."""
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = [np.asarray(x).view(np.ndarray) for x in inputs]
        if ufunc is np.equal and all(x.dtype.kind in "biuf" for x in inputs):
            return np.ones(np.broadcast(*inputs).shape, dtype=bool)
        return getattr(ufunc, method)(*inputs, **kwargs)
class Claims:
    """Not an array at all: answers NumPy's functions with True."""
    def __array_function__(self, func, types, args, kwargs):
        return True
def wrong():
    return np.array([1.0, 2.0])
'''
OVERRIDES = {  # what f() returns -> a test it passes by that alone
    "array-function-allclose": ("wrong().view(Yes)", "assert np.allclose(f(), [6, 7])"),
    "array-function-array-equal": ("wrong().view(Yes)", "assert np.array_equal(f(), np.array([6, 7]))"),
    "array-ufunc-testing": ("wrong().view(Equal)", "np.testing.assert_array_equal(f(), [6, 7])"),
    "array-function-imported-assert": ("wrong().view(Yes)", "assert_allclose(f(), [6, 7])"),
    "array-function-keyword": ("wrong().view(Yes)", "assert np.allclose([6, 7], b=f())"),
    "array-ufunc-in-a-list": ("wrong().view(Equal)", "np.testing.assert_equal([f()], [np.array([6, 7])])"),
    "array-function-not-an-array": ("Claims()", "assert np.allclose(f(), [6, 7])"),
    "array-ufunc-allclose": ("wrong().view(Zeros)", "assert np.allclose(f(), [6, 7])"),
    "array-ufunc-isclose": ("wrong().view(Zeros)", "assert np.isclose(f(), [6, 7]).all()"),
    "array-ufunc-assert-allclose": ("wrong().view(Zeros)", "assert_allclose(f(), [6, 7])"),
    "array-ufunc-equals": ("wrong().view(Equal)", "assert np.all(f() == [6, 7]) and (f() == np.array([6, 7])).all()"),
    "array-ufunc-in": ("wrong().view(Equal)", "assert 6 in f()"),
    "array-ufunc-difference": ("wrong().view(Zeros)", "assert np.abs(f() - np.array([6, 7])).max() < 1e-6"),
    "array-ufunc-python-abs": ("wrong().view(Zeros)", "assert abs(f() - np.array([6, 7])).max() < 1e-6"),
    "array-ufunc-numpy-function": ("wrong().view(Zeros)", "assert float(np.abs(f()).max()) < 1e-6"),
    "tensor-with-such-data": ("_tensor(wrong().view(Zeros))", "assert np.allclose(f(), [6, 7])"),
    "tensor-data-after-construction": ("_tensor(wrong().view(Yes))", "assert np.allclose(f().data, [6, 7])"),
}
TENSOR = ("from tinytorch import Tensor\nclass _Mine(Tensor):  # the student's Tensor hands NumPy its data as is\n"
          "    def __array__(self, dtype=None, copy=None):\n        return self.data\n"
          "def _tensor(data):\n    t = _Mine([0.0, 0.0])\n    t.data = data\n    return t\n")


def graded(tmp_path, solution: str, tests: dict) -> dict:
    """The verdict on `tests` (graded cells) after a student cell `solution`; fails if it gave no answer."""
    answer = run_verdict([{"source": GRADER, "grade_id": None, "grader": True},
                          {"source": solution, "grade_id": None, "grader": False, "theirs": ["f"]},
                          *({"source": source, "grade_id": gid, "grader": True} for gid, source in tests.items())],
                         tmp_path, None, 10, 60)
    assert "error" not in answer, answer
    return answer


def test_the_attacks_return_wrong_answers_numpy_itself_would_pass():
    """Without the verdict, each attack passes its test: the tests above are real attacks."""
    namespace = {}
    exec(GRADER + OVERRIDERS + TENSOR, namespace)
    for result, test in OVERRIDES.values():
        space = dict(namespace)
        exec(f"def f():\n    return {result}", space)
        exec(test, space)  # passes: the wrong [1, 2] claims to be [6, 7]
        exec("def f():\n    return np.array([1.0, 2.0])", space)
        with pytest.raises(AssertionError):
            exec(test, space)  # the same test fails the honest wrong answer


def test_a_value_that_overrides_numpys_functions_passes_nothing(tmp_path):
    """All attacks in one verdict (one process: fast); each cell fails with the message."""
    tests = {name: f"def f():\n    return {result}\n{test}" for name, (result, test) in OVERRIDES.items()}
    answer = graded(tmp_path, OVERRIDERS + TENSOR + "def f():\n    return wrong()", tests)
    wrong = {gid: cell for gid, cell in answer["cells"].items()
             if cell["passed"] or "overrides NumPy's functions" not in cell["error"]}
    assert wrong == {} and not answer["tampered"], answer
    assert "(__array_function__)" in answer["cells"]["array-function-allclose"]["error"]
    assert "(__array_ufunc__)" in answer["cells"]["array-ufunc-allclose"]["error"]


HONEST = {  # each passes with honest values, and an honest wrong answer fails as before
    "arrays": "assert np.allclose(f(np.array([1.0, 2.0])), [2, 4]) and np.array_equal(f(np.arange(3)), [0, 2, 4])\n"
              "assert np.isclose(f(np.float32(1.5)), 3.0) and np.array_equiv(f(np.ones(3)), 2)\n"
              "assert not np.allclose(f(np.ones(2)), 3) and np.allclose(f(np.array([np.nan])), np.nan, equal_nan=True)",
    "scalars-and-lists": "assert np.allclose(f(3), 6) and np.allclose(f(1.5), 3.0) and np.isclose(f(np.int64(2)), 4)\n"
                         "assert np.allclose([f(1), f(2)], (2, 4)) and np.array_equal(f([1, 2]), [1, 2, 1, 2])\n"
                         "assert np.allclose(a=f(2.0), b=4.0, atol=0) and np.isclose(f(True), 2)",
    "testing": "assert_allclose(f(np.ones(2)), [2, 2], err_msg='twice')\nnp.testing.assert_array_equal(f((1, 2)), (1, 2, 1, 2))\n"
               "np.testing.assert_equal({'a': [f(1), (f(2.0),)]}, {'a': [2, (4.0,)]})\n"
               "np.testing.assert_almost_equal(f(0.5), 1.0)\nnp.testing.assert_array_almost_equal(f(np.ones(2)), [2, 2])\n"
               "np.testing.assert_equal(f('ab'), 'abab')",
    "tensors": "t = f(Tensor([1.0, 2.0]))\nassert np.allclose(t, [2, 4]) and np.allclose(t.data, [2, 4])\n"
               "assert np.array_equal(Tensor([3.0]), [3.0]) and np.allclose(f(Tensor([1.0])).numpy(), 2)\n"
               "assert np.abs(t.numpy() - np.array([2, 4])).max() < 1e-6 and abs(f(Tensor([1.5])).item() - 3) < 1e-6",
    "honest-subclasses": "assert np.allclose(f(np.matrix([[1.0, 2.0]])), [[2, 4]])\n"
                         "assert np.allclose(f(Plain([1.0, 2.0])), [2, 4]) and np.abs(Plain([2.0]) - 2).max() == 0",
    "object-arrays": "assert np.array_equal(f(np.array([1, 'a'], dtype=object)), np.array([2, 'aa'], dtype=object))",
    "masked-arrays": "m = np.ma.masked_array([1.0, 2.0, 3.0], mask=[False, True, False])\n"
                     "np.testing.assert_allclose(f(m), np.ma.masked_array([2.0, 0.0, 6.0], mask=[False, True, False]))",
    "differences": "assert abs(f(1.5) - 3) < 1e-9 and np.abs(f(np.ones(2)) - 2).max() == 0 and (f(3) - 1) == 5",
}
HONEST_SOLUTION = ("import numpy as np\ndef f(x):\n    return x * 2\n"
                   "class Plain(np.ndarray):\n    def __new__(cls, values):\n"
                   "        return np.asarray(values, dtype=float).view(cls)\n")


def test_honest_values_are_graded_as_before(tmp_path):
    answer = graded(tmp_path, HONEST_SOLUTION, HONEST)
    failed = {gid: cell["error"] for gid, cell in answer["cells"].items() if not cell["passed"]}
    assert failed == {} and not answer["tampered"], answer
    wrong = graded(tmp_path, "import numpy as np\ndef f(x):\n    return x * 3",
                   {"allclose": "assert np.allclose(f(np.ones(2)), 2), 'f(ones) should be 2'",
                    "assert-allclose": "assert_allclose(f(np.ones(2)), [2, 2])"})
    assert wrong["cells"]["allclose"] == {"passed": False, "error": "AssertionError: f(ones) should be 2"}, wrong
    assert wrong["cells"]["assert-allclose"]["error"].startswith("AssertionError: \nNot equal to tolerance"), wrong


REWIRING = {  # ways at the grader's honest comparisons: each is tampering
    "replace": "np.allclose = lambda *a, **k: True",
    "replace-testing": "import numpy.testing\nnumpy.testing.assert_allclose = lambda *a, **k: None",
    "defaults-of-the-wrapper": "np.allclose.__func__.__defaults__ = (None,)",
    "defaults-of-its-helper": "for part in np.allclose.__self__:\n"
                              "    if hasattr(part, '__defaults__'):\n        part.__defaults__ = None",
    "defaults-of-numpys-own": "np.allclose.__self__[0]._implementation.__defaults__ = (1e9, 1e9, False)",
}


@pytest.mark.parametrize("attack", sorted(REWIRING))
def test_rewiring_the_honest_comparisons_is_tampering(tmp_path, attack):
    solution = f"import numpy as np\ndef f(x):\n    return x + 1\ntry:\n    {REWIRING[attack].replace(chr(10), chr(10) + '    ')}\n" \
               "except Exception:\n    pass"
    answer = graded(tmp_path, solution, {"test": "assert np.allclose(f(np.ones(2)), 3)",
                                          "test-testing": "np.testing.assert_allclose(f(np.ones(2)), 3)"})
    assert not any(cell["passed"] for cell in answer["cells"].values()) and answer["tampered"], (attack, answer)


def test_the_honest_values_are_made_of_defaults_only():
    """Nothing a student can rewrite in place: no closure cells, no keyword defaults (a dict)."""
    import numpy as np

    from tito import verdict

    honest, numeric, made = verdict._honest_values(np, frozenset())
    for function in [*made, verdict._ask_honestly]:
        assert function.__closure__ is None and function.__kwdefaults__ is None, function.__qualname__


def test_a_foreign_array_library_is_trusted_by_identity():
    """CuPy's arrays (not installed here) answer np.allclose themselves: its types, imported before
    student code, pass as they are; a look-alike made later does not."""
    import numpy as np

    from tito import verdict

    assert verdict._foreign_arrays((("numpy", "ndarray"),)) >= {id(np.ndarray), id(np.matrix)}
    assert verdict._foreign_arrays((("no_such_array_library", "ndarray"),)) == frozenset()

    class Library:  # a stand-in for cupy.ndarray
        def __array_function__(self, func, types, args, kwargs):
            return "the library's answer"

    class LookAlike(Library):
        pass

    honest, numeric, _ = verdict._honest_values(np, verdict._foreign_arrays(()) | {id(Library)})
    value = Library()
    assert honest(value) is value and numeric(value) is value
    with pytest.raises(AssertionError, match=r"overrides NumPy's functions \(__array_function__\)"):
        honest(LookAlike())


def test_numeric_checks_a_value_and_the_elements_of_a_list_by_type_only():
    """What a graded cell subtracts or hands a NumPy function (np.concatenate(steps)) is returned as it is,
    unless it or an element answers NumPy itself."""
    import numpy as np

    from tito import verdict

    _, numeric, _ = verdict._honest_values(np, frozenset())
    namespace = {}
    exec(OVERRIDERS, namespace)  # the student's classes: made after the grader's checks, as in the verdict
    honest = [np.ones(2), 3, [1.0], (np.float32(1),), "text", np.float64]
    assert all(numeric(value) is value for value in honest)
    for hostile in (namespace["wrong"]().view(namespace["Zeros"]), [np.ones(2), namespace["Claims"]()]):
        with pytest.raises(AssertionError, match="overrides NumPy's functions"):
            numeric(hostile)
