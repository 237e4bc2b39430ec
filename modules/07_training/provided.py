# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 07 — provided code
#
# Infrastructure for the training lesson, exported before it. You may read it; you do
# not edit it. Five parts, and the lesson's test fixtures:
#
# - `tinytorch.training.checkpoint`: the checkpoint *file format*. Nested state (dicts,
#   lists, tuples, tensors, arrays, generator states) is flattened into arrays plus a
#   JSON tree, checksummed, and read back with errors that name the damaged file.
#   The lesson writes `save_checkpoint`, which uses these pieces.
# - `tinytorch.training.progress`: the live progress bar (rich), the JSONL metrics log,
#   sparklines and loss plots.
# - `tinytorch.training.efficiency`: FLOPs per token, device peaks, MFU and peak memory,
#   which the `Trainer` and `tito train gpt` report.
# - `tinytorch.training.threads`: `ThreadedStep`, the lesson's training step with each
#   batch split over CPU threads, so that NumPy keeps more than one core busy.
# - `_TrainerBase` in `tinytorch.training.trainer`: the `Trainer`'s settings and their
#   validation, logging, callbacks, evaluation cadence, early-stopping checks, finding
#   the newest readable checkpoint, and seeding. The lesson's `Trainer` subclasses it
#   and adds the loop and the checkpoint state.
# - `tinytorch.training.fixtures`: the small models, loaders and spies the lesson's tests use.

# %%
#| default_exp training.trainer

# %% [markdown]
# ## The checkpoint format
#
# A checkpoint's state is nested Python: dicts with integer keys (optimizer state),
# tuples (`betas`), tensors, NumPy arrays and scalars, generator states. safetensors
# stores only named arrays plus a dict of strings, so `flatten_state` moves the arrays
# out under path-like names and leaves a JSON tree with markers (`__tensor__`,
# `__tuple__`, `__items__`...) that `unflatten_state` turns back into the same values.
# `load_checkpoint` checks the format tag and the SHA-256 before trusting the file.

# %%
#| export training.checkpoint
"""Checkpoints: safetensors files written atomically, with a JSON description of the state."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import safetensors.numpy
from safetensors import SafetensorError

from tinytorch.core.backend import _check_whole, device as as_device, to_device, to_numpy
from tinytorch.core.serialization import atomic_write
from tinytorch.core.tensor import Tensor

atomic_write_bytes = atomic_write  # the old name of tinytorch's one durable write (module 03)

FORMAT = "tinytorch-checkpoint/1"
_NAME = re.compile(r"^step_(\d+)\.safetensors$")
_TEMP = re.compile(r"^\.step_\d+\.safetensors\.[A-Za-z0-9_]+\.tmp$")  # atomic_write's temporary file of a checkpoint


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated or corrupted; the message names the file."""


class ForeignCheckpointError(CheckpointError):
    """A whole, readable file that is not a checkpoint of what loads it (another format, model, optimizer
    or data loader); the message says what differs. Not damage: an older checkpoint is no way around it."""


def _array_node(array, key, arrays, kind):
    arrays[key] = np.ascontiguousarray(to_numpy(array)) if array.ndim else np.asarray(to_numpy(array))
    return {kind: key}


def flatten_state(value, arrays, key="state"):
    """A JSON-able copy of `value`; arrays and tensors move into `arrays` under path-like keys."""
    if isinstance(value, Tensor):
        return _array_node(value.data, key, arrays, "__tensor__")
    if hasattr(value, "__array_interface__") or hasattr(value, "__cuda_array_interface__"):
        if not hasattr(value, "ndim"):
            raise TypeError(f"cannot save {key}: {type(value).__name__} is not an array")
        if isinstance(value, np.generic):
            return {"__scalar__": value.item(), "dtype": value.dtype.str}
        return _array_node(value, key, arrays, "__array__")
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: flatten_state(v, arrays, f"{key}/{k}") for k, v in value.items()}
        return {"__items__": [[flatten_state(k, arrays, f"{key}/{k}!key"), flatten_state(v, arrays, f"{key}/{k}")]
                              for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [flatten_state(v, arrays, f"{key}/{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [flatten_state(v, arrays, f"{key}/{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, (str, int, float)):
        return value
    raise TypeError(f"cannot save {key}: a {type(value).__name__} is not a tensor, array, number, string, "
                    f"list, tuple or dict")


def unflatten_state(node, arrays, device=None):
    """Invert `flatten_state`: tensors come back on `device` (cpu by default), arrays too."""
    dev = as_device(device)
    if isinstance(node, list):
        return [unflatten_state(v, arrays, dev) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        return Tensor(arrays[node["__tensor__"]], device=dev)
    if "__array__" in node:
        return to_device(arrays[node["__array__"]], dev)
    if "__scalar__" in node:
        return np.dtype(node["dtype"]).type(node["__scalar__"])
    if "__tuple__" in node:
        return tuple(unflatten_state(v, arrays, dev) for v in node["__tuple__"])
    if "__items__" in node:
        return {unflatten_state(k, arrays, dev): unflatten_state(v, arrays, dev) for k, v in node["__items__"]}
    return {k: unflatten_state(v, arrays, dev) for k, v in node.items()}


def _checksum(arrays, tree_json):
    digest = hashlib.sha256(tree_json.encode())
    for key in sorted(arrays):
        array = arrays[key]
        digest.update(f"{key}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _read_metadata(data, path):
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes)")
    size = int.from_bytes(data[:8], "little")
    try:
        return json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path} has an unreadable header ({err})") from None


def load_checkpoint(path, device=None):
    """Read a checkpoint written by `save_checkpoint` from a path or a binary file object;
    CheckpointError names the file if it is damaged."""
    if hasattr(path, "read"):
        data, path = path.read(), getattr(path, "name", f"<{type(path).__name__}>")
    else:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} does not exist") from None
    try:
        arrays = safetensors.numpy.load(data)
    except SafetensorError as err:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: {err}") from None
    metadata = _read_metadata(data, path)
    if metadata.get("format") != FORMAT:
        raise ForeignCheckpointError(f"{path} is not a TinyTorch checkpoint (format {metadata.get('format')!r}, "
                                     f"expected {FORMAT!r})")
    tree = metadata.get("state")
    if not isinstance(tree, str) or _checksum(arrays, tree) != metadata.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupted: its SHA-256 does not match the one saved with it")
    try:  # a matching SHA-256 but a state no save_checkpoint writes: a forged or foreign-built file
        return unflatten_state(json.loads(tree), arrays, device)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {path} holds a state this TinyTorch cannot read ({err!r})") from None


def checkpoint_path(directory, step):
    return Path(directory) / f"step_{step:08d}.safetensors"


def list_checkpoints(directory):
    """Checkpoint files in `directory`, oldest step first (temporary files are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(directory, keep_last, upto=None):
    """Delete all but the newest `keep_last` checkpoints (of those at or before step `upto`, if given).

    A checkpoint past `upto` is one a resumed run went back behind (it was damaged): it must not
    count among the kept ones, or pruning would delete the good checkpoints, even the one just written.
    """
    if keep_last is None:
        return
    keep_last = _check_whole(keep_last, "keep_last", hint=" (None keeps every checkpoint)")
    found = list_checkpoints(directory)
    if upto is not None:
        found = [p for p in found if int(_NAME.match(p.name).group(1)) <= upto]
    for old in found[:-keep_last]:
        old.unlink(missing_ok=True)


def remove_stale_temp_files(directory):
    """Delete the temporary files of checkpoint saves that were killed (`.step_N.safetensors.XXXX.tmp`, as
    atomic_write names them) in `directory`; nothing else. Called after a save succeeded: one Trainer writes
    a checkpoint folder, so no other save is under way there."""
    for path in Path(directory).iterdir():
        if _TEMP.match(path.name):
            path.unlink(missing_ok=True)


# %% [markdown]
# ## Progress and the metrics log
#
# Two displays: a live bar for the person watching (`rich`), and a durable JSONL log,
# one JSON object per line, flushed at once, so a crashed run keeps its curve up to
# the crash. `read_log` skips a last line cut short; `sparkline` and `plot_history`
# draw the curves (matplotlib is optional).

# %%
#| export training.progress
"""Progress display (rich), the JSONL metrics log, sparklines and loss plots."""
import json
import math
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)

from tinytorch.core.serialization import atomic_write

BLOCKS = "▁▂▃▄▅▆▇█"


def _finite_or_none(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _json_line(record):
    return json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n"


class JsonlLog:
    """Append one JSON object per line to `path`, flushed after each line."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None

    def write(self, record):
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(_json_line(record))
        self._file.flush()

    def truncate_after(self, step):
        """Keep only the records up to `step` (what a resumed run has not redone yet)."""
        self.close()
        kept = [r for r in read_log(self.path) if r.get("step", 0) <= step]
        atomic_write(self.path, "".join(_json_line(r) for r in kept).encode())

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def read_log(path):
    """The records of a JSONL log; a last line cut short by a crash is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def sparkline(values, width=60):
    """A one-line curve of `values` in Unicode blocks, averaged down to at most `width` characters."""
    values = [math.nan if v is None else float(v) for v in values]
    if width and len(values) > width:
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [_mean(values[a:b]) for a, b in zip(edges, edges[1:])]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return " " * len(values)
    low, span = min(finite), (max(finite) - min(finite)) or 1.0
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - low) / span * top)] if math.isfinite(v) else " " for v in values)


def _mean(chunk):
    finite = [v for v in chunk if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _curves(records):
    """{name: (steps, values)} for the training loss and every evaluated metric."""
    curves = {}
    for r in records:
        names = ["loss"] if r.get("kind") == "train" else [k for k in r if k.startswith("val_")]
        for name in names:
            if r.get(name) is not None:
                steps, values = curves.setdefault(name, ([], []))
                steps.append(r["step"])
                values.append(r[name])
    return curves


def plot_history(jsonl_path, png_path=None):
    """Draw the loss curves of a JSONL log to `png_path` with matplotlib; return the path.

    Without matplotlib (an optional dependency), print sparklines instead and return None.
    """
    curves = _curves(read_log(jsonl_path))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        for name, (steps, values) in curves.items():
            print(f"{name:>14} {sparkline(values)} {values[-1]:.4g} at step {steps[-1]}")
        return None
    png_path = Path(png_path if png_path is not None else Path(jsonl_path).with_suffix(".png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (steps, values) in curves.items():
        if name == "loss" or name.endswith("loss"):
            ax.plot(steps, values, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


class TrainingProgress:
    """A rich progress bar (step, loss, lr, throughput, ETA), or nothing at all when `quiet`."""

    def __init__(self, total=None, quiet=False):
        self.quiet = quiet
        self._bar = None if quiet else Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("lr {task.fields[lr]}"),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=Console(highlight=False),
        )
        self._task = None if quiet else self._bar.add_task("train", total=total, loss="-", lr="-", speed="")

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()

    def update(self, step, loss, lr, per_second, unit="samples"):
        if self._bar is not None:
            speed = f"{per_second:,.0f} {unit}/s"
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=speed)

    def print(self, message):
        if self._bar is not None:
            self._bar.console.print(message)


# %% [markdown]
# ## How much of the machine a run uses
#
# Tokens per second alone do not say whether a run is fast: the same number is good for a
# large model and poor for a small one. *Model FLOPs utilization* (MFU, PaLM's appendix B)
# divides the FLOPs the model needs per second by what the device can do at best:
#
# $$\text{MFU} = \frac{\text{tokens/s} \cdot (6N + 12\,L\,C\,T)}{\text{peak FLOP/s}}$$
#
# where $N$ counts the weights used in matmuls, $L$ the layers, $C$ the width and $T$ the
# context. The peak is that of the dtype the matmuls run in: under mixed precision (module
# 10's autocast) a GPU's 16-bit tensor cores do ~15x the float32 FLOP/s, so dividing by the
# float32 peak would overstate the MFU ~15x. Peaks come from the GPU data sheets (dense, no
# sparsity), or, on a CPU, from timing one matmul in that dtype here. Peak memory on cuda is
# the most CuPy's memory pool held.

# %%
#| export training.efficiency
"""Model FLOPs utilization (MFU) and peak memory: how much of the machine a training run uses."""
import sys
import numbers
import time

import numpy as np

from tinytorch.core.backend import device as as_device, get_xp
from tinytorch.core.tensor import from_op

# Dense peak TFLOPS of a GPU (no 2:4 sparsity) from the data sheets: tensor-core bf16/fp16, and
# plain fp32 (TF32 off). The first key found in the device's name is used: specific names first.
PEAK_TFLOPS = {
    "H100 NVL": {},  # NVL boards run at other clocks than SXM: no figure here, give --peak-tflops
    "H200 NVL": {},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},  # SXM
    "H200": {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5},
}


def flops_per_token(n_params, n_layer, n_embd, seq_len):
    """Training FLOPs per token of a decoder-only transformer, forward and backward (PaLM, appendix B).

    A weight that multiplies the token's activations costs 2 FLOPs forward (multiply, add) and 4
    backward (the input's and the weight's gradient): 6·N, N counting only matmul weights (not the
    position table; the token table only when it is also the output layer). Attention's two
    matmuls, q·kᵀ and the weighted sum of v, cost 2·T·C each per token and layer forward: 12·L·C·T
    with the backward."""
    return 6 * n_params + 12 * n_layer * n_embd * seq_len


def gpu_name(device):
    """The name of a cuda device as its driver reports it, e.g. 'NVIDIA H200'."""
    dev = as_device(device)
    name = get_xp(dev).cuda.runtime.getDeviceProperties(dev.index or 0)["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def measure_peak_flops(seconds=0.2, n=None, dtype="float32"):
    """FLOP/s of an (n, n) matmul in `dtype` on the CPU, the best of repeats for `seconds`: a reachable peak."""
    dtype = np.dtype(dtype)
    if n is None:  # NumPy has no BLAS for 16-bit floats (~100x slower): a smaller matrix keeps this short
        n = 512 if dtype == np.float32 else 128
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32).astype(dtype)
    a @ a  # wakes the BLAS threads
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ a
        best = max(best, 2 * n**3 / max(time.perf_counter() - start, 1e-9))
    return best


_MEASURED = {}
_PEAK_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # the table's names: NumPy's


def peak_dtype(dtype):
    """The peak table's name (fp32, bf16 or fp16) of `dtype`: one of those names, or that dtype itself."""
    if isinstance(dtype, str) and dtype in _PEAK_DTYPES:
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:  # not a dtype at all
        name = None
    key = next((key for key, numpy_name in _PEAK_DTYPES.items() if numpy_name == name), None)
    if key is None:
        raise ValueError(f"no peak FLOP/s for dtype {dtype!r}: matmuls run in fp32, bf16 or fp16 "
                         f"(tinytorch.float32, bfloat16, float16)")
    return key


def matmul_dtype(device):
    """The dtype a float32 matmul on `device` runs in here and now: low precision inside an autocast block."""
    dev = as_device(device)
    x = from_op(get_xp(dev).ones((1, 1), dtype=np.float32), dev)
    return (x @ x).dtype  # `@` asks module 01's autocast hook, as the model's matmuls do


def peak_flops(device="cpu", dtype="fp32", tflops=None):
    """(peak FLOP/s or None, where it comes from) for `device` computing in `dtype` (fp32, bf16, fp16, or
    the dtype itself).

    `tflops` overrides; else a GPU's data-sheet peak, or a CPU's measured matmul speed in that dtype."""
    if tflops is not None:
        if not tflops > 0:
            raise ValueError(f"peak TFLOPS must be positive, got {tflops}")
        return tflops * 1e12, "given"
    dtype, dev = peak_dtype(dtype), as_device(device)
    if dev.type == "cpu":  # measured once per process and dtype
        if dtype not in _MEASURED:
            _MEASURED[dtype] = measure_peak_flops(dtype=_PEAK_DTYPES[dtype])
        return _MEASURED[dtype], f"measured {dtype} matmul"
    name = gpu_name(dev)
    key = next((k for k in PEAK_TFLOPS if k in name), None)
    if key is None or dtype not in PEAK_TFLOPS[key]:
        return None, f"no peak known for {name} in {dtype}: give it from the data sheet (--peak-tflops)"
    return PEAK_TFLOPS[key][dtype] * 1e12, f"{key} {dtype} data sheet"


def mfu(tokens_per_s, flops_per_token, peak):
    """The fraction of the device's peak FLOP/s that the model's own FLOPs use."""
    if isinstance(peak, bool) or not isinstance(peak, numbers.Real) or not peak > 0:
        raise TypeError(f"mfu: peak must be the device's FLOP/s, a number > 0 (peak_flops(...)[0], which is None "
                        f"when the peak is unknown), got {peak!r}")
    return tokens_per_s * flops_per_token / peak


class PeakMemory:
    """A run's peak memory: on cuda the most CuPy's memory pool held (read after each step; the pool
    keeps freed blocks, so it holds the step's activations too), on cpu the process's peak RSS."""

    def __init__(self, device="cpu"):
        dev = as_device(device)
        self.pool = get_xp(dev).get_default_memory_pool() if dev.type == "cuda" else None
        self.kind = "cuda memory pool" if self.pool is not None else "peak RSS"
        self._peak = 0

    def update(self):
        if self.pool is not None:  # a host-side counter: no wait on the GPU
            self._peak = max(self._peak, self.pool.total_bytes())

    @property
    def mib(self):
        if self.pool is not None:
            return self._peak / 2**20
        import resource  # POSIX only: imported when asked, so that the package imports everywhere

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


# %% [markdown]
# ## Two cores for one step
#
# NumPy runs each elementwise kernel on one core, and BLAS splits a product over its threads
# only for the length of that product, so on a 2-core machine a training step leaves one core
# idle much of the time. NumPy releases Python's lock (the GIL) while a kernel runs: two
# Python threads, each running the forward and the backward of half the batch, keep both
# cores busy, taking turns only for the Python between the kernels.
#
# `ThreadedStep` runs the lesson's own `train_step` on a *split model*. Calling it cuts the
# inputs into row blocks, one per thread; thread 0 runs its block through the model, each
# other thread through a replica whose parameters hold the model's arrays (no copy) but have
# their own `.grad`. The outputs are joined into one tensor, so the loss is the whole batch's.
# That tensor's backward hands each block's gradient to its thread, runs the blocks' backward
# passes at once, and adds the replicas' gradients into the model's. The optimizer's update is
# split over the threads too, each updating whole parameters. Meanwhile BLAS runs one thread
# per thread. Block 0 draws its dropout masks from the default generator, as one thread would;
# every other block from its own generator, seeded from the default one's state (read, not
# drawn from), so a run does not depend on thread timing and resumes exactly. As in PyTorch's
# `DataParallel`, the replicas share the model's other attributes (training modes, rates).
# A batch with fewer rows than threads gets one block per row, and one sample runs whole in
# the calling thread: a micro-batch whose target is one sample's (a 0-d tensor, a number, or
# one row, as `DataLoader(batch_size=None)` yields) while its input has more rows is one
# sample's features, not a batch to cut.
#
# It pays only when each thread's arrays are large: handing the lock over costs tens of
# microseconds, which a kernel on a few thousand floats does not outlast. Its tests check it
# against `train_step` on one thread.

# %%
#| export training.threads
"""A training step that splits each batch over CPU threads (NumPy kernels release the GIL)."""
import contextlib
import copy
import hashlib
import numbers
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tinytorch.core.autograd import backward as run_backward, no_grad
from tinytorch.core.backend import _check_whole, default_generator, thread_generator
from tinytorch.core.tensor import Tensor, _autocast_state, _grad_mode, _wrote, from_op  # modes are per thread
from tinytorch.nn.module import Module
from tinytorch.optim.optimizer import Optimizer


def _check_threads(threads):
    """`threads` as an int; ValueError unless it is a whole number >= 1 (the Trainer's setting and ThreadedStep's)."""
    return _check_whole(threads, "threads")


def cpu_count():
    """How many CPUs this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _OneBlasThread:
    """BLAS at one thread while a threaded step runs: several BLAS threads per training thread fight for cores."""

    def __init__(self):
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            warnings.warn("threadpoolctl is not installed, so BLAS keeps its own threads during a threaded "
                          "step and may slow it down (pip install threadpoolctl)", RuntimeWarning, stacklevel=3)
            self._controller = None
        else:
            self._controller = ThreadpoolController()
        self._limiter, self._depth = None, 0  # nested uses keep the outermost limit

    def __enter__(self):
        if self._depth == 0 and self._controller is not None:
            self._limiter = self._controller.limit(limits=1, user_api="blas")
        self._depth += 1

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._limiter is not None:
            self._limiter.restore_original_limits()
            self._limiter = None


def _batched(value):
    return isinstance(value, (Tensor, np.ndarray)) and value.ndim > 0


_REGISTRIES = ("_parameters", "_buffers", "_modules", "_non_persistent")  # a module's own, never shared


def _parts(model):
    """(modules, parameters, buffers) of `model`, each once, in the order `modules()` and
    `parameters()` give them: one walk of the module tree."""
    modules = list(model.modules())
    found = ([], [])
    for kind, registry in zip(found, ("_parameters", "_buffers")):
        seen = set()
        for module in modules:
            for t in getattr(module, registry).values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    kind.append(t)
    return modules, *found


def _block_generators(n):
    """Where each of `n` row blocks draws random numbers: block 0 from the default generator, as one
    thread would; the others from generators seeded by the default generator's state, read but not
    drawn from (a model that draws nothing leaves the stream as one thread leaves it, and block 0's
    draws move the state on, so the next step's seeds differ)."""
    if n == 1:
        return [None]
    state = repr(default_generator().bit_generator.state).encode()
    seed = int.from_bytes(hashlib.sha256(state).digest()[:16], "little")
    return [None] + [np.random.default_rng([seed, i]) for i in range(1, n)]


def _split_rows(value, bounds):
    """`value` (a tensor, an array, or a tuple/list/dict of them) cut into row blocks [a, b); anything
    else (None, a number, a flag) goes to every block as it is."""
    if isinstance(value, (tuple, list)):
        parts = [_split_rows(v, bounds) for v in value]
        return [_same_kind(value, [p[i] for p in parts]) for i in range(len(bounds))]
    if isinstance(value, dict):
        parts = {k: _split_rows(v, bounds) for k, v in value.items()}
        return [{k: p[i] for k, p in parts.items()} for i in range(len(bounds))]
    if not _batched(value):
        return [value] * len(bounds)
    if len(value) != bounds[-1][1]:
        raise ValueError(f"ThreadedStep cuts every tensor of a batch along its first dimension (as PyTorch's "
                         f"DataParallel), but one has {len(value)} rows and another {bounds[-1][1]}")
    return [value[a:b] for a, b in bounds]


def _same_kind(sequence, items):
    """`items` as a tuple, list or namedtuple like `sequence`."""
    return type(sequence)(*items) if hasattr(sequence, "_fields") else type(sequence)(items)


def _joinable(out, first):
    """Whether a block's output `out` can be joined with the first block's: the same kind, the same
    length for sequences and keys for dicts, and tensors and arrays with rows (not scalars)."""
    if type(out) is not type(first):
        return False
    if isinstance(first, (tuple, list)):
        return len(out) == len(first)
    if isinstance(first, dict):
        return list(out) == list(first)
    return not isinstance(first, (Tensor, np.ndarray)) or (first.ndim > 0 and out.ndim > 0)


def _describe_output(value):
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)}"
    return f"{type(value).__name__} of length {len(value)}"


def _one_sample(inputs, target):
    """Whether a micro-batch (inputs, target) is one unbatched sample: its target is one sample's (a 0-d
    tensor or array, a number, or a single row) while its inputs have more rows, which are then one
    sample's features (DataLoader(batch_size=None) yields such pairs), not rows to cut."""
    rows = _rows(target)
    return _rows(inputs) > 1 and (rows == 1 or (rows == 0 and _has_scalar(target)))


def _has_scalar(value):
    if isinstance(value, (tuple, list, dict)):
        return any(_has_scalar(v) for v in (value.values() if isinstance(value, dict) else value))
    return isinstance(value, numbers.Number) or (isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0)


def _rows(value):
    """The batch size of `value`: the length of its first tensor or array (0 when it has none)."""
    if isinstance(value, (tuple, list, dict)):
        for v in value.values() if isinstance(value, dict) else value:
            if rows := _rows(v):
                return rows
        return 0
    return len(value) if _batched(value) else 0


class _SplitModel:
    """The model as `train_step` sees it inside a ThreadedStep: calling it runs the row blocks in the
    threads and joins their outputs; everything else is the model's."""

    def __init__(self, step):
        self._step = step

    def __call__(self, inputs):
        return self._step.forward(inputs)

    def __getattr__(self, name):
        return getattr(self._step.model, name)


class _SplitOptimizer:
    """The optimizer as `train_step` sees it inside a ThreadedStep: `step` updates the parameters in the
    threads; everything else is the optimizer's (replicas hold no gradient outside a backward)."""

    def __init__(self, step, optimizer):
        self._step, self._optimizer = step, optimizer

    def step(self, closure=None):
        if closure is not None:
            return self._optimizer.step(closure)
        self._step.update(self._optimizer)
        return None

    def __getattr__(self, name):
        return getattr(self._optimizer, name)


class ThreadedStep:
    """The lesson's `train_step` with each micro-batch split over `threads` CPU threads (notes above).

    `step = ThreadedStep(model, threads=2)`, then `step(loss_fn, optimizer, micro_batches,
    clip_grad_norm)` in place of `train_step(model, loss_fn, optimizer, micro_batches,
    clip_grad_norm)`. `step.split_model(inputs)` is one split forward (its output's backward runs
    the threads' backward passes; retain_graph works as on the model); `close()` ends the threads.
    Like PyTorch's DataParallel, the replicas share the model's other attributes (refreshed before
    each step), a module that keeps state across batches (running statistics) would see each block
    apart, and every input is cut along its first dimension (a sequence-first input, as a default
    nn.LSTM's, would be cut along time). A micro-batch that is one unbatched sample (its target a 0-d
    tensor, a number or one row, its input longer: `DataLoader(batch_size=None)`) runs whole in the
    calling thread, as a one-row batch does.
    """

    def __init__(self, model, threads):
        threads = _check_threads(threads)
        devices = {p._device.type for p in model.parameters()} - {"cpu"}
        if devices:
            raise ValueError(f"threads={threads} splits a batch over CPU threads, but the model is on "
                             f"{', '.join(sorted(devices))}: leave threads at 1 on a GPU")
        self.model, self.threads = model, threads
        self._make_replicas(*_parts(model))
        self._pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="tinytorch-step") if threads > 1 else None
        self._blas = _OneBlasThread() if threads > 1 else contextlib.nullcontext()
        self.split_model = _SplitModel(self)
        self._token = Tensor(np.zeros(0, dtype=np.float32), requires_grad=True)  # the joined output's graph input
        self._in_use = threading.RLock()  # held by the thread running a step: the replicas are one step's
        self._whole = set()  # ids of the running step's inputs that are one sample each: not cut

    @contextlib.contextmanager
    def _exclusive(self):
        """Run a step's phase in this thread only (nested phases of the same step are fine)."""
        if not self._in_use.acquire(blocking=False):
            raise RuntimeError("this ThreadedStep is running a step in another thread, and its replicas hold "
                               "one step at a time: make one ThreadedStep per thread")
        try:
            yield
        finally:
            self._in_use.release()

    def _make_replicas(self, modules, params, buffers):
        """Copies of the model (its `modules`, `params` and `buffers` listed once, in order) whose parameters
        and buffers hold the model's own arrays, without gradients."""
        self._modules, self._params, self._buffers = modules, params, buffers
        self._replica_parts = []  # per replica: (its modules, parameters, buffers), in the model's order
        self._replicas = []
        for _ in range(self.threads - 1):
            try:
                replica = copy.deepcopy(self.model, {id(t.data): t.data for t in params + buffers})
            except (TypeError, copy.Error) as err:  # a process group, an open file: not a model to copy
                raise TypeError(f"ThreadedStep runs copies of the model in its threads, but this "
                                f"{type(self.model).__name__} cannot be copied ({err}); a data-parallel wrapper "
                                f"(DDP, FSDP) spreads the step itself: leave threads at 1") from None
            parts = _parts(replica)
            for p in parts[1]:
                p.grad = None  # deepcopy copied the model's
            self._replicas.append(replica)
            self._replica_parts.append(parts)

    def sync(self):
        """Before a step: give each replica the model's current arrays (an optimizer or `load_state_dict` may
        have rebound them) and its modules' other attributes (training mode, dropout rate, flags), shared as
        PyTorch's `replicate` shares them; no gradients. A model whose modules, parameters or buffers are not
        the ones the replicas were made from (a layer replaced, say) gets new replicas."""
        modules, params, buffers = _parts(self.model)
        if any(len(now) != len(then) or any(a is not b for a, b in zip(now, then))
               for now, then in ((modules, self._modules), (params, self._params), (buffers, self._buffers))):
            self._make_replicas(modules, params, buffers)
        for their_modules, their_params, their_buffers in self._replica_parts:
            for mine, theirs in zip(modules, their_modules):
                theirs.__dict__.update((k, v) for k, v in mine.__dict__.items()
                                       if k not in _REGISTRIES and not isinstance(v, (Tensor, Module)))
            for mine, theirs in zip(params, their_params):
                theirs.data, theirs.requires_grad, theirs.grad = mine.data, mine.requires_grad, None
            for mine, theirs in zip(buffers, their_buffers):
                theirs.data = mine.data

    def _run(self, task, items, generators):
        """task(item) for each item, the first in this thread and the others in the pool, item i drawing
        random numbers from generators[i] (None: the default generator); every one finishes before this
        returns (or raises the first error), even when Ctrl-C interrupts the wait."""
        if self.threads > 1 and self._pool is None:
            raise RuntimeError("this ThreadedStep was closed: make a new one")
        grad_enabled, autocast = _grad_mode.enabled, _autocast_state.run

        def in_caller_modes(item, generator):  # grad mode and autocast are per thread: carry the caller's
            saved = _grad_mode.enabled, _autocast_state.run
            _grad_mode.enabled, _autocast_state.run = grad_enabled, autocast
            try:
                with thread_generator(generator) if generator is not None else contextlib.nullcontext():
                    return task(item)
            finally:
                _grad_mode.enabled, _autocast_state.run = saved

        futures = [self._pool.submit(in_caller_modes, item, gen) for item, gen in zip(items[1:], generators[1:])]
        errors, results = [], []
        try:
            results.append(in_caller_modes(items[0], generators[0]))
        except BaseException as err:  # noqa: BLE001 -- re-raised below, once the pool's tasks are done
            errors.append(err)
        for future in futures:
            while True:
                try:
                    results.append(future.result())
                except BaseException as err:  # noqa: BLE001
                    errors.append(err)
                    if not future.done():  # Ctrl-C interrupted the wait, not the task: wait for it still
                        continue
                break
        if errors:
            raise errors[0]
        return results

    def forward(self, inputs):
        """The model's output for `inputs`, each row block computed in its own thread and the blocks joined;
        the replicas are synced with the model first (its mode, weights and attributes now)."""
        with self._exclusive():
            return self._forward(inputs)

    def _forward(self, inputs):
        self.sync()
        rows = _rows(inputs)
        n = 1 if id(inputs) in self._whole else max(1, min(self.threads, rows))
        edges = [rows * i // n for i in range(n + 1)]
        bounds = list(zip(edges[:-1], edges[1:]))
        nets = [self.model, *self._replicas][:n]
        generators = _block_generators(n)
        with self._blas:
            outputs = self._run(lambda job: job[0](job[1]), list(zip(nets, _split_rows(inputs, bounds))), generators)
        return self._join(outputs, bounds, generators)

    def _join(self, outputs, bounds, generators):
        """One output from the blocks' outputs: tensors are concatenated along rows; the one tensor with a
        graph gets a backward that runs the blocks' backward passes in their threads."""
        if len(outputs) == 1:  # one block (one sample, a one-row batch): the model's own output, as one thread's
            return outputs[0]
        first = outputs[0]
        if isinstance(first, (tuple, list, dict, Tensor, np.ndarray)) and not all(
                _joinable(out, first) for out in outputs[1:]):
            raise ValueError(f"ThreadedStep joins the blocks' outputs along their rows, but they differ in kind or "
                             f"length, or hold a scalar tensor ({_describe_output(first)}): a model whose output "
                             f"is not one row per input row cannot be split")
        if isinstance(first, (tuple, list, dict)):
            keys = list(first) if isinstance(first, dict) else range(len(first))
            joined = [self._join([out[k] for out in outputs], bounds, generators) for k in keys]
            if sum(isinstance(t, Tensor) and t.requires_grad for t in joined) > 1:
                raise ValueError("ThreadedStep: the model's output has more than one tensor with a gradient; "
                                 "it can backpropagate through one")
            return type(first)(zip(keys, joined)) if isinstance(first, dict) else _same_kind(first, joined)
        if isinstance(first, np.ndarray):
            return np.concatenate(outputs)
        if not isinstance(first, Tensor):
            return first  # None, a number...: the first block's
        data = np.concatenate([out.data for out in outputs])
        if not first.requires_grad:
            return from_op(data, first._device)

        def join_backward(g):  # the blocks' graphs live as long as this function: retain_graph decides
            def block_backward(job):
                out, (a, b) = job
                run_backward(out, g[a:b], retain_graph=True)
            with self._exclusive(), self._blas:
                self._run(block_backward, list(zip(outputs, bounds)), generators)
                self.collect_grads()
            return (None,)
        return from_op(data, first._device, (self._token,), join_backward)

    def collect_grads(self):
        """After the backward: add each replica's gradients into the model's and clear them; the
        parameters are split over the threads."""
        def collect(indices):
            for i in indices:
                mine = self._params[i]
                for _, theirs_params, _ in self._replica_parts:
                    theirs = theirs_params[i]
                    if theirs.grad is None:
                        continue
                    if mine.grad is None:
                        mine.grad = theirs.grad
                    else:
                        mine.grad.data += theirs.grad.data
                    theirs.grad = None
        parts = [range(k, len(self._params), self.threads) for k in range(self.threads)]
        with no_grad():
            self._run(collect, parts, [None] * len(parts))

    def update(self, optimizer):
        """`optimizer.step()` with the parameters split over the threads (largest first, each to the least
        loaded thread); an optimizer with its own `step` runs it as it is."""
        if self.threads == 1 or type(optimizer).step is not Optimizer.step:
            optimizer.step()
            return
        work = [(p, group) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        work.sort(key=lambda item: -item[0].data.size)
        parts, loads = [[] for _ in range(self.threads)], [0] * self.threads
        for p, group in work:
            i = loads.index(min(loads))
            parts[i].append((p, group))
            loads[i] += p.data.size
            optimizer.state[p]  # noqa: B018 -- its state dict is made here, not by two threads at once

        def run(part):
            with no_grad():
                for p, group in part:
                    optimizer._update_one(p, p.grad.data, optimizer.state[p], group)
                    _wrote(p)  # as Optimizer.step
        parts = [part for part in parts if part] or [[]]
        with self._blas:
            self._run(run, parts, [None] * len(parts))

    def __call__(self, loss_fn, optimizer, micro_batches, clip_grad_norm=None):
        """One optimizer step over `micro_batches` [(inputs, target), ...]: the lesson's `train_step` run on
        the split model; returns the mean loss."""
        from tinytorch.training.trainer import train_step  # the lesson's, defined after this file

        with self._exclusive(), self._blas:  # (each split forward syncs the replicas)
            self._whole = {id(batch[0]) for batch in micro_batches
                           if isinstance(batch, (tuple, list)) and len(batch) == 2 and _one_sample(*batch)}
            try:
                return train_step(self.split_model, loss_fn, _SplitOptimizer(self, optimizer), micro_batches,
                                  clip_grad_norm)
            finally:
                self._whole = set()

    def close(self):
        """End the pool's threads (the step cannot run afterwards)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


# %% [markdown]
# ## The Trainer's base
#
# `_TrainerBase` holds what the lesson does not teach: the settings and their checks,
# the bookkeeping after each optimizer step (scheduler, log, progress, callbacks,
# evaluation and checkpoint cadence, the nan policy), early stopping's hook, file
# naming and pruning of checkpoints, falling back past a damaged newest checkpoint
# on resume, and seeding. The lesson's `Trainer` subclasses it.

# %%
#| export
"""The training loop: one step, evaluation, early stopping and the `Trainer`."""
# The lesson's half of this file (train_step, evaluate, EarlyStopping, Trainer) comes after
# this provided half; _TrainerBase calls those names at run time, once both halves are loaded.
import math
import numbers
import time
import warnings
from pathlib import Path

import numpy as np

from tinytorch.core.backend import (
    _check_whole, cuda_device_count, default_generator, device as as_device, gpu_rng_states, seed_gpus,
    set_gpu_rng_state,
)
from tinytorch.core.tensor import Tensor
from tinytorch.training.checkpoint import (
    CheckpointError, ForeignCheckpointError, checkpoint_path, list_checkpoints, load_checkpoint, prune_checkpoints,
    remove_stale_temp_files, save_checkpoint,
)
from tinytorch.training.efficiency import PeakMemory, matmul_dtype, mfu, peak_dtype, peak_flops as peak_flops_of
from tinytorch.training.progress import JsonlLog, TrainingProgress
from tinytorch.training.threads import ThreadedStep, _check_threads


class History:
    """What `fit` did: one dict per step (`train`) and per evaluation (`eval`), and why it stopped.

    Also what it cost: `seen` samples or tokens (`unit`) in `seconds` of fit (evaluations and
    checkpoints included), the peak memory, and, given FLOPs per token, the MFU (see `summary`)."""

    def __init__(self):
        self.train, self.eval, self.stop_reason = [], [], None
        self.seen, self.unit, self.seconds = 0, "samples", 0.0
        self.flops_per_token, self.peak_flops, self.peak_memory_mib, self.memory_kind = None, None, None, None

    @property
    def losses(self):
        return [r["loss"] for r in self.train]

    def summary(self):
        """Throughput over the whole fit (all items / all its time) and the median step's, MFU, peak memory."""
        unit, mean = self.unit, self.seen / self.seconds if self.seconds > 0 else None
        steps = [r[f"{unit}_per_s"] for r in self.train if f"{unit}_per_s" in r]
        out = {f"{unit}_per_s_mean": mean, f"{unit}_per_s_median": float(np.median(steps)) if steps else None,
               "seconds": self.seconds, "peak_memory_mib": self.peak_memory_mib, "memory_kind": self.memory_kind}
        if self.flops_per_token is not None:
            out["mfu"] = mfu(mean, self.flops_per_token, self.peak_flops) if mean and self.peak_flops else None
        return out

    def __repr__(self):
        return f"History({len(self.train)} steps, {len(self.eval)} evaluations, stop_reason={self.stop_reason!r})"


def _generators(loader, strict=False):
    """The NumPy generators that decide the data order and dropout: the global one, then the loader's own.

    With `strict`, a loader seeded with a plain int is an error: its generator's state cannot be saved.
    """
    found = [default_generator()]
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), batch_sampler, getattr(batch_sampler, "sampler", None)):
        gen = getattr(owner, "generator", None)
        if hasattr(gen, "bit_generator"):
            if all(gen is not g for g in found):
                found.append(gen)
        elif gen is not None and strict:
            raise ValueError(f"{type(owner).__name__}(generator={gen!r}): a checkpoint cannot save the state of "
                             f"an int seed; pass generator=np.random.default_rng({gen!r}) instead")
    return found


def _get_states(generators):
    """The generators' states, then one {"cuda": index, "state": array} per GPU generator in use
    (dropout on cuda draws there; its state stays on the GPU until a checkpoint writes it)."""
    gpus = [{"cuda": i, "state": state} for i, state in gpu_rng_states().items()]
    return [g.bit_generator.state for g in generators] + gpus


def _is_gpu_state(state):
    return isinstance(state, dict) and "cuda" in state


def _check_generator_count(generators, states, source="the checkpoint"):
    saved = sum(not _is_gpu_state(s) for s in states)
    if saved != len(generators):
        raise ForeignCheckpointError(f"{source} saved {saved} random generators but this run has {len(generators)}: "
                                     f"build the DataLoader the same way as the saved run")


def _set_states(generators, states):
    _check_generator_count(generators, states)
    gpus = [s for s in states if _is_gpu_state(s)]
    states = [s for s in states if not _is_gpu_state(s)]
    for g, s in zip(generators, states):
        g.bit_generator.state = s
    for saved in gpus:
        if saved["cuda"] >= cuda_device_count():
            continue  # resumed on the CPU or on fewer GPUs: nothing here draws on that GPU
        try:
            set_gpu_rng_state(saved["cuda"], saved["state"])
        except ValueError as err:
            raise CheckpointError(str(err)) from None


def _to_device(batch, device):
    if device is None:
        return batch
    return tuple(t.to(device) if isinstance(t, Tensor) else t for t in batch)


def _validate_early_stopping(mode, patience, min_delta):
    """Check EarlyStopping's arguments; return patience as an int and min_delta as a float (a one-element
    Tensor gives its number)."""
    if mode not in ("min", "max"):
        raise ValueError(f"EarlyStopping mode must be 'min' or 'max', got {mode!r}")
    patience = _check_whole(patience, "EarlyStopping patience", hint=" (a count of evaluations)")
    if isinstance(min_delta, Tensor):
        if min_delta.numel() != 1:
            raise ValueError(f"EarlyStopping min_delta is one number, got a Tensor of shape {tuple(min_delta.shape)}")
        min_delta = min_delta.item()  # a bool Tensor gives a bool, refused below
    if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real):
        raise TypeError(f"EarlyStopping min_delta must be a real number >= 0, got {min_delta!r}")
    if not (math.isfinite(min_delta) and min_delta >= 0):  # nan would make every comparison False: no improvement
        raise ValueError(f"EarlyStopping min_delta must be a finite number >= 0 (the least change that counts "
                         f"as an improvement, in either mode), got {min_delta!r}")
    return patience, float(min_delta)


def _metric_value(value):
    """The monitored value as a Python float: a one-element Tensor (a loss) gives its number."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"EarlyStopping monitors one number, got a Tensor of shape {tuple(value.shape)}")
        return float(value.item())
    return value


def _device_of(model):
    """The device of the model's first parameter (cpu for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else "cpu"


def _num_samples(target):
    """The samples in a batch's target: its length, or 1 for one unbatched sample (a 0-d target, as a
    DataLoader with batch_size=None yields: PyTorch Lightning counts such a batch as 1 too)."""
    if isinstance(target, numbers.Number) or (isinstance(target, (Tensor, np.ndarray)) and target.ndim == 0):
        return 1
    return len(target)


def _count(target):
    """(number, unit): tokens for integer targets of 2+ dims (language models), else samples."""
    if isinstance(target, Tensor) and target.ndim >= 2 and target.dtype.kind in "iu":
        return target.numel(), "tokens"
    return _num_samples(target), "samples"


# %%
#| export
class _TrainerBase:
    """Everything of the `Trainer` but the loop and the checkpoint state (the lesson writes those).

    Settings and their validation, the per-step bookkeeping (scheduler, log, progress,
    callbacks, evaluation and checkpoint cadence), early stopping, choosing the checkpoint
    to resume from, checking that a checkpoint fits before it is loaded, and seeding.

    One rule counts steps: each group of `accum_steps` micro-batches is one step of `self.step`,
    and the LR scheduler steps once per step, so the learning rate at step s is the schedule's
    value at s. A step that `nan_policy="skip"` skips (non-finite loss, weights untouched) counts
    too, logged with `"skipped": True`: as in a PyTorch loop whose GradScaler skips an update,
    the scheduler still steps, and `max_steps`, `eval_every` and `checkpoint_every` see it.
    """

    def __init__(self, model, optimizer, loss_fn, train_loader, val_loader=None, scheduler=None,
                 accum_steps=1, clip_grad_norm=None, eval_every=None, metrics=None, early_stopping=None,
                 callbacks=(), checkpoint_dir=None, keep_last=3, checkpoint_every=None, seed=None,
                 quiet=False, log_path=None, nan_policy="stop", device=None, resume=False, config=None,
                 flops_per_token=None, peak_flops=None, threads=1, compute_dtype=None):
        accum_steps = _check_whole(accum_steps, "accum_steps")
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {nan_policy!r}")
        for name, value, none in (("eval_every", eval_every, "evaluate at the end of each epoch"),
                                  ("checkpoint_every", checkpoint_every, "save only at the end of fit")):
            if value is not None:
                _check_whole(value, name, hint=f" (a count of steps); use None to {none} (0 is not 'never')")
        if (checkpoint_every or resume) and checkpoint_dir is None:
            raise ValueError("checkpoint_every and resume need a checkpoint_dir")
        if keep_last is not None:  # -1 would delete every checkpoint, the newest too
            keep_last = _check_whole(keep_last, "keep_last", hint=" (None keeps every checkpoint)")
        for name, value in (("flops_per_token", flops_per_token), ("peak_flops", peak_flops)):
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive (or None), got {value}")
        threads = _check_threads(threads)
        compute_dtype = peak_dtype(compute_dtype) if compute_dtype is not None else None
        if threads > 1 and (where := as_device(device or _device_of(model))).type != "cpu":
            raise ValueError(f"threads={threads} splits each batch over CPU threads; on {where} leave threads at 1")
        if isinstance(early_stopping, dict):
            early_stopping = EarlyStopping(**early_stopping)
        self.model, self.optimizer, self.loss_fn, self.scheduler = model, optimizer, loss_fn, scheduler
        self.train_loader, self.val_loader, self.metrics = train_loader, val_loader, dict(metrics or {})
        self.accum_steps, self.clip_grad_norm, self.eval_every = accum_steps, clip_grad_norm, eval_every
        self.early_stopping, self.callbacks = early_stopping, list(callbacks)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.keep_last, self.checkpoint_every, self.seed = keep_last, checkpoint_every, seed
        self.quiet, self.nan_policy, self.device, self.resume = quiet, nan_policy, device, resume
        self.config = dict(config or {})
        self.log = JsonlLog(log_path) if log_path is not None else None
        if device is not None:
            model.to(device)
        self.step, self.epoch = 0, 0  # optimizer steps taken (a step nan_policy="skip" skipped too); epochs finished
        self.batch_in_epoch = 0  # micro-batches consumed in the current epoch
        self.should_stop, self.history = False, History()
        self._batches, self._epoch_start_rng, self._started, self._saved_step = None, None, False, None
        self._bar, self._tick = TrainingProgress(quiet=True), time.perf_counter()
        # MFU needs the model's FLOPs per token and the device's peak (looked up, or measured on a CPU)
        self.flops_per_token, self.compute_dtype, self._given_peak = flops_per_token, compute_dtype, peak_flops
        self.threads, self._threaded = threads, None  # the ThreadedStep, made at the first step
        self.peak_flops = self._peak_flops()
        self._memory = PeakMemory(device or _device_of(model))

    # ---------------------------------------------------------------- running

    def fit(self, epochs=None, max_steps=None, resume_from=None):
        """Train until `epochs` epochs or `max_steps` steps in all (from the run's start); return a History."""
        if epochs is None and max_steps is None:
            raise ValueError("fit needs epochs=... or max_steps=... (or both)")
        for name, value in (("epochs", epochs), ("max_steps", max_steps)):
            if value is not None:  # (Lightning reads max_steps=-1 as no limit: here it is not a silent no-op)
                _check_whole(value, f"fit: {name}", 0, " (None for no limit)")
        if self._batches_per_epoch() == 0:
            raise ValueError(self._no_batches)
        self._start(resume_from)
        self.should_stop, self.history = False, History()
        self.peak_flops = self._peak_flops()  # again: an autocast around fit() changes the matmuls' dtype
        self.history.flops_per_token, self.history.peak_flops = self.flops_per_token, self.peak_flops
        self._memory = PeakMemory(self.device or _device_of(self.model))
        self._call("on_fit_start", self)
        self._tick = time.perf_counter()
        try:
            with self._progress(epochs, max_steps) as self._bar:
                while not self._finished(epochs, max_steps):
                    fresh, before = self.batch_in_epoch == 0, self.step
                    self._run_epoch(max_steps)
                    if fresh and self.step == before:  # a whole epoch without a micro-batch: it would never end
                        raise ValueError(self._no_batches)
        finally:
            if self._threaded is not None:  # its threads end with the fit; the next fit makes a new one
                self._threaded.close()
                self._threaded = None
        self.history.peak_memory_mib, self.history.memory_kind = self._memory.mib, self._memory.kind
        if self.checkpoint_dir is not None and self._saved_step != self.step:
            self.save_checkpoint()
        self._call("on_fit_end", self, self.history)
        return self.history

    _no_batches = ("the train_loader yields no batches (a DataLoader with drop_last=True and fewer samples than "
                   "batch_size?): there is nothing to train on")

    def _peak_flops(self):
        """The given peak, else (with flops_per_token) the device's peak in the dtype the matmuls run in:
        compute_dtype, or what autocast makes of a matmul here (an autocast inside the loss function or the
        model's forward is not visible here: compute_dtype names it)."""
        if self._given_peak is not None or self.flops_per_token is None:
            return self._given_peak
        device = self.device or _device_of(self.model)
        return peak_flops_of(device, self.compute_dtype or matmul_dtype(device))[0]

    def _start(self, resume_from):
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        elif not self._started and not (self.resume and self._resume_latest()):
            self._fresh_start()
        self._started = True

    def _fresh_start(self):
        if self.seed is not None:
            self._seed_everything()
        if self.log is not None:
            self.log.truncate_after(0)  # a new run starts a new log

    def _finished(self, epochs, max_steps):
        if self.should_stop:
            return True
        return (max_steps is not None and self.step >= max_steps) or (epochs is not None and self.epoch >= epochs)

    def _epoch_batches(self):
        """The iterator over this epoch's micro-batches; a new epoch first records the generators' state."""
        if self._batches is None:
            self._epoch_start_rng, self._batches = _get_states(_generators(self.train_loader)), self._train_batches()
        return self._batches

    def _batches_per_epoch(self):
        return len(self.train_loader) if hasattr(self.train_loader, "__len__") else None

    def _after_step(self, end_of_epoch):
        """Close the epoch if it ended, then checkpoint: a checkpoint holds everything done at its step."""
        if end_of_epoch:
            self._end_epoch()
        if self.checkpoint_every and self.step % self.checkpoint_every == 0 and self._saved_step != self.step:
            self.save_checkpoint()

    def _train_batches(self):
        for batch in self.train_loader:
            yield _to_device(batch, self.device)

    def _end_epoch(self):
        self.epoch, self.batch_in_epoch, self._batches = self.epoch + 1, 0, None
        if self.eval_every is None and self.val_loader is not None:
            self._evaluate_and_log()

    def _optimizer_step(self, group):
        lr = self.optimizer.param_groups[0]["lr"]
        if self.threads == 1:
            loss = train_step(self.model, self.loss_fn, self.optimizer, group, self.clip_grad_norm)
        else:
            if self._threaded is None:
                self._threaded = ThreadedStep(self.model, self.threads)
            loss = self._threaded(self.loss_fn, self.optimizer, group, self.clip_grad_norm)
        self.step += 1
        if self.scheduler is not None:  # once per step, a skipped one too: the schedule follows self.step
            self.scheduler.step()
        logs = {"kind": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "lr": lr}
        if not math.isfinite(loss):
            self._non_finite(loss, logs)
        counts = [_count(target) for _, target in group]  # the last micro-batch of an epoch may be smaller
        count, unit = sum(n for n, _ in counts), counts[0][1]
        now = time.perf_counter()  # since the last step: data loading, evaluation and checkpoints included
        per_second = count / max(now - self._tick, 1e-9)
        self.history.seen, self.history.unit = self.history.seen + count, unit
        self.history.seconds += now - self._tick
        self._tick = now
        logs[f"{unit}_per_s"] = round(per_second, 1)
        if unit == "tokens" and self.flops_per_token is not None and self.peak_flops is not None:
            logs["mfu"] = float(f"{mfu(per_second, self.flops_per_token, self.peak_flops):.4g}")
        self._memory.update()
        self._record(logs)
        if math.isfinite(loss):
            self._bar.update(self.step, loss, lr, per_second, unit)
        self._call("on_step_end", self, self.step, logs)
        if self.eval_every and self.step % self.eval_every == 0 and self.val_loader is not None:
            self._evaluate_and_log()
        return self.step

    def _non_finite(self, loss, logs):
        where = f"step {self.step} (epoch {self.epoch}, batch {self.batch_in_epoch})"
        if self.nan_policy == "stop":
            self._record({**logs, "event": "stopped: non-finite loss"})
            raise FloatingPointError(f"loss is {loss} at {where}: the run stopped before updating the weights. "
                                     f"Lower the learning rate or clip gradients; nan_policy='skip' skips such steps")
        logs["skipped"] = True
        self._bar.print(f"loss is {loss} at {where}: skipped that update")

    def _record(self, logs):
        if logs["kind"] in ("train", "eval"):
            getattr(self.history, logs["kind"]).append(logs)
        if self.log is not None:
            self.log.write(logs)

    def _call(self, hook, *args):
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(*args)

    def _progress(self, epochs, max_steps):
        total, batches = max_steps, self._batches_per_epoch()
        if epochs is not None and batches is not None:
            per_epoch = math.ceil(batches / self.accum_steps)
            total = epochs * per_epoch if max_steps is None else min(max_steps, epochs * per_epoch)
        return TrainingProgress(total, quiet=self.quiet)

    # ---------------------------------------------------------------- evaluation

    def evaluate(self, loader=None):
        """Loss and metrics over `loader` (default: the validation loader), in eval mode, without a graph."""
        loader = loader if loader is not None else self.val_loader
        if loader is None:
            raise ValueError("evaluate needs a loader: pass one, or give the Trainer a val_loader")
        batches = (_to_device(batch, self.device) for batch in loader)
        return evaluate(self.model, batches, self.loss_fn, self.metrics)

    def _evaluate_and_log(self):
        metrics = {f"val_{k}": v for k, v in self.evaluate().items()}
        self._record({"kind": "eval", "step": self.step, "epoch": self.epoch, **metrics})
        self._call("on_eval_end", self, self.step, metrics)
        if self.early_stopping is not None:
            self._check_early_stopping(metrics)

    def _check_early_stopping(self, metrics):
        name = self.early_stopping.monitor
        if name not in metrics:
            raise KeyError(f"early stopping monitors {name!r}, but evaluation gave {sorted(metrics)}")
        if self.early_stopping.update(metrics[name]):
            self.should_stop = True
            self.history.stop_reason = (f"early stopping: {name} did not improve for "
                                        f"{self.early_stopping.patience} evaluations (best {self.early_stopping.best:.4g})")
            self._bar.print(self.history.stop_reason)

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, path=None):
        """Write a checkpoint (default: `checkpoint_dir/step_N.safetensors`), then keep the newest `keep_last`."""
        if path is None and self.checkpoint_dir is None:
            raise ValueError("save_checkpoint needs a path, or a Trainer with checkpoint_dir")
        start = time.perf_counter()
        if path is None:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            path = checkpoint_path(self.checkpoint_dir, self.step)
        save_checkpoint(path, self.state_dict())
        if self.checkpoint_dir is not None and Path(path).parent == self.checkpoint_dir:
            prune_checkpoints(self.checkpoint_dir, self.keep_last, upto=self.step)
            remove_stale_temp_files(self.checkpoint_dir)  # left by saves that were killed
        self._saved_step = self.step
        self._record({"kind": "checkpoint", "step": self.step, "path": str(path),
                      "seconds": round(time.perf_counter() - start, 4)})
        return Path(path)

    def _after_load(self):
        """Bookkeeping once a checkpoint is loaded: the log forgets what the resumed run will redo."""
        if self.log is not None:
            self.log.truncate_after(self.step)
        self._saved_step, self._started = self.step, True

    def _read_checkpoint(self, path):
        """The state saved in checkpoint `path`, once it is known to fit this Trainer: restoring changes the
        model and the optimizer first, and a check failing after that would leave them half overwritten."""
        state = load_checkpoint(path, self.device)
        self._check_fits(state, path)
        return state

    def _check_fits(self, state, path):
        """ForeignCheckpointError naming what in checkpoint `path` does not fit this Trainer. Everything that
        loading could still trip over once the model is restored is checked here, before anything changes;
        the model checks its own names and shapes before it copies any of them."""
        missing = [key for key in ("model", "optimizer", "scheduler", "trainer", "rng")
                   if not isinstance(state, dict) or key not in state]
        if missing:
            raise ForeignCheckpointError(f"{path} is not a Trainer checkpoint: it has no "
                                         f"{', '.join(map(repr, missing))} (what Trainer.save_checkpoint writes)")
        try:
            self.optimizer._check_state_dict(state["optimizer"])
        except ValueError as err:
            raise ForeignCheckpointError(f"checkpoint {path}: {err}: build the optimizer as the saved run did") from None
        position = state["trainer"]["batch_in_epoch"]
        batches = self._batches_per_epoch()
        if batches is not None and position > batches:
            raise ForeignCheckpointError(f"checkpoint {path} stopped at batch {position} of an epoch, but this "
                                         f"train_loader has {batches} batches an epoch: build the DataLoader the "
                                         f"same way as the saved run")
        ours = _generators(self.train_loader)
        for saved in [state["rng"]["now"]] + ([state["rng"]["epoch_start"]] if position else []):
            _check_generator_count(ours, saved, source=f"checkpoint {path}")

    def _resume_latest(self):
        """Load the newest readable checkpoint; fall back past damaged ones, warning about each (one that
        does not fit is an error: an older one would not fit either)."""
        paths = list_checkpoints(self.checkpoint_dir)
        for path in reversed(paths):
            try:
                return self.load_checkpoint(path)
            except ForeignCheckpointError:
                raise
            except CheckpointError as err:
                warnings.warn(f"{err}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=3)
        if paths:
            raise CheckpointError(f"no readable checkpoint in {self.checkpoint_dir} (tried {len(paths)})")
        return None  # nothing to resume: the caller starts a fresh run

    def _seed_everything(self):
        """Seed tinytorch's generator and each DataLoader generator, each from `seed`."""
        for i, gen in enumerate(_generators(self.train_loader)):  # in place: whoever holds one keeps it
            seed = self.seed if i == 0 else [self.seed, i]  # the first as tt.manual_seed(seed) would
            gen.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        seed_gpus(self.seed)  # the GPUs' generators too, as tt.manual_seed(seed) would


# %% [markdown]
# ## The lesson's test fixtures
#
# Small models, loaders and spies that the lesson's graded tests build again and again,
# each the same way every time: a seeded linear regression, a module that records the mode
# it ran in, a classifier with its loader, and a callback that records the data position.
# They go to their own file, `tinytorch.training.fixtures`: they are no part of the `Trainer`.

# %%
#| export training.fixtures
"""The training lesson's test fixtures: small seeded models, loaders and spies; no part of the Trainer."""
import numpy as np

from tinytorch.core.autograd import is_grad_enabled
from tinytorch.nn.module import Module


def _tiny_regression(seed=0):
    """A linear model, SGD, and 16 samples (x, y), all from one seed."""
    import tinytorch as tt
    from tinytorch import nn
    tt.manual_seed(seed)
    model = nn.Linear(4, 2)
    rng = np.random.default_rng(seed)
    x = tt.tensor(rng.standard_normal((16, 4)).astype(np.float32))
    y = tt.tensor(rng.standard_normal((16, 2)).astype(np.float32))
    return model, tt.optim.SGD(model.parameters(), lr=0.1), x, y


class _Recorder(Module):
    """Returns its input; records (training mode?, grads on?) at each call."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((self.training, is_grad_enabled()))
        return x


def _tiny_classification(n=40, seed=0, dropout=0.0, shuffle=False, lr=0.1):
    """A 3-class classifier, AdamW, cross-entropy and a loader of `n` samples (batches of 8), all from one seed."""
    import tinytorch as tt
    from tinytorch import nn
    from tinytorch.data import DataLoader, TensorDataset
    tt.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = tt.tensor(rng.standard_normal((n, 5)).astype(np.float32)), tt.tensor(rng.integers(0, 3, n))
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=shuffle)
    return model, tt.optim.AdamW(model.parameters(), lr=lr), nn.functional.cross_entropy, loader


class _Positions:
    """A callback that records (epoch, batch_in_epoch) after each step."""

    def __init__(self):
        self.seen = []

    def on_step_end(self, trainer, step, logs):
        self.seen.append((trainer.epoch, trainer.batch_in_epoch))
