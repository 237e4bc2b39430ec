"""Module 12, round 5 of mutation testing: student mistakes that the older checks let through."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.autograd import gradcheck
from tinytorch.finetune import LoRALinear, inject_lora, mean_pool
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn import functional as F
from tinytorch.nn.rnn import gru_cell, lstm_cell, rnn_cell


@pytest.mark.parametrize("cell, gates", [(rnn_cell, 1), (lstm_cell, 4), (gru_cell, 3)])
def test_each_cell_has_the_gradient_of_every_input(cell, gates):
    """A part of the cell computed outside the graph (W_hh, c or the carried h detached) gives a wrong gradient."""
    rng = np.random.default_rng(0)
    shapes = [(2, 3 * gates), (2, 3)] + [(2, 3)] * (gates == 4) + [(3 * gates, 3), (3 * gates,)]
    args = [tt.tensor(rng.standard_normal(s), dtype=np.float64, requires_grad=True) for s in shapes]

    def run(*a):
        out = cell(*a)
        return tt.cat(list(out), dim=1) if isinstance(out, tuple) else out
    assert gradcheck(run, args)


def test_delta_is_computed_in_float64_then_cast():
    tt.manual_seed(1)
    lora = LoRALinear(nn.Linear(16, 8), rank=4, alpha=8)
    nn.init.normal_(lora.lora_B.weight, 0.0, 1.0)
    b, a = (m.weight.numpy().astype(np.float64) for m in (lora.lora_B, lora.lora_A))
    assert np.array_equal(lora._delta(), (2.0 * (b @ a)).astype(np.float32))


def test_inject_lora_matches_whole_name_suffixes_once_each_in_model_order():
    tt.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16))
    with pytest.raises(ValueError):
        inject_lora(gpt, ["proj"])  # not a whole-name suffix of c_proj
    names = inject_lora(gpt, ["c_proj", "mlp.c_proj", "lm_head"])
    assert names == [f"transformer.h.{i}.{m}.c_proj" for i in (0, 1) for m in ("attn", "mlp")] + ["lm_head"]
    assert isinstance(gpt.lm_head, LoRALinear) and isinstance(gpt.lm_head.base, nn.Linear)
    assert isinstance(gpt.transformer.h[0].mlp.c_proj.base, nn.Linear)  # wrapped once, not twice


def test_kl_div_batchmean_divides_by_size_0_of_a_3d_input():
    rng = np.random.default_rng(0)
    logq = F.log_softmax(tt.tensor(rng.standard_normal((2, 3, 4))), -1)
    p = F.softmax(tt.tensor(rng.standard_normal((2, 3, 4))), -1)
    want = float((p.numpy() * (np.log(p.numpy()) - logq.numpy())).sum() / 2)
    assert abs(F.kl_div(logq, p, reduction="batchmean").item() - want) < 1e-5


@pytest.mark.parametrize("dtype", [tt.float16, tt.float64])
def test_mean_pool_keeps_the_hidden_states_dtype(dtype):
    hidden = tt.tensor(np.arange(16, dtype=np.float32).reshape(2, 4, 2)).to(dtype)
    pooled = mean_pool(hidden, [[1, 1, 0, 0], [1, 1, 1, 1]])
    assert pooled.dtype == dtype and np.allclose(pooled.numpy(), [[1, 2], [11, 12]])
