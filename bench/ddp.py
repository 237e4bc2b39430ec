"""DistributedDataParallel on the CPU: its overhead at world size 1, and a 2-rank MPI run.

    python bench/ddp.py [--steps 30] [--nproc 2] [--threads 1] [--no-json]

Model: nanoGPT's CPU Shakespeare GPT (4 layers, 4 heads, n_embd 128, block 64, batch 12 per rank,
AdamW), random tokens (vocab 65): the speed does not depend on the text.

1. World size 1, one process: the plain step (forward, backward, AdamW) against the same step on
   DistributedDataParallel(model) (identity ops, bucket copies, a no-op all-reduce), interleaved
   step by step so that load from other processes hits both alike; median of --steps.
   Target: overhead <= 5% (printed PASS/FAIL, never asserted).
2. --nproc ranks under the venv's mpiexec (this file with --ranks): median DDP step time, the time
   of the buckets' all-reduces alone (blocking, measured right after each step, same buckets),
   throughput (tokens/s over all ranks) against 1 rank, bucket count, gradient bytes, and the ring
   model's bytes sent per rank, 2(n-1)/n x gradient bytes, with the bus bandwidth it implies.
Writes bench/results/ddp-<host>-<date>.json.
"""

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import new_result_path  # bench/machine.py

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MODEL = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
BATCH = 12


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    ap.add_argument("--no-json", action="store_true")
    ap.add_argument("--ranks", metavar="OUT", help=argparse.SUPPRESS)  # internal: run as one rank
    return ap.parse_args()


def setup(seed=0):
    import numpy as np
    import tinytorch as tt
    from tinytorch.models import GPT, GPTConfig
    from tinytorch.optim import AdamW
    tt.manual_seed(seed)
    model = GPT(GPTConfig(**MODEL))
    return model, AdamW(model.parameters(), lr=1e-3, weight_decay=0.1), np.random.default_rng(seed)


def step(net, opt, rng):
    """One training step on a fresh random batch; returns its seconds."""
    import tinytorch as tt
    from tinytorch.nn.functional import cross_entropy
    tokens = rng.integers(0, MODEL["vocab_size"], (BATCH, MODEL["block_size"] + 1))
    idx, target = tt.tensor(tokens[:, :-1], dtype=tt.int64), tt.tensor(tokens[:, 1:], dtype=tt.int64)
    start = time.perf_counter()
    logits, _ = net(idx)
    cross_entropy(logits.view(-1, MODEL["vocab_size"]), target.view(-1)).backward()
    opt.step()
    opt.zero_grad()
    return time.perf_counter() - start


def world_size_one(steps):
    import numpy as np
    from tinytorch.distributed import DistributedDataParallel
    plain_model, plain_opt, plain_rng = setup()
    ddp_model, ddp_opt, ddp_rng = setup()
    ddp = DistributedDataParallel(ddp_model)
    for _ in range(3):  # warm-up: allocator, BLAS threads
        step(plain_model, plain_opt, plain_rng), step(ddp, ddp_opt, ddp_rng)
    plain, wrapped = [], []
    for i in range(steps):
        pair = [(plain, plain_model, plain_opt, plain_rng), (wrapped, ddp, ddp_opt, ddp_rng)]
        for times, net, opt, rng in (pair if i % 2 == 0 else pair[::-1]):
            times.append(step(net, opt, rng))
    p, w = float(np.median(plain)), float(np.median(wrapped))
    return {"plain_step_ms": round(p * 1e3, 2), "ddp_step_ms": round(w * 1e3, 2),
            "overhead_pct": round((w / p - 1) * 100, 2), "buckets": len(ddp.buckets),
            "target_overhead_pct": 5.0, "pass": (w / p - 1) * 100 <= 5.0}


def rank_main(steps, out):
    import numpy as np
    import tinytorch.distributed as dist
    dist.init_process_group("mpi")
    rank, n = dist.get_rank(), dist.get_world_size()
    model, opt, _ = setup()
    rng = np.random.default_rng(100 + rank)  # each rank its own data
    ddp = dist.DistributedDataParallel(model)
    for _ in range(3):
        step(ddp, opt, rng)
    step_times, reduce_times = [], []
    for _ in range(steps):
        dist.barrier()
        step_times.append(step(ddp, opt, rng))
        dist.barrier()
        start = time.perf_counter()  # the same buckets, all-reduced alone (blocking)
        for bucket in ddp.buckets:
            dist.all_reduce(_as_tensor(bucket.buffer), dist.ReduceOp.AVG)
        reduce_times.append(time.perf_counter() - start)
    if rank == 0:
        grad_bytes = sum(b.buffer.nbytes for b in ddp.buckets)
        ring_bytes = 2 * (n - 1) / n * grad_bytes
        t_reduce = float(np.median(reduce_times))
        Path(out).write_text(json.dumps({
            "world_size": n, "step_ms": round(float(np.median(step_times)) * 1e3, 2),
            "all_reduce_ms_per_step": round(t_reduce * 1e3, 3), "buckets": len(ddp.buckets),
            "gradient_bytes_per_step": grad_bytes, "ring_model_bytes_sent_per_rank": int(ring_bytes),
            "implied_bus_bandwidth_GBps": round(ring_bytes / t_reduce / 1e9, 3),
            "tokens_per_step": n * BATCH * MODEL["block_size"],
        }))


def _as_tensor(array):
    from tinytorch.core.tensor import from_op
    from tinytorch.core.backend import Device
    return from_op(array, Device("cpu"))


def main():
    args = parse()
    for name in THREAD_VARS:
        os.environ.setdefault(name, str(args.threads))
    if args.ranks:
        return rank_main(args.steps, args.ranks)
    one = world_size_one(args.steps)
    print(f"world size 1: plain step {one['plain_step_ms']} ms, DDP {one['ddp_step_ms']} ms, overhead "
          f"{one['overhead_pct']:+.1f}% ({'PASS' if one['pass'] else 'FAIL'} <= 5%), {one['buckets']} bucket(s)")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    multi = None
    if not mpiexec.is_file():
        print("no mpiexec in the venv: pip install -e '.[dist]' for the multi-rank run")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ranks.json"
            subprocess.run([str(mpiexec), "-n", str(args.nproc), sys.executable, "-m", "mpi4py", __file__,
                            "--ranks", str(out), "--steps", str(args.steps), "--threads", str(args.threads)],
                           check=True)
            multi = json.loads(out.read_text())
        one_rank_tps = BATCH * MODEL["block_size"] / (one["ddp_step_ms"] / 1e3)
        multi_tps = multi["tokens_per_step"] / (multi["step_ms"] / 1e3)
        multi.update(tokens_per_s=round(multi_tps), one_rank_tokens_per_s=round(one_rank_tps),
                     speedup=round(multi_tps / one_rank_tps, 2))
        print(f"{multi['world_size']} ranks: step {multi['step_ms']} ms (all-reduce alone "
              f"{multi['all_reduce_ms_per_step']} ms), {multi['tokens_per_s']:,} tokens/s vs "
              f"{multi['one_rank_tokens_per_s']:,} on 1 rank (x{multi['speedup']}); {multi['buckets']} bucket(s), "
              f"{multi['gradient_bytes_per_step']:,} gradient bytes, ring model "
              f"{multi['ring_model_bytes_sent_per_rank']:,} bytes sent per rank "
              f"(= {multi['implied_bus_bandwidth_GBps']} GB/s)")
    if not args.no_json:
        load = os.getloadavg()[0]
        record = {"benchmark": "ddp", "host": socket.gethostname(), "date": dt.date.today().isoformat(),
                  "cores": os.cpu_count(), "load_average_1min": round(load, 2), "threads_per_rank": args.threads,
                  "model": MODEL, "batch_per_rank": BATCH, "steps": args.steps,
                  "world_size_1": one, "multi_rank": multi}
        path = new_result_path(Path(__file__).parent / "results", f"ddp-{socket.gethostname()}-{record['date']}")
        path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
