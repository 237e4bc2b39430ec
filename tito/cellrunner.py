"""Run one module's code cells in order and record how each graded cell did.

    python -m tito.cellrunner modules/01_tensor/tensor.py --json results.json [--timeout 300 --stack stack.txt]

All cells share one namespace (`__name__ == "__main__"`, cwd = repo root). A failing
cell is recorded and execution goes on with the next one, so one broken exercise
does not hide the results of the others. `tito test` runs this in a subprocess for
isolation and a timeout. The results file is rewritten before each cell with the cell
about to run ("running"), so a run that is stopped still says how far it got; on
--timeout, faulthandler writes the stack to --stack and the run stops.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import sys
import time
import traceback
from pathlib import Path

from tito.errors import TitoError
from tito.notebooks import Cell, ModuleFile, find_root, read_notebook, write_atomically


def run_cell(cell: Cell, namespace: dict, filename: str) -> dict | None:
    """Execute one cell; return None on success, else the failure (type, message, line)."""
    # Pad with newlines so tracebacks carry the module file's own line numbers.
    code = compile("\n" * (cell.first_line - 1) + cell.source, filename, "exec")
    try:
        exec(code, namespace)
    except (Exception, SystemExit) as err:  # a cell may call sys.exit; keep going
        return describe_failure(err, filename)
    return None


def describe_failure(err: BaseException, filename: str) -> dict:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename == filename]
    frame = frames[-1] if frames else None
    return {
        "type": type(err).__name__,
        "message": str(err),
        "lineno": frame.lineno if frame else None,
        "line": (frame.line or "").strip() if frame else "",
    }


def run_module(path: Path, output: Path) -> dict:
    root = find_root(path.parent)
    rel = path.resolve().relative_to(root).as_posix()
    notebook = read_notebook(ModuleFile(0, path.parent.name, path.resolve(), rel))
    os.chdir(root)
    namespace = {"__name__": "__main__", "__file__": str(path.resolve())}
    graded, errors = [], []
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    for n, cell in enumerate(code_cells):
        running = {"cell": cell.index, "module": rel, "line": cell.line,  # what a timeout or crash reports
                   "grade_id": cell.nbgrader["grade_id"] if cell.is_graded else None,
                   "graded_after": sum(c.is_graded for c in code_cells[n + 1:])}
        write_results(output, {"module": rel, "graded": graded, "errors": errors, "running": running})
        start = time.perf_counter()
        try:
            failure = run_cell(cell, namespace, str(path.resolve()))
        except SyntaxError as err:
            line = (err.text or "").strip()
            failure = {"type": "SyntaxError", "message": err.msg, "lineno": err.lineno, "line": line}
        duration = round(time.perf_counter() - start, 4)
        if cell.is_graded:
            graded.append(
                {
                    "grade_id": cell.nbgrader["grade_id"],
                    "points": cell.nbgrader["points"],
                    "cell": cell.index,
                    "passed": failure is None,
                    "duration": duration,
                    "failure": failure,
                }
            )
        elif failure is not None:
            errors.append({"cell": cell.index, "line": cell.line, "duration": duration, "failure": failure})
    return {"module": rel, "graded": graded, "errors": errors}


def write_results(output: Path, results: dict) -> None:
    write_atomically(output, json.dumps(results, indent=2) + "\n")  # never half a file, even if stopped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tito.cellrunner", description=__doc__.splitlines()[0])
    parser.add_argument("module", type=Path, help="path of modules/NN_name/name.py")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds, writing the stack to --stack")
    parser.add_argument("--stack", type=Path, help="where --timeout writes the stack of the code still running")
    args = parser.parse_args(argv)
    output = args.json.resolve()  # before run_module changes directory
    if args.timeout:
        stack = open(args.stack or os.devnull, "w", encoding="utf-8")  # open until the process ends
        faulthandler.dump_traceback_later(args.timeout, exit=True, file=stack)
    try:
        results = run_module(args.module, output)
    except TitoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    faulthandler.cancel_dump_traceback_later()
    write_results(output, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
