"""`tito export NN` syncs a student's paired notebook first; `--check` stays read-only."""

import os

import nbformat

from tito.notebooks import to_notebook


def _pair(course, edit):
    """Write 01's paired notebook with `edit` applied to its source, newer than the .py."""
    py = course.root / "modules/01_tensor/tensor.py"
    ipynb = py.with_suffix(".ipynb")
    notebook = to_notebook(py.read_text())
    cell = next(c for c in notebook.cells if "def add" in c.source)
    cell.source = edit(cell.source)
    nbformat.write(notebook, ipynb)
    later = py.stat().st_mtime + 5
    os.utime(ipynb, (later, later))
    return py, ipynb


def test_export_syncs_the_paired_notebook_first(course):
    py, _ = _pair(course, lambda s: s.replace("return np.add(a, b)", "return np.add(b, a)  # mine"))
    result = course.tito("export", "01")
    assert result.exit_code == 0, result.output
    assert "updated tensor.py from tensor.ipynb" in result.output
    assert "return np.add(b, a)  # mine" in py.read_text()
    assert "return np.add(b, a)  # mine" in course.read("tinytorch/core/tensor.py")


def test_export_check_does_not_sync(course):
    assert course.tito("export").exit_code == 0
    py, ipynb = _pair(course, lambda s: s.replace("return np.add(a, b)", "return np.add(b, a)  # mine"))
    before = (py.read_bytes(), ipynb.read_bytes())
    check = course.tito("export", "--check")
    assert check.exit_code == 0, check.output  # the .py (what --check reads) did not change
    assert (py.read_bytes(), ipynb.read_bytes()) == before


def test_export_without_a_notebook_touches_nothing_else(course):
    result = course.tito("export", "02")
    assert result.exit_code == 0, result.output
    assert ".ipynb" not in result.output
    assert not (course.root / "modules/01_tensor/tensor.ipynb").exists()
    assert not (course.root / "modules/02_autograd/autograd.ipynb").exists()
