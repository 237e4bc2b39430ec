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
# dropout off for evaluation, and save it under a name that still means
# something when it is loaded back.
#
# PyTorch's answer, which we copy name for name, is `nn.Module`: an object that
# registers its `Parameter`s and sub-modules as you assign them, and can then
# walk itself. On top of it stand the layers every model in this course is
# made of: `Linear`, `Embedding`, `LayerNorm`, `Dropout`.
#
# **You will write:**
#
# 1. the initialisers `xavier_*` and `kaiming_*`, from the variance argument;
# 2. `Module`: registration in `__setattr__`, the walks `named_modules`,
#    `_named_members` (behind `named_parameters`) and `_state_tensors` (behind
#    `state_dict`), and the in-place copy of `load_state_dict`;
# 3. `linear`, one op with its three-matrix-product backward, and `Linear`;
# 4. `silu`, an activation with a backward by the product rule;
# 5. `embedding`, a gather whose backward is a scatter-add, and `Embedding`;
# 6. `layer_norm` with the backward you derive by hand, and `LayerNorm`;
# 7. `dropout_mask` and `dropout`.
#
# **Cost to keep in mind:** a layer costs memory three times: its parameters,
# their gradients (same size), and the activations it saves for the backward
# pass (proportional to the batch). We measure that at the end.

# %%
#| default_exp nn.layers

# %% [markdown]
# The companion `provided.py` holds what this lesson does not teach: `Parameter`
# (a `Tensor` subclass), `_ModuleAPI` (the part of `Module` built on what you
# write: `train`/`eval`, `to`, `zero_grad`, printing, checking a state dict), the
# argument checks of the fused ops (`_check_linear`, `_embedding_indices`,
# `_normalized_axes`, `_check_probability`), the random fills `uniform_` and
# `normal_`, `calculate_gain`, the activation modules, the containers, and
# `save`/`load`. The package keeps PyTorch's split: `Module` and `Parameter`
# in `tinytorch.nn.module`, the layers in `tinytorch.nn.layers` (which also
# re-exports the activation modules and containers), the ops in
# `tinytorch.nn.functional`, the initialisers in `tinytorch.nn.init`. The first
# cell below is what `nn.layers` imports; the second brings the provided names
# into this notebook (the cells you write redefine `Module`, `linear`, ... here,
# so the notebook always runs your code).

# %%
#| export
import math

import numpy as np

from tinytorch.nn.functional import _check_probability, dropout, embedding, layer_norm, linear, rms_norm
from tinytorch.nn.init import kaiming_uniform_, normal_, ones_, uniform_, zeros_
from tinytorch.nn.module import Module, _empty_parameter
# re-exported (`X as X`), so `from tinytorch.nn.layers import Sequential` keeps working:
from tinytorch.nn.activation import GELU as GELU, Flatten as Flatten, Identity as Identity, ReLU as ReLU
from tinytorch.nn.activation import Sigmoid as Sigmoid, SiLU as SiLU, Softmax as Softmax, Tanh as Tanh
from tinytorch.nn.container import ModuleDict as ModuleDict, ModuleList as ModuleList, Sequential as Sequential
from tinytorch.nn.module import Parameter as Parameter

# %%
from collections import OrderedDict

from tinytorch.core.autograd import gradcheck
from tinytorch.core.backend import (
    device, generator_for, get_xp, manual_seed, scatter_add, to_device,
)
from tinytorch.core.tensor import Tensor, _autocast_op, _bfloat16_in_float32, _expect, from_op
from tinytorch.nn.functional import (
    _as_rows, _check_linear, _embedding_indices, _float_array, _in_float32_if_half, _normalized_axes, _row_mean,
)
from tinytorch.nn.init import _check_fan_mode, calculate_gain
from tinytorch.nn.module import _IncompatibleKeys, _ModuleAPI

# %% [markdown]
# ## 1. A layer's numbers: `Parameter`, and where they start
#
# Inside a model there are many tensors: weights, but also constants, masks,
# running statistics, intermediate results. Only some should be trained.
# PyTorch marks those by their **type**: a `Parameter` (provided) is a
# `Tensor` that requires grad by default and otherwise behaves like any tensor
# (`Parameter([[1.0, 2.0]]) * 2` is a plain tensor). Section 2 makes `Module`
# find them by that type. First, the numbers they start with:
# `tinytorch.nn.init`.
#
# *Why random, and how large.* Start every weight at 0 and every hidden unit
# computes the same thing, gets the same gradient, and stays the same forever:
# the symmetry must be broken with random numbers. Their **scale** matters as much. A layer
# y = W x with n = fan_in inputs of variance 1 and independent weights of
# variance s² gives outputs of variance
#
# Var(yᵢ) = Σⱼ Var(Wᵢⱼ xⱼ) = n s².
#
# Stack 12 such layers with s = 1 and the variance grows like n¹²; with s too
# small it vanishes. Choosing s² = 1/n keeps it steady. The backward pass
# multiplies by Wᵀ, which sums over the fan_out outputs instead, so it wants
# s² = 1/fan_out.
#
# | scheme | std of the weights | keeps steady |
# | --- | --- | --- |
# | Xavier/Glorot (tanh, sigmoid) | gain · √(2 / (fan_in + fan_out)) | both, as a compromise |
# | Kaiming/He (ReLU family) | gain / √fan, fan = fan_in or fan_out | the forward or the backward signal |
#
# `gain` compensates the activation: ReLU zeroes half the signal, so its gain
# is √2; for leaky ReLU with slope a it is √(2 / (1 + a²)) (`calculate_gain`,
# provided). A uniform U(-b, b) has variance b²/3, so a uniform initialiser
# with a given std uses the bound b = √3 · std; a normal one uses the std.
#
# *Fans.* For a weight of shape (out, in, k₁, k₂, ...) PyTorch defines
# fan_in = in · k₁k₂… and fan_out = out · k₁k₂… (the k's are a convolution's
# receptive field; for a `Linear` weight there are none and their product is 1).
# Worked example: a (8, 4, 3, 3) convolution weight has fan_in = 4·9 = 36 and
# fan_out = 8·9 = 72; a (30, 20) `Linear` weight has (20, 30).
#
# *PyTorch's `Linear` default* is `kaiming_uniform_(w, a=√5)`: gain √(2/6) =
# 1/√3, so b = √3 · (1/√3) / √fan_in = 1/√fan_in, i.e. U(-1/√in, 1/√in).
# An odd way to write a simple rule, kept so our weights match PyTorch's in
# distribution.
#
# *Cost.* One random number per weight, once; nothing per step.
#
# ### Exercise: fans, `xavier_uniform_`, `xavier_normal_`, `kaiming_uniform_`, `kaiming_normal_`
#
# Each initialiser fills `tensor` in place through `uniform_(tensor, a, b)` or
# `normal_(tensor, mean, std)` (provided) and returns what they return.
# Hint 1: compute the std from the table, then the bound for a uniform.
# Hint 2: b = √3 · std; Kaiming's std is `calculate_gain(nonlinearity, a)`
# over √fan, and the mode picks which fan. Hint 3: fans: the product of
# `tensor.shape[2:]` (`math.prod`), times `shape[1]` and times `shape[0]`;
# each initialiser: fans, std or bound, one call to the fill. An empty
# weight (a dim of size 0, even a 1-D one) is returned as it is by the
# Kaiming ones, before any fan is computed (PyTorch does the same).

# %% nbgrader={"grade": false, "grade_id": "init", "locked": false, "schema_version": 3, "solution": true}
#| export nn.init
def _calculate_fan_in_and_fan_out(tensor):
    """(fan_in, fan_out) of a weight of shape (out, in, *kernel), as PyTorch computes them."""
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor of at least 2 dimensions, "
                         f"got shape {tuple(tensor.shape)}")
    ### BEGIN SOLUTION
    receptive = math.prod(tensor.shape[2:])  # 1 for a Linear weight
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive
    ### END SOLUTION


def xavier_uniform_(tensor, gain=1.0):
    """U(-b, b) with b = gain · √(6 / (fan_in + fan_out))."""
    ### BEGIN SOLUTION
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound)
    ### END SOLUTION


def xavier_normal_(tensor, gain=1.0):
    """N(0, std²) with std = gain · √(2 / (fan_in + fan_out))."""
    ### BEGIN SOLUTION
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))
    ### END SOLUTION


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b) with b = √3 · gain / √fan (He et al., 2015)."""
    _check_fan_mode(mode)
    ### BEGIN SOLUTION
    if 0 in tensor.shape:  # an empty tensor: nothing to fill
        return tensor
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound)
    ### END SOLUTION


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std²) with std = gain / √fan (He et al., 2015)."""
    _check_fan_mode(mode)
    ### BEGIN SOLUTION
    if 0 in tensor.shape:
        return tensor
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    fan = fan_in if mode == "fan_in" else fan_out
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-init", "locked": true, "points": 3, "schema_version": 3, "solution": false}
fans = _calculate_fan_in_and_fan_out(Parameter(np.zeros((8, 4, 3, 3))))
assert fans == (36, 72), f"(8, 4, 3, 3): fan_in = 4*3*3 = 36, fan_out = 8*3*3 = 72; got {fans}"
fans = _calculate_fan_in_and_fan_out(Parameter(np.zeros((8, 4, 5))))
assert fans == (20, 40), f"(8, 4, 5): the receptive field is every dim after the first two: (4*5, 8*5); got {fans}"
assert _calculate_fan_in_and_fan_out(Parameter(np.zeros((30, 20)))) == (20, 30), "a Linear weight (out, in) has fans (in, out)"
manual_seed(0)
w = Parameter(np.zeros((256, 512), dtype=np.float32))
cases = [("xavier_uniform_(gain=3)", lambda: xavier_uniform_(w, gain=3.0), 3 * math.sqrt(6 / 768)),
         ("kaiming_uniform_(a=√5)", lambda: kaiming_uniform_(w, a=math.sqrt(5)), 1 / math.sqrt(512)),
         ("kaiming_uniform_(relu, fan_out)", lambda: kaiming_uniform_(w, mode="fan_out", nonlinearity="relu"),
          math.sqrt(6 / 256))]
for name, fill, bound in cases:
    out = fill()
    assert out is w, f"{name} returns the tensor it filled"
    top = float(np.abs(w.data).max())
    assert 0.98 * bound < top <= bound, f"{name}: values fill U(-{bound:.4f}, {bound:.4f}), max |w| is {top:.4f}"
    assert abs(w.data.std() - bound / math.sqrt(3)) < 0.02 * bound, f"{name}: std should be bound/√3"
for name, fill, std in [("xavier_normal_", lambda: xavier_normal_(w, gain=2.0), 2 * math.sqrt(2 / 768)),
                        ("kaiming_normal_(relu)", lambda: kaiming_normal_(w, nonlinearity="relu"),
                         math.sqrt(2 / 512)),
                        ("kaiming_normal_(relu, fan_out)",  # fan_out = 256 rows: std √(2/256), not √(2/512)
                         lambda: kaiming_normal_(w, mode="fan_out", nonlinearity="relu"), math.sqrt(2 / 256)),
                        ("kaiming_normal_(a=√5), gain √(2/6)", lambda: kaiming_normal_(w, a=math.sqrt(5)), math.sqrt(1 / 3 / 512))]:
    assert fill() is w and abs(w.data.std() - std) < 0.02 * std, \
        f"{name}: std should be {std:.4f}, got {w.data.std():.4f}"
    assert abs(w.data.mean()) < 0.05 * std, f"{name}: mean 0"
### BEGIN HIDDEN TESTS
empty = Parameter(np.zeros((0, 3), dtype=np.float32))
assert kaiming_uniform_(empty) is empty and kaiming_normal_(empty) is empty, "an empty weight is returned as is"
### END HIDDEN TESTS

# %% [markdown]
# ## 2. `Module`: registration by assignment, and walking the tree
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
# and get `model.parameters()` for free, without listing anything twice.
#
# *Registration.* Python calls `obj.__setattr__(name, value)` for every
# `obj.name = value`. `Module.__setattr__` looks at the value's type and files
# it in one of three ordered dicts, then stores the attribute as usual (PyTorch
# keeps it only in the dicts and finds it with `__getattr__`; a plain
# attribute as well keeps `self.weight` at full speed):
#
# | value | registry | in `parameters()` | in `state_dict()` |
# | --- | --- | --- | --- |
# | `Parameter` | `_parameters` | yes | yes |
# | `Module` | `_modules` | its own, recursively | its own, recursively |
# | `Tensor` given to `register_buffer(name, t)` | `_buffers` | no | yes, unless `persistent=False` |
# | anything else | none | no | no |
#
# A name lives in one registry at a time: assigning it removes it from the
# registries its new value does not belong to (so `self.bias = None`
# un-registers the bias, and `self.x = Parameter(...)` after
# `self.x = Linear(...)` moves it), while re-assigning a name in the same
# registry keeps its place in the order, as in PyTorch. A buffer is
# registered once, by `register_buffer`; after that, assigning a `Tensor` (or
# `None`) to its name replaces the buffer's value, which is how running
# statistics are updated. Anything else assigned to a buffer's name is a bug.
#
# *Walking.* Every other feature is a loop over the tree of modules.
# `named_modules()` walks it depth-first, parents before children, and names
# each module by its path: the root is `""`, its child `hidden` is `"hidden"`,
# a grandchild is `"layers.1"`. A module reachable twice (a layer shared by two
# parents) is reported once: a `memo` set of the `id`s already seen, passed
# down the recursion. On this tree:
#
# ```
# model ─┬─ first: Pair (weight)
#        └─ inner ─── second: Pair (weight)
# ```
#
# `named_modules` yields `""`, `"first"`, `"inner"`, `"inner.second"`, and
# `named_parameters` yields `"first.weight"`, `"inner.second.weight"`: each
# module's own registry entries, prefixed with the module's path (the tests'
# `Tree` adds a parameter `bias` at the root, which comes first). A
# `Parameter` shared by two modules (tied weights) is yielded once, so the
# optimizer does not update it twice.
#
# *The state dict* is the model's contents by name: each module's parameters,
# then its persistent buffers, module by module. Unlike `named_parameters` it
# keeps every name of a shared tensor (PyTorch does the same: a checkpoint must
# load into a model however its weights are tied), so it walks with
# `remove_duplicate=False`.
#
# *Loading* is the walk backwards: `load_state_dict(sd)` copies each tensor of
# `sd` **into** the array of the model's tensor of the same name,
# `target.data[...] = value`. It must not replace the `Parameter` objects: an
# optimizer built earlier holds them, and would go on updating orphans. What
# can go wrong (names the model has and the checkpoint lacks, names only the
# checkpoint has, such as a `module.` prefix left by a wrapper, and shapes that
# differ) is checked first by the provided `_check_state_dict`, which reports
# every problem in one error, since a user fixing a checkpoint wants to see
# them all at once.
#
# *Cost.* Registration is a few dict operations per assignment, done once when
# the model is built. A walk visits every module; it is run once per optimizer
# construction or checkpoint, never per element: negligible next to one
# matrix product. Loading copies each number once.
#
# ### Exercise: `Module.__init__`, `__setattr__`, `named_modules`, `_named_members`, `_state_tensors`, `load_state_dict`
#
# **`__init__`**: the registries, before anything is assigned. Hint 1: one
# dict per registry, plus the mode flag. Hint 2: `training` (True);
# `_parameters`, `_buffers`, `_modules` as `OrderedDict`s (their order is the
# order of registration, and of every walk); `_non_persistent`, a set of
# buffer names. Hint 3: five `object.__setattr__(self, name, value)` calls,
# which store a plain attribute without going through your `__setattr__`.
#
# **`__setattr__`** (the provided first lines handle the time before
# `__init__`; the provided last line stores the attribute).
# Hint 1: file the value by its type, and take the name out of every registry
# it no longer belongs to. Hint 2: `Parameter` → `_parameters`, `Module` →
# `_modules`; anything else leaves both, and if the name is a buffer's it
# must be a `Tensor` or `None` (else `TypeError`) and becomes the buffer's
# value. Hint 3: an `if / elif / else` on `isinstance`; each branch pops the
# name (`pop(name, None)`) from the dicts the value does not go in (for the
# `else` branch: `_parameters` and `_modules`), then stores it (assigning to
# an existing key of an OrderedDict keeps its place).
#
# **`named_modules(memo, prefix, remove_duplicate)`**, a generator.
# Hint 1: yield yourself, then recurse into each child with a longer prefix.
# Hint 2: the child's prefix is `prefix + "." + name`, or just `name` at the
# root. Hint 3: make `memo` a set if it is `None`; if de-duplicating, return
# when `id(self)` is in it, else add it; yield `(prefix, self)`; loop over
# `self._modules.items()`, skip `None`, `yield from` the child's walk.
#
# **`_named_members(registry, prefix, recurse)`**: `(dotted name, tensor)` for
# the entries of `registry` (`"_parameters"` or `"_buffers"`) of every module.
# Hint 1: walk the modules, and inside each one its registry. Hint 2: with
# `recurse=False` the walk is just `[(prefix, self)]`; skip `None` entries and
# tensors whose `id` you have already yielded. Hint 3: `getattr(module,
# registry)` is the dict; the name is the module's path, a dot, the entry's
# name (no dot at the root).
#
# **`_state_tensors()`**: an `OrderedDict` from dotted name to the *live*
# `Parameter` or buffer. Hint 1: like `_named_members`, but without
# de-duplication. Hint 2: per module, parameters first, then buffers whose name
# is not in `module._non_persistent`, all skipping `None`. Hint 3: one loop
# over `named_modules(remove_duplicate=False)`, two inner loops.
#
# **`load_state_dict(state_dict, strict)`**: after the provided check, copy.
# Hint 1: for each of your own live tensors whose name the checkpoint has,
# overwrite its numbers, not the object. Hint 2: the source may be a `Tensor`
# (take `.data`) or an array-like (`np.asarray`); it must land on the
# target's device (`to_device(array, target._device)`). Hint 3: loop over
# `own.items()`, skip names not in `state_dict`, assign into `target.data[...]`.

# %% nbgrader={"grade": false, "grade_id": "module", "locked": false, "schema_version": 3, "solution": true}
#| export nn.module
class Module(_ModuleAPI):
    """Base class of every layer and model: owns Parameters, buffers and sub-modules by name."""

    def __init__(self):
        ### BEGIN SOLUTION
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())  # buffer names state_dict leaves out
        object.__setattr__(self, "_modules", OrderedDict())
        ### END SOLUTION

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward(); define forward(self, ...) in it")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __setattr__(self, name, value):
        """`self.name = value`: Parameters and Modules are registered; buffers are updated."""
        if "_parameters" not in self.__dict__:  # before Module.__init__ made the registries
            return self._early_setattr(name, value)
        self._check_kind_kept(name, value)  # provided: a registered name keeps its kind (or becomes None)
        ### BEGIN SOLUTION
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._buffers.pop(name, None)
            self._parameters[name] = value  # an existing key keeps its place
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        else:
            self._parameters.pop(name, None)  # e.g. self.bias = None
            self._modules.pop(name, None)
            if name in self._buffers:
                if value is not None and not isinstance(value, Tensor):
                    raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} "
                                    f"(a Tensor or None expected)")
                self._buffers[name] = value
        ### END SOLUTION
        object.__setattr__(self, name, value)

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

    def _named_members(self, registry, prefix="", recurse=True):
        """(dotted name, tensor) from one registry ("_parameters" or "_buffers") of every module; each tensor once."""
        ### BEGIN SOLUTION
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{module_prefix}.{name}" if module_prefix else name), value
        ### END SOLUTION

    def _state_tensors(self):
        """name -> live Parameter or persistent buffer: each module's own, then its children's."""
        ### BEGIN SOLUTION
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
        ### END SOLUTION

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
        missing, unexpected = self._check_state_dict(own, state_dict, strict)  # raises on any problem
        ### BEGIN SOLUTION
        for name, target in own.items():
            if name in state_dict:
                source = state_dict[name]
                array = source.data if isinstance(source, Tensor) else np.asarray(source)
                target.data[...] = to_device(array, target._device)  # the Parameter stays the same object
        ### END SOLUTION
        return _IncompatibleKeys(missing, unexpected)


# %% [markdown]
# The tests build this small tree (and reuse it in the next two cells):

# %%
class Pair(Module):
    def __init__(self):
        super().__init__()
        self.weight = Parameter([[1.0, 2.0]])
        self.scale = 2.0  # a plain attribute: not registered
        self.register_buffer("steps", Tensor([0.0]))


class Tree(Module):
    def __init__(self):
        super().__init__()
        self.first = Pair()
        self.inner = Module()
        self.inner.second = Pair()
        self.bias = Parameter([0.5])


# %% nbgrader={"grade": true, "grade_id": "test-module-registration", "locked": true, "points": 3, "schema_version": 3, "solution": false}
pair = Pair()
assert pair.training is True, f"a new Module starts in training mode (training = True), got {pair.training}"
assert list(pair._parameters) == ["weight"], f"a Parameter goes in _parameters, got {list(pair._parameters)}"
assert "scale" not in pair._parameters and pair.scale == 2.0, "a plain attribute stays plain (and readable)"
tree = Tree()
assert list(tree._modules) == ["first", "inner"], f"Modules go in _modules in order, got {list(tree._modules)}"
assert list(tree._parameters) == ["bias"], f"the tree's own parameter is 'bias', got {list(tree._parameters)}"
pair.steps = Tensor([5.0])
assert pair._buffers["steps"].item() == 5.0, "assigning a Tensor to a buffer's name updates the buffer"
try: pair.steps = None  # as in PyTorch: the name stays a buffer, holding None
except TypeError as err: raise AssertionError(f"a buffer may be set to None (as in PyTorch); it raised: {err}") from None
assert "steps" in pair._buffers and pair._buffers["steps"] is None, \
    f"pair.steps = None keeps 'steps' a buffer that holds None; _buffers is now {dict(pair._buffers)}"
swapped = Pair()
swapped.steps = Parameter([5.0])
assert "steps" not in swapped._buffers and swapped.state_dict()["steps"].tolist() == [5.0], \
    f"a Parameter assigned to buffer 'steps' replaces it (it leaves _buffers); _buffers still has {list(swapped._buffers)}"
tree.bias = None
assert "bias" not in tree._parameters, "self.bias = None must take 'bias' out of _parameters"
tree.first = Pair()
assert list(tree._modules) == ["first", "inner"], "re-assigning a module keeps its place in _modules"
tree.first = Parameter([1.0])
assert "first" not in tree._modules and "first" in tree._parameters, \
    "re-assigning a name moves it: 'first' was a Module, now it is a Parameter"
### BEGIN HIDDEN TESTS
try:
    pair.steps = 3
except TypeError:
    pass
else:
    raise AssertionError("assigning a non-tensor to a buffer's name must raise TypeError")
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test-module-walks", "locked": true, "points": 3, "schema_version": 3, "solution": false}
tree = Tree()
names = [name for name, _ in tree.named_modules()]
assert names == ["", "first", "inner", "inner.second"], \
    f"named_modules: the root '', then children depth-first with dotted names; got {names}"
params = [name for name, _ in tree.named_parameters()]
assert params == ["bias", "first.weight", "inner.second.weight"], \
    f"named_parameters: each module's own, by dotted path, in walk order; got {params}"
assert [n for n, _ in tree.named_parameters(recurse=False)] == ["bias"], "recurse=False: the root's own only"
assert [n for n, _ in tree.named_buffers()] == ["first.steps", "inner.second.steps"], \
    f"buffers are found the same way, got {[n for n, _ in tree.named_buffers()]}"
assert [n for n, _ in tree.named_parameters(prefix="model")][0] == "model.bias", "prefix starts every name"
tied = Tree()
tied.inner.second.weight = tied.first.weight  # one Parameter in two modules (tied weights)
params = [n for n, _ in tied.named_parameters()]
assert params == ["bias", "first.weight"], \
    f"a Parameter registered in two modules is yielded once, under its first name; got {params}"
shared = Pair()
tree.first, tree.inner.second = shared, shared
names = [n for n, _ in tree.named_modules()]
assert len(names) == 3, f"a module used twice is visited once: root, first, inner; got {names}"
assert len(list(tree.parameters())) == 2, "a shared module's weight counts once"
lone, bare = Pair(), Tree()
lone.register_buffer("empty", None)
lone.plain, bare.inner = Tensor([1.0]), None  # a plain Tensor attribute; a child set to None
assert [n for n, _ in lone.named_buffers()] == ["steps"], f"named_buffers: 'steps' only (a buffer holding None " \
    f"is skipped, a plain Tensor attribute is no buffer), got {[n for n, _ in lone.named_buffers()]}"
assert [n for n, _ in bare.named_modules()] == ["", "first"], f"bare.inner = None takes 'inner' out of the walk, " \
    f"got {[n for n, _ in bare.named_modules()]}"
### BEGIN HIDDEN TESTS
assert len(list(tree.named_modules(remove_duplicate=False))) == 4, "remove_duplicate=False visits it twice"
### END HIDDEN TESTS

# %% nbgrader={"grade": true, "grade_id": "test-state-dict", "locked": true, "points": 2, "schema_version": 3, "solution": false}
tree = Tree()
tree.first.register_buffer("cache", Tensor([9.0]), persistent=False)
state = tree.state_dict()
assert list(state) == ["bias", "first.weight", "first.steps", "inner.second.weight", "inner.second.steps"], \
    f"state_dict: per module, parameters then persistent buffers; got {list(state)}"
assert state["first.weight"].data is tree.first.weight.data, "state_dict shares memory with the model"
assert not state["bias"].requires_grad, "state_dict's tensors are detached"
weight = tree.inner.second.weight
result = tree.load_state_dict({k: np.full(v.shape, 7.0, dtype=np.float32) for k, v in state.items()})
assert tree.inner.second.weight is weight, "load_state_dict keeps the Parameter objects (optimizers hold them)"
assert weight.data.sum() == 14.0, f"load_state_dict copies the numbers in: weight should be [[7, 7]], got {weight.data}"
steps = tree.first.steps.item()
assert steps == 7.0, f"load_state_dict loads buffers too (they are in the state dict): first.steps 7, got {steps}"
assert tuple(result) == ([], []), f"a complete state dict: nothing missing or unexpected, got {result}"
try: result = tree.load_state_dict({"bias": Tensor([3.0]), "extra": Tensor([1.0])}, strict=False)
except KeyError as err: raise AssertionError(f"strict=False skips a key the model lacks ('extra'), got KeyError {err}") from None
assert tree.bias.item() == 3.0 and weight.data.sum() == 14.0, "strict=False loads what is there, leaves the rest"
assert result.unexpected_keys == ["extra"], f"strict=False reports 'extra' as unexpected, got {result}"
pair = Pair()
pair.register_buffer("empty", None)
assert list(pair._state_tensors()) == ["weight", "steps"], \
    f"a buffer holding None is left out (as in PyTorch): want ['weight', 'steps'], got {list(pair._state_tensors())}"
shared = Pair()
tree.first, tree.inner.second = shared, shared
assert "inner.second.weight" in tree.state_dict(), "a shared module keeps every name in the state dict"
a, b = Pair(), Pair()
b.load_state_dict(a.state_dict())
a.weight.data += 1.0  # an in-place update of a, as an optimizer step does
assert b.weight.data.tolist() == [[1.0, 2.0]], \
    f"updating a after b.load_state_dict(a.state_dict()) changed b to {b.weight.data.tolist()}: " \
    f"the two models share one array; load_state_dict must copy the numbers into b's own array"
b.load_state_dict({"weight": np.zeros((1, 2)), "steps": np.zeros(1)})  # float64 arrays
assert b.weight.dtype == np.float32 and b.weight.data.tolist() == [[0.0, 0.0]], \
    f"loading float64 arrays must keep the float32 parameter (the numbers are cast on the way in), " \
    f"got {b.weight.dtype} {b.weight.data.tolist()}"

# %% [markdown]
# What the provided half of `Module` adds on top, all through your walks:

# %%
tree = Tree()
print(tree)
print("parameters:", tree.num_parameters(), "| training:", tree.first.training, "->", tree.eval().first.training)

# %% [markdown]
# ## 3. `Linear`: y = x Wᵀ + b
#
# *The shapes.* PyTorch stores the weight as (out_features, in_features), one
# row per output unit, and computes `y = x @ W.T + b`. `x` may have any number
# of leading dimensions, (batch, in) or (batch, time, in): each of them is just
# more rows. So we flatten them: x₂ of shape (N, in), with N the product of the
# leading dimensions, compute y₂ = x₂ Wᵀ + b of shape (N, out), and reshape
# back to (..., out).
#
# *Why one op instead of `x @ W.T + b`.* Composed from primitives, the graph
# would hold a transpose, a matmul and an add; worse, a batched matmul's
# backward for W builds a (batch, in, out) array only to sum it. As one op on
# the 2-D view, the backward is two matrix products and a sum (module 01's
# matmul rule, plus the bias's broadcast undone):
#
# | gradient | formula | shape |
# | --- | --- | --- |
# | dL/dx₂ | G W | (N, out)(out, in) = (N, in) |
# | dL/dW | Gᵀ x₂ | (out, N)(N, in) = (out, in) |
# | dL/db | Σ over the N rows of G | (out,) |
#
# where G is dL/dy₂, the incoming gradient as (N, out). Each entry of W is
# used once per row, so its gradient sums over all N rows; Gᵀ x₂ does that sum.
#
# *Worked example.* x = [[1, 2]], W = [[1, 0], [0, 1], [1, 1]], b = [0, 0, 1]:
# y = [[1, 2, 4]]. With G = [[1, 1, 1]]: dL/dx = G W = [[2, 2]], dL/dW = Gᵀ x =
# [[1, 2]] in each of the 3 rows, dL/db = [1, 1, 1].
#
# *Cost.* Forward N·in·out multiply-adds; backward twice that (two products of
# the same size). Memory: the op keeps x₂ (N·in numbers, a view of the input)
# for dL/dW, and W, which the model keeps anyway.
#
# ### Exercise: `linear(input, weight, bias=None)`
# The checks and `x2`, the input as (N, in), are given. Return the op: the
# output and a `linear_backward(g)` closure that returns
# `(grad_input, grad_weight, grad_bias)` as arrays, `None` for an operand
# that is `None` or does not require grad. Hint 1: the table above, on
# arrays (`.data`). Hint 2: `grad_input` must come back in the input's shape,
# and the output in (..., out_features). Hint 3: `out` (N, out) from a
# product with the transposed weight, plus the bias; in the closure reshape
# `g` to (N, out), then three expressions; finish with
# `from_op(out, device, (input, weight, bias), linear_backward)`.

# %% nbgrader={"grade": false, "grade_id": "linear", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
@_autocast_op("linear")  # mixed precision (module 10) may pick the dtype; a plain call until then
@_bfloat16_in_float32  # (provided) bfloat16 input and weight multiply in float32 and stay bfloat16, as in PyTorch
def linear(input, weight, bias=None):
    """input @ weight.T + bias, as one op: (..., in_features) -> (..., out_features)."""
    _check_linear(input, weight, bias)
    x2 = input.data.reshape(math.prod(input.shape[:-1]), input.shape[-1])  # (N, in): every leading dim is more rows
    ### BEGIN SOLUTION
    out = x2 @ weight.data.T  # (N, out)
    if bias is not None:
        out += bias.data

    def linear_backward(g):
        g2 = g.reshape(len(x2), weight.shape[0])  # (N, out)
        grad_input = (g2 @ weight.data).reshape(input.shape) if input.requires_grad else None
        grad_weight = g2.T @ x2 if weight.requires_grad else None
        grad_bias = g2.sum(axis=0) if bias is not None and bias.requires_grad else None
        return grad_input, grad_weight, grad_bias
    out = out.reshape(input.shape[:-1] + (weight.shape[0],))
    return from_op(out, input._device, (input, weight, bias), linear_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-linear", "locked": true, "points": 3, "schema_version": 3, "solution": false}
x = Tensor([[1.0, 2.0]], requires_grad=True)
w = Parameter([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
b = Parameter([0.0, 0.0, 1.0])
y = linear(x, w, b)
assert y.shape == (1, 3), f"(1, 2) input, weight (3, 2): output (1, 3), got {y.shape}"
assert np.allclose(y.data, [[1, 2, 4]]), f"x @ W.T + b = [[1, 2, 4]], got {y.tolist()}"
assert y._backward is not None, "linear must record its backward: build the output with from_op(..., linear_backward)"
grads = y._backward(np.ones((1, 3), dtype=np.float32))
assert len(grads) == 3, "linear_backward returns (grad_input, grad_weight, grad_bias)"
gx, gw, gb = grads
assert np.shape(gx) == (1, 2) and np.allclose(gx, [[2, 2]]), f"dL/dx = G @ W = [[2, 2]], got {gx}"
assert np.shape(gw) == (3, 2) and np.allclose(gw, [[1, 2]] * 3), f"dL/dW = G.T @ x: [[1, 2]] in every row, got {gw}"
assert np.shape(gb) == (3,) and np.allclose(gb, 1), f"dL/db sums G over the rows: [1, 1, 1], got {gb}"
no_bias = linear(x, w)
assert no_bias.shape == (1, 3) and np.allclose(no_bias.data, [[1, 2, 3]]), "bias=None: no bias added"
x3 = Tensor(np.ones((4, 5, 2), dtype=np.float32), requires_grad=True)
y3 = linear(x3, w, b)
assert y3.shape == (4, 5, 3), f"leading dims are kept: (4, 5, 2) -> (4, 5, 3), got {y3.shape}"
gx, gw, gb = y3._backward(np.ones((4, 5, 3), dtype=np.float32))
assert np.shape(gx) == (4, 5, 2), f"grad_input must have the input's shape (4, 5, 2), got {np.shape(gx)}"
assert np.allclose(gw, 20) and np.allclose(gb, 20), "weight and bias grads sum over all 4*5 rows"
_, _, none_grad = linear(x, w, Tensor([0.0, 0.0, 1.0]))._backward(np.ones((1, 3), dtype=np.float32))
assert none_grad is None, "a bias that does not require grad gets None"
_, gw, _ = linear(Tensor([[1.0, 2.0]]), w, b)._backward(np.ones((1, 3), dtype=np.float32))
assert gw is not None and np.allclose(gw, [[1, 2]] * 3), \
    f"a first layer's input (data) needs no grad, its weight does: dL/dW = [[1, 2]] in every row, got {gw}"
gx, gw, _ = linear(x, Tensor(w.data), b)._backward(np.ones((1, 3), dtype=np.float32))
assert gw is None and gx is not None and np.allclose(gx, [[2, 2]]), \
    f"a frozen weight (requires_grad=False) gets None, x still gets dL/dx = [[2, 2]]: got gx {gx}, gw {gw}"
_expect(lambda: (lambda v: (v.data,) + v._backward(np.ones(3, np.float32)))(linear(Tensor([1.0, 2.0], requires_grad=True),
        w, b)), ([1, 2, 4], [2, 2], [[1, 2]] * 3, [1, 1, 1]), "a 1-D input (2,) gives a 1-D output (3,) and grad (2,)")
### BEGIN HIDDEN TESTS
rng = np.random.default_rng(0)
xs, ws, bs = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 4), (2, 4), (2,)))
assert gradcheck(linear, (xs, ws, bs)), "linear's gradients"
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise: the `Linear` layer
#
# The layer owns its weight (out_features, in_features) and, unless
# `bias=False`, a bias (out_features,), made with `_empty_parameter(shape,
# dtype, device)` (provided: an uninitialised float `Parameter`), then filled
# by `reset_parameters` with PyTorch's default. Hint 1: assigning the
# parameters to `self` registers them (your `__setattr__`). Hint 2: the weight
# takes `kaiming_uniform_` with a = √5; the bias U(-1/√in, 1/√in) (0 when
# in_features is 0). Hint 3: in `__init__`, the bias is `None` when there is
# none, and the last step calls `reset_parameters`.

# %% nbgrader={"grade": false, "grade_id": "linear-layer", "locked": false, "schema_version": 3, "solution": true}
#| export
class Linear(Module):
    """y = x Wᵀ + b, with W of shape (out_features, in_features) and PyTorch's default init."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        ### BEGIN SOLUTION
        self.weight = _empty_parameter((out_features, in_features), dtype, device)
        self.bias = _empty_parameter((out_features,), dtype, device) if bias else None
        self.reset_parameters()
        ### END SOLUTION

    def reset_parameters(self):
        ### BEGIN SOLUTION
        kaiming_uniform_(self.weight, a=math.sqrt(5))  # = U(-1/√in, 1/√in)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            uniform_(self.bias, -bound, bound)
        ### END SOLUTION

    def forward(self, input):
        return linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# %% nbgrader={"grade": true, "grade_id": "test-linear-layer", "locked": true, "points": 2, "schema_version": 3, "solution": false}
manual_seed(0)
layer = Linear(64, 3)
assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"], "Linear registers weight, then bias"
assert layer.weight.shape == (3, 64) and layer.bias.shape == (3,), \
    f"weight (out, in) = (3, 64), bias (3,); got {layer.weight.shape}, {layer.bias.shape}"
for name, p in layer.named_parameters():
    top = float(np.abs(p.data).max())
    assert 0 < top <= 1 / 8, f"{name} must lie in U(-1/√64, 1/√64) = U(-0.125, 0.125), max |{name}| = {top}"
top = float(np.abs(layer.weight.data).max())  # 192 draws from U(-0.125, 0.125)
assert top > 0.1, f"weight fills U(-0.125, 0.125) (kaiming_uniform_ with a = √5), yet max |weight| is {top:.3f}"
assert Linear(2, 3, bias=False).bias is None, "bias=False: no bias parameter"
_expect(lambda: Linear(0, 3).bias, [0, 0, 0], "Linear(0, 3) has no inputs, so there is no 1/√in: its bias is 0")
y = layer(Tensor(np.ones((5, 64), dtype=np.float32)))
assert y.shape == (5, 3), f"Linear(64, 3) maps (5, 64) to (5, 3), got {y.shape}"
top = float(np.abs(Linear(4, 1000).bias.data).max())  # 1000 draws
assert 0.45 < top <= 0.5, f"Linear(4, 1000)'s bias fills U(-1/√4, 1/√4) = U(-0.5, 0.5), yet max |bias| is {top:.3f}"
wide = Linear(2, 3, dtype="float64")
assert (wide.weight.dtype, wide.bias.dtype) == (np.float64, np.float64), \
    f"dtype= reaches weight and bias, got {wide.weight.dtype} and {wide.bias.dtype}"

# %% [markdown]
# ## 4. Activations, and one op by the product rule
#
# Without a nonlinearity between them, two `Linear` layers collapse into one:
# W₂(W₁x) = (W₂W₁)x. Module 01 wrote the elementwise ops and their
# derivatives; `nn.functional` gives them PyTorch's names (`relu`, `gelu`,
# `tanh`, `sigmoid`, `softmax`), and `nn.activation` wraps each in a `Module`
# (`ReLU()`, `GELU()`, ...) so it can sit in a `Sequential` (both provided).
#
# One is new: **SiLU** (also called swish), silu(x) = x σ(x), which Llama-style
# models use. Composed from `x * x.sigmoid()` it would take two graph nodes; as
# one op it keeps x and σ(x) and one node, and the product rule gives its
# derivative:
#
# d/dx [x σ(x)] = σ(x) + x σ'(x) = σ(x) + x σ(x)(1 - σ(x)) = σ(x) (1 + x (1 - σ(x))).
#
# Worked example: at x = 0, σ = 1/2, so silu(0) = 0 and the slope is
# 1/2 · (1 + 0) = 1/2; at x = 2, σ ≈ 0.8808, silu ≈ 1.7616, slope ≈
# 0.8808 · (1 + 2 · 0.1192) ≈ 1.0908. For large negative x it tends to 0 from
# below (its minimum is about -0.278 near x = -1.28).
#
# *Stability.* σ(x) = 1/(1 + e⁻ˣ) overflows e⁻ˣ for x < -88 in float32 (a
# warning and an `inf`, even if the result is fine). The identity
# σ(x) = (1 + tanh(x/2)) / 2 needs no exponential that can overflow.
#
# ### Exercise: `silu(input)`
# Hint 1: compute σ once and use it in the forward and in the closure. Hint 2:
# σ from tanh, as above; the backward multiplies g by the derivative. Hint 3:
# `s` from `xp.tanh`, then `silu_backward(g)` returning a 1-tuple, then
# `from_op(x * s, ...)` with `(input,)` as inputs.

# %% nbgrader={"grade": false, "grade_id": "silu", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def silu(input):
    """x σ(x) as one op, with d/dx = σ(x) (1 + x (1 - σ(x)))."""
    xp = get_xp(input._device)
    x = _float_array(input)
    ### BEGIN SOLUTION
    s = 0.5 * xp.tanh(0.5 * x) + 0.5  # σ(x), written so it cannot overflow

    def silu_backward(g):
        return (g * s * (1 + x * (1 - s)),)
    return from_op(x * s, input._device, (input,), silu_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-silu", "locked": true, "points": 2, "schema_version": 3, "solution": false}
x = Tensor([0.0, 2.0, -100.0], requires_grad=True)
y = silu(x)
assert y.shape == (3,), f"silu keeps the shape, got {y.shape}"
assert np.allclose(y.data, [0.0, 1.7616, 0.0], atol=1e-4), f"silu([0, 2, -100]) = [0, 1.7616, ~0], got {y.data}"
assert y._backward is not None, "silu must record its backward: build the output with from_op(..., silu_backward)"
(g,) = y._backward(np.ones(3, dtype=np.float32))
assert np.allclose(g, [0.5, 1.0908, 0.0], atol=1e-4), f"slopes at 0, 2, -100: [0.5, 1.0908, ~0], got {g}"
with np.errstate(over="raise"):
    silu(Tensor([-1000.0]))  # must not overflow
xs = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
assert gradcheck(silu, (xs,)), "silu's gradient"

# %% [markdown]
# ## 5. `Embedding`: a lookup table you can train
#
# *Why.* Tokens are integers; a network needs vectors. `Embedding(n, d)` holds
# a weight of shape (n, d), one row per token, and `emb(idx)` picks rows:
# indices of shape (B, T) give vectors of shape (B, T, d). Mathematically it is
# `one_hot(idx) @ W`; as a gather it costs B·T·d copies instead of B·T·n·d
# multiply-adds, and never builds the (B, T, n) one-hot matrix.
#
# *Backward.* The forward is a gather, out[p] = W[idx[p]] for every position p,
# so dL/dW[i] = Σ over the positions p with idx[p] = i of g[p]: a
# **scatter-add**. A token that appears 3 times in the batch gets 3
# contributions. `grad[idx] += g` is wrong: NumPy evaluates it as
# `grad[idx] = grad[idx] + g`, so with repeated indices the last write wins and
# only one contribution survives. `scatter_add(target, index, values)` (from
# `tinytorch.core.backend`: `np.add.at` on the CPU) adds them all. Rows never
# picked get zero.
#
# Worked example: W of shape (5, 3), idx = [[1, 1, 0], [4, 1, 2]] and g all
# ones: row 1 gets 3 (three positions), rows 0, 2, 4 get 1, row 3 gets 0.
#
# `padding_idx` names a row used for padding: it starts at zero and gets no
# gradient, so it stays zero. Indices are checked by `_embedding_indices`
# (provided): integers in [0, n), on the weight's device.
#
# *Cost.* Forward B·T·d copies; backward a (n, d) array of zeros plus B·T·d
# additions. For GPT-2 (n = 50257, d = 768) that zero array is 154 MB in
# float32 per backward: the price of a dense gradient.
#
# ### Exercise: `embedding(input, weight, padding_idx=None)`
# Hint 1: the forward is indexing the weight's array with the index array;
# the backward scatters g back into a zero gradient. Hint 2: flatten the
# indices to (B·T,) and g to (B·T, d) so they pair up row by row; zero the
# padding row of the gradient. Hint 3: `embedding_backward(g)` makes `grad`
# with `xp.zeros(weight.shape, ...)`, calls `scatter_add`, returns `(grad,)`;
# the op's only input is the weight.

# %% nbgrader={"grade": false, "grade_id": "embedding", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def embedding(input, weight, padding_idx=None):
    """Rows of `weight` picked by integer indices: (*input.shape) -> (*input.shape, embedding_dim)."""
    idx = _embedding_indices(input, weight)
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    xp = get_xp(weight._device)
    ### BEGIN SOLUTION
    def embedding_backward(g):
        grad = xp.zeros(weight.shape, dtype=g.dtype)
        scatter_add(grad, idx.reshape(-1), g.reshape(idx.size, weight.shape[1]))  # repeats add up
        if padding_idx is not None:
            grad[padding_idx] = 0
        return (grad,)
    return from_op(weight.data[idx], weight._device, (weight,), embedding_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-embedding", "locked": true, "points": 3, "schema_version": 3, "solution": false}
table = Parameter(np.arange(15, dtype=np.float32).reshape(5, 3))
tokens = Tensor(np.array([[1, 1, 0], [4, 1, 2]]))
out = embedding(tokens, table)
assert out.shape == (2, 3, 3), f"indices (2, 3) into a (5, 3) table give (2, 3, 3), got {out.shape}"
assert np.array_equal(out.data[1, 0], [12, 13, 14]), f"position (1, 0) holds token 4: row 4 = [12, 13, 14]"
assert out._backward is not None, "embedding must record its backward: from_op(..., (weight,), embedding_backward)"
grads = out._backward(np.ones((2, 3, 3), dtype=np.float32))
assert len(grads) == 1 and np.shape(grads[0]) == (5, 3), "the backward returns (grad of the weight,), shape (5, 3)"
assert np.array_equal(grads[0][:, 0], [1, 3, 1, 0, 1]), \
    f"token 1 appears 3 times: its row gets 3 (repeats add up); unused row 3 gets 0; got {grads[0][:, 0]}"
(padded,) = embedding(tokens, table, padding_idx=1)._backward(np.ones((2, 3, 3), dtype=np.float32))
assert np.array_equal(padded[:, 0], [1, 0, 1, 0, 1]), f"the padding row gets no gradient, got {padded[:, 0]}"
(padded,) = embedding(tokens, table, padding_idx=0)._backward(np.ones((2, 3, 3), dtype=np.float32))
assert np.array_equal(padded[:, 0], [0, 3, 1, 0, 1]), \
    f"padding_idx=0 is row 0 (0 is a row, not 'none'): want [0, 3, 1, 0, 1], got {padded[:, 0]}"
short = embedding(Tensor(np.array([[1, 2], [4, 1]])), table)  # T = 2 positions, rows of width d = 3
try: (g,) = short._backward(np.ones((2, 2, 3), dtype=np.float32))
except ValueError as err: raise AssertionError(f"indices (2, 2): g (2, 2, 3) is 4 rows of width d = 3; got {err}") from None
assert np.array_equal(g[:, 0], [0, 2, 1, 0, 1]), f"indices [[1, 2], [4, 1]]: want [0, 2, 1, 0, 1], got {g[:, 0]}"
_expect(lambda: embedding(Tensor(np.zeros((0, 2), np.int64)), table)._backward(np.ones((0, 2, 3), np.float32)),
        (np.zeros((5, 3)),), "an empty batch of indices (0, 2): g (0, 2, 3) holds no rows, the gradient is all 0")
### BEGIN HIDDEN TESTS
(neg,) = embedding(tokens, table, padding_idx=-4)._backward(np.ones((2, 3, 3), dtype=np.float32))
assert np.array_equal(neg[:, 0], [1, 0, 1, 0, 1]), "padding_idx=-4 is row 1"
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise: the `Embedding` layer
#
# The layer owns one weight, (num_embeddings, embedding_dim). PyTorch starts
# it at N(0, 1): unlike a `Linear` weight, an embedding row is not summed with
# others on the way in, so there is no fan to divide by. The padding row starts
# at zero, and since your backward gives it no gradient, it stays zero. Hint 1:
# like `Linear`: make the parameter, then fill it in `reset_parameters`.
# Hint 2: `_empty_parameter(shape, dtype, device)`, then `normal_`; then zero
# one row when `padding_idx` is set. Hint 3: two lines in `__init__`, three in
# `reset_parameters` (the row is `self.weight.data[self.padding_idx]`).

# %% nbgrader={"grade": false, "grade_id": "embedding-layer", "locked": false, "schema_version": 3, "solution": true}
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
        ### BEGIN SOLUTION
        self.weight = _empty_parameter((num_embeddings, embedding_dim), dtype, device)
        self.reset_parameters()
        ### END SOLUTION

    def reset_parameters(self):
        ### BEGIN SOLUTION
        normal_(self.weight)  # N(0, 1), as in PyTorch
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0
        ### END SOLUTION

    def forward(self, input):
        return embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


# %% nbgrader={"grade": true, "grade_id": "test-embedding-layer", "locked": true, "points": 1, "schema_version": 3, "solution": false}
manual_seed(0)
emb = Embedding(1000, 8, padding_idx=3)
assert [n for n, _ in emb.named_parameters()] == ["weight"], "Embedding registers one parameter, 'weight'"
assert emb.weight.shape == (1000, 8), f"weight (num_embeddings, embedding_dim) = (1000, 8), got {emb.weight.shape}"
assert np.all(emb.weight.data[3] == 0), "the padding row starts at zero"
row = Embedding(10, 4, padding_idx=0).weight.data[0]
assert np.all(row == 0), f"padding_idx=0 zeroes row 0 too (0 is a row, not 'none'), got {row}"
assert abs(emb.weight.data.std() - 1) < 0.05, f"the weight is N(0, 1): std {emb.weight.data.std():.3f}"
assert emb(Tensor(np.array([[3, 5]]))).shape == (1, 2, 8), "Embedding maps (B, T) indices to (B, T, d)"
wide = Embedding(3, 2, dtype="float64").weight
assert wide.dtype == np.float64, f"dtype= reaches the weight: want float64, got {wide.dtype}"

# %% [markdown]
# ## 6. `LayerNorm`: one op, with a backward derived by hand
#
# *Why.* Deep networks train badly when the scale of the activations drifts
# from layer to layer. LayerNorm fixes the scale of every vector: for each
# position, over its last dimension(s) of size D,
#
# μ = (1/D) Σ xᵢ,  σ² = (1/D) Σ (xᵢ - μ)²,  x̂ᵢ = (xᵢ - μ) / √(σ² + ε),  yᵢ = γᵢ x̂ᵢ + βᵢ
#
# (σ² is the *biased* variance; below, σ means √(σ² + ε)). γ and β (weight and
# bias, of shape `normalized_shape`) let the network undo the normalisation
# where that helps; they start at 1 and 0.
#
# Worked example: x = [2, 2, 2, 6] has μ = 3 and σ² = (1 + 1 + 1 + 9)/4 = 3,
# so x̂ = [-1, -1, -1, 3]/√3 ≈ [-0.577, -0.577, -0.577, 1.732]: mean 0,
# variance 1.
#
# *Why fused.* Built from primitives (mean, sub, mul, mean, add, sqrt, div,
# mul, add) the graph has about nine nodes, and they keep several arrays of the
# input's size alive for the backward pass. One op keeps x̂ (input-sized) and
# 1/σ (one number per row). The price is deriving the backward by hand.
#
# *The backward.* Let g = dL/dy. Then dL/dβ = Σ g and dL/dγ = Σ g·x̂, summed
# over every dimension but the normalized ones (each γᵢ is used once per row).
# For x, write h = g·γ = dL/dx̂ and use x̂ᵢ = (xᵢ - μ)/σ:
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
# The two subtracted terms remove the parts of h along the two directions the
# normalisation cannot see: shifting all xᵢ (the mean) and scaling them (x̂).
# Checks: Σⱼ dL/dxⱼ = 0 (the output does not change if x shifts), and
# Σⱼ x̂ⱼ dL/dxⱼ = 0 (nor if x is scaled up).
#
# *Cost.* Forward and backward each read the input a few times: O(N·D), no
# matrix product; memory: x̂ and one 1/σ per row. One NumPy detail decides the
# speed: `a.mean(axis=-1)` over rows as short as a transformer's (D = 128)
# pays a fixed cost per row and runs ~4x slower than a pass over the data. The
# provided `_row_mean(a)` (and `_row_mean(a, b)`, the row means of a·b) returns
# the same (N, 1) means through BLAS.
#
# ### Exercise: `layer_norm(input, normalized_shape, weight, bias, eps)`
# `rows` is the input as an (N, D) array, one vector to normalise per row;
# `gamma` and `beta` are γ and β flattened to length D (or `None`).
# Hint 1: centre, scale by 1/σ, apply γ and β; in the backward, use only what
# the forward saved (x̂ and 1/σ), not x. Hint 2: the boxed formula, with the
# means taken per row as (N, 1) columns so they broadcast; dL/dγ and dL/dβ sum
# over the rows, then take `normalized_shape` again. Hint 3: the centred rows,
# `rstd` = 1/√(var + eps), `xhat` (the centred array scaled in place: one
# input-sized array less); `out` (skip γ or β when `None`), returned in the
# input's shape; `layer_norm_backward(g)` reshapes g to (N, D), computes `h`,
# then the three gradients (`None` for an absent or frozen operand); return
# `from_op(out, ..., (input, weight, bias), layer_norm_backward)`.

# %% nbgrader={"grade": false, "grade_id": "layer-norm", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
@_in_float32_if_half  # provided: float16 statistics overflow, so they are computed in float32 as in PyTorch
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise the last dims to mean 0 and variance 1, then scale by weight and shift by bias."""
    shape, _ = _normalized_axes(input, normalized_shape)
    xp = get_xp(input._device)
    x = _float_array(input)
    rows = _as_rows(x, shape)  # (N, D): one vector to normalise per row
    gamma = None if weight is None else weight.data.reshape(-1)
    beta = None if bias is None else bias.data.reshape(-1)
    ### BEGIN SOLUTION
    xhat = rows - _row_mean(rows)  # centred; becomes x̂ in place below
    rstd = 1.0 / xp.sqrt(_row_mean(xhat, xhat) + eps)  # 1/σ, (N, 1)
    xhat *= rstd  # only x̂ and 1/σ stay alive for the backward pass
    out = xhat if gamma is None else xhat * gamma
    if beta is not None:
        out = out + beta if gamma is None else xp.add(out, beta, out=out)

    def layer_norm_backward(g):
        g = g.reshape(xhat.shape)
        h = g if weight is None else g * weight.data.reshape(-1)  # dL/dx̂ (γ read now, not kept)
        grad_input = None
        if input.requires_grad:  # rstd (h - mean(h) - x̂ mean(h x̂)), in place on one array
            grad_input = xhat * _row_mean(h, xhat)
            xp.subtract(h, grad_input, out=grad_input)
            grad_input -= _row_mean(h)
            grad_input *= rstd
            grad_input = grad_input.reshape(input.shape)
        grad_weight = (g * xhat).sum(axis=0).reshape(shape) if weight is not None and weight.requires_grad else None
        grad_bias = g.sum(axis=0).reshape(shape) if bias is not None and bias.requires_grad else None
        return grad_input, grad_weight, grad_bias
    return from_op(out.reshape(input.shape), input._device, (input, weight, bias), layer_norm_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-layer-norm", "locked": true, "points": 4, "schema_version": 3, "solution": false}
x = Tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 6.0]], requires_grad=True)
w = Parameter([1.0, 2.0, 1.0, 1.0])
b = Parameter([0.0, 0.0, 0.0, 1.0])
y = layer_norm(x, 4)
assert y.shape == (2, 4), f"layer_norm keeps the shape, got {y.shape}"
assert np.allclose(y.data[1], [-1 / np.sqrt(3)] * 3 + [np.sqrt(3)], atol=1e-4), \
    f"[2, 2, 2, 6]: mean 3, σ √3 -> [-1/√3, -1/√3, -1/√3, √3], got {y.data[1]}"
assert np.allclose(y.data.mean(axis=1), 0, atol=1e-6) and np.allclose(y.data.var(axis=1), 1, atol=1e-4), \
    "each row has mean 0 and (biased) variance 1"
big_eps = layer_norm(Tensor([[3.0, 5.0]]), 2, eps=3.0).data
assert np.allclose(big_eps, [[-0.5, 0.5]]), \
    f"eps goes under the root: σ = √(1 + 3) = 2, so [3, 5] -> [-0.5, 0.5], got {big_eps.tolist()}"
out = layer_norm(x, (4,), w, b)
assert out._parents is not None and len(out._parents) == 3 and out._parents[0] is x, \
    "layer_norm must be ONE op whose inputs are (input, weight, bias), not a chain of primitives"
gx, gw, gb = out._backward(np.ones((2, 4), dtype=np.float32))
assert np.shape(gb) == (4,) and np.allclose(gb, 2), f"dL/dbias sums g over the rows: [2, 2, 2, 2], got {gb}"
assert np.shape(gw) == (4,) and np.allclose(gw, y.data.sum(axis=0), atol=1e-5), f"dL/dweight = Σ g·x̂, got {gw}"
assert np.shape(gx) == (2, 4) and np.allclose(gx.sum(axis=1), 0, atol=1e-5), \
    f"dL/dx sums to 0 over each row (adding a constant to a row changes nothing), got row sums {np.sum(gx, axis=1)}"
assert gradcheck(lambda a, c, d: layer_norm(a, 4, c, d), (x, w, b)), "layer_norm's gradients"
G = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
gx, gx_plain = layer_norm(x, 4, None, b)._backward(G)[0], layer_norm(x, 4)._backward(G)[0]
assert np.allclose(gx, gx_plain, atol=1e-5), f"a bias alone only shifts the output, so dL/dx is plain " \
    f"layer_norm's {gx_plain.astype(float).round(3).tolist()}; got {gx.astype(float).round(3).tolist()} (x̂ changed?)"
x3 = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
assert gradcheck(lambda a: layer_norm(a, (3, 4)), (x3,)), "gradients over two normalized dims"
assert gradcheck(lambda a, d: layer_norm(a, (3, 4), None, d), (x3, Parameter(np.ones((3, 4))))), "bias of shape (3, 4)"
### BEGIN HIDDEN TESTS
w2 = Parameter(np.random.default_rng(1).standard_normal((3, 4)))
assert gradcheck(lambda a, c: layer_norm(a, (3, 4), c), (x3, w2)), "weight without bias"
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise: the `LayerNorm` layer
#
# γ and β have the shape `normalized_shape` and start at 1 and 0, so a fresh
# layer is the pure normalisation. `elementwise_affine=False` means neither
# exists; `bias=False` drops only β. Hint 1: an absent parameter is `None`
# (assigning `None` registers nothing). Hint 2: `_empty_parameter`, filled by
# `ones_` or `zeros_` (both return the tensor they fill). Hint 3: set both to
# `None`, then one `if` for the affine case and one inside it for the bias.

# %% nbgrader={"grade": false, "grade_id": "layer-norm-layer", "locked": false, "schema_version": 3, "solution": true}
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
        ### BEGIN SOLUTION
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = ones_(_empty_parameter(self.normalized_shape, dtype, device))
            if bias:
                self.bias = zeros_(_empty_parameter(self.normalized_shape, dtype, device))
        ### END SOLUTION

    def forward(self, input):
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


# %% nbgrader={"grade": true, "grade_id": "test-layer-norm-layer", "locked": true, "points": 1, "schema_version": 3, "solution": false}
ln = LayerNorm(4)
assert [n for n, _ in ln.named_parameters()] == ["weight", "bias"], "LayerNorm registers weight (γ), then bias (β)"
assert np.array_equal(ln.weight.data, np.ones(4)) and np.array_equal(ln.bias.data, np.zeros(4)), "γ = 1, β = 0"
x = Tensor([[2.0, 2.0, 2.0, 6.0]])
assert np.allclose(ln(x).data, layer_norm(x, 4).data), "a fresh LayerNorm is the pure normalisation"
assert LayerNorm(4, bias=False).bias is None, "bias=False: no β"
wide = LayerNorm(4, dtype="float64")
assert (wide.weight.dtype, wide.bias.dtype) == (np.float64, np.float64), \
    f"dtype= reaches γ and β, got {wide.weight.dtype} and {wide.bias.dtype}"
plain = LayerNorm((2, 3), elementwise_affine=False)
assert plain.weight is None and plain.bias is None and not list(plain.parameters()), "no affine: no parameters"

# %% [markdown]
# ### `RMSNorm`: LayerNorm without the mean
#
# *Why.* Llama, Mistral and most models since 2023 drop two of LayerNorm's
# parts: the centring and β. Zhang & Sennrich (2019) found that the rescaling
# alone does the useful work, and skipping the mean saves one reduction per
# row. The vector is divided by its root mean square:
#
# rms = √((1/D) Σ xᵢ² + ε),  x̂ᵢ = xᵢ / rms,  yᵢ = γᵢ x̂ᵢ
#
# PyTorch's `eps=None` means the machine epsilon of the input's dtype
# (`np.finfo(dtype).eps`, 1.19e-7 for float32), not LayerNorm's 1e-5. Both
# norms run float16 and bfloat16 inputs in float32 (the provided decorator
# `_in_float32_if_half`): a float16 mean square overflows once the values reach
# 256, and so a float16 input gets float32's epsilon too, as in PyTorch.
#
# Worked example: x = [3, 4] has mean square (9 + 16)/2 = 12.5, rms ≈ 3.536,
# so x̂ ≈ [0.849, 1.131]: mean square 1, but mean 0.99, not 0.
#
# *The backward.* The LayerNorm derivation with μ = 0 and nothing subtracted:
# ∂rms/∂xⱼ = xⱼ/(D·rms) = x̂ⱼ/D, so ∂x̂ᵢ/∂xⱼ = (δᵢⱼ - x̂ᵢ x̂ⱼ/D)/rms and, with
# h = g·γ,
#
# **dL/dxⱼ = (1/rms) (hⱼ - x̂ⱼ · mean(h · x̂))**.
#
# Only the scale direction is removed: Σⱼ x̂ⱼ dL/dxⱼ = 0 (scaling x up changes
# nothing), but unlike LayerNorm a shift of x does change the output.
#
# *Cost.* One reduction per row instead of two; memory: x̂ and 1/rms.
#
# ### Exercise: `rms_norm(input, normalized_shape, weight=None, eps=None)`
# Hint 1: the LayerNorm exercise without the centring and without β (`rows`
# and `gamma` as there). Hint 2: 1/rms from the row means of x², plus ε;
# dL/dγ sums g·x̂ over the rows. Hint 3: `rrms`, `xhat`, `out` (in the input's
# shape); `rms_norm_backward(g)` returns the input's and the weight's gradients
# (`None` where not needed); `from_op(out, ..., (input, weight), rms_norm_backward)`.

# %% nbgrader={"grade": false, "grade_id": "rms-norm", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
@_in_float32_if_half  # provided: float16 statistics overflow, so they are computed in float32 as in PyTorch
def rms_norm(input, normalized_shape, weight=None, eps=None):
    """Divide the last dims by their root mean square, then scale by weight (PyTorch's F.rms_norm)."""
    shape, _ = _normalized_axes(input, normalized_shape)
    xp = get_xp(input._device)
    x = _float_array(input)
    rows = _as_rows(x, shape)  # (N, D): one vector to normalise per row
    gamma = None if weight is None else weight.data.reshape(-1)
    eps = float(np.finfo(x.dtype).eps) if eps is None else eps
    ### BEGIN SOLUTION
    rrms = 1.0 / xp.sqrt(_row_mean(rows, rows) + eps)  # 1/rms, (N, 1)
    xhat = rows * rrms
    out = xhat if gamma is None else xhat * gamma

    def rms_norm_backward(g):
        g = g.reshape(xhat.shape)
        h = g if weight is None else g * weight.data.reshape(-1)  # dL/dx̂ (γ read now, not kept)
        grad_input = None
        if input.requires_grad:
            grad_input = (rrms * (h - xhat * _row_mean(h, xhat))).reshape(input.shape)
        grad_weight = (g * xhat).sum(axis=0).reshape(shape) if weight is not None and weight.requires_grad else None
        return grad_input, grad_weight
    return from_op(out.reshape(input.shape), input._device, (input, weight), rms_norm_backward)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-rms-norm", "locked": true, "points": 3, "schema_version": 3, "solution": false}
x = Tensor([[3.0, 4.0], [1.0, 1.0]], requires_grad=True)
y = rms_norm(x, 2)
assert y.shape == (2, 2), f"rms_norm keeps the shape, got {y.shape}"
assert np.allclose(y.data[0], [3 / np.sqrt(12.5), 4 / np.sqrt(12.5)], atol=1e-5), \
    f"[3, 4]: mean square 12.5 -> [3, 4]/√12.5 = [0.849, 1.131], got {y.data[0]}"
assert np.allclose(y.data[1], [1, 1], atol=1e-5), f"[1, 1] is already of rms 1 (no centring!), got {y.data[1]}"
big_eps = rms_norm(Tensor([[3.0, 4.0]]), 2, eps=3.5).data
assert np.allclose(big_eps, [[0.75, 1.0]], atol=1e-6), \
    f"eps goes under the root: rms = √(12.5 + 3.5) = 4, so [3, 4] -> [0.75, 1], got {big_eps.tolist()}"
w = Parameter([2.0, 0.5])
out = rms_norm(x, (2,), w, eps=1e-6)
assert out._parents is not None and len(out._parents) == 2 and out._parents[0] is x, \
    "rms_norm must be ONE op whose inputs are (input, weight)"
gx, gw = out._backward(np.ones((2, 2), dtype=np.float32))
assert np.shape(gw) == (2,) and np.allclose(gw, y.data.sum(axis=0), atol=1e-5), f"dL/dweight = Σ g·x̂, got {gw}"
assert np.allclose((gx * y.data).sum(axis=1), 0, atol=1e-5), "Σ x̂·dL/dx = 0 over each row (scale invariance)"
assert gradcheck(lambda a, c: rms_norm(a, 2, c, eps=1e-6), (x, w)), "rms_norm's gradients"
x3 = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
assert gradcheck(lambda a: rms_norm(a, (3, 4)), (x3,)), "gradients over two normalized dims"
assert gradcheck(lambda a, c: rms_norm(a, (3, 4), c), (x3, Parameter(np.arange(12.0).reshape(3, 4)))), "weight (3, 4)"


# %% [markdown]
# The layer, with PyTorch's signature: γ starts at 1, there is no β, and
# `elementwise_affine=False` leaves no parameter at all.

# %%
#| export
class RMSNorm(Module):
    """Divide by the root mean square over the last dims `normalized_shape`, then apply a learned scale."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = _empty_parameter(self.normalized_shape, dtype, device) if elementwise_affine else None
        if self.weight is not None:
            ones_(self.weight)  # γ = 1: a fresh layer is the pure normalisation

    def forward(self, input):
        return rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


# %% [markdown]
# ## 7. `Dropout`: noise that regularises
#
# *Why.* During training, dropout zeroes each activation with probability p, so
# the network cannot rely on any single unit; at evaluation it does nothing. To
# keep the expected value of every activation the same in both modes, the kept
# ones are scaled by 1/(1 - p) during training (**inverted dropout**):
#
# E[mᵢ xᵢ] = (1 - p) · xᵢ/(1 - p) + p · 0 = xᵢ.
#
# Evaluation then needs no rescaling. The mask is the op's whole derivative:
# y = m ⊙ x, so dL/dx = m ⊙ g, with mᵢ = 1/(1 - p) for kept entries and 0 for
# dropped ones. Edge cases: p = 0 is the identity; p = 1 drops everything (the
# scale would be 1/0: use 0).
#
# Worked example: p = 0.2 keeps about 80% of the entries, each scaled by 1.25;
# a vector of ones becomes values in {0, 1.25} with mean about 1.
#
# `dropout_mask(shape, p, dtype, device)` is the one mask of tinytorch
# (module 08's attention dropout uses it too). It draws its numbers where the
# mask is used: `generator_for(device)` is `default_generator()` on the CPU and
# a generator living on the GPU for `"cuda"`, both reset by `manual_seed(s)`, so
# a run is reproducible, and a GPU step never copies a mask from the host (a
# copy per dropout call per layer adds up).
#
# *Cost.* One random number and one multiply per element, and the mask (input-
# sized) is kept for the backward pass.
#
# ### Exercise: `dropout_mask` and `dropout`
# Hint 1: a uniform number per element decides keep or drop; the mask is keep
# times the scale. Hint 2: keep when u ≥ p, with u ~ U(0, 1) drawn as float32
# numbers of the given shape from the device's generator; scale 1/(1 - p), or 0
# when p = 1; the mask cast to `dtype` (it is already on the device). Hint 3: in
# `dropout` (checks and the shortcut given): the mask for `input.shape` in the
# input's dtype and device, a 1-tuple backward, `from_op`.

# %% nbgrader={"grade": false, "grade_id": "dropout", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
def dropout_mask(shape, p, dtype, device):
    """Dropout's multiplier: 0 with probability p, else 1/(1-p), in `dtype` on `device`."""
    ### BEGIN SOLUTION
    keep = generator_for(device).random(shape, dtype=np.float32) >= p  # drawn on the device
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    return keep.astype(dtype) * scale
    ### END SOLUTION


def dropout(input, p=0.5, training=True):
    """Zero each element with probability p and scale the others by 1/(1-p); identity when not training."""
    _check_probability(p)
    if not training or p == 0.0:
        return input
    ### BEGIN SOLUTION
    mask = dropout_mask(input.shape, p, input.dtype, input._device)

    def dropout_backward(g):
        return (g * mask,)
    return from_op(input.data * mask, input._device, (input,), dropout_backward)
    ### END SOLUTION


# %%
#| export
class Dropout(Module):
    """Inverted dropout with probability p in training mode; the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        _check_probability(p)
        self.p = p
        self.inplace = inplace  # accepted for PyTorch compatibility; we never overwrite the input

    def forward(self, input):
        return dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


# %% nbgrader={"grade": true, "grade_id": "test-dropout", "locked": true, "points": 3, "schema_version": 3, "solution": false}
mask = dropout_mask((200, 500), 0.2, np.float32, device("cpu"))
assert np.shape(mask) == (200, 500) and mask.dtype == np.float32, "the mask has the shape and dtype asked for"
assert abs((mask != 0).mean() - 0.8) < 0.01, f"p=0.2 keeps about 80%, kept {(mask != 0).mean():.3f}"
assert np.allclose(mask[mask != 0], 1.25), "kept entries are scaled by 1/(1-p) = 1.25"
assert np.all(dropout_mask((3,), 1.0, np.float32, device("cpu")) == 0), "p=1: all zeros, no inf or nan"
x = Tensor(np.ones((200, 500), dtype=np.float32), requires_grad=True)
manual_seed(0)
y = dropout(x, 0.2)
assert np.all(x.data == 1), f"dropout must leave its input alone: x was all ones, now holds {np.unique(x.data)}"
assert y.shape == (200, 500) and y.dtype == np.float32, f"same shape, float32; got {y.shape}, {y.dtype}"
assert abs(y.data.mean() - 1.0) < 0.01, f"the expected value is unchanged: mean {y.data.mean():.3f}, want ~1"
assert y._backward is not None, "dropout must record its backward: build the output with from_op(..., dropout_backward)"
(g,) = y._backward(np.full((200, 500), 2.0, dtype=np.float32))
assert np.allclose(g, 2 * y.data), "the backward multiplies by the same mask"
manual_seed(0)
assert np.array_equal(dropout(x, 0.2).data, y.data), "manual_seed(0) must reproduce the same mask"
assert dropout(x, 0.2, training=False) is x and dropout(x, 0.0) is x, "eval or p=0: the input itself"
layer = Dropout(0.5)
assert layer.eval()(x) is x and layer.train()(x) is not x, "Dropout follows train() / eval()"
(g,) = dropout(Tensor(np.zeros(1000, np.float32), requires_grad=True), 0.5)._backward(np.ones(1000, np.float32))
assert 0.4 < (g == 2).mean() < 0.6, f"dropout of zeros (p=0.5), g = ones: about half the gradient is 2 (kept), got " \
    f"{(g == 2).mean():.0%}: the mask decides, even where the input (and the output) is 0"

# %% [markdown]
# ## 8. Containers, and saving
#
# A plain Python list of layers would hide them from `__setattr__`: their
# parameters would not be found, saved or moved. The containers (provided)
# register each entry with `add_module` under its position (`"0"`, `"1"`, ...)
# or key, which is where names like `layers.1.bias` come from:
# `Sequential(*modules)` feeds each module's output to the next; `ModuleList`
# is a registered list for models that loop in their own `forward` (a
# transformer's blocks); `ModuleDict` is a registered dict. They live in
# `tinytorch.nn.container` (the activation modules in `tinytorch.nn.activation`),
# and `tinytorch.nn.layers` re-exports both.
#
# A checkpoint is a state dict on disk. `tinytorch.save(sd, path)` writes it as
# **safetensors** (a JSON header of names, dtypes, shapes and offsets, then the
# raw bytes: loading it cannot run code, unlike a pickle, and Hugging Face
# ships GPT-2's weights in it); `tinytorch.load(path)` reads it back in the
# same key order. The write goes through `atomic_write`: a temporary file in
# the same folder, renamed over the target, so a crash mid-write leaves the old
# checkpoint, never half of a new one.

# %% [markdown]
# ## 9. Putting it together: an MLP learns XOR
#
# XOR is the classic problem one linear layer cannot solve (no line separates
# {(0,0), (1,1)} from {(0,1), (1,0)}); one hidden layer can. We train a
# 2 → 8 → 1 network with a tanh hidden layer and a sigmoid output, a squared
# error written with tensor ops (module 04 brings proper losses), and the
# plainest optimizer written by hand (module 05 brings `SGD`):
# `p.data -= lr * p.grad.data`, then `zero_grad()`. Then we save it, load the
# file into a fresh model and check the predictions survive.

# %%
import tempfile

from tinytorch.core.serialization import load, save


class XorNet(Module):
    def __init__(self):
        super().__init__()
        self.hidden = Linear(2, 8)
        self.out = Linear(8, 1)

    def forward(self, x):
        return self.out(self.hidden(x).tanh()).sigmoid()


manual_seed(0)
net = XorNet()
inputs = Tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
targets = Tensor([[0.0], [1.0], [1.0], [0.0]])
for step in range(500):
    loss = ((net(inputs) - targets) ** 2).mean()
    loss.backward()
    for p in net.parameters():
        p.data -= 1.0 * p.grad.data
    net.zero_grad()
path = tempfile.mkdtemp() + "/xor.safetensors"
save(net.state_dict(), path)
restored = XorNet()
restored.load_state_dict(load(path))
predictions = (restored(inputs).data > 0.5).astype(np.float32).ravel()
print(f"loss {loss.item():.4f}, predictions of the reloaded model {predictions}")

# %% [markdown]
# ## 10. What it costs
#
# **Parameters.** `Linear(in, out)` holds in·out + out numbers, 4 bytes each in
# float32; training needs as much again for the gradients (and, with Adam in
# module 05, twice more for its moments). GPT-2 small's MLP block, 768 → 3072
# → 768, holds 768·3072 + 3072 + 3072·768 + 768 = 4,722,432 parameters:
# 18.0 MiB, plus 18.0 MiB of gradients, in each of its 12 blocks.
#
# **Activation memory.** What an op keeps for its backward pass lives until the
# backward pass runs, for every layer of the network at once. We can measure
# it: walk the graph and add up the arrays held by the backward closures and by
# the intermediate tensors. Fused LayerNorm against the same function written
# with primitives, for a batch of 64 × 128 vectors of 768 (24 MiB):

# %%
from tinytorch.core.autograd import topological_order


def saved_bytes(out):
    """Bytes of the distinct arrays, other than leaves, that the graph of `out` keeps for the backward pass."""
    nodes = topological_order(out)
    leaves = {id(n.data) for n in nodes if n._parents is None}  # the input and parameters: alive anyway
    kept = {}
    for node in nodes:
        if node._parents is not None:
            held = [c.cell_contents for c in node._backward.__closure__ or ()]  # what the closure saved
            for a in held + ([node.data] if node is not out else []):  # and the intermediate results
                if isinstance(a, np.ndarray) and id(a) not in leaves:
                    kept[id(a)] = a.nbytes
    return sum(kept.values())


ln = LayerNorm(768)
x = Tensor(np.random.default_rng(0).standard_normal((64, 128, 768)).astype(np.float32), requires_grad=True)
fused = ln(x)
mu = x.mean(dim=-1, keepdim=True)
composed = (x - mu) / (((x - mu) ** 2).mean(dim=-1, keepdim=True) + 1e-5).sqrt() * ln.weight + ln.bias
for name, out in (("fused", fused), ("composed", composed)):
    print(f"{name:8s} LayerNorm keeps {saved_bytes(out) / 2**20:6.1f} MiB for the backward pass")

# %% [markdown]
# The fused op keeps one input-sized array (x̂) plus one number per row; the
# composed version keeps several input-sized intermediates alive. In a
# transformer with two LayerNorms per block and dozens of blocks, that
# difference decides whether a batch fits in memory.
#
# **Time.** A `Linear` forward and backward is three matrix products of
# N·in·out multiply-adds each (forward, dL/dx, dL/dW), so its cost is
# 6·N·in·out floating-point operations; for (64, 768) through
# `Linear(768, 768)` that is 0.23 GFLOP, a few milliseconds on one CPU core
# and microseconds on a GPU. The Python around it (checks, closure, graph
# node) costs a few microseconds whatever the size: it matters only for tiny
# layers.
#
# **Next:** module 04 turns model outputs into losses (`cross_entropy`, fused
# and stable), and module 05 replaces the hand-written update above with
# optimizers.
