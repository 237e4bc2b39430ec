"""DDP, ZeRO-1, ZeRO-2 and ZeRO-3 (FSDP) on CPU ranks: step time and bytes communicated per step.

    python bench/zero.py [--steps 10] [--nproc 2,4] [--threads 1] [--no-json] [--note TEXT]

Model: a small GPT (4 layers, 4 heads, n_embd 128, block 64, vocab 65; batch 4 per rank, AdamW, tied
embeddings), random tokens. For each world size n, n ranks run under the venv's mpiexec (this file
with --ranks), each strategy in turn: a warm-up step, then --steps timed steps (median).

Bytes: every collective the process group runs during the timed steps is tallied by its payload
(all_reduce: the buffer; all_gather: the gathered output; reduce_scatter: the input), per step.
The bandwidth-optimal (ring) algorithms send, per rank, 2(n-1)/n of an all-reduce's payload and
(n-1)/n of an all-gather's or reduce-scatter's. The model of each strategy for P parameter bytes:
DDP 2(n-1)/n P (all-reduce); ZeRO-1 2(n-1)/n P + (n-1)/n P (plus the all-gather of updated
params); ZeRO-2 (n-1)/n P + (n-1)/n P (reduce-scatter, all-gather: DDP's traffic); ZeRO-3
3 (n-1)/n P (all-gather in forward and again in backward, reduce-scatter), less the root unit's
second gather (embeddings, final norm: kept from forward to backward). Writes
bench/results/zero-<host>-<date>.json.
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

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MODEL = dict(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False)
BATCH = 4
STRATEGIES = ("ddp", "zero1", "zero2", "zero3")
FACTORS = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
           "reduce_scatter": lambda n: (n - 1) / n}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--nproc", default="2,4", help="world sizes, comma-separated")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per rank")
    ap.add_argument("--no-json", action="store_true")
    ap.add_argument("--note", default="", help="recorded with the results (e.g. the machine's load)")
    ap.add_argument("--ranks", metavar="OUT", help=argparse.SUPPRESS)  # internal: run as one rank
    return ap.parse_args()


def count_collectives(pg, tally):
    """Wrap the group's collectives so that each adds its payload bytes to tally[name]."""
    def counted(name, payload):
        call = getattr(pg, name)

        def wrapper(*args, **kwargs):
            tally[name] = tally.get(name, 0) + payload(*args).nbytes
            return call(*args, **kwargs)
        setattr(pg, name, wrapper)
    counted("all_reduce", lambda array, *rest: array)
    counted("all_gather", lambda out, array: out)
    counted("reduce_scatter", lambda out, array, *rest: array)


def build(strategy):
    import tinytorch as tt
    import tinytorch.distributed as dist
    from tinytorch.distributed.fsdp import FullyShardedDataParallel
    from tinytorch.models import GPT, GPTConfig
    from tinytorch.optim import AdamW
    tt.manual_seed(0)
    model = GPT(GPTConfig(**MODEL))
    param_bytes = 4 * sum(p.data.size for p in model.parameters())  # before FSDP empties the parameters
    if strategy in ("zero2", "zero3"):
        net = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=int(strategy[-1]))
        return net, AdamW(net.parameters(), lr=1e-3, weight_decay=0.1), param_bytes
    net = dist.DistributedDataParallel(model)
    if strategy == "zero1":
        return net, dist.ZeroRedundancyOptimizer(model.parameters(), lr=1e-3, weight_decay=0.1), param_bytes
    return net, AdamW(model.parameters(), lr=1e-3, weight_decay=0.1), param_bytes


def one_step(net, opt, rng):
    import tinytorch as tt
    from tinytorch.nn.functional import cross_entropy
    tokens = rng.integers(0, MODEL["vocab_size"], (BATCH, MODEL["block_size"] + 1))
    start = time.perf_counter()
    logits, _ = net(tt.tensor(tokens[:, :-1], dtype=tt.int64))
    cross_entropy(logits.view(-1, logits.shape[-1]), tt.tensor(tokens[:, 1:], dtype=tt.int64).view(-1)).backward()
    opt.step()
    opt.zero_grad()
    return time.perf_counter() - start


def run_ranks(out, steps):
    import numpy as np
    import tinytorch.distributed as dist
    from tinytorch.distributed.process_group import _group
    dist.init_process_group("mpi")
    n, rank = dist.get_world_size(), dist.get_rank()
    results = {}
    for strategy in STRATEGIES:
        net, opt, param_bytes = build(strategy)
        rng = np.random.default_rng(rank)
        one_step(net, opt, rng)  # warm-up: Adam's state, the buffers
        tally = {}
        count_collectives(_group(None), tally)
        times = []
        for _ in range(steps):
            dist.barrier()
            times.append(one_step(net, opt, rng))
        for name in FACTORS:  # unwrap: the next strategy counts afresh
            _group(None).__dict__.pop(name, None)
        payload = {k: v / steps for k, v in tally.items()}
        sent = sum(FACTORS[k](n) * v for k, v in payload.items())
        model_factor = {"ddp": 2, "zero1": 3, "zero2": 2, "zero3": 3}[strategy] * (n - 1) / n
        results[strategy] = dict(step_ms=1e3 * float(np.median(times)), payload_bytes_per_step=payload,
                                 sent_bytes_per_rank=sent, model_bytes_per_rank=model_factor * param_bytes,
                                 param_bytes=param_bytes)
    if rank == 0:
        Path(out).write_text(json.dumps(results))


def main():
    args = parse()
    if args.ranks:
        return run_ranks(args.ranks, args.steps)
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {**os.environ, **{v: str(args.threads) for v in THREAD_VARS}}
    report = {"host": socket.gethostname(), "date": dt.date.today().isoformat(), "model": MODEL,
              "batch_per_rank": BATCH, "steps": args.steps, "note": args.note, "cpus": os.cpu_count(),
              "loadavg_before": os.getloadavg(), "world_sizes": {}}
    for n in [int(x) for x in args.nproc.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ranks.json"
            proc = subprocess.run([str(mpiexec), "-n", str(n), sys.executable, "-m", "mpi4py", __file__, "--ranks", str(out),
                                   "--steps", str(args.steps)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"mpiexec -n {n} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
            results = json.loads(out.read_text())
        report["world_sizes"][n] = results
        for strategy, r in results.items():
            print(f"n={n} {strategy:5s} step {r['step_ms']:7.1f} ms   sent/rank {r['sent_bytes_per_rank'] / 2**20:6.2f} MiB"
                  f"   model {r['model_bytes_per_rank'] / 2**20:6.2f} MiB   payload "
                  + ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in r["payload_bytes_per_step"].items()))
    report["loadavg_after"] = os.getloadavg()
    if not args.no_json:
        path = Path(__file__).parent / "results" / f"zero-{report['host']}-{report['date']}.json"
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
