"""A submission laid onto the release: what is graded, whatever the student did to the notebook.

The student may edit only their solution cells; anything else they changed (tests, nbgrader
metadata, duplicate or new grade ids) is put back from the release and reported, so that one
edited notebook is graded like every other and never stops nbgrader.
"""

from __future__ import annotations

from dataclasses import dataclass

from tito.notebooks import strip_solutions
from tito.verdict import bound_names


def nbgrader_meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def grade_id_of(cell) -> str | None:
    gid = nbgrader_meta(cell).get("grade_id")
    return gid if isinstance(gid, str) else None


def locked_sources(notebook) -> dict[str, str]:
    found = {}
    for cell in notebook.cells:
        meta = nbgrader_meta(cell)
        if meta.get("locked") and grade_id_of(cell):
            found.setdefault(meta["grade_id"], strip_solutions(cell.source).strip())  # hidden tests aside
    return found


def _grading_meta(notebook) -> dict[str, tuple]:
    keys = ("grade", "locked", "points", "solution")
    found: dict[str, tuple] = {}
    for cell in notebook.cells:
        if grade_id_of(cell):
            found.setdefault(grade_id_of(cell), tuple(nbgrader_meta(cell).get(k) for k in keys))
    return found


def edited_tests(released, submitted) -> list[str]:
    """grade_ids of locked cells the student changed (source or grading metadata) or deleted."""
    theirs, their_meta, meta = locked_sources(submitted), _grading_meta(submitted), _grading_meta(released)
    return [gid for gid, src in locked_sources(released).items()
            if theirs.get(gid) != src or their_meta.get(gid) != meta[gid]]


@dataclass
class Normalized:
    """The submission laid onto the release: the release's cells and metadata, the student's
    solution cells (by grade_id) and the cells they added (as plain code, after the cell they
    followed). What nbgrader and the verdict grade; edits to anything else are flagged."""

    notebook: object             # for nbgrader: the release's cells (no hidden tests) + the student's code
    verdict_cells: list[dict]    # for the verdict: the source's cells (hidden tests in) + the student's code
    flags: list[str]


def normalize(released, source, submitted) -> Normalized:
    import copy

    import nbformat

    solution_ids = {grade_id_of(c) for c in released.cells
                    if nbgrader_meta(c).get("solution") and not nbgrader_meta(c).get("grade")}
    known = {grade_id_of(c) for c in released.cells if grade_id_of(c)}
    plain: dict[str, int] = {}  # the release's own cells without a grade id: source -> index
    for i, c in enumerate(released.cells):
        if not grade_id_of(c):
            plain.setdefault(c.source, i)
    answers: dict[str, str] = {}
    added: dict[int, list[str]] = {}  # release index -> the student's own code cells after it
    index_of = {grade_id_of(c): i for i, c in enumerate(released.cells) if grade_id_of(c)}
    flags: list[str] = []
    anchor = -1
    for cell in submitted.cells:
        gid = grade_id_of(cell)
        if gid in solution_ids and gid not in answers and cell.get("cell_type") == "code":
            answers[gid] = str(cell.get("source", ""))
            anchor = index_of[gid]
        elif gid in known:
            anchor = index_of[gid]
            if gid in answers and gid in solution_ids:
                flags.append(f"duplicate cell {gid!r}: the first one is graded")
        elif cell.get("source") in plain and not gid:
            anchor = max(anchor, plain[cell.get("source")])
        elif cell.get("cell_type") == "code":
            if gid or nbgrader_meta(cell):
                flags.append(f"cell {gid or '?'!r} has nbgrader metadata the release does not: run as plain code, "
                             f"not graded")
            added.setdefault(anchor, []).append(str(cell.get("source", "")))
    missing = sorted(solution_ids - answers.keys())
    if missing:
        flags.append(f"solution cell(s) {', '.join(missing)} missing: graded with the release's stub")

    source_by_id = {grade_id_of(c): c for c in source.cells if grade_id_of(c)}
    notebook = nbformat.v4.new_notebook(metadata=copy.deepcopy(released.metadata))
    verdict: list[dict] = []

    def extra(code: str) -> None:
        notebook.cells.append(nbformat.v4.new_code_cell(code))
        verdict.append({"source": plain_python(code), "grade_id": None, "grader": False})

    for code in added.get(-1, []):
        extra(code)
    for i, cell in enumerate(released.cells):
        gid = grade_id_of(cell)
        mine = copy.deepcopy(cell)
        mine.pop("outputs", None)
        if cell.cell_type == "code":
            mine.outputs, mine.execution_count = [], None
        if gid in answers:
            mine.source = answers[gid]
        notebook.cells.append(mine)
        if cell.cell_type == "code":
            graded = bool(nbgrader_meta(cell).get("grade")) and gid not in solution_ids
            text = mine.source if gid in answers or gid not in source_by_id else source_by_id[gid].source
            entry = {"source": plain_python(text), "grade_id": gid if graded else None, "grader": gid not in answers}
            if gid in answers and gid in source_by_id:  # names the student's answer may rebind: the instructor's does
                entry["theirs"] = sorted(bound_names(plain_python(source_by_id[gid].source)))
            verdict.append(entry)
        for code in added.get(i, []):
            extra(code)
    return Normalized(notebook, verdict, flags)


def plain_python(source: str) -> str:
    """A cell's IPython syntax (%magics, !shell) as the plain calls the verdict runs (inertly)."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 -- left as it is: it fails in the verdict like in the kernel
        return source
