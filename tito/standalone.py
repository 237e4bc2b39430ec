"""Each module stands alone, in order: the check behind `tito course standalone`.

For module NN, two copies of the project are built, each with its own tinytorch/ exported
from its modules:

- modules before NN solved, NN and later stripped: every graded cell of NN must fail, and
  with a message of its own (the stub's "not written yet", or the test's assert message),
  not a bare NumPy error or an empty exception;
- modules up to NN solved, later ones stripped: `tito module complete NN` must pass, which
  means NN's graded cells and its tests/NN_name/ need nothing from a later module.

The copy "solved up to j" serves module j (second check) and module j+1 (first check).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tito.notebooks import STUB_MESSAGE, ModuleFile, list_modules, strip_solutions

_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.ipynb", ".tito")


@dataclass
class StandaloneResult:
    module: ModuleFile
    problems: list[str] = field(default_factory=list)


def python(root: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run Python in a copy, importing that copy's tinytorch and tito."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)


def build_copy(root: Path, dest: Path, solved_up_to: int) -> Path:
    """A copy of modules/, tito/, tests/ and pyproject.toml whose modules after `solved_up_to`
    are stripped, with tinytorch/ exported from them."""
    shutil.copytree(root / "modules", dest / "modules", ignore=_IGNORE)
    shutil.copytree(root / "tito", dest / "tito", ignore=_IGNORE)
    if (root / "tests").is_dir():
        shutil.copytree(root / "tests", dest / "tests", ignore=_IGNORE)
    shutil.copy(root / "pyproject.toml", dest / "pyproject.toml")
    for module in list_modules(dest):
        if module.number > solved_up_to:
            module.path.write_text(strip_solutions(module.path.read_text(encoding="utf-8")), encoding="utf-8")
    run = python(dest, "-m", "tito", "export", "--all")
    if run.returncode != 0:
        raise RuntimeError(f"export failed in {dest}:\n{run.stdout}{run.stderr}")
    return dest


def own_message(failure: dict) -> bool:
    """Does a failing graded cell say, in its own words, what is wrong?"""
    kind, message = failure.get("type", ""), (failure.get("message") or "").strip()
    if kind == "NotImplementedError":
        return STUB_MESSAGE in message
    return kind == "AssertionError" and bool(message)


def graded_cells(copy: Path, module: ModuleFile) -> dict:
    out = copy / f".standalone-{module.folder}.json"
    rel = module.rel
    run = python(copy, "-m", "tito.cellrunner", rel, "--json", str(out))
    if run.returncode != 0 or not out.exists():
        raise RuntimeError(f"cellrunner failed on {rel}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return json.loads(out.read_text(encoding="utf-8"))


def check_stripped(copy: Path, module: ModuleFile) -> list[str]:
    """With NN stripped (earlier modules solved): every graded cell fails with its own message."""
    problems = []
    result = graded_cells(copy, module)
    if not result["graded"]:
        problems.append(f"{module.folder}: no graded cells")
    for cell in result["graded"]:
        if cell["passed"]:
            problems.append(f"{module.folder}: graded cell {cell['grade_id']} passes with the module stripped "
                            f"(it tests nothing the student writes)")
        elif not own_message(cell["failure"]):
            f = cell["failure"]
            problems.append(f"{module.folder}: graded cell {cell['grade_id']} fails stripped with "
                            f"{f.get('type')}: {(f.get('message') or '')[:200]!r}, not a message of its own")
    return problems


def check_complete(copy: Path, module: ModuleFile) -> list[str]:
    """With modules up to NN solved and later ones stripped: `tito module complete NN` passes."""
    run = python(copy, "-m", "tito", "module", "complete", module.folder)
    if run.returncode == 0:
        return []
    return [f"{module.folder}: `tito module complete {module.number:02d}` fails with later modules stripped:\n"
            + "\n".join((run.stdout + run.stderr).rstrip().splitlines()[-40:])]


class Copies:
    """The project copies "solved up to j", built once each, on demand."""

    def __init__(self, root: Path, workdir: Path):
        self.root, self.workdir = root, workdir
        self.numbers = sorted({m.number for m in list_modules(root)})
        self.built: dict[int, Path] = {}

    def solved_up_to(self, number: int) -> Path:
        if number not in self.built:
            self.built[number] = build_copy(self.root, self.workdir / f"solved-up-to-{number:02d}", number)
        return self.built[number]

    def before(self, module: ModuleFile) -> Path:
        return self.solved_up_to(max([n for n in self.numbers if n < module.number], default=0))


def check_module(module: ModuleFile, copies: Copies, progress=print) -> list[str]:
    progress(f"{module.folder}: stripped, with modules before it solved")
    problems = check_stripped(copies.before(module), module)
    progress(f"{module.folder}: solved, with later modules stripped")
    return problems + check_complete(copies.solved_up_to(module.number), module)


def check_modules(root: Path, modules: list[ModuleFile], workdir: Path, progress=print) -> list[StandaloneResult]:
    copies = Copies(root, workdir)
    return [StandaloneResult(m, check_module(m, copies, progress)) for m in modules]
