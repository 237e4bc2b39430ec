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
# # Module 01 — provided code
#
# The infrastructure under the lesson (`tensor.py`): devices and array namespaces,
# dtypes, the `Tensor` class itself (attributes, conversions, printing), creation
# functions, operand checking, and the ops the lesson does not ask you to write.
# It exports before the lesson, into the same files (`tinytorch/core/backend.py`,
# `tinytorch/core/tensor.py`). Read it when you are curious; you never edit it.

# %%
#| default_exp core.tensor

# %% [markdown]
# ## Devices, array namespaces, dtypes
#
# Every op is written once against an array namespace `xp`: `numpy` for `"cpu"`,
# `cupy` for `"cuda"`. CuPy is optional; without it, `"cuda"` says why it is unusable.

# %%
#| export core.backend
"""Devices, array namespaces (NumPy on cpu, CuPy on cuda), dtypes and the random generators."""
import sys
import threading

import numpy as np


class Device:
    """Where a tensor's numbers live: `cpu`, or `cuda:N` (the N-th GPU)."""

    __slots__ = ("type", "index")

    def __init__(self, type: str, index=None):
        self.type = type
        self.index = index

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self}')"

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


_DEVICES = {}


def device(spec=None) -> Device:
    """Parse `"cpu"`, `"cuda"` or `"cuda:N"` into a (cached) `Device`."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        spec = "cpu"
    found = _DEVICES.get(spec)
    if found is not None:
        return found
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string like 'cpu' or 'cuda:0' or a Device, got {spec!r}")
    kind, _, index = spec.partition(":")
    if kind == "cpu" and not index:
        dev = Device("cpu")
    elif kind == "cuda" and (not index or index.isdigit()):
        dev = Device("cuda", int(index or 0))
    else:
        raise ValueError(f"unknown device {spec!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    _DEVICES[spec] = dev
    return dev


_cuda_probe = None  # (cupy module or None, reason or None, device count), filled on first use


def _probe_cuda():
    """Import CuPy and find a usable GPU once; remember why not, if not."""
    global _cuda_probe
    if _cuda_probe is None:
        try:
            import cupy
        except ImportError as err:
            _cuda_probe = (None, f"CuPy is not installed ({err}); install it with "
                                 f"`pip install 'tinytorch[gpu-cuda12]'` (or gpu-cuda13; `tito doctor` "
                                 f"says which) to use device='cuda'", 0)
        else:
            try:
                count = cupy.cuda.runtime.getDeviceCount()
                reason = None if count > 0 else "CuPy is installed but no CUDA device is visible"
            except Exception as err:  # CUDARuntimeError: no driver, driver too old, ...
                count, reason = 0, f"CuPy is installed but CUDA is unusable: {err}"
            _cuda_probe = (cupy if reason is None else None, reason, count)
    return _cuda_probe


def cuda_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    return _probe_cuda()[0] is not None


def cuda_unavailable_reason():
    """Why `"cuda"` cannot be used here, or None when it can."""
    return _probe_cuda()[1]


def cuda_device_count() -> int:
    """How many CUDA devices CuPy sees (0 without a usable GPU)."""
    return _probe_cuda()[2]


class _CurrentGPU(threading.local):
    """The GPU this thread last made current (CUDA's current device is per host thread)."""
    index = None


_current_gpu = _CurrentGPU()


def get_xp(dev: Device):
    """The array namespace for a device: numpy for cpu, cupy (on that GPU) for cuda.

    cudaSetDevice runs only when the GPU changes, not on every op; code that switches GPUs
    with CuPy directly should switch through `get_xp` instead, or this cache goes stale."""
    if dev.type == "cpu":
        return np
    cupy, reason, count = _probe_cuda()
    if cupy is None:
        raise RuntimeError(f"cannot use device '{dev}': {reason}")
    if dev.index != _current_gpu.index:
        if dev.index >= count:
            raise RuntimeError(f"cannot use device '{dev}': only {count} CUDA device(s) visible")
        cupy.cuda.Device(dev.index).use()
        _current_gpu.index = dev.index
    return cupy


def to_device(array, dev):
    """Copy an array to `dev` (a Device or "cpu"/"cuda:N"; a no-op when it is already there)."""
    dev = device(dev)
    if dev.type == "cpu":
        return array if _on_host(array) else to_host(array)
    xp = get_xp(dev)
    return xp.asarray(array)


def to_numpy(array):
    """A NumPy view (cpu) or host copy (cuda) of an array."""
    return to_host(array)


def namespace_of(array):
    """numpy or cupy, whichever holds `array`."""
    return np if _on_host(array) else _probe_cuda()[0]


def scatter_add(target, index, values):
    """target[index] += values, adding repeated indices up (unlike `target[index] += values`)."""
    if _on_host(target):
        if isinstance(index, np.ndarray) and index.ndim == 1 and values.ndim >= 2 \
                and values.shape[0] == index.shape[0]:
            _scatter_add_rows(target, index, values)
        else:
            np.add.at(target, index, values)
    else:  # cupy.add.at: the kernel of cupyx.scatter_add, which warns on every call in CuPy 14
        namespace_of(target).add.at(target, index, values)


_ONE_HOT_LIMIT = 1 << 17  # table rows x ids up to which the embedding backward is one matrix product


def _scatter_add_rows(target, rows, values):
    """target[rows] += values for whole rows (an embedding's backward), ~4x faster than np.add.at:
    sort the rows, sum each run of equal rows with one reduceat, add each sum once."""
    if rows.size == 0:
        return
    rows = np.where(rows < 0, rows + target.shape[0], rows)  # -1 and n-1 are one row
    if target.shape[0] * rows.size <= _ONE_HOT_LIMIT and values.dtype.kind == "f":
        # few rows (a position table, a character vocabulary): one BLAS product with the one-hot
        # matrix, ~1.6x faster than sorting at 65 rows x 768 ids, ~2x slower at 1,000 rows
        one_hot = (np.arange(target.shape[0])[:, None] == rows[None, :]).astype(values.dtype)
        with np.errstate(invalid="ignore"):
            sums = one_hot @ values.reshape(rows.size, -1)
        if np.isfinite(sums).all():  # else 0·inf = nan spread an inf or nan to every row: sort instead
            target += sums.reshape(target.shape)
            return
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.concatenate(([True], sorted_rows[1:] != sorted_rows[:-1])))
    target[sorted_rows[starts]] += np.add.reduceat(values[order], starts, axis=0)


_generator = np.random.default_rng()
_seed = None  # manual_seed's seed, from which each GPU's generator is seeded
_gpu_generators = {}  # GPU index -> CuPy generator


def manual_seed(seed: int):
    """Seed the generator behind `rand`/`randn` (and module code that draws numbers), and every GPU's."""
    global _generator
    _generator = np.random.default_rng(seed)
    seed_gpus(seed)
    return _generator


def seed_gpus(seed):
    """Seed every GPU's generator from `seed` as `manual_seed` does, leaving the CPU's alone."""
    global _seed
    _seed = seed
    _gpu_generators.clear()  # redrawn from the new seed on first use


class _ThreadGenerator(threading.local):
    """A generator that replaces the default one in this thread only (see `thread_generator`)."""

    def __init__(self):
        self.generator = None


_thread_generator = _ThreadGenerator()


def default_generator():
    """The NumPy generator that `manual_seed` resets (or this thread's, inside `thread_generator`)."""
    own = _thread_generator.generator
    return _generator if own is None else own


class thread_generator:
    """`with thread_generator(gen):` the calling thread draws its CPU random numbers from `gen`.

    Threads that share a model draw their dropout masks from their own generators, so that a
    run is the same whatever order the threads happen to run in."""

    def __init__(self, generator):
        self.generator = generator

    def __enter__(self):
        self.saved, _thread_generator.generator = _thread_generator.generator, self.generator
        return self.generator

    def __exit__(self, *exc):
        _thread_generator.generator = self.saved


def generator_for(dev):
    """The generator that draws numbers where `dev` is: `default_generator()` on cpu; on cuda:N a
    CuPy generator (numbers made on the GPU, no copy) seeded from `manual_seed`'s seed and N."""
    dev = device(dev)
    if dev.type == "cpu":
        return default_generator()
    gen = _gpu_generators.get(dev.index)
    if gen is None:
        cupy = get_xp(dev)
        seed = None if _seed is None else int(np.random.SeedSequence([_seed, dev.index]).generate_state(1)[0])
        gen = _gpu_generators[dev.index] = cupy.random.default_rng(seed)
    return gen


def gpu_rng_states():
    """{GPU index: a copy of its generator's state, on that GPU} for each GPU that has a generator.

    CuPy keeps a generator's whole state, one cuRAND state per thread, in the int8 device array
    `bit_generator._state`; copying it there makes no host sync (saving it to a file does)."""
    return {i: gen.bit_generator._state.copy() for i, gen in sorted(_gpu_generators.items())}


def set_gpu_rng_state(index, state):
    """Give GPU `index`'s generator a state saved by `gpu_rng_states` (an array on any device)."""
    dev = Device("cuda", index)
    target = generator_for(dev).bit_generator._state
    if tuple(state.shape) != tuple(target.shape):
        raise ValueError(f"cuda:{index}'s generator state has {target.shape[0]} bytes, the saved one "
                         f"{state.shape[0]}: it was saved by another CuPy version; reseed instead")
    target[...] = get_xp(dev).asarray(state)  # in place: CuPy's kernels hold its address


# %% [markdown]
# ## Host syncs
#
# Reading a GPU number on the host (`loss.item()`, `int(x.max())`, `if mask.any():`)
# makes the CPU wait until the GPU has finished everything queued before it: the
# pipeline empties, and a training step that does this a dozen times runs at the
# speed of its launches. So every device→host conversion in TinyTorch goes through
# one function, `to_host`, and `count_host_syncs()` counts them: a training step
# should make none until the caller asks for a number. Checks on values (an index
# out of range) run on the GPU and raise at the next sync, like PyTorch's device-side
# asserts; on the CPU they raise at once.

# %%
#| export core.backend
_sync_counters = []  # the open count_host_syncs() counters
_pending_checks = []  # (0-d bool array on a GPU, error factory): raised at the next sync
_MAX_PENDING_CHECKS = 64  # past this many, check now: their arrays stay alive until then


def _on_host(array):
    return not hasattr(array, "get")  # CuPy's arrays copy to the host with .get(); NumPy's have none


def to_host(array):
    """The one device→host conversion: a NumPy array with `array`'s values (itself on cpu).

    On a GPU it waits for the queued work, copies, and raises any failed `check_later`."""
    on_host = _on_host(array)
    for counter in _sync_counters:
        if not on_host or counter.include_cpu:
            counter.count += 1
    if on_host:
        return np.asarray(array)
    raise_failed_checks()
    return array.get()


class HostSyncCounter:
    """How many `to_host` conversions ran while it was open (`count`)."""

    def __init__(self, include_cpu):
        self.include_cpu, self.count = include_cpu, 0


class count_host_syncs:
    """`with count_host_syncs() as c:` counts device→host conversions in `c.count`.

    `include_cpu=True` counts conversions of NumPy arrays too (where they cost nothing), so a
    test on a machine without a GPU sees every place that would wait on one."""

    def __init__(self, include_cpu=False):
        self.counter = HostSyncCounter(include_cpu)

    def __enter__(self):
        _sync_counters.append(self.counter)
        return self.counter

    def __exit__(self, *exc):
        _sync_counters.remove(self.counter)


def check_later(failed, error):
    """Raise `error()` if the 0-d boolean array `failed` holds True: now when it is a NumPy
    array, at the next `to_host` when it lives on a GPU (no sync now)."""
    if _on_host(failed):
        if failed:
            raise error()
        return
    _pending_checks.append((failed, error))
    if len(_pending_checks) >= _MAX_PENDING_CHECKS:
        to_host(failed)  # a counted sync, which reads (and raises) every pending check


def raise_failed_checks():
    """Read the pending GPU checks in one transfer and raise the first that failed (`to_host`
    calls it, and counts the sync)."""
    pending = list(_pending_checks)
    _pending_checks.clear()
    if not pending:
        return
    flags = namespace_of(pending[0][0]).stack([failed for failed, _ in pending]).get()
    for (_, error), failed in zip(pending, flags):
        if failed:
            raise error()


# %% [markdown]
# TinyTorch's dtypes *are* NumPy dtypes (CuPy shares them), named as in PyTorch.
# The cell defines `bool` last: inside this package, `bool` means the dtype, so
# code here never uses Python's `bool` by that name.

# %%
#| export core.backend
float16 = np.dtype("float16")
float32 = np.dtype("float32")
float64 = np.dtype("float64")
int8 = np.dtype("int8")
int16 = np.dtype("int16")
int32 = np.dtype("int32")
int64 = np.dtype("int64")
uint8 = np.dtype("uint8")
bool = np.dtype(np.bool_)  # noqa: A001 -- PyTorch's name for the dtype

SUPPORTED_DTYPES = (float16, float32, float64, int8, int16, int32, int64, uint8, bool)
DEFAULT_FLOAT = float32


def resolve_dtype(dtype):
    """Turn `float32`, `np.float32` or `"float32"` into a supported dtype (None stays None)."""
    if dtype is None:
        return None
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unsupported dtype {dtype!r}") from None
    if resolved not in SUPPORTED_DTYPES:
        names = ", ".join(d.name for d in SUPPORTED_DTYPES)
        raise TypeError(f"unsupported dtype {resolved.name}: TinyTorch supports {names}")
    return resolved


def is_floating(dtype):
    """True for float16/32/64, and bfloat16 (ml_dtypes' NumPy type, module 10's mixed precision)."""
    return dtype.kind == "f" or _is_bfloat16(dtype)


def _is_bfloat16(dtype):
    """True for ml_dtypes' bfloat16 (its kind is "V"; `.name` alone costs ~2 µs, so the kind is asked first)."""
    return dtype.kind == "V" and dtype.name == "bfloat16"


def _is_half(dtype):
    """True for the 16-bit floats, float16 and bfloat16: too narrow to sum (or, in bfloat16, to multiply) in, so
    PyTorch accumulates them in float32 and rounds the result back."""
    return dtype.itemsize < 4 and is_floating(dtype)


# %% [markdown]
# ## Argument checks: whole numbers
#
# Counts and sizes (a batch size, a number of heads, a patience, a LoRA rank) follow one
# rule in every module: a Python int or a NumPy integer (`np.int64(4)` from an array is
# fine), never a bool and never a float, not even `2.0` (PyTorch's DataLoader refuses
# `batch_size=2.0` too). A bad value raises ValueError naming the argument.

# %%
#| export core.backend
import builtins
import numbers


def _is_whole(value, minimum=1):
    """True for a whole number >= `minimum`: a Python int or a NumPy integer, not a bool, not a float (2.0 neither)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, builtins.bool) and value >= minimum


def _check_whole(value, name, minimum=1, hint=""):
    """`value` as a Python int, or ValueError "<name> must be a whole number >= <minimum>, got <value!r><hint>"."""
    if not _is_whole(value, minimum):
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}{hint}")
    return builtins.int(value)


# %% [markdown]
# ## Host memory: reuse what a training step frees
#
# Every training step allocates the same activations and gradients and frees them again.
# By default glibc's `malloc` maps each array over 128 KiB separately and gives freed memory
# at the top of its heap back to the kernel, so the next step faults every page in again,
# zero-filled by the kernel: on the GPT benchmark (module 09) that was ~12,700 page faults
# and ~30 ms of kernel time per step. Raising the two thresholds keeps up to 256 MiB of freed
# memory in the process for the next step — what PyTorch's caching allocator does for GPU
# memory. Peak memory is unchanged; resident memory just does not fall between steps.
# `TINYTORCH_KEEP_FREED_MEMORY=0` in the environment turns it off.

# %%
#| export core.backend
import ctypes
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def _keep_freed_memory(trim_bytes=256 << 20, mmap_bytes=32 << 20):
    """Let glibc keep freed heap memory (up to `trim_bytes`) and serve arrays up to `mmap_bytes`
    from it; True when set (Linux with glibc), False elsewhere or when turned off."""
    if os.environ.get("TINYTORCH_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    # both at once: setting either one stops glibc from adjusting the other itself
    return mallopt(_M_MMAP_THRESHOLD, mmap_bytes) == 1 and mallopt(_M_TRIM_THRESHOLD, trim_bytes) == 1


_KEEPS_FREED_MEMORY = _keep_freed_memory()


# %% [markdown]
# ## The tensor, and `from_op`
#
# `from_op` builds every op's output and records the graph only when grad mode is on
# and an input requires grad. The `Tensor` class is a thin shell: its methods call the
# op functions (`add`, `sum`, ...) that the lesson defines later in the same file.

# %%
#| export
import builtins
import functools
import math
import threading
import weakref
from collections import namedtuple

import numpy as np

from tinytorch.core.backend import (
    DEFAULT_FLOAT, Device, _is_bfloat16, _is_half, device, get_xp, is_floating, namespace_of, resolve_dtype,
    scatter_add, to_device, to_host, to_numpy, generator_for,
)

_F64 = np.dtype("float64")
_F32 = np.dtype("float32")


class _GradMode(threading.local):
    """Whether ops record the graph; per thread, like PyTorch. Module 02 flips it."""

    def __init__(self):
        self.enabled = True


_grad_mode = _GradMode()


class _AutocastState(threading.local):
    """The mixed-precision policy in force, per thread: module 10's `autocast` installs it."""

    def __init__(self):
        self.run = None  # run(op_name, fn, args, kwargs) -> fn's result in the policy's dtypes; None: off


_autocast_state = _AutocastState()


class _Writes:
    """In-place writes through the Tensor API (`x[i] = v`, `x += y` under no_grad, an optimizer's step),
    by the array that owns the memory, so that views and detached tensors count too. A node whose inputs
    or output were written after it was recorded would differentiate the new numbers: backward refuses it
    instead (PyTorch's version counters). Each entry holds a weak reference to its array, so an id reused
    by a new array is not taken for the old one, and entries of arrays that are gone are dropped."""
    count = 0
    last = {}  # id(owner array) -> (weak reference to it, `count` at its latest write)
    prune_at = 1024  # drop the dead entries when there are this many (then twice the live ones)
    lock = threading.Lock()  # writes may come from several threads (ThreadedStep, data loaders)


def _owner(array):
    """The array that owns `array`'s memory; `array` itself when that owner takes no weak reference
    (bytes under np.frombuffer)."""
    base = getattr(array, "base", None)
    if base is None:
        return array
    try:
        weakref.ref(base)
        return base
    except TypeError:
        return array


def _wrote(tensor):
    """Record an in-place write to tensor's memory."""
    owner = _owner(tensor.data)
    try:
        ref = weakref.ref(owner)
    except TypeError:  # an array type without weak references: trust the id
        ref = None
    with _Writes.lock:
        _Writes.count += 1
        _Writes.last[id(owner)] = (ref, _Writes.count)
        if len(_Writes.last) >= _Writes.prune_at:
            _Writes.last = {key: (ref, when) for key, (ref, when) in _Writes.last.items()
                            if ref is None or ref() is not None}
            _Writes.prune_at = builtins.max(1024, 2 * len(_Writes.last))


def _written_since(array, moment):
    """Was `array`'s memory written through a tensor after write number `moment`?"""
    owner = _owner(array)
    ref, when = _Writes.last.get(id(owner), (None, 0))
    return when > moment and (ref is None or ref() is owner)


def _check_unwritten(node):
    """Refuse to differentiate `node` if its inputs or output were written in place since it was recorded."""
    for t in (node, *node._parents):
        if t is not None and _written_since(t.data, node._seen):
            what = "its output" if t is node else f"its input of shape {tuple(t.shape)}"
            op = node._backward_fn.__name__.removesuffix("_backward")
            raise RuntimeError(
                f"the gradient of {op}: {what} was changed in place (x[i] = v, x += y under no_grad, an optimizer's "
                f"step) after the op recorded it, so its gradient would use the new numbers; change a copy "
                f"(x = x.clone()), or make the change before the forward pass or after backward")


def _autocast_call(name, fn, *args, **kwargs):
    """fn(*args, **kwargs), in the dtype `autocast` picks for op `name`; a plain call while it is off."""
    run = _autocast_state.run
    return fn(*args, **kwargs) if run is None else run(name, fn, args, kwargs)


def _autocast_op(name):
    """Decorator: let `autocast` (module 10) choose the dtype op `name` runs in."""
    def decorate(fn):
        def op(*args, **kwargs):
            return _autocast_call(name, fn, *args, **kwargs)
        return functools.wraps(fn)(op)
    return decorate


def _bfloat16_in_float32(fn):
    """Decorator for matmul and linear (module 03): ml_dtypes' `@` returns float32 for two bfloat16 arrays, where
    PyTorch keeps bfloat16. When the first two arguments are bfloat16 tensors, they (and any other bfloat16 tensor
    argument: linear's bias) go in as float32 and the output is rounded once, back to bfloat16; `_cast`'s backward
    brings the gradients back to bfloat16 too. Every other call goes straight to `fn`."""
    def op(*args, **kwargs):
        ts = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]  # linear(x, bias=None, weight=w)
        if len(ts) > 1 and _is_bfloat16(ts[0].data.dtype) and _is_bfloat16(ts[1].data.dtype):
            dtype = ts[0].data.dtype

            def up(t):
                return _cast(t, _F32) if isinstance(t, Tensor) and t.data.dtype == dtype else t
            return _cast(fn(*map(up, args), **{k: up(v) for k, v in kwargs.items()}), dtype)
        return fn(*args, **kwargs)
    return functools.wraps(fn)(op)


def _bfloat16_number_in_float32(fn):
    """Decorator for the arithmetic ops: ml_dtypes computes a bfloat16 array with a Python float in float32 and
    returns float32, and so would every gradient, where PyTorch keeps bfloat16 (a number never changes a tensor's
    float dtype). A bfloat16 tensor with a number runs in float32 and is rounded once, back to bfloat16; `_cast`'s
    backward rounds the gradient back to bfloat16 too. Every other call goes straight to `fn`, after a type check
    (and, with a number, a dtype check): no cast, no copy."""
    def op(a, b):
        if isinstance(a, Tensor):
            if isinstance(b, Tensor) or not _is_number(b) or not _is_bfloat16(a.data.dtype):
                return fn(a, b)
            return _cast(fn(_cast(a, _F32), b), a.data.dtype)
        if isinstance(b, Tensor) and _is_number(a) and _is_bfloat16(b.data.dtype):
            return _cast(fn(a, _cast(b, _F32)), b.data.dtype)
        return fn(a, b)
    return functools.wraps(fn)(op)


def _is_number(value):
    return isinstance(value, (builtins.int, builtins.float, np.generic))


def from_op(data, device, inputs=None, backward=None):
    """The tensor an op returns: the public way to define an op with its backward.

    `data` is the op's output array (on `device`), `inputs` the tensors the op read
    (None for plain numbers), and `backward(grad)` returns one gradient array (or None)
    per input. The graph is recorded only when grad mode is on and an input requires grad.
    """
    data, dev, parents = data, device, inputs
    if isinstance(data, np.generic):  # NumPy turns 0-d results into scalars; keep arrays
        data = np.asarray(data)
    out = object.__new__(Tensor)
    out.data = data
    out._device = dev
    out.grad = None
    if parents is not None and _grad_mode.enabled:
        for p in parents:
            if p is not None and p.requires_grad:
                out.requires_grad = True
                out._parents = parents
                out._backward_fn = backward
                out._seen = _Writes.count
                return out
    out.requires_grad = False
    out._parents = None
    out._backward_fn = None
    return out


# %%
#| export
class Tensor:
    """An n-dimensional array on a device, that can record how it was computed."""

    __slots__ = ("data", "requires_grad", "grad", "_parents", "_backward_fn", "_seen", "_device", "__weakref__")
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        dev = _device_of(device)
        array = _to_array(data, resolve_dtype(dtype))
        self.data = to_device(array, dev)
        self._device = dev
        self.grad = None
        self._parents = None
        self._backward_fn = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # --- attributes ----------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: self._device)
    is_leaf = property(lambda self: self._parents is None)

    @property
    def _backward(self):
        """The function that sends a gradient back to `_parents`; asking for it checks that nothing it
        needs was written in place since the op recorded it."""
        fn = self._backward_fn
        if fn is not None and self._seen != _Writes.count:
            _check_unwritten(self)
        return fn

    @_backward.setter
    def _backward(self, fn):
        self._backward_fn = fn
    T = property(lambda self: permute(self, *reversed(range(self.data.ndim))))

    def numel(self):
        return int(self.data.size)

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    # --- arithmetic (each calls the op function the lesson defines) ---------------
    def __add__(self, other): return add(self, other)
    def __radd__(self, other): return add(other, self)
    def __sub__(self, other): return sub(self, other)
    def __rsub__(self, other): return sub(other, self)
    def __mul__(self, other): return mul(self, other)
    def __rmul__(self, other): return mul(other, self)
    def __truediv__(self, other): return div(self, other)
    def __rtruediv__(self, other): return div(other, self)
    def __pow__(self, other): return pow(self, other)
    def __rpow__(self, other): return pow(other, self)
    def __matmul__(self, other): return matmul(self, other)  # matmul carries the autocast hook
    def __rmatmul__(self, other): return matmul(other, self)
    def __neg__(self): return neg(self)

    # x += y: under no_grad (a hand-written weight update) in place on x's array, as PyTorch, so that
    # every name for x (a model's parameter) sees it; while a graph is recorded, a new tensor, so that
    # arrays the graph saved are never changed under it
    def __iadd__(self, other): return _in_place(self, other, add, "add", "+=")
    def __isub__(self, other): return _in_place(self, other, sub, "subtract", "-=")
    def __imul__(self, other): return _in_place(self, other, mul, "multiply", "*=")
    def __itruediv__(self, other): return _in_place(self, other, div, "divide", "/=")

    def __lt__(self, other): return _compare(self, other, "less")
    def __le__(self, other): return _compare(self, other, "less_equal")
    def __gt__(self, other): return _compare(self, other, "greater")
    def __ge__(self, other): return _compare(self, other, "greater_equal")
    def __eq__(self, other): return _compare(self, other, "equal")
    def __ne__(self, other): return _compare(self, other, "not_equal")
    __hash__ = object.__hash__  # tensors are hashed by identity, as in PyTorch

    def add(self, other): return add(self, other)
    def sub(self, other): return sub(self, other)
    def mul(self, other): return mul(self, other)
    def div(self, other): return div(self, other)
    def matmul(self, other): return matmul(self, other)

    # --- reductions ----------------------------------------------------------
    def sum(self, dim=None, keepdim=False): return sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return mean(self, dim, keepdim)
    def var(self, dim=None, correction=1, keepdim=False): return var(self, dim, correction, keepdim)
    def max(self, dim=None, keepdim=False): return max(self, dim, keepdim)
    def min(self, dim=None, keepdim=False): return min(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False): return argmax(self, dim, keepdim)
    def argmin(self, dim=None, keepdim=False): return argmin(self, dim, keepdim)
    def all(self, dim=None, keepdim=False): return all(self, dim, keepdim)
    def any(self, dim=None, keepdim=False): return any(self, dim, keepdim)
    def isnan(self): return isnan(self)
    def isinf(self): return isinf(self)
    def isfinite(self): return isfinite(self)

    # --- shape -----------------------------------------------------------------
    def reshape(self, *shape): return reshape(self, *shape)
    def view(self, *shape): return reshape(self, *shape)
    def transpose(self, dim0, dim1): return transpose(self, dim0, dim1)
    def permute(self, *dims): return permute(self, *dims)
    def squeeze(self, dim=None): return squeeze(self, dim)
    def unsqueeze(self, dim): return unsqueeze(self, dim)
    def expand(self, *sizes): return expand(self, *sizes)
    def flatten(self, start_dim=0, end_dim=-1): return flatten(self, start_dim, end_dim)
    def split(self, split_size_or_sections, dim=0): return split(self, split_size_or_sections, dim)
    def __getitem__(self, index): return getitem(self, index)

    def __setitem__(self, index, value):
        if self.requires_grad and _grad_mode.enabled:
            raise RuntimeError("in-place assignment to a tensor that requires grad would corrupt its "
                               "graph; build a new tensor with tinytorch.where or masked_fill")
        if isinstance(value, Tensor) and value.requires_grad and _grad_mode.enabled:
            raise RuntimeError("tensor[index] = value: value requires grad, but assignment records no graph, so "
                               "its gradient would be lost; build the tensor with tinytorch.cat, stack or where")
        xp = get_xp(self._device)
        if isinstance(value, Tensor):
            if value._device != self._device:
                _device_mismatch(self, value, "setitem")
            value = value.data
        elif not isinstance(value, (builtins.int, builtins.float, builtins.bool)):
            value = xp.asarray(value)  # CuPy refuses lists and NumPy arrays as the value
        mask = _whole_mask(index, self.data, value, xp)
        if mask is not None:  # x[mask] = v as a select on the device: nonzero() would sync
            where = mask.reshape(mask.shape + (1,) * (self.ndim - mask.ndim))
            xp.copyto(self.data, value, casting="unsafe", where=where)  # casts as x[i] = v does
        else:
            index, _ = _index_arrays(index, self._device)
            self.data[index] = value
        _wrote(self)

    # --- elementwise -----------------------------------------------------------
    def exp(self): return exp(self)
    def log(self): return log(self)
    def sqrt(self): return sqrt(self)
    def abs(self): return abs(self)
    def tanh(self): return tanh(self)
    def sigmoid(self): return sigmoid(self)
    def relu(self): return relu(self)
    def gelu(self, approximate="none"): return gelu(self, approximate)
    def clamp(self, min=None, max=None): return clamp(self, min, max)
    def softmax(self, dim): return softmax(self, dim)
    def log_softmax(self, dim): return log_softmax(self, dim)
    def masked_fill(self, mask, value): return masked_fill(self, mask, value)

    # --- autograd ------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad` (the engine is module 02's)."""
        from tinytorch.core.autograd import backward  # the engine lives in the next module
        backward(self, gradient, retain_graph)

    def detach(self):
        """The same numbers (the same memory), cut from the graph."""
        return from_op(self.data, self._device)

    def clone(self):
        """A copy in new memory, still in the graph: change it in place without touching self."""
        def clone_backward(g):
            return (g,)
        return from_op(self.data.copy(), self._device, (self,), clone_backward)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not is_floating(self.data.dtype):
            raise RuntimeError(f"only floating-point tensors can require gradients, "
                               f"this one is {self.data.dtype.name}")
        if not requires_grad and self._parents is not None:
            raise RuntimeError("requires_grad can only be turned off on leaf tensors; use .detach()")
        self.requires_grad = requires_grad
        return self

    # --- conversions -----------------------------------------------------------
    def to(self, *args, dtype=None, device=None):
        for arg in args:
            if isinstance(arg, (str, Device)):
                device = arg
            else:
                dtype = arg
        out = self
        if dtype is not None:
            out = _cast(out, resolve_dtype(dtype))
        if device is not None:
            out = _move(out, _device_of(device))
        return out

    def cpu(self): return self.to("cpu")
    def cuda(self, index=0): return self.to(f"cuda:{index}")
    def float(self): return self.to(DEFAULT_FLOAT)
    def double(self): return self.to(np.dtype("float64"))
    def half(self): return self.to(np.dtype("float16"))
    def long(self): return self.to(np.dtype("int64"))
    def int(self): return self.to(np.dtype("int32"))
    def bool(self): return self.to(np.dtype(np.bool_))

    def numpy(self):
        """The numbers as a NumPy array (a view on cpu, a host copy on cuda)."""
        return to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        array = to_numpy(self.data)
        return array if dtype is None else array.astype(dtype)

    def item(self):
        if self.data.size != 1:
            raise RuntimeError(f"a Tensor with {self.data.size} elements cannot be converted to a "
                               f"Python number; .item() needs exactly one")
        return to_host(self.data).item()  # the one sync a training loop asks for

    def tolist(self):
        return to_numpy(self.data).tolist()

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a Tensor with {self.data.size} elements is "
                               f"ambiguous; use .any() or .all() on .data, or compare .item()")
        return builtins.bool(to_host(self.data).item())

    def __float__(self): return builtins.float(self.item())
    def __int__(self): return builtins.int(self.item())

    def __index__(self):
        """A one-element integer (or bool) tensor as a Python int: `range(t)`, `[...][t]`, `operator.index(t)`."""
        if self.data.size != 1 or self.data.dtype.kind not in "biu":
            raise TypeError(f"only integer tensors of a single element can be converted to an index, got a "
                            f"{self.data.dtype.name} tensor of shape {tuple(self.shape)}")
        return builtins.int(self.item())

    def __repr__(self):
        array = to_numpy(self.data)
        body = _format_array(array)
        extras = []
        if self._device.type != "cpu":
            extras.append(f"device='{self._device}'")
        if array.dtype.name not in ("float32", "int64", "bool"):
            extras.append(f"dtype={array.dtype.name}")
        if self._backward_fn is not None:  # (the function's name only: no check of the saved arrays)
            name = self._backward_fn.__name__.replace("_backward", "").title().replace("_", "")
            extras.append(f"grad_fn=<{name}Backward>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"


# %% [markdown]
# ## Making tensors
#
# Python floats become `float32`, ints `int64`; a NumPy array keeps its dtype. A ragged
# list gets an error naming the first dimension whose lengths disagree.

# %%
#| export
def _device_of(spec):
    return device(spec)


def _format_array(array):
    """Print numbers as PyTorch does: `1.` for whole floats, else 4 decimals (or 4-digit e-notation)."""
    options = dict(separator=", ", prefix="tensor(", threshold=1000, edgeitems=3)
    floating = is_floating(array.dtype)
    finite = array[np.isfinite(array)] if floating else array.reshape(-1)[:0]
    if finite.size and (finite != np.round(finite)).any():
        magnitudes = np.abs(finite[finite != 0]).astype(_F64)  # float16 would overflow at 1e8 (and warn)
        big, small = magnitudes.max(), magnitudes.min()
        spec = "{:.4e}" if big >= 1e8 or small < 1e-4 or big / small > 1e3 else "{:.4f}"
        width = builtins.max(len(spec.format(v)) for v in finite.ravel())
        options["formatter"] = {"float_kind": lambda v: spec.format(v).rjust(width)}
    return np.array2string(array, **options)


def _ragged_message(data):
    """Explain where a nested list stops being rectangular."""
    level, dim = [data], 0
    while True:
        is_seq = [isinstance(x, (list, tuple)) for x in level]
        if not builtins.any(is_seq):
            return "cannot build a tensor from this data"
        if not builtins.all(is_seq):
            return (f"ragged nested sequence: dimension {dim} mixes numbers and lists; "
                    f"every element at one depth must have the same shape")
        lengths = sorted({len(x) for x in level})
        if len(lengths) > 1:
            return (f"ragged nested sequence: dimension {dim} has lengths {lengths}; "
                    f"a tensor needs equal lengths at every depth")
        level, dim = [y for x in level for y in x], dim + 1


def _to_array(data, dtype):
    """Convert user data to a NumPy (or CuPy) array with TinyTorch's dtype rules."""
    if isinstance(data, Tensor):
        data = data.data
    if hasattr(data, "__cuda_array_interface__"):  # already a CuPy array
        array = data.astype(dtype) if dtype is not None else data.copy()
    elif isinstance(data, (np.ndarray, np.generic)):  # a NumPy scalar keeps its dtype too, as in PyTorch
        array = np.array(data, dtype=dtype)
    else:
        try:
            array = np.array(data, dtype=dtype)
        except ValueError as err:
            if "inhomogeneous" in str(err) or "sequence" in str(err):
                raise ValueError(_ragged_message(data)) from None
            raise
        if dtype is None and array.dtype is _F64:
            array = array.astype(DEFAULT_FLOAT)  # Python floats mean float32 here
    resolve_dtype(array.dtype)  # raises TypeError for strings, objects, complex...
    return array


def tensor(data, dtype=None, device=None, requires_grad=False):
    """Build a tensor from nested lists, numbers or an array (always a copy)."""
    return Tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


def from_numpy(array):
    """Wrap a NumPy array without copying; the tensor keeps its dtype and shares memory."""
    resolve_dtype(array.dtype)
    return from_op(array, device("cpu"))


def _sizes(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = size[0]
    return tuple(builtins.int(s) for s in size)


def _filled(shape, fill, dtype, dev, requires_grad):
    dev = _device_of(dev)
    xp = get_xp(dev)
    out = from_op(xp.full(shape, fill, dtype=dtype), dev)
    return out.requires_grad_(True) if requires_grad else out


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _filled(_sizes(size), 0, resolve_dtype(dtype) or DEFAULT_FLOAT, device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _filled(_sizes(size), 1, resolve_dtype(dtype) or DEFAULT_FLOAT, device, requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    if dtype is None:
        dtype = np.array(fill_value).dtype
        dtype = DEFAULT_FLOAT if dtype is _F64 else dtype
    return _filled(_sizes((size,)), fill_value, resolve_dtype(dtype), device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None:
        all_ints = builtins.all(isinstance(v, (builtins.int, np.integer)) for v in (start, end, step))
        dtype = np.dtype("int64") if all_ints else DEFAULT_FLOAT
    dev = _device_of(device)
    out = from_op(get_xp(dev).arange(start, end, step, dtype=resolve_dtype(dtype)), dev)
    return out.requires_grad_(True) if requires_grad else out


def _random(draw, size, dtype, device, requires_grad, default_dtype=DEFAULT_FLOAT):
    dtype = resolve_dtype(dtype) or default_dtype
    dev = _device_of(device)
    array = draw(generator_for(dev), _sizes(size), dtype)  # made where the tensor lives: no copy
    out = from_op(to_device(array, dev), dev)
    return out.requires_grad_(True) if requires_grad else out


def rand(*size, dtype=None, device=None, requires_grad=False):
    """Uniform numbers in [0, 1), drawn by the device's generator (as in PyTorch, a seed gives
    different numbers on cpu and on cuda, the same ones each run on the same device)."""
    return _random(lambda g, s, d: g.random(s, dtype=d), size, dtype, device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    """Standard normal numbers (mean 0, std 1)."""
    return _random(lambda g, s, d: g.standard_normal(s, dtype=d), size, dtype, device, requires_grad)


def randint(*args, size=None, dtype=None, device=None, requires_grad=False):
    """Integers drawn uniformly from [low, high): `randint(high, size)` or `randint(low, high, size)`."""
    if size is None and args:
        *args, size = args
    if len(args) not in (1, 2) or size is None:
        raise TypeError("randint takes (high, size) or (low, high, size), e.g. randint(0, 10, (3,))")
    low, high = (0, *args) if len(args) == 1 else args
    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    return _random(lambda g, s, d: g.integers(low, high, s, dtype=d), (size,), dtype, device, requires_grad,
                   default_dtype=np.dtype("int64"))


def _like(fn, t, dtype, device, requires_grad, *args):
    return fn(*args, t.shape, dtype=dtype or t.dtype, device=device or t.device,
              requires_grad=requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return _like(zeros, t, dtype, device, requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return _like(ones, t, dtype, device, requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    return _like(rand, t, dtype, device, requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    return _like(randn, t, dtype, device, requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


# %% [markdown]
# ## Operands of binary ops
#
# `_operands` splits each operand into (tensor or None, raw value) and refuses two
# devices; `_binary` turns NumPy's broadcasting error into one naming both shapes;
# `_keep_float32` undoes NumPy's promotion of `int / int` to float64.

# %%
#| export
def _device_mismatch(a, b, name):
    raise RuntimeError(f"{name}: expected all tensors on the same device, but found "
                       f"{a._device} and {b._device}; move one with .to()")


def _operands(a, b, name):
    """Split two operands into (tensor or None, raw value) pairs on one device."""
    ta = a if isinstance(a, Tensor) else None
    tb = b if isinstance(b, Tensor) else None
    if ta is not None and tb is not None and ta._device is not tb._device and ta._device != tb._device:
        _device_mismatch(ta, tb, name)
    return ta, (a.data if ta is not None else _constant(a, tb, name)), \
        tb, (b.data if tb is not None else _constant(b, ta, name))


_PYTHON_NUMBERS = frozenset((builtins.int, builtins.float))


def _constant(value, ref, name):
    """A plain number (or NumPy array) used with a tensor: allowed, with no gradient."""
    if type(value) in _PYTHON_NUMBERS:
        return value
    if isinstance(value, np.generic):  # NumPy scalars (np.float64 is a Python float too) would force their
        return value.item()  # dtype (float16 * np.float64 was float32); Python's adapt
    if isinstance(value, (builtins.int, builtins.float)):  # bool, and subclasses of int and float
        return value
    if isinstance(value, np.ndarray):
        return to_device(value, ref._device)
    raise TypeError(f"{name}: unsupported operand type {type(value).__name__}; "
                    f"use a Tensor or a number")


def _shape_of(x):
    return tuple(getattr(x, "shape", ()))


def _in_place(x, other, op, ufunc, symbol):
    """`x symbol other` for the Tensor's in-place operators (see the class): `op` (the lesson's) while a
    graph is recorded, else the array function `ufunc` into x's own array."""
    if _grad_mode.enabled:
        return op(x, other)
    xp = get_xp(x._device)
    other = _operands(x, other, symbol)[3]  # an array on x's device, or a number
    try:
        getattr(xp, ufunc)(x.data, other, out=x.data, casting="same_kind")
    except TypeError:  # NumPy's UFuncTypeError: the result's dtype does not fit x's
        raise TypeError(f"{symbol} in place: the result of {x.dtype} {symbol[0]} {getattr(other, 'dtype', type(other).__name__)} "
                        f"cannot be stored in the tensor's {x.dtype} (as in PyTorch); write x = x {symbol[0]} y "
                        f"for a new tensor") from None
    except ValueError:
        raise ValueError(f"{symbol} in place: shape {_shape_of(other)} does not broadcast to the tensor's shape "
                         f"{tuple(x.shape)} (in place, the result keeps the tensor's shape)") from None
    _wrote(x)
    return x


def _binary(name, fn, x, y):
    """Run an elementwise array function; explain a broadcasting failure with both shapes."""
    try:
        return fn(x, y)
    except ValueError:
        raise ValueError(f"{name}: shapes {_shape_of(x)} and {_shape_of(y)} cannot be broadcast "
                         f"together (sizes must match or be 1, comparing from the right)") from None


def _keep_float32(out, ta, tb):
    """Give `out` the dtype PyTorch gives. NumPy promotes int / int and int * float to float64 and lets a
    0-d array widen the other operand; TinyTorch keeps float32 unless asked, as PyTorch does."""
    if ta is None or tb is None:  # with a Python number NumPy already agrees, but for int / int
        if out.dtype is _F64 and not ((ta is not None and ta.data.dtype is _F64) or
                                      (tb is not None and tb.data.dtype is _F64)):
            t = ta if ta is not None else tb  # (ml_dtypes' where of bfloat16 and a float is float64, too)
            return out.astype(t.data.dtype if t is not None and _is_bfloat16(t.data.dtype) else _F32)
        return out
    a, b = ta.data, tb.data
    if a.dtype is b.dtype and out.dtype is a.dtype:  # the usual case
        return out
    want = _promoted(a, b)
    if want.kind in "biu" and out.dtype.kind == "f":  # int / int is a float: the default one
        want = _F32
    return out if out.dtype == want else out.astype(want)


_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "V": 2}  # "V": bfloat16, the one supported dtype of that kind


def _promoted(a, b):
    """PyTorch's result dtype for arrays a and b: a float beats an int of any width (int64 with float16
    is float16), and a 0-d operand counts only if it is of a higher kind than the other."""
    if (a.ndim == 0) != (b.ndim == 0):
        shaped, scalar = (b, a) if a.ndim == 0 else (a, b)
        if _KIND_RANK.get(scalar.dtype.kind, 3) <= _KIND_RANK.get(shaped.dtype.kind, 3):
            return shaped.dtype
        return scalar.dtype
    ka, kb = _KIND_RANK.get(a.dtype.kind, 3), _KIND_RANK.get(b.dtype.kind, 3)
    if ka == 2 and kb == 1:
        return a.dtype
    if kb == 2 and ka == 1:
        return b.dtype
    return np.promote_types(a.dtype, b.dtype)


def _dev(ta, tb):
    return ta._device if ta is not None else tb._device


def _needs(t):
    """Does gradient have to flow into t?"""
    return t is not None and t.requires_grad


# %%
#| export
def _xp_add(x, y): return x + y
def _xp_sub(x, y): return x - y
def _xp_mul(x, y): return x * y
def _xp_div(x, y): return x / y


def _integral(v):
    dtype = getattr(v, "dtype", None)  # an array or NumPy scalar; else a Python number (bool is an int)
    return dtype.kind in "biu" if dtype is not None else isinstance(v, builtins.int)


def _xp_pow(x, y):
    with np.errstate(all="ignore"):  # 0 ** -1 = inf and (-2) ** 0.5 = nan are results, as in PyTorch
        if _integral(x) and _integral(y):  # NumPy refuses integers to negative integer powers
            if not hasattr(y, "dtype"):
                if y < 0:  # a tensor to a negative number: PyTorch refuses too
                    raise RuntimeError("pow: integers to negative integer powers are not allowed; "
                                       "make the tensor a float first")
            else:  # PyTorch truncates toward 0: 2 ** -1 = 0, while 1 and -1 to any power stay 1 or -1
                return namespace_of(y).where((y < 0) & (builtins.abs(x) != 1), 0, x ** builtins.abs(y))
        return x ** y


def neg(a):
    """-a."""
    def neg_backward(g):
        return (-g,)
    return from_op(-a.data, a._device, (a,), neg_backward)


def _compare(a, b, ufunc):
    """Elementwise comparison: a bool tensor, outside the graph."""
    ta, x, tb, y = _operands(a, b, ufunc)
    xp = get_xp(_dev(ta, tb))
    return from_op(_binary(ufunc, getattr(xp, ufunc), x, y), _dev(ta, tb))


def _matmul_shapes_error(x, y):
    return RuntimeError(f"matmul: shapes {tuple(x.shape)} and {tuple(y.shape)} cannot be multiplied "
                       f"(inner dimensions must match: the last of the first and the "
                       f"{'first' if y.ndim == 1 else 'second-to-last'} of the second)")


def _check_matmul(ta, tb, x, y):
    """Refuse what `@` cannot multiply, naming both shapes (NumPy's message names neither)."""
    if ta is None or tb is None or x.ndim == 0 or y.ndim == 0:
        raise RuntimeError("matmul needs two tensors of at least 1 dimension")
    if x.shape[-1] != y.shape[0 if y.ndim == 1 else -2]:
        raise _matmul_shapes_error(x, y)
    if x.ndim > 2 and y.ndim > 2 and x.shape[:-2] != y.shape[:-2]:
        try:
            np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        except ValueError:  # batch dimensions that do not broadcast
            raise _matmul_shapes_error(x, y) from None


def _dims(dim, ndim):
    """Normalise `dim` (None, int, or tuple) to None or a sorted tuple of axes >= 0."""
    if dim is None:
        return None
    dims = (dim,) if isinstance(dim, (builtins.int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise IndexError(f"dimension out of range (expected to be in range of "
                             f"[{-builtins.max(ndim, 1)}, {builtins.max(ndim, 1) - 1}], but got {d})")
        out.append(d % builtins.max(ndim, 1))
    return tuple(sorted(out))


def _reduce_axes(dim, ndim):
    """The axes a reduction (sum, mean, var) runs over: None for all of them. As in PyTorch, an empty
    `dim` (() or []) means all too (NumPy's axis=() reduces nothing), and so does any dim of a 0-d tensor."""
    axes = _dims(dim, ndim)
    return axes if axes and ndim else None


def _shape_arg(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape


def _check_permutation(x, dims):
    """`dims` as given, after checking it names each dimension of x exactly once."""
    if sorted(d % builtins.max(x.ndim, 1) for d in dims) != list(range(x.ndim)):
        raise RuntimeError(f"permute: {tuple(dims)} is not a permutation of the "
                           f"{x.ndim} dimensions of a tensor of shape {tuple(x.shape)}")
    return dims


# %% [markdown]
# ## Reductions and shape ops built on the lesson's
#
# `var` has its own backward, 2(x - μ)/(N - c); `argmax`/`argmin` return indices,
# outside the graph; `squeeze`, `unsqueeze`, `flatten` are `reshape`s; `expand` is
# broadcasting made explicit, so its backward is `unbroadcast`.

# %%
#| export
MinMax = namedtuple("MinMax", ["values", "indices"])


def _require_float(x, name):
    if not is_floating(x.data.dtype):
        raise RuntimeError(f"{name}() needs a floating-point tensor, got {x.data.dtype.name}; "
                           f"convert with .float()")


def _count(shape, axes):
    n = 1
    for a in (range(len(shape)) if axes is None else axes):
        n *= shape[a]
    return n


def var(x, dim=None, correction=1, keepdim=False):
    """Variance with Bessel's correction by default (divide by N - 1), as PyTorch."""
    if _is_half(x.dtype):  # float16 and bfloat16 sum in float32, as in PyTorch
        return _cast(var(_cast(x, _F32), dim, correction, keepdim), x.dtype)
    _require_float(x, "var")
    xp = get_xp(x._device)
    axes = _reduce_axes(dim, x.ndim)
    n = _count(x.shape, axes)
    dof = builtins.max(n - correction, 0)  # no degrees of freedom left: inf or nan, as PyTorch
    centered = x.data - x.data.mean(axis=axes, keepdims=True)
    out = (centered * centered).sum(axis=axes, keepdims=keepdim) / dof

    def var_backward(g):
        if axes is not None and not keepdim:
            g = xp.expand_dims(g, axes)
        return (g * centered * (2.0 / dof if dof else math.inf),)
    return from_op(out, x._device, (x,), var_backward)


def _arg(x, dim, keepdim, fn):
    xp = get_xp(x._device)
    if dim is None:
        out = xp.asarray(fn(x.data.reshape(-1)))
        return from_op(out.reshape((1,) * x.ndim) if keepdim else out, x._device)
    (axis,) = _dims(dim, x.ndim)
    return from_op(fn(x.data, axis=axis, keepdims=keepdim), x._device)


def argmax(x, dim=None, keepdim=False):
    """Index of the largest value (over the flattened tensor when dim is None)."""
    return _arg(x, dim, keepdim, get_xp(x._device).argmax)


def argmin(x, dim=None, keepdim=False):
    """Index of the smallest value (over the flattened tensor when dim is None)."""
    return _arg(x, dim, keepdim, get_xp(x._device).argmin)


def _truth(x, dim, keepdim, reduce):
    return from_op(get_xp(x._device).asarray(reduce(x.data, axis=_reduce_axes(dim, x.ndim), keepdims=keepdim)),
                   x._device)


def all(x, dim=None, keepdim=False):
    """Whether every value along `dim` (of the whole tensor when None) is nonzero: a bool tensor, no gradient."""
    return _truth(x, dim, keepdim, get_xp(x._device).all)


def any(x, dim=None, keepdim=False):
    """Whether some value along `dim` (of the whole tensor when None) is nonzero: a bool tensor, no gradient."""
    return _truth(x, dim, keepdim, get_xp(x._device).any)


def _elementwise_test(x, test):
    xp = get_xp(x._device)
    if not is_floating(x.dtype):  # integers and bools are always finite (NumPy has no isnan for bools)
        return from_op(xp.full(x.shape, test is xp.isfinite), x._device)
    return from_op(test(x.data), x._device)


def isnan(x):
    """Where x is NaN: a bool tensor of x's shape (no gradient)."""
    return _elementwise_test(x, get_xp(x._device).isnan)


def isinf(x):
    """Where x is +inf or -inf: a bool tensor of x's shape (no gradient)."""
    return _elementwise_test(x, get_xp(x._device).isinf)


def isfinite(x):
    """Where x is neither NaN nor infinite: a bool tensor of x's shape (no gradient)."""
    return _elementwise_test(x, get_xp(x._device).isfinite)


def squeeze(x, dim=None):
    """Drop size-1 dimensions (only `dim`, if given and of size 1)."""
    axes = range(x.ndim) if dim is None else _dims(dim, x.ndim)
    shape = tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1))
    return reshape(x, shape)


def unsqueeze(x, dim):
    """Insert a size-1 dimension at `dim`."""
    if not -x.ndim - 1 <= dim <= x.ndim:
        raise IndexError(f"unsqueeze: dim {dim} out of range for a {x.ndim}-d tensor")
    dim = dim % (x.ndim + 1)
    return reshape(x, x.shape[:dim] + (1,) + x.shape[dim:])


def flatten(x, start_dim=0, end_dim=-1):
    """Merge dimensions start_dim..end_dim into one."""
    (start,), (end,) = _dims(start_dim, x.ndim), _dims(end_dim, x.ndim)  # out of range: IndexError
    if x.ndim == 0:
        return reshape(x, 1)
    if start > end:
        raise RuntimeError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    return reshape(x, x.shape[:start] + (-1,) + x.shape[end + 1:])


def expand(x, *sizes):
    """Broadcast to `sizes` without copying (-1 keeps a dimension)."""
    sizes = _shape_arg(sizes)
    lead = len(sizes) - x.ndim
    if lead < 0 or -1 in sizes[:lead]:
        raise RuntimeError(f"expand: cannot expand shape {tuple(x.shape)} to {tuple(sizes)} (-1 keeps an "
                           f"existing dimension; a new leading one needs its size)")
    target = tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
    xp = get_xp(x._device)
    try:
        out = xp.broadcast_to(x.data, target)
    except ValueError:
        raise RuntimeError(f"expand: cannot expand shape {tuple(x.shape)} to {target}") from None

    def expand_backward(g):
        return (unbroadcast(g, x.shape),)
    return from_op(out, x._device, (x,), expand_backward)


def _whole_mask(index, data, value, xp):
    """The boolean mask array when `index` is one mask over data's leading dims and `value` a scalar."""
    if isinstance(index, Tensor):
        index = index.data
    if not hasattr(index, "dtype") or index.dtype.kind != "b" or getattr(value, "ndim", 0) != 0 \
            or index.ndim == 0 or tuple(index.shape) != tuple(data.shape[:index.ndim]):
        return None
    return xp.asarray(index)


def _index_arrays(index, dev):
    """Replace tensors in an index by arrays; report whether the index is basic."""
    parts = index if isinstance(index, tuple) else (index,)
    out, basic = [], True
    for part in parts:
        if isinstance(part, Tensor):
            part = part.data
        if part is None or part is Ellipsis or isinstance(part, (builtins.int, slice, np.integer)) \
                and not isinstance(part, (builtins.bool, np.bool_)):
            out.append(part)
            continue
        array = get_xp(dev).asarray(part)
        if array.size == 0 and array.dtype.kind == "f":  # x[[]]: an empty list reads as float64, means no rows
            array = array.astype(np.int64)
        basic = False
        out.extend(array.nonzero() if array.dtype.kind == "b" and array.ndim else (array,))
    return tuple(out), basic


# %% [markdown]
# ## Elementwise functions
#
# Each multiplies the incoming gradient by its local derivative (exp: out; log: 1/x;
# sqrt: 0.5/out; tanh: 1 - out²; sigmoid: out(1 - out); relu: x > 0). GELU's exact form
# uses Abramowitz & Stegun's erf (error < 1.5e-7); its `"tanh"` form (GPT-2's) runs in
# place on cache-sized blocks because it is applied to a network's largest activation.

# %%
#| export
def _in_dtype(array, dtype):
    """`array` as `dtype`, cast only if it is not: ml_dtypes gives float32 for bfloat16 with a Python float
    (`1.0 / x`, `0.5 * x`), where PyTorch keeps bfloat16; one dtype check otherwise."""
    return array if array.dtype is dtype else array.astype(dtype)


def _float_data(x):
    """Transcendental functions of integer tensors give float32, as in PyTorch."""
    return x.data if is_floating(x.data.dtype) else x.data.astype(DEFAULT_FLOAT)


def _unary(x, out, local_grad, name):
    """Wrap a unary op whose backward is g * local_grad() (computed only when needed)."""
    def backward(g):
        return (_in_dtype(g * local_grad(), x.data.dtype),)
    backward.__name__ = f"{name}_backward"
    return from_op(out, x._device, (x,), backward)


def exp(x):
    xp = get_xp(x._device)
    out = xp.exp(_float_data(x))
    return _unary(x, out, lambda: out, "exp")


def log(x):
    xp = get_xp(x._device)
    data = _float_data(x)
    return _unary(x, xp.log(data), lambda: 1.0 / data, "log")


def sqrt(x):
    xp = get_xp(x._device)
    out = xp.sqrt(_float_data(x))
    return _unary(x, out, lambda: 0.5 / out, "sqrt")


def abs(x):
    xp = get_xp(x._device)
    return _unary(x, xp.abs(x.data), lambda: xp.sign(x.data), "abs")


def tanh(x):
    xp = get_xp(x._device)
    out = xp.tanh(_float_data(x))
    return _unary(x, out, lambda: 1 - out * out, "tanh")


def sigmoid(x):
    xp = get_xp(x._device)
    data = _float_data(x)
    out = _in_dtype(0.5 * xp.tanh(0.5 * data) + 0.5, data.dtype)
    return _unary(x, out, lambda: out * (1 - out), "sigmoid")


def relu(x):
    xp = get_xp(x._device)
    return _unary(x, xp.maximum(x.data, 0), lambda: x.data > 0, "relu")


def clamp(x, min=None, max=None):
    if min is None and max is None:
        raise ValueError("clamp needs at least one of min and max")
    xp = get_xp(x._device)
    min, max = (_clamp_bound(x, bound, name) for bound, name in ((min, "min"), (max, "max")))
    want = x.data.dtype  # PyTorch's dtype, as in a binary op: a 0-d bound widens x only to a higher kind
    for bound in (min, max):
        if hasattr(bound, "dtype"):  # `_promoted` reads only ndim and dtype: an empty stand-in for x
            want = _promoted(np.empty((0,) * x.ndim, want), bound)
    if want.kind in "biu" and builtins.any(isinstance(b, builtins.float) for b in (min, max)):
        want = _F32  # an integer tensor clamped to a Python float: float32, not NumPy's float64
    # clip in `want` itself: NumPy would clip in a wider type (float64 for an int64 tensor and a float bound)
    out = _in_dtype(xp.clip(x.data.astype(want, copy=False),  # (bfloat16 with a float bound: float32)
                            *(b.astype(want, copy=False) if hasattr(b, "dtype") else b for b in (min, max))), want)
    if out.shape != x.shape:
        raise ValueError(f"clamp: bounds of shapes {_shape_of(min)} and {_shape_of(max)} would enlarge the "
                         f"tensor's shape {tuple(x.shape)}")

    def inside():
        keep = xp.ones(x.shape, dtype=np.bool_)
        if min is not None:
            keep &= x.data >= min
        if max is not None:
            keep &= x.data <= max
        return keep
    return _unary(x, out, inside, "clamp")


def _clamp_bound(x, bound, name):
    """A clamp bound as a number or an array on x's device; a tensor bound carries no gradient."""
    if not isinstance(bound, Tensor):
        return None if bound is None else _constant(bound, x, "clamp")
    if bound.requires_grad and _grad_mode.enabled:
        raise RuntimeError(f"clamp: {name} is a tensor that requires grad, and clamp passes no gradient to its "
                           f"bounds; detach it, or write the bound with tinytorch.where")
    if bound._device != x._device:
        _device_mismatch(x, bound, "clamp")
    return bound.data


def _erf(z, xp):
    """erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)."""
    t = 1.0 / (1.0 + 0.3275911 * xp.abs(z))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return xp.sign(z) * (1.0 - poly * xp.exp(-z * z))


_SQRT_2_OVER_PI = 0.7978845608028654
_INV_SQRT_2PI = 0.3989422804014327
_GELU_CUBIC = _SQRT_2_OVER_PI * 0.044715  # u(x) = √(2/π) x + _GELU_CUBIC x³
_GELU_SATURATED = 30.0  # |x| past which GELU's s = σ(2u) is exactly 0 or 1, even in float64
_BLOCK = 1 << 16  # elements per block of a chained elementwise op: its few blocks stay in L2 cache


def _blocks(n, xp):
    """Slices cutting n elements into cache-sized blocks; on a GPU one slice (no cache to fit)."""
    step = _BLOCK if xp is np else builtins.max(n, 1)
    return [slice(i, i + step) for i in range(0, builtins.max(n, 1), step)]  # one (empty) block for n = 0


def _gelu_tanh(x, data, xp):
    """GPT-2's GELU, x·s with s = ½(1 + tanh u) = σ(2u), u = √(2/π)(x + 0.044715 x³).

    It runs on a network's largest activation, so each step is in place on cache-sized blocks
    (a chain of whole-array NumPy ops would stream the array through memory once per step);
    the backward reuses s: d/dx = s + 2x·s(1 - s)·u' = s (1 + 2x u' (1 - s)).
    """
    flat = data.reshape(-1)
    s, out = xp.empty_like(flat), xp.empty_like(flat)
    blocks = _blocks(flat.size, xp)
    with np.errstate(over="ignore"):  # a huge |x| makes u infinite, and tanh(±inf) = ±1 is right
        for b in blocks:
            xb, sb = flat[b], s[b]
            xp.multiply(xb, xb, out=sb)  # (NumPy's x ** 3 would be ~200x slower than multiplying)
            sb *= _GELU_CUBIC
            sb += _SQRT_2_OVER_PI
            sb *= xb  # u
            xp.tanh(sb, out=sb)
            sb += 1.0
            sb *= 0.5  # s
            xp.multiply(xb, sb, out=out[b])

    def gelu_backward(g):
        g = g.reshape(-1)
        grad, one_minus_s = xp.empty_like(flat), xp.empty_like(flat[blocks[0]])
        half = _is_half(flat.dtype)
        for b in blocks:
            xb, sb, db, rest = flat[b], s[b], grad[b], one_minus_s[:s[b].size]
            # float16's x² overflows at |x| = 256, and inf·(1 - s) = inf·0 = nan. Past |x| = 30, s is
            # exactly 0 or 1, so x can be clipped there (float32 needs no clip before |x| ~ 1e13)
            xc = xp.clip(xb, -_GELU_SATURATED, _GELU_SATURATED, out=rest) if half else xb
            xp.multiply(xc, xc, out=db)
            db *= 6 * _GELU_CUBIC
            db += 2 * _SQRT_2_OVER_PI
            db *= xc  # 2x u'(x) = 2x √(2/π)(1 + 3·0.044715 x²)
            xp.subtract(1.0, sb, out=rest)
            db *= rest
            db += 1.0
            db *= sb
            db *= g[b]
        return (grad.reshape(data.shape),)
    return from_op(out.reshape(data.shape), x._device, (x,), gelu_backward)


def gelu(x, approximate="none"):
    """x Φ(x), exactly (`"none"`) or with GPT-2's tanh approximation (`"tanh"`)."""
    xp = get_xp(x._device)
    data = _float_data(x)
    if approximate == "tanh":
        return _gelu_tanh(x, data, xp)
    elif approximate == "none":
        cdf = 0.5 * (1.0 + _erf(data * 0.7071067811865476, xp))
        out = data * cdf

        def local():
            return cdf + data * _INV_SQRT_2PI * xp.exp(-0.5 * data * data)
    else:
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _unary(x, out.astype(data.dtype, copy=False), local, "gelu")


# %% [markdown]
# ## Joining, splitting, selecting, casting, moving
#
# `cat`'s backward cuts the gradient back into pieces; `where` sends it to the side that
# was picked; a cast's gradient is cast back, a move's is moved back.

# %%
#| export
def _same_device(tensors, name):
    first = tensors[0]
    for t in tensors[1:]:
        if t._device != first._device:
            _device_mismatch(first, t, name)
    return first._device


def cat(tensors, dim=0):
    """Concatenate along an existing dimension."""
    tensors = tuple(tensors)
    dev = _same_device(tensors, "cat")
    xp = get_xp(dev)
    (axis,) = _dims(dim, tensors[0].ndim)
    want = tensors[0].dtype  # PyTorch's result dtype: int64 with float32 is float32 (NumPy: float64)
    for t in tensors[1:]:
        if t.dtype != want:  # (the usual case, one dtype, needs no promotion)
            want = _promoted(np.empty(1, want), t.data)
    try:
        out = xp.concatenate([t.data for t in tensors], axis=axis, dtype=want)
    except ValueError as err:
        shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
        raise RuntimeError(f"cat along dim {dim}: shapes {shapes} do not fit ({err})") from None
    ends = np.cumsum([t.shape[axis] for t in tensors])[:-1].tolist()

    def cat_backward(g):  # each piece in its input's dtype
        return tuple(piece.astype(t.dtype, copy=False) for piece, t in zip(xp.split(g, ends, axis=axis), tensors))
    return from_op(out, dev, tensors, cat_backward)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dimension."""
    tensors = tuple(tensors)
    _same_device(tensors, "stack")  # refuses a device mix before cat does
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise RuntimeError(f"stack expects tensors of one shape, got {sorted(shapes)}")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def split(x, split_size_or_sections, dim=0):
    """Cut into pieces of `split_size` (the last may be smaller) or of the given sizes."""
    (axis,) = _dims(dim, x.ndim)
    n = x.shape[axis]
    if isinstance(split_size_or_sections, (builtins.int, np.integer)):
        step = builtins.int(split_size_or_sections)
        if step < 0 or (step == 0 and n):
            raise RuntimeError(f"split: split_size must be positive (0 only for an empty dim), got {step}")
        sizes = [builtins.min(step, n - s) for s in range(0, n, step)] if n else [0]  # one empty piece
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise RuntimeError(f"split sizes {sizes} add up to {builtins.sum(sizes)}, "
                               f"but dim {dim} has size {n}")
    pieces, start = [], 0
    for size in sizes:
        pieces.append(getitem(x, (slice(None),) * axis + (slice(start, start + size),)))
        start += size
    return tuple(pieces)


def where(condition, x, y):
    """Elementwise `x if condition else y` (x and y may be numbers)."""
    tx, a, ty, b = _operands(x, y, "where")
    dev = condition._device if isinstance(condition, Tensor) else _dev(tx, ty)
    for t in (tx, ty):
        if t is not None and t._device != dev:
            _device_mismatch(condition, t, "where")
    xp = get_xp(dev)
    cond = condition.data if isinstance(condition, Tensor) else xp.asarray(condition)  # CuPy wants its own
    try:
        out = _keep_float32(xp.where(cond, a, b), tx, ty)
    except ValueError:
        raise ValueError(f"where: shapes {_shape_of(cond)}, {_shape_of(a)} and {_shape_of(b)} "
                         f"cannot be broadcast together") from None

    def where_backward(g):
        return (unbroadcast(xp.where(cond, g, 0), a.shape) if _needs(tx) else None,
                unbroadcast(xp.where(cond, 0, g), b.shape) if _needs(ty) else None)
    return from_op(out, dev, (tx, ty), where_backward)


def masked_fill(x, mask, value):
    """x with `value` where `mask` is True (mask broadcasts to x's shape)."""
    xp = get_xp(_same_device([x] + [t for t in (mask, value) if isinstance(t, Tensor)], "masked_fill"))
    m = mask.data if isinstance(mask, Tensor) else xp.asarray(mask)  # CuPy refuses NumPy masks
    if isinstance(value, Tensor):
        if value.ndim != 0 or (value.requires_grad and _grad_mode.enabled):
            raise ValueError(f"masked_fill: value must be a number or a 0-d tensor without grad (got shape "
                             f"{tuple(value.shape)}{', requires grad' if value.requires_grad else ''}); "
                             f"for a learned fill, use tinytorch.where(mask, value, x)")
        value = value.data
    try:
        out = xp.where(m, value, x.data).astype(x.dtype, copy=False)
    except ValueError:
        raise ValueError(f"masked_fill: mask of shape {_shape_of(m)} does not broadcast to "
                         f"the tensor's shape {tuple(x.shape)}") from None
    if out.shape != x.shape:
        raise ValueError(f"masked_fill: mask of shape {_shape_of(m)} would enlarge the tensor's "
                         f"shape {tuple(x.shape)}")

    def masked_fill_backward(g):
        return (xp.where(m, 0, g),)
    return from_op(out, x._device, (x,), masked_fill_backward)


# %%
#| export
def _cast(x, dtype):
    if x.data.dtype == dtype:
        return x

    def cast_backward(g):
        return (g.astype(x.dtype),)
    parents = (x,) if is_floating(dtype) else None
    return from_op(x.data.astype(dtype), x._device, parents, cast_backward)


def _move(x, dev):
    if x._device == dev:
        return x

    def move_backward(g):
        return (to_device(g, x._device),)
    return from_op(to_device(x.data, dev), dev, (x,), move_backward)


# %% [markdown]
# Two helpers for the lessons' graded cells: `_backward_of` runs an op on fresh tensors that
# require grad and returns its backward's gradients; `_expect` compares a result with the
# expected one and says both in the failure message.

# %%
#| export
def _backward_of(op, *args, g=None, **kwargs):
    """op(*args, **kwargs) with each non-number argument made a tensor that requires grad, then the output's
    backward for the upstream gradient g (ones when None): one gradient per input. max/min: of the values."""
    out = op(*(a if isinstance(a, (int, float)) else tensor(a, requires_grad=True) for a in args), **kwargs)
    out = out.values if isinstance(out, MinMax) else out
    return out._backward(np.ones(out.shape, out.dtype) if g is None else np.asarray(g, out.dtype))


def _expect(compute, want, message, exact=False):
    """AssertionError(message, expected and got) unless compute() returns `want`: an array or a tuple of arrays and
    Nones, the same shapes, values within 1e-5 (exact=True: bit for bit), nan where want has nan."""
    try:
        got = compute()
    except Exception as err:  # a student's mistake often shows as a NumPy error: name the check instead
        raise AssertionError(f"{message}: expected {_shown(want)}, but it raised {type(err).__name__}: {err}") from None
    if not _same(got, want, exact):
        raise AssertionError(f"{message}: expected {_shown(want)}, got {_shown(got)}")


def _same(got, want, exact):
    if isinstance(want, tuple):
        return isinstance(got, tuple) and len(got) == len(want) and builtins.all(_same(a, b, exact) for a, b in zip(got, want))
    if want is None or got is None:
        return got is None and want is None
    got, want = np.asarray(to_numpy(getattr(got, "data", got)), dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return False
    return np.array_equal(got, want, equal_nan=True) if exact else np.allclose(got, want, 1e-5, 1e-6, equal_nan=True)


def _shown(value):
    if isinstance(value, tuple):
        return "(" + ", ".join(_shown(v) for v in value) + ")"
    if value is None:
        return "None"
    array = np.asarray(to_numpy(getattr(value, "data", value)))
    return f"{array.tolist()} (shape {array.shape})"
