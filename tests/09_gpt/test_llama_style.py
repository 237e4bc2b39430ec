"""A Llama-style GPT from GPTConfig options, and explicit token positions (HF's position_ids)."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.models.gpt import GPT, GPTConfig, SwiGLU
from tinytorch.models.hf_gpt2 import gpt2_incompatibilities
from tinytorch.nn import RMSNorm


def llama(**overrides):
    tt.manual_seed(0)
    values = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=16)
    return GPT(GPTConfig.llama_style(**{**values, **overrides}))


def test_llama_style_model_is_built_from_the_options():
    model = llama()
    block = model.transformer.h[0]
    assert isinstance(block.ln_1, RMSNorm) and isinstance(model.transformer.ln_f, RMSNorm)
    assert isinstance(block.mlp, SwiGLU)
    names = set(model.state_dict())
    assert "transformer.wpe.weight" not in names, "RoPE: no learned position table"
    assert not [n for n in names if n.endswith(".bias")], "bias=False everywhere"
    assert block.attn.c_attn.weight.shape == (32, 16), "GQA: 4 query heads + 2·2 key/value heads of 4"
    assert model.lm_head.weight is not model.transformer.wte.weight, "untied head"
    assert GPTConfig().norm == "layernorm" and GPTConfig().mlp == "gelu", "GPT-2 stays the default"
    assert len(gpt2_incompatibilities(model.config)) == 5, "GQA, RoPE, no bias, RMSNorm, SwiGLU"
    with pytest.raises(ValueError, match="norm must be one of"):
        GPTConfig(norm="batchnorm")


def test_llama_style_model_trains_and_decodes_like_its_full_forward():
    model = llama()
    idx = tt.tensor(np.random.default_rng(0).integers(0, 50, (2, 12)))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, 12, 50) and abs(loss.item() - math.log(50)) < 0.2
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    with tt.no_grad():
        caches = model.new_kv_caches(batch_size=2)
        steps = [model(idx[:, :5], kv_caches=caches)[0].numpy()]
        steps += [model(idx[:, t:t + 1], kv_caches=caches)[0].numpy() for t in range(5, 12)]
        np.testing.assert_allclose(np.concatenate(steps, axis=1), model(idx)[0].numpy(), atol=1e-4)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_positions_only_matter_through_offsets(interleaved):
    model = llama(rope_interleaved=interleaved)
    for p in model.parameters():  # weights of GPT-2's init are too small for attention to matter much
        p.data *= 10
    idx = tt.tensor(np.random.default_rng(1).integers(0, 50, (1, 6)))
    with tt.no_grad():
        plain = model(idx)[0].numpy()
        shifted = model(idx, positions=np.arange(6)[None] + 7)[0].numpy()
        bumped = model(idx, positions=np.array([[0, 1, 2, 3, 4, 9]]))[0].numpy()
    scale = np.abs(plain).max()
    np.testing.assert_allclose(shifted, plain, atol=1e-5 * scale, err_msg="RoPE sees only position differences")
    assert np.allclose(bumped[:, :5], plain[:, :5], atol=1e-5 * scale), "earlier tokens do not see a later position"
    assert np.abs(bumped[:, 5] - plain[:, 5]).max() > 1e-2 * scale, "the moved token's position must matter"


def test_learned_positions_follow_explicit_positions():
    """Per-row positions reach wpe: a row given 0..3 explicitly is the row run alone."""
    model = GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=8))  # learned wpe
    tokens = np.array([5, 6, 7, 8])
    with tt.no_grad():
        alone = model(tt.tensor(tokens[None]))[0].numpy()
        batch = tt.tensor(np.stack([tokens, [0, 0, 5, 6]]))
        out = model(batch, positions=np.array([[0, 1, 2, 3], [0, 0, 0, 1]]))[0].numpy()
    np.testing.assert_allclose(out[0], alone[0], atol=1e-5, err_msg="row 0 keeps positions 0..3")
    with tt.no_grad():
        default = model(batch)[0].numpy()
    assert not np.allclose(out[1], default[1], atol=1e-3), "row 1's positions must reach wpe"
    with pytest.raises(ValueError, match="positions must"):
        model(batch, positions=np.array([[0, 1, 2, 16]] * 2))
