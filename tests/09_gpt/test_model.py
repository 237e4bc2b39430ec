"""GPT: shapes, loss at init, weight tying, initialisation, optimizer groups, training, errors, gradients."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.autograd import gradcheck
from tinytorch.models import GPT, Block, GPTConfig, gelu_new
from tinytorch.nn import functional as F
from tinytorch.nn.layers import Embedding, LayerNorm, Linear
from tinytorch.optim import AdamW

TINY = dict(vocab_size=23, block_size=12, n_layer=2, n_head=4, n_embd=16)


def make(device, seed=0, **overrides):
    tt.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **overrides})).to(device)


def tokens(shape, device, vocab=TINY["vocab_size"], seed=0):
    return tt.tensor(np.random.default_rng(seed).integers(0, vocab, shape), device=device)


CONFIGS = [{}, {"rope": True}, {"n_kv_head": 2}, {"n_kv_head": 1, "rope": True}, {"window": 3},
           {"bias": False}, {"tie_weights": False}]
IDS = ["gpt2", "rope", "gqa", "mqa-rope", "window", "nobias", "untied"]


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_shapes_and_state_dict_names(config, device):
    model = make(device, **config)
    logits, loss = model(tokens((3, 7), device))
    assert logits.shape == (3, 7, 23) and logits.dtype == tt.float32 and loss is None
    names = list(model.state_dict())
    assert names[0] == "transformer.wte.weight" and "lm_head.weight" in names
    assert ("transformer.wpe.weight" in names) != config.get("rope", False), "wpe exists unless rope"
    assert "transformer.h.1.attn.c_attn.weight" in names and "transformer.h.0.mlp.c_proj.weight" in names
    assert ("transformer.h.0.ln_1.bias" in names) == config.get("bias", True)
    assert "transformer.ln_f.weight" in names


def test_loss_at_init_is_ln_vocab(device):
    model = make(device, vocab_size=100, n_embd=32)
    _, loss = model(tokens((4, 12), device, 100), tokens((4, 12), device, 100, seed=1))
    assert abs(loss.item() - math.log(100)) < 0.1, f"loss at init {loss.item():.3f} should be ~ln(100)=4.605"


def test_ignore_index_and_targets_shape(device):
    model = make(device)
    idx, targets = tokens((2, 6), device), tokens((2, 6), device, seed=1)
    logits, _ = model(idx)
    masked = targets.numpy().copy()
    masked[0] = -1
    _, loss = model(idx, tt.tensor(masked, device=device))
    expected = F.cross_entropy(logits[1], targets[1])
    assert abs(loss.item() - expected.item()) < 1e-5
    with pytest.raises(ValueError, match=r"targets of shape \(2, 5\) must match idx \(2, 6\)"):
        model(idx, targets[:, :5])


def test_weight_tying_shares_one_parameter(device):
    model = make(device)
    assert model.lm_head.weight is model.transformer.wte.weight
    params = list(model.parameters())
    assert sum(p is model.transformer.wte.weight for p in params) == 1, "a shared parameter is listed once"
    assert model.num_parameters(non_embedding=False) == sum(p.numel() for p in params)
    untied = make(device, tie_weights=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    # the tied gradient is the sum of the two uses' gradients
    untied.load_state_dict(model.state_dict())
    idx, targets = tokens((2, 8), device), tokens((2, 8), device, seed=1)
    model(idx, targets)[1].backward()
    untied(idx, targets)[1].backward()
    both = untied.transformer.wte.weight.grad.numpy() + untied.lm_head.weight.grad.numpy()
    np.testing.assert_allclose(model.transformer.wte.weight.grad.numpy(), both, rtol=1e-5, atol=1e-7)


def test_gpt2_initialisation_statistics(device):
    model = make(device, n_layer=4, n_embd=128, vocab_size=500, block_size=64)
    residual_std = 0.02 / math.sqrt(2 * 4)
    for name, p in model.named_parameters():
        data = p.numpy()
        if name.endswith("c_proj.weight"):
            assert abs(data.std() - residual_std) < 0.1 * residual_std, f"{name}: std {data.std():.5f}"
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert abs(data.std() - 0.02) < 0.002 and abs(data.mean()) < 0.002, f"{name}: std {data.std():.5f}"
        elif "ln" in name:
            assert np.all(data == (1.0 if name.endswith("weight") else 0.0)), f"{name}: LayerNorm starts at 1 / 0"
        else:
            assert name.endswith(".bias") and np.all(data == 0), f"{name}: biases start at 0"


def test_configure_optimizers_groups(device):
    for tie in (True, False):
        model = make(device, tie_weights=tie)
        model.transformer.h[1].ln_2.weight.requires_grad_(False)  # frozen parameters are left out
        opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-3, betas=(0.9, 0.95))
        assert isinstance(opt, AdamW) and len(opt.param_groups) == 2
        decay, no_decay = (g["params"] for g in opt.param_groups)
        assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[1]["weight_decay"] == 0.0
        assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] == (0.9, 0.95)
        grouped = [id(p) for p in decay + no_decay]
        trainable = [id(p) for p in model.parameters() if p.requires_grad]
        assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped), \
            "every trainable parameter in exactly one group"
        linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, Linear)}
        embeddings = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
        assert {id(p) for p in decay} == linear_weights - embeddings
        assert (id(model.lm_head.weight) in {id(p) for p in decay}) == (not tie), "an untied lm_head is decayed"
        for m in model.modules():
            if isinstance(m, LayerNorm) and m.weight.requires_grad:
                assert any(p is m.weight for p in no_decay)


def test_overfits_one_batch(device):
    model = make(device, vocab_size=16, block_size=8, n_embd=32)
    idx, targets = tokens((4, 8), device, 16), tokens((4, 8), device, 16, seed=1)
    opt = model.configure_optimizers(weight_decay=0.0, learning_rate=1e-2, betas=(0.9, 0.99))
    for _ in range(100):
        _, loss = model(idx, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, f"a small GPT should memorise one batch; loss {loss.item():.3f} after 100 steps"


def test_dropout_only_in_training(device):
    model = make(device, dropout=0.5)
    idx = tokens((2, 8), device)
    with tt.no_grad():
        a, b = model(idx)[0].numpy(), model(idx)[0].numpy()
        model.eval()
        c, d = model(idx)[0].numpy(), model(idx)[0].numpy()
    assert not np.allclose(a, b), "dropout makes training-mode forwards differ"
    assert np.array_equal(c, d), "eval mode is deterministic"


@pytest.mark.parametrize("config", CONFIGS[:5], ids=IDS[:5])
def test_cached_forward_equals_full_forward(config, device):
    model = make(device, **config)
    idx = tokens((2, 12), device)
    with tt.no_grad():
        full = model(idx)[0].numpy()
        caches = model.new_kv_caches(batch_size=2)
        parts = [model(idx[:, :5], kv_caches=caches)[0].numpy()]
        parts += [model(idx[:, t:t + 1], kv_caches=caches)[0].numpy() for t in range(5, 12)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=1e-5)


def test_counts_and_flops():
    model = make("cpu", n_layer=3, n_embd=32, vocab_size=50, block_size=10)
    C, L = 32, 3
    per_block = (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C) + 4 * C
    total = 50 * C + 10 * C + L * per_block + 2 * C
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters() == total - 10 * C, "non-embedding: wpe out, tied wte in (it is lm_head)"
    untied = make("cpu", n_layer=3, n_embd=32, vocab_size=50, block_size=10, tie_weights=False)
    assert untied.num_parameters(non_embedding=False) == total + 50 * C, "untied: lm_head has its own V·C"
    assert untied.num_parameters() == total - 10 * C, "untied: wte (a lookup) and wpe out, lm_head (a matmul) in"
    assert model.estimate_flops(seq_len=10) == 6 * model.num_parameters() + 12 * L * 4 * 8 * 10
    assert model.estimate_flops() == model.estimate_flops(seq_len=10), "default context: block_size"


def test_rope_models_count_their_tied_head():
    """Without wpe (RoPE) only wpe's absence changes: the tied wte is still lm_head, a matmul that costs FLOPs."""
    learned = make("cpu", n_layer=2, n_embd=32, vocab_size=50, block_size=10)
    rope = make("cpu", n_layer=2, n_embd=32, vocab_size=50, block_size=10, rope=True)
    assert rope.num_parameters(non_embedding=False) == learned.num_parameters(non_embedding=False) - 10 * 32
    assert rope.num_parameters() == learned.num_parameters(), "wpe (a lookup) left out of one, absent from the other"


def test_config_dict_round_trip():
    config = GPTConfig(vocab_size=10, block_size=4, n_layer=1, n_head=2, n_embd=8, rope=True, n_kv_head=1)
    assert GPTConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['n_embed'\]"):
        GPTConfig.from_dict({**config.to_dict(), "n_embed": 8})
    with pytest.raises(ValueError, match="n_layer must be a whole number >= 1, got 0"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        GPTConfig(dropout=1.0)


def test_errors_name_the_problem(device):
    model = make(device)
    with pytest.raises(ValueError, match="sequence of 13 tokens.*block_size is 12"):
        model(tokens((1, 13), device))
    with pytest.raises(IndexError, match=r"token id 23 at position \(0, 1\).*vocab_size=23"):
        model(tt.tensor([[0, 23, 5]], device=device))
    with pytest.raises(IndexError, match=r"token id -2 at position \(0, 0\)"):
        model(tt.tensor([[-2, 1]], device=device))
    with pytest.raises(ValueError, match="shape \\(B, T\\) and an integer dtype"):
        model(tt.randn(2, 3, device=device))
    with pytest.raises(ValueError, match="got 1 KV caches for 2 layers"):
        model(tokens((1, 2), device), kv_caches=model.new_kv_caches(1)[:1])
    caches = model.new_kv_caches(1)
    with tt.no_grad():
        model(tokens((1, 10), device), kv_caches=caches)
        with pytest.raises(ValueError, match=r"sequence of 13 tokens \(10 cached \+ 3 new\)"):
            model(tokens((1, 3), device), kv_caches=caches)
    with pytest.raises(ValueError, match="n_embd=16 must be divisible by n_head=3"):
        make(device, n_head=3)
    with pytest.raises(ValueError, match="n_kv_head=3 must divide n_head=4"):
        make(device, n_kv_head=3)


def test_block_is_pre_ln_residual(device):
    tt.manual_seed(0)
    block = Block(GPTConfig(**TINY)).to(device)
    x = tt.randn(2, 5, 16, device=device)
    h = x + block.attn(block.ln_1(x))
    np.testing.assert_allclose(block(x).numpy(), (h + block.mlp(block.ln_2(h))).numpy(), atol=1e-6)
    before = x.numpy().copy()
    with tt.no_grad():  # x += attn(...) would write into the caller's x here
        block(x)
    np.testing.assert_array_equal(x.numpy(), before)


def test_block_passes_dropout_and_rope_layout_on():
    block = Block(GPTConfig(**{**TINY, "dropout": 0.3, "rope": True, "rope_interleaved": True}))
    assert (block.attn.dropout, block.attn.rope_interleaved) == (0.3, True)


def test_gelu_new_matches_tanh_gelu(device):
    x = tt.tensor(np.linspace(-6, 6, 101), dtype=tt.float32, device=device)
    np.testing.assert_allclose(gelu_new(x).numpy(), F.gelu(x, approximate="tanh").numpy(), atol=1e-6)
    assert gelu_new(x).dtype == tt.float32
    x64 = tt.tensor(np.random.default_rng(0).standard_normal(20) * 3, device=device, requires_grad=True)
    assert gradcheck(gelu_new, (x64,))


def _swap_in(modules_and_names, value):
    for module, name in modules_and_names:
        object.__setattr__(module, name, value)  # the forward reads module.<name>


@pytest.mark.parametrize("which", ["c_attn", "ln_f", "wte_tied", "c_fc_bias"])
def test_gradcheck_loss_wrt_parameters(which, device):
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, n_embd=4)).to(device).to(tt.float64)
    block = model.transformer.h[0]
    places = {"c_attn": [(block.attn.c_attn, "weight")], "ln_f": [(model.transformer.ln_f, "weight")],
              "wte_tied": [(model.transformer.wte, "weight"), (model.lm_head, "weight")],
              "c_fc_bias": [(block.mlp.c_fc, "bias")]}[which]
    original = getattr(*places[0])
    idx, targets = tokens((2, 4), device, 7), tokens((2, 4), device, 7, seed=1)

    def loss_of(param):
        _swap_in(places, param)
        return model(idx, targets)[1]
    try:
        assert gradcheck(loss_of, (original,), atol=1e-6, rtol=1e-4)
    finally:
        _swap_in(places, original)


def test_block_passes_rope_base_and_window_to_attention(device):
    from tinytorch.nn.attention import rope_tables
    tt.manual_seed(0)
    block = Block(GPTConfig(**{**TINY, "n_layer": 1, "rope": True, "rope_base": 5e5, "window": 2})).to(device)
    assert block.attn.window == 2
    np.testing.assert_allclose(block.attn.rope_cos.numpy(), rope_tables(12, 4, base=5e5)[0].numpy())
    x = np.random.default_rng(0).standard_normal((1, 6, 16)).astype(np.float32)
    x2 = x.copy()
    x2[0, 0] *= -1  # token 0 lies outside token 5's window of 2
    out, out2 = (block(tt.tensor(v, device=device)).numpy() for v in (x, x2))
    np.testing.assert_allclose(out[0, -1], out2[0, -1], atol=1e-6)


def test_dropout_rate_is_p_and_applies_after_adding_wpe(device):
    model = make(device, n_layer=1, dropout=0.5)
    dropped = (model.transformer.h[0].mlp(tt.ones(64, 8, 16, device=device)).numpy() == 0).mean()
    assert 0.45 < dropped < 0.55, f"the MLP's Dropout(config.dropout) zeroed {dropped:.0%}, expected ~50%"
    idx = tokens((1, 10), device)
    model(idx, idx)[1].backward()
    zero = (model.transformer.wpe.weight.grad.numpy()[:10] == 0).mean()  # nanoGPT: drop(wte(idx) + wpe(pos))
    assert 0.35 < zero < 0.65, f"dropout after wte + wpe zeroes ~half of wpe's gradient (B=1), got {zero:.0%}"
