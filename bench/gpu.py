"""The one-shot GPU check: TinyTorch's cuda path on a real GPU, in at most 6 minutes.

    python3 bench/gpu.py [--out DIR] [--budget 340] [--only gpt,kernels,nccl,suite]
    python3 bench/gpu.py --dry-run     # here, without a GPU: the plan, the imports, a tiny parity step on CPU

In order, each phase within what is left of --budget seconds, the results file rewritten after each:
1. gpt: nanoGPT's GPU Shakespeare config (6 layers, 6 heads, 384 wide, T=256, batch 64, vocab 65) in
   PyTorch CUDA eager and in TinyTorch, from the same weights (bench/gpt_pair.py): first one batch's
   loss, logits, block outputs and gradients compared, then the median time of a training step
   (forward, cross-entropy, backward, clip at 1.0, AdamW; the batch is already on the GPU) over
   --steps steps after --warmup. fp32 with TF32 off on both, then autocast on both in bfloat16
   (float16 where TinyTorch's autocast has no bfloat16 on cuda), when `tinytorch.autocast` exists.
   Also host syncs in one TinyTorch step (`tinytorch.core.backend.count_host_syncs`), MFU of both
   against the data-sheet peak, and peak memory (PyTorch's allocator, CuPy's pool).
2. kernels: module 10's tests (tests/10_cuda) with the kernels on the device, if the folder exists.
3. nccl: the gpu-marked distributed tests (NCCL at world size 1: NCCL refuses two ranks on one GPU).
4. suite: the whole test suite with TINYTORCH_TEST_DEVICE=cuda (-x; `-n 8` when pytest-xdist is there).
Writes DIR/gpu-<date>.json (default bench/results/): machine, versions, each phase's numbers, ratios
and the targets (step time <= 2x PyTorch in fp32 and in low precision; no host sync in a step).

The lent GPU machine (one H200, CUDA 13, cupy-cuda13x, torch, numba-cuda, mpi4py, pytest-xdist) reaches
no package index; it lacks jupytext (and its nbformat stack) and mpich. Bring them as wheels:

    bench/wheelhouse.sh                  # here: ~14 MB of wheels into wheelhouse/ (git ignores it)

then, on the GPU machine, from the repo root (carry `wheelhouse` along). Its python3 is itself a
virtual environment, and a venv made from it does not see its torch or CuPy, so install next to it
into a folder on PYTHONPATH instead of making a venv:

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheelhouse/*.whl
    export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
    python3 bench/gpu.py --out $OUT

(On a machine whose python is not a venv, `pip install --no-index --find-links wheelhouse -e .` works too.)
"""

import argparse
import contextlib
import datetime as dt
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ for gpt_pair, machine
import gpt_pair  # noqa: E402  bench/gpt_pair.py
from machine import cpu_name, new_result_path  # noqa: E402  bench/machine.py

ROOT = Path(__file__).resolve().parents[1]
GPU_MODEL = dict(n_layer=6, n_head=6, n_embd=384, block_size=256)  # nanoGPT's config/train_shakespeare_char.py
BATCH, VOCAB = 64, 65  # tiny Shakespeare has 65 characters; the tokens are random (speed needs no text)
TINY_MODEL, TINY_BATCH = dict(n_layer=1, n_head=2, n_embd=16, block_size=8), 2  # --dry-run on a CPU
LR, BETAS, WEIGHT_DECAY, CLIP = 1e-3, (0.9, 0.99), 0.1, 1.0
PHASES = ("gpt", "kernels", "nccl", "suite")
PHASE_CAP_S = {"kernels": 60, "nccl": 60, "suite": 600}  # seconds per test phase; the suite takes what is left
TOLERANCE = {"fp32": {"loss": 1e-4, "logits": 1e-3, "grads": 1e-2},  # max relative differences
             "low": {"loss": 2e-2, "logits": 5e-2, "grads": 2e-1}}
TARGETS = {"fp32_ratio": 2.0, "low_precision_ratio": 2.0, "host_syncs_per_step": 0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder for gpu-<date>.json")
    p.add_argument("--budget", type=float, default=340, help="seconds for all phases together")
    p.add_argument("--only", default=",".join(PHASES), help="comma-separated phases to run: " + ", ".join(PHASES))
    p.add_argument("--steps", type=int, default=10, help="timed training steps per framework and precision")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (CuPy compiles its kernels here)")
    p.add_argument("--workers", type=int, default=8, help="pytest-xdist workers for the suite (when installed)")
    p.add_argument("--maxfail", type=int, default=1, help="stop the suite after this many failures (1: -x)")
    p.add_argument("--dry-run", action="store_true", help="check the plan and imports, and run a tiny parity "
                   "step and one timed step on the CPU; needs no GPU and writes nothing")
    args = p.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.only) - set(PHASES)
    if unknown:
        p.error(f"--only {','.join(sorted(unknown))}: choose among {', '.join(PHASES)}")
    if args.steps < 1 or args.warmup < 0 or args.budget <= 0:
        p.error("--steps must be >= 1, --warmup >= 0 and --budget > 0")
    return args


# --- the machine ----------------------------------------------------------------------------------
def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def has_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def machine_info():
    """Host, CPU, GPU, driver and the versions of everything the check touches."""
    info = {"host": socket.gethostname(), "cpu": cpu_name(), "cores": os.cpu_count(),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "date": dt.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
            "versions": {name: version(name) for name in (
                "numpy", "cupy-cuda13x", "cupy-cuda12x", "torch", "numba", "numba-cuda", "ml_dtypes", "mpi4py",
                "mpich", "pytest", "pytest-xdist", "jupytext", "nvidia-nccl-cu13", "nvidia-nccl-cu12")},
            "cupy_tf32": os.environ.get("CUPY_TF32", "0 (unset: TF32 off)")}
    import tinytorch as tt
    info["cuda_available"] = tt.cuda_available()
    info["cuda_unavailable_reason"] = None if info["cuda_available"] else tt.cuda_unavailable_reason()
    if info["cuda_available"]:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        try:
            from cupy.cuda import nccl
            info["nccl"] = nccl.get_version() if nccl.available else None
        except Exception as err:  # NCCL missing or broken: the nccl phase says more
            info["nccl"] = f"unavailable: {err}"
    return info


def git_commit():
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None  # the device machine gets a copy of the tree without .git


# --- the GPT step, PyTorch vs TinyTorch -------------------------------------------------------------
def low_precision(device_type):
    """(torch autocast factory, tinytorch autocast factory, dtype name) or (None, None, why not)."""
    import torch

    import tinytorch as tt
    autocast = getattr(tt, "autocast", None)
    if autocast is None:
        return None, None, "tinytorch.autocast does not exist (module 10 not exported)"
    why = []
    for name in ("bfloat16", "float16"):
        dtype = getattr(tt, name, name)
        try:
            with autocast(device_type, dtype=dtype):
                pass
        except (TypeError, ValueError, ImportError) as err:  # e.g. no bfloat16 arrays in CuPy
            why.append(f"{name}: {err}")
            continue
        return (functools.partial(torch.autocast, device_type, dtype=getattr(torch, name)),
                functools.partial(autocast, device_type, dtype=dtype), name)
    return None, None, "; ".join(why)


def synchronizer(device):
    """A function that waits for the device to finish (nothing to wait for on a CPU)."""
    if not device.startswith("cuda"):
        return lambda: None
    import cupy
    import torch
    return lambda: (torch.cuda.synchronize(), cupy.cuda.runtime.deviceSynchronize())  # every stream


def decay_groups(named_params):
    """nanoGPT's weight-decay rule: every >= 2-D parameter decays; each shared parameter appears once."""
    params = list(dict(named_params).values())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def training_step(model, x, y, autocast, adamw, clip_grad_norm_):
    """One nanoGPT step (forward in `autocast`, backward, clipping, AdamW), for either framework:
    `adamw` and `clip_grad_norm_` are that framework's AdamW class and clipping function."""
    params = list(model.parameters())
    optimizer = adamw(decay_groups(model.named_parameters()), lr=LR, betas=BETAS)

    def step():
        with autocast():
            _, loss = model(x, y)
        loss.backward()
        clip_grad_norm_(params, CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def time_steps(step, sync, warmup, steps):
    """Milliseconds per step (median, mean, min) over `steps` steps, each waited for, after `warmup`."""
    for _ in range(warmup):
        step()
    sync()
    ms = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        ms.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": float(np.median(ms)), "mean_ms": float(np.mean(ms)), "min_ms": float(np.min(ms))}


def host_syncs(step):
    """Device-to-host conversions in one TinyTorch step (None when the backend cannot count them)."""
    try:
        from tinytorch.core.backend import count_host_syncs
    except ImportError:
        return None
    with count_host_syncs() as counter:
        step()
    return counter.count


def parity_ok(check, kind):
    tol = TOLERANCE[kind]
    loss_rel = abs(check["loss_tinytorch"] - check["loss_torch"]) / abs(check["loss_torch"])
    return (loss_rel <= tol["loss"] and check["logits_max_rel"] <= tol["logits"]
            and max(check["grad_max_rel"].values()) <= tol["grads"])


def gpt_phase(device, precision, model_cfg, batch, steps, warmup):
    """Parity on one batch, then step times of both frameworks, in fp32 or low precision."""
    import torch

    import tinytorch as tt
    from tinytorch.training.efficiency import peak_flops

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both: CuPy leaves TF32 off too
    torch.backends.cudnn.allow_tf32 = False
    if precision == "fp32":
        theirs_ac, ours_ac, dtype = contextlib.nullcontext, contextlib.nullcontext, "float32"
    else:
        theirs_ac, ours_ac, dtype = low_precision(device.split(":")[0])
        if theirs_ac is None:
            return {"skipped": dtype}
    theirs = gpt_pair.torch_gpt(VOCAB, device=device, **model_cfg)
    ours = gpt_pair.tinytorch_gpt(VOCAB, weights=gpt_pair.torch_weights(theirs), device=device, **model_cfg)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, VOCAB, (batch, model_cfg["block_size"])) for _ in range(2))
    check = gpt_pair.compare_step(theirs, ours, x, y, theirs_ac, ours_ac)
    theirs.zero_grad(set_to_none=True)
    for p in ours.parameters():
        p.grad = None
    sync = synchronizer(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t_step = training_step(theirs, torch.from_numpy(x).to(device), torch.from_numpy(y).to(device), theirs_ac,
                           torch.optim.AdamW, torch.nn.utils.clip_grad_norm_)
    o_step = training_step(ours, tt.tensor(x, device=device), tt.tensor(y, device=device), ours_ac,
                           tt.optim.AdamW, tt.nn.utils.clip_grad_norm_)
    result = {"dtype": dtype, "parity": check, "parity_ok": parity_ok(check, "fp32" if precision == "fp32" else "low"),
              "torch": time_steps(t_step, sync, warmup, steps), "tinytorch": time_steps(o_step, sync, warmup, steps)}
    result["tinytorch"]["host_syncs_per_step"] = host_syncs(o_step)
    result["ratio_median"] = result["tinytorch"]["median_ms"] / result["torch"]["median_ms"]
    tokens = batch * model_cfg["block_size"]
    peak, source = peak_flops(device, {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[dtype])
    for name in ("torch", "tinytorch"):
        r = result[name]
        r["tokens_per_s"] = round(tokens / (r["median_ms"] / 1e3))
        r["mfu"] = r["tokens_per_s"] * ours.estimate_flops() / peak if peak else None
    result["peak"] = {"tflops": peak / 1e12 if peak else None, "source": source}
    if device.startswith("cuda"):
        import cupy
        result["torch"]["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["tinytorch"]["peak_memory_mib"] = cupy.get_default_memory_pool().total_bytes() / 2**20
    return result


# --- pytest phases ---------------------------------------------------------------------------------
def pytest_command(phase, args):
    """The pytest arguments of a test phase, or None when there is nothing to run (and why)."""
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if has_module("pytest_timeout"):
        base += ["--timeout", "300"]
    if phase == "kernels":
        folder = ROOT / "tests" / "10_cuda"
        return (base + [str(folder)], None) if folder.is_dir() else (None, "tests/10_cuda does not exist yet")
    if phase == "nccl":
        return base + ["-m", "gpu", str(ROOT / "tests" / "distributed")], None
    parallel = ["-n", str(args.workers)] if has_module("xdist") and args.workers > 1 else []
    return base + [f"--maxfail={args.maxfail}", *parallel, str(ROOT / "tests")], None


def test_env():
    """The tests run on cuda; a missing GPU fails them instead of skipping. CUDASIM off: the real device."""
    env = dict(os.environ, TINYTORCH_TEST_DEVICE="cuda", PYTHONUNBUFFERED="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def pytest_phase(command, timeout):
    """Run pytest; its exit code, time, the summary line and the output's tail."""
    start = time.perf_counter()
    # its own process group, so that a timeout also ends pytest-xdist's workers
    proc = subprocess.Popen(command, cwd=ROOT, env=test_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = f"timeout after {timeout:.0f} s"
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    return {"command": " ".join(command[1:]), "exit_code": code, "seconds": round(time.perf_counter() - start, 1),
            "summary": lines[-1].strip("= ") if lines else None, "output_tail": output[-4000:]}


# --- the driver ------------------------------------------------------------------------------------
def verdicts(report):
    gpt = report["phases"].get("gpt", {})
    out = {}
    for precision, key in (("fp32", "fp32_ratio"), ("low_precision", "low_precision_ratio")):
        r = gpt.get(precision, {})
        if "ratio_median" in r:
            out[f"{precision} step <= {TARGETS[key]}x PyTorch"] = r["ratio_median"] <= TARGETS[key]
            out[f"{precision} same loss and gradients as PyTorch"] = r["parity_ok"]
        syncs = r.get("tinytorch", {}).get("host_syncs_per_step")
        if syncs is not None:
            out[f"{precision}: no host sync in a step"] = syncs <= TARGETS["host_syncs_per_step"]
    for name in ("kernels", "nccl", "suite"):
        r = report["phases"].get(name, {})
        if "exit_code" in r:
            out[f"{name} tests pass"] = r["exit_code"] == 0
    return out


def write(report, path):
    report["checks"] = verdicts(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")


def print_gpt(name, r):
    if "skipped" in r:
        print(f"  {name}: skipped ({r['skipped']})")
        return
    worst = max(r["parity"]["grad_max_rel"].values())
    print(f"  {name} ({r['dtype']}): loss {r['parity']['loss_tinytorch']:.5f} vs {r['parity']['loss_torch']:.5f}, "
          f"worst gradient rel diff {worst:.1e} ({'ok' if r['parity_ok'] else 'TOO FAR'}); step "
          f"{r['tinytorch']['median_ms']:.1f} ms vs {r['torch']['median_ms']:.1f} ms ({r['ratio_median']:.2f}x); "
          f"host syncs per step {r['tinytorch']['host_syncs_per_step']}")


def dry_run(args):
    """Everything but the GPU: the plan, the imports, and the GPT phase on a tiny config on the CPU."""
    info = machine_info()
    print(f"machine: {info['cpu']}, {info['cores']} cores; cuda available: {info['cuda_available']} "
          f"({info['cuda_unavailable_reason'] or info.get('gpu')})")
    for phase in args.only:
        if phase == "gpt":
            print(f"gpt: {GPU_MODEL}, batch {BATCH}, vocab {VOCAB}; {args.warmup} warm-up + {args.steps} timed steps; "
                  f"fp32 (TF32 off), then low precision")
        else:
            command, why = pytest_command(phase, args)
            print(f"{phase}: " + (" ".join(command[1:]) if command else f"nothing to run ({why})"))
    for name in ("torch", "tinytorch", "tinytorch.training.efficiency"):
        importlib.import_module(name)
    from tinytorch.core import backend
    print(f"host-sync counter: {'yes' if hasattr(backend, 'count_host_syncs') else 'no'}; pytest-xdist: "
          f"{'yes' if has_module('xdist') else 'no'}; pytest-timeout: {'yes' if has_module('pytest_timeout') else 'no'}")
    if "gpt" in args.only:
        for precision in ("fp32", "low_precision"):
            r = gpt_phase("cpu", precision, TINY_MODEL, TINY_BATCH, steps=1, warmup=0)
            print_gpt(f"tiny {precision} on cpu", r)
            if precision == "fp32" and not r["parity_ok"]:
                raise SystemExit("the tiny fp32 parity step on the CPU failed: TinyTorch and PyTorch disagree")
    print("dry run: ok")


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    start = time.perf_counter()
    path = new_result_path(args.out, f"gpu-{dt.date.today().isoformat()}")
    report = {"benchmark": "gpu", "machine": machine_info(), "targets": TARGETS, "phases": {},
              "config": {"model": GPU_MODEL, "batch": BATCH, "vocab": VOCAB, "steps": args.steps,
                         "warmup": args.warmup, "lr": LR, "betas": BETAS, "weight_decay": WEIGHT_DECAY,
                         "clip": CLIP, "budget_s": args.budget},
              "method": "same weights and batch in both; one batch compared (loss, logits, block outputs, every "
                        "gradient); step = forward + cross-entropy + backward + clip + AdamW with the batch already "
                        "on the GPU, each step waited for, median of the timed steps"}
    if not report["machine"]["cuda_available"]:  # nothing to record
        raise SystemExit(f"no usable GPU: {report['machine']['cuda_unavailable_reason']} (use --dry-run here)")
    print(f"{report['machine']['gpu']}: {json.dumps(report['machine']['versions'])}", flush=True)
    for phase in args.only:
        left = args.budget - (time.perf_counter() - start)
        if left < 20:
            report["phases"][phase] = {"skipped": f"out of time ({left:.0f} s of --budget left)"}
            continue
        print(f"[{phase}] ({left:.0f} s left)", flush=True)
        if phase == "gpt":
            report["phases"]["gpt"] = gpt = {}
            for precision in ("fp32", "low_precision"):
                try:
                    gpt[precision] = gpt_phase("cuda", precision, GPU_MODEL, BATCH, args.steps, args.warmup)
                except Exception as err:  # keep going: the other phases still say something
                    gpt[precision] = {"error": f"{type(err).__name__}: {err}"}
                    print(f"  {precision}: {gpt[precision]['error']}", flush=True)
                else:
                    print_gpt(precision, gpt[precision])
                write(report, path)
            continue
        command, why = pytest_command(phase, args)
        if command is None:
            report["phases"][phase] = {"skipped": why}
        else:
            report["phases"][phase] = pytest_phase(command, min(PHASE_CAP_S[phase], left - 10))
            r = report["phases"][phase]
            print(f"  exit {r['exit_code']} in {r['seconds']} s: {r['summary']}", flush=True)
        write(report, path)
    report["seconds"] = round(time.perf_counter() - start, 1)
    write(report, path)
    for check, ok in report["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {check}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
