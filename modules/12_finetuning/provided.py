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
# # Module 12 — provided code: recurrent-layer plumbing, adapter files, checks
#
# The lesson (`finetuning.py`) writes the ideas: the recurrent cells, LoRA's
# forward and merge, the KL divergence and the distillation loss, the pooling of
# the last real token. This file is the plumbing around them, ready-made:
#
# - `_RNNBase`: the parameters of `nn.RNN`/`nn.GRU`/`nn.LSTM` under PyTorch's
#   names (`weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, ...), their
#   init, the input checks, and the loop over layers and time steps that calls
#   the lesson's cell once per step.
# - `save_adapters` / `load_adapters`: the LoRA weights alone, in a safetensors file.
# - `_check_mask`, `_check_lora`, `_check_kl_div`: the argument checks of the
#   pooling functions, of `LoRALinear` and of `F.kl_div`.
# - `_LinearView`: `LoRALinear`'s Linear-like attributes, read from its base.
# - For the graded checks: `_by_hand` (a layer stepped with the lesson's cells),
#   `_two_batches` (a two-batch run of `distill`) and `_raises`.

# %%
#| default_exp nn.rnn

# %%
#| export
"""Recurrent layers (`RNN`, `GRU`, `LSTM`) in PyTorch's layout, built from tensor ops."""
import math

import numpy as np

from tinytorch.core.backend import _check_whole, get_xp
from tinytorch.core.tensor import Tensor, cat, from_op, stack, zeros
from tinytorch.nn.functional import dropout, linear
from tinytorch.nn.init import uniform_
from tinytorch.nn.module import Module, _empty_parameter

# %% [markdown]
# ## The recurrent base class
#
# Each layer k holds four tensors: `weight_ih_lk` (G·H, I) maps the input, and
# `weight_hh_lk` (G·H, H) the previous hidden state, to G gate pre-activations
# of width H each (G = 1 for RNN, 3 for GRU, 4 for LSTM), plus two biases. The
# first layer reads the input (I = input_size); the others read the layer below
# (I = H). All start from U(−1/√H, 1/√H), PyTorch's init.
#
# `forward` runs time-major, (T, B, features). The input's part of every gate,
# x·W_ihᵀ + b_ih, does not depend on the hidden state, so one matmul computes
# it for all T steps; only the hidden state's part runs step by step, in the
# subclass's `_cell(gi_t, state, weight_hh, bias_hh)`.

# %%
#| export
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "GRU": 3, "LSTM": 4}


def _unbind_time(x):
    """The T steps x[0], ..., x[T-1] of a (T, ...) tensor, with one gradient buffer for all of them.

    Slicing T times would give T backward passes that each add a full (T, ...) array of zeros
    into x's gradient: O(T²) work. Here each step writes its gradient into its row of one
    buffer, and a scalar "anchor" between the steps and x hands the whole buffer to x once.
    """
    xp = get_xp(x._device)
    grad = {}

    def anchor_backward(g):
        return (grad.pop("buffer", None),)
    anchor = from_op(xp.zeros((), dtype=x.dtype), x._device, (x,), anchor_backward)

    def step(t):
        def step_backward(g):
            buffer = grad.setdefault("buffer", xp.zeros(x.shape, dtype=g.dtype))
            buffer[t] += g
            return (xp.zeros((), dtype=g.dtype),)  # the anchor's share: nothing, but it marks the path
        return from_op(x.data[t], x._device, (anchor,), step_backward)
    return [step(t) for t in range(x.shape[0])]


class _RNNBase(Module):
    """Parameters, checks and the layer/time loop of RNN, GRU and LSTM; subclasses define `_cell`."""

    _MODE = None  # "LSTM" or "GRU" in a subclass; RNN passes mode="RNN_TANH" or "RNN_RELU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, device=None, dtype=None, mode=None):
        super().__init__()
        name = type(self).__name__
        if mode is not None and self._MODE is not None:  # mode is RNN's to pass; LSTM and GRU have their own
            raise TypeError(f"{name}() got an unexpected keyword argument 'mode'")
        mode = mode or self._MODE
        input_size, hidden_size, num_layers = (_check_whole(value, f"{name}: {what}") for what, value in (
            ("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)))
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        if bidirectional:
            raise NotImplementedError(f"{name}: bidirectional=True is not supported; run a second {name} on the "
                                      f"time-reversed input and concatenate the two outputs")
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first, self.dropout = num_layers, bias, batch_first, float(dropout)
        gates = _GATES[mode] * hidden_size
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", _empty_parameter((gates, width), dtype, device))
            setattr(self, f"weight_hh_l{k}", _empty_parameter((gates, hidden_size), dtype, device))
            if bias:
                setattr(self, f"bias_ih_l{k}", _empty_parameter((gates,), dtype, device))
                setattr(self, f"bias_hh_l{k}", _empty_parameter((gates,), dtype, device))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            uniform_(p, -bound, bound)

    def _weights(self, k):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k; the biases are None when bias=False."""
        get = lambda kind: getattr(self, f"{kind}_l{k}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    # --- checks -------------------------------------------------------------------------
    def _time_major(self, input):
        """input as (T, B, I) and whether it came unbatched (T, I)."""
        name = type(self).__name__
        if not isinstance(input, Tensor):
            raise TypeError(f"{name} expects a Tensor, got {type(input).__name__}")
        if input.ndim not in (2, 3) or input.shape[-1] != self.input_size:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"{name} expects input of shape {layout} or (T, input_size) with input_size="
                             f"{self.input_size}, got {tuple(input.shape)}")
        steps = input.shape[1] if input.ndim == 3 and self.batch_first else input.shape[0]
        if steps == 0:
            raise ValueError(f"{name}: the input has no time steps (shape {tuple(input.shape)})")
        if input.ndim == 2:
            return input.unsqueeze(1), True
        return (input.transpose(0, 1) if self.batch_first else input), False

    def _initial_states(self, hx, batch, like, unbatched):
        """One state tuple per layer: (h,) or (h, c), each (B, H); zeros when hx is None."""
        name = type(self).__name__
        n = 2 if self.mode == "LSTM" else 1
        if hx is None:
            z = zeros(self.num_layers, batch, self.hidden_size, dtype=like.dtype, device=like.device)
            parts = (z,) * n
        else:
            if self.mode != "LSTM" and not isinstance(hx, Tensor):
                raise TypeError(f"{name}: h_0 must be a Tensor (an (h_0, c_0) pair is an LSTM's state), "
                                f"got {type(hx).__name__}")
            parts = tuple(hx) if self.mode == "LSTM" else (hx,)
            if len(parts) != n:
                raise ValueError(f"{name}: the initial state is (h_0, c_0) for an LSTM and h_0 otherwise")
            want = (self.num_layers, self.hidden_size) if unbatched else (self.num_layers, batch, self.hidden_size)
            for p in parts:
                if tuple(p.shape) != want:
                    raise ValueError(f"{name}: initial state of shape {tuple(p.shape)}, expected {want} "
                                     f"(num_layers{'' if unbatched else ', batch'}, hidden_size)")
            if unbatched:
                parts = tuple(p.unsqueeze(1) for p in parts)
        return [tuple(p[k] for p in parts) for k in range(self.num_layers)]

    # --- the loop over layers and time ------------------------------------------------------
    def forward(self, input, hx=None):
        x, unbatched = self._time_major(input)  # (T, B, I)
        states = self._initial_states(hx, x.shape[1], x, unbatched)
        finals = []
        for k in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(k)
            gi = linear(x, w_ih, b_ih)  # (T, B, G·H): the input's part of every step at once
            state, outputs = states[k], []
            for gi_t in _unbind_time(gi):
                state = self._cell(gi_t, state, w_hh, b_hh)  # the lesson's cell: (B, G·H) -> new state
                outputs.append(state[0])
            x = stack(outputs, 0)  # (T, B, H): the next layer's input
            if self.dropout and self.training and k < self.num_layers - 1:
                x = dropout(x, self.dropout, True)  # between layers, never after the last (as in PyTorch)
            finals.append(state)
        final = [stack([s[i] for s in finals], 0) for i in range(len(finals[0]))]  # each (L, B, H)
        if unbatched:
            x, final = x.squeeze(1), [f.squeeze(1) for f in final]
        elif self.batch_first:
            x = x.transpose(0, 1)  # (B, T, H)
        return (x, tuple(final)) if self.mode == "LSTM" else (x, final[0])

    def extra_repr(self):
        extra = "".join(f", {k}={v}" for k, v in (("num_layers", self.num_layers), ("bias", self.bias),
                                                   ("batch_first", self.batch_first), ("dropout", self.dropout))
                        if v != {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0}[k])
        return f"{self.input_size}, {self.hidden_size}{extra}"


def _by_hand(layer, x, state, rnn_cell, lstm_cell, gru_cell):
    """(output, final state) as arrays of a one-layer `layer` on x (T, B, I) from `state` ((h,) or (h, c)), stepping
    the given cells (the lesson's) with the layer's own weights: what the graded check of `_cell` compares against."""
    relu_cell = lambda *a: rnn_cell(*a, "relu")  # noqa: E731
    cell = {"RNN_TANH": rnn_cell, "RNN_RELU": relu_cell, "LSTM": lstm_cell, "GRU": gru_cell}[layer.mode]
    outputs = []
    for t in range(x.shape[0]):
        gi = linear(x[t], layer.weight_ih_l0, layer.bias_ih_l0)
        state = cell(gi, *state, layer.weight_hh_l0, layer.bias_hh_l0)
        state = state if isinstance(state, tuple) else (state,)
        outputs.append(state[0].numpy())
    return [np.stack(outputs)] + [s.numpy() for s in state]


def _cell_gradchecks(rnn_cell, lstm_cell, gru_cell):
    """The graded check of the cells' backward: each cell (B = 2, H = 3) against float64 central differences, with
    respect to each of its inputs in turn; an AssertionError names the cell and the input."""
    from tinytorch.core.autograd import GradcheckError, gradcheck
    rng = np.random.default_rng(3)
    for name, cell, gates in (("rnn_cell", rnn_cell, 1), ("lstm_cell", lstm_cell, 4), ("gru_cell", gru_cell, 3)):
        names = ("gi", "h") + ("c",) * (gates == 4) + ("weight_hh", "bias_hh")
        shapes = {"gi": (2, 3 * gates), "h": (2, 3), "c": (2, 3), "weight_hh": (3 * gates, 3), "bias_hh": (3 * gates,)}
        arrays = [rng.standard_normal(shapes[n]) for n in names]
        for k, wrt in enumerate(names):
            def run(*args, cell=cell):
                out = cell(*args)
                return cat(list(out), dim=1) if isinstance(out, tuple) else out
            try:
                gradcheck(run, [Tensor(a, requires_grad=j == k) for j, a in enumerate(arrays)])
            except GradcheckError as err:
                raise AssertionError(f"{name}: its gradient with respect to {wrt} is wrong ({err}). Is part of the "
                                     f"cell computed outside the graph (.detach(), .data, NumPy)?") from None

# %% [markdown]
# ## Checks of the attention mask
#
# The pooling functions take a right-padded 0/1 mask (B, T), as a Tensor or an
# array: 1s, then 0s, at least one real token per row.

# %%
#| export finetune.classify
import numpy as np

from tinytorch.core.tensor import Tensor


def _check_mask(hidden, attention_mask):
    """The mask as an array; ValueError unless it is (B, T) like `hidden`, of 0s and 1s, and right-padded."""
    mask = np.asarray(attention_mask.numpy() if isinstance(attention_mask, Tensor) else attention_mask)
    if mask.shape != tuple(hidden.shape[:2]):
        raise ValueError(f"attention_mask of shape {mask.shape} must be (B, T) = {tuple(hidden.shape[:2])}")
    if not ((mask == 0) | (mask == 1)).all():  # a 2 would count as two real tokens
        raise ValueError(f"attention_mask values must be 0 or 1 (1: a real token, 0: padding), got {np.unique(mask)}")
    if (mask.sum(axis=1) < 1).any() or (np.diff(mask.astype(np.int64), axis=1) > 0).any():
        raise ValueError("attention_mask must be right-padded (1s, then 0s) with at least one real token per row; "
                         "pad on the right: a causal model lets real tokens see left padding")
    return mask

# %% [markdown]
# ## Checks of `F.kl_div`

# %%
#| export nn.functional
def _check_kl_div(input, target, reduction):
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"kl_div expects two Tensors, got {type(input).__name__} and {type(target).__name__}")
    if tuple(input.shape) != tuple(target.shape):
        raise ValueError(f"kl_div: input {tuple(input.shape)} and target {tuple(target.shape)} must have one shape "
                         f"(input: log-probabilities, target: probabilities over the same classes)")
    if reduction not in ("none", "sum", "mean", "batchmean"):
        raise ValueError(f"kl_div: reduction={reduction!r}; use 'batchmean' (the true KL divergence per sample), "
                         f"'sum', 'mean' or 'none'")
    if input._device != target._device:
        raise RuntimeError(f"kl_div: input is on {input.device} and target on {target.device}; move one of them")

# %% [markdown]
# ## Adapter files
#
# A LoRA fine-tune changes only the adapters, so only they need saving: the
# file holds every parameter whose name contains `lora_` (plus any other
# parameter that trains, such as a classification head), a tiny fraction of
# the model. Loading puts them back into a model that has the same adapters
# injected, and not merged; a missing or unexpected name is an error that lists them.
# `load_adapter_state_dict` does the same from tensors already read (a
# training checkpoint's adapters).

# %%
#| export finetune.lora
import os
import tempfile

from tinytorch.core.backend import _check_whole, to_device
from tinytorch.core.serialization import load, save
from tinytorch.core.tensor import Tensor
from tinytorch.nn.layers import Linear


def _check_lora(base, rank):
    """LoRALinear's arguments: TypeError unless `base` is a Linear, ValueError unless `rank` is a whole number >= 1."""
    if not isinstance(base, Linear):
        raise TypeError(f"LoRALinear wraps a Linear, got {type(base).__name__}")
    _check_whole(rank, "LoRALinear: rank")


def _raises(error, call, why):
    """For the graded checks: the `error` that call() must raise; AssertionError(why) if it raises none."""
    try:
        call()
    except error as err:
        return err
    raise AssertionError(why)


class _LinearView:
    """LoRALinear's Linear-like attributes, read from its frozen `base`, and its repr."""

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    @property
    def weight(self):
        """The base weight (code that asks a layer for its dtype or device, e.g. a KV cache, still can)."""
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


class _MergeFlag:
    """LoRALinear's `merged`: whether the update is inside the base weight (forward then skips the adapter).
    Kept as a buffer, in state_dict only while merged: a merged model's checkpoint then cannot load into an
    unmerged model, which would add its adapters a second time (nor the other way round)."""

    @property
    def merged(self):
        return "lora_merged" in self._buffers

    @merged.setter
    def merged(self, value):
        if value:
            self.register_buffer("lora_merged", Tensor([1], device=self.base.weight.device))
        elif "lora_merged" in self._buffers:
            del self.lora_merged


def _is_lora(module):
    """A LoRALinear (the lesson's class, known by its parts: a notebook's own class counts too)."""
    return hasattr(module, "lora_A") and hasattr(module, "base") and hasattr(module, "merged")


def _check_untied(model):
    """Refuse to merge a LoRALinear whose base weight is also another layer's (a GPT's tied lm_head is wte)."""
    modules = dict(model.named_modules(remove_duplicate=False))
    names = {}  # id(tensor) -> every name it has in the model: a tied weight has several
    for name, tensor in model._state_tensors().items():
        names.setdefault(id(tensor), []).append(name)
    for group in (group for group in names.values() if len(group) > 1):
        for name in group:
            owner = modules.get(name.removesuffix(".base.weight")) if name.endswith(".base.weight") else None
            if owner is not None and _is_lora(owner) and not owner.merged:
                others = ", ".join(n for n in group if n != name)
                raise RuntimeError(f"merge_lora: {name} is the same Parameter as {others} (tied weights); merging "
                                   f"would change that layer too. Keep this adapter unmerged (its forward is "
                                   f"exact), or adapt a layer whose weight is its own (e.g. a GPT built with "
                                   f"tie_weights=False)")


def merge_and_unload(model):
    """Merge every adapter, then put each LoRALinear's base Linear back in its place, in place (PEFT's
    `merge_and_unload`): a plain model again, with the original state_dict names (for `save_pretrained`)."""
    merge_lora(model)  # the lesson's, defined after this half of the file
    for parent in list(model.modules()):
        for child, m in list(parent.named_children()):
            if _is_lora(m):
                setattr(parent, child, m.base)
    return model


def adapter_state_dict(model):
    """The trainable tensors of `model` (after inject_lora: the adapters and any unfrozen head), by name."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def save_adapters(model, path):
    """Write the trainable parameters alone (the LoRA adapters, a head) to `path` as safetensors."""
    state = adapter_state_dict(model)
    if not state:
        raise ValueError("save_adapters: the model has no trainable parameters; call inject_lora(model, ...) first")
    save(state, path)


def load_adapters(model, path):
    """Copy the tensors of an adapter file into `model` (which must have the same adapters injected)."""
    return load_adapter_state_dict(model, load(path), source=path)


def _adapter_file_sizes(model):
    """(bytes of the whole model's safetensors file, bytes of its adapter file), written to a temporary folder;
    the adapter file is loaded back into `model`, as a round trip."""
    with tempfile.TemporaryDirectory() as folder:
        full, adapters = os.path.join(folder, "full.safetensors"), os.path.join(folder, "adapters.safetensors")
        save(model.state_dict(), full)
        save_adapters(model, adapters)
        load_adapters(model, adapters)
        return os.path.getsize(full), os.path.getsize(adapters)


def _adapter_report(model):
    """One line on what an adapted `model` trains and stores: its trainable parameters and adapter file's size."""
    full, small = _adapter_file_sizes(model)
    return (f"trainable {model.num_parameters(trainable_only=True):,} of {model.num_parameters(non_embedding=False):,}; "
            f"adapter file {small:,} bytes, {small / full:.1%} of the model's {full:,}; "
            f"{len(adapter_state_dict(model))} tensors")


def load_adapter_state_dict(model, state, source="state"):
    """Copy `state` (name -> tensor: an adapter file's, or a checkpoint's) into `model`'s adapters, in place.

    Every trainable tensor of `model` must be in `state`, and every name of `state` must be a parameter
    of `model` with the same shape; otherwise a ValueError names them (`source` says where `state` came from)."""
    merged = [name.rpartition(".")[0] for name, _ in model.named_buffers() if name.endswith("lora_merged")]
    if merged:  # the weight holds the old adapters' update: new ones would change nothing, and unmerge break it
        raise ValueError(f"load_adapters({source}): {', '.join(merged)} are merged; unmerge them before loading "
                         f"other adapters")
    own = dict(model.named_parameters())
    missing = sorted(set(adapter_state_dict(model)) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"load_adapters({source}): missing {missing}, unexpected {unexpected}; inject the same "
                         f"adapters (targets, rank) into the model before loading")
    for name, value in state.items():
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"load_adapters({source}): {name} has shape {tuple(value.shape)} in the file and "
                             f"{tuple(own[name].shape)} in the model; was it saved with another rank?")
    for name, value in state.items():  # only once all fit: a bad file leaves the model as it was
        array = value.data if isinstance(value, Tensor) else value
        own[name].data[...] = to_device(array, own[name]._device)
    return model


# %% [markdown]
# ## Distillation's checks
#
# `distillation_loss` averages its KL term over rows ("batchmean"), so it takes
# (B, classes) logits: a sequence model's (B, T, V) are flattened to (B·T, V)
# first, or the term would be summed over time. `distill` takes each batch's
# inputs as a tuple of the models' arguments, and a lone tensor (a DataLoader's
# `(x, y)`) as the one argument.
#
# For the lesson's demo: `GRUClassifier`, the small recurrent student (token
# embeddings, a GRU, the state at the last real token, a Linear head), and
# `_fine_tune`, module 07's supervised loop that trains the teacher on the labels.

# %%
#| export finetune.distill
import numpy as np

from tinytorch.core.backend import manual_seed
from tinytorch.core.tensor import randn, tensor
from tinytorch.finetune.classify import last_token_pool
from tinytorch.nn.functional import cross_entropy
from tinytorch.nn.layers import Embedding, Linear, Module
from tinytorch.nn.rnn import GRU
from tinytorch.optim import SGD, AdamW
from tinytorch.training.trainer import train_step


def _check_distillation(student_logits, teacher_logits, temperature, alpha):
    """ValueError unless temperature > 0, 0 <= alpha <= 1, and both logits are (B, classes), of one shape."""
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation_loss: need temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
    for name, z in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if z.ndim != 2:
            raise ValueError(f"distillation_loss: {name} must be (B, classes), got shape {tuple(z.shape)}; "
                             f"flatten a sequence model's (B, T, V) logits with .reshape(-1, V) first")
    if tuple(student_logits.shape) != tuple(teacher_logits.shape):
        raise ValueError(f"distillation_loss: student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")


def _two_batches(distill, distillation_loss, soft_targets, temperature=4.0, alpha=0.9):
    """The graded check of `distill`: a Linear student and teacher, two different batches, SGD (lr 0.1). Returns
    distill's losses and final student weight, and those of module 07's train_step run on a twin of the student, one
    batch each (its own teacher targets and distillation_loss)."""
    manual_seed(0)
    student, twin, teacher = Linear(4, 3), Linear(4, 3), Linear(4, 3)
    twin.load_state_dict(student.state_dict())
    batches = [(randn(5, 4), tensor([0, 1, 2, 0, 1])), (randn(5, 4) * 3, tensor([2, 2, 1, 0, 1]))]
    got = distill(student, teacher, batches, SGD(student.parameters(), lr=0.1), temperature, alpha)
    def loss_on(x):  # the distillation loss of a batch, against its own teacher targets
        return lambda logits, y: distillation_loss(logits, soft_targets(teacher, x), y, temperature, alpha)
    optimizer = SGD(twin.parameters(), lr=0.1)
    want = [train_step(twin, loss_on(x), optimizer, [(x, y)]) for x, y in batches]  # module 07's step, one batch each
    return got, want, student.weight.numpy(), twin.weight.numpy()


def _token_one_task():
    """The made-up task of the graded check of `distill`: 64 rows of 8 tokens in 2 … 7, token 1 put into every other
    row; the label says whether token 1 occurs. Returns ((idx, an all-ones attention mask), labels)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 8, (64, 8))
    tokens[::2, rng.integers(0, 8)] = 1
    return (tensor(tokens), np.ones_like(tokens)), tensor((tokens == 1).any(axis=1).astype(np.int64))


def _argument_tuples(batches):
    """Each (inputs, labels) of `batches`, inputs as a tuple of the models' arguments (a lone tensor: one)."""
    for arguments, labels in batches:
        yield (tuple(arguments) if isinstance(arguments, (tuple, list)) else (arguments,)), labels


class GRUClassifier(Module):
    """Token embeddings -> GRU -> the state at the last real token -> Linear: a small student for distillation."""

    def __init__(self, vocab_size, embed, hidden, num_labels=2):
        super().__init__()
        self.embed = Embedding(vocab_size, embed)
        self.rnn = GRU(embed, hidden, batch_first=True)
        self.head = Linear(hidden, num_labels)

    def forward(self, idx, attention_mask):
        output, _ = self.rnn(self.embed(idx))  # (B, T, H)
        return self.head(last_token_pool(output, attention_mask))  # (B, num_labels)


def _fine_tune(model, inputs, labels, steps, lr):
    """`steps` AdamW steps of cross-entropy on one batch (`inputs`: a tuple of the model's arguments), on the
    model's trainable parameters only; returns the model."""
    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):  # module 07's step, on the one batch
        train_step(lambda arguments: model(*arguments), cross_entropy, optimizer, [(inputs, labels)])
    return model
