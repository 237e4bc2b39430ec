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
# # Module 09 — GPT
#
# Everything is in place: tensors and gradients (01–02), layers and losses
# (03–04), optimizers (05), text and tokenizers (06), a training loop (07) and
# causal attention with a KV cache (08). A GPT is these pieces stacked in a
# particular way, and this module is about that way: *why* each block normalises
# before it computes, *why* every block adds to a residual stream instead of
# replacing it, *why* the output layer can reuse the input embedding, and *why*
# the weights start where they start.
#
# The model we build is GPT-2's, tensor name for tensor name, so that at the end
# it loads a real Hugging Face GPT-2 checkpoint and produces the same logits as
# `transformers` does. On top of it: counting parameters and FLOPs, sampling
# text (temperature, top-k, nucleus), and fast generation with the KV cache.
#
# **You will implement:** `Block.forward`, `GPT.forward` (with the loss),
# `top_k_filter`, `top_p_filter` and `hf_to_tinytorch` (GPT-2's names and
# weight layout). The rest is provided and worth reading.
#
# **Cost to keep in mind:** training costs about 6 FLOPs per parameter per
# token (plus attention's share, which grows with the context); generating
# costs 2 per parameter per token, *if* a KV cache saves recomputing the prefix.
# We count both with the model's own methods and measure them at the end.

# %%
#| default_exp models.gpt

# %% [markdown]
# The model lives in `tinytorch/models/gpt.py`; sampling in
# `tinytorch/models/sampling.py`; reading and writing GPT-2 checkpoints in
# `tinytorch/models/hf_gpt2.py`. The import cells of the three files come
# first; the notebook then redefines every function, so it always runs the code
# you are editing.

# %%
#| export
"""GPT (GPT-2's architecture): `GPTConfig`, `MLP`, `Block`, `GPT` with generation and GPT-2 weight interop."""
import dataclasses
import math
from typing import Optional

import numpy as np

from tinytorch.core.backend import get_xp, to_numpy
from tinytorch.core.tensor import Tensor, _wrap
from tinytorch.models.hf_gpt2 import (
    config_from_hf, config_to_hf, gpt2_incompatibilities, hf_to_tinytorch, read_gpt2_checkpoint,
    tinytorch_to_hf, write_gpt2_checkpoint,
)
from tinytorch.models.sampling import generate_tokens
from tinytorch.nn.attention import CausalSelfAttention
from tinytorch.nn.functional import cross_entropy
from tinytorch.nn.init import normal_, zeros_
from tinytorch.nn.layers import Dropout, Embedding, LayerNorm, Linear, Module, ModuleDict, ModuleList
from tinytorch.optim import AdamW

# %%
#| export models.sampling
"""Sampling the next token: temperature, top-k and nucleus (top-p) filtering, and the generation loop."""
import numpy as np

from tinytorch.core.autograd import no_grad
from tinytorch.core.backend import default_generator, to_numpy
from tinytorch.core.tensor import Tensor

# %%
#| export models.hf_gpt2
"""GPT-2 checkpoints in Hugging Face's layout (config.json + model.safetensors) to and from TinyTorch's names."""
import json
import os
import tempfile

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

# %% [markdown]
# ## 1. The configuration
#
# A GPT is fixed by a handful of numbers: the vocabulary size V, the longest
# context it can see (`block_size`, T_max), the number of blocks L, of heads H
# and the width C = `n_embd`. The options beyond GPT-2 come from module 08:
# `n_kv_head` (grouped-query attention), `rope` (rotary positions instead of a
# learned position table) and `window` (sliding-window attention).
# `tie_weights` makes the output layer share the token embedding (section 3).
#
# The defaults are GPT-2 small's (124 M parameters). `to_dict`/`from_dict` turn
# a config into plain JSON-able data and back, for checkpoints.

# %%
#| export
@dataclasses.dataclass
class GPTConfig:
    """The shape of a GPT. Defaults: GPT-2 small (V=50257, T=1024, 12 layers, 12 heads, C=768)."""

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

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")

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


# %% [markdown]
# ## 2. One block
#
# A GPT block does two things, one after the other, to every position:
# **attention** moves information between positions (module 08), then an
# **MLP** transforms each position on its own: Linear(C, 4C) → GELU →
# Linear(4C, C). The 4× is GPT's choice: two thirds of the block's parameters
# sit in the MLP.
#
# *Why residuals.* Each sub-layer *adds* its output to its input:
# x ← x + attn(·), x ← x + mlp(·). The sum's gradient passes to x unchanged,
# so the gradient of the loss reaches the first block through a path of
# additions, however deep the model. Without it a 12-block stack is a product of
# 24 Jacobians and trains poorly. It also means a block only has to learn a
# *correction*; the running sum x is called the **residual stream**.
#
# *Why pre-LN.* The original Transformer normalised after the addition:
# x ← LN(x + f(x)). GPT-2 moved LayerNorm to the *input* of each sub-layer:
# x ← x + f(LN(x)), plus one final LayerNorm `ln_f` before the output layer.
# Then nothing on the residual path rescales it, the identity path above stays
# an identity, and training is stable without the long learning-rate warm-up
# post-LN needs (Xiong et al., 2020). The price: the residual stream grows with
# depth, which the initialisation (section 3) and `ln_f` account for.
#
# ```
# x ─┬──────────────────────(+)─┬───────────────────(+)──> out
#    └─ ln_1 ─ attn ─ c_proj ─┘ └─ ln_2 ─ c_fc ─ gelu ─ c_proj ─┘
# ```
#
# *The activation.* GPT-2 uses GELU, x·Φ(x), in its tanh approximation
# ("gelu_new" in Hugging Face): 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
# It runs on the largest activation in the model, (B, T, 4C), so we fuse it into
# one op: the forward in a few in-place passes, and its derivative by hand. With
# t = tanh(u), u = √(2/π)·(x + 0.044715·x³):
#
# d/dx = ½(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²).

# %%
#| export
_GELU_A = math.sqrt(2.0 / math.pi)  # u = x (A + B x²)
_GELU_B = 0.044715 * _GELU_A


def gelu_new(x):
    """GPT-2's GELU, 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))), as one op with its derivative."""
    xp = get_xp(x._device)
    d = x.data
    t = d * d
    t *= _GELU_B
    t += _GELU_A
    t *= d  # u = x (A + B x²)
    xp.tanh(t, out=t)
    out = t + 1.0
    out *= d
    out *= 0.5

    def gelu_new_backward(g):
        du = d * d
        du *= 3 * _GELU_B
        du += _GELU_A  # du/dx = A + 3B x²
        grad = t * t
        xp.subtract(1.0, grad, out=grad)
        grad *= du
        grad *= d  # x (1 - t²) du/dx
        grad += t
        grad += 1.0
        grad *= 0.5
        grad *= g
        return (grad,)
    return _wrap(out, x._device, (x,), gelu_new_backward)


class MLP(Module):
    """Position-wise feed-forward: c_fc (C -> 4C), GELU (tanh), c_proj (4C -> C), dropout."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(gelu_new(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


# %% [markdown]
# A quick check that the fused GELU is the function `nn.functional.gelu` computes
# (and has its derivative):

# %%
import tinytorch as tt  # noqa: E402
from tinytorch.nn import functional as F  # noqa: E402

_x = tt.tensor(np.linspace(-5, 5, 41), dtype=tt.float32, requires_grad=True)
gelu_new(_x).sum().backward()
_ours = _x.grad.numpy().copy()
_x.grad = None
F.gelu(_x, approximate="tanh").sum().backward()
print(f"max |gelu_new - F.gelu(tanh)| = {np.abs(gelu_new(_x).numpy() - F.gelu(_x, 'tanh').numpy()).max():.1e}, "
      f"max |derivative difference| = {np.abs(_ours - _x.grad.numpy()).max():.1e}")

# %% [markdown]
# ### Exercise: `Block.forward(x, kv_cache=None)`
# Apply the two pre-LN residual sub-layers drawn above: attention on
# `ln_1(x)` (pass `kv_cache=kv_cache` on to it, for generation), then the MLP on
# `ln_2` of the result, each added to the stream. Shapes stay (B, T, C).

# %% nbgrader={"grade": false, "grade_id": "block-forward", "locked": false, "schema_version": 3, "solution": true}
#| export
class Block(Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(·))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(
            config.n_embd, config.n_head, n_kv_head=config.n_kv_head, rope=config.rope, window=config.window,
            dropout=config.dropout, bias=config.bias, block_size=config.block_size)
        self.ln_2 = LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None):
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-block-forward", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_block_forward():
    tt.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    block = Block(config)
    x = tt.randn(2, 5, 8)
    out = block(x)
    assert out.shape == (2, 5, 8), f"a block keeps the shape (B, T, C) = (2, 5, 8), got {out.shape}"
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp(block.ln_2(h))
    assert np.allclose(out.numpy(), expected.numpy(), atol=1e-6), \
        "expected x + attn(ln_1(x)), then h + mlp(ln_2(h)) (pre-LN: normalise the INPUT of each sub-layer)"
    for layer in (block.attn.c_proj, block.mlp.c_proj):  # both sub-layers output zero ...
        layer.weight.data[...] = 0
        layer.bias.data[...] = 0
    assert np.allclose(block(x).numpy(), x.numpy()), "with zero sub-layer outputs a block is the identity (residuals)"
    ### BEGIN HIDDEN TESTS
    tt.manual_seed(1)
    block = Block(config)
    x = tt.randn(1, 6, 8)
    with tt.no_grad():
        full = block(x).numpy()
        cache = block.attn.new_kv_cache(batch_size=1)
        steps = [block(x[:, :3], kv_cache=cache).numpy()] + [block(x[:, t:t + 1], kv_cache=cache).numpy()
                                                              for t in range(3, 6)]
    assert np.allclose(np.concatenate(steps, axis=1), full, atol=1e-5), "pass kv_cache on to the attention"
    ### END HIDDEN TESTS


test_block_forward()
print("Block.forward: ok")

# %% [markdown]
# ## 3. The whole model
#
# ```
# idx (B, T) ─ wte ─(+ wpe[0..T-1])─ drop ─ h[0] ─ … ─ h[L-1] ─ ln_f ─ lm_head ─> logits (B, T, V)
# ```
#
# - `wte` (V × C) turns each token id into a vector; `wpe` (T_max × C) adds a
#   learned vector per *position* (attention itself does not know the order of
#   its inputs). With `rope=True` there is no `wpe`: the attention rotates
#   queries and keys by their position instead (module 08).
# - The modules sit in a `ModuleDict` called `transformer`, so that the
#   state-dict keys are GPT-2's: `transformer.wte.weight`,
#   `transformer.h.0.attn.c_attn.weight`, …, `lm_head.weight`.
# - `forward(idx, targets)` returns `(logits, loss)` as nanoGPT does: the loss
#   is the mean cross-entropy of predicting `targets[b, t]` (the token after
#   `idx[b, t]`) from `logits[b, t]`; targets equal to -1 are ignored (padding).
#
# *Why weight tying.* `lm_head` maps a vector back to V scores: its rows are one
# vector per token, just like `wte`'s. Using the same matrix for both (Press &
# Wolf, 2017) says "a token's input vector is the direction that predicts it";
# it removes V·C parameters (38.6 M: GPT-2 small would have 163 M, not 124 M) and every update of
# the output layer also trains the embedding of tokens that were *predicted*,
# not only those that were *seen*. `lm_head.weight` is then the very same
# `Parameter` object as `transformer.wte.weight`; autograd adds the two
# gradients into it.
#
# *Why that initialisation* (GPT-2's). Every Linear and Embedding weight starts
# as N(0, 0.02²) and every bias at 0, so each logit starts near 0 and the first
# loss is ≈ ln V: the model is uniformly unsure, which is the right start (check
# below). The projections that write into the residual stream, the two
# `c_proj` per block, get a smaller std, 0.02/√(2L): each block adds two
# independent terms to the stream, so after L blocks its variance has grown by
# 2L terms; scaling each by 1/√(2L) keeps the stream's scale independent of
# depth.
#
# ### Exercise: `GPT.forward(idx, targets=None, kv_caches=None)`
# The checks are done for you (`idx` is a valid (B, T) integer tensor; `start` is
# the number of positions already in the caches, 0 without). Compute:
# 1. token embeddings `wte(idx)`, plus `wpe` at positions `start … start+T-1`
#    (`np.arange`) unless `config.rope`; then the dropout `drop`;
# 2. the blocks in order, block i with `kv_caches[i]` (or None);
# 3. `ln_f`, then `lm_head`: logits (B, T, V);
# 4. the loss, when `targets` is given: `cross_entropy` of `logits.view(-1, V)`
#    against `targets.view(-1)` with `ignore_index=-1`; else None.
# Return `(logits, loss)`.
#
# The class carries more methods than `forward`; sections 4–6 explain them.

# %% nbgrader={"grade": false, "grade_id": "gpt-forward", "locked": false, "schema_version": 3, "solution": true}
#| export
class GPT(Module):
    """GPT-2's decoder-only transformer. forward(idx, targets=None) -> (logits, loss).

    idx: (B, T) int64 token ids, T <= block_size. logits: (B, T, vocab_size). loss: mean
    cross-entropy against targets (B, T) (entries -1 ignored), or None without targets.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        C = config.n_embd
        parts = {"wte": Embedding(config.vocab_size, C)}
        if not config.rope:
            parts["wpe"] = Embedding(config.block_size, C)
        parts["drop"] = Dropout(config.dropout)
        parts["h"] = ModuleList([Block(config) for _ in range(config.n_layer)])
        parts["ln_f"] = LayerNorm(C, eps=config.layer_norm_eps, bias=config.bias)
        self.transformer = ModuleDict(parts)
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one Parameter, two uses
        self._init_weights()

    def _init_weights(self):
        """GPT-2's init: N(0, 0.02²) weights, zero biases, residual projections scaled by 1/√(2·n_layer)."""
        for module in self.modules():
            if isinstance(module, (Linear, Embedding)):
                normal_(module.weight, 0.0, 0.02)
            if isinstance(module, Linear) and module.bias is not None:
                zeros_(module.bias)
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                normal_(param, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))

    # --- checks ---------------------------------------------------------------------
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
        if idx.data.size:
            low, high = int(idx.data.min()), int(idx.data.max())
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                where = tuple(int(i) for i in np.argwhere(to_numpy(idx.data) == bad)[0])
                raise IndexError(f"token id {bad} at position {where} is out of range for "
                                 f"vocab_size={self.config.vocab_size} (valid ids are 0 to "
                                 f"{self.config.vocab_size - 1})")
        return idx

    def _check_targets(self, targets, idx):
        if not isinstance(targets, Tensor):
            targets = Tensor(np.asarray(targets), device=idx.device)
        if tuple(targets.shape) != tuple(idx.shape):
            raise ValueError(f"GPT.forward: targets of shape {tuple(targets.shape)} must match idx "
                             f"{tuple(idx.shape)} (one next-token id per position, -1 to ignore)")
        return targets

    # --- forward --------------------------------------------------------------------
    def forward(self, idx, targets=None, kv_caches=None):
        start = self._check_caches(kv_caches)
        idx = self._check_tokens(idx, start)
        if targets is not None:
            targets = self._check_targets(targets, idx)
        B, T = idx.shape
        ### BEGIN SOLUTION
        x = self.transformer.wte(idx)  # (B, T, C)
        if not self.config.rope:
            x = x + self.transformer.wpe(np.arange(start, start + T))  # (T, C), broadcast over B
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache=None if kv_caches is None else kv_caches[i])
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-1)
        return logits, loss
        ### END SOLUTION

    def new_kv_caches(self, batch_size):
        """One empty KVCache per block, each for block_size positions (see module 08)."""
        return [block.attn.new_kv_cache(batch_size) for block in self.transformer.h]

    # --- counting (section 4) -----------------------------------------------------------
    def num_parameters(self, non_embedding=True, trainable_only=False):
        """Parameters, each shared one counted once. non_embedding=True leaves out the lookup tables
        that cost no FLOPs: `wpe`, and `wte` unless it doubles as `lm_head` (tied)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        if non_embedding:
            params.pop(id(getattr(self.transformer, "wpe", self.transformer.wte).weight), None)
            if not self.config.tie_weights:
                params.pop(id(self.transformer.wte.weight), None)
        return sum(p.numel() for p in params.values())

    def estimate_flops(self, seq_len=None):
        """Training FLOPs per token (forward + backward) at context length seq_len (default block_size):
        6·N for the matmuls with the N non-embedding parameters, plus 12·L·H·Q·T for attention."""
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        return 6 * self.num_parameters(non_embedding=True) + 12 * c.n_layer * c.n_head * (c.n_embd // c.n_head) * T

    def configure_optimizers(self, weight_decay=0.1, learning_rate=6e-4, betas=(0.9, 0.95), eps=1e-8):
        """AdamW with two groups: weight decay for the matmul weights (>= 2-D), none for biases,
        LayerNorm parameters and embedding tables."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, Embedding)}
        decay, no_decay = [], []
        for _, p in self.named_parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 and id(p) not in embeddings else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return AdamW([g for g in groups if g["params"]], lr=learning_rate, betas=betas, eps=eps)

    # --- generation (section 5) ---------------------------------------------------------
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

    # --- GPT-2 checkpoints (section 6) -----------------------------------------------------
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
            if name not in ours:
                problems.append(f"missing: {tinytorch_to_hf(name, own[name].data)[0]} "
                                f"{tuple(tinytorch_to_hf(name, own[name].data)[1].shape)}")
            elif tuple(ours[name].shape) != tuple(own[name].shape):
                hf_name, got = origin[name]
                want = tuple(tinytorch_to_hf(name, own[name].data)[1].shape)
                problems.append(f"shape mismatch: {hf_name}: checkpoint has {got}, the model needs {want}")
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
        tensors = {}
        for name, tensor in self.state_dict().items():
            if name == "lm_head.weight" and self.config.tie_weights:
                continue  # tied: GPT-2 checkpoints store the shared matrix once, as wte
            hf_name, array = tinytorch_to_hf(name, to_numpy(tensor.data))
            tensors[hf_name] = np.ascontiguousarray(array)
        write_gpt2_checkpoint(path, config_to_hf(self.config), tensors)


# %% [markdown]
# A model, its parameter sharing and its state-dict names:

# %%
tt.manual_seed(0)
tiny = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32))
print(tiny.lm_head.weight is tiny.transformer.wte.weight, list(tiny.state_dict())[:6])

# %% nbgrader={"grade": true, "grade_id": "test-gpt-forward", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_gpt_forward():
    tt.manual_seed(0)
    config = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32)
    model = GPT(config)
    idx = tt.tensor(np.random.default_rng(0).integers(0, 65, (3, 10)))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 65), f"logits have shape (B, T, vocab_size) = (3, 10, 65), got {logits.shape}"
    assert loss is None, "without targets the loss is None"
    targets = tt.tensor(np.random.default_rng(1).integers(0, 65, (3, 10)))
    logits, loss = model(idx, targets)
    assert loss is not None and loss.shape == (), f"with targets the loss is a scalar tensor, got {loss}"
    assert abs(loss.item() - math.log(65)) < 0.1, f"at init the loss is about ln(65) = 4.17, got {loss.item():.3f}"
    expected = F.cross_entropy(logits.view(-1, 65), targets.view(-1))
    assert abs(loss.item() - expected.item()) < 1e-5, "loss = cross_entropy(logits.view(-1, V), targets.view(-1))"
    masked = targets.numpy().copy()
    masked[:, :5] = -1
    _, partial = model(idx, tt.tensor(masked))
    only_kept = F.cross_entropy(logits[:, 5:].reshape(-1, 65), targets[:, 5:].reshape(-1))
    assert abs(partial.item() - only_kept.item()) < 1e-5, "targets equal to -1 are ignored (ignore_index=-1)"
    swapped = idx.numpy().copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    later = model(tt.tensor(swapped))[0].numpy()[:, 5]
    assert not np.allclose(later, logits.numpy()[:, 5]), "position embeddings: the order of tokens must matter"
    loss.backward()
    assert model.transformer.wpe.weight.grad is not None, "the loss must reach wpe (add it to the token embeddings)"
    ### BEGIN HIDDEN TESTS
    with tt.no_grad():
        caches = model.new_kv_caches(batch_size=3)
        first = model(idx[:, :6], kv_caches=caches)[0].numpy()
        rest = model(idx[:, 6:], kv_caches=caches)[0].numpy()
    full = model(idx)[0].numpy()
    assert np.allclose(np.concatenate([first, rest], axis=1), full, atol=1e-5), \
        "with caches: positions start at kv_caches[0].length, and block i gets kv_caches[i]"
    ### END HIDDEN TESTS


test_gpt_forward()
print("GPT.forward: ok")

# %% [markdown]
# The errors a user meets first, each naming the problem:

# %%
for bad in (np.zeros((1, 17), np.int64), np.array([[1, 2, 65]])):
    try:
        tiny(bad)
    except (ValueError, IndexError) as err:
        print(f"{type(err).__name__}: {err}")
try:
    GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=3, n_embd=32))
except ValueError as err:
    print(f"ValueError: {err}")

# %% [markdown]
# ## 4. Counting: parameters, FLOPs and what gets weight decay
#
# **Parameters.** Per block, with C = `n_embd`: attention has C·3C + C·C
# weights (q, k, v and the output projection), the MLP C·4C + 4C·C, so
# 12·C² weights per block, plus biases and LayerNorms (≈ 13·C). The whole model:
# ≈ 12·L·C² + V·C (+ T_max·C for `wpe`). For GPT-2 small (L=12, C=768,
# V=50257): 85 M in the blocks + 38.6 M in `wte` + 0.8 M in `wpe` = 124 M.
# `num_parameters(non_embedding=True)` leaves out the tables that cost no
# FLOPs (a lookup is not a matmul): `wpe`, and `wte` unless tied.
#
# **FLOPs per token** (the estimate of Kaplan et al. 2020 and PaLM's appendix B,
# as in nanoGPT). A matmul with an (m × n) weight costs 2·m·n FLOPs per token
# forward (a multiply and an add per weight), and twice that backward (one
# matmul for the input's gradient, one for the weight's): 6 FLOPs per
# parameter per token, 6·N. Attention adds matmuls with *no* parameters:
# Q Kᵀ and P V, each 2·T·Q per head per token forward (T: context length,
# Q: head size), so 4·T·Q forward and 12·T·Q forward+backward, per head and
# layer: 12·L·H·Q·T. Everything else (LayerNorm, GELU, softmax) is
# O(C) per token and left out.

# %%
for name, cfg in (("shakespeare-char", GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128,
                                                 bias=False)),
                  ("tiny", tiny.config)):
    model = GPT(cfg)
    formula = 12 * cfg.n_layer * cfg.n_embd ** 2 + cfg.vocab_size * cfg.n_embd
    print(f"{name:16s} {model.num_parameters(non_embedding=False):8,d} parameters "
          f"(12·L·C² + V·C = {formula:,d}), {model.estimate_flops() / 1e6:.2f} MFLOPs per token to train")

# %% [markdown]
# **Weight decay, and on what.** AdamW shrinks a parameter toward 0 by
# lr·wd·θ each step: a prior that prefers small weights. That makes sense for
# the matmul weights, whose size controls how sharply the model reacts to its
# input. It does not for:
# - **biases** and **LayerNorm's scale and shift**: few numbers, each sets an
#   offset or a scale on purpose (pulling LayerNorm's gain to 0 would fight the
#   normalisation it exists to undo);
# - **embeddings**: a row of `wte` only gets gradient when its token appears;
#   decay would steadily shrink rare tokens' vectors toward 0 between their
#   appearances.
#
# `configure_optimizers` therefore makes two AdamW parameter groups: ≥ 2-D
# weights that are not embedding tables with decay, everything else without.
# With tying, the shared `wte`/`lm_head` matrix is an embedding: no decay.

# %%
optimizer = tiny.configure_optimizers(weight_decay=0.1, learning_rate=1e-3)
for group in optimizer.param_groups:
    print(f"weight_decay={group['weight_decay']}: {len(group['params'])} tensors, "
          f"{sum(p.numel() for p in group['params']):,d} numbers")

# %% [markdown]
# ## 5. Generating text
#
# The model gives, at the last position, V logits z: scores for the next
# token. Turning them into a choice is a design decision:
#
# - **greedy**: take argmax z. Deterministic, and prone to loops ("the the the").
# - **sampling** from p = softmax(z / τ). The **temperature** τ reshapes the
#   distribution: τ < 1 sharpens it (τ → 0 is greedy), τ > 1 flattens it.
# - **top-k**: keep the k largest logits, set the rest to -∞, then sample. Cuts
#   the long tail of individually unlikely but collectively likely nonsense.
# - **top-p (nucleus)**, Holtzman et al. 2019: keep the *smallest* set of most
#   likely tokens whose probabilities add up to at least p. Unlike top-k it
#   adapts: one candidate when the model is sure, many when it is not.
#
# Worked example, z = [2.0, 1.0, 0.5, -1.0]:
#
# | | p(token 0..3) |
# | --- | --- |
# | τ = 1 | 0.609, 0.224, 0.136, 0.030 |
# | τ = 0.5 | 0.842, 0.114, 0.042, 0.002 |
# | τ = 2 | 0.434, 0.263, 0.205, 0.097 |
# | τ = 1, top-k = 2 | 0.731, 0.269, 0, 0 |
# | τ = 1, top-p = 0.9 | cumulative 0.609, 0.834, 0.970: tokens 0, 1, 2 are needed to reach 0.9 → 0.628, 0.231, 0.140, 0 |
#
# Filters work on logits (setting removed ones to -∞), so they compose:
# temperature, then top-k, then top-p, then softmax.
#
# ### Exercise: `top_k_filter(logits, k)` and `top_p_filter(logits, p)`
# Both take a NumPy array (..., V) and return a new one with the removed logits
# set to `-np.inf`.
# - `top_k_filter`: keep every logit ≥ the k-th largest of its row (ties at the
#   boundary are kept). `np.partition(logits, V - k, axis=-1)[..., V - k]` is the
#   k-th largest, without a full sort. k ≥ V keeps everything.
# - `top_p_filter`: sort each row in decreasing order (`np.argsort(-logits,
#   axis=-1, kind="stable")`), take the softmax of the sorted logits and its
#   cumulative sum; keep a token when the probability of the tokens *before* it
#   is < p (so the most likely token is always kept), and map the decision back
#   to the original order (`np.put_along_axis`).

# %% nbgrader={"grade": false, "grade_id": "top-k-filter", "locked": false, "schema_version": 3, "solution": true}
#| export models.sampling
def top_k_filter(logits, k):
    """Logits (..., V) with all but the k largest of each row set to -inf (ties at the k-th kept)."""
    V = logits.shape[-1]
    if k >= V:
        return logits.copy()
    ### BEGIN SOLUTION
    kth = np.partition(logits, V - k, axis=-1)[..., V - k, None]  # (..., 1): the k-th largest
    return np.where(logits < kth, -np.inf, logits)
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "top-p-filter", "locked": false, "schema_version": 3, "solution": true}
#| export models.sampling
def _softmax(z):
    """Row-wise softmax of a NumPy array (-inf entries get probability 0)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_p_filter(logits, p):
    """Logits (..., V) keeping, per row, the fewest most likely tokens whose probability sums to >= p."""
    if p >= 1.0:
        return logits.copy()
    ### BEGIN SOLUTION
    order = np.argsort(-logits, axis=-1, kind="stable")  # most likely first
    probs = _softmax(np.take_along_axis(logits, order, axis=-1))
    before = np.cumsum(probs, axis=-1) - probs  # probability of the tokens ranked above each one
    keep = np.empty(logits.shape, dtype=bool)
    np.put_along_axis(keep, order, before < p, axis=-1)
    return np.where(keep, logits, -np.inf)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-top-k-filter", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_top_k_filter():
    z = np.array([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, -2.0, 1.0]])
    out = top_k_filter(z, 2)
    expected = np.array([[2.0, 1.0, -np.inf, -np.inf], [-np.inf, 3.0, -np.inf, 1.0]])
    assert out.shape == z.shape, f"same shape in and out, got {out.shape}"
    assert np.array_equal(out, expected), f"top-2 of each row, others -inf; expected\n{expected}\ngot\n{out}"
    assert np.array_equal(top_k_filter(z, 1)[1], [-np.inf, 3.0, -np.inf, -np.inf]), "k=1 keeps only the max"
    assert np.array_equal(z[0], [2.0, 1.0, 0.5, -1.0]), "do not modify the input array"
    ties = top_k_filter(np.array([1.0, 5.0, 1.0, 0.0]), 2)
    assert np.array_equal(ties, [1.0, 5.0, 1.0, -np.inf]), f"ties with the k-th largest are kept, got {ties}"
    ### BEGIN HIDDEN TESTS
    assert np.array_equal(top_k_filter(z, 4), z), "k = V keeps everything"
    big = np.random.default_rng(0).standard_normal((3, 50))
    assert (np.isfinite(top_k_filter(big, 7)).sum(axis=-1) == 7).all(), "exactly k kept without ties"
    ### END HIDDEN TESTS


test_top_k_filter()
print("top_k_filter: ok")

# %% nbgrader={"grade": true, "grade_id": "test-top-p-filter", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_top_p_filter():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    out = top_p_filter(z, 0.7)
    assert out.shape == z.shape, f"same shape in and out, got {out.shape}"
    kept = np.isfinite(out)
    assert np.array_equal(kept[0], [True, True, False, False]), \
        f"p=0.7: 0.5 alone is not enough, 0.5+0.3 is; keep tokens 0 and 1, got {kept[0]}"
    assert np.array_equal(kept[1], [False, False, True, True]), f"rows are independent and unsorted: {kept[1]}"
    assert np.allclose(out[kept], z[kept]), "kept logits are unchanged"
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.4))[0], [True, False, False, False]), \
        "p=0.4 < 0.5: the most likely token alone suffices"
    assert np.isfinite(top_p_filter(z, 1e-9)).sum() == 2, "the most likely token is always kept"
    ### BEGIN HIDDEN TESTS
    kept = np.isfinite(top_p_filter(np.log(np.array([0.6, 0.25, 0.1, 0.05])), 0.9))
    assert np.array_equal(kept, [True, True, True, False]), f"0.6+0.25 < 0.9 needs a third: {kept}"
    ### END HIDDEN TESTS


test_top_p_filter()
print("top_p_filter: ok")

# %% [markdown]
# Picking one token from p (provided): draw u uniform in (0, 1] and take the
# first token whose cumulative probability reaches u·Σp (inverse-CDF sampling).
# Filtered tokens have p = 0, a flat step in the cumulative sum, so they are
# never chosen. We sample in float64: it is one (B, V) row per step, and a
# cumulative sum over 50 257 float32 probabilities would lose the tail.

# %%
#| export models.sampling
def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """One token id per row of logits (B, V): greedy when temperature is 0, else sampled after filtering."""
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    cdf = np.cumsum(_softmax(logits), axis=-1)  # (B, V)
    rng = default_generator() if rng is None else rng
    u = 1.0 - rng.random((logits.shape[0], 1))  # in (0, 1]
    return (cdf < u * cdf[:, -1:]).sum(axis=-1)  # first index whose cdf reaches u


# %%
_z = np.array([[2.0, 1.0, 0.5, -1.0]])
_rng = np.random.default_rng(0)
for kwargs in ({"temperature": 1.0}, {"temperature": 0.5}, {"temperature": 1.0, "top_k": 2},
               {"temperature": 1.0, "top_p": 0.9}):
    draws = np.concatenate([sample_next_token(np.repeat(_z, 1000, 0), rng=_rng, **kwargs) for _ in range(10)])
    print(f"{str(kwargs):38s} frequencies {np.bincount(draws, minlength=4) / draws.size}")

# %% [markdown]
# ### The generation loop and the KV cache
#
# Each new token needs the model's output at the last position, which depends
# on every earlier position. Recomputing the whole prefix for every token costs
# O(T) forward work per token, O(T²) for a text. Module 08's KV cache keeps
# every layer's keys and values: after one **prefill** pass over the prompt,
# each step feeds *only the newest token* at position `cache.length`.
#
# The cache holds at most `block_size` positions, and a learned position table
# has no row beyond that. When the text gets longer, we do what nanoGPT does:
# crop the context to its last `block_size` tokens and recompute it without the
# cache. (The tokens then sit at new positions, so the old keys and values are
# no longer valid; a model with RoPE could shift its cache instead, which we do
# not do.) Generation runs in eval mode (no dropout) under `no_grad`.

# %%
#| export models.sampling
def _check_sampling(max_new_tokens, temperature, top_k, top_p):
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
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


def generate_tokens(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, stop=None,
                    use_cache=True):
    """The loop behind `GPT.generate` (see there): prefill once, then one token per step."""
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    tokens = _prompt_array(idx)  # (B, T), on the host
    rng = default_generator() if seed is None else np.random.default_rng(seed)
    stop_ids = np.array([] if stop is None else np.ravel(stop), dtype=np.int64)
    block_size, device = model.config.block_size, model.transformer.wte.weight.device
    caches = model.new_kv_caches(tokens.shape[0]) if use_cache else None
    finished = np.zeros(tokens.shape[0], dtype=bool)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for _ in range(max_new_tokens):
                if caches is not None and tokens.shape[1] <= block_size:
                    fresh = tokens[:, caches[0].length:]  # the whole prompt first, then the newest token
                    logits, _ = model(Tensor(fresh, device=device), kv_caches=caches)
                else:  # longer than block_size: crop and recompute
                    logits, _ = model(Tensor(tokens[:, -block_size:], device=device))
                nxt = sample_next_token(to_numpy(logits.data[:, -1]), temperature, top_k, top_p, rng)  # (B,)
                nxt = np.where(finished, tokens[:, -1], nxt)  # finished rows repeat their stop token
                tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
                finished |= np.isin(nxt, stop_ids)
                if finished.all():
                    break
    finally:
        model.train(was_training)
    return Tensor(tokens, device=device)


# %% [markdown]
# The test that matters: with greedy decoding, the cached loop and the
# recompute-everything loop must choose the same tokens, including past
# `block_size` (where both crop):

# %%
tt.manual_seed(0)
prompt = tt.tensor([[1, 2, 3], [4, 5, 6]])
cached = tiny.generate(prompt, 30, temperature=0)
uncached = tiny.generate(prompt, 30, temperature=0, use_cache=False)
print(f"cached == uncached for 30 greedy tokens (block_size 16): {np.array_equal(cached.numpy(), uncached.numpy())}")
print("same seed, same sample:", np.array_equal(tiny.generate(prompt, 10, top_k=5, seed=3).numpy(),
                                                tiny.generate(prompt, 10, top_k=5, seed=3).numpy()))

# %% [markdown]
# ## 6. Loading GPT-2
#
# Because our module names are GPT-2's, a Hugging Face checkpoint maps onto our
# state dict almost one to one. `save_pretrained` in `transformers` writes a
# directory with `config.json` (the shape, under HF's key names) and
# `model.safetensors`. Three differences remain:
#
# 1. **Conv1D.** GPT-2's original code (TensorFlow) stored its projections as
#    (in, out) matrices and computed x·W; `transformers` kept that as its
#    `Conv1D` layer. Our `Linear` stores (out, in) and computes x·Wᵀ. So the
#    four projection weights, `attn.c_attn`, `attn.c_proj`, `mlp.c_fc` and
#    `mlp.c_proj`, must be **transposed**. Biases, LayerNorms, `wte`, `wpe`
#    and `lm_head` (a real `nn.Linear`) are not.
# 2. **Names.** Checkpoints saved from the bare `GPT2Model` (like the original
#    `gpt2` on the hub) lack the `transformer.` prefix: `h.0.ln_1.weight`.
# 3. **Tying.** `lm_head.weight` is absent: it is `wte`. Older checkpoints
#    also hold `attn.bias` / `attn.masked_bias`, the causal mask as a buffer:
#    we build that mask ourselves and skip them.
#
# The config maps as: `n_positions` → `block_size`, `n_embd`, `n_layer`,
# `n_head`, `vocab_size`, `layer_norm_epsilon` → `layer_norm_eps`,
# `resid_pdrop` → `dropout`, `tie_word_embeddings` → `tie_weights`.
#
# ### Exercise: `hf_to_tinytorch(name, array)`
# Return `(our name, our array)` for one tensor of a GPT-2 checkpoint: add the
# `transformer.` prefix when the name has neither it nor `lm_head.`, and
# transpose (`.T`) the weights whose name ends with one of `CONV1D_WEIGHTS`.

# %% nbgrader={"grade": false, "grade_id": "hf-to-tinytorch", "locked": false, "schema_version": 3, "solution": true}
#| export models.hf_gpt2
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # the causal mask, stored by older checkpoints


def hf_to_tinytorch(name, array):
    """(TinyTorch name, array) for one GPT-2 checkpoint tensor: `transformer.` prefix, Conv1D transposed."""
    ### BEGIN SOLUTION
    if not name.startswith(("transformer.", "lm_head.")):
        name = "transformer." + name
    if name.endswith(CONV1D_WEIGHTS):
        array = array.T  # Conv1D (in, out) -> Linear (out, in)
    return name, array
    ### END SOLUTION


def tinytorch_to_hf(name, array):
    """(GPT-2 checkpoint name, array) for one of our state-dict tensors: Linear weights back to (in, out)."""
    return name, (array.T if name.endswith(CONV1D_WEIGHTS) else array)


# %% nbgrader={"grade": true, "grade_id": "test-hf-to-tinytorch", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_hf_to_tinytorch():
    w = np.arange(12.0).reshape(3, 4)  # a Conv1D weight: 3 inputs, 4 outputs
    name, out = hf_to_tinytorch("transformer.h.0.attn.c_attn.weight", w)
    assert name == "transformer.h.0.attn.c_attn.weight", f"names are already ours, got {name!r}"
    assert out.shape == (4, 3) and np.array_equal(out, w.T), f"Conv1D (in, out) -> Linear (out, in), got {out.shape}"
    name, out = hf_to_tinytorch("h.3.mlp.c_proj.weight", w)
    assert name == "transformer.h.3.mlp.c_proj.weight", f"add the 'transformer.' prefix, got {name!r}"
    assert np.array_equal(out, w.T), "mlp.c_proj.weight is a Conv1D weight too"
    for plain in ("transformer.wte.weight", "transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.bias",
                  "lm_head.weight"):
        name, out = hf_to_tinytorch(plain, w)
        assert name == plain and out.shape == w.shape and np.array_equal(out, w), \
            f"{plain} keeps its name and layout, got {name!r} {out.shape}"
    ### BEGIN HIDDEN TESTS
    assert hf_to_tinytorch("wpe.weight", w)[0] == "transformer.wpe.weight"
    assert hf_to_tinytorch("h.0.mlp.c_fc.weight", w)[1].shape == (4, 3)
    ### END HIDDEN TESTS


test_hf_to_tinytorch()
print("hf_to_tinytorch: ok")

# %% [markdown]
# The rest of the plumbing (provided): the config in both directions, reading
# a checkpoint directory, and writing one atomically: each file goes to a
# temporary name first and is renamed into place, so a crash leaves the old file
# or the new one, never half of one. The safetensors header carries
# `{"format": "pt"}`, which `transformers` requires.

# %%
#| export models.hf_gpt2
_ARCHITECTURE_KEYS = {  # HF settings that change the computation, and the values our GPT implements
    "activation_function": ("gelu_new", "gelu_pytorch_tanh"),
    "scale_attn_weights": (True,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "add_cross_attention": (False,),
}


def config_from_hf(hf):
    """GPTConfig keyword arguments from a GPT-2 config.json dict (unsupported settings raise)."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"expected a GPT-2 checkpoint (model_type 'gpt2'), got model_type {hf['model_type']!r}")
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


def read_gpt2_checkpoint(path):
    """(config dict, {name: NumPy array}) from a GPT-2 directory; the causal-mask buffers are dropped."""
    config_path, weights_path = os.path.join(path, "config.json"), os.path.join(path, "model.safetensors")
    for needed in (config_path, weights_path):
        if not os.path.isfile(needed):
            sharded = os.path.isfile(os.path.join(path, "model.safetensors.index.json"))
            hint = " (sharded checkpoints are not supported)" if sharded else ""
            raise FileNotFoundError(f"{path!r} is not a GPT-2 checkpoint directory: {os.path.basename(needed)} "
                                    f"is missing{hint}")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    try:
        arrays = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as err:
        raise RuntimeError(f"cannot read {weights_path!r} as safetensors ({type(err).__name__}: {err})") from None
    tensors = {name: array for name, array in arrays.items() if not name.endswith(MASK_BUFFERS)}
    return config, tensors


def _replace_atomically(path, write):
    """Call write(tmp) on a temporary file beside `path`, then rename it to `path`."""
    handle, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=f".{os.path.basename(path)}.")
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_gpt2_checkpoint(path, config, tensors):
    """Write `path`/model.safetensors and `path`/config.json (each atomically; weights first)."""
    os.makedirs(path, exist_ok=True)

    def write_config(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
    _replace_atomically(os.path.join(path, "model.safetensors"),
                        lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    _replace_atomically(os.path.join(path, "config.json"), write_config)


# %% [markdown]
# A round trip through the format, and the error for a checkpoint that does
# not fit (one message listing every problem):

# %%
import os  # noqa: E402
import tempfile  # noqa: E402

with tempfile.TemporaryDirectory() as folder:
    tiny.save_pretrained(folder)
    again = GPT.from_pretrained(folder)
    same = np.array_equal(again(prompt)[0].numpy(), tiny.eval()(prompt)[0].numpy())
    print(f"files: {sorted(os.listdir(folder))}, same logits after the round trip: {same}")
    wider = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=48))
    try:
        wider.load_gpt2_tensors(read_gpt2_checkpoint(folder)[1])
    except ValueError as err:
        print(str(err)[:400], "...")

# %% [markdown]
# `tests/parity/test_gpt2_parity.py` builds a GPT-2 with `transformers`, loads
# it here and checks that the logits agree to 1e-4 and greedy generations token
# for token (and the same after our `save_pretrained` → their
# `from_pretrained`). The real 124 M GPT-2 loads the same way, from a directory
# downloaded once: `GPT.from_pretrained("path/to/gpt2")`.
#
# ## 7. Training a small GPT
#
# Everything together, on the King James Bible text that module 06 ships
# (character level, the first 200 000 characters, 64-character context). 150
# AdamW steps of a 0.1 M-parameter model take a few seconds, and already turn noise into
# word-shaped text. `tito train gpt` runs the same recipe for longer, on larger
# models.

# %%
import time  # noqa: E402

from tinytorch.data import CharTokenizer, TextDataset, kjv_text  # noqa: E402

text = kjv_text()[:200_000]
tokenizer = CharTokenizer(text)
data = TextDataset(text, tokenizer, block_size=64)
tt.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64))
print(f"vocabulary {tokenizer.vocab_size} characters, {model.num_parameters(non_embedding=False):,d} parameters")
optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=3e-3, betas=(0.9, 0.99))
batch_rng = np.random.default_rng(0)
start = time.perf_counter()
for step in range(151):
    x, y = data.gather(batch_rng.integers(0, len(data), 16))
    _, loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    if step % 50 == 0:
        print(f"step {step:3d}: loss {loss.item():.3f}")
print(f"{(time.perf_counter() - start) / 151 * 1e3:.1f} ms per step")
sample = model.generate(tt.tensor([tokenizer.encode("And God said")]), 80, temperature=0.8, top_k=10, seed=0)
print(repr(tokenizer.decode(sample.numpy()[0])))

# %% [markdown]
# ## 8. What it costs
#
# **Training.** One step of the nanoGPT CPU Shakespeare config (L=4, H=4,
# C=128, T=64, batch 12, no biases), with the FLOPs it needs by section 4's
# estimate. For comparison, when this module was written, the same step took
# 72–75 ms here and 64–69 ms in PyTorch 2.13 (CPU, one thread each, same
# model and optimizer): most of the time is the matmuls of `linear` and its
# backward, as in PyTorch.

# %%
tt.manual_seed(0)
config = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False)
model = GPT(config)
optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3)
x = tt.tensor(np.random.default_rng(0).integers(0, 65, (12, 64)))


def train_step():
    _, loss = model(x, x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


train_step()
start = time.perf_counter()
for _ in range(5):
    train_step()
seconds = (time.perf_counter() - start) / 5
flops = model.estimate_flops() * 12 * 64
print(f"{seconds * 1e3:.1f} ms per step, {flops / 1e9:.2f} GFLOPs per step -> {flops / seconds / 1e9:.1f} GFLOP/s")

# %% [markdown]
# **The fused activation.** On the MLP's hidden activation of this model,
# (12, 64, 512), forward and backward:

# %%
h = tt.randn(12, 64, 512, requires_grad=True)
for name, fn in (("gelu_new (fused)", gelu_new), ("F.gelu(approximate='tanh')", lambda t: F.gelu(t, "tanh"))):
    start = time.perf_counter()
    for _ in range(3):
        fn(h).sum().backward()
    print(f"{name:28s} {(time.perf_counter() - start) / 3 * 1e3:6.2f} ms")

# %% [markdown]
# **Generation with and without the KV cache**, greedy, 96 new tokens after an
# 8-token prompt, with the same model shape but block_size 128 (so that the
# whole text fits and the cache is used for every step):

# %%
tt.manual_seed(0)
model = GPT(GPTConfig(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128, bias=False))
prompt = tt.tensor(np.random.default_rng(1).integers(0, 65, (1, 8)))
rates = {}
for use_cache in (True, False):
    start = time.perf_counter()
    out = model.generate(prompt, 96, temperature=0, use_cache=use_cache)
    rates[use_cache] = 96 / (time.perf_counter() - start)
    print(f"use_cache={use_cache!s:5s}: {rates[use_cache]:6.0f} tokens/s")
print(f"the cache is {rates[True] / rates[False]:.1f}x faster here; the gap grows with the length generated")

# %% [markdown]
# Without the cache, step t runs the model over t tokens: the work per token
# grows linearly and the total quadratically. With it, every step is one
# token's worth of matmuls (plus attention over the t cached keys), so
# generation runs at a constant rate up to `block_size`.
#
# **Next:** module 10 runs the same model on a GPU, and module 12 fine-tunes a
# loaded GPT-2 with LoRA.
