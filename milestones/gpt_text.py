"""The main job: a GPT trained on text with your own tinytorch, then sampled.

    tito train gpt [--data PATH] [--tokenizer char|bpe] [--config small] [--steps N]
                   [--device cpu|cuda] [--resume] [--out runs/gpt]
    tito sample --checkpoint runs/gpt --prompt "In the beginning"

Without --data it trains on the corpus shipped with tinytorch (1.1 MB of the King James
Bible, public domain), so it works offline on a fresh clone. The `small` preset is
nanoGPT's CPU configuration for character-level Shakespeare (4 layers, 4 heads, 128
channels, 64-token context, batch 12, AdamW, warm-up then cosine decay, clipping at 1.0).

A run directory holds everything `tito sample` needs: config.json, tokenizer.json,
model.safetensors, plus checkpoints/ (resumable, written atomically) and log.jsonl.
"""

import json
import math
import time
from pathlib import Path

import numpy as np

import tinytorch as tt
from tinytorch.data import BPETokenizer, CharTokenizer, DataLoader, Subset, TextDataset, kjv_text
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from tinytorch.training import Trainer
from tinytorch.training.checkpoint import list_checkpoints

# Model shape and training schedule per preset. `small` is nanoGPT's CPU Shakespeare run.
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=8, steps=200, lr=2e-3,
                 min_lr=2e-4, warmup=20, eval_every=100, eval_batches=8),
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, steps=2000, lr=1e-3,
                  min_lr=1e-4, warmup=100, eval_every=500, eval_batches=20),
    "medium": dict(n_layer=6, n_head=6, n_embd=192, block_size=128, batch_size=16, steps=5000, lr=1e-3,
                   min_lr=1e-4, warmup=200, eval_every=500, eval_batches=40),
}
BPE_VOCAB = 512
FILES = {"config": "config.json", "tokenizer": "tokenizer.json", "model": "model.safetensors"}


class DataError(ValueError):
    """The training text cannot be used (missing, unreadable, not UTF-8, too short)."""


def read_text(path=None):
    """The training text: a UTF-8 file, or the shipped corpus when `path` is None."""
    if path is None:
        return kjv_text()
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data {path}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"--data {path}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def build_tokenizer(kind, text):
    if kind == "char":
        return CharTokenizer(text)
    if kind == "bpe":
        return BPETokenizer().train(text, BPE_VOCAB)
    raise ValueError(f"unknown tokenizer {kind!r}: use 'char' or 'bpe'")


def load_tokenizer(path):
    kind = json.loads(Path(path).read_text(encoding="utf-8")).get("type")
    return CharTokenizer.load(path) if kind == "char" else BPETokenizer.load(path)


def next_token_loss(output, targets):
    """Cross-entropy of GPT's (logits, _) output against (B, T) next tokens."""
    logits = output[0]
    return cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def lr_schedule(optimizer, warmup, steps, min_lr):
    """Linear warm-up for `warmup` steps, then cosine decay to `min_lr` (as nanoGPT)."""
    warm = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    cosine = CosineAnnealingLR(optimizer, T_max=max(steps - warmup, 1), eta_min=min_lr)
    return SequentialLR(optimizer, [warm, cosine], milestones=[warmup])


def fixed_val_loader(dataset, batches, batch_size, seed=1234):
    """The same `batches` random windows of the validation split at every evaluation."""
    count = min(len(dataset), batches * batch_size)
    picks = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False)
    return DataLoader(Subset(dataset, np.sort(picks).tolist()), batch_size=batch_size)


def write_json(path, obj):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def train(data=None, tokenizer="char", preset="small", steps=None, device="cpu", resume=False,
          out="runs/gpt", seed=0, quiet=False, sample_tokens=300, distributed=False):
    """Train a GPT on a text; returns the results (losses, time, throughput, a sample).

    distributed=True (under `tito train gpt --nproc N`): data-parallel over the launcher's ranks, each
    with `batch_size` sequences per step; rank 0 alone writes files and prints."""
    if preset not in PRESETS:
        raise ValueError(f"unknown config {preset!r}: choose one of {', '.join(PRESETS)}")
    p = dict(PRESETS[preset], **({"steps": steps} if steps else {}))
    start = time.perf_counter()
    rank, world = 0, 1
    if distributed:  # imported here: module 11 is needed only for data-parallel runs
        import tinytorch.distributed as dist
        rank, world = _join_ranks(dist, device)
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{dist.get_local_rank()}"
    quiet = quiet or rank > 0
    text = read_text(data)
    tok = build_tokenizer(tokenizer, text)
    train_set = TextDataset(text, tok, p["block_size"], split="train", val_fraction=0.1)
    val_set = TextDataset(text, tok, p["block_size"], split="val", val_fraction=0.1)

    tt.manual_seed(seed)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=p["block_size"], n_layer=p["n_layer"],
                       n_head=p["n_head"], n_embd=p["n_embd"], dropout=0.0, bias=False)
    model = GPT(config)
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=p["lr"], betas=(0.9, 0.99))
    scheduler = lr_schedule(optimizer, p["warmup"], p["steps"], p["min_lr"])
    if world > 1:  # one shard of every epoch's shuffled order per rank; averaged gradients
        train_loader = DataLoader(train_set, batch_size=p["batch_size"],
                                  sampler=dist.DistributedSampler(train_set, seed=seed))
    else:
        train_loader = DataLoader(train_set, batch_size=p["batch_size"], shuffle=True,
                                  generator=np.random.default_rng(seed))
    val_loader = fixed_val_loader(val_set, p["eval_batches"], p["batch_size"])

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = rank == 0  # the other ranks train, and write nothing
    if writer:
        tok.save(out / FILES["tokenizer"])
        write_json(out / FILES["config"], {"gpt": config.to_dict(), "tokenizer": tokenizer, "preset": preset,
                                           "data": str(data) if data else "kjv (built in)"})
    net = model
    if world > 1:
        net = dist.DistributedDataParallel(model.to(device))  # checkpoints keep the plain model's names
    log = _EvalPrinter(quiet)
    trainer = Trainer(net, optimizer, next_token_loss, train_loader, val_loader=val_loader, scheduler=scheduler,
                      clip_grad_norm=1.0, eval_every=p["eval_every"],
                      checkpoint_dir=out / "checkpoints" if writer else None,
                      checkpoint_every=p["eval_every"] if writer else None, keep_last=2,
                      resume=resume and writer, seed=seed, quiet=quiet,
                      log_path=out / "log.jsonl" if writer else None, device=device, callbacks=[log],
                      config={"preset": preset, "tokenizer": tokenizer})
    resume_from = None
    if resume and not writer:  # rank 0 loads the newest checkpoint itself (resume=True); the others follow
        resume_from = (list_checkpoints(out / "checkpoints") or [None])[-1]
    history = trainer.fit(max_steps=p["steps"], resume_from=resume_from)
    train_seconds = time.perf_counter() - start
    if not writer:
        return {"rank": rank, "world_size": world, "steps": trainer.step}
    tt.save(model.state_dict(), out / FILES["model"])

    final = trainer.evaluate()["loss"]
    sample = generate_text(model, tok, prompt=None, max_new_tokens=sample_tokens, seed=seed, device=device)
    speeds = [r.get("tokens_per_s") for r in history.train[-50:] if r.get("tokens_per_s")]
    return {
        "preset": preset, "tokenizer": tokenizer, "vocab_size": tok.vocab_size, "steps": trainer.step,
        "final_train_loss": history.losses[-1] if history.losses else None,
        "val_loss": final, "initial_loss_estimate": math.log(tok.vocab_size),
        "seconds": round(train_seconds, 1), "tokens_per_s": round(float(np.median(speeds)), 1) if speeds else None,
        "parameters": model.num_parameters(non_embedding=False), "out": str(out), "sample": sample,
        "rank": rank, "world_size": world,
    }


def _join_ranks(dist, device):
    """(rank, world size) of this process among the ranks an MPI launcher started."""
    dist.init_process_group("nccl" if device.startswith("cuda") else "mpi")
    return dist.get_rank(), dist.get_world_size()


def run(seed=0, quiet=False):
    """The `gpt` milestone: the default `tito train gpt` run (preset small, built-in corpus)."""
    return train(seed=seed, quiet=quiet)


class _EvalPrinter:
    """Print each validation loss above the progress bar."""

    def __init__(self, quiet):
        self.quiet = quiet

    def on_eval_end(self, trainer, step, metrics):
        if not self.quiet:
            print(f"step {step}: val loss {metrics['val_loss']:.4f}")


def generate_text(model, tok, prompt=None, max_new_tokens=300, temperature=0.8, top_k=None, top_p=None,
                  seed=None, device="cpu"):
    """Continue `prompt` (default: a newline, or token 0's text) and return prompt + continuation."""
    if prompt is None:
        prompt = "\n" if _knows(tok, "\n") else tok.decode([0])
    try:
        ids = tok.encode(prompt) or [0]
    except ValueError:
        raise ValueError(f"the prompt has characters this model's tokenizer does not know: {prompt!r}") from None
    idx = tt.tensor([ids[-model.config.block_size:]], dtype=tt.int64, device=device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return tok.decode(out[0].tolist())


def _knows(tok, text):
    try:
        tok.encode(text)
        return True
    except ValueError:
        return False


def load_run(path, device="cpu"):
    """(model, tokenizer) from a run directory, or from one of its checkpoints/step_N.safetensors."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent.parent
    config_file = run_dir / FILES["config"]
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: not a run directory or checkpoint (no {config_file} found)")
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    model = GPT(GPTConfig.from_dict(saved["gpt"]))
    if path.is_dir():
        weights = tt.load(path / FILES["model"])
    else:
        from tinytorch.training.checkpoint import load_checkpoint
        weights = load_checkpoint(path)["model"]
    model.load_state_dict(weights)
    return model.to(device).eval(), load_tokenizer(run_dir / FILES["tokenizer"])
