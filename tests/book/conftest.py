"""The book, built once per session into a tmp dir (student and instructor editions).

Everything here is skipped, with the reason, when jupyter-book (the `book` extra) is absent.
"""

import time
from pathlib import Path

import jupytext
import pytest

import typer

from tito.book import build
from tito.main import app
from tito.notebooks import BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, find_root, strip_solutions

ROOT = find_root(Path(__file__).parent)
CLI = typer.main.get_command(app)  # the book's CLI reference page documents it


def _require_jupyter_book():
    pytest.importorskip("jupyter_book", reason="jupyter-book not installed: pip install -e '.[book]'")


@pytest.fixture(scope="session")
def student_book(tmp_path_factory):
    _require_jupyter_book()
    start = time.perf_counter()
    result = build(ROOT, tmp_path_factory.mktemp("book") / "student", CLI)
    print(f"\nstudent edition built in {time.perf_counter() - start:.1f} s")
    return result.html


@pytest.fixture(scope="session")
def instructor_book(tmp_path_factory):
    _require_jupyter_book()
    return build(ROOT, tmp_path_factory.mktemp("book") / "instructor", CLI, with_solutions=True).html


def hidden_lines(text: str) -> set[str]:
    """Stripped lines from between solution (and hidden-test) markers that the student's
    release does not contain anywhere else: finding one in a page means a solution leaked."""
    inside, until = set(), None
    for line in text.splitlines():
        marker = line.strip()
        if until is not None:
            until = None if marker == until else until
            if until is not None and marker:
                inside.add(marker)
        elif marker == BEGIN_SOLUTION:
            until = END_SOLUTION
        elif marker == BEGIN_HIDDEN:
            until = END_HIDDEN
    release = jupytext.reads(strip_solutions(text), fmt="py:percent")  # markdown cells uncommented
    released = {line.strip() for cell in release.cells for line in cell.source.splitlines()}
    return inside - released
