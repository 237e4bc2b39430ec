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
# Every piece is in place: tensors and gradients (01–02), layers and losses
# (03–04), optimizers (05), tokenizers (06), a training loop (07) and causal
# attention with a KV cache (08). A GPT is those pieces stacked in one
# particular way. This module is about that way: *why* each block normalises its
# input before it computes, *why* every block adds to a running sum instead of
# replacing it, *why* the output layer can reuse the input embedding, and how a
# model that scores the next token becomes one that writes text.
#
# We build GPT-2's architecture, tensor name for tensor name, so that the model
# loads a real Hugging Face GPT-2 checkpoint and produces the logits
# `transformers` produces (`tests/parity/test_gpt2_parity.py` checks it).
#
# **You will write:** the `MLP`, the transformer `Block`, the `GPT` (its layers
# and its forward pass with the loss), the optimizer's weight-decay groups, the
# sampling filters `top_k_filter` and `top_p_filter`, `sample_next_token`
# (temperature and the draw), and `generate_tokens`, the autoregressive loop
# with the KV cache.
#
# **What it costs:** training takes about 6 FLOPs per parameter per token, plus
# attention's share, which grows with the context. Generating takes about 2 per
# parameter per token, *if* a KV cache saves recomputing the prefix; without
# it, the cost of each new token grows with the text already written.

# %%
#| default_exp models.gpt

# %% [markdown]
# The model goes to `tinytorch/models/gpt.py` and sampling to
# `tinytorch/models/sampling.py`. The companion `provided.py` exports first:
# `GPTConfig`, `gelu_new` (module 01's tanh GELU under GPT-2's name), the base
# class `_GPTBase` of `GPT` (input checks, initialisation, counting,
# `configure_optimizers`, `generate`, the GPT-2 checkpoint methods), and for
# sampling the argument checks `_check_sampling` and `_check_filters`,
# `_prompt_array` and a NumPy `_softmax`; and two fixtures of
# the graded tests (`tinytorch/models/fixtures.py`). The cell below imports
# them with the layers this lesson builds on.

# %%
import math
import time

import numpy as np

import tinytorch as tt
from tinytorch.core.autograd import no_grad
from tinytorch.core.backend import default_generator, to_numpy
from tinytorch.core.tensor import Tensor
from tinytorch.models.fixtures import _DecayToy, _spy_forward
from tinytorch.models.gpt import GPTConfig, _GPTBase, _feed_forward, _norm_layer, gelu_new
from tinytorch.models.sampling import _check_filters, _check_sampling, _prompt_array, _softmax
from tinytorch.nn import functional as F
from tinytorch.nn.attention import CausalSelfAttention, rope_tables
from tinytorch.nn.functional import cross_entropy
from tinytorch.nn.layers import Dropout, Embedding, Linear, Module, ModuleDict, ModuleList, RMSNorm

# %% [markdown]
# ## 1. The shape of a GPT
#
# A handful of numbers fix a GPT: the vocabulary size V, the longest context it
# sees (`block_size`, T_max), the number of blocks L (`n_layer`), of attention
# heads H (`n_head`) and the width C (`n_embd`) of the vector that stands for a
# token. `GPTConfig` holds them; its defaults are GPT-2 small's (V = 50257,
# T_max = 1024, L = 12, H = 12, C = 768: 124 M parameters). Module 08's options
# come along: `n_kv_head` (grouped-query attention), `rope` (rotary positions
# instead of a learned position table) and `window` (sliding-window attention).
# `bias` switches the biases of every Linear and LayerNorm, `tie_weights`
# shares the output layer with the token embedding (section 4).
#
# ## 2. The MLP: thinking about one position
#
# A block does two things to every position. **Attention** moves information
# *between* positions (module 08). The **MLP** then transforms each position
# *on its own*, the same function at every t: a Linear layer C → 4C, a
# nonlinearity, a Linear layer 4C → C, dropout. Attention chooses what to look
# at; the MLP is where most of the computing happens: with the 4× width, it
# holds two thirds of a block's weights (8C² of 12C²).
#
# The nonlinearity is GELU, x·Φ(x) with Φ the normal CDF, in the tanh
# approximation GPT-2 was trained with, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
# Module 01 wrote it as one op with its derivative; `gelu_new` is that op.
#
# Worked example, C = 2, one position x = (1, −1): `c_fc` maps it to 8
# numbers, GELU keeps the positive ones almost as they are and squashes the
# negative ones toward 0 (GELU(−1) = −0.159, GELU(1) = 0.841), `c_proj` maps
# the 8 back to 2. A (B, T, C) input gives a (B, T, C) output: Linear acts on
# the last axis, so every (b, t) is transformed alike.
#
# ### Exercise: `MLP`
# In `__init__`, make the three sub-modules under GPT-2's names (the
# checkpoint's tensor names depend on them): `c_fc`, `c_proj` and `dropout`.
# In `forward`, chain them.
#
# - Hint 1: two Linear layers, widths C → 4C → C, with biases when
#   `config.bias`; a Dropout with `config.dropout`.
# - Hint 2: out = dropout(c_proj(gelu_new(c_fc(x)))).
# - Hint 3: shapes (B, T, C) → (B, T, 4C) → (B, T, 4C) → (B, T, C).

# %% nbgrader={"grade": false, "grade_id": "mlp", "locked": false, "schema_version": 3, "solution": true}
#| export
class MLP(Module):
    """Position-wise feed-forward: c_fc (C -> 4C), GELU (tanh), c_proj (4C -> C), dropout."""

    def __init__(self, config):
        super().__init__()
        ### BEGIN SOLUTION
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)
        ### END SOLUTION

    def forward(self, x):
        ### BEGIN SOLUTION
        hidden = gelu_new(self.c_fc(x))  # (B, T, 4C)
        return self.dropout(self.c_proj(hidden))  # (B, T, C)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-mlp", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_mlp():
    tt.manual_seed(0)
    mlp = MLP(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=6))
    shapes = {name: tuple(p.shape) for name, p in mlp.state_dict().items()}
    assert shapes == {"c_fc.weight": (24, 6), "c_fc.bias": (24,), "c_proj.weight": (6, 24), "c_proj.bias": (6,)}, \
        f"expected c_fc (24, 6) and c_proj (6, 24) with biases, got {shapes}"
    x = tt.randn(2, 3, 6)
    out = mlp(x)
    assert out.shape == (2, 3, 6), f"the MLP keeps the shape (B, T, C) = (2, 3, 6), got {out.shape}"
    expected = mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh"))
    assert np.allclose(out.numpy(), expected.numpy(), atol=1e-5), "expected c_proj(gelu_tanh(c_fc(x)))"
    no_bias = MLP(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=6, bias=False))
    assert sorted(no_bias.state_dict()) == ["c_fc.weight", "c_proj.weight"], "bias=False: Linear layers without bias"
    ### BEGIN HIDDEN TESTS
    drop = MLP(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=6, dropout=0.5))
    share = (drop(tt.ones(4, 8, 6)).numpy() == 0).mean()
    assert 0.35 < share < 0.65, f"dropout=0.5: Dropout(config.dropout) zeroes about half the outputs, got {share:.0%}"
    ### END HIDDEN TESTS


test_mlp()
print("MLP: ok")

# %% [markdown]
# ## 3. The block: residual stream and pre-LayerNorm
#
# *Why residuals.* Each sub-layer *adds* its output to its input:
# x ← x + attn(·), then x ← x + mlp(·). The derivative of a sum with respect
# to x contains the identity, so the gradient of the loss reaches the first
# block through a path of additions, however deep the stack. Without it, a
# 12-block model is a product of 24 Jacobians and trains poorly. It also means a
# block learns a *correction* to what is there. The running sum is called the
# **residual stream**: every block reads from it and writes into it.
#
# *Why pre-LN.* The original Transformer normalised after the addition,
# x ← LN(x + f(x)). GPT-2 moved LayerNorm to the *input* of each sub-layer,
# x ← x + f(LN(x)), and added a final LayerNorm `ln_f` after the last block.
# Then nothing on the residual path rescales it: the identity path stays an
# identity, and training is stable without the long learning-rate warm-up that
# post-LN needs (Xiong et al., 2020). The price is a stream whose scale grows
# with depth, which the initialisation (section 4) and `ln_f` handle.
#
# ```
# x ─┬──────────────────────────(+)─┬───────────────────────────(+)──> out
#    └─ ln_1 ─ attn (08) ─────────┘ └─ ln_2 ─ mlp ────────────────┘
# ```
#
# Worked example: if both sub-layers output zero (say their last projections
# are all zeros), the block returns x unchanged. A fresh GPT is close to that
# case, a stack of near-identities, which is one reason deep ones start training
# at all.
#
# ### Exercise: `Block`
# In `__init__`, build `ln_1`, `attn`, `ln_2` and `mlp`. The attention is
# module 08's `CausalSelfAttention`, which takes the width and head count and,
# as keywords, everything the config says about attention: `n_kv_head`,
# `rope`, `window`, `dropout`, `bias`, `block_size`, `rope_base` and
# `rope_interleaved`. The two norms come from the provided `_norm_layer(config)`
# (your LayerNorm with `eps=config.layer_norm_eps` and `bias=config.bias`, or
# an `RMSNorm` for a Llama-style config) and the MLP from `_feed_forward(config)`
# (your `MLP`, or the provided `SwiGLU`). In `forward`, apply the two residual
# sub-layers, passing `kv_cache` and `positions` on to the attention
# (generation uses the cache, section 6; explicit positions serve left-padded
# batches).
#
# - Hint 1: normalise the *input* of each sub-layer, never the stream itself.
# - Hint 2: h = x + attn(ln_1(x)); out = h + mlp(ln_2(h)).
# - Hint 3: two lines in `forward`, each (B, T, C) → (B, T, C); the first one
#   hands `kv_cache=kv_cache` and `positions=positions` to `self.attn`.

# %% nbgrader={"grade": false, "grade_id": "block", "locked": false, "schema_version": 3, "solution": true}
#| export
class Block(Module):
    """A pre-LayerNorm transformer block: x + attn(ln_1(x)), then + mlp(ln_2(·))."""

    def __init__(self, config):
        super().__init__()
        ### BEGIN SOLUTION
        C = config.n_embd
        self.ln_1 = _norm_layer(config)
        self.attn = CausalSelfAttention(
            C, config.n_head, n_kv_head=config.n_kv_head, rope=config.rope, window=config.window,
            dropout=config.dropout, bias=config.bias, block_size=config.block_size,
            rope_base=config.rope_base, rope_interleaved=config.rope_interleaved)
        self.ln_2 = _norm_layer(config)
        self.mlp = _feed_forward(config)
        ### END SOLUTION

    def forward(self, x, kv_cache=None, positions=None):
        ### BEGIN SOLUTION
        x = x + self.attn(self.ln_1(x), kv_cache=kv_cache, positions=positions)  # (B, T, C)
        return x + self.mlp(self.ln_2(x))  # (B, T, C)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-block", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_block():
    tt.manual_seed(0)
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    block = Block(config)
    names = set(block.state_dict())
    assert {"ln_1.weight", "attn.c_attn.weight", "ln_2.bias", "mlp.c_fc.weight"} <= names, \
        f"a block holds ln_1, attn, ln_2 and mlp (GPT-2's names), got {sorted(names)}"
    x = tt.randn(2, 5, 8)
    out = block(x)
    assert out.shape == (2, 5, 8), f"a block keeps the shape (B, T, C) = (2, 5, 8), got {out.shape}"
    h = x + block.attn(block.ln_1(x))
    expected = h + block.mlp(block.ln_2(h))
    assert np.allclose(out.numpy(), expected.numpy(), atol=1e-6), \
        "expected x + attn(ln_1(x)), then h + mlp(ln_2(h)) (pre-LN: normalise the INPUT of each sub-layer)"
    for layer in (block.attn.c_proj, block.mlp.c_proj):  # both sub-layers now output zero ...
        layer.weight.data[...] = 0
        layer.bias.data[...] = 0
    assert np.allclose(block(x).numpy(), x.numpy()), "with zero sub-layer outputs a block is the identity (residuals)"
    assert block.ln_1 is not block.ln_2, "ln_1 and ln_2 must be two norm layers, each with its own weights"
    cfg = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, rope=True, rope_base=5e5, window=3,
                    bias=False, dropout=0.3)
    odd = Block(cfg)
    assert odd.attn.window == 3, f"pass config.window on to attn: expected window 3, got {odd.attn.window}"
    assert np.allclose(odd.attn.rope_cos.numpy(), rope_tables(8, 4, base=5e5)[0].numpy()), \
        "pass config.rope_base on to attn: rope_base=5e5 must give rope_tables(8, 4, base=5e5), got other tables"
    biases = [name for name in odd.state_dict() if name.endswith("bias")]
    assert not biases, f"bias=False: pass config.bias on, so that no layer has a bias; got {biases}"
    rope = Block(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=4, n_kv_head=2, n_embd=8, rope=True,
                           rope_interleaved=True))
    got = (odd.attn.dropout, rope.attn.rope_interleaved)
    assert got == (0.3, True), f"pass config.dropout and config.rope_interleaved on to attn: expected (0.3, True), got {got}"
    assert rope.attn.c_attn.weight.shape == (16, 8), "pass n_kv_head on: 4 query heads + 2 (k, v) heads of size 2"
    llama = GPTConfig.llama_style(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    got = [type(m).__name__ for m in (Block(llama).ln_1, Block(llama).ln_2, Block(llama).mlp)]
    assert got == ["RMSNorm", "RMSNorm", "SwiGLU"], f"a Llama-style config: norms from _norm_layer(config) and " \
        f"the MLP from _feed_forward(config) give RMSNorm, RMSNorm, SwiGLU; got {got}"
    x3 = tt.randn(1, 3, 8)
    moved = rope(x3, positions=np.array([[0, 1, 5]])).numpy() - rope(x3).numpy()
    assert np.abs(moved[0, -1]).max() > 1e-3, "pass positions on to attn: with RoPE, moving the last token " \
        "from position 2 to 5 must change its output, but the block gave the same"
    ### BEGIN HIDDEN TESTS
    block, before = Block(config), x.numpy().copy()
    with tt.no_grad():
        block(x)
        assert np.array_equal(x.numpy(), before), "block(x) must not change x: write x = x + …, not x += … (x changed)"
        cache = block.attn.new_kv_cache(batch_size=2)
        steps = [block(x[:, :3], kv_cache=cache).numpy(), block(x[:, 3:], kv_cache=cache).numpy()]
        assert np.allclose(np.concatenate(steps, axis=1), block(x).numpy(), atol=1e-5), "pass kv_cache on to attn"
    ### END HIDDEN TESTS


test_block()
print("Block: ok")

# %% [markdown]
# ## 4. The whole model
#
# ```
# idx (B, T) ─ wte ─(+ wpe[start … start+T−1])─ drop ─ h[0] ─ … ─ h[L−1] ─ ln_f ─ lm_head ─> logits (B, T, V)
# ```
#
# - `wte` (V × C) turns each token id into a vector; `wpe` (T_max × C) adds one
#   learned vector per *position*, because attention by itself does not know the
#   order of its inputs. With `rope=True` there is no `wpe`: the attention
#   rotates queries and keys by their position instead (module 08).
# - Generation with a KV cache feeds the model a few tokens at a time; the
#   first of them sits at position `start`, the number already cached.
# - The modules sit in a `ModuleDict` called `transformer`, so that the
#   state-dict names are GPT-2's: `transformer.wte.weight`,
#   `transformer.h.0.attn.c_attn.weight`, …, `lm_head.weight`.
# - `forward(idx, targets)` returns `(logits, loss)`, as nanoGPT does. The loss
#   is the mean cross-entropy of predicting `targets[b, t]` (the token after
#   `idx[b, t]`) from `logits[b, t]`; targets equal to −1 are padding, ignored.
#
# *Why weight tying.* `lm_head` maps a vector back to V scores: its rows are one
# vector per token, like `wte`'s. Using one matrix for both (Press & Wolf, 2017)
# says "a token's input vector is the direction that predicts it". It saves V·C
# parameters (38.6 M: GPT-2 small would have 163 M, not 124 M), and every update
# of the output layer also trains the embedding of tokens that were
# *predicted*, not only of those that were *seen*. `lm_head.weight` becomes the
# very same `Parameter` object as `transformer.wte.weight`; autograd adds the
# two uses' gradients into it.
#
# *Why that initialisation* (provided: `_init_weights`, GPT-2's). Every Linear
# and Embedding weight starts as N(0, 0.02²) and every bias at 0, so each logit
# starts near 0 and the first loss is ≈ ln V: the model is uniformly unsure,
# the right start (the test checks it). The two `c_proj` of each block write
# into the residual stream and start with std 0.02/√(2L): L blocks add 2L
# independent terms to the stream, and scaling each by 1/√(2L) keeps its variance
# independent of depth.
#
# Worked example, V = 65, T_max = 16, L = 2, C = 32: `wte` is 65 × 32, `wpe`
# 16 × 32; a batch idx of shape (3, 10) becomes x (3, 10, 32), stays (3, 10, 32)
# through both blocks and `ln_f`, and leaves as logits (3, 10, 65). With
# targets, the loss compares 30 rows of 65 logits with 30 ids: at
# initialisation about ln 65 = 4.17.
#
# ### Exercise: `GPT.__init__` and `GPT.forward`
# In `__init__`, build `self.transformer` (a `ModuleDict` of `wte`, `wpe` unless
# `config.rope`, `drop`, `h` and `ln_f`) and `self.lm_head` (a Linear C → V
# without bias), and tie the two when `config.tie_weights`. The cell calls the
# provided `_init_weights` after your code.
#
# In `forward`, the checks are done for you: `idx` is a valid (B, T) integer
# tensor, `targets` None or the same shape, `start` the number of positions
# already in the caches (0 without), and `pos` the position ids: `start …
# start+T−1`, or the caller's explicit `positions` (B, T). Then: embeddings,
# dropout, the blocks in order (block i with `kv_caches[i]`, or None, and the
# `positions`, run through the provided `self._run_block(block, x, kv_cache,
# positions)`, which calls the block, or recomputes it in the backward pass
# when `config.checkpoint_blocks` asks for module 13's activation
# checkpointing), `ln_f` (whichever norm `_norm_layer` made), `lm_head`, and
# the loss when there are targets. Return `(logits, loss)`.
#
# - Hint 1: the position ids are in `pos`; an `Embedding` accepts a NumPy
#   array of ids. Tying assigns one `Parameter` to two places.
# - Hint 2: x = drop(wte(idx) + wpe(pos)); logits = lm_head(ln_f(h_L(…h_1(x)))).
#   loss = cross_entropy over B·T rows with `ignore_index=-1`.
# - Hint 3: `wpe(pos)` is (T, C), which broadcasts over (B, T, C), or (B, T, C);
#   flatten logits to (B·T, V) with `.view(-1, V)` and targets to (B·T,).

# %% nbgrader={"grade": false, "grade_id": "gpt", "locked": false, "schema_version": 3, "solution": true}
#| export
class GPT(_GPTBase):
    """GPT-2's decoder-only transformer. forward(idx, targets=None) -> (logits, loss).

    idx: (B, T) int64 token ids, T <= block_size. logits: (B, T, vocab_size). loss: mean
    cross-entropy against targets (B, T) (entries -1 ignored), or None without targets.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        ### BEGIN SOLUTION
        C = config.n_embd
        parts = {"wte": Embedding(config.vocab_size, C)}
        if not config.rope:
            parts["wpe"] = Embedding(config.block_size, C)
        parts["drop"] = Dropout(config.dropout)
        parts["h"] = ModuleList([Block(config) for _ in range(config.n_layer)])
        parts["ln_f"] = _norm_layer(config)
        self.transformer = ModuleDict(parts)
        self.lm_head = Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one Parameter, two uses
        ### END SOLUTION
        self._init_weights()

    def forward(self, idx, targets=None, kv_caches=None, positions=None):
        start = self._check_caches(kv_caches)
        idx = self._check_tokens(idx, start)
        targets = self._check_targets(targets, idx)
        pos = self._position_ids(positions, start, idx.shape[1])  # (T,) or explicit (B, T)
        ### BEGIN SOLUTION
        B, T = idx.shape
        x = self.transformer.wte(idx)  # (B, T, C)
        if not self.config.rope:
            x = x + self.transformer.wpe(pos)  # (T, C) broadcast over B, or (B, T, C)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            x = self._run_block(block, x, None if kv_caches is None else kv_caches[i], positions)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-1)
        return logits, loss
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-gpt", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_gpt():
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32))
    names = set(model.state_dict())
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.mlp.c_fc.weight",
            "transformer.ln_f.weight", "lm_head.weight"} <= names, f"GPT-2's names expected, got {sorted(names)}"
    outside = {name for name in names if ".h." not in name}
    assert outside == {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
                       "transformer.ln_f.bias", "lm_head.weight"}, \
        f"outside the blocks: wte, wpe, ln_f and an lm_head without bias, got {sorted(outside)}"
    assert model.transformer.wpe.weight.shape == (16, 32), \
        f"wpe has one row per position: (block_size, n_embd) = (16, 32), got {model.transformer.wpe.weight.shape}"
    assert model.lm_head.weight is model.transformer.wte.weight, "tie_weights: lm_head.weight IS wte.weight"
    assert model.transformer.h[0] is not model.transformer.h[1], \
        "n_layer blocks, each with its own weights: build a new Block per layer, not [Block(config)] * n_layer"
    idx = tt.tensor(np.random.default_rng(0).integers(0, 65, (3, 10)))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 65), f"logits have shape (B, T, vocab_size) = (3, 10, 65), got {logits.shape}"
    assert loss is None, "without targets the loss is None"
    targets = tt.tensor(np.random.default_rng(1).integers(0, 65, (3, 10)))
    logits, loss = model(idx, targets)
    assert loss is not None and loss.shape == (), f"with targets the loss is a scalar tensor, got {loss}"
    assert abs(loss.item() - math.log(65)) < 0.1, f"at init the loss is about ln(65) = 4.17, got {loss.item():.3f}"
    expected = F.cross_entropy(logits.reshape(30, 65), targets.reshape(30))
    assert abs(loss.item() - expected.item()) < 1e-5, "loss = mean cross-entropy over all B*T positions"
    masked = targets.numpy().copy()
    masked[:, :5] = -1
    _, partial = model(idx, tt.tensor(masked))
    only_kept = F.cross_entropy(logits[:, 5:].reshape(-1, 65), targets[:, 5:].reshape(-1))
    assert abs(partial.item() - only_kept.item()) < 1e-5, "targets equal to -1 are ignored (ignore_index=-1)"
    loss.backward()
    assert model.transformer.wpe.weight.grad is not None, "the loss must reach wpe (add it to the token embeddings)"
    drop = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=4, n_embd=32, dropout=0.5))
    drop(idx[:1], targets[:1])[1].backward()
    share = (drop.transformer.wpe.weight.grad.numpy()[:10] == 0).mean()
    assert share > 0.3, "dropout=0.5 applies to wte(idx) + wpe(pos), so about half of wpe's gradient is zero " \
        f"(dropped) with one sequence; got {share:.0%} zero (dropout before adding wpe?)"
    rope = GPT(GPTConfig.llama_style(vocab_size=65, block_size=16, n_layer=1, n_head=4, n_embd=32, layer_norm_eps=1e-6))
    ln_f = rope.transformer.ln_f
    assert isinstance(ln_f, RMSNorm) and ln_f.eps == 1e-6, \
        f"ln_f follows the config like the blocks' norms: expected RMSNorm with eps 1e-6, got {ln_f}"
    assert "transformer.wpe.weight" not in rope.state_dict() and rope(idx)[0].shape == (3, 10, 65), \
        "rope=True: no wpe table, and the forward pass works without it"
    for kind, net in (("wpe(pos)", model), ("RoPE: pass positions on to every block", rope)):
        moved = net(idx[:1, :3], positions=np.array([[0, 1, 5]]))[0].numpy() - net(idx[:1, :3])[0].numpy()
        assert np.abs(moved[0, -1]).max() > 1e-5, f"explicit positions ({kind}): moving the last token from " \
            "position 2 to 5 must change its logits, but they stayed the same"
    assert rope.lm_head.weight is not rope.transformer.wte.weight, "tie_weights=False: two separate matrices"
    ### BEGIN HIDDEN TESTS
    with tt.no_grad():
        caches = model.new_kv_caches(batch_size=3)
        first = model(idx[:, :6], kv_caches=caches)[0].numpy()
        rest = model(idx[:, 6:], kv_caches=caches)[0].numpy()
    full = model(idx)[0].numpy()
    assert np.allclose(np.concatenate([first, rest], axis=1), full, atol=1e-5), \
        "with caches: positions start at kv_caches[0].length, and block i gets kv_caches[i]"
    ### END HIDDEN TESTS


test_gpt()
print("GPT: ok")

# %% [markdown]
# ### Counting parameters and FLOPs
#
# Per block, attention has C·3C + C·C weights (q, k, v and the output
# projection) and the MLP C·4C + 4C·C: 12·C² per block, plus biases and
# LayerNorms (≈ 13·C). The model: ≈ 12·L·C² + V·C (+ T_max·C for `wpe`). For
# GPT-2 small that is 85 M in the blocks + 38.6 M in `wte` + 0.8 M in `wpe` =
# 124 M. `num_parameters(non_embedding=True)` leaves out the tables that cost no
# FLOPs (a lookup is not a matmul).
#
# FLOPs per token (Kaplan et al. 2020, as in nanoGPT): a weight costs 2 FLOPs
# per token forward (a multiply and an add) and 4 backward (the input's gradient
# and the weight's): 6·N for N parameters. Attention adds matmuls without
# parameters, Q·Kᵀ and P·V, 12·T·Q per head and layer forward and backward
# (Q: head size, T: context): `estimate_flops` returns 6·N + 12·L·H·Q·T.

# %%
tt.manual_seed(0)
tiny = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=4, n_embd=32))
print(f"tiny: {tiny.num_parameters(non_embedding=False):,d} parameters; formula 12·L·C² + V·C = "
      f"{12 * 2 * 32 ** 2 + 65 * 32:,d}; {tiny.estimate_flops() / 1e6:.2f} MFLOPs per token to train")

# %% [markdown]
# ### Weight decay, and on what
#
# AdamW's decay shrinks each parameter toward 0 by lr·wd·θ per step: a prior
# that prefers small weights. That makes sense for the matmul weights, whose
# size sets how sharply the model reacts to its input. It does not for:
#
# - **biases** and **LayerNorm's gain and shift**: few numbers, each an offset or
#   a scale set on purpose (pulling a gain to 0 fights the normalisation it
#   exists to undo);
# - **embedding tables**: a row of `wte` gets gradient only when its token
#   appears, and decay would shrink a rare token's vector toward 0 between its
#   appearances.
#
# So `configure_optimizers` (provided) builds AdamW with two parameter groups,
# which your function makes. Worked example, the `tiny` model above: the
# decayed group holds the 4 projection matrices of each of its 2 blocks (8
# tensors); everything else goes without decay, including the tied
# `wte`/`lm_head` matrix, 2-D but an embedding table.
#
# ### Exercise: `_weight_decay_groups(model, weight_decay)`
# Return a list of AdamW parameter groups, dicts `{"params": [...],
# "weight_decay": w}`: first the decayed one (`weight_decay`), then the other
# (0.0), leaving out a group that would be empty. Frozen parameters
# (`requires_grad` False) go in neither.
#
# - Hint 1: a parameter is decayed when it is a matrix and not an embedding
#   table; identity (`id`), not equality, tells a tied matrix apart.
# - Hint 2: decayed ⇔ p.ndim ≥ 2 and p is not the weight of an `Embedding`.
# - Hint 3: first a set of `id`s of the `Embedding` modules' weights
#   (`model.modules()`), then one pass over `model.parameters()` into two lists.

# %% nbgrader={"grade": false, "grade_id": "weight-decay-groups", "locked": false, "schema_version": 3, "solution": true}
#| export
def _weight_decay_groups(model, weight_decay):
    """AdamW parameter groups: decay for the matmul weights, none for biases, norms and embedding tables."""
    ### BEGIN SOLUTION
    tables = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and id(p) not in tables else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-weight-decay-groups", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_weight_decay_groups():
    toy = _DecayToy()  # provided: an embedding table tied to a head, a Linear with its bias, a LayerNorm
    groups = _weight_decay_groups(toy, 0.1)
    assert isinstance(groups, list) and len(groups) == 2, f"two groups (decay, no decay), got {groups!r:.80}"
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0], "the decayed group first, then weight_decay 0.0"
    assert _weight_decay_groups(toy, 0.02)[0]["weight_decay"] == 0.02, "the decayed group gets the weight_decay given"
    names = {id(p): name for name, p in toy.named_parameters()}
    decayed = [names.get(id(p)) for p in groups[0]["params"]]
    assert decayed == ["proj.weight"], "only the matmul weight proj.weight is decayed (tell tables and norms by " \
        f"their module's kind and the parameter's ndim, not by names), got {decayed}"
    others = sorted(id(p) for p in groups[1]["params"])
    assert others == sorted(id(p) for p in (toy.embed_tokens.weight, toy.proj.bias, toy.norm.weight, toy.norm.bias)), \
        "no decay for the bias, the LayerNorm, and the embedding table (tied to head: listed once)"
    ### BEGIN HIDDEN TESTS
    toy.norm.weight.requires_grad = False
    assert sum(len(g["params"]) for g in _weight_decay_groups(toy, 0.1)) == 4, "a frozen parameter goes in no group"
    assert len(_weight_decay_groups(_DecayToy().norm, 0.1)) == 1, "an empty group is left out"
    ### END HIDDEN TESTS


test_weight_decay_groups()
print("_weight_decay_groups: ok")

# %% [markdown]
# ## 5. Choosing the next token
#
# At the last position the model gives V logits z, scores for the next token.
# Turning them into a choice is a design decision:
#
# - **greedy**: argmax z. Deterministic, and prone to loops ("the the the").
# - **sampling** from p = softmax(z / τ). The **temperature** τ reshapes the
#   distribution: τ < 1 sharpens it (τ → 0 is greedy), τ > 1 flattens it.
# - **top-k**: keep the k largest logits, set the rest to −∞, then sample. It
#   cuts the long tail of tokens that are each unlikely but together likely.
# - **top-p (nucleus**, Holtzman et al. 2019): keep the *smallest* set of most
#   likely tokens whose probabilities add up to at least p. Unlike top-k it
#   adapts: one candidate when the model is sure, many when it is not.
#
# Worked example, z = [2.0, 1.0, 0.5, −1.0]:
#
# | | p(token 0 … 3) |
# | --- | --- |
# | τ = 1 | 0.609, 0.224, 0.136, 0.030 |
# | τ = 0.5 | 0.842, 0.114, 0.042, 0.002 |
# | τ = 2 | 0.434, 0.263, 0.205, 0.097 |
# | τ = 1, top-k = 2 | 0.731, 0.269, 0, 0 |
# | τ = 1, top-p = 0.9 | cumulative 0.609, 0.834, 0.970: three tokens reach 0.9 → 0.628, 0.231, 0.140, 0 |
#
# Filters act on logits (removed ones become −∞, probability 0), so they
# compose: temperature, then top-k, then top-p, then softmax.
#
# ### Exercise: `top_k_filter(logits, k)` and `top_p_filter(logits, p)`
# Both take a NumPy array (..., V), filter each row along the last axis, and
# return a new array (the input stays as it was) with the removed logits set to
# `-np.inf`. `top_k_filter` keeps every logit ≥ the k-th largest of its row
# (ties at the boundary are kept; k ≥ V keeps all). `top_p_filter` keeps a token
# when the probability of the tokens ranked *above* it is < p, so the most
# likely token is always kept (p ≥ 1 keeps all).
#
# - Hint 1: top-k needs only the k-th largest value per row, not a full sort;
#   top-p needs the rows sorted, then the decision put back in the original order.
# - Hint 2: k-th largest = the element at index V − k of the row in increasing
#   order. For top-p, with probabilities sorted decreasingly, "mass above token
#   j" = cumsum(p)ⱼ − pⱼ.
# - Hint 3: `np.partition(…, V - k, axis=-1)` and keep its column V − k with a
#   trailing axis (..., 1); `np.where` fills −∞. For top-p: `np.argsort` on the
#   negated logits (`kind="stable"`), `np.take_along_axis`, the provided
#   `_softmax`, `np.cumsum`, then a boolean array filled by `np.put_along_axis`.

# %% nbgrader={"grade": false, "grade_id": "top-k-filter", "locked": false, "schema_version": 3, "solution": true}
#| export models.sampling
def top_k_filter(logits, k):
    """Logits (..., V) with all but the k largest of each row set to -inf (ties at the k-th kept)."""
    _check_filters(top_k=k)  # provided: k is a positive int
    ### BEGIN SOLUTION
    V = logits.shape[-1]
    if k >= V:
        return logits.copy()
    kth = np.partition(logits, V - k, axis=-1)[..., V - k, None]  # (..., 1): the k-th largest
    return np.where(logits < kth, -np.inf, logits)
    ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "top-p-filter", "locked": false, "schema_version": 3, "solution": true}
#| export models.sampling
def top_p_filter(logits, p):
    """Logits (..., V) keeping, per row, the fewest most likely tokens whose probability sums to >= p."""
    _check_filters(top_p=p)  # provided: 0 < p <= 1
    ### BEGIN SOLUTION
    if p >= 1.0:
        return logits.copy()
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
    assert np.shape(out) == z.shape, f"same shape in and out, got {np.shape(out)}"
    assert np.array_equal(out, expected), f"top-2 of each row, others -inf; expected\n{expected}\ngot\n{out}"
    assert np.array_equal(top_k_filter(z, 1)[1], [-np.inf, 3.0, -np.inf, -np.inf]), "k=1 keeps only the max"
    assert np.array_equal(z[0], [2.0, 1.0, 0.5, -1.0]), "do not modify the input array"
    ties = top_k_filter(np.array([1.0, 5.0, 1.0, 0.0]), 2)
    assert np.array_equal(ties, [1.0, 5.0, 1.0, -np.inf]), f"ties with the k-th largest are kept, got {ties}"
    try:  # nanoGPT and Hugging Face clamp k to V
        kept_all = top_k_filter(z, 9)
    except (IndexError, ValueError) as error:
        raise AssertionError(f"k=9 > V=4 must keep every logit (like k = V), not fail: {error}") from None
    assert np.array_equal(kept_all, z) and not np.shares_memory(kept_all, z), \
        f"k >= V keeps everything, in a new array (a copy, not z itself), got {kept_all}"
    ### BEGIN HIDDEN TESTS
    big = np.random.default_rng(0).standard_normal((3, 50))
    assert (np.isfinite(top_k_filter(big, 7)).sum(axis=-1) == 7).all(), "exactly k kept without ties"
    ### END HIDDEN TESTS


test_top_k_filter()
print("top_k_filter: ok")

# %% nbgrader={"grade": true, "grade_id": "test-top-p-filter", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_top_p_filter():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05], [0.05, 0.15, 0.3, 0.5]]))
    out = top_p_filter(z + 3, 0.7)  # raw logits: softmax gives the probabilities back
    assert np.shape(out) == z.shape, f"same shape in and out, got {np.shape(out)}"
    kept = np.isfinite(out)
    assert np.array_equal(kept[0], [True, True, False, False]), "p=0.7 on logits log([0.5, 0.3, 0.15, 0.05]) + 3 " \
        f"(softmax them: exp alone is no probability): 0.5 alone is not enough, 0.5+0.3 is; keep 0 and 1, got {kept[0]}"
    assert np.array_equal(kept[1], [False, False, True, True]), f"rows are independent and unsorted: {kept[1]}"
    assert np.allclose(out[kept], z[kept] + 3), "kept logits are unchanged"
    kept = np.isfinite(top_p_filter(np.log([0.5, 0.25, 0.125, 0.125]), 0.5))
    assert kept.sum() == 1, f"p=0.5 and probabilities [0.5, 0.25, ...]: 0.5 already reaches p, keep 1 token, got {kept}"
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.4))[0], [True, False, False, False]), \
        "p=0.4 < 0.5: the most likely token alone suffices"
    assert np.isfinite(top_p_filter(z, 1e-9)).sum() == 2, "the most likely token is always kept"
    assert np.array_equal(top_p_filter(z, 1.0), z), "p = 1 keeps everything"
    kept = np.isfinite(top_p_filter(np.array([1000.0, 999.0, 0.0]), 0.5))
    assert list(kept) == [True, False, False], f"logits of 1000 must not overflow (softmax: _softmax), got {kept}"
    kept = np.isfinite(top_p_filter(np.log([0.15, 0.5, 0.3, 0.05]), 0.7))
    assert np.array_equal(kept, [False, True, True, False]), "undo the sort (the j-th most likely is token order[j]): " \
        f"probabilities [0.15, 0.5, 0.3, 0.05], p=0.7 keep tokens 1 and 2, got {kept}"
    ### BEGIN HIDDEN TESTS
    kept = np.isfinite(top_p_filter(np.log(np.array([0.6, 0.25, 0.1, 0.05])), 0.9))
    assert np.array_equal(kept, [True, True, True, False]), f"0.6+0.25 < 0.9 needs a third: {kept}"
    ### END HIDDEN TESTS


test_top_p_filter()
print("top_p_filter: ok")

# %% [markdown]
# ### Drawing one token
#
# To draw from p without a library sampler, use the inverse of its cumulative
# distribution: draw u uniform in (0, 1] and take the first token whose
# cumulative probability reaches u (times the total, in case rounding leaves it
# a hair off 1). Token j is chosen when u falls in (cdf_{j−1}, cdf_j], an
# interval of length p_j. A filtered token has p = 0, an empty interval, so it
# is never chosen. Worked example: p = [0.6, 0.3, 0.1], cdf = [0.6, 0.9, 1.0];
# u = 0.75 picks token 1 (0.6 < 0.75 ≤ 0.9); the count of cdf entries below u
# is that index.
#
# Compute in float64: a cumulative sum over 50 257 float32 probabilities loses
# the tail, and one (B, V) row per step costs nothing to convert.
#
# ### Exercise: `sample_next_token(logits, temperature, top_k, top_p, rng)`
# One token id per row of `logits` (B, V), as an int array (B,). Temperature 0
# is greedy. Otherwise divide by the temperature, apply the filters that are
# not None (top-k first), and draw with `rng` (a NumPy `Generator`; when None,
# tinytorch's `default_generator()`), one uniform number per row.
#
# - Hint 1: greedy returns before any randomness is used, so a greedy
#   generation leaves the generator alone.
# - Hint 2: p = softmax(z/τ) after filtering; index = #{j : cdf_j < u·cdf_V}.
# - Hint 3: `rng.random((B, 1))` gives u in [0, 1); one minus it is in (0, 1].
#   Compare it, scaled by the last column of the cdf (B, 1), with the cdf (B, V),
#   and count along the last axis.

# %% nbgrader={"grade": false, "grade_id": "sample-next-token", "locked": false, "schema_version": 3, "solution": true}
#| export models.sampling
def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """One token id per row of logits (B, V): greedy when temperature is 0, else sampled after filtering."""
    _check_filters(temperature, top_k, top_p, logits)  # provided: (B, V) logits, temp >= 0, top_k >= 1, 0 < top_p <= 1
    ### BEGIN SOLUTION
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
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-sample-next-token", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_sample_next_token():
    greedy = sample_next_token(np.array([[0.1, 3.0, -1.0], [5.0, 0.0, 1.0]]), temperature=0)
    assert np.shape(greedy) == (2,), f"one id per row: shape (B,) = (2,), got {np.shape(greedy)}"
    assert list(greedy) == [1, 0], f"temperature 0 is greedy: the argmax of each row, got {list(greedy)}"
    rng = np.random.default_rng(0)
    sample_next_token(np.array([[1.0, 2.0]]), temperature=0, rng=rng)
    after = rng.random()
    assert after == np.random.default_rng(0).random(), "temperature 0 returns before drawing, so rng is untouched: " \
        f"its next number must still be its first, 0.637, got {after:.3f}"
    z = np.repeat(np.array([[2.0, 1.0, 0.5, -1.0]]), 20000, axis=0)
    rng = np.random.default_rng(0)

    def frequencies(**kwargs):
        draws = np.asarray(sample_next_token(z, rng=rng, **kwargs))
        assert draws.shape == (20000,), f"one id per row: shape (20000,), got {draws.shape}"
        assert draws.dtype.kind in "iu" and 0 <= draws.min() and draws.max() < 4, f"ids in 0..3, got {draws[:8]}"
        return np.bincount(draws, minlength=4) / draws.size
    order = " (divide by the temperature first, then filter: softmax(z/2) needs 3 tokens to reach 0.8)"
    for kwargs, p in (({}, [0.609, 0.224, 0.136, 0.030]), ({"temperature": 0.5}, [0.842, 0.114, 0.042, 0.002]),
                      ({"top_k": 2}, [0.731, 0.269, 0, 0]), ({"top_p": 0.9}, [0.628, 0.231, 0.140, 0]),
                      ({"temperature": 2.0, "top_p": 0.8}, [0.481, 0.292, 0.227, 0]),
                      ({"top_k": 2, "top_p": 0.7}, [1, 0, 0, 0])):  # top-k first: 2 tokens, then 0.731 > p
        freq = frequencies(**kwargs)
        assert np.allclose(freq, p, atol=0.015), \
            f"{kwargs or 'temperature 1'}: expected about {p}, drew {freq}" + order * (len(kwargs) > 1)
    tail = np.r_[0.0, np.full(99_999, -20.0)].astype(np.float32)[None]  # token 0 has p = 0.9998, the tail the rest
    got = sample_next_token(tail, rng=type("U", (), {"random": lambda self, shape: np.full(shape, 1e-5)})())[0]
    assert got > 0, f"u = 0.99999 lands in the tail, past token 0 (cdf 0.9998): cumsum in float64; got token {got}"
    draws = [(tt.manual_seed(0), sample_next_token(z[:50]))[1] for _ in range(2)]
    assert np.array_equal(*draws), "rng=None draws from tinytorch's default_generator(): tt.manual_seed repeats it"
    ### BEGIN HIDDEN TESTS
    one = sample_next_token(z[:1], top_k=1, rng=rng)
    assert list(one) == [0], "top_k=1 always picks the argmax"
    ### END HIDDEN TESTS


test_sample_next_token()
print("sample_next_token: ok")

# %% [markdown]
# ## 6. The generation loop and the KV cache
#
# Generation is a loop: run the model, take the logits at the last position,
# choose a token, append it, repeat. Written naively, step t runs the model
# over all t tokens so far, O(t) work for one new token and O(T²) for a text.
# But the keys and values of earlier positions never change (attention is
# causal), and module 08's KV cache keeps them: after one **prefill** pass over
# the prompt, each step feeds *only the newest token*, at position
# `cache.length`, and the model attends to the cached keys.
#
# The cache holds `block_size` positions, and a learned position table has no
# row beyond them. When the text gets longer, do what nanoGPT does: crop the
# context to its last `block_size` tokens and run the model on it without the
# cache. (The kept tokens now sit at new positions, so old keys and values are
# stale; a RoPE model could shift its cache instead, which we do not do.)
#
# Worked example, prompt of 3 tokens, block_size 8, 8 new tokens with the
# cache: the model sees 3 tokens (prefill, positions 0–2), then 1, 1, 1, 1, 1
# (positions 3–7: the cache is full), then, the text now longer than 8, its
# last 8 tokens twice, without the cache.
#
# `stop` ids end a row: once a row has produced one, it repeats its last token,
# and the loop ends when every row has stopped.
#
# ### Exercise: `generate_tokens(model, idx, max_new_tokens, …)`
# The provided part checks the arguments and turns the prompt into a (B, T)
# int64 NumPy array `tokens`; `tokens` must hold the result. Write the setup:
# the generator (a private `np.random.default_rng(seed)` when a seed is given,
# else `default_generator()`), the stop ids as an int64 array (`stop` may be
# None, an id or a list), caches from `model.new_kv_caches(B)` when
# `use_cache`. Then the loop, in eval mode (no dropout) and under `no_grad`
# (no graph), restoring the model's previous mode afterwards even if an error
# stops it: at most `max_new_tokens` steps, each feeding the model (on the
# device of `wte`) what the cache has not seen yet, or the cropped text,
# sampling with `sample_next_token`, appending, and stopping rows and the loop
# as described.
#
# - Hint 1: the cache knows how many positions it has: `caches[0].length`.
#   Everything after that in `tokens` is new to it.
# - Hint 2: with the cache and tokens.shape[1] ≤ block_size, feed
#   tokens[:, length:]; else feed tokens[:, −block_size:] with no cache.
# - Hint 3: per step, logits (B, T', V) → the last position (B, V) on the host
#   (`to_numpy`) → ids (B,); finished rows take their previous token
#   (`np.where`); `np.concatenate` adds a column; `np.isin` marks new stops.

# %% nbgrader={"grade": false, "grade_id": "generate-tokens", "locked": false, "schema_version": 3, "solution": true}
#| export models.sampling
def generate_tokens(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, stop=None,
                    use_cache=True):
    """The loop behind `GPT.generate` (see there): prefill once, then one token per step."""
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    tokens = _prompt_array(idx)  # (B, T), on the host
    ### BEGIN SOLUTION
    rng = default_generator() if seed is None else np.random.default_rng(seed)
    stop_ids = np.array([] if stop is None else np.ravel(stop), dtype=np.int64)
    block_size, device = model.config.block_size, model.transformer.wte.weight.device
    caches = model.new_kv_caches(tokens.shape[0]) if use_cache else None
    finished = np.zeros(tokens.shape[0], dtype=bool)
    was_training = model.training
    model.eval()  # no dropout while generating
    try:
        with no_grad():  # no graph: nothing will call backward
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
        model.train(was_training)  # the caller's mode, even after an error
    ### END SOLUTION
    return Tensor(tokens, device=model.transformer.wte.weight.device)


# %% nbgrader={"grade": true, "grade_id": "test-generate-tokens", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_generate_tokens():
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=29, block_size=8, n_layer=2, n_head=2, n_embd=16))
    prompt = tt.tensor([[1, 2, 3], [4, 5, 6]])
    seen, modes = [], []
    spy = _spy_forward(model, seen, modes)  # provided: records the tokens the model is fed, and in which mode
    out = generate_tokens(model, prompt, 8, temperature=0)
    assert out.shape == (2, 11), f"prompt (2, 3) + 8 new tokens -> (2, 11), got {tuple(out.shape)}"
    lengths = [s.shape[1] for s in seen]
    assert lengths == [3, 1, 1, 1, 1, 1, 8, 8], \
        f"with the cache: prefill 3 tokens, then 1 per step, then the last 8 past block_size; the model saw {lengths}"
    assert np.array_equal(seen[6], out.numpy()[:, 1:9]), "past block_size, crop to the LAST 8 tokens " \
        f"(tokens 1-8 of the 9 so far): expected the model to see\n{out.numpy()[:, 1:9]}\ngot\n{seen[6]}"
    del model.forward
    assert np.array_equal(out.numpy()[:, :3], prompt.numpy()), "the output starts with the prompt"
    first = model(prompt)[0].numpy()[:, -1].argmax(axis=-1)
    assert np.array_equal(out.numpy()[:, 3], first), "greedy: the first new token is the argmax at the last position"
    plain = generate_tokens(model, prompt, 8, temperature=0, use_cache=False)
    assert np.array_equal(out.numpy(), plain.numpy()), "the KV cache must not change the tokens (greedy)"
    stop = int(out.numpy()[0, 4])
    end = 4 + list(out.numpy()[0, 3:]).index(stop)  # where the stop id first appears, plus one
    stopped = generate_tokens(model, prompt[:1], 8, temperature=0, stop=stop).numpy()
    assert stopped.shape == (1, end), \
        f"generation ends once the row produced the stop id {stop}: expected {out.numpy()[0, :end]}, got {stopped[0]}"
    both, want = generate_tokens(model, prompt, 8, temperature=0, stop=[99, stop]).numpy(), out.numpy().copy()
    want[0, end:] = stop  # row 0 stopped: it repeats its stop id while row 1 goes on
    assert np.array_equal(both, want[:, :both.shape[1]]), \
        f"a row that produced the stop id {stop} repeats it; expected\n{want[:, :both.shape[1]]}\ngot\n{both}"
    model.train()
    model.forward, modes[:] = spy, []
    generate_tokens(model, prompt, 2)
    del model.forward
    assert modes == [False, False], \
        f"generate_tokens must put the model in eval mode (model.eval(): no dropout) while it generates, even when " \
        f"called on a model in training mode; its forward calls saw model.training = {modes}"
    assert model.training, "the mode is restored after generation"
    generate_tokens(model.eval(), prompt, 1)
    assert not model.training, "restore the caller's mode: a model in eval mode stays in eval mode"
    a, b = (generate_tokens(model, prompt, 4, seed=0).numpy() for _ in range(2))
    assert np.array_equal(a, b), f"seed=0 is a seed (test `seed is None`): two calls must agree, got\n{a}\nand\n{b}"
    a, b = ((tt.manual_seed(0), generate_tokens(model, prompt, 4).numpy())[1] for _ in range(2))
    assert np.array_equal(a, b), "seed=None: sample with tinytorch's default_generator(), so tt.manual_seed repeats it"
    got = generate_tokens(model, prompt, 3, top_k=1, seed=0).numpy()
    assert np.array_equal(got, out.numpy()[:, :6]), "top_k=1 is greedy: pass top_k and top_p on in their places"
    flat = GPT(model.config)
    for p in flat.transformer.ln_f.parameters():
        p.data[...] = 0  # all logits 0: greedy picks token 0
    got = generate_tokens(flat, prompt, 4, temperature=0, stop=0).numpy()
    assert got.shape == (2, 4), "stop=0 is a stop id (test `stop is None`): both rows produce 0 first, so " \
        f"expected shape (2, 4), got\n{got}"
    got = generate_tokens(flat, prompt, 2, temperature=0, stop=[3, 6]).numpy()
    assert got.shape == (2, 5), f"prompts ending in stop ids 3 and 6 still generate (only a produced id stops):\n{got}"
    ### BEGIN HIDDEN TESTS
    a = generate_tokens(model, prompt, 6, top_k=5, seed=3).numpy()
    b = generate_tokens(model, prompt, 6, top_k=5, seed=3, use_cache=False).numpy()
    assert np.array_equal(a, b), "same seed, same sample, with or without the cache"
    ### END HIDDEN TESTS


test_generate_tokens()
print("generate_tokens: ok")

# %% [markdown]
# `GPT.generate(idx, max_new_tokens, temperature, top_k, top_p, seed, stop,
# use_cache)` (provided) calls your loop: `model.generate(prompt, 50,
# temperature=0.8, top_k=10)` is how the rest of the course writes text.
#
# ## 7. Loading GPT-2
#
# Because our module names are GPT-2's, a Hugging Face checkpoint (a folder
# with `config.json` and `model.safetensors`) maps onto our state dict almost
# name for name. The provided `hf_gpt2` code handles three differences: GPT-2's
# four projections are stored as `Conv1D`, an (in, out) matrix, where `Linear`
# stores (out, in), so they are transposed; checkpoints of the bare `GPT2Model`
# lack the `transformer.` prefix; and the tied `lm_head.weight` is absent.
# `GPT.from_pretrained(path)` loads one (the real 124 M GPT-2 from a folder
# downloaded once), `save_pretrained(path)` writes one that `transformers`
# reads, each file atomically. A round trip:

# %%
import tempfile  # noqa: E402

prompt = tt.tensor([[1, 2, 3], [4, 5, 6]])
with tempfile.TemporaryDirectory() as folder:
    tiny.save_pretrained(folder)
    again = GPT.from_pretrained(folder)
    print("same logits after the round trip:", np.allclose(again(prompt)[0].numpy(), tiny.eval()(prompt)[0].numpy()))

# %% [markdown]
# ## 8. Training a small GPT, and what it costs
#
# Everything together on the King James Bible text that module 06 ships:
# characters, the first 200 000 of them, a 64-character context, a
# 0.1 M-parameter model, 150 AdamW steps. In a few seconds, noise turns into
# word-shaped text. `tito train gpt` runs the same recipe longer, on larger
# models.

# %%
from tinytorch.data import CharTokenizer, TextDataset, kjv_text  # noqa: E402

text = kjv_text()[:200_000]
tokenizer = CharTokenizer(text)
data = TextDataset(text, tokenizer, block_size=64)
tt.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=64))
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
seconds = (time.perf_counter() - start) / 151
print(f"{seconds * 1e3:.1f} ms per step, {model.estimate_flops() * 16 * 64 / seconds / 1e9:.1f} GFLOP/s (6·N rule)")
sample = generate_tokens(model, tt.tensor([tokenizer.encode("And God said")]), 80, temperature=0.8, top_k=10, seed=0)
print(repr(tokenizer.decode(sample.numpy()[0])))

# %% [markdown]
# **Training cost.** Most of a step is the matmuls of `Linear` and their
# backward, as in PyTorch; at this size Python's overhead per op is a visible
# share too. For the nanoGPT CPU Shakespeare config (L = 4, H = 4, C = 128,
# T = 64, batch 12, no biases), a step took 72–75 ms here against 64–69 ms in
# PyTorch 2.13 (CPU, one thread each) when this module was written. Memory for
# training is the parameters, their gradients and AdamW's two moments (4·N
# floats), plus the activations kept for backward, which grow as B·T·C·L (and
# B·H·T²·L for the attention matrices).
#
# **Generation cost, with and without the KV cache**, greedy, 96 new tokens
# after an 8-token prompt, block_size 128 (so the cache serves every step):

# %%
tt.manual_seed(0)
model = GPT(GPTConfig(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128, bias=False))
prompt = tt.tensor(np.random.default_rng(1).integers(0, 65, (1, 8)))
rates = {}
for use_cache in (True, False):
    start = time.perf_counter()
    generate_tokens(model, prompt, 96, temperature=0, use_cache=use_cache)
    rates[use_cache] = 96 / (time.perf_counter() - start)
    print(f"use_cache={use_cache!s:5s}: {rates[use_cache]:6.0f} tokens/s")
print(f"the cache is {rates[True] / rates[False]:.1f}x faster here; the gap grows with the length generated")

# %% [markdown]
# Without the cache, step t runs the model over t tokens: the work per token
# grows linearly and the total quadratically. With it, each step is one
# token's matmuls plus attention over the t cached keys, so generation runs at
# a nearly constant rate up to `block_size`. The cache costs memory:
# 2·L·B·T_max·C floats (keys and values of every layer), 75 MB for GPT-2 small
# at T_max = 1024 in float32, per sequence.
#
# **Next:** module 10 runs the same model on a GPU, and module 12 fine-tunes a
# loaded GPT-2 with LoRA.
