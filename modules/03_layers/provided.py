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
# # Module 03 — provided code
#
# The infrastructure around the lesson `layers.py`: what a framework needs but the
# lesson does not teach. You may read it; you never edit it.
#
# - `nn.module`: `Parameter`, and `_ModuleAPI`, the part of `Module` built on the
#   registries and walks you write (modes, devices, gradients, printing, and the check
#   before loading that reports every problem at once); the lesson's `Module` joins
#   them in that file;
# - `nn.functional`: the argument checks of the fused ops, and the activations under
#   their PyTorch names;
# - `nn.init`: the random fills every initialiser ends in, and `calculate_gain`;
# - `nn.activation` and `nn.container`: the activation modules and `Sequential`,
#   `ModuleList`, `ModuleDict` (`tinytorch.nn.layers` re-exports them);
# - `core.serialization`: `save`/`load` (safetensors) and `atomic_write`.

# %%
#| default_exp nn.module

# %% [markdown]
# ## `nn.module`: `Parameter` and the `Module` API around the registries

# %%
#| export
"""`Module`, the base of every layer and model, and `Parameter`, the tensor it trains."""
from collections import OrderedDict, namedtuple

import numpy as np

from tinytorch.core.backend import (
    DEFAULT_FLOAT, Device, device as _as_device, get_xp, is_floating, resolve_dtype, to_device,
)
from tinytorch.core.tensor import Tensor, from_op


class Parameter(Tensor):
    """A tensor that a `Module` registers as trainable (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty((0,), dtype=DEFAULT_FLOAT)
        source = data if isinstance(data, Tensor) else Tensor(data)  # a Tensor is wrapped, not copied
        array = source.data
        self.data = array if is_floating(array.dtype) else array.astype(DEFAULT_FLOAT)  # only floats have grads
        self._device = source._device
        self.grad = None
        self._parents = None
        self._backward = None
        self.requires_grad = False
        self.requires_grad_(requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _empty_parameter(shape, dtype=None, device=None):
    """An uninitialised float Parameter; an initialiser fills it next."""
    dev = _as_device(device)
    dtype = resolve_dtype(dtype) or DEFAULT_FLOAT
    if not is_floating(dtype):
        raise TypeError(f"parameters must be floating point, got dtype {dtype.name}")
    return Parameter(from_op(get_xp(dev).empty(shape, dtype=dtype), dev))


_IncompatibleKeys = namedtuple("_IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _compare_state_dicts(expected, given):
    """(missing, unexpected, mismatched) between a model's tensors and a checkpoint, by name."""
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    mismatched = [(name, tuple(given[name].shape), tuple(expected[name].shape))
                  for name in expected
                  if name in given and tuple(given[name].shape) != tuple(expected[name].shape)]
    return missing, unexpected, mismatched


def _convert_in_place(tensor, dev, dtype):
    """Give `tensor` a new dtype (floating ones only) and/or device, keeping its identity."""
    if dtype is not None and is_floating(tensor.data.dtype):
        tensor.data = tensor.data.astype(dtype, copy=False)
    if dev is not None:
        tensor.data = to_device(tensor.data, dev)
        tensor._device = dev


class _ModuleAPI:
    """What `Module` offers on top of its registries and walks (written in the lesson).

    Everything here reads `self._parameters` / `_buffers` / `_modules` or calls
    `named_modules`, `_named_members` and `_state_tensors`; no new ideas.
    """

    def _early_setattr(self, name, value):
        """An attribute set before Module.__init__ made the registries: plain, unless it needs them."""
        if isinstance(value, (Parameter, _ModuleAPI)):
            raise AttributeError(f"cannot assign {type(value).__name__} {name!r} before Module.__init__() "
                                 f"ran: call super().__init__() first in {type(self).__name__}.__init__")
        object.__setattr__(self, name, value)

    def _check_kind_kept(self, name, value):
        """TypeError for a value that would silently unregister `name` (as PyTorch): a registered parameter
        takes a Parameter or None, a registered sub-module a Module, a Parameter or None (`layer.weight =
        Tensor(w)` left the weight out of parameters(), state_dict() and the optimizer)."""
        if value is None:
            return
        if name in self._parameters and not isinstance(value, Parameter):
            raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} (a Parameter or None "
                            f"expected): wrap it, Parameter(value), or copy into it, {name}.data[...] = ...")
        if name in self._modules and not isinstance(value, (_ModuleAPI, Parameter)):
            raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} (a Module or None "
                            f"expected)")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    # --- registering by name (for names computed at run time) ----------------------
    def _check_new_name(self, name, kind, registry):
        """A name may be registered again in its own `registry` only: as PyTorch, register_buffer does
        not turn a parameter into a buffer, nor add_module a buffer into a module (KeyError)."""
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{kind} name must be a non-empty string without '.', got {name!r}")
        if hasattr(self, name) and name not in registry:
            raise KeyError(f"cannot register {kind} {name!r}: {type(self).__name__} already has an "
                           f"attribute of that name")

    def register_parameter(self, name, param):
        """Register `param` (a Parameter, or None for "no such parameter") under `name`."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter {name!r}: "
                            f"wrap it in Parameter(...) or register it as a buffer")
        self._check_new_name(name, "parameter", self._parameters)
        setattr(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Register non-trainable state (running statistics, masks) that `state_dict` saves and `to` moves."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot register {type(tensor).__name__} as buffer {name!r}: a Tensor or None expected")
        self._check_new_name(name, "buffer", self._buffers)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        """Register `module` under `name` (what `self.name = module` does, for computed names).

        `None` registers the name holding None, as in PyTorch (a container's empty slot), where
        `self.name = None` takes the name out of the registries."""
        if module is not None and not isinstance(module, _ModuleAPI):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_new_name(name, "module", self._modules)
        if module is None:
            self._modules[name] = None
            object.__setattr__(self, name, None)
        else:
            setattr(self, name, module)

    register_module = add_module

    # --- the walks, in PyTorch's names ------------------------------------------------
    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs, e.g. ("0.weight", ...), ("layers.1.bias", ...)."""
        yield from self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True):
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def num_parameters(self, trainable_only=False):
        """How many numbers the model learns (all parameters, or those that require grad)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def apply(self, fn):
        """Call fn(module) on every sub-module (children first), then on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and gradients -----------------------------------------------------------
    def train(self, mode=True):
        """Training mode (Dropout drops) for this module and all inside it; returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        """Evaluation mode: `train(False)`."""
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget accumulated gradients: drop them (default) or fill them with zeros."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.data[...] = 0

    # --- device and dtype ----------------------------------------------------------------
    def to(self, *args, device=None, dtype=None):
        """Move (and/or cast) every parameter, gradient and buffer in place; returns self."""
        for arg in args:
            if isinstance(arg, (str, Device)):
                device = arg
            else:
                dtype = arg
        dev = None if device is None else _as_device(device)
        dtype = resolve_dtype(dtype)
        if dtype is not None and not is_floating(dtype):
            raise TypeError(f"Module.to only casts to floating-point dtypes, got {dtype.name}")
        for tensor in self._all_tensors():
            _convert_in_place(tensor, dev, dtype)  # in place: an optimizer holding them keeps working
            if tensor.grad is not None:
                _convert_in_place(tensor.grad, dev, dtype)
        return self

    def cpu(self): return self.to("cpu")
    def cuda(self, index=0): return self.to(f"cuda:{index}")
    def float(self): return self.to(np.dtype("float32"))
    def double(self): return self.to(np.dtype("float64"))
    def half(self): return self.to(np.dtype("float16"))

    def _all_tensors(self):
        return list(self.parameters()) + list(self.buffers())

    # --- loading ----------------------------------------------------------------------------
    def _check_state_dict(self, own, state_dict, strict):
        """(missing, unexpected) names of `state_dict` against `own`; one RuntimeError naming every problem.

        Shape mismatches always raise; missing and unexpected keys only when `strict`.
        """
        missing, unexpected, mismatched = _compare_state_dicts(own, state_dict)
        problems = [f"size mismatch for {name}: copying a param with shape {got} from checkpoint, "
                    f"the shape in current model is {want}." for name, got, want in mismatched]
        if strict:
            if unexpected:
                problems.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(problems))
        return missing, unexpected

    # --- printing ------------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside `Name(...)`; layers override it (e.g. `in_features=2, ...`)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for key, sub in self._modules.items():  # children indented under their names
            lines.append(f"({key}): " + repr(sub).replace("\n", "\n  "))
        if not self._modules and len(lines) <= 1:
            return f"{type(self).__name__}({''.join(lines)})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


# %% [markdown]
# ## `nn.functional`: argument checks and the activations by name
#
# The fused ops of the lesson call these first, so a wrong shape, dtype or device
# fails with a message that names it instead of deep inside NumPy.

# %%
#| export nn.functional
"""`tinytorch.nn.functional`: layers as plain functions of tensors; the fused ones carry their own backward."""
import functools
import math

import numpy as np

from tinytorch.core.backend import (
    _is_half, check_later, generator_for, get_xp, is_floating, namespace_of, scatter_add, to_device, to_host,
)
from tinytorch.core.tensor import (  # noqa: F401  (_autocast_op, _bfloat16_in_float32: the lesson's linear)
    Tensor, _autocast_op, _bfloat16_in_float32, _cast, from_op,
)


def _float_array(t):
    return t.data if is_floating(t.data.dtype) else t.data.astype(np.float32)


def _check_linear(input, weight, bias):
    if weight.ndim != 2:
        raise RuntimeError(f"linear: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if input.ndim == 0 or input.shape[-1] != weight.shape[1]:
        raise RuntimeError(f"linear: input of shape {tuple(input.shape)} does not end in in_features="
                           f"{weight.shape[1]} (the weight has shape {tuple(weight.shape)})")
    if not is_floating(input.dtype):
        raise TypeError(f"linear: input must be floating point, got {input.dtype.name}; convert with .float()")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise RuntimeError(f"linear: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t._device != input._device:
            raise RuntimeError(f"linear: input is on {input._device} but {name} is on {t._device}; "
                               f"move the model or the input with .to()")


def _embedding_indices(input, weight):
    """The index array of `input`, checked: integer dtype, same device, within [0, num_embeddings)."""
    if weight.ndim != 2:
        raise RuntimeError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got {tuple(weight.shape)}")
    if isinstance(input, Tensor):
        if input._device != weight._device:
            raise RuntimeError(f"embedding: indices are on {input._device} but the weight is on {weight._device}")
        idx = input.data
    else:
        idx = get_xp(weight._device).asarray(input)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers (int64 or int32), got dtype {idx.dtype.name}; "
                        f"convert them with .long()")
    n = weight.shape[0]
    if idx.size:  # NumPy would wrap a negative index silently; checked on the device, no sync
        def out_of_range():
            low, high = to_host(idx.min()), to_host(idx.max())
            return IndexError(f"embedding: index {high if high >= n else low} is out of range for "
                              f"num_embeddings={n} (valid indices are 0 to {n - 1})")
        check_later((idx.min() < 0) | (idx.max() >= n), out_of_range)
    return idx


def _normalized_axes(input, normalized_shape):
    """(normalized_shape as a tuple, the axes it covers: the last len(normalized_shape))."""
    shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if not shape:  # () would normalise each number alone, to 0
        raise RuntimeError("layer_norm: normalized_shape must name at least one dimension, got ()")
    if len(shape) > input.ndim or tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise RuntimeError(f"layer_norm: normalized_shape {list(shape)} must match the last dimensions of "
                           f"the input, got input of shape {tuple(input.shape)}")
    return shape, tuple(range(input.ndim - len(shape), input.ndim))


def _as_rows(x, shape):
    """The array x as (N, D) rows, D the product of its last dims `shape` (N or D may be 0)."""
    return x.reshape(math.prod(x.shape[:x.ndim - len(shape)]), math.prod(shape))


def _in_float32_if_half(norm):
    """Run a fused norm on a float16/bfloat16 input in float32 and return the input's dtype, as PyTorch
    does: in float16 a row's mean square passes 65504 once its values reach 256, and eps=None becomes
    float32's machine epsilon, not float16's 9.8e-4. The whole norm runs in float32, not only its
    statistics, for accuracy: with float32 statistics rounded to float16, rows of 300 + N(0, 1) came
    out up to 0.24 away from PyTorch's float16 layer_norm (rows of 300 * N(0, 1): 7.5, the variance
    overflows), this way 0.004 (one float16 step); it costs a float32 copy of the input and output."""
    @functools.wraps(norm)
    def run(input, *args, **kwargs):
        if not _is_half(input.dtype):
            return norm(input, *args, **kwargs)

        def up(a):  # _cast, not .to(): .to() refuses bfloat16 by name, and autocast makes bfloat16 activations
            return _cast(a, np.dtype(np.float32)) if isinstance(a, Tensor) and _is_half(a.dtype) else a
        return _cast(norm(up(input), *map(up, args), **{k: up(v) for k, v in kwargs.items()}), input.dtype)
    return run


# Row sums for the fused ops (LayerNorm, RMSNorm, attention's softmax), each over the last
# axis and kept as (..., 1) so it broadcasts back. NumPy reduces a short last axis one row at a
# time, with a fixed cost per row: measured on (768, 128) float32 rows, `a.mean(axis=-1)` takes
# ~40 µs and `(a * b).mean(axis=-1)` ~55 µs, where the same sums as a BLAS matrix-vector product
# and a `vecdot` take ~9 and ~11 µs. On a GPU the plain reduction is one kernel, so the GPU keeps it.


def _row_sum(a, b=None):
    """Σ over the last axis of a (of a·b when b is given), kept: shape (..., 1), in a's dtype."""
    return _row_total(a, b).astype(a.dtype, copy=False)


def _row_mean(a, b=None):
    """Mean over the last axis of a (of a·b when b is given), kept: shape (..., 1), in a's dtype."""
    total = _row_total(a, b)
    total *= 1.0 / max(a.shape[-1], 1)
    return total.astype(a.dtype, copy=False)


def _row_total(a, b):
    """The row sums, float16 and bfloat16 ones in float32 (as NumPy's own reductions add them): a
    float16 sum passes 65504 long before the mean does."""
    if a.dtype.itemsize < 4:
        a = a.astype(np.float32)
        b = None if b is None else b.astype(np.float32)
    xp = namespace_of(a)
    if xp is not np:
        return (a if b is None else a * b).sum(axis=-1, keepdims=True)
    if b is None:
        return np.matmul(a, np.ones((a.shape[-1], 1), dtype=a.dtype))
    if hasattr(np, "vecdot"):  # NumPy >= 2.0
        return np.vecdot(a, b)[..., None]
    return np.einsum("...i,...i->...", a, b)[..., None]


def _check_probability(p):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


# Module 01's ops under the names PyTorch's `torch.nn.functional` gives them.
def relu(input):
    return input.relu()


def gelu(input, approximate="none"):
    """x Φ(x): exact ("none") or GPT-2's tanh approximation ("tanh")."""
    return input.gelu(approximate)


def tanh(input):
    return input.tanh()


def sigmoid(input):
    return input.sigmoid()


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)


# %% [markdown]
# ## `nn.init`: random fills
#
# Every initialiser writes into `t.data[...]` in place (the `Parameter` object stays
# the same), under `no_grad`, draws from `generator_for(tensor.device)` (the CPU's
# generator, or the GPU's, so a cuda weight is drawn on the GPU with no copy; both are
# seeded by `tinytorch.manual_seed`), and returns the tensor.

# %%
#| export nn.init
"""`tinytorch.nn.init`: fill tensors in place with PyTorch's initialisation schemes."""
import math

import numpy as np

from tinytorch.core.autograd import no_grad
from tinytorch.core.backend import generator_for, is_floating, to_device


def _fill(tensor, array):
    """Write `array` into `tensor` in place, on the tensor's device, in its dtype."""
    tensor.data[...] = to_device(array.astype(tensor.data.dtype, copy=False), tensor._device)
    return tensor


def _draw_dtype(tensor):
    """The dtype to draw in; random fills are for floating-point tensors only (as in PyTorch)."""
    if not is_floating(tensor.data.dtype):
        raise TypeError(f"random fills need a floating-point tensor, got dtype {tensor.data.dtype.name}")
    return np.float64 if tensor.data.dtype == np.float64 else np.float32


@no_grad()
def uniform_(tensor, a=0.0, b=1.0):
    """Fill with numbers drawn from U(a, b)."""
    if a > b:
        raise ValueError(f"uniform_ expects a <= b, got a={a}, b={b}")
    u = generator_for(tensor._device).random(tensor.shape, dtype=_draw_dtype(tensor))
    return _fill(tensor, u * (b - a) + a)


@no_grad()
def normal_(tensor, mean=0.0, std=1.0):
    """Fill with numbers drawn from N(mean, std²)."""
    if std < 0:
        raise ValueError(f"normal_ expects std >= 0, got std={std}")
    z = generator_for(tensor._device).standard_normal(tensor.shape, dtype=_draw_dtype(tensor))
    return _fill(tensor, z * std + mean)


@no_grad()
def constant_(tensor, val):
    """Fill with `val`."""
    tensor.data[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def calculate_gain(nonlinearity, param=None):
    """The factor by which an activation shrinks the signal's std, to undo in the init."""
    if nonlinearity in ("linear", "identity", "sigmoid") or nonlinearity.startswith(("conv", "conv_transpose")):
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"negative_slope {slope!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}: use linear, sigmoid, tanh, relu, "
                     f"leaky_relu or selu")


def _check_fan_mode(mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")


# %% [markdown]
# ## `nn.activation`: the activations as modules
#
# So they can sit in a `Sequential`. Each one calls its function in `nn.functional`.

# %%
#| export nn.activation
"""Activation modules: `ReLU`, `GELU`, `Tanh`, `Sigmoid`, `SiLU`, `Softmax`, `Identity`, `Flatten`."""
from tinytorch.nn.functional import gelu, relu, sigmoid, silu, softmax, tanh
from tinytorch.nn.module import Module


class ReLU(Module):
    def forward(self, input):
        return relu(input)


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return gelu(input, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, input):
        return tanh(input)


class Sigmoid(Module):
    def forward(self, input):
        return sigmoid(input)


class SiLU(Module):
    def forward(self, input):
        return silu(input)


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return softmax(input, -1 if self.dim is None else self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Identity(Module):
    def forward(self, input):
        return input


class Flatten(Module):
    """Merge dims start_dim..end_dim (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# %% [markdown]
# ## `nn.container`: `Sequential`, `ModuleList`, `ModuleDict`
#
# Each registers its entries with `add_module` under their position ("0", "1", ...)
# or key, which is where names like `layers.1.bias` come from.

# %%
#| export nn.container
"""Containers whose entries are registered: `Sequential`, `ModuleList`, `ModuleDict`."""
from collections import OrderedDict

from tinytorch.nn.module import Module


def _position(index, length, kind):
    """A valid non-negative position for index (negative counts from the end)."""
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for a {kind} of length {length}")
    return index % length


class _ModuleSequence(Module):
    """What Sequential and ModuleList share: entries registered as "0", "1", ... in order."""

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __setitem__(self, index, module):
        self.add_module(list(self._modules)[_position(index, len(self), type(self).__name__)], module)

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index if isinstance(index, slice) else _position(index, len(self), type(self).__name__)]
        self._renumber(modules)

    def insert(self, index, module):
        if not -len(self) <= index <= len(self):
            raise IndexError(f"index {index} is out of range for inserting into a {type(self).__name__} "
                             f"of length {len(self)}")
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)
        return self

    def pop(self, index=-1):
        module = self[index]
        del self[index]
        return module

    def _renumber(self, modules):
        """Register `modules` again as "0", "1", ... (after one was removed or inserted), as PyTorch does."""
        for name in list(self._modules):
            delattr(self, name)
        for i, module in enumerate(modules):
            self.add_module(str(i), module)


class Sequential(_ModuleSequence):
    """Modules applied one after another: Sequential(Linear(2, 8), ReLU(), Linear(8, 1))."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(args):
                self.add_module(str(i), module)

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return list(self._modules.values())[_position(index, len(self), "Sequential")]


class ModuleList(_ModuleSequence):
    """A list whose modules are registered (named "0", "1", ...)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[str(_position(index, len(self), "ModuleList"))]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList is a container, not a layer: loop over it in your forward()")


class ModuleDict(Module):
    """A dict whose modules are registered under their keys."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        if key not in self._modules:
            raise KeyError(key)
        delattr(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def pop(self, key):
        module = self[key]
        del self[key]
        return module

    def clear(self):
        for key in list(self._modules):
            del self[key]

    def update(self, modules):
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is a container, not a layer: pick its modules in your forward()")


# %% [markdown]
# ## `core.serialization`: `save`, `load`, `atomic_write`
#
# A checkpoint is a state dict in the safetensors format: a JSON header (names,
# dtypes, shapes, offsets) and the raw bytes; loading it cannot run code, unlike a
# pickle. Every durable write in tinytorch goes through `atomic_write`: a temporary
# file in the same folder, fsync'd, renamed over the target, so a crash leaves the
# old file or the new one, never half of one. The state dict's key order is kept in
# the file's metadata, since safetensors stores tensors by name without an order.

# %%
#| export core.serialization
"""`tinytorch.save` / `tinytorch.load`: state dicts as safetensors files (no pickle), written atomically."""
import json
import os
import stat
import tempfile
from collections import OrderedDict

import numpy as np
from safetensors.numpy import load as _load_bytes, save as _save_bytes, save_file

from tinytorch.core.backend import device as _as_device, to_device, to_numpy
from tinytorch.core.tensor import Tensor, from_op

_ORDER_KEY = "tinytorch.order"  # metadata entry: the state dict's key order, as JSON


def _fsync_folder(folder):
    """Make a rename inside `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path):
    """The permissions a rewrite of `path` keeps: the file's own, or for a new file 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask: from /proc on Linux; elsewhere by setting it and putting it straight back
    (a moment in which another thread's new file would get mode 0666)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def atomic_write(path, data):
    """Write `data` (bytes, or a function that writes to a path it is given) to `path` atomically.

    The one durable write of tinytorch: a temporary file in the same folder, fsync'd,
    renamed over `path`, then the folder fsync'd. A crash at any point leaves either the
    old file or the new one, never half of one. `path` may also be an open binary file
    object (`io.BytesIO`, ...): bytes are written to it as they are, its owner decides durability.
    """
    if hasattr(path, "write"):
        if callable(data):
            raise TypeError("atomic_write: a file object takes bytes, not a function that writes to a path")
        path.write(data)
        return
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(handle)
            handle = None
            data(tmp)
            with open(tmp, "rb+") as written:
                os.fsync(written.fileno())
        else:
            with os.fdopen(handle, "wb") as out:
                handle = None
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp made it private (0600); give it the mode open() would
        os.replace(tmp, path)  # readers see the old file or the new one
    except BaseException:
        if handle is not None:
            os.close(handle)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def save(state_dict, f):
    """Write a dict name -> Tensor as safetensors: to a path (atomically) or a binary file object."""
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"save: keys must be strings, got {name!r}")
        if not isinstance(value, Tensor):
            raise TypeError(f"save: the value of {name!r} is a {type(value).__name__}, not a Tensor; "
                            f"safetensors files hold tensors only")
        arrays[name] = np.ascontiguousarray(to_numpy(value.data))  # cuda: copied to the host
    metadata = {_ORDER_KEY: json.dumps(list(arrays))}
    if hasattr(f, "write"):  # io.BytesIO, an open file, ...
        f.write(_save_bytes(arrays, metadata=metadata))
        return
    atomic_write(f, lambda tmp: save_file(arrays, tmp, metadata=metadata))


def _safetensors_metadata(data):
    """The `__metadata__` of a safetensors buffer: its header is 8 bytes of length, then JSON."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(bytes(data[8:8 + size])).get("__metadata__") or {}


def load(f, device="cpu"):
    """Read safetensors from a path or a binary file object into an OrderedDict name -> Tensor on `device`."""
    if hasattr(f, "read"):
        data, where = f.read(), f"the file object {getattr(f, 'name', type(f).__name__)!r}"
    else:
        path = os.fspath(f)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"load: no checkpoint file at {path!r}")
        with open(path, "rb") as handle:
            data, where = handle.read(), repr(path)
    try:
        arrays = _load_bytes(data)
        metadata = _safetensors_metadata(data)
    except Exception as err:  # safetensors raises its own error types for bad headers and sizes
        raise RuntimeError(f"load: cannot read {where} as a safetensors checkpoint; it is truncated "
                           f"or corrupt ({type(err).__name__}: {err})") from None
    order = [name for name in json.loads(metadata.get(_ORDER_KEY, "[]")) if name in arrays]
    order += sorted(name for name in arrays if name not in set(order))
    dev = _as_device(device)
    return OrderedDict((name, from_op(to_device(arrays[name], dev), dev)) for name in order)
