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
# # Module 03 — Layers
#
# A network is a function with millions of numbers inside it. Modules 01 and 02
# gave us tensors and gradients; a model needs one more thing: a way to *own*
# those numbers. Something must find every weight of a 12-layer transformer to
# hand it to the optimizer, zero its gradients, move it to the GPU, switch
# dropout off for evaluation, and save it to disk under a name that still means
# something when it is loaded back.
#
# PyTorch's answer, which we copy name for name, is `nn.Module`: an object
# that registers its `Parameter`s and its sub-modules as you assign them, and
# can then walk itself recursively. On top of it we build the layers every
# model in this course is made of: `Linear`, `Embedding`, `LayerNorm`,
# `Dropout`, the activations, and the containers `Sequential`, `ModuleList`
# and `ModuleDict`; their stateless forms in `tinytorch.nn.functional`, the
# initialisers in `tinytorch.nn.init`, and `tinytorch.save`/`tinytorch.load`.
#
# **You will implement:** `Module.__setattr__` and `Module.named_modules`
# (registration and recursion), the checks behind `load_state_dict`, the fused
# `linear` op, `layer_norm` with its hand-derived backward, and `dropout`.
#
# **Cost to keep in mind:** a layer costs memory three times: its parameters,
# their gradients (same size), and the activations it saves for the backward
# pass (proportional to the batch). We measure all three at the end.

# %%
#| default_exp nn.layers

# %%
#| export
"""Layers: `Module`, `Parameter`, `Linear`, `Embedding`, `LayerNorm`, `Dropout`, activations, containers."""
import math
from collections import OrderedDict, namedtuple

import numpy as np

from tinytorch.core.backend import (
    DEFAULT_FLOAT, Device, device as _as_device, get_xp, is_floating, resolve_dtype, to_device,
)
from tinytorch.core.tensor import Tensor, _wrap
from tinytorch.nn.functional import (
    dropout, embedding, gelu, layer_norm, linear, relu, sigmoid, silu, softmax, tanh,
)
from tinytorch.nn.init import kaiming_uniform_, normal_, ones_, uniform_, zeros_

# %% [markdown]
# The layers call the functions of `tinytorch.nn.functional` and
# `tinytorch.nn.init`, which this module also writes (in the cells marked
# `#| export nn.functional` and `#| export nn.init`). The import above brings in
# the exported versions; running this notebook redefines them below, so the
# notebook always uses the code you are editing. Their own imports:

# %%
#| export nn.functional
"""`tinytorch.nn.functional`: layers as plain functions of tensors; the fused ones carry their own backward."""
import numpy as np

from tinytorch.core.backend import default_generator, get_xp, is_floating, scatter_add, to_device
from tinytorch.core.tensor import Tensor, _wrap

# %%
#| export nn.init
"""`tinytorch.nn.init`: fill tensors in place with PyTorch's initialisation schemes."""
import math

import numpy as np

from tinytorch.core.autograd import no_grad
from tinytorch.core.backend import default_generator, to_device

# %%
from tinytorch.core.autograd import gradcheck  # the tests in this notebook use it

# %% [markdown]
# ## 1. `Parameter`: a tensor that says "train me"
#
# *Why.* Inside a model there are many tensors: weights, but also constants,
# masks, running statistics, intermediate results. Only some should be
# trained. PyTorch marks those by their **type**: a `Parameter` is a `Tensor`
# subclass that requires grad by default, and a `Module` collects every
# attribute of that type. Nothing else changes: a `Parameter` takes part in
# every op exactly like a tensor (the results are plain tensors).
#
# `Parameter(data)` wraps `data` without copying when it is a tensor (so
# `Parameter(torch_like_tensor)` shares its numbers), and converts array-likes
# with the same rules as `tensor()`; integer data becomes float32, since only
# floating-point numbers have gradients.

# %%
#| export
class Parameter(Tensor):
    """A tensor that a `Module` registers as trainable (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            data = np.empty((0,), dtype=DEFAULT_FLOAT)
        source = data if isinstance(data, Tensor) else Tensor(data)
        array = source.data
        self.data = array if is_floating(array.dtype) else array.astype(DEFAULT_FLOAT)
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
    return Parameter(_wrap(get_xp(dev).empty(shape, dtype=dtype), dev))


# %%
w = Parameter([[1.0, 2.0], [3.0, 4.0]])
print(w)
print("type of w * 2:", type(w * 2).__name__, "| requires grad:", (w * 2).requires_grad)

# %% [markdown]
# ## 2. `Module`: registration by assignment
#
# *Why.* We want to write a model the natural way,
#
# ```python
# class MLP(Module):
#     def __init__(self):
#         super().__init__()
#         self.hidden = Linear(2, 8)
#         self.out = Linear(8, 1)
# ```
#
# and get `model.parameters()` for free. The trick is `__setattr__`: Python calls
# it for every `self.name = value`. `Module.__setattr__` looks at the value's
# type and files it in one of three ordered dicts, **before** storing it as a
# normal attribute (PyTorch keeps them only in the dicts and finds them with
# `__getattr__`; a plain attribute as well keeps `self.weight` at full speed):
#
# | value | registry | in `parameters()` | in `state_dict()` |
# | --- | --- | --- | --- |
# | `Parameter` | `_parameters` | yes | yes |
# | `Module` | `_modules` | its own, recursively | its own, recursively |
# | `Tensor` via `register_buffer(name, t)` | `_buffers` | no | yes (unless `persistent=False`) |
# | anything else | none | no | no |
#
# A name that is re-assigned must leave the registry it was in (`self.bias =
# None` un-registers the bias). Assigning a tensor (or `None`) to the name of a
# registered buffer replaces the buffer; that is how running statistics are
# updated.
#
# *Recursion.* `named_modules()` walks the tree of modules depth-first,
# parents before children, and names each one by its path: the root is `""`,
# its child `hidden` is `"hidden"`, a grandchild is `"layers.1"`. A module
# reachable twice (a shared layer) is reported once: each module `id` goes in a
# `memo` set the first time it is seen. Everything else (`named_parameters`,
# `state_dict`, `train`, `to`, ...) is a loop over `named_modules()`.
#
# ### Exercise: `Module.__setattr__` and `Module.named_modules`
# In `__setattr__`: remove `name` from `_parameters` and `_modules`; then put a
# `Parameter` in `_parameters` (and drop it from `_buffers`), a `Module` in
# `_modules` (same), and for any other value whose name is a registered buffer,
# check it is a `Tensor` or `None` (else `TypeError`) and store it in
# `_buffers`. The provided last line stores the attribute itself.
#
# In `named_modules(memo, prefix, remove_duplicate)`: a generator. Skip `self`
# if `remove_duplicate` and its `id` is in `memo` (else add it); yield
# `(prefix, self)`; then for each `(name, child)` of `_modules` (skip `None`)
# yield from the child's `named_modules` with prefix `prefix + "." + name`
# (just `name` at the root).

# %% nbgrader={"grade": false, "grade_id": "module-registration", "locked": false, "schema_version": 3, "solution": true}
#| export
_IncompatibleKeys = namedtuple("_IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of every layer and model: owns Parameters, buffers and sub-modules by name."""

    def __init__(self):
        # object.__setattr__: our __setattr__ needs these dicts to exist first
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define forward(self, ...) in it")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # --- registration ------------------------------------------------------------
    def __setattr__(self, name, value):
        """`self.name = value`: Parameters and Modules are registered; buffers are updated."""
        if "_parameters" not in self.__dict__:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(f"cannot assign {type(value).__name__} {name!r} before Module.__init__() "
                                     f"ran: call super().__init__() first in {type(self).__name__}.__init__")
            object.__setattr__(self, name, value)
            return
        ### BEGIN SOLUTION
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._buffers.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} "
                                f"(a Tensor or None expected)")
            self._buffers[name] = value
        ### END SOLUTION
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def _check_new_name(self, name, kind):
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{kind} name must be a non-empty string without '.', got {name!r}")
        known = name in self._parameters or name in self._buffers or name in self._modules
        if hasattr(self, name) and not known:
            raise KeyError(f"cannot register {kind} {name!r}: {type(self).__name__} already has an "
                           f"attribute of that name")

    def register_parameter(self, name, param):
        """Register `param` (a Parameter, or None for "no such parameter") under `name`."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot register {type(param).__name__} as parameter {name!r}: "
                            f"wrap it in Parameter(...) or register it as a buffer")
        self._check_new_name(name, "parameter")
        setattr(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """Register non-trainable state (running statistics, masks) that `state_dict` saves and `to` moves."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot register {type(tensor).__name__} as buffer {name!r}: a Tensor or None expected")
        self._check_new_name(name, "buffer")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name, module):
        """Register `module` under `name` (what `self.name = module` does, for computed names)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._check_new_name(name, "module")
        setattr(self, name, module)

    register_module = add_module

    # --- walking the tree --------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module and all inside it, parents first, each once."""
        ### BEGIN SOLUTION
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)
        ### END SOLUTION

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

    def _named_members(self, registry, prefix, recurse):
        """(dotted name, tensor) from one registry of every module; a shared tensor once."""
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

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

    # --- modes and gradients -----------------------------------------------------
    def train(self, mode=True):
        """Training mode (Dropout drops) for this module and all inside it; returns self."""
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

    # --- device and dtype --------------------------------------------------------
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
            _convert_in_place(tensor, dev, dtype)
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

    # --- saving and loading ------------------------------------------------------
    def _state_tensors(self):
        """name -> live Parameter or persistent buffer: each module's own, then its children's."""
        out = OrderedDict()
        for prefix, module in self.named_modules(remove_duplicate=False):
            dot = f"{prefix}." if prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    out[dot + name] = param
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module._non_persistent:
                    out[dot + name] = buffer
        return out

    def state_dict(self):
        """An OrderedDict name -> detached tensor (sharing memory with the model) of everything to save."""
        return OrderedDict((name, t.detach()) for name, t in self._state_tensors().items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy `state_dict`'s tensors into this model's arrays, in place.

        Missing keys, unexpected keys and shape mismatches are reported together, by name,
        in one RuntimeError. With strict=False only shape mismatches raise, and the
        (missing_keys, unexpected_keys) named tuple says what did not match.
        """
        own = self._state_tensors()
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
        for name, target in own.items():
            if name in state_dict:
                source = state_dict[name]
                array = source.data if isinstance(source, Tensor) else np.asarray(source)
                target.data[...] = to_device(array, target._device)
        return _IncompatibleKeys(missing, unexpected)

    # --- printing ------------------------------------------------------------------
    def extra_repr(self):
        """The text inside `Name(...)`; layers override it (e.g. `in_features=2, ...`)."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, child in self._modules.items():
            lines.append(f"({name}): " + repr(child).replace("\n", "\n  "))
        if not self._modules and len(lines) <= 1:
            return f"{type(self).__name__}({''.join(lines)})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def _convert_in_place(tensor, dev, dtype):
    """Give `tensor` a new dtype (floating ones only) and/or device, keeping its identity."""
    if dtype is not None and is_floating(tensor.data.dtype):
        tensor.data = tensor.data.astype(dtype, copy=False)
    if dev is not None:
        tensor.data = to_device(tensor.data, dev)
        tensor._device = dev

# %% nbgrader={"grade": true, "grade_id": "test-module-registration", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_module_registration():
    class Pair(Module):
        def __init__(self):
            super().__init__()
            self.weight = Parameter([[1.0, 2.0]])
            self.scale = 2.0  # a plain attribute: not registered
            self.register_buffer("steps", Tensor([0.0]))

    class Model(Module):
        def __init__(self):
            super().__init__()
            self.first = Pair()
            self.inner = Module()
            self.inner.second = Pair()
            self.bias = Parameter([0.5])

    model = Model()
    names = [name for name, _ in model.named_modules()]
    assert names == ["", "first", "inner", "inner.second"], \
        f"named_modules: root first, then children depth-first with dotted names; got {names}"
    params = [name for name, _ in model.named_parameters()]
    assert sorted(params) == ["bias", "first.weight", "inner.second.weight"], \
        f"named_parameters should find every Parameter by its dotted path, got {params}"
    assert model.first.scale == 2.0 and "scale" not in model.first._parameters, "plain attributes stay plain"
    assert [n for n, _ in model.named_buffers()] == ["first.steps", "inner.second.steps"], \
        f"buffers are found recursively too, got {[n for n, _ in model.named_buffers()]}"
    model.first.steps = Tensor([5.0])
    assert model.first._buffers["steps"].item() == 5.0, "assigning a tensor to a buffer's name updates the buffer"
    model.bias = None
    assert "bias" not in [n for n, _ in model.named_parameters()], "self.bias = None must un-register the bias"
    shared = Pair()
    model.first, model.inner.second = shared, shared
    assert len(list(model.parameters())) == 1, "a module used twice is visited once: its weight counts once"
    ### BEGIN HIDDEN TESTS
    model.first = Parameter([1.0])
    assert "first" not in model._modules and "first" in model._parameters, "a name moves between registries"
    try:
        model.inner.second.steps = 3
    except TypeError:
        pass
    else:
        raise AssertionError("assigning a non-tensor to a buffer must raise TypeError")
    ### END HIDDEN TESTS


test_module_registration()
print("Module registration: ok")

# %% [markdown]
# What the rest of `Module` gives you, all built on `named_modules`:

# %%
class Pair(Module):
    def __init__(self):
        super().__init__()
        self.weight = Parameter([[1.0, 2.0]])
        self.register_buffer("steps", Tensor([0.0]))


demo = Module()
demo.block = Pair()
print([name for name, _ in demo.named_parameters()], [name for name, _ in demo.named_buffers()])
print("state_dict keys:", list(demo.state_dict()), "| parameters:", demo.num_parameters())
print("training:", demo.block.training, "->", demo.eval().block.training)

# %% [markdown]
# ## 3. Checking a checkpoint before loading it
#
# `load_state_dict(sd)` copies each tensor of `sd` **into** the array of the
# model's tensor of the same name (`target.data[...] = value`): the model's
# `Parameter` objects stay the same objects, so an optimizer that holds them
# keeps working.
#
# Loading goes wrong in three ways, and a user fixing a checkpoint wants to see
# all of them at once, not one per attempt: names the model has and the
# checkpoint lacks (**missing**), names the checkpoint has and the model lacks
# (**unexpected**, often a prefix such as `module.` or `model.` left by a
# wrapper), and names in both with different shapes (**size mismatch**, a
# wrong config). `load_state_dict` (provided, above) formats the message;
# `_compare_state_dicts` finds the problems.
#
# ### Exercise: `_compare_state_dicts(expected, given)`
# Both arguments map names to tensors (anything with `.shape`). Return three
# lists, in the order of the dict they come from: `missing` (names of
# `expected` not in `given`), `unexpected` (names of `given` not in
# `expected`), and `mismatched`: `(name, given shape, expected shape)` (shapes
# as tuples) for names in both whose shapes differ.

# %% nbgrader={"grade": false, "grade_id": "compare-state-dicts", "locked": false, "schema_version": 3, "solution": true}
#| export
def _compare_state_dicts(expected, given):
    """(missing, unexpected, mismatched) between a model's tensors and a checkpoint, by name."""
    ### BEGIN SOLUTION
    missing = [name for name in expected if name not in given]
    unexpected = [name for name in given if name not in expected]
    mismatched = [(name, tuple(given[name].shape), tuple(expected[name].shape))
                  for name in expected
                  if name in given and tuple(given[name].shape) != tuple(expected[name].shape)]
    return missing, unexpected, mismatched
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-compare-state-dicts", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_compare_state_dicts():
    expected = {"w": Tensor(np.zeros((2, 3))), "b": Tensor(np.zeros(2)), "c": Tensor(np.zeros(1))}
    given = {"w": Tensor(np.zeros((3, 2))), "b": Tensor(np.ones(2)), "extra": Tensor(np.zeros(1))}
    missing, unexpected, mismatched = _compare_state_dicts(expected, given)
    assert missing == ["c"], f"'c' is in the model but not in the checkpoint: missing should be ['c'], got {missing}"
    assert unexpected == ["extra"], f"'extra' is only in the checkpoint: unexpected should be ['extra'], got {unexpected}"
    assert mismatched == [("w", (3, 2), (2, 3))], \
        f"mismatched is [(name, given shape, expected shape)] = [('w', (3, 2), (2, 3))], got {mismatched}"
    assert _compare_state_dicts(expected, expected) == ([], [], []), "a state dict matches itself"

    class Box(Module):
        def __init__(self):
            super().__init__()
            self.w = Parameter(np.zeros((2, 3), dtype=np.float32))
            self.c = Parameter(np.zeros(1, dtype=np.float32))

    box = Box()
    try:
        box.load_state_dict(given)
    except RuntimeError as err:
        for word in ("c", "extra", "size mismatch for w"):
            assert word in str(err), f"the error must name every problem, {word!r} is missing from:\n{err}"
    else:
        raise AssertionError("load_state_dict must raise when keys are missing or shapes differ")
    weights = box.w
    box.load_state_dict({"w": Tensor(np.ones((2, 3))), "c": Tensor([2.0])})
    assert box.w is weights and box.w.data.sum() == 6, "loading copies into the existing Parameter"
    ### BEGIN HIDDEN TESTS
    result = box.load_state_dict({"w": Tensor(np.ones((2, 3)))}, strict=False)
    assert result.missing_keys == ["c"] and result.unexpected_keys == [], f"strict=False returns the keys: {result}"
    ### END HIDDEN TESTS


test_compare_state_dicts()
print("_compare_state_dicts: ok")

# %% [markdown]
# ## 4. Initialisation: `tinytorch.nn.init`
#
# *Why.* Start every weight at 0 and every hidden unit computes the same
# thing, gets the same gradient, and stays the same forever: the symmetry must
# be broken with random numbers. Their **scale** matters just as much. A layer
# y = W x with n = fan_in inputs of variance 1 and weights of variance s² gives
# outputs of variance n s². Stack 12 layers with s = 1 and the signal grows like
# n⁶; with s too small it vanishes. Choosing s² = 1/n keeps it steady:
#
# | scheme | std of the weights | keeps steady |
# | --- | --- | --- |
# | Xavier/Glorot (tanh, sigmoid) | gain · √(2 / (fan_in + fan_out)) | forward and backward signal |
# | Kaiming/He (ReLU) | gain / √fan | the forward (`fan_in`) or backward (`fan_out`) signal |
#
# `gain` compensates the activation: ReLU zeroes half the signal, so its gain
# is √2; for leaky ReLU with slope a it is √(2 / (1 + a²)). A uniform U(-b, b)
# has std b/√3, so a uniform initialiser uses the bound b = √3 · std.
#
# For a weight of shape (out, in, k...) PyTorch defines fan_in = in · k... and
# fan_out = out · k... (the k's are the receptive field of a convolution; 1
# for `Linear`).
#
# **PyTorch's `Linear` default** is `kaiming_uniform_(w, a=√5)`: gain
# √(2/6) = 1/√3, so b = √3 · (1/√3)/√fan_in = 1/√fan_in, i.e. U(-1/√in, 1/√in),
# and the same bound for the bias. (An odd way to write a simple rule, kept for
# history's sake; we keep it so weights match PyTorch's in distribution.)
#
# Every initialiser writes into `t.data[...]` in place (the `Parameter` object
# stays the same), under `no_grad`, draws from `default_generator()` on the CPU
# (so `tinytorch.manual_seed` gives the same numbers on every device), and
# returns the tensor. This is provided code.

# %%
#| export nn.init
def _fill(tensor, array):
    """Write `array` into `tensor` in place, on the tensor's device, in its dtype."""
    tensor.data[...] = to_device(array.astype(tensor.data.dtype, copy=False), tensor._device)
    return tensor


def _draw_dtype(tensor):
    return np.float64 if tensor.data.dtype == np.float64 else np.float32


@no_grad()
def uniform_(tensor, a=0.0, b=1.0):
    """Fill with numbers drawn from U(a, b)."""
    u = default_generator().random(tensor.shape, dtype=_draw_dtype(tensor))
    return _fill(tensor, u * (b - a) + a)


@no_grad()
def normal_(tensor, mean=0.0, std=1.0):
    """Fill with numbers drawn from N(mean, std²)."""
    z = default_generator().standard_normal(tensor.shape, dtype=_draw_dtype(tensor))
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


def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel), as PyTorch computes them."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor of at least 2 dimensions, "
                         f"got shape {tuple(tensor.shape)}")
    receptive = math.prod(tensor.shape[2:])  # 1 for a Linear weight
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def xavier_uniform_(tensor, gain=1.0):
    """U(-b, b) with b = gain · √(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor, gain=1.0):
    """N(0, std²) with std = gain · √(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = √3 · gain / √fan (He et al., 2015)."""
    fan = _fan(tensor, mode)
    if fan == 0:  # an empty tensor: nothing to fill
        return tensor
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std²) with std = gain / √fan (He et al., 2015)."""
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


# %%
w = Parameter(np.empty((256, 512), dtype=np.float32))
for name, fill in (("kaiming_uniform_(a=√5)", lambda t: kaiming_uniform_(t, a=math.sqrt(5))),
                   ("xavier_uniform_", xavier_uniform_), ("kaiming_normal_(relu)",
                   lambda t: kaiming_normal_(t, nonlinearity="relu"))):
    fill(w)
    print(f"{name:24s} std {w.data.std():.4f}  max |w| {np.abs(w.data).max():.4f}")
print(f"1/√512 = {1 / math.sqrt(512):.4f}, its std as a uniform: {1 / math.sqrt(3 * 512):.4f}")

# %% [markdown]
# ## 5. `Linear`: y = x Wᵀ + b
#
# *The shapes.* PyTorch stores the weight as (out_features, in_features), one
# row per output unit, and computes `y = x @ W.T + b`. `x` may have any number
# of leading dimensions: (batch, in), (batch, time, in), ...; each of them is
# just more rows. So we flatten them: x₂ of shape (N, in), with N the product
# of the leading dimensions, compute y₂ = x₂ Wᵀ + b of shape (N, out), and
# reshape back.
#
# *Why one op instead of `x @ W.T + b`.* Composed from primitives, the graph
# would hold a transpose, a matmul and an add; worse, the batched matmul's
# backward for W computes a (batch, in, out) array and sums it. Written as one
# op on the 2-D view, the backward is three matrix products (the rule of
# module 01's matmul, plus unbroadcast for the bias):
#
# | gradient | formula | shape |
# | --- | --- | --- |
# | dL/dx₂ | G W | (N, out)(out, in) = (N, in) |
# | dL/dW | Gᵀ x₂ | (out, N)(N, in) = (out, in) |
# | dL/db | Σ over the N rows of G | (out,) |
#
# where G is dL/dy₂ (the incoming gradient reshaped to (N, out)). Worked
# example: x = [[1, 2]], W = [[1, 0], [0, 1], [1, 1]], b = [0, 0, 1] gives
# y = [[1, 2, 4]]; with G = [[1, 1, 1]]: dL/dx = [[2, 2]], dL/dW = [[1, 2]] * 3
# rows, dL/db = [1, 1, 1].
#
# ### Exercise: `linear(input, weight, bias=None)`
# `x2` (the input as (N, in)) is given. Compute `out` (N, out), adding the bias
# when there is one, and define `linear_backward(g)` returning
# `(grad_input, grad_weight, grad_bias)` as arrays, `None` for an operand that
# is `None` or does not require grad. `grad_input` must have the input's shape.

# %%
#| export nn.functional
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


# %% nbgrader={"grade": false, "grade_id": "linear", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def linear(input, weight, bias=None):
    """input @ weight.T + bias, as one op: (..., in_features) -> (..., out_features)."""
    _check_linear(input, weight, bias)
    x2 = input.data.reshape(-1, input.shape[-1])  # (N, in): every leading dim is more rows
    ### BEGIN SOLUTION
    out = x2 @ weight.data.T  # (N, out)
    if bias is not None:
        out += bias.data

    def linear_backward(g):
        g2 = g.reshape(-1, g.shape[-1])  # (N, out)
        grad_input = (g2 @ weight.data).reshape(input.shape) if input.requires_grad else None
        grad_weight = g2.T @ x2 if weight.requires_grad else None
        grad_bias = g2.sum(axis=0) if bias is not None and bias.requires_grad else None
        return grad_input, grad_weight, grad_bias
    ### END SOLUTION
    out = out.reshape(input.shape[:-1] + (weight.shape[0],))
    return _wrap(out, input._device, (input, weight, bias), linear_backward)


# %%
#| export
class Linear(Module):
    """y = x Wᵀ + b, with W of shape (out_features, in_features) and PyTorch's default init."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _empty_parameter((out_features, in_features), dtype, device)
        self.bias = _empty_parameter((out_features,), dtype, device) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # kaiming_uniform_(a=√5) is U(-1/√in, 1/√in); the bias gets the same bound
        kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# %% nbgrader={"grade": true, "grade_id": "test-linear", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_linear():
    x = Tensor([[1.0, 2.0]], requires_grad=True)
    w = Parameter([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    b = Parameter([0.0, 0.0, 1.0])
    y = linear(x, w, b)
    assert y.shape == (1, 3), f"(1, 2) input, weight (3, 2): output (1, 3), got {y.shape}"
    assert np.allclose(y.data, [[1, 2, 4]]), f"x @ W.T + b = [[1, 2, 4]], got {y.tolist()}"
    gx, gw, gb = y._backward(np.ones((1, 3), dtype=np.float32))
    assert np.allclose(gx, [[2, 2]]), f"dL/dx = G @ W = [[2, 2]], got {gx}"
    assert np.allclose(gw, [[1, 2]] * 3), f"dL/dW = G.T @ x = [[1, 2]] in every row, got {gw}"
    assert np.allclose(gb, [1, 1, 1]), f"dL/db sums G over the rows: [1, 1, 1], got {gb}"
    assert linear(x, w).shape == (1, 3) and np.allclose(linear(x, w).data, [[1, 2, 3]]), "bias=None: no bias"
    x3 = Tensor(np.ones((4, 5, 2), dtype=np.float32), requires_grad=True)
    y3 = linear(x3, w, b)
    assert y3.shape == (4, 5, 3), f"leading dims are kept: (4, 5, 2) -> (4, 5, 3), got {y3.shape}"
    gx, gw, gb = y3._backward(np.ones((4, 5, 3), dtype=np.float32))
    assert gx.shape == (4, 5, 2), f"grad_input must have the input's shape (4, 5, 2), got {gx.shape}"
    assert np.allclose(gw, 20) and np.allclose(gb, 20), "weight and bias grads sum over all 4*5 rows"
    _, _, none_grad = linear(x, w, Tensor([0.0, 0.0, 1.0]))._backward(np.ones((1, 3), dtype=np.float32))
    assert none_grad is None, "a bias that does not require grad gets None"
    ### BEGIN HIDDEN TESTS
    rng = np.random.default_rng(0)
    xs = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    ws = Tensor(rng.standard_normal((2, 4)), requires_grad=True)
    bs = Tensor(rng.standard_normal(2), requires_grad=True)
    assert gradcheck(linear, (xs, ws, bs)), "linear's gradients"
    ### END HIDDEN TESTS


test_linear()
print("linear: ok")

# %%
layer = Linear(2, 3)
print(layer)
print(layer.weight.shape, layer.bias.shape, "| bound 1/√2 =", round(1 / math.sqrt(2), 4),
      "| max |w| =", round(float(np.abs(layer.weight.data).max()), 4))

# %% [markdown]
# ## 6. Activations
#
# Without a nonlinearity between them, two `Linear` layers collapse into one
# (W₂(W₁x) = (W₂W₁)x). Module 01 wrote the elementwise ops and their
# derivatives; `nn.functional` gives them PyTorch's functional names and the
# classes below wrap them as modules, so they can sit in a `Sequential`.
#
# One is new: **SiLU** (also called swish), silu(x) = x σ(x), used by Llama-
# style models. Composed from `x * x.sigmoid()` it would take two graph nodes
# and save both x and σ(x); written as one op it saves the same two arrays but
# one node, and its derivative is quick to write down by the product rule:
#
# d/dx [x σ(x)] = σ(x) + x σ(x)(1 - σ(x)) = σ(x) (1 + x (1 - σ(x))).

# %%
#| export nn.functional
def _float_array(t):
    return t.data if is_floating(t.data.dtype) else t.data.astype(np.float32)


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


def silu(input):
    """x σ(x) as one op, with d/dx = σ(x) (1 + x (1 - σ(x)))."""
    xp = get_xp(input._device)
    x = _float_array(input)
    s = 0.5 * xp.tanh(0.5 * x) + 0.5  # σ(x), written so it cannot overflow

    def silu_backward(g):
        return (g * s * (1 + x * (1 - s)),)
    return _wrap(x * s, input._device, (input,), silu_backward)


# %%
#| export
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


# %%
x = Tensor([-2.0, 0.0, 2.0])
for act in (ReLU(), GELU(), GELU("tanh"), Tanh(), Sigmoid(), SiLU()):
    print(f"{act!r:26s}", np.round(act(x).data, 4))

# %% [markdown]
# ## 7. `Embedding`: a lookup table you can train
#
# *Why.* Tokens are integers; a network needs vectors. `Embedding(n, d)` holds
# a weight of shape (n, d), one row per token, and `emb(idx)` picks rows:
# indices of shape (B, T) give vectors of shape (B, T, d). It equals
# `one_hot(idx) @ W` without building the (B, T, n) one-hot matrix.
#
# *Backward.* The forward is a gather, so the backward is a **scatter-add**:
# the gradient of row i is the sum of the output gradients at every position
# where token i was picked. A token that appears 3 times in the batch gets 3
# contributions; `grad[idx] += g` would keep just one (NumPy buffers repeated
# indices), so we use `scatter_add` (`np.add.at`). Rows never picked get zero.
#
# `padding_idx` names a row used for padding: it is initialised to zeros and
# gets no gradient, so it stays zero. Initialisation is N(0, 1), as in PyTorch.
# Indices must be integers within [0, n): an out-of-range index is an error
# that names it (NumPy would silently wrap a negative one).

# %%
#| export nn.functional
def _embedding_indices(input, weight):
    """The index array of `input`, checked: integer dtype, same device, within [0, num_embeddings)."""
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
    if idx.size:
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= n:
            raise IndexError(f"embedding: index {high if high >= n else low} is out of range for "
                             f"num_embeddings={n} (valid indices are 0 to {n - 1})")
    return idx


def embedding(input, weight, padding_idx=None):
    """Rows of `weight` picked by integer indices: (*input.shape) -> (*input.shape, embedding_dim)."""
    if weight.ndim != 2:
        raise RuntimeError(f"embedding: weight must be 2-D (num_embeddings, embedding_dim), got {tuple(weight.shape)}")
    idx = _embedding_indices(input, weight)
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    xp = get_xp(weight._device)

    def embedding_backward(g):
        grad = xp.zeros(weight.shape, dtype=g.dtype)
        scatter_add(grad, idx.reshape(-1), g.reshape(-1, weight.shape[1]))  # repeats add up
        if padding_idx is not None:
            grad[padding_idx] = 0
        return (grad,)
    return _wrap(weight.data[idx], weight._device, (weight,), embedding_backward)


# %%
#| export
class Embedding(Module):
    """A table of num_embeddings vectors of size embedding_dim, indexed by integer tensors."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None):
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx {padding_idx} must be within num_embeddings={num_embeddings}")
            padding_idx %= num_embeddings
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.weight = _empty_parameter((num_embeddings, embedding_dim), dtype, device)
        self.reset_parameters()

    def reset_parameters(self):
        normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


# %%
emb = Embedding(5, 3, padding_idx=0)
tokens = Tensor([[1, 1, 0], [4, 1, 2]])
out = emb(tokens)
out.sum().backward()
print(emb, "->", out.shape)
print("grad rows (token 1 was used 3 times, token 0 is padding):", emb.weight.grad.data[:, 0])

# %% [markdown]
# ## 8. `LayerNorm`: one op, with a backward derived by hand
#
# *Why.* Deep networks train badly when the scale of the activations drifts
# from layer to layer. LayerNorm fixes the scale of every vector: for each
# position, over its last dimension(s) of size D,
#
# μ = (1/D) Σ xᵢ,  σ² = (1/D) Σ (xᵢ - μ)²,  x̂ᵢ = (xᵢ - μ) / √(σ² + ε),  yᵢ = γᵢ x̂ᵢ + βᵢ
#
# (σ² is the *biased* variance, and below σ means √(σ² + ε)). γ and β (weight
# and bias, shape `normalized_shape`) let the network undo the normalisation
# where that helps; they start at 1 and 0.
#
# *Why fused.* Built from primitives (mean, sub, mul, mean, add, sqrt, div,
# mul, add) the graph has about nine nodes, and they keep several arrays of the
# input's size alive for the backward pass. One op keeps x̂ (input-sized) and
# 1/σ (one number per row). The price is deriving the backward by hand.
#
# *The backward.* Let g = dL/dy. Then dL/dβ = Σ_rows g and dL/dγ = Σ_rows g·x̂
# (sums over every dimension but the normalized ones). For x, write
# h = g·γ = dL/dx̂ and use x̂ᵢ = (xᵢ - μ)/σ:
#
# - ∂x̂ᵢ/∂xⱼ = (δᵢⱼ - 1/D)/σ - (xᵢ - μ)/σ² · ∂σ/∂xⱼ,
# - ∂σ/∂xⱼ = (1/(2σ)) · (2/D) Σₖ (xₖ - μ)(δₖⱼ - 1/D) = (xⱼ - μ)/(Dσ) = x̂ⱼ/D
#   (the -1/D term vanishes because Σₖ (xₖ - μ) = 0),
# - so ∂x̂ᵢ/∂xⱼ = (1/σ)(δᵢⱼ - 1/D - x̂ᵢ x̂ⱼ / D).
#
# Summing hᵢ ∂x̂ᵢ/∂xⱼ over i:
#
# **dL/dxⱼ = (1/σ) (hⱼ - mean(h) - x̂ⱼ · mean(h · x̂))**, means over the normalized dims.
#
# The two subtracted terms are the projections of h onto the two directions
# the normalisation removes: shifting all xᵢ (the mean) and scaling them
# (x̂). Checks: Σⱼ dL/dxⱼ = 0 (the output does not change if x shifts), and
# Σⱼ x̂ⱼ dL/dxⱼ = 0 (nor if x is scaled up).
#
# ### Exercise: `layer_norm(input, normalized_shape, weight, bias, eps)`
# `axes` (the normalized dimensions) and `batch_axes` (the others) are given.
# Compute x̂ and `rstd` = 1/σ with `keepdims=True`, the output, and
# `layer_norm_backward(g)` returning `(grad_input, grad_weight, grad_bias)`
# with the formulas above (`None` for an absent weight or bias, or one that
# does not require grad). Use only the arrays saved from the forward pass.

# %%
#| export nn.functional
def _normalized_axes(input, normalized_shape):
    """(normalized_shape as a tuple, the axes it covers: the last len(normalized_shape))."""
    shape = (int(normalized_shape),) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if len(shape) > input.ndim or tuple(input.shape[input.ndim - len(shape):]) != shape:
        raise RuntimeError(f"layer_norm: normalized_shape {list(shape)} must match the last dimensions of "
                           f"the input, got input of shape {tuple(input.shape)}")
    return shape, tuple(range(input.ndim - len(shape), input.ndim))


# %% nbgrader={"grade": false, "grade_id": "layer-norm", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise the last dims to mean 0 and variance 1, then scale by weight and shift by bias."""
    shape, axes = _normalized_axes(input, normalized_shape)
    batch_axes = tuple(range(input.ndim - len(shape)))
    xp = get_xp(input._device)
    x = _float_array(input)
    ### BEGIN SOLUTION
    centered = x - x.mean(axis=axes, keepdims=True)
    rstd = 1.0 / xp.sqrt((centered * centered).mean(axis=axes, keepdims=True) + eps)  # 1/σ, one per row
    xhat = centered * rstd
    del centered  # only x̂ and 1/σ stay alive for the backward pass
    out = xhat if weight is None else xhat * weight.data
    if bias is not None:
        out = out + bias.data

    def layer_norm_backward(g):
        h = g if weight is None else g * weight.data  # dL/dx̂
        grad_input = None
        if input.requires_grad:
            grad_input = rstd * (h - h.mean(axis=axes, keepdims=True)
                                 - xhat * (h * xhat).mean(axis=axes, keepdims=True))
        grad_weight = (g * xhat).sum(axis=batch_axes) if weight is not None and weight.requires_grad else None
        grad_bias = g.sum(axis=batch_axes) if bias is not None and bias.requires_grad else None
        return grad_input, grad_weight, grad_bias
    ### END SOLUTION
    return _wrap(out, input._device, (input, weight, bias), layer_norm_backward)


# %%
#| export
class LayerNorm(Module):
    """Normalise over the last dims `normalized_shape`, then apply a learned scale and shift."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = ones_(_empty_parameter(self.normalized_shape, dtype, device))
            if bias:
                self.bias = zeros_(_empty_parameter(self.normalized_shape, dtype, device))

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


# %% nbgrader={"grade": true, "grade_id": "test-layer-norm", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_layer_norm():
    x = Tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 6.0]], requires_grad=True)
    w = Parameter([1.0, 2.0, 1.0, 1.0])
    b = Parameter([0.0, 0.0, 0.0, 1.0])
    y = layer_norm(x, 4)
    assert y.shape == (2, 4), f"layer_norm keeps the shape, got {y.shape}"
    assert np.allclose(y.data.mean(axis=1), 0, atol=1e-6), f"each row has mean 0 after normalising: {y.data.mean(axis=1)}"
    assert np.allclose(y.data.var(axis=1), 1, atol=1e-4), f"each row has (biased) variance 1: {y.data.var(axis=1)}"
    assert np.allclose(y.data[1], [-1 / np.sqrt(3)] * 3 + [np.sqrt(3)], atol=1e-4), \
        f"[2, 2, 2, 6]: mean 3, σ √3 -> [-1/√3, -1/√3, -1/√3, √3], got {y.data[1]}"
    out = layer_norm(x, (4,), w, b)
    assert out._parents is not None and len(out._parents) == 3 and out._parents[0] is x, \
        "layer_norm must be ONE op whose parents are (input, weight, bias), not a chain of primitives"
    gx, gw, gb = out._backward(np.ones((2, 4), dtype=np.float32))
    assert np.allclose(gb, [2, 2, 2, 2]), f"dL/dbias sums g over the rows: [2, 2, 2, 2], got {gb}"
    assert np.allclose(gw, y.data.sum(axis=0), atol=1e-5), f"dL/dweight = Σ g·x̂ over rows, got {gw}"
    assert np.allclose(gx.sum(axis=1), 0, atol=1e-5), "dL/dx sums to 0 over each row (shift invariance)"
    assert gradcheck(lambda a, c, d: layer_norm(a, 4, c, d), (x, w, b)), "layer_norm's gradients"
    x3 = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
    assert gradcheck(lambda a: layer_norm(a, (3, 4)), (x3,)), "gradients over two normalized dims"
    ### BEGIN HIDDEN TESTS
    w2 = Parameter(np.random.default_rng(1).standard_normal((3, 4)))
    assert gradcheck(lambda a, c: layer_norm(a, (3, 4), c), (x3, w2)), "weight without bias"
    ### END HIDDEN TESTS


test_layer_norm()
print("layer_norm: ok")

# %% [markdown]
# ## 9. `Dropout`: noise that regularises
#
# *Why.* During training, dropout zeroes each activation with probability p,
# so the network cannot rely on any single unit; at evaluation it does nothing.
# To keep the expected value of every activation the same in both modes, the
# kept ones are scaled by 1/(1 - p) during training (**inverted dropout**):
# E[mask · x] = (1 - p) · x/(1 - p) = x. Evaluation then needs no rescaling.
#
# The mask is the op's whole derivative: y = m ⊙ x, so dL/dx = m ⊙ g, with
# mᵢ = 1/(1 - p) for kept entries and 0 for dropped ones. Edge cases: p = 0 is
# the identity, p = 1 drops everything (the scale would be 1/0: use 0).
#
# The mask is drawn from `default_generator()` on the CPU, as the initialisers
# are: `tinytorch.manual_seed(s)` makes a run reproducible on any device.
#
# ### Exercise: `dropout(input, p=0.5, training=True)`
# The checks and the eval shortcut are given. Draw uniform numbers with
# `default_generator().random(input.shape, dtype=np.float32)`; keep the
# entries whose number is `>= p`; build the mask (in `input`'s dtype, on its
# device: `to_device(mask, input._device)`), and return the op with its backward.

# %%
#| export nn.functional
def dropout_mask(shape, p, dtype, device):
    """Dropout's multiplier: 0 with probability p, else 1/(1-p), in `dtype` on `device`.

    Drawn from `default_generator()` on the CPU, so `manual_seed` makes it reproducible
    on any device. The one mask of tinytorch: `dropout` and attention's dropout use it.
    """
    keep = default_generator().random(shape, dtype=np.float32) >= p
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return to_device(keep.astype(dtype) * scale, device)


# %% nbgrader={"grade": false, "grade_id": "dropout", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the others by 1/(1-p); identity when not training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    ### BEGIN SOLUTION
    mask = dropout_mask(input.shape, p, input.dtype, input._device)

    def dropout_backward(g):
        return (g * mask,)
    return _wrap(input.data * mask, input._device, (input,), dropout_backward)
    ### END SOLUTION


# %%
#| export
class Dropout(Module):
    """Inverted dropout with probability p in training mode; the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace  # accepted for PyTorch compatibility; we never overwrite the input

    def forward(self, input):
        return dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


# %% nbgrader={"grade": true, "grade_id": "test-dropout", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_dropout():
    from tinytorch.core.backend import manual_seed
    x = Tensor(np.ones((200, 500), dtype=np.float32), requires_grad=True)
    manual_seed(0)
    y = dropout(x, 0.2)
    kept = (y.data != 0).mean()
    assert abs(kept - 0.8) < 0.01, f"p=0.2 keeps about 80% of the entries, kept {kept:.3f}"
    assert np.allclose(y.data[y.data != 0], 1.25), "kept entries are scaled by 1/(1-p) = 1.25"
    assert abs(y.data.mean() - 1.0) < 0.01, f"the expected value is unchanged: mean {y.data.mean():.3f}, want ~1"
    assert y.dtype == np.float32, f"float32 in, float32 out; got {y.dtype}"
    (g,) = y._backward(np.full((200, 500), 2.0, dtype=np.float32))
    assert np.allclose(g, 2 * y.data), "the backward multiplies by the same mask"
    manual_seed(0)
    assert np.array_equal(dropout(x, 0.2).data, y.data), "manual_seed(0) must reproduce the same mask"
    assert dropout(x, 0.2, training=False) is x, "not training: return the input itself"
    assert dropout(x, 0.0) is x, "p=0: the identity"
    z = dropout(x, 1.0)
    assert np.isfinite(z.data).all() and (z.data == 0).all(), "p=1 drops everything (and makes no inf/nan)"
    layer = Dropout(0.5)
    assert layer.eval()(x) is x and layer.train()(x) is not x, "Dropout follows train() / eval()"
    ### BEGIN HIDDEN TESTS
    try:
        dropout(x, 1.5)
    except ValueError:
        pass
    else:
        raise AssertionError("p outside [0, 1] must raise ValueError")
    ### END HIDDEN TESTS


test_dropout()
print("dropout: ok")

# %% [markdown]
# ## 10. Containers: `Sequential`, `ModuleList`, `ModuleDict`
#
# A plain Python list of layers would hide them from `__setattr__`: their
# parameters would not be found, saved or moved. The containers register each
# entry under its position (`"0"`, `"1"`, ...) or key, which is where names
# like `layers.1.bias` come from.
#
# - `Sequential(*modules)` (or `Sequential(OrderedDict(name=module, ...))`)
#   feeds each module's output to the next;
# - `ModuleList` is a registered list for models that loop in their own
#   `forward` (a transformer's blocks);
# - `ModuleDict` is a registered dict.

# %%
#| export
def _position(index, length, kind):
    """A valid non-negative position for index (negative counts from the end)."""
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for a {kind} of length {length}")
    return index % length


class Sequential(Module):
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

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list whose modules are registered (named "0", "1", ...)."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[str(_position(index, len(self), "ModuleList"))]

    def __setitem__(self, index, module):
        setattr(self, str(_position(index, len(self), "ModuleList")), module)

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

    def update(self, modules):
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict is a container, not a layer: pick its modules in your forward()")


# %%
mlp = Sequential(Linear(2, 3), ReLU())
print(mlp)
print([name for name, _ in mlp.named_parameters()])

# %% [markdown]
# ## 11. Saving and loading: `tinytorch.save` / `tinytorch.load`
#
# A checkpoint is a state dict on disk. We write it in the **safetensors**
# format: a JSON header (names, dtypes, shapes, offsets) followed by the raw
# bytes. Unlike Python's pickle (what `torch.save` used by default for years),
# loading it cannot run code, and it is the format Hugging Face distributes
# GPT-2's weights in (module 09 reads them).
#
# Two details make it robust:
#
# - **atomic write**: we write to a temporary file in the same directory and
#   `os.replace` it over the target. A crash mid-write leaves the old
#   checkpoint intact, never half of a new one (a rename within one file
#   system is atomic).
# - **clear failures**: a missing, truncated or corrupt file is reported with
#   its path, and a value that is not a tensor is reported by its key.
#
# safetensors stores the tensors by name without an order; we record the
# state dict's order in the file's metadata, so `load` returns the keys in the
# order `state_dict()` gave them. CUDA tensors are copied to the host to be
# written; `load(path, device=...)` puts them where you want them.

# %%
#| export core.serialization
"""`tinytorch.save` / `tinytorch.load`: state dicts as safetensors files (no pickle), written atomically."""
import json
import os
import tempfile
from collections import OrderedDict

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from tinytorch.core.backend import device as _as_device, to_device, to_numpy
from tinytorch.core.tensor import Tensor, _wrap

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


def atomic_write(path, data):
    """Write `data` (bytes, or a function that writes to a path it is given) to `path` atomically.

    The one durable write of tinytorch: a temporary file in the same folder, fsync'd,
    renamed over `path`, then the folder fsync'd. A crash at any point leaves either the
    old file or the new one, never half of one.
    """
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
        os.replace(tmp, path)  # readers see the old file or the new one
    except BaseException:
        if handle is not None:
            os.close(handle)
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def save(state_dict, path):
    """Write a dict name -> Tensor to `path` as safetensors, atomically."""
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"save: keys must be strings, got {name!r}")
        if not isinstance(value, Tensor):
            raise TypeError(f"save: the value of {name!r} is a {type(value).__name__}, not a Tensor; "
                            f"safetensors files hold tensors only")
        arrays[name] = np.ascontiguousarray(to_numpy(value.data))  # cuda: copied to the host
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata={_ORDER_KEY: json.dumps(list(arrays))}))


def load(path, device="cpu"):
    """Read a safetensors file into an OrderedDict name -> Tensor on `device`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load: no checkpoint file at {path!r}")
    try:
        arrays = load_file(path)
        with safe_open(path, framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error types for bad headers and sizes
        raise RuntimeError(f"load: cannot read {path!r} as a safetensors checkpoint; the file is truncated "
                           f"or corrupt ({type(err).__name__}: {err})") from None
    order = [name for name in json.loads(metadata.get(_ORDER_KEY, "[]")) if name in arrays]
    order += sorted(name for name in arrays if name not in set(order))
    dev = _as_device(device)
    return OrderedDict((name, _wrap(to_device(arrays[name], dev), dev)) for name in order)


# %%
import os
import tempfile

with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "mlp.safetensors")
    save(mlp.state_dict(), path)
    restored = Sequential(Linear(2, 3), ReLU())
    restored.load_state_dict(load(path))
    same = all(np.array_equal(a.data, b.data) for a, b in zip(mlp.parameters(), restored.parameters()))
    print(f"{os.path.getsize(path)} bytes on disk; weights restored exactly: {same}")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 10)
    try:
        load(path)
    except RuntimeError as err:
        print("truncated file ->", str(err)[:90], "...")

# %% [markdown]
# ## 12. Putting it together: an MLP learns XOR
#
# XOR is the classic problem a single linear layer cannot solve (no line
# separates {(0,0), (1,1)} from {(0,1), (1,0)}); one hidden layer can. We
# train a 2 → 8 → 1 network with a tanh hidden layer and a sigmoid output, a
# squared-error loss written with tensor ops (module 04 brings proper losses),
# and the plainest optimizer, gradient descent written by hand (module 05
# brings `SGD`): `p.data -= lr * p.grad.data`, then `zero_grad()`.

# %%
from tinytorch.core.backend import manual_seed

manual_seed(0)
xor_model = Sequential(Linear(2, 8), Tanh(), Linear(8, 1), Sigmoid())
inputs = Tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
targets = Tensor([[0.0], [1.0], [1.0], [0.0]])
for step in range(500):
    loss = ((xor_model(inputs) - targets) ** 2).mean()
    loss.backward()
    for p in xor_model.parameters():
        p.data -= 1.0 * p.grad.data
    xor_model.zero_grad()
predictions = (xor_model(inputs).data > 0.5).astype(np.float32)
print(f"loss {loss.item():.4f}, predictions {predictions.ravel()}, accuracy {(predictions == targets.data).mean():.0%}")

# %% [markdown]
# ## 13. What it costs
#
# **Parameters.** `Linear(in, out)` holds in·out + out numbers: 4 bytes each in
# float32, and training needs as much again for the gradients (and, with Adam
# in module 05, twice more for its moments). GPT-2 small's MLP block, 768 →
# 3072 → 768, in numbers:

# %%
block = Sequential(Linear(768, 3072), GELU(), Linear(3072, 768))
n = block.num_parameters()
print(f"768->3072->768 MLP: {n:,} parameters = {n * 4 / 2**20:.1f} MiB in float32 "
      f"(+{n * 4 / 2**20:.1f} MiB of gradients)")
print(f"Linear(768, 3072) alone: 768*3072 + 3072 = {768 * 3072 + 3072:,} = {Linear(768, 3072).num_parameters():,}")

# %% [markdown]
# **Activation memory.** What an op keeps for its backward pass lives until
# the backward pass runs, for every layer of the network at once. We can
# measure it: walk the graph and add up the arrays held by the backward
# closures and by the intermediate tensors. Fused LayerNorm against the same
# function written with primitives, for a batch of 64 × 128 vectors of 768:

# %%
import time

from tinytorch.core.autograd import topological_order


def saved_bytes(out):
    """Bytes of the distinct arrays the graph of `out` keeps for the backward pass (inputs excluded)."""
    seen, total = set(), 0
    for node in topological_order(out):
        if node._parents is None:  # a leaf: the input or a parameter, alive anyway
            seen.add(id(node.data))
            continue
        arrays = [node.data] if node is not out else []
        arrays += [c.cell_contents for c in (node._backward.__closure__ or ())
                   if isinstance(c.cell_contents, np.ndarray)]
        for a in arrays:
            if id(a) not in seen:
                seen.add(id(a))
                total += a.nbytes
    return total


def layer_norm_composed(x, weight, bias, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / (var + eps).sqrt() * weight + bias


manual_seed(0)
ln = LayerNorm(768)
x = Tensor(np.random.default_rng(0).standard_normal((64, 128, 768)).astype(np.float32), requires_grad=True)
for name, fn in (("fused", lambda: ln(x)), ("composed", lambda: layer_norm_composed(x, ln.weight, ln.bias))):
    out = fn()
    start = time.perf_counter()
    for _ in range(3):
        y = fn()
        y.backward(np.ones(y.shape, dtype=np.float32))
    seconds = (time.perf_counter() - start) / 3
    print(f"{name:8s} LayerNorm: keeps {saved_bytes(out) / 2**20:6.1f} MiB for backward "
          f"(input: {x.data.nbytes / 2**20:.1f} MiB), forward+backward {seconds * 1e3:6.1f} ms")
    x.grad = None
    ln.zero_grad()

# %% [markdown]
# The fused op keeps one input-sized array (x̂) plus one number per row; the
# composed version keeps several input-sized intermediates alive. In a
# transformer with two LayerNorms per block and dozens of blocks, that
# difference is what decides whether a batch fits in memory.
#
# **Time.** A `Linear` forward and backward is three matrix products of
# N·in·out multiply-adds each; the Python overhead around them is a few
# microseconds:

# %%
lin = Linear(768, 768)
xb = Tensor(np.random.default_rng(1).standard_normal((64, 768)).astype(np.float32), requires_grad=True)
start = time.perf_counter()
for _ in range(20):
    lin(xb).sum().backward()
seconds = (time.perf_counter() - start) / 20
flops = 3 * 2 * 64 * 768 * 768
print(f"Linear(768, 768) on (64, 768): forward+backward {seconds * 1e3:.2f} ms, "
      f"{flops / seconds / 1e9:.1f} GFLOP/s")

# %% [markdown]
# **Next:** module 04 turns model outputs into losses (`cross_entropy`,
# fused and stable), and module 05 replaces the hand-written update above with
# optimizers.
