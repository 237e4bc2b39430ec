"""nbgrader underneath `tito course`: the course folder, notebooks, and grading one submission.

Course folder (default `course/`, git-ignored):

    nbgrader_config.py, gradebook.db     nbgrader's own files
    source/NN_name/name.ipynb            instructor notebooks (solutions), from modules/
    release/NN_name/name.ipynb           generate_assignment's output (what students get)
    submitted/<student>/NN_name/...      `tito course collect`
    autograded/, feedback/               nbgrader's outputs
    tito/reference/modules/              snapshot of modules/ taken by `generate`
    tito/results/<student>/NN_name.json  what `autograde` saw: status, reason, cells, edits
    tito/build/<student>/NN_name/        the tinytorch/ a submission is graded against

A submission is graded in its own process (`python -m tito.grading`) with a memory limit
(RLIMIT_AS, inherited by the kernel) and against a tinytorch/ exported from the reference
modules before NN plus the student's own NN, so the student's code is what their later
cells import.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import jupytext

from tito.errors import TitoError
from tito.notebooks import ModuleFile, list_modules, strip_solutions

RESULTS = "tito/results"
REFERENCE = "tito/reference"
BUILD = "tito/build"
TIMEOUT_ENAME = "CellTimeoutError"
STUB = "raise NotImplementedError()"


# ---------------------------------------------------------------- nbgrader set-up


def require_nbgrader() -> None:
    try:
        import nbgrader  # noqa: F401
    except ImportError:
        raise TitoError("nbgrader is not installed here: pip install -e '.[grade]'") from None
    # nbgrader runs the `alembic` executable when it first creates a gradebook; without it on
    # PATH it leaves a half-made gradebook.db behind.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def db_url(course: Path) -> str:
    # A busy timeout: parallel autograde workers write the same SQLite file.
    return f"sqlite:///{course.resolve()}/gradebook.db?timeout=120"


def config(course: Path, timeout: int = 60):
    """nbgrader's config, given explicitly (nbgrader_config.py is only read from the cwd)."""
    from traitlets.config import Config

    c = Config()
    c.CourseDirectory.root = str(course.resolve())
    c.CourseDirectory.db_url = db_url(course)
    c.Execute.timeout = int(timeout)
    c.Execute.interrupt_on_timeout = True
    c.Execute.startup_timeout = 120
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import ClearHiddenTests, GetGrades

    c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, CSSHTMLHeaderPreprocessor]
    return c


def api(course: Path, timeout: int = 60):
    require_nbgrader()
    from nbgrader.apps import NbGraderAPI

    return NbGraderAPI(config=config(course, timeout))


CONFIG_TEXT = '''\
# nbgrader settings for this TinyTorch course, written by `tito course generate`.
# `tito course ...` passes these explicitly; this file serves plain `nbgrader` run from here.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "tinytorch"
c.CourseDirectory.root = {root!r}
c.Execute.timeout = 60
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
'''


def init_course(course: Path) -> None:
    """Create the course folder, its nbgrader_config.py and its gradebook (once)."""
    require_nbgrader()
    from nbgrader.api import Gradebook

    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(CONFIG_TEXT.format(root=str(course.resolve())), encoding="utf-8")
    with Gradebook(db_url(course)):
        pass


def gradebook(course: Path):
    require_nbgrader()
    from nbgrader.api import Gradebook

    if not (course / "gradebook.db").is_file():
        raise TitoError(f"no course in {course}: run `tito course generate` first")
    return Gradebook(db_url(course))


# ---------------------------------------------------------------- names


def module_id(module: ModuleFile) -> str:
    return module.folder  # "01_tensor"


def notebook_name(module: ModuleFile) -> str:
    return module.path.stem  # "tensor"


_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def student_id(name: str) -> str:
    """A folder- and nbgrader-safe id for a student name ("José Núñez" -> "jose_nunez-1a2b3c")."""
    name = name.strip()
    if _SAFE_ID.match(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", ascii_name).strip("_").lower() or "student"
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


# ---------------------------------------------------------------- notebooks


def to_notebook(text: str):
    """A percent-format module as an nbformat notebook, paired with its .py."""
    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    notebook.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    return notebook


def to_percent(notebook) -> str:
    return jupytext.writes(notebook, fmt="py:percent")


def reference_modules(course: Path, repo: Path) -> list[ModuleFile]:
    """The modules snapshot taken by `generate` (falls back to the repo's modules/)."""
    snapshot = course / REFERENCE
    return list_modules(snapshot) if (snapshot / "modules").is_dir() else list_modules(repo)


def snapshot_modules(course: Path, repo: Path, modules: list[ModuleFile]) -> None:
    target = course / REFERENCE
    (target / "modules").mkdir(parents=True, exist_ok=True)
    (target / "pyproject.toml").write_text('[project]\nname = "reference"\n', encoding="utf-8")
    for module in modules:
        dest = target / "modules" / module.folder
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(module.path.parent, dest, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb", "*.pyc"))


# ---------------------------------------------------------------- building a submission's tinytorch


def build_package(build: Path, modules: list[ModuleFile], own: ModuleFile, own_text: str) -> str:
    """Export tinytorch/ into `build` from `modules` up to `own`, with `own_text` as own's source.

    Returns "" or why the student's module could not be exported (then its stripped
    reference is used instead, so that nothing leaks the solutions).
    """
    from tito import export
    from tito.notebooks import read_notebook

    if build.exists():
        shutil.rmtree(build)
    (build / "modules").mkdir(parents=True)
    (build / "pyproject.toml").write_text('[project]\nname = "submission"\n', encoding="utf-8")
    for module in modules:
        if module.number > own.number:
            continue
        dest = build / "modules" / module.folder
        dest.mkdir()
        for child in module.path.parent.iterdir():
            if child != module.path and child.suffix != ".ipynb" and child.name != "__pycache__":
                (dest / child.name).symlink_to(child.resolve())
        if module.folder != own.folder:
            (dest / module.path.name).symlink_to(module.path.resolve())
    own_path = build / "modules" / own.folder / own.path.name
    problem = ""
    own_path.write_text(own_text, encoding="utf-8")
    try:
        read_notebook(ModuleFile(own.number, own.folder, own_path, f"modules/{own.folder}/{own.path.name}"))
        files = export.plan(build)
    except TitoError as err:
        problem = f"export failed: {err}"
        own_path.write_text(strip_solutions(own.path.read_text(encoding="utf-8")), encoding="utf-8")
        files = export.plan(build)
    export.apply(build, files, export.compare(build, files, None))
    return problem


# ---------------------------------------------------------------- reading what nbgrader did


def locked_sources(notebook) -> dict[str, str]:
    found = {}
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader") or {}
        if meta.get("locked") and meta.get("grade_id"):
            found[meta["grade_id"]] = strip_solutions(cell.source).strip()  # hidden tests aside
    return found


def edited_tests(released, submitted) -> list[str]:
    """grade_ids of locked cells the student changed (or deleted)."""
    theirs = locked_sources(submitted)
    return [gid for gid, src in locked_sources(released).items() if theirs.get(gid) != src]


def timed_out_cells(notebook) -> list[str]:
    found = []
    for cell in notebook.cells:
        if any(o.get("output_type") == "error" and o.get("ename") == TIMEOUT_ENAME for o in cell.get("outputs", [])):
            found.append((cell.metadata.get("nbgrader") or {}).get("grade_id") or f"cell {cell.get('id', '?')}")
    return found


def cell_scores(course: Path, module: str, notebook: str, student: str) -> list[dict]:
    with gradebook(course) as gb:
        try:
            submission = gb.find_submission_notebook(notebook, module, student)
        except Exception:
            return []
        return [
            {"grade_id": g.name, "score": g.score, "max_score": g.max_score}
            for g in sorted(submission.grades, key=lambda g: g.name)
        ]


REASONS = {
    "kernel died": "the kernel died while running the notebook (a crash, os._exit, or the memory cap)",
    "out of memory": "the notebook ran out of memory (the per-submission memory cap)",
}


def _log_reason(log: str) -> str:
    if "DeadKernelError" in log or "Kernel died" in log:
        return "kernel died"
    if "MemoryError" in log:
        return "out of memory"
    return ""


# ---------------------------------------------------------------- one submission (runs in its own process)


@dataclass
class Job:
    course: Path
    repo: Path
    student: str
    module: str  # "01_tensor"
    timeout: int
    memory_mb: int

    def result_path(self) -> Path:
        return self.course / RESULTS / self.student / f"{self.module}.json"


def grade_one(job: Job) -> dict:
    start = time.perf_counter()
    course = job.course.resolve()
    modules = reference_modules(course, job.repo)
    own = next((m for m in modules if m.folder == job.module), None)
    if own is None:
        raise TitoError(f"{job.module} is not a module of this course")
    name = notebook_name(own)
    submitted_path = course / "submitted" / job.student / job.module / f"{name}.ipynb"
    import nbformat

    submitted = nbformat.read(submitted_path, as_version=4)
    released = nbformat.read(course / "release" / job.module / f"{name}.ipynb", as_version=4)
    result = {"student": job.student, "module": job.module, "status": "graded", "reason": "",
              "tests_edited": edited_tests(released, submitted), "cells": [], "score": None, "max_score": None}

    build = course / BUILD / job.student / job.module
    export_problem = build_package(build, modules, own, to_percent(submitted))
    build_seconds = time.perf_counter() - start
    os.environ["PYTHONPATH"] = os.pathsep.join([str(build), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]:
        os.environ[var] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")

    outcome = api(course, job.timeout).autograde(job.module, job.student, force=True, create=True)
    log = (outcome.get("log") or "") + (outcome.get("error") or "")
    autograded = course / "autograded" / job.student / job.module / f"{name}.ipynb"
    if not outcome.get("success") or not autograded.is_file():
        result["status"] = _log_reason(log) or "not graded"
        result["reason"] = REASONS.get(result["status"], "nbgrader could not grade it: " + _tail(log, 1))
        result["log"] = _tail(log, 40)
    else:
        timed_out = timed_out_cells(nbformat.read(autograded, as_version=4))
        if timed_out:
            result["status"] = "timed out"
            result["reason"] = f"cell(s) {', '.join(timed_out)} ran past {job.timeout} s"
    if export_problem:
        result["reason"] = (export_problem + "; " + result["reason"]).strip("; ")
    result["cells"] = cell_scores(course, job.module, name, job.student)
    if result["status"] in ("graded", "timed out") and result["cells"]:
        result["score"] = sum(c["score"] or 0 for c in result["cells"])
        result["max_score"] = sum(c["max_score"] for c in result["cells"])
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["build_seconds"] = round(build_seconds, 2)
    return result


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def write_result(job: Job, result: dict) -> None:
    path = job.result_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def limit_memory(memory_mb: int) -> None:
    """Cap this process's address space; the kernel it starts inherits the cap."""
    if memory_mb <= 0:
        return
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tito.grading", description="Autograde one submission.")
    parser.add_argument("--course", type=Path, required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--student", required=True)
    parser.add_argument("--module", required=True)
    parser.add_argument("--timeout", type=int, default=60)
    parser.add_argument("--memory-mb", type=int, default=0)
    args = parser.parse_args(argv)
    job = Job(args.course, args.repo, args.student, args.module, args.timeout, args.memory_mb)
    limit_memory(job.memory_mb)
    try:
        result = grade_one(job)
    except (TitoError, MemoryError, OSError, ValueError) as err:
        result = {"student": job.student, "module": job.module, "status": "not graded",
                  "reason": f"{type(err).__name__}: {err}", "tests_edited": [], "cells": [],
                  "score": None, "max_score": None}
    write_result(job, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
