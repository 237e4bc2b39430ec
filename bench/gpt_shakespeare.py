"""Character-level GPT on tiny Shakespeare, TinyTorch vs PyTorch CPU: nanoGPT's CPU reference run.

    python bench/gpt_shakespeare.py [--data PATH] [--iters 2000] [--eval-every 250] [--eval-batches 200]
                                    [--threads 2] [--only both|tinytorch|torch] [--order torch-first]
    python bench/gpt_shakespeare.py --iters 50 --eval-batches 4        # smoke run (~1 min)
    python bench/gpt_shakespeare.py --iters 20 --eval-every 1000 --profile   # + ms per op family, both

`--profile` adds, for both frameworks, the time of each op family (matmul, layout copies,
elementwise, attention, LayerNorm, GELU, cross-entropy, embedding, engine + Python) in the
forward and the backward (bench/profile_families.py), and TinyTorch's cProfile top functions.

nanoGPT's `config/train_shakespeare_char.py` CPU settings: 4 layers, 4 heads, n_embd 128,
block_size 64, batch 12, 2,000 iterations, AdamW(lr 1e-3, betas (0.9, 0.99), weight decay 0.1
on the >= 2-D parameters), 100 linear warm-up steps then cosine decay to 1e-4, gradient
clipping at 1.0, no biases, dropout 0, weight-tied GPT with GELU (tanh). Both frameworks start
from the same weights (a nanoGPT-style PyTorch GPT written here, copied into TinyTorch's GPT)
and see the same batches (a numpy Generator seeded with (seed, step) draws each step's windows;
the evaluation windows are drawn once and reused at every evaluation).

Method: the script runs one worker process per job (this file with --worker): `init` builds the
PyTorch model, saves its state dict, and checks that TinyTorch's GPT computes the same loss and
gradients from it on one batch; then a `torch` and a `tinytorch` worker, each with its own
process, train in turns of one evaluation interval (train up to the next evaluation point,
evaluate, hand over), only one of them computing at any moment and each turn starting --pause
seconds after the other's ended. Separate processes keep one framework's spinning
OpenBLAS/OpenMP threads off the other's cores and make ru_maxrss that framework's peak; taking
turns spreads load from other processes over both alike. Each worker first runs --warmup steps
on a throwaway copy of the model (thread pools, allocator, lazy init). ms/iter covers batch
drawing, forward, backward, clipping, the AdamW and scheduler steps; evaluations are timed apart.
Threads: OMP/OPENBLAS/MKL/BLIS_NUM_THREADS are set to --threads before NumPy or torch is
imported, and torch also gets torch.set_num_threads. Writes
bench/results/gpt_shakespeare-<host>-<date>.json (`-threads-N` appended when --threads is not 2,
`-split-off` with --split off, `-fused-tinytorch` / `-fused-both` with --fused, `-runN` rather than
overwrite a file)
and prints the tables; the targets (val loss within 0.02 of PyTorch at every evaluation,
TinyTorch's final val loss <= 1.95, median ms/iter <= 1.1x PyTorch's, forward <= 1.3x and
backward <= 1.2x, the phases' medians) are printed PASS/FAIL, never asserted.
"""

import argparse
import datetime as dt
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import blas_name, cpu_name, new_result_path  # bench/machine.py (imports numpy only when called)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=64)
BATCH_SIZE = 12
LR, MIN_LR, WARMUP_ITERS = 1e-3, 1e-4, 100
BETAS, WEIGHT_DECAY, GRAD_CLIP = (0.9, 0.99), 0.1, 1.0
TARGETS = {"val_gap": 0.02, "final_val": 1.95, "ratio": 1.1, "forward": 1.3, "backward": 1.2}
FRAMEWORKS = ("torch", "tinytorch")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/tinyshakespeare.txt", help="the text to train on")
    p.add_argument("--iters", type=int, default=2000, help="training iterations")
    p.add_argument("--eval-every", type=int, default=250, help="evaluate every N iterations (and at the end)")
    p.add_argument("--eval-batches", type=int, default=200, help="batches per split per evaluation")
    p.add_argument("--threads", type=int, default=2, help="threads for NumPy's BLAS and PyTorch")
    p.add_argument("--split", choices=["threads", "off"], default="threads",
                   help="threads: TinyTorch splits each batch over --threads threads (ThreadedStep, BLAS at "
                        "one thread in each); off: one thread runs the step, BLAS with --threads threads")
    p.add_argument("--fused", choices=["off", "tinytorch", "both"], default="off",
                   help="AdamW(fused=True) for TinyTorch (its numba kernel, `pip install 'tinytorch[fused]'`), or for "
                        "both frameworks (PyTorch's own fused CPU kernel); off: both run their default update")
    p.add_argument("--only", choices=["both", "tinytorch", "torch"], default="both")
    p.add_argument("--order", choices=["torch-first", "tinytorch-first"], default="torch-first",
                   help="which framework takes the first turn (each trains in its own process)")
    p.add_argument("--pause", type=float, default=1.0,
                   help="seconds between one framework's turn and the other's (idle BLAS threads go to sleep)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps on a throwaway copy before training")
    p.add_argument("--groups", choices=["nanogpt", "tinytorch"], default="nanogpt",
                   help="weight-decay groups: nanoGPT's (every >= 2-D parameter decays, embeddings included) "
                        "or GPT.configure_optimizers' (embedding tables do not decay); both frameworks use the rule")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--profile", action="store_true", help="also time each op family (matmul, attention, LayerNorm, ...) in both "
                   "frameworks' forward and backward, and cProfile TinyTorch's training step")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--no-json", action="store_true")
    p.add_argument("--worker", choices=["init", "torch", "tinytorch"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.iters < 1 or args.eval_every < 1 or args.eval_batches < 1:
        p.error("--iters, --eval-every and --eval-batches must be >= 1")
    return args


ARGS = parse_args()
for var in THREAD_VARS:  # before numpy (and its BLAS) or torch is imported
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import gpt_pair  # noqa: E402  (bench/gpt_pair.py; imports numpy)
from profile_families import family_table, tinytorch_families, torch_families  # noqa: E402  (bench/)


# --- data and schedule, shared by both frameworks -----------------------------------------------
def encode_text(path):
    """The text as int64 ids with tinytorch's CharTokenizer; 90/10 train/val split in order."""
    from tinytorch.data import CharTokenizer

    text = Path(path).read_text(encoding="utf-8")
    tok = CharTokenizer(text)
    ids = np.array(tok.encode(text), dtype=np.int64)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], tok.vocab_size, len(text)


def window_batch(data, starts, T):
    """x, y (len(starts), T): windows at `starts` and the same windows shifted by one."""
    offsets = starts[:, None] + np.arange(T)
    return data[offsets], data[offsets + 1]


def train_batch(data, step, T, seed=None):
    """Step `step`'s batch: one Generator per step, so both frameworks draw the same windows."""
    rng = np.random.default_rng([ARGS.seed if seed is None else seed, step])
    return window_batch(data, rng.integers(0, len(data) - T, BATCH_SIZE), T)


def eval_starts(data, split_id, T):
    """The window starts of every evaluation batch of one split, (eval_batches, BATCH_SIZE)."""
    rng = np.random.default_rng([ARGS.seed, 1_000_000 + split_id])
    return rng.integers(0, len(data) - T, (ARGS.eval_batches, BATCH_SIZE))


def warmup_iters():
    return min(WARMUP_ITERS, ARGS.iters // 2)  # a short smoke run keeps a warm-up and a decay


def make_scheduler(lr_scheduler, optimizer):
    """LR 1e-3·0.01 rising linearly to 1e-3 over the warm-up, then cosine down to 1e-4."""
    warm = warmup_iters()
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, ARGS.iters - warm), eta_min=MIN_LR)
    if warm == 0:
        return cosine
    linear = lr_scheduler.LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warm)
    return lr_scheduler.SequentialLR(optimizer, [linear, cosine], milestones=[warm])


def decays(name, param, embedding_names):
    """Whether `param` gets weight decay under --groups."""
    if ARGS.groups == "nanogpt":
        return param.ndim >= 2
    return param.ndim >= 2 and name not in embedding_names


def next_token_loss(output, targets):
    """Cross-entropy of GPT's (logits, _) output against (B, T) next tokens: what GPT(x, y) computes."""
    from tinytorch.nn.functional import cross_entropy

    logits = output[0]
    return cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# --- the two models (bench/gpt_pair.py, shared with bench/gpu.py) --------------------------------
def torch_gpt(vocab_size):
    return gpt_pair.torch_gpt(vocab_size, seed=ARGS.seed, **MODEL)


def tinytorch_gpt(vocab_size, weights=None):
    return gpt_pair.tinytorch_gpt(vocab_size, weights=weights, **MODEL)


# --- workers --------------------------------------------------------------------------------------
def init_worker(workdir):
    """Build the PyTorch model, save its weights, and compare one forward/backward with TinyTorch's."""
    import torch

    torch.set_num_threads(ARGS.threads)
    train = np.load(workdir / "train.npy")
    vocab_size = json.loads((workdir / "meta.json").read_text())["vocab_size"]
    model = torch_gpt(vocab_size)
    weights = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    np.savez(workdir / "init.npz", **weights)
    check = step0_parity(model, weights, train, vocab_size)
    (workdir / "init.json").write_text(json.dumps(check))


def step0_parity(model, weights, train, vocab_size):
    """Loss, logits, every block's output and every gradient of both models on step 0's batch."""
    x, y = train_batch(train, 0, MODEL["block_size"])
    return gpt_pair.compare_step(model, tinytorch_gpt(vocab_size, weights), x, y)


def run_train(framework, workdir):
    """Train when told to: each stdin line `until N` trains up to iteration N and evaluates there
    (N = 0: only the first evaluation), then answers `done` on stdout; `finish` writes the results."""
    meta = json.loads((workdir / "meta.json").read_text())
    train, val = np.load(workdir / "train.npy"), np.load(workdir / "val.npy")
    weights = dict(np.load(workdir / "init.npz")) if (workdir / "init.npz").exists() else None
    runner = TorchRunner if framework == "torch" else TinytorchRunner
    rss_start = peak_rss_mib()
    job = runner(meta["vocab_size"], weights)
    T = MODEL["block_size"]
    splits = {"train": (train, eval_starts(train, 0, T)), "val": (val, eval_starts(val, 1, T))}
    warm = runner(meta["vocab_size"], weights)  # throwaway copy: warms thread pools and caches
    for i in range(ARGS.warmup):
        warm.step(*train_batch(train, i, T, seed=ARGS.seed + 1))
    del warm
    rss_setup = peak_rss_mib()
    step_s, losses, lrs, evals, eval_s, it = [], [], [], [], 0.0, 0
    clock = time.perf_counter
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "finish":
            break
        for it in range(it, int(command[1])):  # noqa: B020 -- `it` carries on from the last chunk
            t0 = clock()
            x, y = train_batch(train, it, T)
            lrs.append(job.lr())
            loss = job.step(x, y)
            step_s.append(clock() - t0)
            losses.append(loss)
        it = int(command[1])
        t0 = clock()
        evals.append({"iter": it, **{name: job.mean_loss(data, starts, T) for name, (data, starts) in splits.items()}})
        eval_s += clock() - t0
        print(f"[{framework}] iter {it}: train {evals[-1]['train']:.4f}, val {evals[-1]['val']:.4f} "
              f"({np.mean(step_s[-ARGS.eval_every:]) * 1e3 if step_s else 0:.1f} ms/iter)", file=sys.stderr, flush=True)
        print("done", flush=True)
    rss_train = peak_rss_mib()
    result = {
        "framework": framework, "iters": ARGS.iters, "step_ms": [s * 1e3 for s in step_s],
        "train_loss_per_iter": losses, "lr_per_iter": lrs, "evals": evals, "eval_s": eval_s,
        "phases_ms": job.phases(train, T), "rss_mib": {"start": rss_start, "after_setup": rss_setup,
                                                       "peak": rss_train},
        "modules_loaded": {"torch": "torch" in sys.modules, "tinytorch": "tinytorch" in sys.modules},
        **job.versions(),
    }
    if ARGS.profile:
        result["families_ms"] = job.families(train, T)
        if framework == "tinytorch":
            result["profile"] = job.profile(train, T)
    (workdir / f"{framework}.json").write_text(json.dumps(result))


class TorchRunner:
    def __init__(self, vocab_size, weights):
        import torch

        torch.set_num_threads(ARGS.threads)
        self.torch = torch
        self.model = torch_gpt(vocab_size)
        if weights is not None:
            self.model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        params = dict(self.model.named_parameters())  # the tied matrix once, as transformer.wte.weight
        embeddings = {"transformer.wte.weight", "transformer.wpe.weight"}
        groups = [{"params": [p for n, p in params.items() if decays(n, p, embeddings)],
                   "weight_decay": WEIGHT_DECAY},
                  {"params": [p for n, p in params.items() if not decays(n, p, embeddings)],
                   "weight_decay": 0.0}]
        self.params = list(params.values())
        self.optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=1e-8,  # default: for-loop on a CPU
                                           fused=ARGS.fused == "both" or None)
        self.scheduler = make_scheduler(torch.optim.lr_scheduler, self.optimizer)

    def step(self, x, y):
        torch = self.torch
        self.model.train()
        _, loss = self.model(torch.from_numpy(x), torch.from_numpy(y))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def mean_loss(self, data, starts, T):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            total = sum(self.model(*map(torch.from_numpy, window_batch(data, s, T)))[1].item() for s in starts)
        return total / len(starts)

    def phases(self, data, T, steps=20):
        torch = self.torch
        x, y = train_batch(data, 0, T, seed=ARGS.seed + 2)
        x, y = torch.from_numpy(x), torch.from_numpy(y)

        def forward():
            return self.model(x, y)[1]
        return time_phases(forward, lambda loss: loss.backward(),
                           lambda: torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP),
                           lambda: (self.optimizer.step(), self.optimizer.zero_grad(set_to_none=True)), steps)

    def families(self, data, T, steps=20):
        """Median ms per step of each op family in the forward and the backward (torch.profiler)."""
        torch = self.torch
        x, y = (torch.from_numpy(a) for a in train_batch(data, 0, T, seed=ARGS.seed + 2))
        return torch_families(lambda: self.model(x, y)[1], lambda loss: loss.backward(),
                              lambda: self.optimizer.zero_grad(set_to_none=True), steps)

    def versions(self):
        return {"torch_version": self.torch.__version__, "torch_threads": self.torch.get_num_threads()}


class TinytorchRunner:
    def __init__(self, vocab_size, weights):
        import tinytorch as tt
        from tinytorch.nn.utils import clip_grad_norm_
        from tinytorch.optim import AdamW, lr_scheduler

        self.tt, self.clip = tt, clip_grad_norm_
        self.model = tinytorch_gpt(vocab_size, weights)
        params = dict(self.model.named_parameters())  # the tied matrix once, as transformer.wte.weight
        embeddings = {"transformer.wte.weight", "transformer.wpe.weight"}
        groups = [{"params": [p for n, p in params.items() if decays(n, p, embeddings)],
                   "weight_decay": WEIGHT_DECAY},
                  {"params": [p for n, p in params.items() if not decays(n, p, embeddings)],
                   "weight_decay": 0.0}]
        self.params = list(params.values())
        self.optimizer = AdamW(groups, lr=LR, betas=BETAS, eps=1e-8, fused=ARGS.fused != "off")
        self.scheduler = make_scheduler(lr_scheduler, self.optimizer)
        self.threaded = None  # --split threads: the batch split over --threads threads
        if ARGS.split == "threads" and ARGS.threads > 1:
            from tinytorch.training import ThreadedStep
            self.threaded = ThreadedStep(self.model, ARGS.threads)

    def step(self, x, y):
        tt = self.tt
        self.model.train()
        if self.threaded is not None:  # the same step, each half of the batch in its own thread
            loss = self.threaded(next_token_loss, self.optimizer, [(tt.tensor(x), tt.tensor(y))], GRAD_CLIP)
            self.scheduler.step()
            return loss
        _, loss = self.model(tt.tensor(x), tt.tensor(y))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.clip(self.params, GRAD_CLIP)
        self.optimizer.step()
        self.scheduler.step()
        return loss.item()

    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def mean_loss(self, data, starts, T):
        tt = self.tt
        self.model.eval()
        with tt.no_grad():
            total = sum(self.model(*map(tt.tensor, window_batch(data, s, T)))[1].item() for s in starts)
        return total / len(starts)

    def phases(self, data, T, steps=20):
        tt = self.tt
        x, y = map(tt.tensor, train_batch(data, 0, T, seed=ARGS.seed + 2))
        clip = lambda: self.clip(self.params, GRAD_CLIP)  # noqa: E731
        if self.threaded is not None:  # ThreadedStep's step, taken apart
            th = self.threaded

            def forward():
                th.sync()
                return next_token_loss(th.split_model(x), y)
            return time_phases(forward, lambda loss: loss.backward(), clip,
                               lambda: (th.update(self.optimizer), self.optimizer.zero_grad(set_to_none=True)),
                               steps)

        def forward():
            return self.model(x, y)[1]
        return time_phases(forward, lambda loss: loss.backward(), clip,
                           lambda: (self.optimizer.step(), self.optimizer.zero_grad(set_to_none=True)), steps)

    def families(self, data, T, steps=20):
        """Median ms per step of each op family in the forward and the backward (ops wrapped and timed)."""
        tt = self.tt
        x, y = map(tt.tensor, train_batch(data, 0, T, seed=ARGS.seed + 2))
        return tinytorch_families(lambda: self.model(x, y)[1], lambda loss: loss.backward(),
                                  lambda: self.optimizer.zero_grad(set_to_none=True), steps)

    def profile(self, data, T, steps=100, top=25):
        """cProfile of `steps` training steps: the functions with the most own time."""
        import cProfile
        import pstats

        batches = [train_batch(data, i, T, seed=ARGS.seed + 3) for i in range(steps)]
        profiler = cProfile.Profile()
        profiler.enable()
        for x, y in batches:
            self.step(x, y)
        profiler.disable()
        stats = pstats.Stats(profiler)
        rows = []
        for (file, line, func), (_, nc, tottime, cumtime, _) in stats.stats.items():
            rows.append({"function": f"{Path(file).name}:{line}({func})", "calls": nc,
                         "own_ms_per_step": tottime / steps * 1e3, "cum_ms_per_step": cumtime / steps * 1e3})
        rows.sort(key=lambda r: -r["own_ms_per_step"])
        return rows[:top]

    def versions(self):
        return {}


def time_phases(forward, backward, clip, update, steps):
    """Median ms of forward (with the loss), backward, clipping and AdamW step + zero_grad."""
    clock = time.perf_counter
    spent = {"forward": [], "backward": [], "clip": [], "optimizer": []}
    for _ in range(steps):
        t0 = clock()
        loss = forward()
        t1 = clock()
        backward(loss)
        t2 = clock()
        clip()
        t3 = clock()
        update()
        t4 = clock()
        for key, a, b in (("forward", t0, t1), ("backward", t1, t2), ("clip", t2, t3), ("optimizer", t3, t4)):
            spent[key].append((b - a) * 1e3)
    return {k: float(np.median(v)) for k, v in spent.items()}


# --- the driver -----------------------------------------------------------------------------------
def worker_command(kind, workdir):
    return [sys.executable, __file__, "--worker", kind, "--workdir", str(workdir)] + sys.argv[1:]


def run_init(workdir):
    done = subprocess.run(worker_command("init", workdir))
    if done.returncode != 0:
        raise SystemExit(f"the init worker failed (exit {done.returncode})")
    return json.loads((workdir / "init.json").read_text())


def eval_points():
    return sorted(set(range(0, ARGS.iters, ARGS.eval_every)) | {ARGS.iters})


def run_interleaved(frameworks, workdir):
    """Both workers stay alive; they take turns, one segment (up to the next evaluation) at a time.

    Only one process computes at any moment, and each turn starts --pause seconds after the
    other's ended, so that spinning BLAS/OpenMP threads have gone to sleep; load from other
    processes falls on both frameworks alike. Returns the load average at each turn.
    """
    workers = {}
    for fw in frameworks:  # start one at a time: imports and warm-up do not overlap either
        workers[fw] = subprocess.Popen(worker_command(fw, workdir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)
        expect(workers[fw], fw, "ready")
    turns = []
    for point in eval_points():
        for fw in frameworks:
            time.sleep(ARGS.pause)
            turns.append({"framework": fw, "until": point, "loadavg_1min": os.getloadavg()[0]})
            workers[fw].stdin.write(f"until {point}\n")
            workers[fw].stdin.flush()
            expect(workers[fw], fw, "done")
    for fw, proc in workers.items():
        proc.stdin.write("finish\n")
        proc.stdin.close()
        if proc.wait() != 0:
            raise SystemExit(f"the {fw} worker failed (exit {proc.returncode})")
    return turns


def expect(proc, name, word):
    line = proc.stdout.readline().strip()
    if line != word:
        proc.kill()
        raise SystemExit(f"the {name} worker stopped (expected {word!r}, got {line!r}); see its error above")


def summarize(r, tokens_per_iter):
    steps = np.array(r["step_ms"])
    final = r["evals"][-1]
    return {
        "ms_per_iter": float(steps.mean()), "ms_per_iter_median": float(np.median(steps)),
        "ms_per_iter_p10": float(np.percentile(steps, 10)), "ms_per_iter_p90": float(np.percentile(steps, 90)),
        "tokens_per_s": tokens_per_iter / (steps.mean() / 1e3), "train_s": float(steps.sum() / 1e3),
        "eval_s": r["eval_s"], "peak_rss_mib": r["rss_mib"]["peak"],
        "rss_after_setup_mib": r["rss_mib"]["after_setup"], "final_train_loss": final["train"],
        "final_val_loss": final["val"], "last_iter_loss": r["train_loss_per_iter"][-1],
    }


def compare(results):
    tt, pt = results["tinytorch"], results["torch"]
    gaps = [{"iter": a["iter"], "val_gap": a["val"] - b["val"], "train_gap": a["train"] - b["train"]}
            for a, b in zip(tt["evals"], pt["evals"])]
    worst = max(abs(g["val_gap"]) for g in gaps)
    ratio = float(np.mean(tt["step_ms"]) / np.mean(pt["step_ms"]))
    final_val = tt["evals"][-1]["val"]
    median_ratio = float(np.median(tt["step_ms"]) / np.median(pt["step_ms"]))
    phase_ratio = {k: tt["phases_ms"][k] / pt["phases_ms"][k] for k in ("forward", "backward")}
    return {
        "gaps": gaps, "max_abs_val_gap": worst, "ratio_ms_per_iter": ratio,
        "ratio_median_ms_per_iter": median_ratio, "ratio_phases": phase_ratio,
        "lr_max_abs_diff": float(np.max(np.abs(np.array(tt["lr_per_iter"]) - np.array(pt["lr_per_iter"])))),
        "first_iter_loss_diff": tt["train_loss_per_iter"][0] - pt["train_loss_per_iter"][0],
        "checks": {
            f"val loss within {TARGETS['val_gap']} of PyTorch at every evaluation": worst <= TARGETS["val_gap"],
            f"TinyTorch final val loss <= {TARGETS['final_val']}": final_val <= TARGETS["final_val"],
            f"median ms/iter <= {TARGETS['ratio']}x PyTorch": median_ratio <= TARGETS["ratio"],
            f"forward <= {TARGETS['forward']}x PyTorch": phase_ratio["forward"] <= TARGETS["forward"],
            f"backward <= {TARGETS['backward']}x PyTorch": phase_ratio["backward"] <= TARGETS["backward"],
        },
    }


SUMMARY_ROWS = (("ms / iter (mean)", "ms_per_iter", "{:.2f}"), ("ms / iter (median)", "ms_per_iter_median", "{:.2f}"),
                ("tokens / s", "tokens_per_s", "{:,.0f}"), ("training time (s)", "train_s", "{:.1f}"),
                ("evaluation time (s)", "eval_s", "{:.1f}"), ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
                ("RSS after setup (MiB)", "rss_after_setup_mib", "{:.0f}"),
                ("final train loss", "final_train_loss", "{:.4f}"), ("final val loss", "final_val_loss", "{:.4f}"))


def summary_table(summary, names):
    header = ["", *names] + (["tinytorch / torch"] if len(names) == 2 else [])
    body = []
    for label, key, fmt in SUMMARY_ROWS:
        row = [label] + [fmt.format(summary[n][key]) for n in names]
        if len(names) == 2:
            row.append(f"{summary['tinytorch'][key] / summary['torch'][key]:.2f}x")
        body.append(row)
    return header, body


def curve_table(results, names, comparison):
    header = ["iter"] + [f"{n} {split}" for n in names for split in ("train", "val")]
    header += ["val gap"] if comparison else []
    body = []
    for i, e in enumerate(results[names[0]]["evals"]):
        row = [str(e["iter"])] + [f"{results[n]['evals'][i][split]:.4f}" for n in names for split in ("train", "val")]
        row += [f"{comparison['gaps'][i]['val_gap']:+.4f}"] if comparison else []
        body.append(row)
    return header, body


def print_table(title, header, body):
    """A rich table when rich is installed, else plain columns."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"\n{title}")
        for row in [header] + body:
            print("  ".join(f"{c:>22s}" if i == 0 else f"{c:>17s}" for i, c in enumerate(row)))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in body:
        table.add_row(*row)
    Console().print(table)


def print_report(summary, results, comparison, init_check):
    names = [f for f in FRAMEWORKS if f in summary]
    print_table(f"char-level GPT on tiny Shakespeare: {ARGS.iters} iters, batch {BATCH_SIZE}x{MODEL['block_size']}, "
                f"{ARGS.threads} thread(s)", *summary_table(summary, names))
    print_table(f"mean loss over {ARGS.eval_batches} evaluation batches of each split",
                *curve_table(results, names, comparison))
    worst_grad = max(init_check["grad_max_rel"].values())
    print(f"step-0 parity: loss {init_check['loss_tinytorch']:.6f} (tinytorch) vs {init_check['loss_torch']:.6f} "
          f"(torch); logits max rel diff {init_check['logits_max_rel']:.1e}; worst gradient max rel diff "
          f"{worst_grad:.1e}")
    if comparison:
        print(f"learning rates: max |difference| {comparison['lr_max_abs_diff']:.1e}; time ratio on median "
              f"ms/iter {comparison['ratio_median_ms_per_iter']:.2f}x")
        for check, ok in comparison["checks"].items():
            print(f"  {'PASS' if ok else 'FAIL'}  {check}")
    for n in names:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in results[n]["phases_ms"].items())
        print(f"{n} phases (median ms over 20 extra steps): {phases}")
    if all("families_ms" in results.get(n, {}) for n in FRAMEWORKS):
        print_table("ms per step by op family (each op call's fastest of 20 steps; PyTorch: torch.profiler's "
                    "self CPU time)",
                    *family_table(results["tinytorch"]["families_ms"], results["torch"]["families_ms"]))
    if "profile" in results.get("tinytorch", {}):
        print("tinytorch cProfile (ms per step, top functions by own time):")
        for row in results["tinytorch"]["profile"][:15]:
            print(f"  {row['own_ms_per_step']:8.3f} own  {row['cum_ms_per_step']:8.3f} cum  "
                  f"{row['calls']:7d} calls  {row['function']}")


def main():
    load_before = os.getloadavg()
    if load_before[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load_before[0]:.2f} on {os.cpu_count()} cores: timings will be noisy",
              file=sys.stderr)
    train, val, vocab_size, n_chars = encode_text(ARGS.data)
    frameworks = list(FRAMEWORKS) if ARGS.only == "both" else [ARGS.only]
    if ARGS.order == "tinytorch-first":
        frameworks.reverse()
    with tempfile.TemporaryDirectory(prefix="gpt_shakespeare-") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "train.npy", train)
        np.save(workdir / "val.npy", val)
        (workdir / "meta.json").write_text(json.dumps({"vocab_size": vocab_size}))
        init_check = run_init(workdir)
        turns = run_interleaved(frameworks, workdir)
        results = {fw: json.loads((workdir / f"{fw}.json").read_text()) for fw in frameworks}
    tokens_per_iter = BATCH_SIZE * MODEL["block_size"]
    summary = {fw: summarize(results[fw], tokens_per_iter) for fw in frameworks}
    comparison = compare(results) if len(frameworks) == 2 else None
    print_report(summary, results, comparison, init_check)
    load_after = os.getloadavg()
    torch_info = results.get("torch", {})
    machine = {
        "host": socket.gethostname(), "cpu": cpu_name(), "cores": os.cpu_count(), "threads": ARGS.threads,
        "python": sys.version.split()[0], "platform": platform.platform(), "numpy": np.__version__,
        "blas": blas_name(), "torch": torch_info.get("torch_version"), "torch_threads": torch_info.get("torch_threads"),
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    busy = max(load_before[0], load_after[0])
    if busy > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average up to {busy:.2f} on {os.cpu_count()} cores; timings are noisy")
    print(f"{machine['cpu']}, {machine['cores']} cores; numpy {machine['numpy']} ({machine['blas']}), "
          f"torch {machine['torch']}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    report = {
        "benchmark": "gpt_shakespeare", "machine": machine,
        "config": {**MODEL, "vocab_size": vocab_size, "batch_size": BATCH_SIZE, "iters": ARGS.iters,
                   "eval_every": ARGS.eval_every, "eval_batches": ARGS.eval_batches, "lr": LR, "min_lr": MIN_LR,
                   "warmup_iters": warmup_iters(), "betas": BETAS, "weight_decay": WEIGHT_DECAY,
                   "weight_decay_groups": ARGS.groups, "grad_clip": GRAD_CLIP, "dropout": 0.0, "bias": False,
                   "seed": ARGS.seed, "data": str(ARGS.data), "chars": n_chars, "train_tokens": len(train),
                   "val_tokens": len(val), "order": frameworks, "warmup_steps": ARGS.warmup,
                   "tinytorch_split": ARGS.split, "adamw_fused": ARGS.fused},
        "method": "one worker process per framework; they take turns of one evaluation interval, "
                  f"{ARGS.pause} s apart, only one computing at a time; {ARGS.warmup} warm-up steps on a "
                  "throwaway copy first; ms/iter = batch + forward + backward + clip + AdamW + scheduler "
                  "(mean over all iterations), evaluations excluded; peak RSS = ru_maxrss of the framework's "
                  "own process",
        "turns": turns, "step0_parity": init_check, "summary": summary, "comparison": comparison,
        "targets": TARGETS,
        "curves": {fw: {k: results[fw][k] for k in ("evals", "phases_ms", "rss_mib", "modules_loaded")}
                   for fw in frameworks},
        "tinytorch_profile": results.get("tinytorch", {}).get("profile"),
        "families_ms": {fw: results[fw].get("families_ms") for fw in frameworks},
        "step_ms": {fw: [round(t, 3) for t in results[fw]["step_ms"]] for fw in frameworks},
        "train_loss_per_iter": {fw: [round(t, 5) for t in results[fw]["train_loss_per_iter"]] for fw in frameworks},
    }
    if not ARGS.no_json:
        host = "".join(c if c.isalnum() or c in "-_" else "-" for c in machine["host"]) or "machine"
        threads = "" if ARGS.threads == 2 else f"-threads-{ARGS.threads}"
        split = "-split-off" if ARGS.split == "off" and ARGS.threads > 1 else ""
        fused = "" if ARGS.fused == "off" else f"-fused-{ARGS.fused}"
        path = new_result_path(ARGS.out, f"gpt_shakespeare-{host}-{dt.date.today().isoformat()}{threads}{split}{fused}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    if ARGS.worker == "init":
        init_worker(Path(ARGS.workdir))
    elif ARGS.worker:
        run_train(ARGS.worker, Path(ARGS.workdir))
    else:
        main()
