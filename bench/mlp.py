"""MLP training-step benchmark: forward, cross-entropy, backward and an AdamW step, TinyTorch vs
PyTorch CPU, for a 64-128-128-10 MLP at batch 64 and a 784-512-512-10 MLP at batch 128 (ReLU).

    python bench/mlp.py [--threads N] [--repeat 15] [--blocks 3] [--profile] [--out bench/results]

Each framework is timed in its own worker process (this script with --worker), so that one
framework's thread pools (NumPy's OpenBLAS, PyTorch's OpenMP) never spin on the cores while the
other runs; workers of the two frameworks alternate in `--blocks` blocks, so that load from
other processes hits both alike. Threads: the BLAS/OpenMP environment variables are set to
--threads before NumPy or PyTorch is imported, and PyTorch also gets torch.set_num_threads.
Both frameworks start from the same weights and batch. Reports the median time per step over
all rounds, the ratio TinyTorch/PyTorch and the target (<= 1.0x, printed PASS/FAIL, never
asserted). `--profile` adds where TinyTorch's step spends its time (per phase, and cProfile's
top functions). Writes JSON to bench/results/mlp-<host>-<date>.json.
"""

import argparse
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import timeit
from pathlib import Path

from machine import blas_name, cpu_name, new_result_path  # bench/machine.py

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
CONFIGS = {  # name: (layer sizes, batch)
    "mlp-64-128-128-10": ((64, 128, 128, 10), 64),
    "mlp-784-512-512-10": ((784, 512, 512, 10), 128),
}
TARGET = 1.0  # issue 16: the step at PyTorch's speed (the 784-512-512-10 MLP), or faster
LR = 1e-3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="threads for NumPy's BLAS and PyTorch (default: all cores)")
    p.add_argument("--split", choices=["threads", "off"], default="off",
                   help="off: one thread runs TinyTorch's step, BLAS with --threads threads; threads: each batch "
                        "is split over --threads threads (ThreadedStep, BLAS at one thread in each), which is "
                        "slower for these MLPs (their per-thread arrays are too small; bench/README.md)")
    p.add_argument("--fused", choices=["off", "tinytorch", "both"], default="off",
                   help="AdamW(fused=True) for TinyTorch (its numba kernel, `pip install 'tinytorch[fused]'`), or for "
                        "both frameworks (PyTorch's own fused CPU kernel); off: both run their default update")
    p.add_argument("--repeat", type=int, default=45, help="timing rounds per framework; the median is reported")
    p.add_argument("--blocks", type=int, default=9, help="alternating worker processes per framework")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per round (autorange)")
    p.add_argument("--profile", action="store_true", help="also profile TinyTorch's step")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-json", action="store_true")
    p.add_argument("--worker", choices=["tt", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    return p.parse_args()


ARGS = parse_args()
for var in THREAD_VARS:  # must happen before numpy (and its BLAS) or torch is imported
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402


def weights_and_batch(sizes, batch):
    """The same numbers for both frameworks: PyTorch's Linear init, U(-1/sqrt(in), 1/sqrt(in))."""
    rng = np.random.default_rng(0)
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        bound = 1 / np.sqrt(n_in)
        layers.append((rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32),
                       rng.uniform(-bound, bound, n_out).astype(np.float32)))
    x = rng.standard_normal((batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch)
    return layers, x, y


def tinytorch_step(sizes, batch):
    import tinytorch as tt
    from tinytorch import nn
    from tinytorch.nn.functional import cross_entropy
    from tinytorch.optim import AdamW

    layers, x, y = weights_and_batch(sizes, batch)
    modules = []
    for i, (w, b) in enumerate(layers):
        linear = nn.Linear(w.shape[1], w.shape[0])
        linear.weight.data[...], linear.bias.data[...] = w, b
        modules += [linear] if i == len(layers) - 1 else [linear, nn.ReLU()]
    model = nn.Sequential(*modules)
    x, y, opt = tt.tensor(x), tt.tensor(y), AdamW(model.parameters(), lr=LR,
                                                             fused=ARGS.fused != "off")
    threaded = None
    if ARGS.split == "threads" and ARGS.threads > 1:  # the same step, the batch split over the threads
        from tinytorch.training import ThreadedStep

        threaded = ThreadedStep(model, ARGS.threads)
    return make_step(model, x, y, opt, cross_entropy, threaded)


def torch_step(sizes, batch):
    import torch

    torch.set_num_threads(ARGS.threads)
    layers, x, y = weights_and_batch(sizes, batch)
    modules = []
    for i, (w, b) in enumerate(layers):
        linear = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        modules += [linear] if i == len(layers) - 1 else [linear, torch.nn.ReLU()]
    model = torch.nn.Sequential(*modules)
    return make_step(model, torch.tensor(x), torch.tensor(y), torch.optim.AdamW(model.parameters(), lr=LR,
                                                                                    fused=ARGS.fused == "both" or None),
                     torch.nn.functional.cross_entropy)


def make_step(model, x, y, opt, loss_fn, threaded=None):
    """One training step as a function; `threaded` (a TinyTorch ThreadedStep) runs it split over threads."""
    def step():
        if threaded is not None:
            return threaded(loss_fn, opt, [(x, y)])
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    step.model, step.inputs, step.optimizer = model, (x, y), opt
    return step


def run_worker():
    """Time `--repeat` rounds of one framework's step; print the ms per step of each as JSON."""
    sizes, batch = CONFIGS[ARGS.config]
    step = (tinytorch_step if ARGS.worker == "tt" else torch_step)(sizes, batch)
    timer, number = timeit.Timer(step), 1
    while timer.timeit(number) < ARGS.min_time / 5:  # warm up, and pick a number of calls per round
        number *= 2
    times = [timer.timeit(number) / number * 1e3 for _ in range(ARGS.repeat)]
    extra = {}
    if ARGS.worker == "torch":
        import torch

        extra = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    print(json.dumps({"times_ms": times, "number": number, **extra}))


def worker_times(framework, config, repeat):
    command = [sys.executable, __file__, "--worker", framework, "--config", config,
               "--threads", str(ARGS.threads), "--split", ARGS.split, "--fused", ARGS.fused, "--repeat", str(repeat), "--min-time", str(ARGS.min_time)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        if framework == "torch" and "No module named 'torch'" in done.stderr:
            return None
        raise RuntimeError(f"{framework} worker for {config} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_config(name):
    sizes, batch = CONFIGS[name]
    times, versions = {"tt": [], "torch": []}, {}
    per_block = max(1, ARGS.repeat // ARGS.blocks)
    for _ in range(ARGS.blocks):
        for fw in ("tt", "torch"):
            if fw == "torch" and times["torch"] is None:
                continue
            result = worker_times(fw, name, per_block)
            if result is None:
                times["torch"] = None
                continue
            times[fw] += result.pop("times_ms")
            versions.update({k: v for k, v in result.items() if k != "number"})
    row = {"config": name, "sizes": list(sizes), "batch": batch, "optimizer": f"AdamW(lr={LR})",
           "params": int(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))), "rounds": len(times["tt"])}
    for fw, ts in times.items():
        if ts:
            row[f"{fw}_ms"] = float(np.median(ts))
            row[f"{fw}_ms_min"] = float(np.min(ts))
    if times["torch"]:
        row["ratio"] = row["tt_ms"] / row["torch_ms"]
        row["target"] = TARGET
        row["pass"] = bool(row["ratio"] <= TARGET)
    if ARGS.profile:
        step = tinytorch_step(sizes, batch)
        row["tt_phases_ms"] = phases(step)
        print_profile(name, step)
    return row, versions


def phases(step, rounds=200):
    """Median ms of each phase of TinyTorch's step: forward, loss, backward, AdamW step + zero_grad."""
    from tinytorch.nn.functional import cross_entropy

    model, (x, y), opt = step.model, step.inputs, step.optimizer
    clock = timeit.default_timer
    spent = {"forward": [], "loss": [], "backward": [], "optimizer": []}
    for _ in range(rounds):
        t0 = clock()
        logits = model(x)
        t1 = clock()
        loss = cross_entropy(logits, y)
        t2 = clock()
        loss.backward()
        t3 = clock()
        opt.step()
        opt.zero_grad()
        t4 = clock()
        for key, a, b in (("forward", t0, t1), ("loss", t1, t2), ("backward", t2, t3), ("optimizer", t3, t4)):
            spent[key].append((b - a) * 1e3)
    return {k: round(float(np.median(v)), 4) for k, v in spent.items()}


def print_profile(name, step, calls=300):
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        step()
    profiler.disable()
    print(f"\n--- cProfile of {calls} TinyTorch steps, {name} (top 12 by own time) ---")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def machine_info(load_before, versions):
    return {
        "host": socket.gethostname(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": ARGS.threads,
        "tinytorch_split": ARGS.split,
        "adamw_fused": ARGS.fused,
        "thread_setting": "env " + ",".join(THREAD_VARS) + " before import; torch.set_num_threads; "
                          "one worker process per framework",
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "blas": blas_name(),
        "torch": versions.get("torch"),
        "torch_threads": versions.get("torch_threads"),
        "loadavg_1min_before": load_before,
        "loadavg_1min_after": os.getloadavg()[0],
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }


def print_rows(rows):
    print(f"\nmedian ms per training step (zero_grad, forward, cross-entropy, backward, AdamW), "
          f"{ARGS.threads} thread(s), {rows[0]['rounds']} rounds per framework")
    print(f"{'config':22s} {'batch':>5s} {'tinytorch':>10s} {'pytorch':>10s} {'ratio':>7s}  {'target':16s}"
          f"(min over rounds: tinytorch, pytorch)")
    for r in rows:
        if "ratio" in r:
            verdict = f"<= {TARGET}x {'PASS' if r['pass'] else 'FAIL'}"
            print(f"{r['config']:22s} {r['batch']:5d} {r['tt_ms']:10.3f} {r['torch_ms']:10.3f} "
                  f"{r['ratio']:6.2f}x  {verdict:16s}({r['tt_ms_min']:.3f}, {r['torch_ms_min']:.3f})")
        else:
            print(f"{r['config']:22s} {r['batch']:5d} {r['tt_ms']:10.3f} {'-':>10s}")
        if "tt_phases_ms" in r:
            print("    tinytorch phases (ms):", ", ".join(f"{k} {v:.3f}" for k, v in r["tt_phases_ms"].items()))


def main():
    load_before = os.getloadavg()[0]
    rows, versions = [], {}
    for name in CONFIGS:
        row, found = bench_config(name)
        rows.append(row)
        versions.update(found)
    print_rows(rows)
    if "ratio" not in rows[0]:
        print("PyTorch not installed: no ratios (pip install torch==2.13.0 for the CPU wheel).")
    info = machine_info(load_before, versions)
    busy = max(info["loadavg_1min_before"], info["loadavg_1min_after"])
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average up to {busy:.2f} on {os.cpu_count()} cores; other processes "
              f"compete for the CPU and timings are noisy")
    print(f"{info['cpu']}, {info['cores']} cores; numpy {info['numpy']} ({info['blas']}), "
          f"torch {info['torch']}; threads={ARGS.threads}")
    if not ARGS.no_json:
        host = "".join(c if c.isalnum() or c in "-_" else "-" for c in info["host"]) or "machine"
        split = "-split-threads" if ARGS.split == "threads" and ARGS.threads > 1 else ""
        fused = "" if ARGS.fused == "off" else f"-fused-{ARGS.fused}"
        path = new_result_path(ARGS.out, f"mlp-{host}-{dt.date.today().isoformat()}{split}{fused}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    run_worker() if ARGS.worker else main()
