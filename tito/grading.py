"""nbgrader underneath `tito course`: the course folder, notebooks, and grading one submission.

Course folder (default `course/`, git-ignored):

    nbgrader_config.py, gradebook.db     nbgrader's own files
    source/NN_name/name.ipynb            instructor notebooks (solutions), from modules/
    release/NN_name/name.ipynb           generate_assignment's output (what students get)
    submitted/<student>/NN_name/...      `tito course collect`
    autograded/, feedback/               nbgrader's outputs
    tito/reference/modules/              snapshot of modules/ taken by `generate`
    tito/results/<student>/NN_name.json  what `autograde` saw: status, reason, cells, edits, flags
    tito/normalized/<student>/NN_name/   the notebook actually graded (see `normalize`)
    tito/build/<student>/NN_name/        the tinytorch/ a submission is graded against

Submissions are graded by long-lived worker processes (`python -m tito.grading --serve`,
started by `tito course autograde`), so nbgrader is imported once per worker, not once per
submission. A submission is first laid onto the release (`normalize`: the release's cells
and metadata, the student's solution cells and added cells), then runs twice, at once, each
time in a bubblewrap sandbox of its own (tito/sandbox.py): in a fresh IPython kernel that
never sees the hidden tests (its outputs are the feedback), and in a plain-Python verdict
process (tito/verdict.py) whose per-cell pass/fail replaces the kernel's scores in the
gradebook. Each notebook is graded against a tinytorch/ exported from the reference modules
before NN plus the student's own NN, so the student's code is what their later cells import.
The threat model: tito/templates/course_README.md (copied into every course folder).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from tito.errors import TitoError
from tito.notebooks import (
    BEGIN_HIDDEN, END_HIDDEN, ModuleFile, list_modules, read_notebook, strip_solutions, to_percent,
)
from tito.submission import edited_tests, grade_id_of, normalize

RESULTS = "tito/results"
REFERENCE = "tito/reference"
BUILD = "tito/build"
TIMEOUT_ENAME = "CellTimeoutError"
BASE_PYTHONPATH = os.environ.get("PYTHONPATH", "")


# ---------------------------------------------------------------- nbgrader set-up


def require_nbgrader() -> None:
    import importlib.util

    if importlib.util.find_spec("nbgrader") is None:  # found, not imported: workers import it
        raise TitoError("nbgrader is not installed here: pip install -e '.[grade]'")
    # nbgrader runs the `alembic` executable when it first creates a gradebook; without it on
    # PATH it leaves a half-made gradebook.db behind.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def db_url(course: Path) -> str:
    # A busy timeout: parallel autograde workers write the same SQLite file.
    return f"sqlite:///{course.resolve()}/gradebook.db?timeout=120"


def config(course: Path, timeout: int = 60, submitted: str = "submitted"):
    """nbgrader's config, given explicitly (nbgrader_config.py is only read from the cwd)."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import ClearHiddenTests, Execute, GetGrades, LimitOutput
    from traitlets.config import Config

    c = Config()
    c.CourseDirectory.root = str(course.resolve())
    c.CourseDirectory.db_url = db_url(course)
    c.CourseDirectory.submitted_directory = submitted
    c.Execute.timeout = int(timeout)
    c.Execute.interrupt_on_timeout = True
    c.Execute.startup_timeout = 120
    c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
    # A marker in a student's own comment is not an error (it stopped feedback for everyone).
    c.ClearHiddenTests.enforce_metadata = False
    defaults = Autograde.class_traits()["autograde_preprocessors"].default()
    steps = []
    for step in defaults:
        if step is Execute:  # the student's kernel never sees hidden tests: they run in the verdict only
            steps += [ClearHiddenTests, capped_execute()]
        elif step is LimitOutput:
            steps += [LimitOutput, cap_output_preprocessor()]
        else:
            steps.append(step)
    c.Autograde.autograde_preprocessors = steps
    from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

    c.GenerateFeedback.preprocessors = [GetGrades, hide_hidden_failures_preprocessor(), ClearHiddenTests,
                                        CSSHTMLHeaderPreprocessor]
    return c


SANDBOX: dict = {"current": None}  # the Sandbox the next kernel starts in (None: unsandboxed); set per job


@functools.lru_cache(maxsize=None)
def capped_kernel_manager():
    """A kernel manager whose kernels start in SANDBOX["current"] (or with the cap `KERNEL_MEMORY`).

    Sandboxed kernels have no network: they talk to the grader over unix sockets (zmq's ipc
    transport) in a folder bound into the sandbox.
    """
    from jupyter_client import AsyncKernelManager

    class CappedKernelManager(AsyncKernelManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            box = SANDBOX["current"]
            if box is not None:
                self.transport = "ipc"
                self.connection_file = f"{box.sockets}/kernel.json"
                self.ip = f"{box.sockets}/k"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            box = SANDBOX["current"]
            if box is not None:
                # A signal would reach bwrap, not the kernel: interrupt it over its control channel.
                self.kernel_spec.interrupt_mode = "message"
                box.own(self.connection_file)
                kw["preexec_fn"] = box.preexec
                kernel_cmd = box.command(list(kernel_cmd))
            elif KERNEL_MEMORY["bytes"] > 0:
                kw["preexec_fn"] = functools.partial(cap_address_space, KERNEL_MEMORY["bytes"])
            return await super()._async_launch_kernel(kernel_cmd, **kw)

    return CappedKernelManager


@functools.lru_cache(maxsize=None)
def capped_execute():
    """nbgrader's Execute, with kernels from capped_kernel_manager()."""
    from nbgrader.preprocessors import Execute

    class CappedExecute(Execute):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("kernel_manager_class", capped_kernel_manager())  # Execute forces its own
            super().__init__(*args, **kwargs)

    return CappedExecute


KERNEL_MEMORY = {"bytes": 0}  # the cap unsandboxed grading kernels start with (0 = none); set by a worker
OUTPUT_BYTES = 64 * 1024      # what a cell's outputs may hold in the autograded notebook (and the feedback)


def cap_address_space(limit: int) -> None:
    """RLIMIT_AS for this process (runs in the kernel's process, between fork and exec)."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def cap_outputs(cell, limit: int = OUTPUT_BYTES) -> None:
    """Keep a cell's outputs under `limit` bytes: text is cut, what does not fit is dropped."""
    if cell.get("cell_type") != "code":
        return
    import nbformat

    kept, used = [], 0
    for output in cell.get("outputs", []):
        size = len(json.dumps(output))
        if used + size <= limit:
            kept.append(output)
            used += size
            continue
        room = max(0, limit - used)
        note = f"\n[output cut: over the {limit // 1024} KiB a cell may show]\n"
        if output.get("output_type") == "stream":
            kept.append(nbformat.from_dict({"output_type": "stream", "name": output.get("name", "stdout"),
                                            "text": str(output.get("text", ""))[:room] + note}))
        else:
            kept.append(nbformat.from_dict({"output_type": "stream", "name": "stdout", "text": note}))
        break
    cell.outputs = kept


@functools.lru_cache(maxsize=None)
def cap_output_preprocessor():
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool

    class CapOutputBytes(Preprocessor):
        enabled = Bool(True).tag(config=True)

        def preprocess_cell(self, cell, resources, index):
            cap_outputs(cell)
            return cell, resources

    return CapOutputBytes


# ---------------------------------------------------------------- feedback without hidden tests

HIDDEN_FAILED = "a hidden test in this cell failed; its message is not shown"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_LINE = re.compile(r"Cell In\[\d*\], line (\d+)|<ipython-input-[^>]*>.*?\n-*> *(\d+)", re.S)


def _hidden_ranges(source: str) -> list[tuple[int, int]]:
    """1-based (first, last) line numbers of each hidden-tests block in a cell's source."""
    ranges, begin = [], None
    for number, line in enumerate(source.splitlines(), 1):
        if line.strip() == BEGIN_HIDDEN:
            begin = number
        elif line.strip() == END_HIDDEN and begin is not None:
            ranges.append((begin, number))
            begin = None
    return ranges


def failing_line(traceback: list[str]) -> int | None:
    """The line of the cell an error was raised at (its first frame), if the traceback says."""
    match = _CELL_LINE.search(_ANSI.sub("", "\n".join(traceback)))
    return int(match.group(1) or match.group(2)) if match else None


def hide_hidden_failures(cell) -> None:
    """A graded cell with hidden tests that raised: show no hidden test's message or code.

    The outputs become one error: the visible test's own `ename: evalue` when the failing
    line is outside the hidden blocks (without the traceback's code context, which can show
    hidden lines), otherwise HIDDEN_FAILED. Points are the gradebook's; they are kept.
    """
    ranges = _hidden_ranges(cell.get("source", ""))
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if cell.get("cell_type") != "code" or not ranges or not errors:
        return
    error = errors[-1]
    if error.get("ename") == TIMEOUT_ENAME:
        shown = dict(error)
    else:
        line = failing_line(error.get("traceback", []))
        hidden = line is None or any(first <= line <= last for first, last in ranges)
        evalue = HIDDEN_FAILED if hidden else error.get("evalue", "")
        shown = {"output_type": "error", "ename": error.get("ename", "Error"), "evalue": evalue,
                 "traceback": [f"{error.get('ename', 'Error')}: {evalue}"]}
    import nbformat

    cell.outputs = [nbformat.from_dict(shown)]


@functools.lru_cache(maxsize=None)
def hide_hidden_failures_preprocessor():
    from nbconvert.preprocessors import Preprocessor
    from traitlets import Bool

    class HideHiddenTestFailures(Preprocessor):
        """Feedback: replace the output of cells whose hidden tests failed (runs before ClearHiddenTests)."""

        enabled = Bool(True).tag(config=True)  # nbconvert's default is off

        def preprocess_cell(self, cell, resources, index):
            hide_hidden_failures(cell)
            return cell, resources

    return HideHiddenTestFailures


def __getattr__(name: str):
    # "tito.grading.HideHiddenTestFailures" in nbgrader_config.py, built on first use
    if name == "HideHiddenTestFailures":
        return hide_hidden_failures_preprocessor()
    raise AttributeError(name)


def api(course: Path, timeout: int = 60, submitted: str = "submitted"):
    require_nbgrader()
    from nbgrader.apps import NbGraderAPI

    return NbGraderAPI(config=config(course, timeout, submitted))


CONFIG_TEXT = '''\
# nbgrader settings for this TinyTorch course, written by `tito course generate`.
# `tito course ...` passes these explicitly; this file serves plain `nbgrader` run from here.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = "tinytorch"
c.CourseDirectory.root = {root!r}
c.Execute.timeout = 60
c.ClearHiddenTests.enforce_metadata = False
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "tito.grading.HideHiddenTestFailures",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]
'''


COURSE_README = Path(__file__).parent / "templates" / "course_README.md"


def init_course(course: Path) -> None:
    """Create the course folder, its nbgrader_config.py and its gradebook (once)."""
    require_nbgrader()
    from nbgrader.api import Gradebook

    course.mkdir(parents=True, exist_ok=True)
    (course / "nbgrader_config.py").write_text(CONFIG_TEXT.format(root=str(course.resolve())), encoding="utf-8")
    shutil.copy(COURSE_README, course / "README.md")  # what the folder holds, and the threat model
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
    # One spelling per name: macOS file names are often NFD ("e" + combining accent), typed
    # ones NFC; both must hash to the same id. NFC leaves existing (NFC) ids unchanged.
    name = unicodedata.normalize("NFC", name.strip())
    if _SAFE_ID.match(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", ascii_name).strip("_").lower() or "student"
    return f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"


# ---------------------------------------------------------------- notebooks


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


def _timed_out(cell) -> bool:
    return any(o.get("output_type") == "error" and o.get("ename") == TIMEOUT_ENAME for o in cell.get("outputs", []))


def timed_out_cells(notebook) -> list[str]:
    return [grade_id_of(cell) or f"cell {cell.get('id', '?')}" for cell in notebook.cells if _timed_out(cell)]


def passed_only_in_the_verdict(notebook, verdict_cells: dict) -> list[str]:
    """Graded cells that raised in the student's kernel but passed in the verdict's run. Both run the
    same visible tests, so code that acts differently under the grader, or that forges the verdict's
    answer, passes only there; honest code may too, rarely (hidden tests moved a shared random state,
    IPython-only errors, the kernel's larger memory): such a cell scores 0, flagged for a look by hand.
    Cells from the first one that timed out in the kernel on are left to the verdict (they may fail
    there only because that cell never finished)."""
    found = []
    for cell in notebook.cells:
        if _timed_out(cell):
            break
        gid = grade_id_of(cell)
        if (gid and verdict_cells.get(gid, {}).get("passed")
                and any(o.get("output_type") == "error" for o in cell.get("outputs", []))):
            found.append(gid)
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
    "kernel hung": "the kernel stopped answering (code in the notebook broke it, e.g. by patching builtins)",
}


def _log_reason(log: str) -> str:
    if "DeadKernelError" in log or "Kernel died" in log:
        return "kernel died"
    if "MemoryError" in log:
        return "out of memory"
    if "Timeout waiting for IOPub output" in log:
        return "kernel hung"
    return ""


def _log_error(log: str) -> str:
    """The most telling error line of nbgrader's log (not its closing 'see the above traceback')."""
    lines = [line.strip() for line in log.splitlines() if "Error" in line and "NbGraderException" not in line]
    return lines[-1][:300] if lines else _tail(log, 1)


# ---------------------------------------------------------------- the verdict (a fresh process)

TRUSTED = ["numpy", "math", "builtins", "random", "itertools", "functools", "collections"]
VERDICT_SCRIPT = Path(__file__).with_name("verdict.py")
VERDICT_TAIL_BYTES = 4 * 2**20  # the answer is the last line; far smaller than this


def run_verdict(cells: list[dict], build: Path, box, timeout: int, budget: float) -> dict:
    """Run the verdict process (in `box`, or plainly when None); its answer, or {"error": why}."""
    import secrets

    nonce = secrets.token_hex(16)
    spec = json.dumps({"nonce": nonce, "cells": cells, "trusted": TRUSTED, "timeout": timeout})
    if box is not None:
        box.binds.append((str(VERDICT_SCRIPT), "/sandbox/grader/verdict.py"))
        command, preexec, env = box.command([sys.executable, "-s", "-B", "/sandbox/grader/verdict.py"]), \
            box.preexec, None
        box.watch()
    else:
        command, preexec = [sys.executable, "-s", "-B", str(VERDICT_SCRIPT)], None
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(build), "HOME": str(build),
               "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    # Output goes to a file, not a pipe: in the sandbox RLIMIT_FSIZE caps it, and only its tail (where
    # the answer is) is read back, so a flood of output costs the grader neither memory nor time.
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.run(command, input=spec.encode("utf-8"), stdout=out, stderr=subprocess.DEVNULL,
                                  timeout=max(budget, 1), preexec_fn=preexec, env=env, cwd=str(build))
        except subprocess.TimeoutExpired:
            return {"error": f"the grader's run of the tests ran past the submission's budget ({budget:.0f} s)"}
        finally:
            if box is not None:
                box.kill()
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - VERDICT_TAIL_BYTES))
        tail = out.read().decode("utf-8", errors="replace")
    for line in tail.splitlines()[::-1]:
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and answer.get("nonce") == nonce:
            return answer
    if box is not None and box.outcome.killed_for:
        return {"error": f"the grader's run of the tests went over the {box.outcome.killed_for} cap"}
    return {"error": f"the grader's run of the tests gave no answer (exit {proc.returncode})"}


def apply_verdict(course: Path, job, name: str, verdict: dict, autograded: Path, ungraded: str = "") -> None:
    """The gradebook's scores become the verdict's; feedback says which hidden tests failed. With no verdict
    (`ungraded`: why), the kernel's scores, which the student's own code produced, count for nothing: every
    graded cell scores 0, is marked for grading by hand, and its feedback gives the reason."""
    import nbformat

    cells = verdict.get("cells", {})
    with gradebook(course) as gb:
        try:
            submission = gb.find_submission_notebook(name, job.module, job.student)
        except Exception:  # noqa: BLE001 -- nothing recorded: nothing to override
            return
        for grade in submission.grades:  # tampering anywhere scores nothing anywhere
            passed = bool(cells.get(grade.name, {}).get("passed")) and not verdict.get("tampered") and not ungraded
            grade.auto_score = grade.max_score if passed else 0.0
            if ungraded:
                grade.needs_manual_grade = True
        gb.db.commit()
    if not autograded.is_file():
        return
    notebook = nbformat.read(autograded, as_version=4)
    if ungraded:
        ename, why = "NotGraded", _not_graded(ungraded)
    else:
        ename = "HiddenTestFailed"
        why = "tampering: " + verdict["tampered"] if verdict.get("tampered") else HIDDEN_FAILED
    for cell in notebook.cells:
        gid = grade_id_of(cell)
        if cell.cell_type != "code" or gid is None:
            continue
        if not ungraded and (gid not in cells or cells[gid].get("passed")
                             or any(o.get("output_type") == "error" for o in cell.get("outputs", []))):
            continue  # passed, or its failure already shows
        cell.outputs.append(nbformat.from_dict({"output_type": "error", "ename": ename, "evalue": f"{gid}: {why}",
                                                "traceback": [f"{gid}: {why}"]}))
    # nbgrader leaves it read-only (0444), which only root may write over: replace it instead
    tmp = autograded.with_suffix(".tmp")
    nbformat.write(notebook, tmp)
    tmp.chmod(autograded.stat().st_mode)
    tmp.replace(autograded)


def _not_graded(status: str) -> str:
    """What feedback says of a cell the grader could not score (the status only, never the log)."""
    return "not graded" + ("" if status == "not graded" else f" ({status})") + ": your instructor grades it by hand"


# ---------------------------------------------------------------- one submission (runs in its own process)


@dataclass
class Job:
    course: Path
    repo: Path
    student: str
    module: str  # "01_tensor"
    timeout: int
    memory_mb: int
    sandboxed: bool = True
    budget: float = 600.0  # seconds for the whole submission (both runs)

    def result_path(self) -> Path:
        return self.course / RESULTS / self.student / f"{self.module}.json"


NORMALIZED = "tito/normalized"


def readable_by_all(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | (0o555 if path.is_dir() else 0o444))


def _sandbox_for(job: Job, build: Path, kernel: bool = False):
    """A sandbox for one run of the submission (a kernel's also gets a folder for its sockets)."""
    import tempfile

    from tito import sandbox

    if not job.sandboxed:
        return None
    limits = sandbox.Limits(memory_mb=job.memory_mb, cpu_seconds=int(job.budget) + 5)
    box = sandbox.Sandbox(limits, binds=[(str(build / "tinytorch"), f"{sandbox.PACKAGE}/tinytorch")])
    if not kernel:
        return box
    box.sockets = tempfile.mkdtemp(prefix="tito-k-")  # short: a unix socket's path has ~100 bytes
    os.chmod(box.sockets, 0o700)
    box.own(box.sockets)
    box.writable.append((box.sockets, box.sockets))
    return box


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

    try:
        submitted = nbformat.read(submitted_path, as_version=4)
    except Exception as err:  # noqa: BLE001 -- any unreadable notebook is this submission's problem
        raise TitoError(f"{submitted_path.name} is not a readable notebook ({type(err).__name__}): "
                        f"ask the student to resubmit") from err
    released = nbformat.read(course / "release" / job.module / f"{name}.ipynb", as_version=4)
    source = nbformat.read(course / "source" / job.module / f"{name}.ipynb", as_version=4)
    normal = normalize(released, source, submitted)
    result = {"student": job.student, "module": job.module, "status": "graded", "reason": "",
              "tests_edited": edited_tests(released, submitted), "flags": normal.flags, "cells": [],
              "score": None, "max_score": None, "sandboxed": job.sandboxed}
    target = course / NORMALIZED / job.student / job.module
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    nbformat.write(normal.notebook, target / f"{name}.ipynb")

    build = course / BUILD / job.student / job.module
    export_problem = build_package(build, modules, own, to_percent(normal.notebook))
    if job.sandboxed:  # the sandbox's uid reads it, whatever the instructor's umask (course/ stays private)
        readable_by_all(build / "tinytorch")
    build_seconds = time.perf_counter() - start
    if not job.sandboxed:  # the kernel inherits this environment; a worker grades many jobs
        os.environ["PYTHONPATH"] = os.pathsep.join([str(build), BASE_PYTHONPATH]).rstrip(os.pathsep)
        for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]:
            os.environ[var] = "1"
        os.environ.setdefault("MPLBACKEND", "Agg")

    # The verdict's run needs nothing from the kernel's: both run at once (2 cores: about the time of one).
    verdict: dict = {}

    def verdict_in_background() -> None:
        begin = time.perf_counter()
        verdict.update(run_verdict(normal.verdict_cells, build, _sandbox_for(job, build), job.timeout, job.budget))
        result["verdict_seconds"] = round(time.perf_counter() - begin, 2)

    verdict_run = threading.Thread(target=verdict_in_background, daemon=True)
    verdict_run.start()
    box = _sandbox_for(job, build, kernel=True)
    SANDBOX["current"] = box
    timer = None
    if box is not None:
        box.watch()
        timer = threading.Timer(job.budget, lambda: (box.outcome.extra.update(budget=True), box.kill()))
        timer.start()
    begin = time.perf_counter()
    try:
        outcome = api(course, job.timeout, NORMALIZED).autograde(job.module, job.student, force=True, create=True)
    finally:
        result["kernel_seconds"] = round(time.perf_counter() - begin, 2)
        SANDBOX["current"] = None
        if timer is not None:
            timer.cancel()
        if box is not None:
            box.kill()  # every process the notebook started, daemons included
            shutil.rmtree(box.sockets, ignore_errors=True)
    log = (outcome.get("log") or "") + (outcome.get("error") or "")
    autograded = course / "autograded" / job.student / job.module / f"{name}.ipynb"
    over_budget = box is not None and box.outcome.extra.get("budget")
    if box is not None and box.outcome.killed_for == "memory":
        result["status"], result["reason"] = "out of memory", REASONS["out of memory"]
    elif over_budget:
        result["status"] = "timed out"
        result["reason"] = f"the submission ran past its budget of {job.budget:.0f} s in total"
    elif not outcome.get("success") or not autograded.is_file():
        result["status"] = _log_reason(log) or "not graded"
        result["reason"] = REASONS.get(result["status"], "nbgrader could not grade it: " + _log_error(log))
        result["log"] = _tail(log, 40)
    else:
        timed_out = timed_out_cells(nbformat.read(autograded, as_version=4))
        if timed_out:
            result["status"] = "timed out"
            result["reason"] = f"cell(s) {', '.join(timed_out)} ran past {job.timeout} s"
    verdict_run.join()
    applied = False
    if result["status"] in ("graded", "timed out") and not over_budget:
        if "error" in verdict or not verdict:
            result["status"] = "not graded"
            result["reason"] = verdict.get("error", "the grader's run of the tests gave no answer")
        else:
            applied = True
            # a cell passes only if it passed in both runs
            for gid in passed_only_in_the_verdict(nbformat.read(autograded, as_version=4), verdict.get("cells", {})):
                verdict["cells"][gid] = {"passed": False, "error": "failed in the student's kernel"}
                result["flags"] = [*result.get("flags", []), f"check by hand: {gid} failed in the student's kernel "
                                                             f"but passed in the grader's run (scored 0)"]
            apply_verdict(course, job, name, verdict, autograded)
            # for the instructor (results are never shown to students): why the verdict failed a cell
            result["verdict"] = {gid: c.get("error", "") for gid, c in verdict.get("cells", {}).items()
                                 if not c.get("passed")}
            if verdict.get("tampered"):
                result["status"] = "tampering"
                result["reason"] = f"the grader's invariants broke ({verdict['tampered']}): scored 0, check by hand"
    if not applied:  # crashed, hung, out of memory or budget, no answer: nothing the kernel scored stands
        # (the status only: the reason may quote the log, which may quote hidden tests)
        apply_verdict(course, job, name, {}, autograded, ungraded=result["status"])
    if export_problem:
        result["reason"] = (export_problem + "; " + result["reason"]).strip("; ")
    result["cells"] = cell_scores(course, job.module, name, job.student)
    if result["status"] in ("graded", "timed out", "tampering") and result["cells"]:
        result["score"] = sum(c["score"] or 0 for c in result["cells"])
        result["max_score"] = sum(c["max_score"] for c in result["cells"])
    if result["status"] == "tampering":
        result["score"] = 0
    result["seconds"] = round(time.perf_counter() - start, 2)
    result["build_seconds"] = round(build_seconds, 2)
    if box is not None:
        result["peak_memory_mb"] = round(box.outcome.peak_rss_mb, 1)
    return result


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def clear_path(path: Path) -> None:
    """Nothing at `path` any more, whatever was there (a folder where a file belongs included)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def read_result(path: Path) -> dict | None:
    """The result stored at `path`, or None if there is none, or it is not one tito wrote."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and {"student", "module", "status"} <= result.keys() else None


def write_result(job: Job, result: dict) -> None:
    path = job.result_path()
    if path.parent.exists() and not path.parent.is_dir():
        clear_path(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():  # a folder where the file belongs; a file is replaced whole below
        shutil.rmtree(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def grade_safely(job: Job) -> dict:
    """grade_one, with what went wrong in the grader itself reported as "not graded"."""
    try:
        return grade_one(job)
    except Exception as err:  # noqa: BLE001 -- one bad submission must not stop a worker
        lines = str(err).strip().splitlines() or [""]
        why = lines[0] if isinstance(err, TitoError) else f"the grader failed on it ({type(err).__name__}: {lines[-1]})"
        return {"student": job.student, "module": job.module, "status": "not graded", "reason": why,
                "tests_edited": [], "cells": [], "score": None, "max_score": None}


READY = "tito-grading-ready"


def serve(course: Path, repo: Path, timeout: int, memory_mb: int, sandboxed: bool = True,
          budget: float = 600.0) -> int:
    """A grading worker: read jobs from stdin, one JSON object a line ({"student", "module"}),
    grade each, write its result file, and answer one JSON line on stdout; stop at EOF.

    stdout is kept for the answers (anything else printed goes to stderr).
    """
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    require_nbgrader()
    import nbgrader.apps  # noqa: F401 -- import once, before the first job

    KERNEL_MEMORY["bytes"] = memory_mb * 1024 * 1024 if memory_mb > 0 else 0
    print(json.dumps({"ready": READY}), file=answers, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        job = Job(course, repo, request["student"], request["module"], timeout, memory_mb, sandboxed, budget)
        result = grade_safely(job)
        write_result(job, result)
        print(json.dumps({"student": job.student, "module": job.module, "status": result["status"]}),
              file=answers, flush=True)
    return 0


class Worker:
    """One `python -m tito.grading --serve` process; grades one submission at a time.

    A submission that runs past its budget (or wedges the worker) gets the worker killed;
    the next submission starts a fresh one. Its stderr (nbgrader's and the kernels' noise)
    goes to course/tito/logs/worker-N.log.
    """

    def __init__(self, course: Path, root: Path, timeout: int, memory_mb: int, log: Path, sandboxed: bool = True,
                 budget: float = 600.0):
        self.command = [sys.executable, "-m", "tito.grading", "--serve", "--course", str(course),
                        "--repo", str(root), "--timeout", str(timeout), "--memory-mb", str(memory_mb),
                        "--budget", str(budget)] + ([] if sandboxed else ["--unsafe-no-sandbox"])
        self.root = root  # the worker imports this checkout's tito
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.answers: queue.Queue = queue.Queue()

    def start(self) -> None:
        with open(self.log, "a", encoding="utf-8") as log:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         text=True, encoding="utf-8", start_new_session=True, cwd=self.root)
        self.answers = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.answers), daemon=True).start()

    @staticmethod
    def _read(proc: subprocess.Popen, answers: queue.Queue) -> None:
        for line in proc.stdout:
            answers.put(line)
        answers.put(None)

    def grade(self, student: str, module: str, budget: float) -> str:
        """Grade one submission; return "" or why the worker gave no answer."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        deadline = time.monotonic() + budget
        try:
            self.proc.stdin.write(json.dumps({"student": student, "module": module}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died; reading below reports how
        while True:
            try:
                line = self.answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                return f"timed out: the whole submission ran past {budget:.0f} s"
            if line is None:
                code = self.proc.wait()
                self.proc = None
                return f"grader exited {code}: {_tail(_read_tail(self.log))}"
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if answer.get("ready") != READY:
                return ""

    def kill(self) -> None:
        proc = self.proc  # once: autograde's Ctrl-C kills from another thread than the one reaping it
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its kernel, in a session of its own, exits
            except ProcessLookupError:               # when it sees its parent gone
                pass
            proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None


def _read_tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-4000:]
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tito.grading", description="Autograde submissions.")
    parser.add_argument("--course", type=Path, required=True)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--serve", action="store_true", help="Grade jobs read from stdin (a worker).")
    parser.add_argument("--student", help="Grade this student's submission of --module, then exit.")
    parser.add_argument("--module")
    parser.add_argument("--timeout", type=int, default=60)
    parser.add_argument("--memory-mb", type=int, default=0, help="Memory cap per submission (0 = none).")
    parser.add_argument("--budget", type=float, default=600.0, help="Seconds for a whole submission.")
    parser.add_argument("--unsafe-no-sandbox", action="store_true", help="Run student code unsandboxed.")
    args = parser.parse_args(argv)
    from tito import sandbox

    # A worker's command line was checked by `tito course autograde`; a lone run checks here.
    sandboxed = not args.unsafe_no_sandbox if args.serve else sandbox.require(args.unsafe_no_sandbox)
    if args.serve:
        return serve(args.course, args.repo, args.timeout, args.memory_mb, sandboxed, args.budget)
    if not (args.student and args.module):
        parser.error("give --serve, or --student and --module")
    KERNEL_MEMORY["bytes"] = args.memory_mb * 1024 * 1024 if args.memory_mb > 0 else 0
    job = Job(args.course, args.repo, args.student, args.module, args.timeout, args.memory_mb, sandboxed, args.budget)
    write_result(job, grade_safely(job))
    return 0


if __name__ == "__main__":
    from tito.grading import main as module_main  # one copy of this module's state, not two

    sys.exit(module_main())
