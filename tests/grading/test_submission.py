"""A submission laid onto the release (no kernel): edited metadata, duplicate and new grade ids,
missing and added cells are graded with the release's cells and flagged; CSV cells stay text."""

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
import nbformat  # noqa: E402

from tito.course import csv_safe  # noqa: E402
from tito.submission import edited_tests, normalize, plain_python  # noqa: E402

pytestmark = pytest.mark.grading


def cell(source, gid=None, **meta):
    metadata = {"nbgrader": {"grade_id": gid, "schema_version": 3, "grade": False, "locked": False,
                             "solution": False, **meta}} if gid else {}
    return nbformat.v4.new_code_cell(source, metadata=metadata)


def notebooks(answer="return x * k"):
    def build(solution, hidden):
        return nbformat.v4.new_notebook(cells=[
            cell("import numpy as np"),
            cell(f"def scale(x, k):\n    {solution}", "scale", solution=True),
            cell("assert scale(2, 3) == 6" + hidden, "test-scale", grade=True, locked=True, points=2),
        ])
    hidden = "\n### BEGIN HIDDEN TESTS\nassert scale(0, 1) == 0\n### END HIDDEN TESTS"
    return build("raise NotImplementedError()", ""), build("return x * k", hidden), build(answer, "")


def test_a_tidy_submission_is_the_release_with_its_answers():
    released, source, submitted = notebooks()
    normal = normalize(released, source, submitted)
    assert normal.flags == [] and edited_tests(released, submitted) == []
    assert [c.source for c in normal.notebook.cells] == [c.source for c in submitted.cells]
    graded = [c for c in normal.verdict_cells if c["grade_id"]]
    assert graded == [{"source": source.cells[2].source + "\n", "grade_id": "test-scale", "grader": True}]  # hidden in
    assert [c["grader"] for c in normal.verdict_cells] == [True, False, True]
    assert normal.verdict_cells[1]["theirs"] == ["scale"], "the names the instructor's answer binds are the student's"


def test_edited_metadata_and_extra_cells_are_graded_with_the_release_and_flagged():
    released, source, submitted = notebooks()
    submitted.cells[2].metadata["nbgrader"]["grade"] = False          # the test no longer graded
    submitted.cells[2].source = "assert True"                         # and emptied
    submitted.cells.append(cell("assert True", "bonus", grade=True, locked=True, points=100))
    submitted.cells.append(cell("def scale(x, k):\n    return 0", "scale", solution=True))  # a duplicate id
    submitted.cells.insert(1, cell("helper = 1"))                     # a cell of their own
    normal = normalize(released, source, submitted)
    assert edited_tests(released, submitted) == ["test-scale"]
    assert any("'bonus'" in flag and "not graded" in flag for flag in normal.flags), normal.flags
    assert any("duplicate cell 'scale'" in flag for flag in normal.flags), normal.flags
    cells = normal.notebook.cells
    assert [c.source for c in cells] == ["import numpy as np", "helper = 1", submitted.cells[2].source,
                                         released.cells[2].source, "assert True"]
    assert cells[3].metadata["nbgrader"]["grade"] is True                  # the release's metadata
    assert "nbgrader" not in cells[4].metadata                              # the added graded cell: plain code
    assert [c["grade_id"] for c in normal.verdict_cells] == [None, None, None, "test-scale", None]


def test_a_deleted_solution_cell_is_graded_as_the_stub():
    released, source, submitted = notebooks()
    del submitted.cells[1]
    normal = normalize(released, source, submitted)
    assert "solution cell(s) scale missing" in normal.flags[0]
    assert "NotImplementedError" in normal.notebook.cells[1].source


def test_ipython_syntax_becomes_inert_calls_for_the_verdict():
    assert plain_python("%time f()\nx = 1") == "get_ipython().run_line_magic('time', 'f()')\nx = 1\n"


def test_csv_cells_that_a_spreadsheet_would_run_stay_text():
    assert [csv_safe(v) for v in ["=2+3", "+A1", "-x", "@SUM(A1)", "\tx", "ann", "-2", "3.5", 4]] == \
        ["'=2+3", "'+A1", "'-x", "'@SUM(A1)", "'\tx", "ann", "-2", "3.5", 4]


def test_a_cell_that_failed_in_the_kernel_passes_only_if_the_verdict_ran_after_no_timeout():
    from tito.grading import TIMEOUT_ENAME, passed_only_in_the_verdict

    def graded(gid, *errors):
        c = cell("assert True", gid, grade=True, locked=True, points=1)
        c.outputs = [nbformat.v4.new_output("error", ename=e, evalue="", traceback=[]) for e in errors]
        return c
    notebook = nbformat.v4.new_notebook(cells=[graded("a"), graded("b", "AssertionError"), graded("c", TIMEOUT_ENAME),
                                               graded("d", "NameError")])
    verdict = {gid: {"passed": True} for gid in "abcd"}
    assert passed_only_in_the_verdict(notebook, verdict) == ["b"], "d follows the kernel's timeout: the verdict's"
    assert passed_only_in_the_verdict(notebook, {**verdict, "b": {"passed": False}}) == []
