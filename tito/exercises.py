"""Which of a module's exercises are still to write, and what a student is told about it: shared by
`tito module` (start, complete) and `tito test`."""

from __future__ import annotations

import re
from pathlib import Path

from tito.notebooks import STUB_MESSAGE, ModuleFile, list_modules, read_notebook

STUB = "raise NotImplementedError()"
STUB_MARK = "# YOUR CODE HERE"


def not_complete_message(number: int | str, name: str) -> str:
    """The one wording for "finish module k first"."""
    number = f"{int(number):02d}"
    return f"module {number} ({name}) is not complete: `tito module start {number}`"


def short_name(module: ModuleFile) -> str:
    return module.folder.split("_", 1)[1]


def is_stub_line(line: str) -> bool:
    """nbgrader's bare stub, or tito's named one (`raise NotImplementedError("add: not written yet...")`)."""
    return line == STUB or (line.startswith("raise NotImplementedError(") and STUB_MESSAGE in line)


_STUB_NAME = re.compile(r"""raise NotImplementedError\(["'](.+?): """)


def stubs(module: ModuleFile) -> list[tuple[str, int]]:
    """(exercise name, file line) of each release stub still in the module's exported cells."""
    found = []
    for _, cell in read_notebook(module).exported_cells():
        lines = [line.strip() for line in cell.source.splitlines()]
        for i, (a, b) in enumerate(zip(lines, lines[1:]), start=1):
            if a == STUB_MARK and is_stub_line(b):
                named = _STUB_NAME.match(b)  # raise NotImplementedError("add: not written yet; ...")
                found.append((named[1] if named else cell.nbgrader.get("grade_id", "?"), cell.first_line + i))
    return found


def has_stubs(module: ModuleFile) -> bool:
    """An exported cell still holds the release's `raise NotImplementedError()` stub."""
    return bool(stubs(module))


def unfinished_before(root: Path, module: ModuleFile) -> ModuleFile | None:
    """The first earlier module whose exercises are still stubs, or None."""
    for earlier in list_modules(root):
        if earlier.number < module.number and has_stubs(earlier):
            return earlier
    return None


def points_available(module: ModuleFile) -> int:
    return sum(c.nbgrader.get("points", 0) for c in read_notebook(module).cells if c.is_graded)
