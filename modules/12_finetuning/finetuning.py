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
# # Module 12 — Fine-tuning: recurrent students, LoRA and distillation
#
# Module 09 trained a GPT to continue text. Most uses of a pretrained model ask
# something else of it: *is this review positive*, *which book is this verse
# from*. The model already knows a lot about the text; we want to spend as
# little as possible to point that knowledge at a new task, and then, often, to
# run the result on something much smaller than a transformer.
#
# This module builds the three tools practitioners reach for, and one classic
# model to compare them against:
#
# 1. **Recurrent networks** (`nn.RNN`, `nn.GRU`, `nn.LSTM`): the models that
#    read sequences before attention did, one token at a time, with a fixed-size
#    memory. Cheap to run, and a natural small *student*.
# 2. **Sequence classification** on top of a GPT: a padding mask, the hidden
#    state of the last real token, and a small linear head.
# 3. **LoRA** (low-rank adaptation): freeze the pretrained weights and train a
#    rank-r correction B·A beside chosen Linear layers, about 1 % of the
#    parameters; merge it into the weights afterwards for free inference.
# 4. **Knowledge distillation**: train the small student to match the
#    fine-tuned teacher's softened probabilities, with the KL divergence.
#
# **You will write:** the RNN, LSTM and GRU cells; the pooling of the last real
# token; `LoRALinear` (its forward, `merge` and `unmerge`) and `inject_lora`;
# `F.kl_div` with its backward; and the distillation loss.
#
# **What it costs:** a recurrent layer does O(T·H²) work but in T *sequential*
# steps, where attention does O(T²·C) in one parallel pass. LoRA trains
# r·(in + out) numbers per adapted layer instead of in·out, and once merged it
# costs nothing at inference. Distillation costs one teacher forward per
# training example, which can be computed once and stored.
#
# `tito milestone run finetune` puts all of it together on the built-in corpus:
# LoRA on a small pretrained GPT, an RNN distilled from it, and the same RNN
# trained from scratch.

# %%
#| default_exp finetune.lora

# %% [markdown]
# The recurrent layers go to `tinytorch/nn/rnn.py`, `kl_div` to
# `tinytorch/nn/functional.py`, LoRA to `tinytorch/finetune/lora.py`, the
# classifier to `tinytorch/finetune/classify.py` and the distillation loss to
# `tinytorch/finetune/distill.py`. The companion `provided.py` exports first:
# `_RNNBase` (PyTorch's parameter names and init, the checks, and the loop over
# layers and time that calls your cell), the argument checks (`_check_mask`,
# `_check_lora`, `_check_kl_div`), and `save_adapters` / `load_adapters` (the
# adapters alone, as safetensors; `_adapter_report` measures such a file), and
# for the distillation demo a small GRU student, `GRUClassifier`, and
# `_fine_tune`, the plain supervised loop that trains its teacher. It also
# holds `LoRALinear`'s Linear-like attributes (`_LinearView`) and a few set-ups
# of the graded checks (`_by_hand`, `_two_batches`, `_raises`).
# The cell below imports what the lesson uses, with the layers it builds on.

# %%
import numpy as np

import tinytorch as tt
from tinytorch.core.autograd import gradcheck, no_grad
from tinytorch.core.tensor import Tensor
from tinytorch.finetune.classify import _check_mask
from tinytorch.finetune.distill import GRUClassifier, _argument_tuples, _check_distillation, _fine_tune, _token_one_task, _two_batches
from tinytorch.finetune.lora import _adapter_report, _check_lora, _check_untied, _LinearView, _MergeFlag, _raises
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import _check_kl_div, cross_entropy, linear, log_softmax, relu, softmax
from tinytorch.nn.rnn import _by_hand, _cell_gradchecks, _RNNBase

# %% [markdown]
# ## 1. Recurrent networks
#
# **Why.** A sequence model has to turn T tokens into something fixed-size. A
# *recurrent* network keeps one vector, the hidden state h (width H), and updates
# it once per token: hₜ = f(xₜ, hₜ₋₁). The same f, with the same weights, runs at
# every step, so the model handles any length, and its memory and per-token cost
# do not grow with T. The price: step t cannot start before step t − 1 is done,
# and everything the model remembers must squeeze through h.
#
# **The math (Elman RNN).** With W_ih (H, I), W_hh (H, H) and two biases:
#
# hₜ = tanh(xₜ·W_ihᵀ + b_ih + hₜ₋₁·W_hhᵀ + b_hh)
#
# The first half, gi = xₜ·W_ihᵀ + b_ih, does not depend on h: `_RNNBase`
# computes it for all steps in one matmul and hands your cell the row gi of
# step t, shape (B, G·H). Your cell adds the hidden state's half and applies the
# nonlinearity.
#
# **Backpropagation through time.** Nothing new is needed for the gradient:
# unrolled over T steps, the RNN is a deep network whose layers share weights,
# and module 02's engine walks it backwards like any other graph, adding the
# gradient of W_hh from every step. The product of T Jacobians diag(1 − h²)·W_hh
# is also why plain RNNs forget: it shrinks (or blows up) geometrically in T.
#
# Worked example, H = 1, I = 1, all weights 1, biases 0: x = (1, −1), h₀ = 0
# gives h₁ = tanh(1) = 0.762, h₂ = tanh(−1 + 0.762) = −0.234.
#
# ### Exercise: `rnn_cell`
# Return the new hidden state (B, H) from `gi` (B, H), the previous `h` (B, H),
# `weight_hh` (H, H) and `bias_hh` (H,) or None; `nonlinearity` is `"tanh"` or
# `"relu"`.
#
# - Hint 1: the hidden state's half has the same form as a Linear layer's output.
# - Hint 2: pre-activation = gi + h·W_hhᵀ + b_hh; then the nonlinearity.
# - Hint 3: `linear(h, weight_hh, bias_hh)` handles a None bias; `tanh` is a
#   Tensor method, `relu` is imported above.

# %% nbgrader={"grade": false, "grade_id": "rnn-cell", "locked": false, "schema_version": 3, "solution": true}
#| export nn.rnn
from tinytorch.nn.functional import linear, relu


def rnn_cell(gi, h, weight_hh, bias_hh=None, nonlinearity="tanh"):
    """One Elman RNN step: act(gi + h W_hhᵀ + b_hh), with gi = x W_ihᵀ + b_ih precomputed; (B, H)."""
    ### BEGIN SOLUTION
    pre = gi + linear(h, weight_hh, bias_hh)  # (B, H)
    return pre.tanh() if nonlinearity == "tanh" else relu(pre)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-rnn-cell", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_rnn_cell():
    one = tt.ones(1, 1)
    h1 = rnn_cell(tt.tensor([[1.0]]), tt.zeros(1, 1), one)
    assert isinstance(h1, Tensor) and h1.shape == (1, 1), f"the new state is a (B, H) = (1, 1) Tensor, got {h1!r}"
    h2 = rnn_cell(tt.tensor([[-1.0]]), h1, one)
    assert abs(h1.item() - 0.7616) < 1e-4 and abs(h2.item() + 0.2340) < 1e-4, \
        f"worked example: expected h1 = 0.762, h2 = -0.234, got {h1.item():.4f}, {h2.item():.4f}"
    rng = np.random.default_rng(0)
    gi, h = tt.tensor(rng.standard_normal((3, 4))), tt.tensor(rng.standard_normal((3, 4)))
    w, b = tt.tensor(rng.standard_normal((4, 4))), tt.tensor(rng.standard_normal(4))
    pre = gi.numpy() + h.numpy() @ w.numpy().T + b.numpy()
    assert np.allclose(rnn_cell(gi, h, w, b).numpy(), np.tanh(pre), atol=1e-5), "expected tanh(gi + h W_hhᵀ + b_hh)"
    ### BEGIN HIDDEN TESTS
    assert np.allclose(rnn_cell(gi, h, w, b, "relu").numpy(), np.maximum(pre, 0), atol=1e-5), \
        "nonlinearity='relu' applies max(0, ·) instead of tanh"
    assert np.allclose(rnn_cell(gi, h, w).numpy(), np.tanh(pre - b.numpy()), atol=1e-5), "bias_hh=None means no bias"
    ### END HIDDEN TESTS


test_rnn_cell()
print("rnn_cell: ok")

# %% [markdown]
# ## 2. The LSTM cell: a memory with gates
#
# **Why.** To remember across many steps, the network needs a path along which
# the gradient is not squashed at every step. The LSTM (Hochreiter &
# Schmidhuber, 1997) adds a second state, the *cell* c, that is updated by
# *adding*, and three gates in (0, 1) that decide what to forget, what to write
# and what to show.
#
# **The math.** The 4H pre-activations gi + h·W_hhᵀ + b_hh split, in PyTorch's
# order, into the input gate i, forget gate f, candidate g and output gate o
# (each B × H):
#
# i = σ(·), f = σ(·), g = tanh(·), o = σ(·)
# c' = f ⊙ c + i ⊙ g
# h' = o ⊙ tanh(c')
#
# Along c the Jacobian is just f: when the forget gate is near 1, the gradient
# travels back many steps unchanged. Worked example, H = 1, pre-activations
# (0.5, −1, 2, 1.5) and c = 1: i = σ(0.5) = 0.622, f = σ(−1) = 0.269,
# g = tanh(2) = 0.964, o = σ(1.5) = 0.818, so c' = 0.269 + 0.622·0.964 = 0.869
# and h' = 0.818·tanh(0.869) = 0.573.
#
# ### Exercise: `lstm_cell`
# Return `(h', c')`, both (B, H).
#
# - Hint 1: one Linear-like term for all four gates at once, then cut it in four.
# - Hint 2: chunks of width H along dim 1, in the order i, f, g, o; σ for the
#   three gates, tanh for the candidate.
# - Hint 3: `split(H, dim=1)` is a Tensor method; `sigmoid` and `tanh` too.

# %% nbgrader={"grade": false, "grade_id": "lstm-cell", "locked": false, "schema_version": 3, "solution": true}
#| export nn.rnn
def lstm_cell(gi, h, c, weight_hh, bias_hh=None):
    """One LSTM step from gi = x W_ihᵀ + b_ih (B, 4H); gates in PyTorch's order i, f, g, o; returns (h', c')."""
    ### BEGIN SOLUTION
    gates = gi + linear(h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.split(h.shape[1], dim=1)  # each (B, H)
    c_next = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h_next = o.sigmoid() * c_next.tanh()
    return h_next, c_next
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-lstm-cell", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_lstm_cell():
    out = lstm_cell(tt.tensor([[0.5, -1.0, 2.0, 1.5]]), tt.zeros(1, 1), tt.ones(1, 1), tt.zeros(4, 1))  # c = 1
    assert isinstance(out, tuple) and len(out) == 2, "lstm_cell returns the pair (h', c')"
    h1, c1 = out
    assert h1.shape == (1, 1) and c1.shape == (1, 1), f"h' and c' are (B, H) = (1, 1), got {h1.shape}, {c1.shape}"
    assert abs(c1.item() - 0.8690) < 1e-4 and abs(h1.item() - 0.5730) < 1e-4, (
        f"worked example: expected c' = 0.869, h' = 0.573, got {c1.item():.4f}, {h1.item():.4f}; the four chunks are, "
        f"in order, i, f, g, o: σ, σ, tanh, σ")
    rng, sig = np.random.default_rng(1), lambda v: 1 / (1 + np.exp(-v))  # B = 2, H = 3, with W_hh and bias_hh
    gi, h, c, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 12), (2, 3), (2, 3), (12, 3), (12,)))
    i, f, g, o = np.split(gi + h @ w.T + b, 4, axis=1)  # four contiguous chunks of width H
    c_want = sig(f) * c + sig(i) * np.tanh(g)
    h2, c2 = lstm_cell(*map(tt.tensor, (gi, h, c, w, b)))
    worst = max(np.abs(c2.numpy() - c_want).max(), np.abs(h2.numpy() - sig(o) * np.tanh(c_want)).max())
    assert worst < 1e-5, (f"B = 2, H = 3: the gates are gi + h W_hhᵀ + b_hh cut into 4 contiguous width-H chunks "
                          f"(columns 0…H−1 are i, H…2H−1 are f, ...); h', c' are off the expected by {worst:.3g}")


test_lstm_cell()
print("lstm_cell: ok")

# %% [markdown]
# ## 3. The GRU cell: two gates, one state
#
# The GRU (Cho et al., 2014) keeps the additive memory with fewer parts: one
# state h, a reset gate r, an update gate z, a candidate n. Its one subtlety is
# *where* r acts: on the hidden state's part of the candidate, **after** the
# matmul with W_hh and its bias, as PyTorch (and cuDNN) computes it. So the
# input's part and the hidden state's part stay separate until then:
#
# gi = x·W_ihᵀ + b_ih → (r_x, z_x, n_x); gh = h·W_hhᵀ + b_hh → (r_h, z_h, n_h)
# r = σ(r_x + r_h), z = σ(z_x + z_h), n = tanh(n_x + r ⊙ n_h)
# h' = (1 − z) ⊙ n + z ⊙ h
#
# z near 1 keeps the old state; z near 0 takes the candidate. Worked example,
# H = 1, everything 0 and h = 1: r = z = ½, n = tanh(0) = 0, h' = ½.
#
# ### Exercise: `gru_cell`
#
# - Hint 1: compute the hidden state's part gh once, then cut gi and gh into
#   three chunks each (order r, z, n).
# - Hint 2: only the candidate uses the reset gate, and it multiplies n_h, not
#   the sum.
# - Hint 3: h' blends n and h with weights (1 − z) and z.

# %% nbgrader={"grade": false, "grade_id": "gru-cell", "locked": false, "schema_version": 3, "solution": true}
#| export nn.rnn
def gru_cell(gi, h, weight_hh, bias_hh=None):
    """One GRU step from gi = x W_ihᵀ + b_ih (B, 3H); chunks in PyTorch's order r, z, n; returns h' (B, H)."""
    ### BEGIN SOLUTION
    H = h.shape[1]
    r_x, z_x, n_x = gi.split(H, dim=1)
    r_h, z_h, n_h = linear(h, weight_hh, bias_hh).split(H, dim=1)  # each (B, H)
    r = (r_x + r_h).sigmoid()
    z = (z_x + z_h).sigmoid()
    n = (n_x + r * n_h).tanh()
    return (1 - z) * n + z * h
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-gru-cell", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_gru_cell():
    h1 = gru_cell(tt.zeros(1, 3), tt.ones(1, 1), tt.zeros(3, 1))
    assert isinstance(h1, Tensor) and h1.shape == (1, 1), f"the new state is a (B, H) = (1, 1) Tensor, got {h1!r}"
    assert abs(h1.item() - 0.5) < 1e-6, f"worked example: expected h' = 0.5, got {h1.item():.4f}"
    # Reset gate shut (r ≈ 0): the hidden part of the candidate disappears, bias included.
    closed = gru_cell(tt.tensor([[-30.0, 0.0, 0.0]]), tt.ones(1, 1), tt.zeros(3, 1), tt.tensor([0.0, 0.0, 2.0]))
    assert abs(closed.item() - 0.5) < 1e-5, \
        "r multiplies n_h = (h W_hhᵀ + b_hh)'s third chunk, after the bias: expected 0.5 when r = 0"
    half = gru_cell(tt.tensor([[0.0, 0.0, 1.0]]), tt.ones(1, 1), tt.tensor([[0.0], [0.0], [1.0]])).item()  # r = ½
    assert abs(half - 0.9526) < 1e-4, f"n = tanh(n_x + r·n_h) = tanh(1 + ½·1): r scales n_h alone; expected 0.9526, got {half:.4f}"
    kept = gru_cell(tt.tensor([[0.0, 1.0, 0.5]]), tt.ones(1, 1), tt.zeros(3, 1)).item()  # z = σ(1), n = tanh(0.5)
    assert abs(kept - 0.8553) < 1e-4, f"h' = (1 − z)·n + z·h: z = 0.731 keeps most of h = 1, so 0.8553; got {kept:.4f}"
    rng, sig = np.random.default_rng(2), lambda v: 1 / (1 + np.exp(-v))  # B = 2, H = 3, with W_hh and bias_hh
    gi, h, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 9), (2, 3), (9, 3), (9,)))
    (rx, zx, nx), (rh, zh, nh) = np.split(gi, 3, axis=1), np.split(h @ w.T + b, 3, axis=1)
    r, z = sig(rx + rh), sig(zx + zh)
    worst = np.abs(gru_cell(*map(tt.tensor, (gi, h, w, b))).numpy() - ((1 - z) * np.tanh(nx + r * nh) + z * h)).max()
    assert worst < 1e-5, (f"B = 2, H = 3: gi and h W_hhᵀ + b_hh are each cut into 3 contiguous width-H chunks "
                          f"(columns 0…H−1 are r, H…2H−1 are z, 2H…3H−1 are n); h' is off the expected by {worst:.3g}")


test_gru_cell()
print("gru_cell: ok")

# %% [markdown]
# ## 4. The layers
#
# `_RNNBase` owns everything around the cells: per layer k the parameters
# `weight_ih_lk`, `weight_hh_lk`, `bias_ih_lk`, `bias_hh_lk` (PyTorch's names,
# so a PyTorch state dict loads as it is), stacking `num_layers` layers (each
# reads the outputs of the one below, with dropout between them), `batch_first`,
# and PyTorch's return values: `(output, h_n)` for RNN and GRU, `(output,
# (h_n, c_n))` for the LSTM, with `output` the top layer's h at every step and
# h_n/c_n the last step's state of every layer, (num_layers, B, H). Each layer
# below only says which cell it runs. `tests/parity/test_rnn.py` checks all
# three against PyTorch to 1e-5, forward and backward.
#
# ### Exercise: the layers' `_cell`
# `_cell(gi, state, weight_hh, bias_hh)` gets the state as a tuple, `(h,)` or
# `(h, c)`, and returns the new one in the same form.
#
# - Hint 1: call your cell of the section above with the state's parts.
# - Hint 2: RNN and GRU wrap the new h in a 1-tuple; the LSTM's cell already
#   returns the pair; the RNN passes `self.nonlinearity` on.

# %% nbgrader={"grade": false, "grade_id": "rnn-layers", "locked": false, "schema_version": 3, "solution": true}
#| export nn.rnn
class RNN(_RNNBase):
    """Elman RNN, PyTorch's `nn.RNN`: forward(input, h_0=None) -> (output, h_n)."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device, dtype,
                         mode="RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU")
        self.nonlinearity = nonlinearity

    def _cell(self, gi, state, weight_hh, bias_hh):
        ### BEGIN SOLUTION
        return (rnn_cell(gi, state[0], weight_hh, bias_hh, self.nonlinearity),)
        ### END SOLUTION


class LSTM(_RNNBase):
    """PyTorch's `nn.LSTM`: forward(input, (h_0, c_0)=None) -> (output, (h_n, c_n))."""

    _MODE = "LSTM"  # its constructor is _RNNBase's (provided): the RNN's arguments, less nonlinearity

    def _cell(self, gi, state, weight_hh, bias_hh):
        ### BEGIN SOLUTION
        return lstm_cell(gi, state[0], state[1], weight_hh, bias_hh)
        ### END SOLUTION


class GRU(_RNNBase):
    """PyTorch's `nn.GRU`: forward(input, h_0=None) -> (output, h_n)."""

    _MODE = "GRU"  # its constructor is _RNNBase's (provided): the RNN's arguments, less nonlinearity

    def _cell(self, gi, state, weight_hh, bias_hh):
        ### BEGIN SOLUTION
        return (gru_cell(gi, state[0], weight_hh, bias_hh),)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-rnn-layers", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_rnn_layers():
    tt.manual_seed(0)
    x, c0 = tt.randn(3, 2, 4), tt.randn(1, 2, 5)  # T = 3 steps, batch 2, from a nonzero state (h0, c0)
    for layer in (RNN(4, 5), RNN(4, 5, nonlinearity="relu"), LSTM(4, 5), GRU(4, 5)):
        h0, lstm = tt.randn(1, 2, 5, requires_grad=True), isinstance(layer, LSTM)
        out, final = layer(x, (h0, c0) if lstm else h0)
        got = [out.numpy()] + [f.numpy()[0] for f in (final if lstm else (final,))]
        want = _by_hand(layer, x, (h0[0], c0[0])[:1 + lstm], rnn_cell, lstm_cell, gru_cell)  # provided: your cells, step by step
        worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        assert worst < 1e-5, (f"{type(layer).__name__}._cell: expected your cell on the state's parts in order ((h,), "
                              f"or (h, c) for the LSTM), with bias_hh and the RNN's nonlinearity, returning the new "
                              f"state in the same form; the layer differs from stepping the cell by hand by {worst:.3g}")
        out.sum().backward()
        assert h0.grad is not None, f"{type(layer).__name__}: the gradient flows back through time to h_0 (no detach)"
    _cell_gradchecks(rnn_cell, lstm_cell, gru_cell)  # provided: each cell's gradient wrt every input, numerically


test_rnn_layers()
print("RNN, LSTM, GRU: ok")

# %% [markdown]
# **What it costs.** Per token and layer, a GRU does about 2·3H·(I + H)
# multiply-adds, an LSTM 2·4H·(I + H): for H = 128 that is tens of thousands,
# against the millions of a transformer block. But the T steps run one after
# another, each a small matmul: on a GPU a recurrent layer is limited by the
# number of steps (latency), not by arithmetic. That is why transformers
# replaced RNNs for *training*, and why small RNNs remain attractive for
# *running* a model where compute is scarce.
#
# ## 5. Sequence classification with a GPT
#
# **Why.** To classify a text with a pretrained GPT, we need one vector per
# text. A causal model's hidden state at position t has seen tokens 0 … t, so
# the state at the *last* token has seen the whole text: it is the natural
# summary (Hugging Face's `GPT2ForSequenceClassification` does exactly this).
# A linear head maps it to one score per class.
#
# **Padding.** Texts in a batch differ in length, so we pad them on the right
# to a common T and pass an `attention_mask` (B, T): 1 for real tokens, 0 for
# padding. With *right* padding a causal model needs no change at all: a real
# token never attends to positions after it, so the pad tokens cannot reach
# it. What does change is where we read the summary: at the last *real*
# position of each row, not at T − 1.
#
# Worked example: mask rows (1, 1, 1, 0) and (1, 1, 1, 1) pick positions 2 and
# 3; hidden (2, 4, C) becomes pooled (2, C).
#
# ### Exercise: `last_token_pool`
# Given `hidden` (B, T, C) and a right-padded `attention_mask` (B, T) of 0/1,
# return (B, C): each row's hidden state at its last real token. It must be an
# op the gradient flows through.
#
# - Hint 1: the last real position of a row is its number of real tokens minus
#   one.
# - Hint 2: sum the mask along T; index `hidden` with two integer arrays, one
#   for the rows and one for the positions.
# - Hint 3: `hidden[rows, positions]` with rows = 0 … B−1 is a Tensor getitem,
#   and getitem has a backward.

# %% nbgrader={"grade": false, "grade_id": "last-token-pool", "locked": false, "schema_version": 3, "solution": true}
#| export finetune.classify
"""Sequence classification on top of a GPT: right padding, last-real-token pooling, a linear head."""
import numpy as np

from tinytorch.core.tensor import Tensor


def last_token_pool(hidden, attention_mask):
    """(B, T, C) hidden states -> (B, C): each row's state at its last real (mask 1) position."""
    mask = _check_mask(hidden, attention_mask)  # provided: the mask as an array, (B, T) and right-padded
    ### BEGIN SOLUTION
    last = mask.sum(axis=1).astype(np.int64) - 1  # (B,)
    return hidden[np.arange(hidden.shape[0]), last]  # (B, C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-last-token-pool", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_last_token_pool():
    hidden = tt.tensor(np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3), requires_grad=True)
    pooled = last_token_pool(hidden, tt.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    assert isinstance(pooled, Tensor) and pooled.shape == (2, 3), f"pooled is (B, C) = (2, 3), got {pooled!r}"
    assert pooled.tolist() == [[6.0, 7.0, 8.0], [21.0, 22.0, 23.0]], \
        f"row 0 ends at position 2, row 1 at position 3; got {pooled.tolist()}"
    floats = last_token_pool(hidden, tt.tensor([[1.0, 1.0, 1.0, 0.0], [1.0] * 4]))  # positions must be ints to index
    assert floats.tolist() == pooled.tolist(), f"a float mask (1.0/0.0) picks the same rows, got {floats.tolist()}"
    pooled.sum().backward()
    assert hidden.grad is not None and hidden.grad.numpy()[0, 3].sum() == 0 and hidden.grad.numpy()[0, 2].sum() == 3, \
        "the gradient reaches only the pooled positions"


test_last_token_pool()
print("last_token_pool: ok")

# %% [markdown]
# The last token is the right summary for a model whose last position was
# trained to know the whole text. A small model pretrained briefly mostly
# knows the few characters before each position; for it, the **mean** of the
# real tokens' states (padding left out by the mask) is often the better
# summary.
#
# ### Exercise: `mean_pool`
#
# - Hint 1: a weighted sum over T, where padding weighs 0 and each real token
#   1 / (its row's number of real tokens).
# - Hint 2: build the (B, T, 1) weights from the mask as a Tensor of the
#   hidden states' dtype and device; multiply and sum over dim 1.

# %% nbgrader={"grade": false, "grade_id": "mean-pool", "locked": false, "schema_version": 3, "solution": true}
#| export finetune.classify
def mean_pool(hidden, attention_mask):
    """(B, T, C) -> (B, C): the mean of each row's states over its real (mask 1) positions."""
    mask = _check_mask(hidden, attention_mask)
    ### BEGIN SOLUTION
    weights = Tensor((mask / mask.sum(axis=1, keepdims=True)).astype(hidden.dtype)[:, :, None],
                     device=hidden.device)  # (B, T, 1)
    return (hidden * weights).sum(1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-mean-pool", "locked": true, "points": 2, "schema_version": 3, "solution": false}
hidden = tt.tensor(np.arange(16, dtype=np.float32).reshape(2, 4, 2))  # row 0's real tokens: (0, 1) and (2, 3)
pooled = mean_pool(hidden, [[1, 1, 0, 0], [1, 1, 1, 1]])
assert pooled.shape == (2, 2) and np.allclose(pooled.numpy(), [[1, 2], [11, 12]]), (
    f"expected [[1, 2], [11, 12]]: each row's mean over its real tokens (÷ the mask's sum, not ÷ T), got {pooled.tolist()}")
assert (half := mean_pool(hidden.to(tt.float16), [[1, 1, 0, 0]] * 2).dtype) == tt.float16, f"float16 hidden states pool to float16 (weights in the hidden states' dtype), got {half}"
print("mean_pool: ok")


# %% [markdown]
# ### Exercise: `GPTForSequenceClassification`
# The classifier runs the GPT's body (module 09: token embeddings, plus the
# position table unless the model uses RoPE, dropout, the blocks, the final
# LayerNorm) without its language-model head, pools (`pooling="last"`, the
# default, or `"mean"`), and scores. The head is called `score`, as in Hugging
# Face, and is written for you.
#
# - Hint 1: `hidden_states` is GPT.forward up to `ln_f`, with no cache and no loss.
# - Hint 2: positions 0 … T−1 index `wpe`; every block takes x and returns x.
# - Hint 3: `forward` = hidden_states → `last_token_pool` or `mean_pool` (an
#   all-ones mask when none is given) → `score`.

# %% nbgrader={"grade": false, "grade_id": "classifier", "locked": false, "schema_version": 3, "solution": true}
#| export finetune.classify
from tinytorch.nn.init import normal_
from tinytorch.nn.layers import Linear, Module


class GPTForSequenceClassification(Module):
    """A GPT body + last-real-token pooling + a Linear head `score` (C -> num_labels).

    forward(idx, attention_mask=None) -> logits (B, num_labels); no mask means no padding.
    pooling: "last" (the last real token's state, as Hugging Face's GPT-2 classifier) or "mean".
    """

    def __init__(self, gpt, num_labels, pooling="last"):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"GPTForSequenceClassification: pooling must be 'last' or 'mean', got {pooling!r}")
        self.gpt = gpt
        self.num_labels = num_labels
        self.pooling = pooling
        self.score = Linear(gpt.config.n_embd, num_labels, bias=False, device=gpt.transformer.wte.weight.device)
        normal_(self.score.weight, 0.0, 0.02)

    def hidden_states(self, idx):
        """The final-LayerNorm hidden states (B, T, C) of the GPT's body."""
        gpt = self.gpt
        idx = gpt._check_tokens(idx, 0)
        ### BEGIN SOLUTION
        x = gpt.transformer.wte(idx)  # (B, T, C)
        if not gpt.config.rope:
            x = x + gpt.transformer.wpe(np.arange(idx.shape[1]))
        x = gpt.transformer.drop(x)
        for block in gpt.transformer.h:
            x = gpt._run_block(block, x)
        return gpt.transformer.ln_f(x)
        ### END SOLUTION

    def forward(self, idx, attention_mask=None):
        ### BEGIN SOLUTION
        hidden = self.hidden_states(idx)
        if attention_mask is None:
            attention_mask = np.ones(hidden.shape[:2], dtype=np.int64)
        pool = last_token_pool if self.pooling == "last" else mean_pool
        return self.score(pool(hidden, attention_mask))  # (B, num_labels)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-classifier", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_classifier():
    tt.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    clf, idx = GPTForSequenceClassification(gpt, 3), tt.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    tt.manual_seed(1)
    hidden = clf.hidden_states(idx)  # in training mode: the same dropout masks as GPT.forward draws
    tt.manual_seed(1)
    worst = float(np.abs(gpt.lm_head(hidden).numpy() - gpt(idx)[0].numpy()).max())
    assert hidden.shape == (2, 4, 8) and worst < 1e-5, (
        f"hidden_states is GPT.forward up to ln_f (wte, wpe at positions 0 … T−1, drop, the blocks, ln_f), (B, T, C) "
        f"= (2, 4, 8): got {tuple(hidden.shape)}, and lm_head(hidden) off the GPT's logits by {worst:.3g}")
    clf.eval()
    logits = clf(idx, [[1, 1, 1, 0], [1, 1, 1, 1]])
    assert isinstance(logits, Tensor) and logits.shape == (2, 3), f"logits are (B, num_labels) = (2, 3), got {logits!r}"
    alone = clf(tt.tensor([[1, 2, 3]]))
    assert np.allclose(alone.numpy()[0], logits.numpy()[0], atol=1e-5), \
        "right padding changes nothing: row 0 alone (no mask) gives the same logits"
    clf.pooling = "mean"
    gap = np.abs(clf(idx, [[1, 1, 1, 0], [1, 1, 1, 1]]).numpy()[0] - clf(tt.tensor([[1, 2, 3]])).numpy()[0]).max()
    assert gap < 1e-5, f"pooling='mean' must pool with the mask: padded row 0 differs from the row alone by {gap:.3g}"
    rope = GPT(GPTConfig(vocab_size=9, block_size=6, n_layer=1, n_head=2, n_embd=8, rope=True))  # no wpe table
    gap = np.abs(rope.lm_head(GPTForSequenceClassification(rope, 3).hidden_states(idx)).numpy() - rope(idx)[0].numpy()).max()
    assert gap < 1e-5, f"a RoPE GPT (config.rope) adds no position table: lm_head(hidden) off its logits by {gap:.3g}"
    ### BEGIN HIDDEN TESTS
    hidden = clf.hidden_states(idx)
    assert np.allclose(clf.score(hidden[:, -1]).numpy()[1], logits.numpy()[1], atol=1e-5), "score(pooled state)"
    assert np.allclose(clf(idx).numpy(), clf.score(hidden.mean(1)).numpy(), atol=1e-5), "pooling='mean'"
    ### END HIDDEN TESTS


test_classifier()
print("GPTForSequenceClassification: ok")


# %% [markdown]
# ## 6. LoRA: a low-rank update beside a frozen weight
#
# **Why.** Fine-tuning every weight of a pretrained model costs a full copy of
# the model per task, and optimizer state (Adam: two more copies) for all of
# it. Hu et al. (2021) observed that the *change* a fine-tune makes to a weight
# matrix has low intrinsic rank. So: freeze W (out × in) and learn the change as
# a product of two thin matrices,
#
# y = x·Wᵀ + (α / r) · (x·Aᵀ)·Bᵀ,   A: (r, in), B: (out, r), r ≪ min(in, out).
#
# Only A and B train: r·(in + out) numbers instead of in·out. A starts random
# and **B starts at zero**, so at step 0 the model is exactly the pretrained
# one. The scale α / r keeps the update's size comparable when you change r.
# Dropout, if any, acts on the adapter's input only. The adapters are float32
# even beside a float16 base (a small update would round away in 16 bits), but
# the layer's output is not widened by them, merged or not, as PEFT's is not.
#
# **Merging.** After training, W' = W + (α / r)·B·A is an ordinary weight: the
# adapted layer costs nothing extra at inference. `unmerge` subtracts it again
# (to keep training, or to swap in another task's adapter). A merged layer's
# `state_dict` holds W' *and* A, B, so it also records the merge (a
# `lora_merged` entry): loading it into an unmerged model, whose forward would
# add B·A a second time, is then an error rather than a wrong model (merge
# the model first, then load).
#
# Worked example: in = out = 2, r = 1, α = 2 (so α / r = 2), W = I, A = (1, 1),
# B = (1, 0)ᵀ. B·A = ((1, 1), (0, 0)), so x = (1, 2) gives x·Wᵀ = (1, 2) plus
# the update 2·(3, 0): y = (7, 2). Merged, W' = I + 2·B·A = ((3, 2), (0, 1)),
# and x·W'ᵀ = (7, 2) too.
#
# ### Exercise: `LoRALinear.forward`, `merge`, `unmerge`
# The constructor is written: it freezes the wrapped `base` Linear, makes
# `lora_A` (Linear in → r, no bias) and `lora_B` (Linear r → out, no bias, zero
# init), `lora_dropout`, `scaling` = α / r and `merged` = False; the provided
# `_LinearView` gives it the base layer's `in_features`, `weight`, and so on.
#
# - Hint 1: forward is the base layer's output plus the scaled adapter path;
#   once merged, the adapter is already inside the base weight. Either way the
#   result keeps the dtype of the base layer's output.
# - Hint 2: the adapter path is x → dropout → A → B, times `scaling`; the
#   merged update is `scaling` times B's weight matrix times A's.
# - Hint 3: `_delta` computes that product as an array, in float64 for
#   exactness, cast back to the weight's dtype; `merge`/`unmerge` change
#   `self.base.weight.data` in place (arrays, no graph) and flip `self.merged`;
#   merging twice (or unmerging an unmerged layer) is a RuntimeError.

# %% nbgrader={"grade": false, "grade_id": "lora-linear", "locked": false, "schema_version": 3, "solution": true}
#| export
"""LoRA: a trainable low-rank update beside a frozen Linear; injection by name; merge for inference."""
from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import _cast
from tinytorch.nn.init import zeros_
from tinytorch.nn.layers import Dropout, Linear, Module


class LoRALinear(_LinearView, _MergeFlag, Module):  # provided: the base's in/out_features, weight, bias; `merged`
    """A frozen Linear `base` plus a trainable low-rank update: y = base(x) + (alpha/rank)·B(A(dropout(x)))."""

    def __init__(self, base, rank=8, alpha=16, dropout=0.0):
        super().__init__()
        _check_lora(base, rank)  # provided: a Linear, and a positive int rank
        self.base = base.requires_grad_(False)  # the pretrained weight stays as it is
        self.rank, self.alpha, self.scaling = rank, alpha, alpha / rank
        device = base.weight.device
        self.lora_A = Linear(base.in_features, rank, bias=False, device=device)  # Kaiming-uniform, like PEFT
        self.lora_B = Linear(rank, base.out_features, bias=False, device=device)
        zeros_(self.lora_B.weight)  # B = 0: the adapted layer starts as the base layer
        self.lora_dropout = Dropout(dropout)
        self.merged = False

    def forward(self, x):
        ### BEGIN SOLUTION
        out = self.base(x)
        if self.merged:
            return out
        update = self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return _cast(out + update, out.dtype)  # float32 adapters beside a float16 base: back to the base's dtype
        ### END SOLUTION

    def merge(self):
        """Fold the update into the base weight: W += (alpha/rank)·B·A; forward then skips the adapter."""
        ### BEGIN SOLUTION
        if self.merged:
            raise RuntimeError("LoRALinear.merge: already merged; call unmerge() first")
        self.base.weight.data += self._delta()
        self.merged = True
        ### END SOLUTION

    def unmerge(self):
        """Take the update back out of the base weight, so the adapter trains (or is swapped) again."""
        ### BEGIN SOLUTION
        if not self.merged:
            raise RuntimeError("LoRALinear.unmerge: not merged; call merge() first")
        self.base.weight.data -= self._delta()
        self.merged = False
        ### END SOLUTION

    def _delta(self):
        """(alpha/rank)·B·A as an array of the base weight's dtype, computed in float64."""
        xp = get_xp(self.base.weight.device)
        ### BEGIN SOLUTION
        b, a = self.lora_B.weight.data.astype(xp.float64), self.lora_A.weight.data.astype(xp.float64)
        return (self.scaling * (b @ a)).astype(self.base.weight.dtype)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-lora-linear", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_lora_linear():
    base = Linear(2, 2, bias=False)
    base.weight.data[...] = np.eye(2, dtype=np.float32)
    lora = LoRALinear(base, rank=1, alpha=2)  # scaling alpha / rank = 2
    x = tt.tensor([[1.0, 2.0]])
    start = lora(x)
    assert isinstance(start, Tensor) and start.shape == (1, 2), f"forward keeps (B, out) = (1, 2), got {start!r}"
    assert start.tolist() == [[1.0, 2.0]], f"B starts at zero: a fresh adapter gives x·Wᵀ = (1, 2), got {start.tolist()}"
    lora.lora_A.weight.data[...] = [[1.0, 1.0]]
    lora.lora_B.weight.data[...] = [[1.0], [0.0]]
    assert np.allclose(lora(x).numpy(), [[7.0, 2.0]]), f"worked example: (1, 2) + (α/r)·(3, 0) = (7, 2), got {lora(x).tolist()}"
    lora(x).sum().backward()
    assert lora.lora_B.weight.grad is not None and base.weight.grad is None, "only the adapter trains"
    lora.merge()
    assert np.allclose(base.weight.numpy(), [[3.0, 2.0], [0.0, 1.0]]) and base.weight.numpy().dtype == np.float32, \
        f"merge adds (alpha/r)·B·A: W' = ((3, 2), (0, 1)) in float32, got {base.weight.tolist()} in {base.weight.numpy().dtype}"
    assert np.allclose(lora(x).numpy(), [[7.0, 2.0]]), f"merged: (7, 2) from the base alone, got {lora(x).tolist()}"
    _raises(RuntimeError, lora.merge, "merge on a merged layer must raise RuntimeError: it would add B·A a second time")
    lora.unmerge()
    assert np.allclose(base.weight.numpy(), np.eye(2)), f"unmerge restores W = I, got {base.weight.tolist()}"
    wide = LoRALinear(Linear(4, 16), rank=2, alpha=2, dropout=0.5)
    wide.lora_B.weight.data[...] = 1.0  # every output then reads the same sum of A·dropout(x)
    update = (wide(tt.ones(1, 4)) - wide.base(tt.ones(1, 4))).numpy()
    assert np.ptp(update) < 1e-5, f"dropout acts on x, before A (not on B·A's output): with B all 1s, all 16 outputs " \
        f"get the same update, got the values {np.unique(update.round(3))}"
    assert abs(update[0, 0] - wide.scaling * wide.lora_A.weight.numpy().sum()) > 1e-4, "training mode: A reads lora_dropout(x), not x"
    ### BEGIN HIDDEN TESTS
    tt.manual_seed(1)
    big = LoRALinear(Linear(16, 8), rank=4, alpha=8)
    tt.nn.init.normal_(big.lora_B.weight, 0.0, 1.0)
    xs, w0 = tt.randn(5, 16), big.base.weight.numpy().copy()
    before = big(xs).numpy()
    big.merge()
    assert np.abs(big(xs).numpy() - before).max() < 1e-5, "merged output = unmerged (both scale B·A by alpha/rank)"
    big.unmerge()
    assert np.abs(big.base.weight.numpy() - w0).max() < 1e-6, "merge then unmerge gives the weight back"
    b64, a64 = (m.weight.numpy().astype(np.float64) for m in (big.lora_B, big.lora_A))  # _delta: float64, then cast
    assert np.array_equal(big._delta(), (2.0 * (b64 @ a64)).astype(np.float32)), "_delta: B·A in float64, cast back"
    _raises(RuntimeError, big.unmerge, "unmerge of an unmerged layer must raise RuntimeError")
    ### END HIDDEN TESTS


test_lora_linear()
print("LoRALinear: ok")

# %% [markdown]
# ### Choosing the layers: `inject_lora`
#
# Which weights get adapters is a choice: the original paper adapts the
# attention projections only. `inject_lora(model, targets, rank, alpha)`
# freezes the whole model, then replaces every `Linear` whose dotted name is a
# target or ends with "." + target (so `"attn.c_attn"` matches
# `gpt.transformer.h.0.attn.c_attn` in every block) by a `LoRALinear` around it,
# and returns the names it replaced. A target that matches nothing is an error
# that lists the Linear layers there are: a typo must not silently train
# nothing. Anything else that should train (a new classification head) is
# unfrozen by the caller, `head.requires_grad_(True)`.
#
# ### Exercise: `inject_lora`
#
# - Hint 1: walk `model.named_modules()` once (into a list, since you will
#   change the tree), keep the Linear layers whose names match.
# - Hint 2: a module `a.b.c` lives in its parent `a.b` under the attribute `c`;
#   `rpartition(".")` splits the two, and the parent is found by name in
#   `dict(model.named_modules())` (the root's name is ""). A target that
#   matched nothing raises the ValueError described above, before the model
#   changes at all (a typo must not leave it half-adapted).
# - Hint 3: check, then freeze every parameter of the model, then `setattr` the
#   parent's child to a new LoRALinear, so the new adapters are the only things
#   that train.
#   `merge_lora(model)` merges every not-yet-merged LoRALinear of a model. It
#   refuses a layer whose weight is tied to another (a GPT's `lm_head` *is*
#   `wte`): W += ΔW would change the embedding too. `merge_and_unload(model)`
#   merges, then puts each base Linear back in its LoRALinear's place: a plain
#   model again, which `save_pretrained` can write in GPT-2's format.

# %% nbgrader={"grade": false, "grade_id": "inject-lora", "locked": false, "schema_version": 3, "solution": true}
#| export
def _matches(name, targets):
    return any(name == t or name.endswith("." + t) for t in targets)


def inject_lora(model, targets, rank=8, alpha=16, dropout=0.0):
    """Freeze `model` and wrap every Linear named by `targets` (dotted suffixes) in a LoRALinear; returns the names."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    ### BEGIN SOLUTION
    modules = list(model.named_modules())
    by_name = dict(modules)
    chosen = [name for name, m in modules if isinstance(m, Linear) and _matches(name, targets)]
    unmatched = [t for t in targets if not any(_matches(name, [t]) for name in chosen)]
    if unmatched:  # before anything changes: a typo leaves the model as it was
        linears = [name for name, m in modules if isinstance(m, Linear)]
        raise ValueError(f"inject_lora: no Linear layer matches {unmatched}; the Linear layers are {linears}")
    model.requires_grad_(False)
    for name in chosen:
        parent, _, child = name.rpartition(".")
        setattr(by_name[parent], child, LoRALinear(by_name[name], rank, alpha, dropout))
    return chosen
    ### END SOLUTION


def merge_lora(model):
    """Merge every LoRALinear of `model` into its base weight (for inference)."""
    _check_untied(model)  # before any merge: all or nothing
    ### BEGIN SOLUTION
    for m in model.modules():
        if isinstance(m, LoRALinear) and not m.merged:
            m.merge()
    return model
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-inject-lora", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_inject_lora():
    tt.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16))
    names = inject_lora(gpt, ["attn.c_attn"], rank=2, alpha=4, dropout=0.1)
    assert names == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"], \
        f"expected the c_attn layer of both blocks, got {names}"
    assert all(isinstance(b.attn.c_attn, LoRALinear) for b in gpt.transformer.h), "the layers are replaced in place"
    got = [(b.attn.c_attn.rank, b.attn.c_attn.scaling, b.attn.c_attn.lora_dropout.p) for b in gpt.transformer.h]
    assert got == [(2, 2.0, 0.1)] * 2, f"rank, alpha, dropout reach each LoRALinear: expected (2, 2.0 = 4/2, 0.1), got {got}"
    trainable = {n for n, p in gpt.named_parameters() if p.requires_grad}
    assert trainable == {f"transformer.h.{i}.attn.c_attn.lora_{ab}.weight" for i in (0, 1) for ab in "AB"}, \
        f"only the adapters train, got {sorted(trainable)}"
    assert gpt.num_parameters(trainable_only=True) == 2 * 2 * (16 + 48), "r·(in + out) per adapted layer"
    merge_lora(gpt)
    assert all(b.attn.c_attn.merged for b in gpt.transformer.h), \
        "merge_lora merges every LoRALinear of the model, also those inside its blocks: expected both c_attn merged"
    merge_lora(gpt)  # a second call must skip the layers already merged (merging one twice raises)
    ### BEGIN HIDDEN TESTS
    fresh = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16))
    err = _raises(ValueError, lambda: inject_lora(fresh, ["attn.c_attn", "attn.qkv"]), "a target matching no Linear raises")
    assert "c_proj" in str(err), "the error lists the Linear layers there are"
    assert not any(isinstance(m, LoRALinear) for m in fresh.modules()) and all(p.requires_grad for p in fresh.parameters()), \
        "a typo must leave the model as it was (nothing frozen, nothing replaced): check all targets first"
    _raises(ValueError, lambda: inject_lora(fresh, ["proj"]), "'proj' is no whole-name suffix of c_proj: ValueError")
    names = inject_lora(fresh, ["c_proj", "mlp.c_proj", "lm_head"])  # two targets name mlp.c_proj; lm_head: top level
    assert names == [f"transformer.h.{i}.{m}.c_proj" for i in (0, 1) for m in ("attn", "mlp")] + ["lm_head"], names
    ### END HIDDEN TESTS


test_inject_lora()
print("inject_lora: ok")

# %% [markdown]
# **What it costs.** A GPT with C = 768 has 3·768² ≈ 1.8 M weights in each
# `c_attn`; a rank-4 adapter on it has 4·(768 + 2304) ≈ 12 k, 0.7 %. Training
# memory drops accordingly: gradients and Adam's two moments exist only for the
# adapters, while the frozen weights need only their values. The forward pass
# still runs the whole model, so a LoRA step is not much faster than a full
# fine-tuning step; the saving is in memory and in what you store per task:
# `save_adapters` writes only the parameters that train.

# %%
tt.manual_seed(0)
demo = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=64))
inject_lora(demo, ["attn.c_attn", "attn.c_proj"], rank=4, alpha=8)
print(_adapter_report(demo))  # provided: trainable parameters; save_adapters' file against tt.save(state_dict)

# %% [markdown]
# ## 7. Knowledge distillation
#
# **Why.** A fine-tuned teacher's output says more than its label: "70 % book A,
# 30 % book B" tells the student which examples are ambiguous and how the
# classes relate. Hinton et al. (2015) train a small *student* to match these
# soft probabilities. Dividing the logits by a temperature T > 1 before the
# softmax flattens them, so the small probabilities carry signal too.
#
# **The KL divergence.** Between the teacher's distribution p and the
# student's q, KL(p ‖ q) = Σ p·(log p − log q) ≥ 0, zero exactly when q = p.
# PyTorch's `F.kl_div(input, target)` takes the student's **log**-probabilities
# as `input` (log q, for numerical stability) and p as `target` (or log p with
# `log_target=True`), and computes the pointwise terms p·(log p − input), with
# 0·log 0 = 0. `reduction="batchmean"` sums them and divides by the batch size:
# that is the true KL per example. (`"mean"` divides by the number of
# *elements* instead, which is not a KL; PyTorch keeps it for old code.)
#
# **Its gradient.** ∂/∂input = −p (only the cross term depends on the input),
# and ∂/∂target = log p − input + 1 (or, with `log_target`, eᵗ·(t − input + 1)),
# each times the reduction's scale. Worked example: p = (½, ½), input = log(¼,
# ¾): KL = ½·log 2 + ½·log(2/3) = 0.1438.
#
# ### Exercise: `kl_div`
# One op with `from_op`: compute the pointwise terms on the arrays, reduce, and
# give the backward for both inputs.
#
# - Hint 1: with `log_target`, p = exp(target) and log p = target; otherwise p =
#   target and log p is taken only where p ≠ 0 (0·log 0 counts as 0; a
#   negative p gives nan, as in PyTorch).
# - Hint 2: pointwise = p·log p − p·input; the scale of the gradient is 1 for
#   "sum" and "none" (times g elementwise), 1/N for "mean", 1/B for "batchmean".
# - Hint 3: the backward returns (−p·scale·g, (log p − input + 1)·p'·scale·g)
#   where p' is 1 (plain target) or p (log target).

# %% nbgrader={"grade": false, "grade_id": "kl-div", "locked": false, "schema_version": 3, "solution": true}
#| export nn.functional
from tinytorch.core.backend import get_xp
from tinytorch.core.tensor import from_op


def kl_div(input, target, size_average=None, reduce=None, reduction="mean", log_target=False):
    """KL(target ‖ exp(input)) pointwise, PyTorch's F.kl_div: input holds log-probabilities."""
    _check_kl_div(input, target, reduction)
    xp = get_xp(input._device)
    x, t = input.data, target.data
    ### BEGIN SOLUTION
    if log_target:
        p, log_p = xp.exp(t), t
    else:
        p = t
        log_p = xp.log(xp.where(t != 0, t, 1))  # 0·log 0 = 0; a negative p has no log: nan
    pointwise = p * log_p - p * x
    rows = x.shape[0] if x.ndim else 1
    mean = 1.0 / x.size if x.size else float("nan")  # an empty input averages nothing: 0/0, as in PyTorch
    batchmean = 1.0 / rows if rows else float("nan")
    scale = {"none": 1.0, "sum": 1.0, "mean": mean, "batchmean": batchmean}
    out = pointwise if reduction == "none" else pointwise.sum() * scale[reduction]

    def kl_div_backward(g):
        g = g * scale[reduction]
        grad_target = (log_p - x + 1) * (p if log_target else 1.0) * g
        return -p * g, grad_target
    ### END SOLUTION
    return from_op(xp.asarray(out, dtype=x.dtype), input._device, (input, target), kl_div_backward)


# %% nbgrader={"grade": true, "grade_id": "test-kl-div", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_kl_div():
    p = tt.tensor([[0.5, 0.5]])
    log_q = tt.tensor(np.log([[0.25, 0.75]]), requires_grad=True)
    kl = kl_div(log_q, p, reduction="batchmean")
    assert isinstance(kl, Tensor) and kl.shape == (), f"batchmean gives a scalar Tensor, got {kl!r}"
    assert abs(kl.item() - 0.1438) < 1e-4, f"worked example: expected 0.1438, got {kl.item():.4f}"
    assert kl_div(log_q, p, reduction="none").shape == (1, 2), "reduction='none' keeps the input's shape"
    mean = kl_div(tt.tensor(np.log([[0.25, 0.75], [0.5, 0.5]])), tt.tensor([[0.5, 0.5]] * 2), reduction="mean").item()
    assert abs(mean - 0.0360) < 1e-4, f"'mean' divides the sum 0.1438 by all 4 elements (not B or classes): 0.0360; got {mean:.4f}"
    assert abs(kl_div(log_q, p.log(), reduction="sum", log_target=True).item() - 0.1438) < 1e-4, \
        "log_target=True: the target holds log-probabilities"
    kl.backward()
    assert np.allclose(log_q.grad.numpy(), [[-0.5, -0.5]]), f"d KL / d input = -p / B, got {log_q.grad.tolist()}"
    deep = kl_div(tt.tensor(np.log([[[0.25, 0.75]] * 3] * 2)), tt.tensor([[[0.5, 0.5]] * 3] * 2), reduction="batchmean")
    assert abs(deep.item() - 0.4315) < 1e-4, f"(2, 3, 2) input: 'batchmean' is the sum 6·0.1438 ÷ size(0) = 2: 0.4315, got {deep.item():.4f}"
    ### BEGIN HIDDEN TESTS
    zero = kl_div(tt.tensor([[np.log(0.5), np.log(0.5)]]), tt.tensor([[0.0, 1.0]]), reduction="sum")
    assert abs(zero.item() - np.log(2)) < 1e-5, "0·log 0 counts as 0"
    rng = np.random.default_rng(0)
    a = tt.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = tt.tensor(rng.random((3, 4)) + 0.1, requires_grad=True)
    for reduction in ("batchmean", "mean", "sum"):
        assert gradcheck(lambda u, v: kl_div(u, v, reduction=reduction), (a, b)), f"gradcheck {reduction}"
    assert gradcheck(lambda u, v: kl_div(u, v, reduction="none", log_target=True), (a, b)), "gradcheck log_target"
    ### END HIDDEN TESTS


test_kl_div()
print("kl_div: ok")

# %% [markdown]
# ### The distillation loss
#
# The student's loss mixes the soft term and the ordinary hard-label loss:
#
# L = α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) · CE(z_s, y)
#
# with z_t the teacher's and z_s the student's logits. **Why T².** The
# gradient of the soft term with respect to z_s scales like 1/T² (one 1/T from
# the softened teacher probabilities' spread, one from dividing z_s by T).
# Multiplying by T² keeps its size comparable to the hard term's as T changes,
# so α means the same thing at any temperature. The teacher is a fixed target:
# no gradient may reach it (`detach`), and it runs in eval mode (no dropout)
# under `no_grad`, which `soft_targets` below does.
#
# Worked example: identical logits give KL = 0, so L = (1 − α)·CE.
#
# ### Exercise: `distillation_loss`
#
# - Hint 1: soften both logits by T; the teacher side becomes probabilities,
#   the student side log-probabilities.
# - Hint 2: soft = T²·kl_div(log_softmax(z_s/T), softmax(z_t/T), "batchmean");
#   no labels: return it alone.
# - Hint 3: with labels, add (1 − α) times `cross_entropy(z_s, y, ignore_index=...)`
#   to α times the soft term. `soft_targets` switches the teacher to eval mode,
#   runs it under `no_grad`, and restores its mode even if the forward raises.

# %% nbgrader={"grade": false, "grade_id": "distillation-loss", "locked": false, "schema_version": 3, "solution": true}
#| export finetune.distill
"""Knowledge distillation: the Hinton loss, and the teacher's soft targets computed without a graph."""
from tinytorch.core.autograd import no_grad
from tinytorch.nn.functional import cross_entropy, kl_div, log_softmax, softmax


def distillation_loss(student_logits, teacher_logits, target=None, temperature=2.0, alpha=0.5, ignore_index=-100):
    """alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) + (1 − alpha)·CE(student, target).

    Logits are (B, classes); without `target` only the soft term is returned.
    """
    _check_distillation(student_logits, teacher_logits, temperature, alpha)  # provided: (B, classes) each; T > 0
    ### BEGIN SOLUTION
    T = float(temperature)
    p_teacher = softmax(teacher_logits.detach() / T, -1)  # a fixed target: no gradient to the teacher
    soft = kl_div(log_softmax(student_logits / T, -1), p_teacher, reduction="batchmean") * (T * T)
    if target is None:
        return soft
    hard = cross_entropy(student_logits, target, ignore_index=ignore_index)
    return soft * alpha + hard * (1.0 - alpha)
    ### END SOLUTION


def soft_targets(teacher, *inputs):
    """The teacher's logits for `inputs`, in eval mode and under no_grad (its mode is restored)."""
    ### BEGIN SOLUTION
    was_training = teacher.training
    teacher.eval()
    try:
        with no_grad():
            return teacher(*inputs).detach()
    finally:
        teacher.train(was_training)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-distillation-loss", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_distillation_loss():
    z = tt.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]], requires_grad=True)
    y = tt.tensor([0, 2])
    same = distillation_loss(z, z, y, temperature=3.0, alpha=0.25)
    assert isinstance(same, Tensor) and same.shape == (), f"the loss is a scalar Tensor, got {same!r}"
    ce = cross_entropy(z, y).item()
    assert abs(same.item() - 0.75 * ce) < 1e-5, "identical logits: KL = 0, so the loss is (1 - alpha)·CE"
    ignored = distillation_loss(z, z, y, alpha=0.0, ignore_index=2).item()  # row 1's label is 2: left out
    assert abs(ignored - 0.2413) < 1e-4, f"ignore_index=2 goes to cross_entropy: row 0's CE alone, 0.2413; got {ignored:.4f}"
    teacher, T = tt.tensor([[0.0, 0.0, 4.0], [1.0, 1.0, 1.0]], requires_grad=True), 1.5
    soft = distillation_loss(z, teacher, temperature=T)
    p = np.exp(teacher.numpy() / T) / np.exp(teacher.numpy() / T).sum(1, keepdims=True)
    log_q = z.numpy() / T - np.log(np.exp(z.numpy() / T).sum(1, keepdims=True))
    want = T * T * (p * (np.log(p) - log_q)).sum() / 2
    assert abs(soft.item() - want) < 1e-4, f"no target, temperature=1.5: T²·KL batchmean = {want:.4f}, got {soft.item():.4f}"
    soft.backward()
    assert z.grad is not None and teacher.grad is None, "the gradient reaches the student, never the teacher"
    soft = soft_targets(dropout := Dropout(0.5), tt.ones(2, 3, requires_grad=True))  # a teacher in training mode
    assert soft.tolist() == [[1.0] * 3] * 2 and not soft.requires_grad and dropout.training, (
        f"soft_targets: the teacher in eval mode (no dropout: x = 1s back, got {soft.tolist()}), no_grad, mode restored")
    soft_targets(dropout.eval(), tt.ones(1, 3))
    assert not dropout.training, "soft_targets restores the caller's mode: a teacher in eval mode stays in eval mode"
    lin = Linear(3, 2)  # a teacher in training mode whose forward raises on a (1, 4) input
    _raises(RuntimeError, lambda: soft_targets(lin, tt.ones(1, 4)), "Linear(3, 2) must refuse a (1, 4) input")
    assert lin.training, "soft_targets restores the teacher's mode in a finally:, also when its forward raises; got eval"
    ### BEGIN HIDDEN TESTS
    mixed = distillation_loss(z, teacher, y, temperature=T, alpha=0.3)
    assert abs(mixed.item() - (0.3 * want + 0.7 * ce)) < 1e-4, "alpha weighs the soft term, 1 - alpha the hard one"
    ### END HIDDEN TESTS


test_distillation_loss()
print("distillation_loss: ok")

# %% [markdown]
# ## 8. Putting it together
#
# A distillation run is a loop you know from module 07, with one change: the
# target of each batch comes from the teacher (`soft_targets`) as well as from
# the labels.
#
# ### Exercise: `distill`
# One pass over `batches`, each `(inputs, labels)` with `inputs` a tuple of the
# models' arguments (the given first line makes a lone tensor a 1-tuple; labels
# may be None); one optimizer step per batch; return the list of losses (floats).
#
# - Hint 1: per batch: the teacher's logits, the student's, the loss, a step.
# - Hint 2: `soft_targets(teacher, *inputs)`; `student(*inputs)`; then
#   `distillation_loss` with the temperature and alpha.
# - Hint 3: zero the gradients, backward, step; append `loss.item()`.

# %% nbgrader={"grade": false, "grade_id": "distill", "locked": false, "schema_version": 3, "solution": true}
#| export finetune.distill
def distill(student, teacher, batches, optimizer, temperature=2.0, alpha=0.5):
    """One pass over `batches` of (inputs: a tuple of arguments or a tensor, labels), on the teacher's soft targets."""
    losses = []
    batches = _argument_tuples(batches)  # provided: a lone tensor of inputs becomes a 1-tuple
    ### BEGIN SOLUTION
    for inputs, labels in batches:
        z_teacher = soft_targets(teacher, *inputs)
        loss = distillation_loss(student(*inputs), z_teacher, labels, temperature, alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    ### END SOLUTION
    return losses


# %% [markdown]
# A tiny run of the whole recipe on made-up data: the class of a sequence is
# whether token 1 occurs in it. A small GPT with LoRA on its attention is the
# teacher; a GRU student learns from its soft targets.

# %% nbgrader={"grade": true, "grade_id": "test-distill", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_distill():
    inputs, labels = _token_one_task()  # provided: 64 rows of 8 tokens (idx, an all-ones mask); label: token 1 occurs
    tt.manual_seed(0)
    teacher = GPTForSequenceClassification(GPT(GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.2)), 2)
    inject_lora(teacher, ["attn.c_attn"], rank=2, alpha=4)
    teacher.score.requires_grad_(True)
    _fine_tune(teacher, inputs, labels, steps=30, lr=3e-2)  # provided: 30 AdamW steps on the labels
    student = GRUClassifier(8, 16, 16, 2)  # provided: embeddings, a GRU, last_token_pool, a Linear head
    losses = distill(student, teacher, [(inputs, labels)] * 30, tt.optim.AdamW(student.parameters(), lr=3e-2))
    assert losses[-1] < losses[0] / 2, f"the distillation loss should at least halve in 30 steps, got {losses[0]:.3f} -> {losses[-1]:.3f}"
    accuracy = (soft_targets(student, *inputs).numpy().argmax(1) == labels.numpy()).mean()
    assert accuracy > 0.9, f"the student learns the task from the teacher: expected train accuracy > 0.9, got {accuracy:.2f}"
    teacher.train()  # a teacher left in training mode: with lr = 0, the same batch must give the same loss
    same = distill(student, teacher, [(inputs, labels)] * 3, tt.optim.SGD(student.parameters(), lr=0.0))
    assert len(same) == 3 and max(same) - min(same) < 1e-6, (
        f"distill: expected one loss per batch, the teacher's targets from soft_targets (eval mode, no dropout), so "
        f"lr=0 on one batch gives one loss 3 times; got {same}")
    got, want, weight, twin = _two_batches(distill, distillation_loss, soft_targets)  # provided: SGD, T = 4, alpha = 0.9
    assert [type(v) for v in got] == [float, float] and np.allclose(got, want, atol=1e-5), f"two batches, temperature=4, " \
        f"alpha=0.9: expected one float loss per batch, each on its own teacher targets, with T and alpha: {want}; got {got}"
    assert np.allclose(weight, twin, atol=1e-6), "zero the gradients before each backward: the second step used both batches'"


test_distill()
print("distill: ok")

# %% [markdown]
# ## What it costs, and what to read next
#
# - **RNN vs attention.** Per layer and sequence: RNN O(T·H²) in T sequential
#   steps; attention O(T²·C + T·C²) in one parallel pass. Small RNN students
#   are cheap to run, token by token, with constant memory.
# - **LoRA.** Trainable parameters r·(in + out) per adapted layer; optimizer
#   memory shrinks by the same factor; zero inference cost once merged; the
#   adapter file is a small fraction of the model (printed above).
# - **Distillation.** One teacher forward per training example (computed once,
#   `soft_targets`), then student-sized steps.
#
# `tito milestone run finetune` compares LoRA, a distilled GRU and the same GRU
# trained from scratch on a task built from the built-in corpus, and prints
# trainable parameters, accuracy and time for each.
