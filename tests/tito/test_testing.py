"""The cellrunner, `tito test`, `tito doctor` and strip_solutions."""

import json
import re

import pytest

from tito import testing
from tito.notebooks import strip_solutions

GRADED = '{"grade": true, "grade_id": "%s", "locked": true, "points": %d, "schema_version": 3, "solution": false}'

MIXED = f"""\
# %%
#| default_exp mixed
#| export
def double(x):
    return 2 * x

# %% nbgrader={GRADED % ("test-good", 1)}
assert double(2) == 4, "double(2) should be 4"

# %% nbgrader={GRADED % ("test-bad", 2)}
value = double(3)
assert value == 7, f"double(3) gave {{value}}, expected 7"

# %%
raise RuntimeError("plain cell broke")

# %%
import os
print("cwd", os.getcwd(), __name__)
"""


def test_cellrunner_records_each_graded_cell_and_keeps_going(repo, tmp_path):
    path = repo.module("01_mixed", MIXED)
    out = tmp_path / "out.json"
    run = repo.subprocess("-m", "tito.cellrunner", str(path), "--json", str(out))
    assert run.returncode == 0, run.stderr
    assert f"cwd {repo.root} __main__" in run.stdout  # last cell ran, at the repo root, as a script
    results = json.loads(out.read_text())
    assert results["module"] == "modules/01_mixed/mixed.py"
    good, bad = results["graded"]
    assert (good["grade_id"], good["points"], good["passed"], good["failure"]) == ("test-good", 1, True, None)
    assert (bad["grade_id"], bad["points"], bad["passed"]) == ("test-bad", 2, False)
    assert bad["failure"] == {
        "type": "AssertionError",
        "message": "double(3) gave 6, expected 7",
        "lineno": 12,
        "line": 'assert value == 7, f"double(3) gave {value}, expected 7"',
    }
    [error] = results["errors"]
    assert error["cell"] == 4 and error["failure"]["type"] == "RuntimeError" and error["failure"]["lineno"] == 15


def test_tito_test_reports_failures_and_exits_1(repo):
    repo.module("01_mixed", MIXED)
    assert repo.tito("export").exit_code == 0
    result = repo.subprocess("-m", "tito", "test", "01")
    assert result.returncode == 1
    assert "test-bad" in result.stdout and "double(3) gave 6, expected 7" in result.stdout
    assert "plain cell broke" in result.stdout
    assert "1/2" in result.stdout and "1/3" in result.stdout  # cells passed, points earned


def test_tito_test_passes_with_module_cells_and_pytest(course):
    (course.root / "tests/01_tensor").mkdir(parents=True)
    (course.root / "tests/01_tensor/test_add.py").write_text(
        "from tinytorch.core.tensor import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    assert course.tito("export").exit_code == 0
    result = course.subprocess("-m", "tito", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout and "2/2" in result.stdout and "3/3" in result.stdout


def test_tito_test_fails_when_the_pytest_folder_runs_nothing(course):
    (course.root / "tests/01_tensor").mkdir(parents=True)
    (course.root / "tests/01_tensor/test_nothing.py").write_text("x = 1\n")
    course.tito("export")
    result = course.subprocess("-m", "tito", "test", "1")
    assert result.returncode == 1
    assert "no tests ran" in result.stdout


def test_tito_test_warns_when_tinytorch_is_stale(course):
    result = course.subprocess("-m", "tito", "test", "1")
    assert "tinytorch/ is out of date" in result.stdout


def test_doctor_exits_0(repo):
    result = repo.tito("doctor")
    assert result.exit_code == 0, result.output
    assert "numpy" in result.output and "CUDA device" in result.output


def test_strip_solutions_matches_nbgrader_with_named_stubs():
    text = (
        "def f(x):\n"
        "    ### BEGIN SOLUTION\n"
        "    return x\n"
        "    ### END SOLUTION\n"
        "assert f(1) == 1\n"
        "### BEGIN HIDDEN TESTS\n"
        "assert f(2) == 2\n"
        "### END HIDDEN TESTS\n"
        "print('done')\n"
    )
    assert strip_solutions(text) == (
        "def f(x):\n"
        "    # YOUR CODE HERE\n"
        '    raise NotImplementedError("f: not written yet; replace this line with your code")\n'
        "assert f(1) == 1\n"
        "print('done')\n"
    )


def test_tito_test_syncs_a_newer_notebook_and_summarizes_failures(course):
    """The student edits the .ipynb in Jupyter: `tito test` tests what they wrote, says it synced,
    and shows one block per failing graded check and the pytest failures grouped by file."""
    import os

    import nbformat

    from tito.notebooks import to_notebook

    tests = course.root / "tests/01_tensor"
    tests.mkdir(parents=True)
    (tests / "test_add.py").write_text("from tinytorch.core.tensor import add\n\n"
                                       "def test_one():\n    assert add(2, 3) == 5, 'add(2, 3) should be 5'\n\n"
                                       "def test_two():\n    assert add(1, 1) == 2\n")
    py = course.root / "modules/01_tensor/tensor.py"
    ipynb = py.with_suffix(".ipynb")
    nbformat.write(to_notebook(py.read_text().replace("return np.add(a, b)", "return np.subtract(a, b)")), ipynb)
    os.utime(ipynb, (py.stat().st_mtime + 5,) * 2)
    result = course.subprocess("-m", "tito", "test", "1")
    assert "updated tensor.py from tensor.ipynb" in result.stdout, result.stdout
    assert "np.subtract" in py.read_text()
    course.tito("export")
    result = course.subprocess("-m", "tito", "test", "1")
    assert result.returncode == 1
    assert "✗ test-add (2 pt)  modules/01_tensor/tensor.py:" in result.stdout, result.stdout
    assert "add(1, 2) should be 3" in result.stdout
    assert "tests/01_tensor/test_add.py: 2 failed; first, test_one" in result.stdout, result.stdout
    assert "Traceback" not in result.stdout


def test_tito_test_blames_the_unfinished_earlier_module(course):
    """02's checks stop at 01's stub `add`: say that 01 must be finished first, and where `add` is,
    not only the line of 02 that called it."""
    from tests.tito.conftest import TENSOR

    tensor = course.module("01_tensor", strip_solutions(TENSOR))
    assert course.tito("export").exit_code == 0
    stub_line = tensor.read_text().splitlines().index(
        '    raise NotImplementedError("add: not written yet; replace this line with your code")') + 1
    result = course.subprocess("-m", "tito", "test", "02")
    out = " ".join(result.stdout.split())
    assert result.returncode == 1
    assert "02_autograd needs 01_tensor finished first: add is not written yet" in out, out
    assert out.index("needs 01_tensor") < out.index("test-gradcheck")  # said at the top
    assert f"add is an exercise of 01_tensor, not written yet: modules/01_tensor/tensor.py:{stub_line}" in out, out


HANGS = f"""\
# %%
#| default_exp hangs
#| export
def spin(x):
    while x:
        pass
    return x

# %% nbgrader={GRADED % ("test-quick", 1)}
assert spin(0) == 0

# %% nbgrader={GRADED % ("test-spin", 2)}
assert spin(1) == 1

# %% nbgrader={GRADED % ("test-after", 4)}
assert True
"""


def test_tito_test_names_what_was_running_when_it_timed_out(repo):
    repo.module("01_hangs", HANGS)
    tests = repo.root / "tests/01_hangs"
    tests.mkdir(parents=True)
    (tests / "test_spin.py").write_text("from tinytorch.hangs import spin\n\n"
                                        "def test_quick():\n    assert spin(0) == 0\n\n"
                                        "def test_forever():\n    spin(1)\n")
    assert repo.tito("export").exit_code == 0
    result = repo.subprocess("-m", "tito", "test", "01", "--timeout", "4")
    out = " ".join(result.stdout.split())
    assert result.returncode == 1
    # the cell and the line that were running, and what did not run
    assert "timed out after 4 s in test-spin (modules/01_hangs/hangs.py:12)" in out, out
    assert re.search(r"still running modules/01_hangs/hangs\.py:[56] in spin", out), out  # either line of the loop
    assert "1 graded cell(s) after it did not run" in out, out
    assert "tests/01_hangs/test_spin.py::test_forever" in out, out  # the pytest test that hung
    assert "(timed out)" in out and "1/7" in out, out  # the summary row: cells so far, points of the module's 7


def test_tito_test_names_the_cell_that_crashed_the_runner(repo):
    repo.module("01_exits", f"""\
# %%
#| default_exp exits

# %% nbgrader={GRADED % ("test-fine", 1)}
assert True

# %% nbgrader={GRADED % ("test-exits", 2)}
import os
os._exit(3)
""")
    result = repo.subprocess("-m", "tito", "test", "01")
    out = " ".join(result.stdout.split())
    assert result.returncode == 1
    assert "cellrunner exited 3 in test-exits (modules/01_exits/exits.py:7)" in out, out
    assert "1/2 (crashed)" in out and "1/3" in out, out


@pytest.mark.parametrize("message, shown", [
    ("AssertionError: \nNot equal to tolerance rtol=1e-07, atol=0\n\nMismatched elements: 1 / 3 (33.3%)\n"
     "Max absolute difference among violations: 1.\n ACTUAL: array([1., 2., 4.])",
     "AssertionError: Not equal to tolerance rtol=1e-07, atol=0; Mismatched elements: 1 / 3 (33.3%); "
     "Max absolute difference among violations: 1."),
    ("AssertionError: add(2, 3) should be 5\nassert 4 == 5", "AssertionError: add(2, 3) should be 5"),
    ("AssertionError: ", "AssertionError:"),
    ("assert 3 == 5\n +  where 3 = add(2, 2)", "assert 3 == 5"),  # a plain assert keeps its one line
    ("  \n", "(no message)"),
])
def test_a_pytest_failure_is_shown_by_the_line_that_says_what_failed(message, shown):
    """assert_allclose's message starts with a bare 'AssertionError: ': the student saw nothing after it."""
    assert testing.headline(message) == shown
