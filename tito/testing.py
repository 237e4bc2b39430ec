"""`tito test`: run each module's graded cells (via the cellrunner) and its pytest folder."""

from __future__ import annotations

import importlib.util
import json
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
from tito.notebooks import ModuleFile, find_root, read_notebook, select_modules

console = Console(soft_wrap=True, highlight=False)


@dataclass
class PytestResult:
    exit_code: int
    passed: int = 0
    failed: int = 0  # failures + errors
    skipped: int = 0
    output: str = ""


@dataclass
class ModuleResult:
    module: ModuleFile
    graded: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)  # non-graded cells that raised
    problem: str = ""  # the cellrunner itself crashed or timed out
    pytest: PytestResult | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        cells_ok = not self.problem and not self.errors and all(g["passed"] for g in self.graded)
        return cells_ok and (self.pytest is None or self.pytest.exit_code == 0)


def run_cells(root: Path, module: ModuleFile, timeout: float, result: ModuleResult) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cells.json"
        command = [sys.executable, "-m", "tito.cellrunner", str(module.path), "--json", str(out)]
        try:
            proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            result.problem = f"timed out after {timeout:g} s"
            return
        if proc.returncode != 0 or not out.exists():
            result.problem = f"cellrunner exited {proc.returncode}:\n{_tail(proc.stdout + proc.stderr)}"
            return
        data = json.loads(out.read_text(encoding="utf-8"))
    result.graded, result.errors = data["graded"], data["errors"]


def run_pytest(root: Path, module: ModuleFile, timeout: float) -> PytestResult | None:
    folder = root / "tests" / module.folder
    if not folder.is_dir():
        return None
    if importlib.util.find_spec("pytest") is None:
        return PytestResult(exit_code=-1, output="pytest is not installed here: pip install -e '.[test]'")
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", f"--junitxml={junit}", str(folder.relative_to(root))]
        try:
            proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return PytestResult(exit_code=-1, output=f"pytest timed out after {timeout:g} s")
        result = PytestResult(exit_code=proc.returncode, output=proc.stdout + proc.stderr)
        if junit.exists():
            for suite in ET.parse(junit).getroot().iter("testsuite"):
                total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
                failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                result.passed += total - skipped - failed
                result.failed += failed
                result.skipped += skipped
    return result


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def summary_table(results: list[ModuleResult]) -> Table:
    table = Table(title="tito test")
    for column in ["module", "graded cells", "points", "pytest", "time"]:
        table.add_column(column, justify="left" if column == "module" else "right")
    for r in results:
        passed = [g for g in r.graded if g["passed"]]
        cells = "crashed" if r.problem else f"{len(passed)}/{len(r.graded)}"
        points = f"{sum(g['points'] for g in passed)}/{sum(g['points'] for g in r.graded)}"
        if r.pytest is None:
            pytest_text = "no tests/ folder"
        elif r.pytest.exit_code < 0:
            pytest_text = "did not run"
        elif r.pytest.exit_code == 5:
            pytest_text = "no tests ran"
        else:
            pytest_text = f"{r.pytest.passed} passed, {r.pytest.failed} failed"
        style = "green" if r.ok else "red"
        table.add_row(f"[{style}]{r.module.folder}[/]", cells, points, pytest_text, f"{r.seconds:.1f} s")
    return table


def print_failures(r: ModuleResult) -> None:
    if r.problem:
        console.print(f"[red]{r.module.rel}[/]: {escape(r.problem)}")
    for g in r.graded:
        if not g["passed"]:
            f = g["failure"]
            console.print(f"[red]FAILED[/] {r.module.folder} [bold]{escape(g['grade_id'])}[/] ({g['points']} pt)")
            console.print(f"  {escape(f['type'])}: {escape(f['message'])}")
            if f.get("lineno"):
                console.print(f"  at {r.module.rel}:{f['lineno']}: {escape(f['line'])}")
    for e in r.errors:
        f = e["failure"]
        console.print(f"[red]ERROR[/] {r.module.rel}:{f.get('lineno') or e['line']} (cell {e['cell']}): "
                      f"{escape(f['type'])}: {escape(f['message'])}")
    if r.pytest is not None and r.pytest.exit_code != 0:
        console.print(f"[red]pytest tests/{r.module.folder} exited {r.pytest.exit_code}[/]")
        console.print(escape(_tail(r.pytest.output)))


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
    timeout: float = typer.Option(600, help="Seconds allowed per module for its cells, and again for pytest."),
) -> None:
    """Run each module's graded test cells, then its tests/NN_name/ pytest folder."""
    with user_errors():
        root = find_root()
        selected = select_modules(root, None if all_modules else modules)
        if not selected:
            raise TitoError("no modules found under modules/")
        for module in selected:
            read_notebook(module)  # report broken notebooks cleanly before running anything
        warn_if_stale(root, selected)
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
