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
# # Module 10 — provided code: launching kernels, CUDA C, mixed-precision plumbing
#
# The lesson (`cuda.py`) writes the kernels and the mixed-precision rules. This file is
# the plumbing around them; nothing here is an exercise.
#
# - `numba_cuda()`: numba's `cuda` module, loaded on first use, in the **CUDA simulator**
#   when no GPU is usable (so every kernel runs on any CPU, slowly).
# - `@kernel`: marks a Python function as a CUDA kernel; `k[grid, block](arrays...)`
#   launches it; `grid_for(shape, block)` sizes the grid.
# - `kernel_array(x)` / `device_empty(x)`: the arrays kernels take: NumPy arrays in the
#   simulator, CuPy arrays on a GPU (numba reads both through `__cuda_array_interface__`).
# - One kernel in CUDA C (fused softmax + cross-entropy), compiled by NVRTC and run through
#   `cupy.RawKernel` on a GPU; `compile_ptx` compiles any CUDA C source without a GPU.
# - For mixed precision: the `bfloat16` dtype (`ml_dtypes` on CPU), a differentiable cast,
#   and `GradScaler`'s constructor, state and checks.
# - `tinytorch.cuda.fixtures`: the NumPy references the lesson's tests check the kernels against.

# %%
#| default_exp cuda.launch

# %%
#| export
"""Loading numba's CUDA (or its simulator), marking and launching kernels, and their arrays."""
import contextlib
import functools
import importlib.machinery
import importlib.util
import numbers
import os
import sys

import numpy as np

from tinytorch.core.backend import _is_whole, cuda_available, namespace_of
from tinytorch.core.tensor import Tensor

_SIMULATOR = "NUMBA_ENABLE_CUDASIM"


def numba_cuda():
    """numba's `cuda` module, imported on first use: the CUDA simulator unless a GPU is usable.

    The simulator must be chosen before numba is first imported, so this sets
    NUMBA_ENABLE_CUDASIM=1 (unless the environment already chose) when CuPy finds no GPU.
    """
    os.environ.setdefault(_SIMULATOR, "0" if cuda_available() else "1")
    _import_nvidia_cuda()
    try:
        from numba import cuda
    except ImportError as err:
        raise ImportError(f"CUDA kernels need numba-cuda ({err}); install it with "
                          f"`pip install 'tinytorch[kernels]'` (it also runs them on a CPU, simulated)") from None
    return cuda


def _import_nvidia_cuda():
    """Import NVIDIA's `cuda` package (which numba needs) from where numba is installed.

    The lesson is modules/10_cuda/cuda.py: run as a script, its folder comes first on the
    import path, and a plain `import cuda` would find the lesson itself.
    """
    found = importlib.util.find_spec("cuda") if "cuda" not in sys.modules else None
    numba = importlib.util.find_spec("numba")
    if found is None or found.submodule_search_locations is not None or numba is None:
        return  # imported already, not installed, or the real package: nothing shadows it
    site = os.path.dirname(os.path.dirname(numba.origin))
    spec = importlib.machinery.PathFinder.find_spec("cuda", [site])
    if spec is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["cuda"] = module
        if spec.loader is not None:
            spec.loader.exec_module(module)


def uses_simulator():
    """True when kernels run in numba's CUDA simulator (threads on the CPU), False on a GPU."""
    numba_cuda()
    from numba import config
    return bool(config.ENABLE_CUDASIM)


class _NotLoaded:
    """Stands for numba's `cuda` until a kernel's first launch loads numba."""

    def __getattr__(self, name):
        raise RuntimeError(f"cuda.{name} works only inside a kernel launched as kernel[grid, block](...); "
                           f"numba loads at the first launch")


cuda = _NotLoaded()


class Kernel:
    """A CUDA kernel written in Python. `kernel[grid, block](*arrays)` launches it."""

    def __init__(self, fn):
        self.fn = fn
        self._compiled = None
        functools.update_wrapper(self, fn)

    def __getitem__(self, config):
        grid, block = config
        if self._compiled is None:
            numba = numba_cuda()
            # The kernel's body says `cuda.threadIdx.x`: that name, in the kernel's own file, becomes
            # numba's module now. Importing numba up front would add 0.7 s to every `import tinytorch`.
            self.fn.__globals__["cuda"] = numba
            self._compiled = numba.jit(self.fn)
        return self._compiled[grid, block]

    def __call__(self, *args):
        raise TypeError(f"{self.__name__} is a CUDA kernel: launch it as {self.__name__}[grid, block](...)")


def kernel(fn):
    """Decorator: `fn` is a CUDA kernel (compiled, or simulated, at its first launch)."""
    return Kernel(fn)


def grid_for(shape, block):
    """Blocks per grid dimension so that `block` threads each cover `shape`: the ceiling of shape / block."""
    shape = (shape,) if isinstance(shape, numbers.Number) else tuple(shape)
    block = (block,) if isinstance(block, numbers.Number) else tuple(block)
    if len(shape) != len(block) or not all(_is_whole(b, 1) for b in block) or not all(_is_whole(n, 0) for n in shape):
        raise ValueError(f"grid_for: shape {shape} and block {block} need the same number of dimensions, "
                         f"whole-number sizes >= 0 and block sizes >= 1")
    grid = tuple(-(-int(n) // int(b)) for n, b in zip(shape, block))
    return grid[0] if len(grid) == 1 else grid


def kernel_array(x, dtype=np.float32):
    """The C-contiguous array a kernel reads: a Tensor's data or an array, in `dtype`, on its device."""
    data = x.data if isinstance(x, Tensor) else x
    xp = namespace_of(data)
    if xp is np and not uses_simulator():
        raise RuntimeError("a kernel on the GPU needs CuPy arrays; move the data with .to('cuda') first")
    if xp is not np and uses_simulator():
        raise RuntimeError("the CUDA simulator runs on NumPy arrays; this is a CuPy array (use .cpu())")
    return xp.ascontiguousarray(data, dtype=dtype)


def check_row_vectors(name, x, **vectors):
    """Refuse arrays a row-wise kernel would read out of bounds: x must be 2-D, and each vector (a bias,
    a weight) one entry per column of x; a GPU thread would read past a short one without an error."""
    if x.ndim != 2:
        raise ValueError(f"{name}: x must be 2-D (rows, columns), got shape {tuple(x.shape)}")
    for vector_name, vector in vectors.items():
        if vector.shape != (x.shape[1],):
            raise ValueError(f"{name}: {vector_name} has shape {tuple(vector.shape)}, but x has {x.shape[1]} "
                             f"columns: one entry per column expected")


def device_empty(x, shape=None, dtype=np.float32):
    """An uninitialised output array beside `x` (same device), for a kernel to fill."""
    xp = namespace_of(x)
    return xp.empty(x.shape if shape is None else shape, dtype=dtype)


def device_zeros(x, shape=None, dtype=np.float32):
    """A zeroed output array beside `x` (same device): for kernels that accumulate with atomics."""
    xp = namespace_of(x)
    return xp.zeros(x.shape if shape is None else shape, dtype=dtype)


@contextlib.contextmanager
def _simulated_atomic_adds():
    """The indices of the `cuda.atomic.add` calls simulated kernels make inside the block: a list, or None on a GPU.

    The simulator runs blocks one after another, so blocks that combine with a plain `out[0] += v`
    sum correctly there and lose updates only on a GPU; counting the atomics tells them apart.
    """
    if not uses_simulator():
        yield None
        return
    from numba.cuda.simulator.kernelapi import FakeCUDAAtomic
    calls, add = [], FakeCUDAAtomic.add

    def counted(self, array, index, val):
        calls.append(index)
        return add(self, array, index, val)
    FakeCUDAAtomic.add = counted
    try:
        yield calls
    finally:
        FakeCUDAAtomic.add = add


@contextlib.contextmanager
def _constants(namespace, **values):
    """Set module constants (THREADS, TILE) of `namespace` for a while: simulated kernels read them at each launch."""
    old = {name: namespace[name] for name in values}
    namespace.update(values)
    try:
        yield
    finally:
        namespace.update(old)


# %% [markdown]
# ## The lesson's test fixtures
#
# NumPy references the lesson's tests check the kernels against, in their own file
# (`tinytorch.cuda.fixtures`): they are no part of launching kernels.

# %%
#| export cuda.fixtures
"""The CUDA lesson's test fixtures: NumPy references that its kernels are checked against."""
import numpy as np


def _reference_bias_gelu(x, b):
    """gelu(x + b), tanh form, in float64 NumPy: what the lesson's bias_gelu is checked against."""
    v = (x + b).astype(np.float64)
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))


def _reference_softmax(x):
    """Softmax over the last axis in NumPy."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reference_layer_norm(x, w, b, eps):
    """LayerNorm over the last axis in NumPy (biased variance)."""
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + eps) * w + b


# %% [markdown]
# The lesson's kernels go to `tinytorch.cuda.kernels`, with these imports.

# %%
#| export cuda.kernels
"""GPU kernels written in Python with numba-cuda, and the functions that launch them."""
import math

import numpy as np

from tinytorch.cuda.launch import (  # noqa: F401
    check_row_vectors, cuda, device_empty, device_zeros, grid_for, kernel, kernel_array,
)


# %% [markdown]
# ## A kernel in CUDA C
#
# The same language NVIDIA's libraries are written in. One block per row: the threads stride
# over the classes, reduce the row's maximum and then its sum of exponentials in shared memory,
# and thread 0 writes the row's loss, log Σ e^(z − m) + m − z_target. `compile_ptx` compiles
# any source with NVRTC (no GPU or driver needed: CI checks every source in `CUDA_SOURCES`);
# `softmax_cross_entropy_rows` runs it on a GPU through `cupy.RawKernel`.

# %%
#| export cuda.raw
"""CUDA C kernels: their sources, NVRTC compilation (no GPU needed) and launch through cupy.RawKernel."""
import numpy as np

from tinytorch.core.backend import _is_whole

SOFTMAX_CROSS_ENTROPY = r"""
// loss[r] = logsumexp(logits[r, :]) - logits[r, targets[r]], one block per row r.
// blockDim.x is a power of two; shared memory holds one float per thread.
// A target outside [0, n_classes) is never read through: its loss is NaN and *first_bad_row
// (set to the row count by the caller) gets the lowest such row, for the host to report.
extern "C" __global__
void softmax_cross_entropy_forward(const float* logits, const long long* targets, float* loss,
                                   int n_classes, int* first_bad_row) {
    extern __shared__ float scratch[];
    const float* row = logits + (long long)blockIdx.x * n_classes;
    const int tid = threadIdx.x;

    float m = __int_as_float(0xff800000);  // -inf
    for (int c = tid; c < n_classes; c += blockDim.x) m = fmaxf(m, row[c]);
    scratch[tid] = m;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (tid < stride) scratch[tid] = fmaxf(scratch[tid], scratch[tid + stride]);
        __syncthreads();
    }
    m = scratch[0];
    __syncthreads();  // everyone has read the max before scratch is reused

    float total = 0.0f;
    for (int c = tid; c < n_classes; c += blockDim.x) total += __expf(row[c] - m);
    scratch[tid] = total;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (tid < stride) scratch[tid] += scratch[tid + stride];
        __syncthreads();
    }
    if (tid == 0) {
        const long long target = targets[blockIdx.x];
        if (target < 0 || target >= n_classes) {
            atomicMin(first_bad_row, (int)blockIdx.x);
            loss[blockIdx.x] = __int_as_float(0x7fc00000);  // NaN
        } else {
            loss[blockIdx.x] = __logf(scratch[0]) + m - row[target];
        }
    }
}
"""

CUDA_SOURCES = {"softmax_cross_entropy.cu": SOFTMAX_CROSS_ENTROPY}  # every CUDA C source in the package


def nvrtc_unavailable_reason():
    """Why NVRTC cannot compile here, or None when it can."""
    try:
        from cupy.cuda import nvrtc
        nvrtc.getVersion()
    except Exception as err:  # ImportError, or the NVRTC library missing
        return (f"NVRTC is unavailable ({type(err).__name__}: {err}); install it with "
                f"`pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12` (no GPU needed)")
    return None


def compile_ptx(source, name="kernel.cu", arch="compute_90"):
    """Compile CUDA C `source` to PTX with NVRTC: no GPU or driver needed, the arch is explicit."""
    reason = nvrtc_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    from cupy.cuda import nvrtc
    program = nvrtc.createProgram(source, name, [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}"])
        ptx = nvrtc.getPTX(program)
    except nvrtc.NVRTCError as err:
        raise RuntimeError(f"{name} does not compile ({err}):\n{nvrtc.getProgramLog(program)}") from None
    finally:
        nvrtc.destroyProgram(program)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


_raw_kernels = {}


def softmax_cross_entropy_rows(logits, targets, threads=256):
    """Per-row loss logsumexp(z) - z[target] of CuPy (rows, classes) float32 logits, by the CUDA C kernel.

    Targets are (rows,) integer class indices on the GPU. One out of [0, classes) raises IndexError
    naming its row: the kernel flags it and this reads the flag back (one device-to-host copy)."""
    if not _is_whole(threads, 1) or threads > 1024 or threads & (threads - 1):
        raise ValueError(f"softmax_cross_entropy_rows: threads={threads!r} must be a power of two "
                         "from 1 to 1024 (a CUDA block's limit)")
    import cupy
    if not isinstance(logits, cupy.ndarray) or logits.ndim != 2:
        raise TypeError("softmax_cross_entropy_rows: logits must be a 2-D CuPy array (rows, classes) on the GPU")
    rows, classes = logits.shape
    if not isinstance(targets, cupy.ndarray) or targets.shape != (rows,) or targets.dtype.kind not in "iu":
        got = (f"{type(targets).__name__} {getattr(targets, 'dtype', '')} of shape "
               f"{tuple(getattr(targets, 'shape', ()))}")
        raise TypeError(f"softmax_cross_entropy_rows: targets must be a CuPy integer array of shape ({rows},), "
                        f"one class index per row of logits, got {got}")
    found = _raw_kernels.get("softmax_cross_entropy_forward")
    if found is None:
        found = _raw_kernels["softmax_cross_entropy_forward"] = cupy.RawKernel(
            SOFTMAX_CROSS_ENTROPY, "softmax_cross_entropy_forward")
    logits = cupy.ascontiguousarray(logits, dtype=np.float32)
    targets = cupy.ascontiguousarray(targets, dtype=np.int64)
    loss = cupy.empty(rows, dtype=np.float32)
    first_bad_row = cupy.full(1, rows, dtype=np.int32)
    found((rows,), (threads,), (logits, targets, loss, np.int32(classes), first_bad_row), shared_mem=threads * 4)
    bad = int(first_bad_row.get()[0])
    if bad < rows:
        raise IndexError(f"softmax_cross_entropy_rows: target {int(targets[bad].get())} of row {bad} is out "
                         f"of range: logits have {classes} classes (0 to {classes - 1})")
    return loss


# %% [markdown]
# ## Mixed-precision plumbing
#
# `bfloat16` is not a NumPy dtype; `ml_dtypes` (the package JAX uses) adds it, so the CPU
# can compute in it (slowly: no BLAS) and the lesson can show its rounding. `_cast` (module
# 01's, the op behind `Tensor.to(dtype)`) is a differentiable dtype change: its backward turns
# the gradient back into the input's dtype, so float32 weights always receive float32 gradients.

# %%
#| export core.amp
"""Mixed precision: the bfloat16 dtype, a differentiable cast, and GradScaler's bookkeeping."""
import functools  # noqa: F401  (the lesson's autocast as a decorator)

import numpy as np

from tinytorch.core.backend import (  # noqa: F401  (to_host: GradScaler)
    _check_whole, float16, float32, is_floating, to_host,
)
from tinytorch.core.tensor import Tensor, _autocast_state, _cast  # noqa: F401  (the lesson's names)

try:
    import ml_dtypes
except ImportError:  # bfloat16 then stays a name, and autocast says what to install
    ml_dtypes = None

bfloat16 = np.dtype(ml_dtypes.bfloat16) if ml_dtypes is not None else "bfloat16"


def _autocast_dtype(device_type, dtype):
    """Check autocast's arguments; return the low-precision dtype (float16 or bfloat16)."""
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r}")
    if dtype is None:
        dtype = "bfloat16" if device_type == "cpu" else "float16"  # PyTorch's defaults
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name == "bfloat16":
        if ml_dtypes is None:
            raise ImportError("autocast with bfloat16 needs ml_dtypes: `pip install 'tinytorch[bfloat16]'`")
        if device_type == "cuda":
            raise TypeError("autocast: CuPy has no bfloat16 arrays; use dtype=tinytorch.float16 on cuda")
        return np.dtype(ml_dtypes.bfloat16)
    if name == "float16":
        return float16
    raise TypeError(f"autocast: dtype must be float16 or bfloat16, got {name}")


class _PerDeviceType:
    """Module 01's autocast hook while some device type has a policy. PyTorch keeps one autocast state per
    device type, so each op runs under the policy of the device type its tensors are on. A hook is never
    changed, only replaced, so a block restores exactly what it found, and a thread handed it (ThreadedStep)
    gets every device type's policy."""

    def __init__(self, runs):
        self.runs = runs  # device type -> run(name, fn, args, kwargs)

    def __call__(self, name, fn, args, kwargs):
        tensors = (x for x in (*args, *kwargs.values()) if isinstance(x, Tensor))
        run = self.runs.get(next((x._device.type for x in tensors), None))
        return fn(*args, **kwargs) if run is None else run(name, fn, args, kwargs)


def _with_policy(hook, device_type, run):
    """The autocast hook `hook` with `device_type`'s policy set to `run` (None: off for that device type
    only); None when no device type has a policy left."""
    runs = {**getattr(hook, "runs", {}), device_type: run}
    runs = {kind: r for kind, r in runs.items() if r is not None}
    return _PerDeviceType(runs) if runs else None


def _is_float_tensor_on(x, device_type):
    """A tensor autocast casts: floating, on its device, and not float64 (PyTorch leaves float64 alone)."""
    return isinstance(x, Tensor) and x._device.type == device_type and is_floating(x.dtype) \
        and x.dtype != np.float64


class _GradScalerBase:
    """GradScaler's constructor, state and checks; the lesson writes scale/unscale_/step/update."""

    def __init__(self, device="cpu", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor={growth_factor} must be > 1")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor={backoff_factor} must be in (0, 1)")
        growth_interval = _check_whole(growth_interval, "GradScaler: growth_interval", hint=" (steps)")
        if not 0 < init_scale <= float(np.finfo(np.float32).max):  # the scale is a float32 (NaN fails this too)
            raise ValueError(f"GradScaler: init_scale={init_scale} must be a positive number a float32 holds")
        self.device = device
        self._scale = float32.type(init_scale)  # float32, like PyTorch's scale tensor
        self._growth_factor = float(growth_factor)
        self._backoff_factor = float(backoff_factor)
        self._growth_interval = int(growth_interval)
        self._growth_tracker = 0
        self._enabled = enabled
        self._found_inf = {}  # id(optimizer) -> True/False once unscaled in this iteration
        self._stepped = set()  # id(optimizer) stepped in this iteration

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        """The current scale as a Python float (1.0 when disabled)."""
        return float(self._scale) if self._enabled else 1.0

    def get_growth_factor(self):
        return self._growth_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def get_growth_interval(self):
        return self._growth_interval

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": float(self._scale), "growth_factor": self._growth_factor,
                "backoff_factor": self._backoff_factor, "growth_interval": self._growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state):
        if not self._enabled:
            return
        if not state:
            raise RuntimeError("GradScaler.load_state_dict: the state is empty (saved from a disabled scaler?)")
        self._scale = float32.type(state["scale"])
        self._growth_factor = float(state["growth_factor"])
        self._backoff_factor = float(state["backoff_factor"])
        self._growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])

    def _grads(self, optimizer):
        """The gradient arrays of every parameter of `optimizer` that has one; float16 ones are refused."""
        grads = [p.grad.data for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:  # nothing to check for inf: update() would grow the scale on no evidence (PyTorch raises too)
            raise RuntimeError("GradScaler: no parameter of this optimizer has a gradient; call "
                               "scaler.scale(loss).backward() before unscale_() or step()")
        for g in grads:
            if g.dtype == float16:
                raise ValueError("GradScaler: a float16 gradient cannot be unscaled safely; keep the weights "
                                 "in float32 and let autocast cast them for each op")
        return grads

    def _check_unscale(self, optimizer):
        if id(optimizer) in self._stepped:
            raise RuntimeError("GradScaler.unscale_ called after step() for this optimizer; call update() first")
        if id(optimizer) in self._found_inf:
            raise RuntimeError("GradScaler.unscale_ already called for this optimizer since the last update()")


# %% [markdown]
# `tinytorch.amp` holds the two mixed-precision classes, as `torch.amp` does; `autocast` is
# also `tinytorch.autocast`.

# %%
#| export amp
"""Automatic mixed precision: `autocast` and `GradScaler` (the lesson writes both in `tinytorch.core.amp`)."""
from tinytorch.core.amp import GradScaler, autocast  # noqa: F401
