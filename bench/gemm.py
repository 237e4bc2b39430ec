"""The matrix products of the 784-512-512-10 MLP step at batch 128, NumPy's BLAS vs PyTorch's, alone.

    python bench/gemm.py [--threads 2] [--calls 300] [--out bench/results]

bench/mlp.py times whole steps; this times only the five large products of one step (forward and
weight gradient of the 784->512 layer; forward, weight and input gradient of the 512->512 one), so that the part of the
gap that belongs to the BLAS library (NumPy's OpenBLAS against the one PyTorch ships) is seen apart
from TinyTorch's own work. Each library runs in its own worker process (their thread pools would
otherwise spin on the cores while the other runs), with the BLAS/OpenMP variables set to
--threads before import. Reports the median microseconds per call and the ratio.
Writes JSON to bench/results/gemm-<host>-<date>.json.
"""

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from machine import blas_name, cpu_name, new_result_path  # bench/machine.py

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
BATCH = 128
PRODUCTS = {  # name: (left, right) as linear and its backward pass them: (shape, read transposed); the first
    # layer's input gradient is never computed (the batch does not require grad)
    "fwd 128x784 @ (512x784).T": (((BATCH, 784), False), ((512, 784), True)),
    "dW (128x512).T @ 128x784": (((BATCH, 512), True), ((BATCH, 784), False)),
    "fwd 128x512 @ (512x512).T": (((BATCH, 512), False), ((512, 512), True)),
    "dW (128x512).T @ 128x512": (((BATCH, 512), True), ((BATCH, 512), False)),
    "dX 128x512 @ 512x512": (((BATCH, 512), False), ((512, 512), False)),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--calls", type=int, default=300, help="timed calls per product; the median is reported")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-json", action="store_true")
    p.add_argument("--worker", choices=["numpy", "torch"], help=argparse.SUPPRESS)
    return p.parse_args()


ARGS = parse_args()
for var in THREAD_VARS:  # before numpy or torch (and their thread pools) is imported
    os.environ[var] = str(ARGS.threads)
import numpy as np  # noqa: E402


def run_worker():
    """Median microseconds of each product in this worker's library, as JSON on stdout."""
    rng = np.random.default_rng(0)
    matmul, wrap, extra = np.matmul, lambda a: a, {}
    if ARGS.worker == "torch":
        import torch

        torch.set_num_threads(ARGS.threads)
        matmul, wrap, extra = torch.matmul, torch.from_numpy, {"torch": torch.__version__}
    result = {}
    for name, operands in PRODUCTS.items():
        a, b = (wrap(rng.standard_normal(shape, dtype=np.float32)) for shape, _ in operands)
        a, b = (x.T if transposed else x for x, (_, transposed) in zip((a, b), operands))
        for _ in range(20):
            matmul(a, b)
        times = []
        for _ in range(ARGS.calls):
            start = time.perf_counter()
            matmul(a, b)
            times.append(time.perf_counter() - start)
        result[name] = float(np.median(times)) * 1e6
    print(json.dumps({"us": result, **extra}))


def worker(library):
    done = subprocess.run([sys.executable, __file__, "--worker", library, "--threads", str(ARGS.threads),
                           "--calls", str(ARGS.calls)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    load_before = os.getloadavg()[0]
    numpy_us, torch_run = worker("numpy")["us"], worker("torch")
    torch_us = torch_run["us"]
    rows = [{"product": name, "numpy_us": round(numpy_us[name], 1), "torch_us": round(torch_us[name], 1),
             "ratio": round(numpy_us[name] / torch_us[name], 3)} for name in PRODUCTS]
    total = {"numpy_us": round(sum(numpy_us.values()), 1), "torch_us": round(sum(torch_us.values()), 1)}
    total["ratio"] = round(total["numpy_us"] / total["torch_us"], 3)
    print(f"median us per call, {ARGS.threads} thread(s), {ARGS.calls} calls")
    for row in rows + [{"product": "all five", **total}]:
        print(f"{row['product']:28s} numpy {row['numpy_us']:8.1f}   torch {row['torch_us']:8.1f}   {row['ratio']:.2f}x")
    machine = {"host": socket.gethostname(), "cpu": cpu_name(), "cores": os.cpu_count(), "threads": ARGS.threads,
               "numpy": np.__version__, "blas": blas_name(), "torch": torch_run.get("torch"),
               "loadavg_1min_before": load_before, "loadavg_1min_after": os.getloadavg()[0],
               "date": dt.datetime.now().isoformat(timespec="seconds")}
    if not ARGS.no_json:
        host = "".join(c if c.isalnum() or c in "-_" else "-" for c in machine["host"]) or "machine"
        path = new_result_path(ARGS.out, f"gemm-{host}-{dt.date.today().isoformat()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": machine, "rows": rows, "total": total}, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    run_worker() if ARGS.worker else main()
