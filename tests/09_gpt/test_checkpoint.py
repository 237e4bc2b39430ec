"""GPT-2 checkpoint format without transformers: save_pretrained / from_pretrained, names, errors, atomicity."""

import json
import os

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import tinytorch as tt
from tinytorch.models import GPT, GPTConfig, config_from_hf, hf_to_tinytorch, read_gpt2_checkpoint

TINY = dict(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=8, layer_norm_eps=1e-6)


def make(device="cpu", seed=0, **overrides):
    tt.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).to(device)


def test_round_trip(tmp_path, device):
    model = make(device)
    model.save_pretrained(tmp_path)
    loaded = GPT.from_pretrained(tmp_path, device=device)
    assert loaded.config == model.config and not loaded.training
    assert loaded.transformer.ln_f.eps == 1e-6, "LayerNorm eps follows layer_norm_epsilon"
    idx = tt.tensor([[1, 2, 3, 4]], device=device)
    np.testing.assert_array_equal(loaded(idx)[0].numpy(), model.eval()(idx)[0].numpy())
    assert loaded.lm_head.weight is loaded.transformer.wte.weight, "tying survives loading"


def test_files_are_in_hugging_face_layout(tmp_path):
    make().save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"], "no temporary files left"
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["GPT2LMHeadModel"] and config["model_type"] == "gpt2"
    assert config["activation_function"] == "gelu_new" and config["n_positions"] == 8
    assert config["layer_norm_epsilon"] == 1e-6 and config["tie_word_embeddings"] is True
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}, "transformers requires format=pt"
    arrays = load_file(str(tmp_path / "model.safetensors"))
    assert "lm_head.weight" not in arrays, "tied: lm_head is stored once, as wte"
    assert arrays["transformer.h.0.attn.c_attn.weight"].shape == (8, 24), "Conv1D layout (in, out)"
    assert arrays["transformer.h.1.mlp.c_fc.weight"].shape == (8, 32)
    assert arrays["transformer.h.1.mlp.c_proj.weight"].shape == (32, 8)
    assert arrays["transformer.wte.weight"].shape == (30, 8)


def test_untied_round_trip_stores_lm_head(tmp_path):
    model = make(tie_weights=False)
    model.save_pretrained(tmp_path)
    assert "lm_head.weight" in load_file(str(tmp_path / "model.safetensors"))
    loaded = GPT.from_pretrained(tmp_path)
    assert not loaded.config.tie_weights
    np.testing.assert_array_equal(loaded.lm_head.weight.numpy(), model.lm_head.weight.numpy())


def test_shape_mismatches_are_listed_together(tmp_path):
    make().save_pretrained(tmp_path)
    _, tensors = read_gpt2_checkpoint(tmp_path)
    wider = make(n_embd=12)
    with pytest.raises(ValueError) as err:
        wider.load_gpt2_tensors(tensors)
    message = str(err.value)
    assert "transformer.wte.weight: checkpoint has (30, 8), the model needs (30, 12)" in message
    assert "transformer.h.1.attn.c_attn.weight: checkpoint has (8, 24), the model needs (12, 36)" in message
    assert message.count("shape mismatch") == len(tensors), "every tensor with a wrong shape is named"


def test_config_that_does_not_fit_the_weights(tmp_path):
    make().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_layer"] = 3
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing: transformer.h.2.attn.c_attn.weight \\(8, 24\\)"):
        GPT.from_pretrained(tmp_path)


def test_missing_and_unexpected_tensors(tmp_path):
    make().save_pretrained(tmp_path)
    arrays = load_file(str(tmp_path / "model.safetensors"))
    del arrays["transformer.ln_f.bias"]
    arrays["transformer.h.0.attn.rotary"] = np.zeros(3, np.float32)
    save_file(arrays, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        GPT.from_pretrained(tmp_path)
    assert "missing: transformer.ln_f.bias (8,)" in str(err.value)
    assert "unexpected: transformer.h.0.attn.rotary (3,)" in str(err.value)
    assert "2 problem(s)" in str(err.value)


def test_old_style_names_and_mask_buffers(tmp_path):
    model = make()
    model.save_pretrained(tmp_path)
    arrays = load_file(str(tmp_path / "model.safetensors"))
    old = {name.removeprefix("transformer."): a for name, a in arrays.items()}  # saved from GPT2Model
    old["h.0.attn.bias"] = np.tril(np.ones((1, 1, 8, 8), np.float32))
    old["h.0.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(old, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = GPT.from_pretrained(tmp_path)
    idx = tt.tensor([[3, 1, 4, 1]])
    np.testing.assert_array_equal(loaded(idx)[0].numpy(), model.eval()(idx)[0].numpy())


def test_hf_to_tinytorch_transposes_only_conv1d():
    w = np.zeros((2, 5))
    assert hf_to_tinytorch("h.0.attn.c_proj.weight", w)[1].shape == (5, 2)
    assert hf_to_tinytorch("h.0.attn.c_proj.bias", w)[1].shape == (2, 5)
    assert hf_to_tinytorch("lm_head.weight", w) == ("lm_head.weight", w)


@pytest.mark.parametrize("overrides, named", [({"rope": True}, "rope=True"), ({"n_kv_head": 1}, "n_kv_head=1"),
                                              ({"window": 3}, "window=3"), ({"bias": False}, "bias=False")])
def test_save_pretrained_refuses_what_gpt2_cannot_express(overrides, named, tmp_path):
    with pytest.raises(ValueError, match=named):
        make(**overrides).save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_save_pretrained_refuses_a_model_with_lora_layers(tmp_path):
    class Adapted(tt.nn.Module):  # the layout of module 12's LoRALinear: base + lora_A + lora_B
        def __init__(self, base):
            super().__init__()
            self.base, self.lora_A, self.lora_B = base, tt.nn.Linear(8, 2), tt.nn.Linear(2, 24)

    model = make()
    model.transformer.h[0].attn.c_attn = Adapted(model.transformer.h[0].attn.c_attn)
    with pytest.raises(ValueError, match=r"LoRA.*transformer\.h\.0\.attn\.c_attn.*merge_and_unload"):
        model.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


def test_unsupported_hf_settings():
    base = {"vocab_size": 10, "n_positions": 8, "n_layer": 1, "n_head": 2, "n_embd": 8}
    assert config_from_hf(base)["block_size"] == 8
    with pytest.raises(ValueError, match="activation_function='relu'"):
        config_from_hf({**base, "activation_function": "relu"})
    with pytest.raises(ValueError, match="n_inner=7"):
        config_from_hf({**base, "n_inner": 7})
    with pytest.raises(ValueError, match="model_type 'llama'"):
        config_from_hf({**base, "model_type": "llama"})


def test_missing_files_and_failed_writes(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        GPT.from_pretrained(tmp_path)
    model = make()
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    model.transformer.wte.weight.data = model.transformer.wte.weight.data.astype(object)  # save_file refuses it
    with pytest.raises(Exception, match="dtype"):  # safetensors: Unknown dtype "object"
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before, "a failed write leaves the old file"
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"], "and no temporary file"
