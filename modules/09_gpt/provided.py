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
# # Module 09 — GPT: provided code
#
# The plumbing around the lesson's model, read when you want, never edited:
# the configuration and its checks, the input checks of `GPT.forward`, GPT-2's
# initialisation, counting parameters and FLOPs, the optimizer's weight-decay
# groups, the checks of `generate`, and reading and writing GPT-2 checkpoints
# in Hugging Face's layout. Each cell exports before the lesson's code, into the
# same files (`tinytorch/models/gpt.py`, `sampling.py`) or its own
# (`tinytorch/models/hf_gpt2.py`; the lesson's test fixtures in `fixtures.py`).

# %%
#| default_exp models.gpt

# %% [markdown]
# ## GPT-2 checkpoints (`tinytorch/models/hf_gpt2.py`)
#
# `transformers` stores GPT-2 as `config.json` + `model.safetensors`. Three
# differences from our state dict: its four projection weights are `Conv1D`,
# stored (in, out) where our `Linear` stores (out, in), so they are transposed;
# checkpoints of the bare `GPT2Model` lack the `transformer.` prefix; and the
# tied `lm_head.weight` is absent (older files also hold the causal mask as the
# buffers `attn.bias` / `attn.masked_bias`, which we skip).

# %%
#| export models.hf_gpt2
"""GPT-2 checkpoints in Hugging Face's layout (config.json + model.safetensors) to and from TinyTorch's names."""
import json
import os

from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from tinytorch.core.serialization import atomic_write

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # the causal mask, stored by older checkpoints


def hf_to_tinytorch(name, array):
    """(TinyTorch name, array) for one GPT-2 checkpoint tensor: `transformer.` prefix, Conv1D transposed."""
    if not name.startswith(("transformer.", "lm_head.")):
        name = "transformer." + name
    return name, (array.T if name.endswith(CONV1D_WEIGHTS) else array)  # Conv1D (in, out) -> Linear (out, in)


def tinytorch_to_hf(name, array):
    """(GPT-2 checkpoint name, array) for one of our state-dict tensors: Linear weights back to (in, out)."""
    return name, (array.T if name.endswith(CONV1D_WEIGHTS) else array)


# HF settings that change the computation, and the values our GPT implements
_ARCHITECTURE_KEYS = {
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
}


def config_from_hf(hf):
    """GPTConfig keyword arguments from a GPT-2 config.json dict (unsupported settings raise)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"expected a GPT-2 checkpoint (model_type 'gpt2'), got model_type {hf['model_type']!r}")
    missing = [key for key in _GPT2_SHAPE_KEYS if key not in hf]
    if missing:
        raise ValueError(f"this GPT-2 config lacks {', '.join(missing)}: the model's shape is unknown")
    unsupported = [f"{key}={hf[key]!r} (supported: {allowed})" for key, allowed in _ARCHITECTURE_KEYS.items()
                   if key in hf and hf[key] not in allowed]
    n_inner = hf.get("n_inner")
    if n_inner is not None and n_inner != 4 * hf["n_embd"]:
        unsupported.append(f"n_inner={n_inner} (supported: 4 * n_embd = {4 * hf['n_embd']})")
    if unsupported:
        raise ValueError("this GPT-2 config uses settings TinyTorch's GPT does not implement: " + "; ".join(unsupported))
    return {"vocab_size": hf["vocab_size"], "block_size": hf["n_positions"], "n_layer": hf["n_layer"],
            "n_head": hf["n_head"], "n_embd": hf["n_embd"], "dropout": hf.get("resid_pdrop", 0.0),
            "layer_norm_eps": hf.get("layer_norm_epsilon", 1e-5), "tie_weights": hf.get("tie_word_embeddings", True)}


def gpt2_incompatibilities(config):
    """What in `config` GPT-2's format cannot express (an empty list when it can be saved as GPT-2)."""
    problems = []
    if config.n_kv_head not in (None, config.n_head):
        problems.append(f"grouped-query attention (n_kv_head={config.n_kv_head})")
    if config.rope:
        problems.append("rotary position embeddings (rope=True)")
    if config.window is not None:
        problems.append(f"sliding-window attention (window={config.window})")
    if not config.bias:
        problems.append("bias=False (GPT-2 has biases everywhere)")
    if config.norm != "layernorm":
        problems.append(f"norm={config.norm!r} (GPT-2 uses LayerNorm)")
    if config.mlp != "gelu":
        problems.append(f"mlp={config.mlp!r} (GPT-2 uses a GELU MLP)")
    return problems


def config_to_hf(config):
    """A GPT-2 config.json dict (as `transformers` writes it) for a GPTConfig."""
    return {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_embd": config.n_embd,
        "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "layer_norm_epsilon": config.layer_norm_eps, "initializer_range": 0.02,
        "attn_pdrop": config.dropout, "embd_pdrop": config.dropout, "resid_pdrop": config.dropout,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "tie_word_embeddings": config.tie_weights, "use_cache": True, "dtype": "float32",
    }


_GPT2_SHAPE_KEYS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")  # config_from_hf needs them


def _read_gpt2_config(config_path):
    """A GPT-2 config.json as a dict; a ValueError naming the file if it is not JSON, or lacks the model's shape."""
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path!r} is not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{config_path!r} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path!r} holds a {type(config).__name__}, not a JSON object: it is not a GPT-2 config")
    try:
        config_from_hf(config)  # its checks, in words that name the file
    except ValueError as err:
        raise ValueError(f"{config_path!r}: {err}") from None
    return config


def read_gpt2_checkpoint(path):
    """(config dict, {name: NumPy array}) from a GPT-2 directory; the causal-mask buffers are dropped."""
    config_path, weights_path = os.path.join(path, "config.json"), os.path.join(path, "model.safetensors")
    for needed in (config_path, weights_path):
        if not os.path.isfile(needed):
            sharded = os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
            hint = " (sharded checkpoints are not supported)" if sharded else ""
            raise FileNotFoundError(f"{path!r} is not a GPT-2 checkpoint directory: {os.path.basename(needed)} "
                                    f"is missing{hint}")
    config = _read_gpt2_config(config_path)
    try:
        arrays = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise RuntimeError(f"cannot read {weights_path!r} as safetensors ({type(err).__name__}: {err})") from None
    tensors = {name: array for name, array in arrays.items() if not name.endswith(MASK_BUFFERS)}
    return config, tensors


def write_gpt2_checkpoint(path, config, tensors):
    """Write `path`/model.safetensors and `path`/config.json, each atomically, weights first.

    The safetensors header carries {"format": "pt"}, which `transformers` requires.
    """
    os.makedirs(path, exist_ok=True)
    atomic_write(os.path.join(path, "model.safetensors"),
                 lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    atomic_write(os.path.join(path, "config.json"), (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())


# %% [markdown]
# ## Sampling checks (`tinytorch/models/sampling.py`)
#
# The arguments of `generate`, checked before any work; the prompt turned
# into a (B, T) int64 array on the host (sampling runs in NumPy: one row of V
# numbers per step); a softmax over NumPy rows for the filters.

# %%
#| export models.sampling
"""Sampling the next token: temperature, top-k and nucleus (top-p) filtering, and the generation loop."""
import numpy as np

from tinytorch.core.autograd import no_grad
from tinytorch.core.backend import _check_whole, default_generator, to_numpy
from tinytorch.core.tensor import Tensor


def _check_sampling(max_new_tokens, temperature, top_k, top_p):
    _check_whole(max_new_tokens, "max_new_tokens", 0)
    _check_filters(temperature, top_k, top_p)


def _check_filters(temperature=1.0, top_k=None, top_p=None, logits=None):
    """ValueError unless temperature >= 0, top_k is a whole number >= 1 and top_p in (0, 1] (None: that filter is off),
    and `logits`, when given, are (B, V): one row of scores per sequence."""
    if logits is not None and np.ndim(logits) != 2:
        raise ValueError(f"logits must be (B, V), one row per sequence, got {np.ndim(logits)} dims "
                         f"{tuple(np.shape(logits))}; for a single row (V,) pass logits[None]")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)) \
            or not temperature >= 0:
        raise ValueError(f"temperature must be a number >= 0 (0 means greedy, 1 samples the model's own "
                         f"distribution), got {temperature!r}")
    if top_k is not None:
        _check_whole(top_k, "top_k", hint="; pass None for no top-k filter")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


def _prompt_array(idx):
    """The prompt as a (B, T) int64 NumPy array (a Tensor, array or nested list; 1-D means B = 1)."""
    tokens = to_numpy(idx.data) if isinstance(idx, Tensor) else np.asarray(idx)
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[1] == 0 or tokens.dtype.kind not in "iu":
        raise ValueError(f"generate needs a prompt of token ids of shape (B, T) with T >= 1, got shape "
                         f"{tokens.shape} and dtype {tokens.dtype.name}")
    return tokens.astype(np.int64)


def _softmax(z):
    """Row-wise softmax of a NumPy array (-inf entries get probability 0).

    A row whose maximum is not finite (a nan, a +inf, or only -inf) is no distribution: ValueError, as
    torch.multinomial refuses it (sampling it would quietly give token 0)."""
    top = z.max(axis=-1, keepdims=True)
    if not np.isfinite(top).all():
        raise ValueError("cannot sample: a row of logits has no finite maximum (it holds nan or +inf, or only -inf); "
                         "check the model's output for nan")
    e = np.exp(z - top)
    return e / e.sum(axis=-1, keepdims=True)


# %% [markdown]
# ## The model's plumbing (`tinytorch/models/gpt.py`)
#
# `GPTConfig` fixes the shape of a model; its defaults are GPT-2 small's.
# `gelu_new` is Hugging Face's name for GPT-2's activation, module 01's tanh GELU.

# %%
#| export
"""GPT (GPT-2's architecture): `GPTConfig`, `MLP`, `Block`, `GPT` with generation and GPT-2 weight interop."""
import dataclasses
import math
from typing import Optional

import numpy as np

from tinytorch.core.autograd import is_grad_enabled
from tinytorch.core.backend import _check_whole, check_later, to_numpy
from tinytorch.core.tensor import Tensor, gelu
from tinytorch.models.hf_gpt2 import (
    config_from_hf, config_to_hf, gpt2_incompatibilities, hf_to_tinytorch, read_gpt2_checkpoint,
    tinytorch_to_hf, write_gpt2_checkpoint,
)
from tinytorch.models.sampling import generate_tokens
from tinytorch.nn.attention import CausalSelfAttention, _check_positions
from tinytorch.nn.functional import cross_entropy, silu
from tinytorch.nn.init import normal_, zeros_
from tinytorch.nn.layers import Dropout, Embedding, LayerNorm, Linear, Module, ModuleDict, ModuleList, RMSNorm
from tinytorch.optim import AdamW
from tinytorch.training.efficiency import flops_per_token


@dataclasses.dataclass
class GPTConfig:
    """The shape of a GPT. Defaults: GPT-2 small (V=50257, T=1024, 12 layers, 12 heads, C=768).

    A Llama-style model: norm="rmsnorm", mlp="swiglu", rope=True, n_kv_head < n_head, bias=False,
    tie_weights=False (see `llama_style`).
    """

    vocab_size: int = 50257
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: Optional[int] = None  # None: as many key/value heads as query heads
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm (GPT-2 has them)
    rope: bool = False  # rotary position embeddings instead of the learned table `wpe`
    window: Optional[int] = None  # sliding-window attention: each token sees the last `window` tokens
    tie_weights: bool = True  # lm_head.weight is transformer.wte.weight
    layer_norm_eps: float = 1e-5
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    mlp: str = "gelu"  # "gelu": GPT-2's 4C GELU MLP; "swiglu": Llama's gated SiLU feed-forward
    rope_interleaved: bool = False  # RoPE pairs features (2i, 2i+1) instead of (i, i + D/2)
    rope_base: float = 10000.0
    checkpoint_blocks: bool = False  # training keeps only each block's input and recomputes it (module 13)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "window"):
            value = getattr(self, name)
            if value is not None or name not in ("n_kv_head", "window"):  # those two may be None
                setattr(self, name, _check_whole(value, f"GPTConfig.{name}"))  # a NumPy integer becomes an int
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        for name, choices in (("norm", ("layernorm", "rmsnorm")), ("mlp", ("gelu", "swiglu"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"GPTConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")

    @classmethod
    def llama_style(cls, **overrides):
        """A config with Llama's choices: RMSNorm, SwiGLU, RoPE, no biases, untied head (GQA: pass n_kv_head)."""
        values = dict(norm="rmsnorm", mlp="swiglu", rope=True, bias=False, tie_weights=False)
        return cls(**{**values, **overrides})

    def to_dict(self):
        """The fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """A config from `to_dict()`'s output; unknown keys are an error (they are usually typos)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"GPTConfig.from_dict: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**values)


def gelu_new(x):
    """GPT-2's activation ("gelu_new" in Hugging Face): module 01's GELU with the tanh approximation."""
    return gelu(x, approximate="tanh")


def swiglu_hidden(n_embd):
    """SwiGLU's hidden width: 2/3 of 4C (three matrices cost what GPT-2's two do), rounded up to a multiple of 8."""
    return 8 * math.ceil(8 * n_embd / 3 / 8)


class SwiGLU(Module):
    """Llama's feed-forward (Shazeer 2020): c_proj(silu(c_gate(x)) * c_fc(x)), then dropout.

    The gate decides, per hidden feature, how much of the linear path c_fc(x) passes.
    Names: c_fc and c_proj as in GPT-2's MLP (c_proj gets the residual init), c_gate new.
    """

    def __init__(self, config):
        super().__init__()
        C, hidden = config.n_embd, swiglu_hidden(config.n_embd)
        self.c_gate = Linear(C, hidden, bias=config.bias)
        self.c_fc = Linear(C, hidden, bias=config.bias)
        self.c_proj = Linear(hidden, C, bias=config.bias)
        self.dropout = Dropout(p=config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(silu(self.c_gate(x)) * self.c_fc(x)))  # (B, T, C)


def _norm_layer(config):
    """The config's normalisation over n_embd: LayerNorm (GPT-2) or RMSNorm (Llama)."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.layer_norm_eps)
    return LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)


def _feed_forward(config):
    """The config's position-wise feed-forward: the lesson's GELU `MLP` or `SwiGLU`."""
    return SwiGLU(config) if config.mlp == "swiglu" else MLP(config)  # noqa: F821  (MLP: the lesson)


# %% [markdown]
# ## The lesson's test fixtures (`tinytorch/models/fixtures.py`)
#
# Two helpers of the lesson's graded tests, in a file of their own: a toy with
# the parameter kinds of a GPT, and a spy on `forward`. The library does not
# use them.

# %%
#| export models.fixtures
"""The test fixtures of module 09's lesson: helpers of its graded tests, not library code."""
from tinytorch.nn.layers import Embedding, LayerNorm, Linear, Module


class _DecayToy(Module):
    """The parameter kinds of a GPT in miniature, for the lesson's test of the weight-decay groups: an embedding
    table tied to a bias-free head, a Linear with its bias, and a LayerNorm."""

    def __init__(self):
        super().__init__()
        self.embed_tokens, self.proj, self.norm = Embedding(10, 4), Linear(4, 4), LayerNorm(4)
        self.head = Linear(4, 10, bias=False)
        self.head.weight = self.embed_tokens.weight  # tied


def _spy_forward(model, seen, modes):
    """For the lesson's test of generation: `model.forward` also records the ids it is fed (in `seen`) and
    the model's training mode (in `modes`). Returns the spy; `del model.forward` removes it."""
    forward = model.forward

    def spy(idx, targets=None, kv_caches=None):
        seen.append(idx.numpy())
        modes.append(model.training)
        return forward(idx, targets, kv_caches)
    model.forward = spy
    return spy


# %% [markdown]
# `_GPTBase` holds what `GPT` does besides building and running the network
# (the lesson writes those two): the checks at the door of `forward`, GPT-2's
# initialisation, counting, the optimizer groups, `generate` (a call to the
# lesson's loop) and the GPT-2 checkpoint methods. `GPT` inherits from it.

# %%
#| export
class _GPTBase(Module):
    """Everything of `GPT` but its layers and its forward pass; see the lesson."""

    def _run_block(self, block, x, kv_cache=None, positions=None):
        """block(x, kv_cache=kv_cache, positions=positions); with `config.checkpoint_blocks`, while
        training without a cache, through module 13's `checkpoint` (the block is run again in backward)."""
        if self.config.checkpoint_blocks and kv_cache is None and is_grad_enabled():
            from tinytorch.utils import checkpoint  # module 13: imported only when asked for
            return checkpoint(lambda h: block(h, positions=positions), x)
        return block(x, kv_cache=kv_cache, positions=positions)

    def _init_weights(self):
        """GPT-2's init: N(0, 0.02²) weights, zero biases, residual projections scaled by 1/√(2·n_layer)."""
        for module in self.modules():
            if isinstance(module, (Linear, Embedding)):
                normal_(module.weight, 0.0, 0.02)
            if isinstance(module, Linear) and module.bias is not None:
                zeros_(module.bias)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):  # they write into the residual stream
                normal_(param, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))

    # --- checks at the door of forward -------------------------------------------------
    def _check_caches(self, kv_caches):
        """How many positions the caches already hold (0 without caches)."""
        if kv_caches is None:
            return 0
        if len(kv_caches) != self.config.n_layer:
            raise ValueError(f"GPT.forward: got {len(kv_caches)} KV caches for {self.config.n_layer} layers; "
                             f"make them with model.new_kv_caches(batch_size)")
        return kv_caches[0].length

    def _check_tokens(self, idx, start):
        """`idx` as a (B, T) integer Tensor on the model's device, with every id and position in range."""
        if not isinstance(idx, Tensor):
            idx = Tensor(np.asarray(idx), device=self.transformer.wte.weight.device)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"GPT expects token ids of shape (B, T) and an integer dtype, got shape "
                             f"{tuple(idx.shape)} and dtype {idx.dtype.name}")
        T, block_size = idx.shape[1], self.config.block_size
        if start + T > block_size:
            cached = f" ({start} cached + {T} new)" if start else ""
            raise ValueError(f"cannot forward a sequence of {start + T} tokens{cached}: the model's block_size "
                             f"is {block_size}; crop the input to its last {block_size} tokens")
        if idx.data.size:  # checked on the device: raises here on cpu, at the next sync on cuda
            ids, vocab_size = idx.data, self.config.vocab_size

            def out_of_range():
                host = to_numpy(ids)
                bad = host.min() if host.min() < 0 else host.max()
                where = tuple(int(i) for i in np.argwhere(host == bad)[0])
                return IndexError(f"token id {bad} at position {where} is out of range for "
                                  f"vocab_size={vocab_size} (valid ids are 0 to {vocab_size - 1})")
            check_later((ids.min() < 0) | (ids.max() >= vocab_size), out_of_range)
        return idx

    def _check_targets(self, targets, idx):
        if targets is None:
            return None
        if not isinstance(targets, Tensor):
            targets = Tensor(np.asarray(targets), device=idx.device)
        if tuple(targets.shape) != tuple(idx.shape):
            raise ValueError(f"GPT.forward: targets of shape {tuple(targets.shape)} must match idx "
                             f"{tuple(idx.shape)} (one next-token id per position, -1 to ignore)")
        return targets

    def _position_ids(self, positions, start, T):
        """Position ids for `wpe`: start .. start+T-1 (T,), or the explicit `positions` checked, (B, T)."""
        if positions is None:
            return np.arange(start, start + T)
        return _check_positions(positions, T, self.config.block_size, self.transformer.wte.weight._device)

    def new_kv_caches(self, batch_size):
        """One empty KVCache per block, each for block_size positions (see module 08)."""
        return [block.attn.new_kv_cache(batch_size) for block in self.transformer.h]

    # --- counting ---------------------------------------------------------------------
    def num_parameters(self, non_embedding=True, trainable_only=False):
        """Parameters, each shared one counted once. non_embedding=True leaves out the lookup tables
        that cost no FLOPs: `wpe`, and `wte` unless it doubles as `lm_head` (tied)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        if non_embedding:
            if "wpe" in self.transformer:  # (a RoPE model has none)
                params.pop(id(self.transformer.wpe.weight), None)
            if not self.config.tie_weights:
                params.pop(id(self.transformer.wte.weight), None)
        return sum(p.numel() for p in params.values())

    def estimate_flops(self, seq_len=None):
        """Training FLOPs per token (forward + backward) at context length seq_len (default block_size):
        6·N for the matmuls with the N non-embedding parameters, plus 12·L·H·Q·T for attention."""
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        return flops_per_token(self.num_parameters(non_embedding=True), c.n_layer, c.n_head * (c.n_embd // c.n_head), T)

    def configure_optimizers(self, weight_decay=0.1, learning_rate=6e-4, betas=(0.9, 0.95), eps=1e-8):
        """AdamW with two groups: weight decay for the matmul weights (>= 2-D), none for biases,
        LayerNorm parameters and embedding tables."""
        groups = _weight_decay_groups(self, weight_decay)  # the lesson's exercise, below in this file
        return AdamW(groups, lr=learning_rate, betas=betas, eps=eps)

    # --- generation -------------------------------------------------------------------
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, stop=None,
                 use_cache=True):
        """Continue idx (B, T) by up to max_new_tokens sampled tokens; returns (B, T + n) int64.

        temperature 0 is greedy; top_k / top_p filter the distribution; `seed` gives a private
        generator (else tinytorch's default one is used); `stop` (an id or ids) ends generation once
        every row has produced one (finished rows repeat it). The KV cache is used while the
        sequence fits block_size; beyond, each step crops to the last block_size tokens and
        recomputes. Runs under no_grad in eval mode (the previous mode is restored).
        """
        return generate_tokens(self, idx, max_new_tokens, temperature, top_k, top_p, seed, stop, use_cache)

    # --- GPT-2 checkpoints --------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, device=None):
        """Load a Hugging Face GPT-2 directory (config.json + model.safetensors); returns a model in eval mode."""
        hf_config, tensors = read_gpt2_checkpoint(path)
        model = cls(GPTConfig(**config_from_hf(hf_config)))
        model.load_gpt2_tensors(tensors, source=str(path))
        if device is not None:
            model.to(device)
        return model.eval()

    def load_gpt2_tensors(self, tensors, source="the checkpoint"):
        """Copy GPT-2-layout arrays (HF names, Conv1D weights as (in, out)) into this model.

        Every missing, unexpected or wrongly shaped tensor is reported in one ValueError.
        """
        own = dict(self.state_dict())
        tied = self.config.tie_weights
        if tied:
            own.pop("lm_head.weight")
        ours, origin, problems = {}, {}, []
        for hf_name, array in tensors.items():
            name, converted = hf_to_tinytorch(hf_name, array)
            if tied and name == "lm_head.weight":
                continue  # a tied checkpoint may store the shared matrix twice
            ours[name], origin[name] = converted, (hf_name, tuple(array.shape))
        for name in own:
            hf_name, hf_array = tinytorch_to_hf(name, own[name].data)
            if name not in ours:
                problems.append(f"missing: {hf_name} {tuple(hf_array.shape)}")
            elif tuple(ours[name].shape) != tuple(own[name].shape):
                problems.append(f"shape mismatch: {origin[name][0]}: checkpoint has {origin[name][1]}, "
                                f"the model needs {tuple(hf_array.shape)}")
        problems += [f"unexpected: {origin[name][0]} {origin[name][1]}" for name in ours if name not in own]
        if problems:
            raise ValueError(f"cannot load {source} into this GPT: {len(problems)} problem(s):\n  "
                             + "\n  ".join(problems))
        if tied:
            ours["lm_head.weight"] = ours["transformer.wte.weight"]
        self.load_state_dict(ours)

    def save_pretrained(self, path):
        """Write `path`/config.json and `path`/model.safetensors in Hugging Face's GPT-2 layout (atomically)."""
        problems = gpt2_incompatibilities(self.config)
        if problems:
            raise ValueError(f"save_pretrained writes GPT-2's format, which has no {', '.join(problems)}; save "
                             f"this model with tinytorch.save(model.state_dict(), path) and config.to_dict()")
        adapted = sorted(name for name, m in self.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base"))
        if adapted:  # module 12's LoRALinear layers
            raise ValueError(f"save_pretrained: GPT-2's format has no place for the LoRA adapters on "
                             f"{', '.join(adapted)}; fold them into plain Linear layers first with "
                             f"tinytorch.finetune.merge_and_unload(model), or save the adapters alone with "
                             f"save_adapters(model, path)")
        tensors = {}
        for name, tensor in self.state_dict().items():
            if name == "lm_head.weight" and self.config.tie_weights:
                continue  # tied: GPT-2 checkpoints store the shared matrix once, as wte
            hf_name, array = tinytorch_to_hf(name, to_numpy(tensor.data))
            tensors[hf_name] = np.ascontiguousarray(array)
        write_gpt2_checkpoint(path, config_to_hf(self.config), tensors)
