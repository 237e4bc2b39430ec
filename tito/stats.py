"""How much of a module the student writes, and where the lesson gives answers away.

Used by `tito course stats` and `tito course check`. Counts are per lesson file
(`modules/NN_name/name.py`); the companion `provided.py` is infrastructure, not lesson.

- code lines: non-blank, non-comment lines of code cells (directives and markers excluded);
- exercise lines: code lines between `### BEGIN SOLUTION` and `### END SOLUTION`;
- prose lines: non-blank lines of markdown cells;
- a giveaway: a solution line of 30+ characters that also appears in the module's prose
  or in its provided code (outside the solutions, or in `provided.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tito.notebooks import BEGIN_SOLUTION, END_SOLUTION, ModuleFile, read_companion, read_notebook

GIVEAWAY_LENGTH = 30
# Targets for a lesson file (the course-design issue): checked by tests/tito/test_course_stats.py.
MIN_EXERCISE_SHARE = 0.20
MAX_FIRST_EXERCISE_LINE = 200
MIN_PROSE_RATIO = 0.5


@dataclass
class ModuleStats:
    module: ModuleFile
    lines: int = 0
    code_lines: int = 0
    exercise_lines: int = 0
    prose_lines: int = 0
    first_exercise_line: int | None = None
    points: int = 0
    graded_cells: int = 0
    exercises: int = 0
    giveaways: list[str] = field(default_factory=list)  # "file:line: text"

    @property
    def exercise_share(self) -> float:
        return self.exercise_lines / self.code_lines if self.code_lines else 0.0

    @property
    def prose_ratio(self) -> float:
        return self.prose_lines / self.code_lines if self.code_lines else 0.0

    def misses(self) -> list[str]:
        """The targets this lesson does not meet, in words."""
        found = []
        if self.exercise_share < MIN_EXERCISE_SHARE:
            found.append(f"exercise share {self.exercise_share:.0%} < {MIN_EXERCISE_SHARE:.0%}")
        if self.first_exercise_line is None or self.first_exercise_line > MAX_FIRST_EXERCISE_LINE:
            found.append(f"first exercise at line {self.first_exercise_line} > {MAX_FIRST_EXERCISE_LINE}")
        if self.prose_ratio < MIN_PROSE_RATIO:
            found.append(f"prose:code {self.prose_ratio:.2f} < {MIN_PROSE_RATIO}")
        return found


def _is_code(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


def _normalize(text: str) -> str:
    return " ".join(text.split())


def module_stats(module: ModuleFile) -> ModuleStats:
    notebook = read_notebook(module)
    stats = ModuleStats(module, lines=len(module.path.read_text(encoding="utf-8").splitlines()))
    prose: list[str] = []
    provided: list[str] = []  # code outside solution blocks
    solutions: list[tuple[int, str]] = []  # (file line, text)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            lines = [line for line in cell.source.splitlines() if line.strip()]
            stats.prose_lines += len(lines)
            prose += lines
            continue
        if cell.is_graded:
            stats.graded_cells += 1
            stats.points += cell.nbgrader.get("points", 0)
        inside = False
        for offset, line in enumerate(cell.source.splitlines()):
            marker = line.strip()
            if marker == BEGIN_SOLUTION:
                inside = True
                stats.exercises += 1
                if stats.first_exercise_line is None:
                    stats.first_exercise_line = cell.line
                continue
            if marker == END_SOLUTION:
                inside = False
                continue
            if not _is_code(line):  # directives (`#| export`) are comments too
                continue
            stats.code_lines += 1
            if inside:
                stats.exercise_lines += 1
                solutions.append((cell.first_line + offset, marker))
            else:
                provided.append(marker)
    companion = read_companion(module)
    if companion is not None:
        provided += [line.strip() for cell in companion.cells if cell.cell_type == "code"
                     for line in cell.source.splitlines() if _is_code(line)]
    stats.giveaways = find_giveaways(module, solutions, prose, provided)
    return stats


def find_giveaways(module: ModuleFile, solutions: list[tuple[int, str]], prose: list[str],
                   provided: list[str]) -> list[str]:
    """Solution lines of 30+ characters that the student can read elsewhere in the module."""
    prose_text = _normalize("\n".join(prose))
    provided_lines = {_normalize(line) for line in provided}
    provided_text = "\n".join(provided_lines)
    found = []
    for line_number, text in solutions:
        key = _normalize(text)
        if len(key) < GIVEAWAY_LENGTH:
            continue
        where = "prose" if key in prose_text else "provided code" if key in provided_text else None
        if where:
            found.append(f"{module.rel}:{line_number}: solution line also in the {where}: {text}")
    return found
