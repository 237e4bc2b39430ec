"""`tito course`: the instructor's side, on nbgrader (see tito/grading.py for the course folder).

    generate   modules -> nbgrader source notebooks -> release notebooks (+ gradebook)
    release    a student copy of the project with no solutions in it
    collect    submissions (per-student folders or zips) -> submitted/<student>/<module>/
    autograde  grade submissions in parallel, each sandboxed, with time, memory and process limits
    report     student x module scores (table, CSV), with why a submission has no score
    feedback   per-student HTML, hidden tests removed
    check      every module: solutions score full marks, the release scores 0
"""

from __future__ import annotations

import csv
import json
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tito import grading
from tito.collect import collect_command
from tito.errors import TitoError, user_errors
from tito.notebooks import (
    BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, ModuleFile, companion, find_root, list_modules,
    read_notebook,
    name_stubs, select_modules, strip_solutions, to_notebook,
)

console = Console(soft_wrap=True, highlight=False)
app = typer.Typer(help="Instructor tools: build the course, collect, autograde, report (nbgrader).",
                  no_args_is_help=True)

COURSE_OPTION = typer.Option(Path("course"), "--course", help="The course folder (created by `generate`).")
TEMPLATE = Path(__file__).parent / "templates" / "student_README.md"


def _modules(root: Path, selectors: list[str] | None, all_modules: bool = False) -> list[ModuleFile]:
    chosen = select_modules(root, None if all_modules else selectors)
    if not chosen:
        raise TitoError("no modules found under modules/")
    return chosen


def _course(path: Path) -> Path:
    return path if path.is_absolute() else (Path.cwd() / path)


# ---------------------------------------------------------------- generate


def generate_modules(root: Path, course: Path, modules: list[ModuleFile]) -> None:
    grading.init_course(course)
    grading.snapshot_modules(course, root, list_modules(root))  # a module is graded against all earlier ones
    nb_api = grading.api(course)
    for module in modules:
        read_notebook(module)  # clean file:line errors before nbgrader sees it
        check_marker_cells(module)
        source = course / "source" / grading.module_id(module)
        if source.exists():
            shutil.rmtree(source)
        source.mkdir(parents=True)
        notebook = to_notebook(module.path.read_text(encoding="utf-8"))
        import nbformat

        nbformat.write(notebook, source / f"{grading.notebook_name(module)}.ipynb")
        result = nb_api.generate_assignment(grading.module_id(module), force=True, create=True)
        if not result.get("success"):
            raise TitoError(f"nbgrader generate_assignment failed for {module.folder}:\n"
                            f"{grading._tail((result.get('log') or '') + (result.get('error') or ''), 30)}")
        name_release_stubs(course / "release" / grading.module_id(module))
        console.print(f"generated {module.folder}: {escape(str(course / 'release' / module.folder))}")


def name_release_stubs(release: Path) -> None:
    """nbgrader leaves `raise NotImplementedError()`; say which exercise is not written yet."""
    import nbformat

    for path in sorted(release.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code" and "raise NotImplementedError()" in cell.source:
                cell.source = name_stubs(cell.source)
        nbformat.write(notebook, path)


app.command("collect")(collect_command)


@app.command("generate")
def generate_command(
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = all."),
    all_modules: bool = typer.Option(False, "--all", help="Every module (the default)."),
    course: Path = COURSE_OPTION,
) -> None:
    """Convert modules to notebooks and run nbgrader generate_assignment into the course folder."""
    with user_errors():
        root = find_root()
        generate_modules(root, _course(course), _modules(root, modules, all_modules))


def check_marker_cells(module: ModuleFile) -> None:
    """Solution markers only in solution cells; hidden-test markers only in graded cells."""
    for cell in read_notebook(module).cells:
        lines = {line.strip() for line in cell.source.splitlines()}
        meta = cell.nbgrader
        if lines & {BEGIN_SOLUTION, END_SOLUTION} and not meta.get("solution"):
            raise TitoError(f"{module.rel}:{cell.line}: '{BEGIN_SOLUTION}' in a cell that is not an nbgrader "
                            f"solution cell; nbgrader would leave the solution in the release")
        if lines & {BEGIN_HIDDEN, END_HIDDEN} and not meta.get("grade"):
            raise TitoError(f"{module.rel}:{cell.line}: '{BEGIN_HIDDEN}' in a cell that is not a graded cell")


# ---------------------------------------------------------------- release


def _code_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _fingerprints(lines: list[str]) -> set[str]:
    """Long single lines and every pair of consecutive lines that says something (30+ characters
    together): what a leaked solution shows. Shorter pairs (`return False` / `return True`,
    `opt.step()` / `sched.step()`) are idioms any file may hold."""
    pairs = {a + "\n" + b for a, b in zip(lines, lines[1:]) if len(a) + len(b) >= 30}
    return {line for line in lines if len(line) >= 40} | pairs


def solution_lines(modules: list[ModuleFile]) -> dict[str, str]:
    """Fingerprints of the solutions (text -> module) that no stripped module provides."""
    provided: set[str] = set()
    found: dict[str, str] = {}
    for module in modules:
        text = module.path.read_text(encoding="utf-8")
        provided |= _fingerprints(_code_lines(strip_solutions(text)))
        extra = companion(module)  # provided.py is handed out as it is
        if extra is not None:
            provided |= _fingerprints(_code_lines(extra.path.read_text(encoding="utf-8")))
        block: list[str] | None = None
        for line in text.splitlines():
            marker = line.strip()
            if marker == BEGIN_SOLUTION:
                block = []
            elif marker == END_SOLUTION and block is not None:
                for fingerprint in _fingerprints(_code_lines("\n".join(block))):
                    found.setdefault(fingerprint, module.rel)
                block = None
            elif block is not None:
                block.append(line)
    return {k: v for k, v in found.items() if k not in provided}


def find_leaks(folder: Path, secrets: dict[str, str]) -> list[str]:
    """`file: text (solution of module)` for every solution fingerprint found under `folder`."""
    leaks = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for fingerprint in sorted(_fingerprints(_code_lines(text)) & secrets.keys()):
            shown = fingerprint.replace("\n", " / ")
            leaks.append(f"{path.relative_to(folder)}: {shown} (solution in {secrets[fingerprint]})")
    return leaks


def build_release(root: Path, out: Path, modules: list[ModuleFile]) -> list[str]:
    """Write the student copy; return the files it holds (relative)."""
    from tito import export

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.ipynb", ".ipynb_checkpoints")
    (out / "modules").mkdir(parents=True)
    for module in modules:
        dest = out / "modules" / module.folder
        shutil.copytree(module.path.parent, dest, ignore=ignore)
        (dest / module.path.name).write_text(strip_solutions(module.path.read_text(encoding="utf-8")),
                                             encoding="utf-8")
    readme = (root / "modules" / "README.md")
    if readme.is_file():
        shutil.copy(readme, out / "modules" / "README.md")
    shutil.copytree(root / "tito", out / "tito", ignore=ignore)
    shutil.copy(root / "pyproject.toml", out / "pyproject.toml")
    # Tests that need only finished modules: each module's own folder (and the shared conftest).
    (out / "tests").mkdir()
    if (root / "tests" / "conftest.py").is_file():
        shutil.copy(root / "tests" / "conftest.py", out / "tests" / "conftest.py")
    for module in modules:
        tests = root / "tests" / module.folder
        if tests.is_dir():
            shutil.copytree(tests, out / "tests" / module.folder, ignore=ignore)
    if (root / "milestones").is_dir():
        shutil.copytree(root / "milestones", out / "milestones", ignore=ignore)
    names = "\n".join(f"| {m.number:02d} | `modules/{m.folder}/{m.path.name}` |" for m in modules)
    (out / "README.md").write_text(TEMPLATE.read_text(encoding="utf-8").replace("{modules}", names),
                                   encoding="utf-8")
    files = export.plan(out)
    export.apply(out, files, export.compare(out, files, None))
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def check_release_selection(every: list[ModuleFile], chosen: list[ModuleFile]) -> None:
    """A module builds on every earlier one (its code imports theirs, as in grading): a student copy
    without them cannot run its tests. Refused rather than added, so a release holds what was asked."""
    last = max(m.number for m in chosen)
    missing = [m for m in every if m.number < last and m.folder not in {c.folder for c in chosen}]
    if missing:
        needs = ", ".join(m.folder for m in missing)
        wanted = " ".join(f"{m.number:02d}" for m in sorted([*chosen, *missing], key=lambda m: m.number))
        raise TitoError(f"{max(chosen, key=lambda m: m.number).folder} builds on {needs}, which the selection "
                        f"lacks: a student copy needs every module before the last it hands out; release them "
                        f"together: tito course release --out OUT {wanted}")


@app.command("release")
def release_command(
    out: Path = typer.Option(..., "--out", help="Folder to write the student copy into (must not exist)."),
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = all."),
) -> None:
    """A ready-to-hand-out student copy: stripped modules, tinytorch/ built from them, tests, tito."""
    with user_errors():
        root = find_root()
        chosen = _modules(root, modules)
        check_release_selection(list_modules(root), chosen)
        for module in chosen:
            read_notebook(module)
            check_marker_cells(module)
        if out.exists() and any(out.iterdir()):
            raise TitoError(f"{out} exists and is not empty; choose a new folder")
        files = build_release(root, out, chosen)
        leaks = find_leaks(out, solution_lines(chosen))
        if leaks:
            shutil.rmtree(out)
            raise TitoError("solution text in the release (removed it):\n" + "\n".join(leaks[:20]))
    console.print(f"[green]released[/] {len(chosen)} module(s) to {escape(str(out))} ({len(files)} files); "
                  f"no solution text found in it")


# ---------------------------------------------------------------- autograde


def submissions(course: Path, modules: list[str] | None, student: str | None) -> list[tuple[str, str]]:
    """(student id, module id) of every submission, filtered."""
    found = []
    root = course / "submitted"
    if not root.is_dir():
        return found
    sid = grading.student_id(student) if student else None
    for folder in sorted(root.iterdir()):
        if (sid and folder.name != sid) or not folder.is_dir():
            continue
        for module in sorted(p.name for p in folder.iterdir() if p.is_dir()):
            if modules is None or module in modules:
                found.append((folder.name, module))
    return found


def _code_cells(course: Path, module: str) -> int:
    notebooks = [json.loads(n.read_text(encoding="utf-8")) for n in (course / "release" / module).glob("*.ipynb")]
    return sum(c.get("cell_type") == "code" for n in notebooks for c in n.get("cells", []))


def grade_all(course: Path, root: Path, jobs_list: list[tuple[str, str]], timeout: int, memory_mb: int,
              jobs: int, on_done=None, sandboxed: bool = True, budget: float = 600.0) -> list[dict]:
    """Autograde submissions with `jobs` long-lived worker processes; return their results."""
    grading.require_nbgrader()
    logs = course / "tito" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    workers = [grading.Worker(course, root, timeout, memory_mb, logs / f"worker-{n}.log", sandboxed, budget)
               for n in range(max(1, min(jobs, len(jobs_list))))]
    for worker in workers:
        worker.log.write_text("", encoding="utf-8")
        worker.start()  # importing nbgrader overlaps with what follows
    # The worker's own deadline is a backstop: the submission's budget is enforced inside it.
    budgets = {m: min(timeout * (_code_cells(course, m) + 2), budget) + 120 for m in {m for _, m in jobs_list}}
    # An earlier result stays until its regrade replaces it (atomically): a run cut short loses no grade.
    todo: queue.Queue = queue.Queue()
    for index, item in enumerate(jobs_list):
        todo.put((index, item))
    results: list[dict | None] = [None] * len(jobs_list)

    def one(worker: grading.Worker, student: str, module: str) -> dict | None:
        job = grading.Job(course, root, student, module, timeout, memory_mb)
        start, before = time.perf_counter(), _version(job.result_path())
        problem = worker.grade(student, module, budgets[module])
        if stop.is_set() and problem:  # we killed it (Ctrl-C): it keeps the result it had
            return None
        result = None if problem or _version(job.result_path()) == before else grading.read_result(job.result_path())
        if result is None:  # (an earlier run's result, still there, is not this run's)
            result = {"student": student, "module": module, "score": None, "max_score": None, "cells": [],
                      "tests_edited": [], "status": "timed out" if problem.startswith("timed out") else "not graded",
                      "reason": problem or "the grader wrote no result"}
        result["wall_seconds"] = round(time.perf_counter() - start, 2)
        grading.write_result(job, result)
        if on_done:
            on_done(result)
        return result

    def drain(worker: grading.Worker) -> None:
        try:
            while not stop.is_set():
                try:
                    index, (student, module) = todo.get_nowait()
                except queue.Empty:
                    return
                results[index] = one(worker, student, module)
        finally:
            worker.close()

    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=len(workers))
    futures = [pool.submit(drain, worker) for worker in workers]
    try:
        for future in futures:
            future.result()
    except BaseException:  # Ctrl-C: the workers run in sessions of their own and never see it; kill them
        stop.set()        # and take no more jobs (a worker restarted meanwhile is killed on the next round)
        while not all(future.done() for future in futures):
            for worker in workers:
                worker.kill()
            time.sleep(0.05)
        raise
    finally:
        pool.shutdown()
    return results


def _version(path: Path) -> tuple[int, int] | None:
    """Which file is at `path` now (write_result replaces it whole: a new inode), or None."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns


UNSAFE_OPTION = typer.Option(False, "--unsafe-no-sandbox",
                             help="Grade without a sandbox where none can be made: student code then runs with "
                                  "your privileges, files and environment.")


@app.command("autograde")
def autograde_command(
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = every submitted one."),
    student: str = typer.Option(None, "--student", help="Only this student (name or id)."),
    course: Path = COURSE_OPTION,
    timeout: int = typer.Option(30, help="Seconds allowed per notebook cell."),
    memory_mb: int = typer.Option(4096, "--memory-mb", help="Memory cap of a submission's processes, all together "
                                                            "(0 = none)."),
    budget: int = typer.Option(600, "--submission-timeout", help="Seconds allowed for a whole submission."),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", "-j", help="Submissions graded at once."),
    unsafe: bool = UNSAFE_OPTION,
) -> None:
    """nbgrader autograde in parallel worker processes; each submission in a sandbox of its own."""
    from tito import sandbox

    with user_errors():
        root = find_root()
        course = _course(course)
        wanted = [m.folder for m in select_modules(root, modules)] if modules else None
        todo = submissions(course, wanted, student)
        if not todo:
            raise TitoError(f"no submissions to grade in {course / 'submitted'}: run `tito course collect` first")
        sandboxed = sandbox.require(unsafe)
    if not sandboxed:
        console.print(f"[red]unsandboxed[/]: {escape(sandbox.why_unavailable())}; grading anyway "
                      f"({sandbox.UNSAFE_FLAG})")

    graded = []

    def done(result: dict) -> None:
        graded.append(result)
        console.print(f"{escape(result['student'])} {result['module']}: {_cell_text(result, plain=True)} "
                      f"({result.get('wall_seconds', 0):.1f} s)")

    start = time.perf_counter()
    try:
        results = grade_all(course, root, todo, timeout, memory_mb, jobs, done, sandboxed, budget)
    except KeyboardInterrupt:  # grade_all killed the workers; what they finished is written
        console.print(f"[yellow]interrupted:[/] {len(graded)} of {len(todo)} submission(s) regraded; the others "
                      f"keep any earlier result (see `tito course report`)")
        raise typer.Exit(130) from None
    console.print(f"autograded {len(results)} submission(s) in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------- report


def _cell_text(result: dict | None, plain: bool = False) -> str:
    if result is None:
        return "-"
    status = result["status"]
    score = "" if result.get("score") is None else f"{_num(result['score'])}/{_num(result['max_score'])}"
    text = score if status == "graded" else f"{status} {score}".strip()
    if result.get("tests_edited"):
        text += " (tests edited)"
    if plain:
        return text
    colour = "green" if status == "graded" and result.get("score") == result.get("max_score") else (
        "yellow" if status == "graded" else "red")
    return f"[{colour}]{escape(text)}[/]"


def _num(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def collect_results(course: Path) -> tuple[list[str], dict[str, str], dict[tuple[str, str], dict]]:
    """(modules, student id -> name, (student, module) -> result) with scores from the gradebook."""
    modules = sorted(p.name for p in (course / "release").iterdir() if p.is_dir()) if (course / "release").is_dir() else []
    names: dict[str, str] = {}
    with grading.gradebook(course) as gb:
        for student in gb.students:
            names[student.id] = student.first_name or student.id
        results = {}
        for path in sorted((course / grading.RESULTS).glob("*/*.json")):
            result = grading.read_result(path)
            if result is None:  # one broken record must not stop the report
                result = {"student": path.parent.name, "module": path.stem, "status": "not graded", "score": None,
                          "max_score": None, "tests_edited": [],
                          "reason": f"its result {path.relative_to(course)} is unreadable: autograde it again"}
            key = (result["student"], result["module"])
            if result["status"] in ("graded", "timed out"):
                try:  # the gradebook is the record (an instructor may have changed a score)
                    submission = gb.find_submission(result["module"], result["student"])
                    result["score"], result["max_score"] = submission.score, submission.max_score
                except Exception:  # noqa: BLE001 -- keep what autograde saw
                    pass
            names.setdefault(result["student"], result["student"])
            results[key] = result
    for folder in (course / "submitted").iterdir() if (course / "submitted").is_dir() else []:
        if not folder.is_dir():
            continue
        names.setdefault(folder.name, folder.name)
        for module in folder.iterdir():
            if module.is_dir():
                results.setdefault((folder.name, module.name), {
                    "student": folder.name, "module": module.name, "status": "not graded", "score": None,
                    "max_score": None, "reason": "submitted but not autograded yet", "tests_edited": []})
    return modules, names, results


def report_rows(course: Path) -> list[dict]:
    modules, names, results = collect_results(course)
    rows = []
    for sid in sorted(names, key=lambda s: names[s].lower()):
        for module in modules:
            r = results.get((sid, module))
            rows.append({
                "student_id": sid, "student": names[sid], "module": module,
                "status": r["status"] if r else "not submitted",
                "score": "" if not r or r.get("score") is None else _num(r["score"]),
                "max_score": "" if not r or r.get("max_score") is None else _num(r["max_score"]),
                "tests_edited": " ".join(r.get("tests_edited", [])) if r else "",
                "reason": (r.get("reason") or "").splitlines()[-1][:300] if r and r.get("reason") else "",
                "flags": "; ".join(r.get("flags") or []) if r else "",  # what was put back from the release
            })
    return rows


def csv_safe(value):
    """A cell a spreadsheet shows as text: one starting with = + - @ (or tab, CR) would be a formula."""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(text):
        return "'" + text
    return value


_NUMBER = re.compile(r"[-+]?\d+(\.\d*)?([eE][-+]?\d+)?")


@app.command("report")
def report_command(
    course: Path = COURSE_OPTION,
    csv_path: Path = typer.Option(None, "--csv", help="Also write the scores to this CSV file."),
) -> None:
    """Student x module scores; a submission without a real score says why."""
    with user_errors():
        course = _course(course)
        modules, names, results = collect_results(course)
        rows = report_rows(course)
    table = Table(title=f"tito course report ({course})")
    table.add_column("student")
    for module in modules:
        table.add_column(module, justify="right")
    for sid in sorted(names, key=lambda s: names[s].lower()):
        table.add_row(escape(names[sid]), *[_cell_text(results.get((sid, m))) for m in modules])
    console.print(table)
    for row in rows:
        # A graded row may have a reason too (its module did not export: graded as the stripped release).
        notes = ([row["reason"]] if row["reason"] else []) + (
            [f"tests edited: {row['tests_edited']}; graded with the original tests"] if row["tests_edited"] else []) + (
            [row["flags"]] if row["flags"] else [])
        if row["status"] not in ("graded", "not submitted") or notes:
            colour = "yellow" if row["status"] == "graded" else "red"
            console.print(f"{escape(row['student'])} {row['module']}: [{colour}]{row['status']}[/] "
                          f"{escape('; '.join(notes))}")
    if csv_path:
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["student"])
            writer.writeheader()
            writer.writerows([{k: csv_safe(v) for k, v in row.items()} for row in rows])
        console.print(f"wrote {escape(str(csv_path))}")


# ---------------------------------------------------------------- feedback


@app.command("feedback")
def feedback_command(
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = all."),
    student: str = typer.Option(None, "--student", help="Only this student (name or id)."),
    course: Path = COURSE_OPTION,
) -> None:
    """Per-student HTML feedback (hidden tests removed) under course/feedback/<student>/<module>/."""
    with user_errors():
        root = find_root()
        course = _course(course)
        wanted = [m.folder for m in select_modules(root, modules)] if modules else None
        nb_api = grading.api(course)
        written, skipped, failed = 0, [], []
        for sid, module in submissions(course, wanted, student):
            if not (course / "autograded" / sid / module).is_dir():
                skipped.append(f"{sid} {module}")
                continue
            try:  # one submission's failure is that submission's; the others still get theirs
                result = nb_api.generate_feedback(module, sid, force=True)
            except Exception as err:  # noqa: BLE001
                result = {"success": False, "log": f"{type(err).__name__}: {err}"}
            if result.get("success"):
                written += 1
            else:
                failed.append(f"{sid} {module}: " + grading._tail((result.get("log") or "") +
                                                                 (result.get("error") or ""), 1))
    console.print(f"wrote feedback for {written} submission(s) under {escape(str(course / 'feedback'))}")
    for line in skipped:
        console.print(f"[yellow]no feedback[/] {escape(line)}: not autograded (see `tito course report`)")
    for line in failed:
        console.print(f"[red]feedback failed[/] {escape(line)}")
    if failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------- check


def check_modules(root: Path, modules: list[ModuleFile], timeout: int, jobs: int, sandboxed: bool = True) -> list[str]:
    """Problems found (empty = every module is gradable as it should be)."""
    import nbformat

    from tito import export
    from tito.stats import module_stats

    problems = []
    for module in modules:
        read_notebook(module)
        check_marker_cells(module)
        # A hint must lead to the answer, not state it: no solution line in the prose or provided code.
        problems += [f"giveaway: {line}" for line in module_stats(module).giveaways]
    export.plan(root)  # every `#| export` cell exports
    with tempfile.TemporaryDirectory(prefix="tito-check-") as tmp:
        course = Path(tmp) / "course"
        generate_modules(root, course, modules)
        todo = []
        for module in modules:
            name = f"{grading.notebook_name(module)}.ipynb"
            for who, source in [("solution", course / "source"), ("release", course / "release")]:
                target = course / "submitted" / who / module.folder / name
                target.parent.mkdir(parents=True)
                notebook = nbformat.read(source / module.folder / name, as_version=4)
                nbformat.write(notebook, target)
                todo.append((who, module.folder))
        results = {(r["student"], r["module"]): r for r in grade_all(course, root, todo, timeout, 0, jobs,
                                                                             sandboxed=sandboxed)}
    for module in modules:
        solved, released = results[("solution", module.folder)], results[("release", module.folder)]
        for label, r in [("solution", solved), ("release", released)]:
            if r["status"] != "graded":
                problems.append(f"{module.folder}: the {label} version was not graded: {r['status']}: {r['reason']}")
        short = [f"{c['grade_id']} ({_num(c['score'])}/{c['max_score']})" for c in solved["cells"]
                 if c["score"] != c["max_score"]]
        if short:
            problems.append(f"{module.folder}: the solutions do not score full points: {', '.join(short)} "
                            f"(a graded cell scores 0 when it raises or times out in the grader's own run "
                            f"of the tests: see `verdict` in the submission's tito/results/ file)")
        if not solved["cells"]:
            problems.append(f"{module.folder}: no graded cells")
        leaking = [c["grade_id"] for c in released["cells"] if c["score"]]
        if leaking:
            problems.append(f"{module.folder}: graded cells pass on the stripped release (they test nothing the "
                            f"student writes): {', '.join(leaking)}")
        console.print(f"{module.folder}: solution {_cell_text(solved, plain=True)}, "
                      f"release {_cell_text(released, plain=True)}")
    return problems


@app.command("check")
def check_command(
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = all."),
    all_modules: bool = typer.Option(False, "--all", help="Every module (the default)."),
    timeout: int = typer.Option(60, help="Seconds allowed per notebook cell."),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", "-j"),
    unsafe: bool = UNSAFE_OPTION,
) -> None:
    """Every module gradable: metadata valid, no solution line given away in the prose or provided code,
    solutions score full marks, the release scores 0."""
    from tito import sandbox

    with user_errors():
        root = find_root()
        sandboxed = sandbox.require(unsafe)
        problems = check_modules(root, _modules(root, modules, all_modules), timeout, jobs, sandboxed)
    for problem in problems:
        console.print(f"[red]defect[/] {escape(problem)}")
    if problems:
        raise typer.Exit(1)
    console.print("[green]every module checked[/]")


# ---------------------------------------------------------------- stats


def stats_table(all_stats: list) -> Table:
    table = Table(title="tito course stats (lesson files; provided.py not counted)")
    for column in ["module", "lines", "code", "exercise", "share", "prose:code", "first exercise", "points",
                   "graded cells", "giveaways"]:
        table.add_column(column, justify="left" if column == "module" else "right")
    for s in all_stats:
        share = f"{s.exercise_share:.0%}"
        table.add_row(s.module.folder, str(s.lines), str(s.code_lines), str(s.exercise_lines), share,
                      f"{s.prose_ratio:.2f}", str(s.first_exercise_line or "-"), str(s.points), str(s.graded_cells),
                      str(len(s.giveaways)))
    return table


@app.command("stats")
def stats_command(
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = all."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per module, for scripts and tests."),
) -> None:
    """Per module: lines, code, exercise lines and share, prose:code, first exercise, points, giveaways."""
    from tito.stats import module_stats

    with user_errors():
        root = find_root()
        all_stats = [module_stats(m) for m in _modules(root, modules)]
    if as_json:
        for s in all_stats:
            print(json.dumps({"module": s.module.folder, "lines": s.lines, "code_lines": s.code_lines,
                              "exercise_lines": s.exercise_lines, "exercise_share": round(s.exercise_share, 4),
                              "prose_lines": s.prose_lines, "prose_ratio": round(s.prose_ratio, 4),
                              "first_exercise_line": s.first_exercise_line, "exercises": s.exercises,
                              "points": s.points, "graded_cells": s.graded_cells, "giveaways": s.giveaways,
                              "misses": s.misses()}))
        return
    console.print(stats_table(all_stats))
    for s in all_stats:
        for miss in s.misses():
            console.print(f"[yellow]{s.module.folder}[/]: {miss}")


# ---------------------------------------------------------------- standalone


@app.command("standalone")
def standalone_command(
    modules: list[str] = typer.Argument(None, help="Module numbers or folders; none = all."),
    keep: Path = typer.Option(None, "--keep", help="Build the copies in this folder and keep them."),
) -> None:
    """Each module stands alone, in order: stripped, its graded cells fail with their own message;
    solved with later modules stripped, `tito module complete NN` passes."""
    from tito.standalone import check_modules as check_standalone

    with user_errors():
        root = find_root()
        chosen = _modules(root, modules)
    with tempfile.TemporaryDirectory(prefix="tito-standalone-") as tmp:
        workdir = keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = check_standalone(root, chosen, workdir, progress=lambda line: console.print(escape(line)))
    problems = [p for r in results for p in r.problems]
    for problem in problems:
        console.print(f"[red]defect[/] {escape(problem)}")
    if problems:
        raise typer.Exit(1)
    console.print(f"[green]{len(results)} module(s) stand alone[/]")
