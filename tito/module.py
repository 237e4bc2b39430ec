"""`tito module`: the student's side — list, start, complete.

A student works in `modules/NN_name/name.ipynb`, paired with the percent-format
`name.py` through jupytext (either can be edited; `tito` syncs them). Progress is
recorded in `.tito/progress.json` when `tito module complete NN` passes.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tito.errors import TitoError, user_errors
from tito.exercises import has_stubs, not_complete_message, points_available, short_name, unfinished_before
from tito.notebooks import (
    ModuleFile, find_root, list_modules, notebook_path, notebook_inputs, read_notebook, record_synced,
    select_modules, sync, to_notebook, write_atomically, write_notebook,
)

console = Console(soft_wrap=True, highlight=False)
app = typer.Typer(help="Your modules: list them, start one, complete it.", no_args_is_help=True)

PROGRESS = ".tito/progress.json"


def require_finished_before(root: Path, module: ModuleFile) -> None:
    earlier = unfinished_before(root, module)
    if earlier is not None:
        raise TitoError(f"{module.folder} needs it: {not_complete_message(earlier.number, short_name(earlier))}")


# ---------------------------------------------------------------- pairing and progress


def read_progress(root: Path) -> dict:
    path = root / PROGRESS
    if not path.is_file():
        return {}
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # never start over silently: the next completion would overwrite the record
        raise TitoError(f"{PROGRESS} is corrupt ({err}); fix it, or delete it to start the record again") from None
    if not isinstance(progress, dict):
        raise TitoError(f"{PROGRESS} is corrupt (not a JSON object); fix it, or delete it to start the record again")
    return progress


def record_progress(root: Path, module: ModuleFile, points: int, available: int) -> None:
    progress = read_progress(root)
    progress[module.folder] = {
        "completed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "points": points, "available": available, "sha256": _digest(module),
    }
    path = root / PROGRESS
    path.parent.mkdir(exist_ok=True)
    write_atomically(path, json.dumps(progress, indent=2) + "\n")


def _digest(module: ModuleFile) -> str:
    return hashlib.sha256(module.path.read_bytes()).hexdigest()


def title(module: ModuleFile) -> str:
    for cell in read_notebook(module).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return short_name(module)


def status(root: Path, module: ModuleFile, progress: dict, files: dict | None = None) -> str:
    """not started / in progress / exported / tests passing; `files`: export.plan(root), if known."""
    from tito import export

    record = progress.get(module.folder)
    if record and record.get("sha256") == _digest(module):
        return "tests passing"
    if has_stubs(module):
        return "in progress" if notebook_path(module).exists() else "not started"
    changes = export.compare(root, files if files is not None else export.plan(root), [module])
    return "in progress" if changes.any() else "exported"


# ---------------------------------------------------------------- commands


@app.command("list")
def list_command() -> None:
    """Every module: title, status, points available."""
    with user_errors():
        root = find_root()
        modules = list_modules(root)
        if not modules:
            raise TitoError("no modules found under modules/")
        from tito import export

        progress = read_progress(root)
        files = export.plan(root)
        rows = [(m, title(m), status(root, m, progress, files), points_available(m)) for m in modules]
    colours = {"tests passing": "green", "exported": "cyan", "in progress": "yellow", "not started": "dim"}
    table = Table(title="tito modules")
    for column in ["#", "module", "title", "status", "points"]:
        table.add_column(column, justify="right" if column in ("#", "points") else "left")
    for module, name, state, points in rows:
        record = progress.get(module.folder)
        earned = f"{record['points']}/{points}" if state == "tests passing" and record else str(points)
        table.add_row(f"{module.number:02d}", module.folder, escape(name), f"[{colours[state]}]{state}[/]", earned)
    console.print(table)


@app.command("start")
def start_command(module: str = typer.Argument(..., help="Module number (01, 1) or folder (01_tensor).")) -> None:
    """Write the module's notebook (.ipynb paired with its .py) and say what to do next."""
    with user_errors():
        root = find_root()
        chosen = select_modules(root, [module])[0]
        read_notebook(chosen)
        ipynb = notebook_path(chosen)
        if ipynb.exists():
            done = sync(chosen)
            console.print(f"{ipynb.relative_to(root)} already exists{'; ' + done if done else ''}")
        else:
            text = chosen.path.read_text(encoding="utf-8")
            notebook = to_notebook(text)
            write_notebook(notebook, ipynb)
            record_synced(chosen, text, notebook_inputs(notebook))
            console.print(f"wrote {ipynb.relative_to(root)} (paired with {chosen.path.name})")
        earlier = unfinished_before(root, chosen)
    if earlier is not None:
        console.print(f"[yellow]note:[/] {escape(not_complete_message(earlier.number, short_name(earlier)))}; "
                      f"{chosen.folder} builds on it")
    number = f"{chosen.number:02d}"
    console.print(
        f"next:\n"
        f"  1. open {ipynb.relative_to(root)} (jupyter lab) or edit {chosen.rel}; replace each "
        f"`raise NotImplementedError(\"...: not written yet\")` with your code\n"
        f"  2. tito export {number}      build tinytorch/ from your code\n"
        f"  3. tito test {number}        run the graded tests ({points_available(chosen)} points)\n"
        f"  4. tito module complete {number}"
    )


@app.command("complete")
def complete_command(
    module: str = typer.Argument(..., help="Module number (01, 1) or folder (01_tensor)."),
    # the same default as `tito test` (tito/testing.py TIMEOUT says why)
    timeout: float = typer.Option(300, help="Seconds allowed for the module's cells, and again for pytest."),
) -> None:
    """Export, test, and record your progress when every graded test passes."""
    from tito import export, testing

    with user_errors():
        root = find_root()
        chosen = select_modules(root, [module])[0]
        synced = sync(chosen)
        if synced:
            console.print(synced)
        read_notebook(chosen)
        require_finished_before(root, chosen)
        files = export.plan(root)
        export.apply(root, files, export.compare(root, files, [chosen]))
    start = time.perf_counter()
    result = testing.ModuleResult(chosen)
    testing.run_cells(root, chosen, timeout, result)
    result.pytest = testing.run_pytest(root, chosen, timeout)
    result.seconds = time.perf_counter() - start
    table = Table(title=f"{chosen.folder}: graded cells")
    for column in ["test cell", "points", "result"]:
        table.add_column(column)
    for g in result.graded:
        earned = g["points"] if g["passed"] else 0
        verdict = "[green]passed[/]" if g["passed"] else f"[red]{escape(g['failure']['type'])}: {escape(g['failure']['message'])}[/]"
        table.add_row(escape(g["grade_id"]), f"{earned}/{g['points']}", verdict)
    console.print(table)
    if not result.ok:
        testing.print_failures(result)
        console.print(f"[red]{chosen.folder} is not complete yet[/]")
        raise typer.Exit(1)
    points = sum(g["points"] for g in result.graded)
    record_progress(root, chosen, points, points)
    console.print(f"[green]{chosen.folder} complete[/]: {points}/{points} points; recorded in {PROGRESS}")
