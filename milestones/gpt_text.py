"""The main job: a GPT trained on text with your own tinytorch, then sampled.

    tito train gpt [--data PATH] [--tokenizer char|bpe] [--config small] [--steps N]
                   [--device cpu|cuda] [--out DIR] [--resume | --overwrite]
    tito sample --prompt "In the beginning"     # the newest run; --checkpoint DIR for another
    tito train gpt --init-from RUN --lora-rank R --data PATH   # LoRA fine-tuning of a finished run

Without --data it trains on the corpus shipped with tinytorch (1.1 MB of the King James
Bible, public domain), so it works offline on a fresh clone. The `small` preset is
nanoGPT's CPU configuration for character-level Shakespeare (4 layers, 4 heads, 128
channels, 64-token context, batch 12, AdamW, warm-up then cosine decay, clipping at 1.0).

Each run gets its own folder (runs/gpt, runs/gpt-2, ... or --out), holding everything `tito
sample` needs: config.json, tokenizer.json, model.safetensors, plus checkpoints/ (resumable,
written atomically) and log.jsonl. Nothing is written until the run has started (data read,
tokenizer built, model on its device), and a folder holding another run is never reused
without --resume or --overwrite, so a failed or mistaken run cannot spoil an earlier one.
"""

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np

import tinytorch as tt
from tinytorch.data import BPETokenizer, CharTokenizer, DataLoader, Subset, TextDataset, kjv_text
from tinytorch.core.tensor import from_op
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn import Module
from tinytorch.nn.functional import cross_entropy
from tinytorch.nn.module import _compare_state_dicts
from tinytorch.nn.utils import clip_grad_norm_
from tinytorch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from tinytorch.training import Trainer, cpu_count
from tinytorch.training.efficiency import peak_flops
from tinytorch.training.checkpoint import CheckpointError, ForeignCheckpointError, list_checkpoints, load_checkpoint

# Model shape and training schedule per preset. `small` is nanoGPT's CPU Shakespeare run.
PRESETS = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, batch_size=8, steps=200, lr=2e-3,
                 min_lr=2e-4, warmup=20, eval_every=100, eval_batches=8),
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, steps=2000, lr=1e-3,
                  min_lr=1e-4, warmup=100, eval_every=500, eval_batches=20),
    "medium": dict(n_layer=6, n_head=6, n_embd=192, block_size=128, batch_size=16, steps=5000, lr=1e-3,
                   min_lr=1e-4, warmup=200, eval_every=500, eval_batches=40),
}
DEFAULTS = {"preset": "small", "tokenizer": "char"}  # for a new run; a resumed run keeps its own
BPE_VOCAB = 512
VAL_FRACTION = 0.1  # the last 10% of the tokens are the validation split
FILES = {"config": "config.json", "tokenizer": "tokenizer.json", "model": "model.safetensors"}
RUNS = Path("runs")  # new runs go to runs/gpt, runs/gpt-2, ... under the current folder
RUN_NAME = "gpt"


class RunError(ValueError):
    """The run cannot start as asked (options, data, run folder, checkpoint); the message says the fix."""


class DataError(RunError):
    """The training text cannot be used (missing, unreadable, not UTF-8, empty, too short)."""


# ---------------------------------------------------------------- data and tokenizer


def read_text(path=None):
    """The training text: a UTF-8 file, or the shipped corpus when `path` is None."""
    if path is None:
        return kjv_text()
    path = Path(path)
    if path.is_dir():
        raise DataError(f"--data {path} is a folder: give a UTF-8 text file")
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; give a UTF-8 text file, or leave --data out to train on "
                        f"the built-in corpus")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"--data {path}: not UTF-8 text (byte {err.start}: {err.reason}); convert it, e.g. "
                        f"`iconv -t UTF-8`") from None
    except OSError as err:
        raise DataError(f"--data {path}: cannot read it ({err.strerror}); check its permissions") from None
    if not text:
        raise DataError(f"--data {path} is empty: give a text file of at least {min_tokens('tiny'):,} characters "
                        f"(--config tiny), or leave --data out to train on the built-in corpus")
    return text


def min_tokens(preset):
    """The shortest text (in tokens) a preset trains on: the validation split needs one full window."""
    return math.ceil((PRESETS[preset]["block_size"] + 1) / VAL_FRACTION)


def too_short(data, preset, kind, n_tokens):
    """The error for a text with fewer than min_tokens(preset) tokens: how long it must be, and what to do."""
    unit = "characters" if kind == "char" else "BPE tokens"
    fits = [p for p in PRESETS if min_tokens(p) <= n_tokens]  # the largest that fits is suggested
    if fits:
        fix = f"use --config {fits[-1]} (needs {min_tokens(fits[-1]):,}) or a longer file"
    else:
        fix = "use a longer file" + (f" (--config tiny needs {min_tokens('tiny'):,})" if preset != "tiny" else "")
    return DataError(f"--data {data} is too short: {n_tokens:,} {unit}, and --config {preset} needs at least "
                     f"{min_tokens(preset):,}; {fix}")


def text_datasets(text, tok, preset, data):
    """(train, val) windows of the preset's block size, or a DataError saying how long the text must be."""
    block = PRESETS[preset]["block_size"]
    try:
        return tuple(TextDataset(text, tok, block, split=split, val_fraction=VAL_FRACTION) for split in ("train", "val"))
    except ValueError:
        try:
            n_tokens = len(tok.encode(text))
        except ValueError:  # only a resumed run's saved tokenizer can meet new characters
            raise DataError(f"--data {data} has characters the run's tokenizer does not know: resume on the run's "
                            f"own text, or start a new run") from None
        raise too_short(data or "(built in)", preset, "char" if isinstance(tok, CharTokenizer) else "bpe",
                        n_tokens) from None


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
    return PlannedSchedule(optimizer, [warm, cosine], milestones=[warmup])


class PlannedSchedule(SequentialLR):
    """The schedule follows the run's current plan: a checkpoint restores where the run is, not how many
    steps its cosine had (a run resumed with more --steps would otherwise pass the cosine's end, where the
    rate climbs back up)."""

    def load_state_dict(self, state_dict):
        planned = self._schedulers[-1].T_max
        super().load_state_dict(state_dict)
        self._schedulers[-1].T_max = planned


def fixed_val_loader(dataset, batches, batch_size, seed=1234):
    """The same `batches` random windows of the validation split at every evaluation."""
    count = min(len(dataset), batches * batch_size)
    picks = np.random.default_rng(seed).choice(len(dataset), size=count, replace=False)
    return DataLoader(Subset(dataset, np.sort(picks).tolist()), batch_size=batch_size)


def write_json(path, obj):
    tt.atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


# ---------------------------------------------------------------- run folders


def read_run_config(run_dir):
    """The config.json of a run folder, or None when the folder holds no run."""
    path = Path(run_dir) / FILES["config"]
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        GPTConfig.from_dict(saved["gpt"])
        return saved
    except (ValueError, KeyError, TypeError):
        raise RunError(f"{path}: file is truncated or corrupt: retrain or restore it") from None


def describe_run(saved):
    return f"--config {saved.get('preset')}, --tokenizer {saved.get('tokenizer')}, data {saved.get('data')}"


def run_dirs(root=RUNS):
    """Every run folder directly under `root`."""
    root = Path(root)
    return [d for d in sorted(root.iterdir()) if (d / FILES["config"]).is_file()] if root.is_dir() else []


def newest_run(root=RUNS):
    """The run trained most recently (newest model or checkpoint), or None when `root` holds no run."""
    def last_trained(run_dir):
        files = [run_dir / FILES["config"], run_dir / FILES["model"], run_dir / ADAPTERS, *list_checkpoints(run_dir / "checkpoints")]
        return max(f.stat().st_mtime_ns for f in files if f.is_file())
    return max(run_dirs(root), key=last_trained, default=None)


def new_run_dir(root=RUNS, name=RUN_NAME):
    """runs/gpt, runs/gpt-2, ...: the first name not taken, created here (mkdir is atomic: two runs never share)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def plan_run(out, resume, overwrite):
    """(folder, its saved config) for this run; checks only, writes nothing.

    folder None: a new folder under runs/, made once the run has started. The saved config is
    the run that --resume continues or --overwrite replaces (None for a new or empty folder)."""
    if resume and overwrite:
        raise RunError("--resume and --overwrite contradict each other: choose one")
    if out is None:
        if overwrite:
            raise RunError("--overwrite needs --out: the run folder to replace")
        if not resume:
            return None, None
        out = newest_run()
        if out is None:
            raise RunError(f"--resume: no run in {RUNS}/ to continue; start one with `tito train gpt`, or pass --out")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file: give a folder for the run")
    saved = read_run_config(out) if out.is_dir() else None
    if resume:
        if saved is None:
            raise RunError(f"--resume: {out} holds no run to continue (no {FILES['config']}); drop --resume to "
                           f"start a new run")
        return out, saved
    if out.is_dir() and any(path.name != LOCK for path in out.iterdir()):
        if saved is None:
            raise RunError(f"--out {out} is a folder with other files in it, not a run: choose a new or empty folder")
        if not overwrite:
            raise RunError(f"--out {out} already holds a run ({describe_run(saved)}): pass --resume to continue it, "
                           f"--overwrite to replace it, or choose another --out (or leave --out out for a new folder)")
    return out, saved if overwrite else None


def resumed_options(out, saved, data, tokenizer, preset):
    """(data, tokenizer, preset) of the run being resumed; an option that differs from the run's is an error."""
    for flag, asked, had in (("--config", preset, saved.get("preset")), ("--tokenizer", tokenizer, saved.get("tokenizer"))):
        if asked is not None and asked != had:
            raise RunError(f"--resume: {out} was trained with {flag} {had}, not {asked}; resume with {flag} {had} "
                           f"(or leave it out), or start a new run")
    if "data_path" not in saved:  # a run saved before runs recorded their data: take --data on trust
        return data, saved.get("tokenizer"), saved.get("preset")
    had_data = saved["data_path"]
    if data is None and had_data is not None and not Path(had_data).exists():
        raise RunError(f"--resume: {out} was trained on {had_data}, which is gone (moved or renamed?): pass --data "
                       f"NEWPATH, the same text (its SHA-256 is checked), or start a new run")
    if data_moved(saved, data) and saved.get("data_sha256") is None:  # nothing to check another path's text by
        raise RunError(f"--resume: {out} was trained on {saved.get('data')}, not {data}; resume without --data, "
                       f"or start a new run")
    return (had_data if data is None else data), saved.get("tokenizer"), saved.get("preset")


def data_moved(saved, data):
    """Whether --data names another file than the one the resumed run recorded (its text may still be the same)."""
    return data is not None and "data_path" in saved and (
        saved["data_path"] is None or Path(data).resolve() != Path(saved["data_path"]))


def data_record(data):
    """How a run's config.json records its text (`data` None: the built-in corpus)."""
    return {"data": str(data) if data else "kjv (built in)", "data_path": str(Path(data).resolve()) if data else None}


def resumed_plan(out, saved, steps, seed, amp):
    """(steps, seed, amp) of the run being resumed: by default the ones it was started with (an option a run
    saved before runs recorded them does not hold is taken as given). --steps may change the plan: the
    learning rate then decays over the new count from where the run is, as nanoGPT computes it from the step
    and its settings (see PlannedSchedule). Another --seed or --amp is an error."""
    for key, asked in (("seed", seed), ("amp", amp)):
        if key in saved and asked is not None and asked != saved[key]:
            had = "off" if saved[key] is None else saved[key]
            raise RunError(f"--resume: {out} was started with --{key} {had}, not {asked}; resume without --{key}, "
                           f"or start a new run")
    return steps if steps is not None else saved.get("steps"), saved.get("seed", seed), saved.get("amp", amp)


def text_sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def checkpoint_to_resume(out, saved, model):
    """(path, step) of the newest readable checkpoint of this run, or None (no checkpoint yet: it starts over from
    step 0).

    `model` is what the Trainer saves (for a LoRA run, its adapters alone). Damaged checkpoints are skipped
    with a warning; one of another run (other run id or shapes, e.g. left behind in a reused folder) is an
    error, since loading it would train the wrong model."""
    own = model.state_dict()
    paths = list_checkpoints(Path(out) / "checkpoints")

    def read(path):  # the checks run before the warning says the run resumes from `path`
        try:
            state = run_checkpoint(path)
        except ForeignCheckpointError as err:  # not damage: a file someone put there, which the run would overwrite
            raise RunError(f"--resume: {err}; move it out of {path.parent}, or start a new run") from None
        owner = (state.get("config") or {}).get("run")
        theirs = state["model"]
        ours = saved.get("run") is not None and owner == saved["run"]
        mismatch = weights_mismatch(theirs, own)
        if mismatch and ours:  # this run's own file, in a layout this code does not write
            raise RunError(f"--resume: {path} is this run's, but holds {len(theirs)} tensors where the model saves "
                           f"{len(own)} ({mismatch}){_layout_hint(theirs, own)}; start a new run (or resume it "
                           f"with the TinyTorch that wrote it)")
        if mismatch or (saved.get("run") is not None and not ours):
            raise RunError(f"--resume: {path} belongs to another run, not to {out} ({describe_run(saved)}"
                           f"{'; ' + mismatch if mismatch else ''}); move it out of {path.parent}, or start a new run")
        return (state.get("trainer") or {}).get("step", 0)  # a file without it is refused when the Trainer loads it

    found = first_readable(paths[::-1], read, "resuming")
    if found is not None:
        return found
    if paths:
        raise RunError(f"--resume: every checkpoint in {Path(out) / 'checkpoints'} is truncated or corrupt "
                       f"({len(paths)} tried): restore one, or start a new run")
    return None


def run_checkpoint(path):
    """The state in checkpoint `path`: CheckpointError if it is damaged, ForeignCheckpointError if it is whole but
    not a checkpoint of a run (no model weights in it)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ForeignCheckpointError(f"{path} is not a checkpoint of a `tito train gpt` run: it has no 'model' entries")
    return state


def first_readable(candidates, read, doing, damage=CheckpointError):
    """(path, read(path)) for the first of `candidates` (newest first) that `read` reads without a `damage`
    error, or None if each one is damaged. Skipped files are named in a warning that says which file the run
    is `doing` (e.g. "resuming") from; any other error of `read` stops the search."""
    damaged = []
    for path in candidates:
        try:
            value = read(path)
        except damage:
            damaged.append(path.name)
            continue
        if damaged:
            print(f"warning: skipped truncated or corrupt {', '.join(damaged)}; {doing} from {path.name}",
                  file=sys.stderr)
        return path, value
    return None


def weights_mismatch(theirs, ours):
    """What differs between a file's tensors and the model's ({name: tensor} each), in words; None if nothing."""
    missing, extra, misshaped = _compare_state_dicts(ours, theirs)  # module 03's check of load_state_dict
    if missing:
        return f"it lacks {len(missing)} of the model's tensors, e.g. {missing[0]}"
    if extra:
        return f"it has {len(extra)} tensors the model lacks, e.g. {extra[0]}"
    if misshaped:
        name, got, want = misshaped[0]
        return f"parameter {name} has shape {got} in the file, {want} in the model"
    return None


def _layout_hint(theirs, shapes):
    """Why a run's own checkpoint may not fit: a LoRA checkpoint from before adapters-only checkpoints."""
    if set(shapes) < set(theirs):
        return (" (the whole model: a LoRA run's checkpoints from before they kept the adapters alone, whose "
                "adapters are in it)")
    return ""


LOCK = ".lock"  # held by the run writing the folder (see lock_run_dir)


def clear_run(out):
    """Remove the files of the run in `out` that --overwrite replaces (other files stay)."""
    for name in [*FILES.values(), "log.jsonl", ADAPTERS, BASE_COPY]:  # a LoRA run's too: sample would load them
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


# ---------------------------------------------------------------- LoRA fine-tuning of a finished run (module 12)

LORA_TARGETS = ("attn.c_attn", "attn.c_proj")  # attention's qkv and output projections, as in the LoRA paper
ADAPTERS = "adapters.safetensors"
BASE_COPY = "base_model.safetensors"  # a LoRA run's own hard link (or copy) of its base run's model file


def check_lora(init_from, lora_rank, distributed=False, zero=None):
    """RunError for LoRA options that cannot run (checked before anything starts)."""
    if lora_rank is not None and init_from is None:
        raise RunError("--lora-rank needs --init-from RUN: the finished run whose model the adapters fine-tune")
    if init_from is not None and lora_rank is None:
        raise RunError("--init-from needs --lora-rank R (e.g. 8): only LoRA fine-tuning of a run is supported")
    if lora_rank is not None and lora_rank < 1:
        raise RunError(f"--lora-rank must be at least 1, got {lora_rank}")
    if init_from is not None and (distributed or zero is not None):
        raise RunError("--init-from with --nproc or --zero is not supported: LoRA runs train in one process; "
                       "leave out --nproc and --zero")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(st):
    """Which file, with which bytes, an os.stat result names: a file rewritten atomically (tt.save) is a new
    inode, one written in place has a new size or modification time."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class WeightsRead(NamedTuple):
    """A weights file read once (read_weights): its bytes, their SHA-256, and the file's identity while it was
    read (None if it changed meanwhile), by which a later step checks a path still holds these bytes."""
    path: Path
    data: bytes
    sha256: str
    identity: tuple | None


def read_weights(path):
    """The file at `path` read once, through one open file, and hashed: what is loaded is what was hashed."""
    with open(path, "rb") as f:
        before = file_identity(os.fstat(f.fileno()))
        data = f.read()
        after = file_identity(os.fstat(f.fileno()))
    return WeightsRead(Path(path), data, hashlib.sha256(data).hexdigest(), before if before == after else None)


def base_run(init_from):
    """(folder, saved config) of the finished run --init-from names, or a RunError."""
    base = Path(init_from)
    saved = read_run_config(base) if base.is_dir() else None
    if saved is not None and "lora" in saved:  # before the model file check: a LoRA run has none
        raise RunError(f"--init-from {base} is itself a LoRA run: fine-tune its base run, {saved['lora']['base']}")
    if saved is None or not (base / FILES["model"]).is_file():
        raise RunError(f"--init-from {base} is not a finished run (it needs {FILES['config']} and {FILES['model']}): "
                       f"pass a run folder whose `tito train gpt` completed")
    return base, saved


def unknown_characters(tok, text, data):
    """A DataError naming the characters of `text` that the base run's tokenizer cannot encode, or None."""
    if _knows(tok, text):
        return None
    missing = sorted(c for c in set(text) if not _knows(tok, c))
    return DataError(f"--data {data} has characters the base run's tokenizer lacks: {''.join(missing)!r}; remove "
                     f"them, or train a new base run on text that has them")


def base_weights(lora, run_dir=None):
    """The base weights of a LoRA run, read (read_weights) from the run's own link to them (BASE_COPY in `run_dir`,
    made when it started), else from the base run's model file; only a file whose SHA-256 is the one the run
    recorded."""
    base_file = Path(lora["base"]) / FILES["model"]
    for path in ([Path(run_dir) / BASE_COPY] if run_dir is not None else []) + [base_file]:
        if path.is_file() and (read := read_weights(path)).sha256 == lora["base_sha256"]:
            return read
    raise RunError(f"the base model {base_file} changed or is gone since this LoRA run was trained: restore it "
                   f"(SHA-256 {lora['base_sha256'][:12]}...), or fine-tune again")


def keep_base(lora, out, read=None):
    """Give LoRA run `out` its own hard link to the base weights (a copy where the file system has no links), unless
    it has one. The base run may then be resumed or --overwrite-n: it writes a new model file (atomically: a new
    inode) and the link keeps the weights this run was trained on, with no second copy on disk until then.

    `read`: the base run's model file as this run read and hashed it (read_weights). The link (or the file copied)
    is then checked to be that file, unchanged since (file_identity), instead of hashing it again; only when that
    check fails, or without `read`, are the kept bytes hashed."""
    own = out / BASE_COPY
    if own.is_file():
        return
    source = Path(lora["base"]) / FILES["model"]
    seen = read.identity if read is not None and read.path == source else None  # (read holds the recorded hash)
    try:
        os.link(source, own)
    except OSError:  # e.g. another file system: a copy, through one open file, checked before and after copying
        with open(source, "rb") as f:
            before = file_identity(os.fstat(f.fileno()))
            tt.atomic_write(own, lambda tmp: _copy_into(f, tmp))
            same = seen is not None and before == seen == file_identity(os.fstat(f.fileno()))
    else:  # the link is the file read (same inode), unchanged since: the bytes hashed
        same = seen is not None and file_identity(os.stat(own)) == seen
    if not same and file_sha256(own) != lora["base_sha256"]:  # the base run was rewritten since this run read it
        own.unlink()
        raise RunError(f"the base model {source} changed while this LoRA run started: start it again")


def _copy_into(f, path):
    with open(path, "wb") as out:
        shutil.copyfileobj(f, out)


def lora_model(lora, config, run_dir=None, base=None):
    """The GPT of LoRA run `run_dir` (None: one not yet started) with LoRA injected, adapters at their init: training
    moves them, `load_run` loads a run's saved ones. Its base weights are `base` (read_weights of a file whose
    SHA-256 is the recorded one), else read by base_weights, which checks that; they are loaded on the CPU."""
    from tinytorch.finetune import inject_lora  # module 12: needed only for LoRA runs

    base = base_weights(lora, run_dir) if base is None else base
    weights = io.BytesIO(base.data)
    weights.name = str(base.path)  # tt.load's errors name the file
    model = GPT(config)
    model.load_state_dict(tt.load(weights))
    try:
        inject_lora(model, lora["targets"], rank=lora["rank"], alpha=lora["alpha"])
    except ValueError as err:  # a target that names no Linear: the message lists them
        raise RunError(f"--lora-targets {','.join(lora['targets'])}: {err}") from None
    return model


def merged_gpt(model):
    """`model` made a plain GPT again, in place (PEFT's merge_and_unload): each LoRA update is folded into its base
    weight and the LoRALinear replaced by that Linear, so sampling pays for no adapter branch, the state_dict has
    the base run's names, and no second copy of the weights is made. The adapters are gone afterwards."""
    from tinytorch.finetune import LoRALinear, merge_lora

    merge_lora(model)
    modules = dict(model.named_modules())
    for name, module in list(modules.items()):
        if isinstance(module, LoRALinear):
            parent, _, child = name.rpartition(".")
            setattr(modules[parent], child, module.base)
    return model


class _AdaptersOnly(Module):
    """A LoRA model as the Trainer sees it: the same forward and parameters, but a state_dict (what checkpoints
    save, and resume with) of the trainable adapters alone, as in the run's final adapters file; the frozen base
    stays in the base run's model file (linked as BASE_COPY), which the run checks by SHA-256. Loading checks names and shapes
    (module 12's load_adapter_state_dict)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def state_dict(self):
        from tinytorch.finetune import adapter_state_dict

        return {name: p.detach() for name, p in adapter_state_dict(self.model).items()}

    def load_state_dict(self, state_dict):  # always strict: every adapter, no other name, the run's shapes
        from tinytorch.finetune import load_adapter_state_dict

        return load_adapter_state_dict(self.model, state_dict, source="checkpoint")


# ---------------------------------------------------------------- training


def train(data=None, tokenizer=None, preset=None, steps=None, device="cpu", resume=False, out=None, seed=None,
          quiet=False, sample_tokens=300, distributed=False, overwrite=False, peak_tflops=None, zero=None,
          checkpoint_blocks=False, amp=None, init_from=None, lora_rank=None, lora_alpha=16, lora_targets=None,
          threads=None):
    """Train a GPT on a text; returns the results (losses, time, throughput, a sample, the run folder).

    out=None: a new folder runs/gpt, runs/gpt-2, ... (with resume: the newest run). tokenizer, preset,
    steps, seed (0) and amp default to char, small and the preset's for a new run, and to the run's own
    when resuming (asking for others is an error).
    distributed=True (under `tito train gpt --nproc N`): data-parallel over the launcher's ranks, each
    with `batch_size` sequences per step; rank 0 alone writes files and prints.
    peak_tflops: the device's peak for the MFU (default: its data sheet's, or a measurement on a CPU).
    zero (with distributed): 1 shards the optimizer state (ZeroRedundancyOptimizer inside DDP), 2 also the
    gradients and 3 also the weights (FullyShardedDataParallel over the blocks); checkpoints stay whole.
    checkpoint_blocks: keep only each block's input and recompute the block in backward (module 13).
    amp: "bf16" or "fp16" trains under autocast (module 10; fp16 with a GradScaler); weights, gradients,
    optimizer state and checkpoints stay float32.
    init_from + lora_rank: LoRA-fine-tune that finished run's model (its config and tokenizer; base frozen) into a
    new run that saves the adapters alone, the base model file's SHA-256 and a hard link to that file (module 12).
    threads: how many CPU threads share each step's batch (module 07's ThreadedStep) in a one-process run on
    the CPU; by default 2 where that pays (see step_threads), else 1."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise RunError(f"--threads must be at least 1, got {threads}")
    check_parallel(zero, checkpoint_blocks, distributed)
    check_lora(init_from, lora_rank, distributed, zero)
    for flag, value, known in (("--config", preset, PRESETS), ("--tokenizer", tokenizer, ("char", "bpe"))):
        if value is not None and value not in known:
            raise RunError(f"{flag} {value!r}: choose one of {', '.join(known)}")
    if steps is not None and steps < 1:
        raise RunError(f"--steps must be at least 1, got {steps}")
    if peak_tflops is not None and not peak_tflops > 0:
        raise RunError(f"--peak-tflops must be positive, got {peak_tflops}: give the device's peak in TFLOPS")
    out, saved = plan_run(out, resume, overwrite)
    lora, base_dir, base = None, None, None
    if resume:
        if init_from is not None:
            raise RunError("--resume continues a run with its own base and adapters: leave out --init-from and --lora-*")
        data, tokenizer, preset = resumed_options(out, saved, data, tokenizer, preset)
        steps, seed, amp = resumed_plan(out, saved, steps, seed, amp)
        lora = saved.get("lora")
    elif init_from is not None:
        base_dir, base_saved = base_run(init_from)
        for flag, asked, had in (("--config", preset, base_saved.get("preset")),
                                 ("--tokenizer", tokenizer, base_saved.get("tokenizer"))):
            if asked is not None and asked != had:
                raise RunError(f"--init-from {base_dir} fixes {flag} {had}: leave {flag} out")
        tokenizer, preset = base_saved.get("tokenizer"), base_saved.get("preset")
        base = read_weights(base_dir.resolve() / FILES["model"])  # read and hashed once: loaded, then linked
        if base.identity is None:
            raise RunError(f"the base model {base.path} changed while this LoRA run read it: start it again")
        lora = {"base": str(base.path.parent), "base_sha256": base.sha256,
                "rank": lora_rank, "alpha": lora_alpha, "targets": list(lora_targets or LORA_TARGETS)}
    seed = 0 if seed is None else seed
    amp_block, scaler = mixed_precision(amp, device, zero)
    tokenizer, preset = tokenizer or DEFAULTS["tokenizer"], preset or DEFAULTS["preset"]
    p = dict(PRESETS[preset], **({"steps": steps} if steps else {}))
    start = time.perf_counter()
    rank, world = 0, 1
    if distributed:  # imported here: module 11 is needed only for data-parallel runs
        import tinytorch.distributed as dist
        rank, world = _join_ranks(dist, device)
    if device.startswith("cuda") and world > 1:
        device = str(dist.rank_device())  # module 11 decides which GPU a rank drives
    quiet = quiet or rank > 0
    text = read_text(data)
    moved = resume and data_moved(saved, data)  # accepted when its text is the run's: the run records the new path
    if resume and saved.get("data_sha256") not in (None, text_sha256(text)):
        if moved:
            raise RunError(f"--resume: {out} was trained on {saved.get('data')}, not {data} (another text): resume "
                           f"on the run's own text, or start a new run")
        raise RunError(f"--resume: {data or 'the built-in corpus'} changed since {out} started; restore it, or start "
                       f"a new run")
    tok = _run_tokenizer(out if resume else base_dir) if resume or lora else build_tokenizer(tokenizer, text)
    unknown = unknown_characters(tok, text, data) if lora and not resume else None
    if unknown:
        raise unknown
    train_set, val_set = text_datasets(text, tok, preset, data)

    tt.manual_seed(seed)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=p["block_size"], n_layer=p["n_layer"],
                       n_head=p["n_head"], n_embd=p["n_embd"], dropout=0.0, bias=False,
                       checkpoint_blocks=checkpoint_blocks)
    if lora:  # the base run's shape and weights, with LoRA injected (A seeded above, B zero)
        config = GPTConfig.from_dict(dict((saved if resume else base_saved)["gpt"], checkpoint_blocks=checkpoint_blocks))
        base = base_weights(lora, out) if resume else base  # resumed: the run's link (or its base run's file)
        model = lora_model(lora, config, base=base)
        base = base._replace(data=None)  # the weights are in the model; keep_base needs which file it was
    else:
        model = GPT(config)
    try:  # the device is checked here, before anything is written
        model.to(device)
    except (RuntimeError, ValueError) as err:
        raise RunError(f"--device {device}: {err}") from None
    flops_per_token = model.estimate_flops()  # before sharding: ZeRO-3 leaves the model's own weights empty
    net, optimizer = parallel_model(model, world, zero, p["lr"])
    if lora:  # checkpoints keep the adapters alone, as the final adapters file does (LoRA runs in one process)
        net = _AdaptersOnly(net)
    scheduler = lr_schedule(optimizer, p["warmup"], p["steps"], p["min_lr"])
    if world > 1:  # one shard of every epoch's shuffled order per rank; averaged gradients
        train_loader = DataLoader(train_set, batch_size=p["batch_size"],
                                  sampler=dist.DistributedSampler(train_set, seed=seed))
    else:
        train_loader = DataLoader(train_set, batch_size=p["batch_size"], shuffle=True,
                                  generator=np.random.default_rng(seed))
    val_loader = fixed_val_loader(val_set, p["eval_batches"], p["batch_size"])

    # The run has started: from here on it writes, into its own folder.
    writer = rank == 0  # the other ranks train, and write nothing
    run_id = saved.get("run") if resume else uuid.uuid4().hex
    run_lock = None  # rank 0 holds the folder's lock until train returns
    if writer and resume:
        run_lock = lock_run_dir(out, saved)
    try:
        resume_from, done = (checkpoint_to_resume(out, saved, net) if resume else None) or (None, 0)  # under the lock
        if p["steps"] < done:  # checked before anything is written: a shorter plan cannot undo steps
            raise RunError(f"--resume: {out} is already at step {done}: pass --steps above {done} to train further "
                           f"(or sample it: `tito sample --checkpoint {out}`)")
        if writer and resume:  # a new plan, or the text's new path: the next --resume keeps it
            now = dict(saved, steps=p["steps"], **(data_record(data) if moved else {}))
            if now != saved:
                write_json(out / FILES["config"], now)
        if writer and not resume:
            out, run_lock = _start_run_dir(out, saved)
            tok.save(out / FILES["tokenizer"])
            write_json(out / FILES["config"], {
                "gpt": config.to_dict(), "tokenizer": tokenizer, "preset": preset, "run": run_id,
                **data_record(data), "data_sha256": text_sha256(text),
                "steps": p["steps"], "seed": seed, "amp": amp,  # what --resume continues with
                **({"lora": lora} if lora else {})})
        if writer and lora:  # its own link to the base weights, made once (a LoRA run from before gets one here)
            keep_base(lora, out, base)  # checked against the file read above, not hashed again
        log = _EvalPrinter(quiet)
        peak, peak_source = peak_flops(device, amp or "fp32", peak_tflops)  # tensor cores' peak under --amp
        # Under ZeRO, saving is collective (the shards are gathered): every rank takes part, rank 0 writes.
        saves = writer or zero is not None
        trainer = _RankTrainer(net, optimizer, next_token_loss, train_loader, val_loader=val_loader, scheduler=scheduler,
                               clip_grad_norm=None if zero in (2, 3) else 1.0,  # ZeRO-2/3: the optimizer clips (below)
                               eval_every=p["eval_every"], checkpoint_dir=out / "checkpoints" if saves else None,
                               checkpoint_every=p["eval_every"] if saves else None, keep_last=2,
                               seed=seed, quiet=quiet, log_path=out / "log.jsonl" if writer else None, device=device,
                               callbacks=[log], config={"preset": preset, "tokenizer": tokenizer, "run": run_id},
                               flops_per_token=flops_per_token, peak_flops=peak, writer=writer,
                               threads=step_threads(threads, device, world, zero, p))
        if scaler is not None:
            use_grad_scaler(trainer, scaler)
        with amp_block:  # the forward passes (and evaluations) under autocast; backward follows their dtypes
            history = trainer.fit(max_steps=p["steps"], resume_from=resume_from)
        train_seconds = time.perf_counter() - start
        if zero in (2, 3):  # the trained weights are in the shards: gather them into a plain model on rank 0
            weights = net.state_dict()
            if writer:
                model = GPT(config)
                model.load_state_dict(weights)
                trainer.model = model.to(device)  # the final evaluation runs on rank 0 alone
        if not writer:
            return {"rank": rank, "world_size": world, "steps": trainer.step}
        if lora:  # the adapters alone; the base stays in its own run
            from tinytorch.finetune import save_adapters
            save_adapters(model, out / ADAPTERS)
        else:
            tt.save(model.state_dict(), out / FILES["model"])

        final = trainer.evaluate()["loss"]
        parameters = model.num_parameters(non_embedding=False)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # counted before the merge drops them
        sample = generate_text(merged_gpt(model) if lora else model, tok, prompt=None, max_new_tokens=sample_tokens,
                               seed=seed, device=device)
        return {
            "preset": preset, "tokenizer": tokenizer, "vocab_size": tok.vocab_size, "steps": trainer.step,
            "final_train_loss": history.losses[-1] if history.losses else None,
            "val_loss": final, "initial_loss_estimate": math.log(tok.vocab_size),
            "seconds": round(train_seconds, 1), **speed_report(history.summary(), world, peak, peak_source),
            "parameters": parameters, "out": str(out), "sample": sample,
            "rank": rank, "world_size": world, "parallel": describe_parallel(world, zero, checkpoint_blocks),
            "precision": amp or "fp32", "threads": trainer.threads,
            "trainable_parameters": trainable,
            **({"lora": {**lora, "adapters_bytes": (out / ADAPTERS).stat().st_size,
                         "base_bytes": (out / BASE_COPY).stat().st_size}} if lora else {}),
        }
    finally:  # also on an error: a retry in this process must find the folder free
        if run_lock is not None:
            run_lock.close()


def check_parallel(zero, checkpoint_blocks, distributed):
    """RunError for a data-parallel setting that cannot run (checked before any rank starts).

    --zero works at any world size (one process is a group of one, as in PyTorch); DDP (no --zero, or
    --zero 1) over several ranks cannot yet recompute blocks: its gradient signal misses them."""
    if zero is not None and zero not in (1, 2, 3):
        raise RunError(f"--zero {zero}: choose 1 (optimizer state), 2 (+ gradients) or 3 (+ weights)")
    if checkpoint_blocks and (zero == 1 or (distributed and zero is None)):
        raise RunError(f"--checkpoint-blocks {'with --zero 1' if zero == 1 else 'with --nproc'} needs --zero 2 or "
                       f"3: DDP's gradient signal misses the blocks recomputed in backward; use --zero 3 (or 2)")


def describe_parallel(world, zero, checkpoint_blocks):
    """One line for the run's summary: how the ranks share the work, and whether blocks are recomputed."""
    kind = ("one process" if world == 1 and zero is None else
            {None: "DDP", 1: "ZeRO-1 (DDP, optimizer state sharded)", 2: "ZeRO-2 (FSDP, gradients and optimizer "
             "state sharded)", 3: "ZeRO-3 (FSDP, weights, gradients and optimizer state sharded)"}[zero])
    return kind + (", checkpointed blocks" if checkpoint_blocks else "")


# Splitting a step's batch over two threads pays only when each thread's arrays are large enough for
# NumPy's kernels to outlast the hand-overs of Python's lock between the threads. On 2 cores, tito
# train gpt's tokens/s: small preset (6 x 64 rows x 128 wide = 48 Ki floats per thread) +15 %, tiny
# (4 x 32 x 64 = 8 Ki) 2.4x slower (bench/README.md).
SPLIT_MIN_FLOATS = 32 * 1024


def step_threads(threads, device, world, zero, p):
    """How many threads split each step's batch: `threads` in a one-process CPU run, by default 2 where
    the process may use 2 CPUs and each half batch is large enough (SPLIT_MIN_FLOATS), else 1; always 1
    on a GPU or with ranks, where the step is already spread out, and under --zero, whose wrapper (DDP,
    FSDP) holds the model's gradients and parameters itself."""
    if world > 1 or zero is not None or not str(device).startswith("cpu"):
        return 1
    if threads is not None:
        return threads
    half_batch = p["batch_size"] // 2 * p["block_size"] * p["n_embd"]
    return 2 if cpu_count() >= 2 and half_batch >= SPLIT_MIN_FLOATS else 1


def parallel_model(model, world, zero, lr):
    """(the model to train, its optimizer): AdamW with GPT's decay groups (matmul weights decay, the rest not).

    One process without zero: the model itself. Otherwise DDP (zero None), DDP with ZeroRedundancyOptimizer
    (1), or FullyShardedDataParallel over the blocks with ShardedOptimizer (2, 3), which keeps the two groups;
    in one process, over a group of one."""
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=lr, betas=(0.9, 0.99))
    if world == 1 and zero is None:
        return model, optimizer
    import tinytorch.distributed as dist
    from tinytorch.optim import AdamW

    group = dist.SingleProcessGroup() if world == 1 else None  # None: the launcher's ranks
    groups, settings = [dict(g) for g in optimizer.param_groups], dict(lr=lr, betas=(0.9, 0.99))
    if zero in (2, 3):
        net = dist.FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=zero, process_group=group)

        class ClippedShardedOptimizer(dist.ShardedOptimizer):
            """The Trainer's clipping reads net.parameters(), one rank's shards; this clips over all ranks."""

            def step(self, closure=None):
                net.clip_grad_norm_(1.0)
                return super().step(closure)
        return net, ClippedShardedOptimizer(net, groups, AdamW, **settings)
    net = dist.DistributedDataParallel(model, process_group=group)  # checkpoints keep the plain model's names
    return net, dist.ZeroRedundancyOptimizer(groups, AdamW, process_group=group, **settings) if zero == 1 else optimizer


# ---------------------------------------------------------------- mixed precision (module 10)

AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def mixed_precision(amp, device, zero=None):
    """(the autocast block to train in, a GradScaler or None) for --amp; amp=None: float32 throughout.

    fp16 needs loss scaling (its small gradients flush to zero); bf16 has float32's range and does not."""
    if amp is None:
        return contextlib.nullcontext(), None
    if amp not in AMP_DTYPES:
        raise RunError(f"--amp {amp!r}: choose bf16 or fp16 (or leave it out to train in float32)")
    kind = str(device).split(":")[0]
    if amp == "bf16" and kind == "cuda":
        raise RunError(f"--amp bf16 on {device}: CuPy has no bfloat16 arrays; use --amp fp16 on cuda")
    if amp == "fp16" and zero is not None:
        raise RunError("--amp fp16 with --zero: loss scaling over sharded gradients is not supported; "
                       "leave out --zero, or use --amp bf16 on cpu")
    try:
        block = tt.autocast(kind, dtype=AMP_DTYPES[amp])
    except (ImportError, TypeError, ValueError) as err:  # e.g. bf16 without ml_dtypes: the message says what to install
        raise RunError(f"--amp {amp}: {err}") from None
    return block, (tt.GradScaler(kind) if amp == "fp16" else None)


def use_grad_scaler(trainer, scaler):
    """Train with dynamic loss scaling: the Trainer's loss backpropagates scale × its gradient (its value, which
    the log shows, stays the true loss); the optimizer unscales, clips, skips steps with inf/NaN, adapts the scale."""
    loss_fn = trainer.loss_fn

    def scaled_loss(output, target):
        loss = loss_fn(output, target)
        scale = scaler.get_scale()  # read now: update() after this step's optimizer step changes it
        return from_op(loss.data, loss.device, (loss,), lambda g: (g * scale,))
    trainer.loss_fn = scaled_loss
    trainer.optimizer = _ScaledOptimizer(trainer.optimizer, scaler, trainer.model.parameters(), trainer.clip_grad_norm)
    trainer.clip_grad_norm = None  # clipping must see unscaled gradients: the optimizer does it


class _ScaledOptimizer:
    """An optimizer behind a GradScaler; its checkpoint holds the scaler's state too."""

    def __init__(self, optimizer, scaler, parameters, max_norm):
        self.optimizer, self.scaler, self.parameters, self.max_norm = optimizer, scaler, list(parameters), max_norm

    @property
    def param_groups(self):  # the scheduler and the log read and set the learning rate here
        return self.optimizer.param_groups

    def zero_grad(self):
        self.optimizer.zero_grad()

    def step(self):
        self.scaler.unscale_(self.optimizer)
        if self.max_norm is not None:
            clip_grad_norm_(self.parameters, self.max_norm)
        self.scaler.step(self.optimizer)  # skipped when a gradient is inf or NaN
        self.scaler.update()

    def state_dict(self):
        return {**self.optimizer.state_dict(), "grad_scaler": self.scaler.state_dict()}

    def load_state_dict(self, state):
        state = dict(state)
        scaler_state = state.pop("grad_scaler", None)  # absent in a checkpoint of a run without fp16
        self.optimizer.load_state_dict(state)
        if scaler_state:
            self.scaler.load_state_dict(scaler_state)


class _RankTrainer(Trainer):
    """A Trainer of which only the writer rank writes checkpoints; the others only take part in building them."""

    def __init__(self, *args, writer=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.writer = writer

    def save_checkpoint(self, path=None):
        if self.writer:
            return super().save_checkpoint(path)
        self.state_dict()  # the collective part (gathering shards); rank 0 writes the file
        self._saved_step = self.step
        return None


def speed_report(summary, world, peak, peak_source):
    """Throughput of all ranks as integers (the mean over the whole run: evaluations and checkpoints
    included; the median step apart), MFU per device, peak memory (rank 0's)."""
    def total(key):
        return round(summary[key] * world) if summary.get(key) else None

    mfu = summary.get("mfu")
    return {"tokens_per_s": total("tokens_per_s_mean"), "tokens_per_s_median": total("tokens_per_s_median"),
            "train_seconds": round(summary["seconds"], 1), "mfu": None if mfu is None else float(f"{mfu:.4g}"),
            "peak": f"{peak / 1e12:.3g} TFLOPS ({peak_source})" if peak else peak_source, "peak_memory_mib": round(summary["peak_memory_mib"], 1),
            "memory": summary["memory_kind"]}


def _start_run_dir(out, saved):
    """(the run's folder, its lock): made now that the run has started. `saved`: the config of the run that
    --overwrite replaces (None for a new run), cleared only at this point, under the lock."""
    out = new_run_dir() if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(out, saved)
    if saved is not None:  # --overwrite: the run it replaces
        clear_run(out)
    return out, lock


def lock_run_dir(out, saved):
    """An exclusive lock on `out` for as long as the returned file stays open (it closes when the process ends,
    however it ends): two runs writing one folder would mix their checkpoints and logs. RunError if another run
    holds it, or if the folder no longer holds the run `saved` (its config as this run's checks read it, None
    for no run): another run wrote it between those checks and the lock."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock
        return None
    handle = open(out / LOCK, "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(f"--out {out} is being written by another `tito train gpt` run (it holds {out / LOCK}): "
                       f"wait for it to end, or choose another --out") from None
    except OSError as err:  # a file system without locks (some network mounts): train, but say so
        handle.close()
        print(f"warning: cannot lock {out / LOCK} ({err.strerror or err}); do not start a second run on "
              f"{out} while this one trains", file=sys.stderr)
        return None
    now = read_run_config(out)
    if (now or {}).get("run") != (saved or {}).get("run"):
        handle.close()
        raise RunError(f"--out {out} changed while this run was starting (another run wrote "
                       f"{'it' if now is None else describe_run(now)}): check it, then start again")
    return handle


def _run_tokenizer(out):
    """The tokenizer a resumed (or LoRA's base) run was trained with (rebuilding it could give other ids)."""
    path = out / FILES["tokenizer"]
    try:
        return load_tokenizer(path)
    except (OSError, ValueError, KeyError, TypeError):
        raise RunError(f"{path}: file is missing, truncated or corrupt: restore it, or start a new run") from None


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
        raise ValueError(f"the prompt has characters this model's tokenizer does not know: {prompt!r}; use only "
                         f"characters of the text it was trained on") from None
    idx = tt.tensor([ids[-model.config.block_size:]], dtype=tt.int64, device=device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    return tok.decode(out[0].tolist())


def _knows(tok, text):
    try:
        tok.encode(text)
        return True
    except ValueError:
        return False


def load_run(path=None, device="cpu"):
    """(model, tokenizer) from a run folder (default: the newest run), or from one of its checkpoints."""
    if path is None:
        path = newest_run()
        if path is None:
            raise RunError(f"no run in {RUNS}/ to sample from: train one with `tito train gpt`, or pass --checkpoint")
    path = Path(path)
    if not path.exists():
        raise RunError(f"--checkpoint {path}: no such path; pass a run folder (e.g. {RUNS / RUN_NAME}) or one of "
                       f"its checkpoints")
    run_dir = _run_dir_of(path)
    saved = read_run_config(run_dir)
    if saved is None:
        raise RunError(f"--checkpoint {path} is not a run directory or one of its checkpoints (no {FILES['config']} "
                       f"in {run_dir}): pass a folder written by `tito train gpt`")
    if path.is_file() and path.name not in (FILES["model"], ADAPTERS) and path.parent.name != "checkpoints":
        raise RunError(f"--checkpoint {path} is neither the run's model nor one of its checkpoints: pass the run "
                       f"folder ({run_dir}) or a checkpoint")
    lora = saved.get("lora")  # a LoRA run: the base run's model plus this run's adapters, merged
    candidates = [path] if path.is_file() else weights_newest_first(run_dir, lora)
    if not candidates:
        raise RunError(f"{run_dir} has no model yet (its training stopped before saving one): continue it with "
                       f"`tito train gpt --resume --out {run_dir}`")
    weights_file, weights = newest_readable_weights(candidates, run_dir)
    config = GPTConfig.from_dict(saved["gpt"])
    model = lora_model(lora, config, run_dir) if lora else GPT(config)
    mismatch = None if lora else weights_mismatch(weights, model.state_dict())
    if mismatch:
        raise RunError(f"{weights_file} does not fit {run_dir / FILES['config']} ({mismatch}): retrain or restore "
                       f"the run")
    try:
        if lora:  # module 12's checks: every adapter present, no unknown name, the shapes of the run's rank
            from tinytorch.finetune import load_adapter_state_dict

            load_adapter_state_dict(model, weights, source=weights_file)
        else:
            model.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as err:
        raise RunError(f"{weights_file} does not fit {run_dir / FILES['config']} "
                       f"({str(err).splitlines()[-1].strip()}): retrain or restore the run") from None
    if lora:
        model = merged_gpt(model)
    try:
        tok = load_tokenizer(run_dir / FILES["tokenizer"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RunError(f"{run_dir / FILES['tokenizer']}: file is missing, truncated or corrupt: retrain or restore "
                       f"it") from None
    try:
        model.to(device)
    except (RuntimeError, ValueError) as err:
        raise RunError(f"--device {device}: {err}") from None
    return model.eval(), tok


def weights_newest_first(run_dir, lora):
    """The files a run's weights may be read from, newest first: the checkpoints written after its final model
    file (the run stopped before the end, or was resumed for more steps after it), then that file; without one,
    every checkpoint."""
    final = run_dir / (ADAPTERS if lora else FILES["model"])
    checkpoints = list_checkpoints(run_dir / "checkpoints")[::-1]
    if not final.is_file():
        return checkpoints
    return [p for p in checkpoints if p.stat().st_mtime > final.stat().st_mtime] + [final]


def newest_readable_weights(candidates, run_dir):
    """(file, tensors) of the first of `candidates` that can be read (for a LoRA run, its adapters alone). A damaged
    checkpoint is skipped with a warning, as --resume does, when another candidate follows; a damaged final model
    file, the one file asked for, or a file that is not a run's is an error that names it."""
    damage = (RuntimeError, OSError, KeyError, TypeError)  # CheckpointError is a RuntimeError

    def read(path):
        final = path.name in (FILES["model"], ADAPTERS)
        try:
            return tt.load(path) if final else run_checkpoint(path)["model"]
        except ForeignCheckpointError as err:
            raise RunError(f"{err}: move it out of {path.parent}, or pass --checkpoint with another file") from None
        except damage:
            if len(candidates) == 1 or final:
                raise RunError(f"{path}: file is truncated or corrupt: retrain or restore it") from None
            raise  # skipped: an older candidate is tried

    found = first_readable(candidates, read, "sampling", damage)
    if found is None:
        raise RunError(f"every checkpoint in {run_dir / 'checkpoints'} is truncated or corrupt ({len(candidates)} "
                       f"tried): restore one, or continue the run with `tito train gpt --resume --out {run_dir}`")
    return found


def _run_dir_of(path):
    """A run folder is the path itself, or holds it (model.safetensors) or its folder (checkpoints/step_N)."""
    if path.is_dir():
        return path
    return next((d for d in (path.parent, path.parent.parent) if (d / FILES["config"]).is_file()), path.parent)
