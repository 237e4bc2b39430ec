"""Autograding speed: `tito course autograde` vs the modules' own test time.

    python bench/grading.py [--modules 01 02 ...] [--students 2] [--jobs 2] [--out bench/results] [--label L]

Per module: the module's own test time (its cells run by `python -m tito.cellrunner`, the
same work `tito test` does for graded cells) and the wall time of autograding one student's
submission of it alone (`--jobs 1`), both medians of --repeat runs. Overhead = autograde -
own test time; target <= 5 s per module (printed PASS/FAIL, never asserted).

Throughput: --students students x the selected modules autograded with --jobs workers; the
time for 30 students is extrapolated linearly (grading is embarrassingly parallel and
bound by the cores); target <= 15 min for 30 students x all modules on 2 cores.
Writes bench/results/grading-<host>-<date>.json.
"""

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout: tito is importable

import nbformat  # noqa: E402

from tito.notebooks import to_notebook  # noqa: E402
from tito import sandbox  # noqa: E402
from tito.notebooks import list_modules, select_modules  # noqa: E402

UNSAFE = ["--unsafe-no-sandbox"] if sandbox.why_unavailable() else []  # the bench measures what graders run


def timed(command: list[str], **kwargs) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}\n{proc.stderr}")
    return time.perf_counter() - start


def tito(*args: str) -> float:
    return timed([sys.executable, "-m", "tito", *args])


def submit(course: Path, student: str, module) -> None:
    target = course / "submitted" / student / module.folder / f"{module.path.stem}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(to_notebook(module.path.read_text(encoding="utf-8")), target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", nargs="*", help="module numbers (default: all)")
    parser.add_argument("--students", type=int, default=2, help="students in the throughput run")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=120, help="per-cell timeout")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-json", action="store_true")
    parser.add_argument("--label", default="", help="appended to the results file name")
    args = parser.parse_args()
    load_start = os.getloadavg()  # the machine is shared: record how busy it was

    modules = select_modules(ROOT, args.modules)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        course = Path(tmp) / "course"
        generate = tito("course", "generate", *[m.folder for m in modules], "--course", str(course))
        print(f"generate {len(modules)} module(s): {generate:.1f} s")
        for module in modules:
            own = statistics.median(
                timed([sys.executable, "-m", "tito.cellrunner", str(module.path), "--json", f"{tmp}/cells.json"])
                for _ in range(args.repeat))
            submit(course, "solo", module)
            grade = statistics.median(
                tito("course", "autograde", module.folder, "--student", "solo", "--course", str(course),
                     "--timeout", str(args.timeout), "-j", "1", *UNSAFE) for _ in range(args.repeat))
            result = json.loads((course / "tito" / "results" / "solo" / f"{module.folder}.json").read_text())
            overhead = grade - own
            rows.append({"module": module.folder, "own_test_s": round(own, 2), "autograde_s": round(grade, 2),
                         "overhead_s": round(overhead, 2), "status": result["status"],
                         "score": f"{result['score']}/{result['max_score']}", "target_s": 5.0,
                         "pass": overhead <= 5.0})
            print(f"{module.folder:>16}: own tests {own:5.1f} s, autograde {grade:5.1f} s, overhead "
                  f"{overhead:4.1f} s ({'PASS' if overhead <= 5 else 'FAIL'} <= 5 s), {rows[-1]['score']}")
        for student in range(args.students):
            for module in modules:
                submit(course, f"student{student:02d}", module)
        start = time.perf_counter()
        tito("course", "autograde", *[m.folder for m in modules], "--course", str(course),
             "--timeout", str(args.timeout), "-j", str(args.jobs), *UNSAFE)
        total = time.perf_counter() - start  # includes the solo submissions, counted below
    graded = (args.students + 1) * len(modules)
    per = total / graded
    every = len(list_modules(ROOT))
    projected = per * 30 * len(modules) * (every / len(modules))
    print(f"throughput: {graded} submissions in {total:.1f} s with {args.jobs} jobs = {per:.2f} s each; "
          f"30 students x {every} modules ~ {projected / 60:.1f} min "
          f"({'PASS' if projected <= 900 else 'FAIL'} <= 15 min)")
    if args.modules and len(modules) < every:
        print("  (projection scales the selected modules' mean time to all modules)")
    if not args.no_json:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {
            "host": socket.gethostname(), "date": dt.date.today().isoformat(), "cores": os.cpu_count(),
            "python": platform.python_version(), "load_avg_start": load_start, "load_avg": os.getloadavg(),
            "jobs": args.jobs, "label": args.label, "sandboxed": not UNSAFE,
            "per_module": rows, "throughput": {"submissions": graded, "seconds": round(total, 1),
                                               "per_submission_s": round(per, 2),
                                               "projected_30_students_all_modules_min": round(projected / 60, 1),
                                               "target_min": 15, "pass": projected <= 900},
        }
        label = f"-{args.label}" if args.label else ""
        path = args.out / f"grading-{socket.gethostname()}-{dt.date.today().isoformat()}{label}.json"
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
