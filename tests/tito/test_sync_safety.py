"""Syncing a student's .ipynb and .py never loses an edit: the side edited since the last sync wins,
both edited keeps a named backup, a broken or busy notebook stops with a clean error, and every
write is atomic (a full disk leaves the old file whole)."""

import os
import resource
import signal

import jupytext.combine
import nbformat
import pytest

from tito.errors import TitoError
from tito.module import PROGRESS, read_progress, record_progress
from tito.notebooks import list_modules, sync


def paths(course):
    py = course.root / "modules/01_tensor/tensor.py"
    return py, py.with_suffix(".ipynb")


def started(course):
    """`tito module start 01`: the notebook is written and the pair recorded as in sync."""
    assert course.tito("module", "start", "01").exit_code == 0
    return paths(course)


def edit_notebook(ipynb, old, new, later_than=None):
    notebook = nbformat.read(ipynb, as_version=4)
    cell = next(c for c in notebook.cells if old in c.source)
    cell.source = cell.source.replace(old, new)
    nbformat.write(notebook, ipynb)
    if later_than is not None:
        os.utime(ipynb, (later_than.stat().st_mtime + 5,) * 2)


def edit_py(py, old, new):
    py.write_text(py.read_text().replace(old, new))


def backups(py):
    return sorted(p.name for p in py.parent.glob("*.backup-*"))


def test_a_py_edit_survives_jupyter_saving_the_unchanged_notebook_later(course):
    """Jupyter autosaves the open notebook after the student edited the .py elsewhere: the
    notebook is newer but unchanged, so the .py's edit must win (it used to be overwritten)."""
    py, ipynb = started(course)
    edit_py(py, "SCALE: float = 2.0", "SCALE: float = 3.0  # mine")
    os.utime(ipynb, (py.stat().st_mtime + 5,) * 2)
    result = course.tito("export", "01")
    assert result.exit_code == 0, result.output
    assert "updated tensor.ipynb from tensor.py" in result.output
    assert "SCALE: float = 3.0  # mine" in py.read_text()
    assert "# mine" in "".join(c.source for c in nbformat.read(ipynb, as_version=4).cells)
    assert backups(py) == []


def test_both_edited_keeps_the_newer_and_a_backup_of_the_other(course):
    py, ipynb = started(course)
    edit_py(py, "SCALE: float = 2.0", "SCALE: float = 3.0  # py edit")
    edit_notebook(ipynb, "return np.add(a, b)", "return np.add(a, b)  # notebook edit", later_than=py)
    result = course.tito("test", "01")
    assert "both changed since the last sync" in result.output, result.output
    assert "# notebook edit" in py.read_text()
    [backup] = backups(py)
    assert backup in result.output and backup.endswith(".py")
    assert "# py edit" in (py.parent / backup).read_text()


def test_a_malformed_notebook_is_a_clean_error_and_the_py_is_untouched(course):
    py, ipynb = paths(course)
    before = py.read_bytes()
    ipynb.write_text('{"cells": [')  # cut short, as a crashed or half-finished save leaves it
    for command in (["export", "01"], ["test", "01"]):
        result = course.tito(*command)
        assert result.exit_code == 2, result.output
        assert "modules/01_tensor/tensor.ipynb: not a readable notebook" in result.output
        assert "Traceback" not in result.output
        assert py.read_bytes() == before


def test_a_notebook_saved_during_the_sync_is_not_overwritten(course, monkeypatch):
    py, ipynb = started(course)
    edit_py(py, "SCALE: float = 2.0", "SCALE: float = 3.0")
    real = jupytext.combine.combine_inputs_with_outputs

    def jupyter_saves_meanwhile(new, old, fmt=None):
        edit_notebook(ipynb, "return np.add(a, b)", "return np.add(a, b)  # saved in Jupyter")
        return real(new, old, fmt=fmt)
    monkeypatch.setattr(jupytext.combine, "combine_inputs_with_outputs", jupyter_saves_meanwhile)
    result = course.tito("export", "01")
    assert result.exit_code == 2, result.output
    assert "tensor.ipynb changed while tito was syncing it" in result.output
    assert "# saved in Jupyter" in ipynb.read_text()


def with_full_disk(limit, function, *args):
    """Call `function` while writes past `limit` bytes fail with OSError (EFBIG), as on a full disk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        return function(*args)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_failed_write_leaves_the_students_py_whole(course):
    py, ipynb = started(course)
    edit_notebook(ipynb, "return np.add(a, b)", "return np.add(a, b)  # notebook edit", later_than=py)
    before = py.read_bytes()
    with pytest.raises(TitoError, match="could not write tensor.py"):
        with_full_disk(300, sync, list_modules(course.root)[0])
    assert py.read_bytes() == before, "a failed write must leave the old file, not a truncated one"
    assert sorted(p.name for p in py.parent.iterdir()) == ["tensor.ipynb", "tensor.py"], "no temporary file left"


def test_a_failed_write_keeps_the_progress_record(course):
    module = list_modules(course.root)[0]
    record_progress(course.root, module, 7, 8)
    path = course.root / PROGRESS
    before = path.read_bytes()
    with pytest.raises(OSError):
        with_full_disk(50, record_progress, course.root, module, 8, 8)
    assert path.read_bytes() == before
    assert read_progress(course.root)[module.folder]["points"] == 7


def test_a_corrupt_progress_record_is_a_clean_error(course):
    (course.root / ".tito").mkdir()
    (course.root / ".tito/progress.json").write_text('{"01_tensor": {"po')
    result = course.tito("module", "list")
    assert result.exit_code == 2, result.output
    assert ".tito/progress.json is corrupt" in result.output


def test_a_stale_notebook_saved_over_a_py_edit_leaves_the_edit_at_hand(course):
    """Jupyter had the notebook open from before `tito export` synced a .py edit into it, and saves it
    (the student clicks "Overwrite"): only the notebook changed since the sync, so it wins; the .py's
    edit must still be kept somewhere the student is told about."""
    py, ipynb = started(course)
    stale = ipynb.read_bytes()  # what Jupyter has open
    edit_py(py, "SCALE: float = 2.0", "SCALE: float = 3.0  # my py edit")
    assert course.tito("export", "01").exit_code == 0
    ipynb.write_bytes(stale)
    os.utime(ipynb, (py.stat().st_mtime + 5,) * 2)
    result = course.tito("test", "01")
    assert "updated tensor.py from tensor.ipynb" in result.output, result.output
    kept = course.root / ".tito/sync/01_tensor.tensor.previous.py"
    assert ".tito/sync/01_tensor.tensor.previous.py" in result.output, result.output
    assert "# my py edit" in kept.read_text() and "# my py edit" not in py.read_text()


def test_syncing_a_py_edit_keeps_the_notebooks_outputs(course):
    py, ipynb = started(course)
    notebook = nbformat.read(ipynb, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    code[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="my output\n")]
    nbformat.write(notebook, ipynb)
    assert course.tito("export", "01").exit_code == 0  # records the pair with the outputs
    edit_py(py, "SCALE: float = 2.0", "SCALE: float = 3.0")
    result = course.tito("export", "01")
    assert "updated tensor.ipynb from tensor.py" in result.output, result.output
    outputs = [o for c in nbformat.read(ipynb, as_version=4).cells if c.cell_type == "code" for o in c.outputs]
    assert any("my output" in o.get("text", "") for o in outputs), "the sync dropped the student's outputs"
