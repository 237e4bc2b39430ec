"""Small-op benchmark: forward+backward time of add, mul, matmul, sum in TinyTorch vs PyTorch CPU
(and NumPy forward only, the floor TinyTorch's CPU backend sits on).

    python bench/ops.py [--threads N] [--sizes 4 256] [--repeat 7] [--out bench/results]

Every framework runs with the same thread count: it is set in the BLAS environment variables
(OMP/OpenBLAS/MKL) before NumPy is imported, and with torch.set_num_threads. Reports the median
microseconds per call over `--repeat` timeit rounds, the TinyTorch/PyTorch ratio, and the targets:
small ops (4x4) fwd+bwd <= 0.5x PyTorch, 256x256 matmul fwd+bwd <= 1.2x PyTorch.
Writes JSON to bench/results/ops-<host>-<date>.json.
"""

import argparse
import datetime as dt
import json
import os
import platform
import socket
import sys
import timeit
from pathlib import Path

from machine import cpu_name, new_result_path  # bench/machine.py

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for NumPy's BLAS and PyTorch (default: all cores)")
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 256], help="square sizes N (N x N)")
    p.add_argument("--ops", nargs="+", default=["add", "mul", "matmul", "sum"])
    p.add_argument("--repeat", type=int, default=7, help="timeit rounds; the median is reported")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per round (autorange)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-json", action="store_true")
    return p.parse_args()


ARGS = parse_args()
for var in THREAD_VARS:  # must happen before numpy (and its BLAS) is imported
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import tinytorch as tt  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(ARGS.threads)
except ImportError:
    torch = None

FORWARD = {
    "add": lambda a, b: a + b,
    "mul": lambda a, b: a * b,
    "matmul": lambda a, b: a @ b,
    "sum": lambda a, b: a.sum(),
}
TARGETS = {(op, 4): 0.5 for op in FORWARD} | {("matmul", 256): 1.2}  # issue 16: small ops <= 0.5x


def median_us(fn, repeat, min_time):
    timer = timeit.Timer(fn)
    number = 1
    while timer.timeit(number) < min_time / 5:  # pick a number of calls that takes a while
        number *= 2
    times = np.array(timer.repeat(repeat=repeat, number=number)) / number * 1e6
    return float(np.median(times))


def fwd_bwd(op, a, b, grad):
    """One forward + backward, grads reset each call so nothing accumulates without bound."""
    def step():
        a.grad = None
        b.grad = None
        out = FORWARD[op](a, b)
        if grad is None:
            out.backward()
        else:
            out.backward(grad)
    return step


def bench_row(op, n, rng):
    x = rng.standard_normal((n, n)).astype(np.float32)
    y = rng.standard_normal((n, n)).astype(np.float32)
    grad_np = None if op == "sum" else np.ones((n, n), dtype=np.float32)
    row = {"op": op, "size": f"{n}x{n}", "n": n}
    f = FORWARD[op]
    row["numpy_fwd_us"] = median_us(lambda: f(x, y), ARGS.repeat, ARGS.min_time)

    a = tt.tensor(x, requires_grad=True)
    b = tt.tensor(y, requires_grad=True)
    g = None if grad_np is None else tt.tensor(grad_np)
    with tt.no_grad():
        row["tinytorch_fwd_us"] = median_us(lambda: f(a, b), ARGS.repeat, ARGS.min_time)
    row["tinytorch_fwd_bwd_us"] = median_us(fwd_bwd(op, a, b, g), ARGS.repeat, ARGS.min_time)

    if torch is not None:
        ta = torch.tensor(x, requires_grad=True)
        tb = torch.tensor(y, requires_grad=True)
        tg = None if grad_np is None else torch.tensor(grad_np)
        with torch.no_grad():
            row["torch_fwd_us"] = median_us(lambda: f(ta, tb), ARGS.repeat, ARGS.min_time)
        row["torch_fwd_bwd_us"] = median_us(fwd_bwd(op, ta, tb, tg), ARGS.repeat, ARGS.min_time)
        row["ratio_fwd_bwd"] = row["tinytorch_fwd_bwd_us"] / row["torch_fwd_bwd_us"]
        target = TARGETS.get((op, n))
        row["target"] = target
        row["pass"] = None if target is None else bool(row["ratio_fwd_bwd"] <= target)
    return row


def blas_info():
    info = {"env_threads": ARGS.threads}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["name"] = blas.get("name")
        info["version"] = blas.get("version")
    except Exception as exc:  # older numpy: no dict mode
        info["error"] = repr(exc)
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("internal_api", "num_threads", "version")}
                               for p in threadpool_info()]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed; threads set via " + ",".join(THREAD_VARS)
    return info


def machine_info():
    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": ARGS.threads,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "blas": blas_info(),
        "torch": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "tinytorch": getattr(tt, "__version__", "unknown"),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }


def fmt(v):
    return "-" if v is None else f"{v:,.1f}"


def print_table(rows):
    headers = ["op", "size", "numpy fwd", "tt fwd", "torch fwd", "tt fwd+bwd",
               "torch fwd+bwd", "tt/torch f+b", "target", "result"]
    body = []
    for r in rows:
        ratio = r.get("ratio_fwd_bwd")
        verdict = "-" if r.get("pass") is None else ("PASS" if r["pass"] else "FAIL")
        body.append([r["op"], r["size"], fmt(r["numpy_fwd_us"]), fmt(r["tinytorch_fwd_us"]),
                     fmt(r.get("torch_fwd_us")), fmt(r["tinytorch_fwd_bwd_us"]),
                     fmt(r.get("torch_fwd_bwd_us")), "-" if ratio is None else f"{ratio:.2f}x",
                     "-" if r.get("target") is None else f"<= {r['target']}x", verdict])
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"median µs per call, {ARGS.threads} thread(s)")
        for h in headers:
            table.add_column(h, justify="left" if h in ("op", "size") else "right")
        for b in body:
            table.add_row(*b)
        Console(width=130).print(table)
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(headers)]
        print(" | ".join(h.ljust(w) for h, w in zip(headers, widths)))
        print("-+-".join("-" * w for w in widths))
        for b in body:
            print(" | ".join(c.ljust(w) for c, w in zip(b, widths)))


def main():
    rng = np.random.default_rng(0)
    rows = [bench_row(op, n, rng) for n in ARGS.sizes for op in ARGS.ops]
    print_table(rows)
    if torch is None:
        print("PyTorch not installed: no ratios (pip install torch==2.13.0 for the CPU wheel).")
    info = machine_info()
    if info["loadavg_1min"] and info["loadavg_1min"] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {info['loadavg_1min']:.2f} on {os.cpu_count()} cores; "
              "other processes are competing, timings are noisy")
    print(f"{info['cpu']}, {info['cores']} cores; numpy {info['numpy']} "
          f"(BLAS {info['blas'].get('name')}), torch {info['torch']}; threads={ARGS.threads}")
    if not ARGS.no_json:
        host = "".join(c if c.isalnum() or c in "-_" else "-" for c in info["host"]) or "machine"
        path = new_result_path(ARGS.out, f"ops-{host}-{dt.date.today().isoformat()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
