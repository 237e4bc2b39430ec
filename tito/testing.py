"""`tito test`: run each module's graded cells (via the cellrunner) and its pytest folder."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tito import export
from tito.errors import TitoError, user_errors
from tito.exercises import not_complete_message, points_available, short_name, stubs, unfinished_before
from tito.notebooks import STUB_MESSAGE, ModuleFile, find_root, list_modules, read_notebook, select_modules
from tito.running_test import RUNNING_TEST

console = Console(soft_wrap=True, highlight=False)

# The slowest honest run measured (solutions, 2 busy cores): 09_gpt's pytest folder, ~110 s; every
# module's cells take under 10 s. 300 s leaves ~3x for a slower machine, and an endless loop costs
# minutes, not the 10 it did; a timeout says where it stopped and how to allow more.
TIMEOUT = 300
SLOW_HINT = "\n  an endless loop? if the code is only slow, pass a larger --timeout"


@dataclass
class PytestFailure:
    file: str  # "tests/01_tensor/test_x.py"
    test: str  # "test_add[broadcast]"
    message: str  # the first line of what pytest reported


@dataclass
class PytestResult:
    exit_code: int
    timed_out: bool = False
    passed: int = 0
    failed: int = 0  # failures + errors
    skipped: int = 0
    output: str = ""
    failures: list[PytestFailure] = field(default_factory=list)


@dataclass
class ModuleResult:
    module: ModuleFile
    graded: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # non-graded cells that raised
    problem: str = ""  # the cellrunner itself crashed or timed out
    stopped: str = ""  # "timed out" or "crashed" when it did
    pytest: PytestResult | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        cells_ok = not self.problem and not self.errors and all(g["passed"] for g in self.graded)
        return cells_ok and (self.pytest is None or self.pytest.exit_code == 0)


def run_cells(root: Path, module: ModuleFile, timeout: float, result: ModuleResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, stack = Path(tmp) / "cells.json", Path(tmp) / "stack.txt"
        command = [sys.executable, "-m", "tito.cellrunner", str(module.path), "--json", str(out),
                   "--timeout", f"{timeout:g}", "--stack", str(stack)]
        try:  # the runner stops itself at `timeout`, saying where; this is the backstop
            proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            proc = None
        data = json.loads(out.read_text(encoding="utf-8")) if out.exists() else None
        where = stack.read_text(encoding="utf-8", errors="replace") if stack.exists() else ""
    if data is not None:
        result.graded, result.errors = data["graded"], data["errors"]
    running = data.get("running") if data else None  # the cell it was in when it stopped, if it did
    if proc is None or where:
        result.stopped, what = "timed out", f"timed out after {timeout:g} s"
    elif proc.returncode != 0 or data is None or running:
        result.stopped, what = "crashed", f"cellrunner exited {proc.returncode}"
    else:
        return
    parts = [what + (f" in {_running(running)}" if running else "")]
    innermost = _innermost(root, where)
    if innermost:
        parts.append(f"still running {innermost}")
    if running and running["graded_after"]:
        parts.append(f"{running['graded_after']} graded cell(s) after it did not run")
    if result.stopped == "timed out":
        result.problem = "; ".join(parts) + SLOW_HINT
    else:
        result.problem = "; ".join(parts) + f":\n{_tail(proc.stdout + proc.stderr)}"


def _running(cell: dict) -> str:
    """The cell the runner was in: its grade_id if graded, and where it starts."""
    name = cell["grade_id"] or f"cell {cell['cell']}"
    return f"{name} ({cell['module']}:{cell['line']})"


_FRAME = re.compile(r'^\s*File "(.+)", line (\d+) in (.+)$')


def _innermost(root: Path, stack: str) -> str:
    """The innermost frame of faulthandler's dump that is the student's code (under root, not tito's)."""
    tito_dir = Path(__file__).resolve().parent
    for line in stack.splitlines():  # faulthandler lists the most recent call first
        match = _FRAME.match(line)
        if not match:
            continue
        path = Path(match[1]).resolve()
        mine = path.is_relative_to(root.resolve()) and "site-packages" not in path.parts
        if mine and not path.is_relative_to(tito_dir):
            return f"{path.relative_to(root.resolve()).as_posix()}:{match[2]} in {match[3]}"
    return ""


def run_pytest(root: Path, module: ModuleFile, timeout: float) -> PytestResult | None:
    folder = root / "tests" / module.folder
    if not folder.is_dir():
        return None
    if importlib.util.find_spec("pytest") is None:
        return PytestResult(exit_code=-1, output="pytest is not installed here: pip install -e '.[test]'")
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        running = Path(tmp) / "running.txt"  # the test in progress (tito/running_test.py)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "tito.running_test", f"--junitxml={junit}",
                   str(folder.relative_to(root))]
        env = {**os.environ, RUNNING_TEST: str(running)}
        try:
            proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            test = running.read_text(encoding="utf-8").strip() if running.exists() else ""
            where = f" in {test}" if test else ""
            return PytestResult(exit_code=-1, timed_out=True,
                                output=f"pytest timed out after {timeout:g} s{where}{SLOW_HINT}")
        result = PytestResult(exit_code=proc.returncode, output=proc.stdout + proc.stderr)
        if junit.exists():
            tree = ET.parse(junit).getroot()
            for suite in tree.iter("testsuite"):
                total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
                failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                result.passed += total - skipped - failed
                result.failed += failed
                result.skipped += skipped
            result.failures = junit_failures(tree)
    return result




def junit_failures(tree: ET.Element) -> list[PytestFailure]:
    """Each failed or erroring test case: its file, name and first line of message."""
    found = []
    for case in tree.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            continue
        file = case.get("file") or (case.get("classname") or "").replace(".", "/") + ".py"
        text = problem.get("message") or problem.text or ""
        found.append(PytestFailure(file, case.get("name", "?"), headline(text)))
    return found


def headline(message: str) -> str:
    """The first line of a failure's message that says something. NumPy's assert_allclose starts with a bare
    "AssertionError: " and puts what differs on the next lines: those are joined on."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    head = lines[0]
    if not head.endswith(":") or len(lines) == 1:  # only a bare label ("AssertionError:") says nothing
        return head
    return f"{head} {'; '.join(lines[1:4])}"


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def summary_table(results: list[ModuleResult]) -> Table:
    table = Table(title="tito test")
    for column in ["module", "graded cells", "points", "pytest", "time"]:
        table.add_column(column, justify="left" if column == "module" else "right")
    for r in results:
        passed = [g for g in r.graded if g["passed"]]
        cells = f"{len(passed)}/{graded_cells(r.module)}" + (f" ({r.stopped})" if r.stopped else "")
        points = f"{sum(g['points'] for g in passed)}/{points_available(r.module)}"  # all, even if some never ran
        if r.pytest is None:
            pytest_text = "no tests/ folder"
        elif r.pytest.timed_out:
            pytest_text = "timed out"
        elif r.pytest.exit_code < 0:
            pytest_text = "did not run"
        elif r.pytest.exit_code == 5:
            pytest_text = "no tests ran"
        else:
            pytest_text = f"{r.pytest.passed} passed, {r.pytest.failed} failed"
        style = "green" if r.ok else "red"
        table.add_row(f"[{style}]{r.module.folder}[/]", cells, points, pytest_text, f"{r.seconds:.1f} s")
    return table


def graded_cells(module: ModuleFile) -> int:
    return sum(1 for c in read_notebook(module).cells if c.cell_type == "code" and c.is_graded)


def is_stub(failure: dict | None) -> bool:
    return bool(failure) and failure["type"] == "NotImplementedError" and STUB_MESSAGE in failure["message"]


def earlier_stubs(module: ModuleFile) -> dict[str, str]:
    """Unwritten exercises of earlier modules (not also named in this one): name -> where it is."""
    own = {name for name, _ in stubs(module)}
    found = {}
    for earlier in list_modules(find_root(module.path.parent)):
        if earlier.number < module.number:
            for name, line in stubs(earlier):
                if name not in own:
                    found.setdefault(name, f"{earlier.folder}, not written yet: {earlier.rel}:{line}")
    return found


def print_unfinished_before(root: Path, selected: list[ModuleFile]) -> None:
    """Say first when a module builds on an earlier one whose exercises are still stubs:
    its checks then fail at those stubs, at lines of the module under test."""
    needs: dict[str, tuple[ModuleFile, list[str]]] = {}
    for module in selected:
        earlier = unfinished_before(root, module)
        if earlier is not None:
            needs.setdefault(earlier.folder, (earlier, []))[1].append(module.folder)
    for earlier, later in needs.values():
        names = [name for name, _ in stubs(earlier)]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        verb, them = ("is", "it") if len(names) == 1 else ("are", "them")
        console.print(f"[yellow]{', '.join(later)} need{'s' if len(later) == 1 else ''} {earlier.folder} finished "
                      f"first:[/] {escape(shown)} {verb} not written yet, and checks that use {them} fail below "
                      f"too; {escape(not_complete_message(earlier.number, short_name(earlier)))}")


def print_failures(r: ModuleResult) -> None:
    """One block per failing graded check, then the pytest failures grouped by file."""
    elsewhere = None  # earlier modules' unwritten exercises, read when first needed
    if r.problem:
        console.print(f"[red]{r.module.rel}[/]: {escape(r.problem)}")
    for g in r.graded:
        if g["passed"]:
            continue
        f = g["failure"]
        where = f"{r.module.rel}:{f['lineno']}" if f.get("lineno") else r.module.rel
        console.print(f"\n[red]✗[/] [bold]{escape(g['grade_id'])}[/] ({g['points']} pt)  {escape(where)}")
        console.print(f"  {escape(f['type'])}: {escape(f['message'] or '(no message)')}")
        if f.get("line") and not is_stub(f):
            console.print(f"  [dim]{escape(f['line'])}[/]")
        if is_stub(f):  # the line above is where this module called it; say where the exercise is
            if elsewhere is None:
                elsewhere = earlier_stubs(r.module)
            name = f["message"].split(":", 1)[0]
            if name in elsewhere:
                console.print(f"  [yellow]{escape(name)} is an exercise of {elsewhere[name]}[/]")
    # Example cells that call an exercise not written yet fail for the same reason as its
    # graded check: say so once instead of once per cell.
    stubs = [e for e in r.errors if is_stub(e["failure"])]
    if stubs:
        console.print(f"\n[yellow]{len(stubs)} example cell(s) stopped at an exercise not written yet[/]")
    for e in r.errors:
        if is_stub(e["failure"]):
            continue
        f = e["failure"]
        console.print(f"\n[red]✗[/] cell {e['cell']} raised  {escape(r.module.rel)}:{f.get('lineno') or e['line']}")
        console.print(f"  {escape(f['type'])}: {escape(f['message'] or '(no message)')}")
    if r.pytest is not None and r.pytest.exit_code != 0:
        print_pytest_failures(r.pytest)


def print_pytest_failures(result: PytestResult) -> None:
    if result.timed_out:
        console.print(f"\n[red]{escape(result.output)}[/]")
        return
    if not result.failures:  # pytest itself broke (collection error): show its end
        console.print(f"\n[red]pytest exited {result.exit_code}[/]")
        console.print(escape(_tail(result.output, 15)))
        return
    by_file: dict[str, list[PytestFailure]] = {}
    for failure in result.failures:
        by_file.setdefault(failure.file, []).append(failure)
    console.print(f"\n[red]{len(result.failures)} pytest test(s) failed[/] (run `python -m pytest FILE -x` for details):")
    for file, failures in by_file.items():
        first = failures[0]
        console.print(f"  {escape(file)}: {len(failures)} failed; first, {escape(first.test)}: "
                      f"{escape(first.message[:200])}")


def warn_if_stale(root: Path, modules: list[ModuleFile]) -> None:
    """Tests import tinytorch/, so say so when it lags behind the modules."""
    try:
        changes = export.compare(root, export.plan(root), modules)
    except TitoError as err:  # another module is broken; the selected ones may still run
        console.print(f"[yellow]warning:[/] cannot check that tinytorch/ is current: {escape(str(err))}")
        return
    if changes.any():
        console.print("[yellow]warning:[/] tinytorch/ is out of date with modules/; run `tito export` first")


def run_tests(
    modules: list[str] = typer.Argument(None, help="Module numbers (01, 1) or folders (01_tensor); none = all."),
    all_modules: bool = typer.Option(False, "--all", help="Test every module (the default)."),
    timeout: float = typer.Option(TIMEOUT, help="Seconds allowed per module for its cells, and again for pytest."),
) -> None:
    """Run each module's graded test cells, then its tests/NN_name/ pytest folder."""
    with user_errors():
        root = find_root()
        selected = select_modules(root, None if all_modules else modules)
        if not selected:
            raise TitoError("no modules found under modules/")
        for line in export.sync_pairs(selected):  # a student edits the .ipynb; test what they wrote
            console.print(escape(line))
        for module in selected:
            read_notebook(module)  # report broken notebooks cleanly before running anything
        warn_if_stale(root, selected)
        print_unfinished_before(root, selected)
    results = []
    for module in selected:
        start = time.perf_counter()
        result = ModuleResult(module)
        run_cells(root, module, timeout, result)
        result.pytest = run_pytest(root, module, timeout)
        result.seconds = time.perf_counter() - start
        results.append(result)
    for r in results:
        if not r.ok:
            print_failures(r)
    console.print(summary_table(results))
    if not all(r.ok for r in results):
        raise typer.Exit(1)
