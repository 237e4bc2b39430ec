"""CausalSelfAttention / MultiHeadAttention: shapes, KV-cache decoding, gradients, errors."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.autograd import gradcheck
from tinytorch.nn.attention import CausalSelfAttention, KVCache, MultiHeadAttention


def make(device, **config):
    tt.manual_seed(0)
    config = {"n_embd": 16, "n_head": 4, "block_size": 12, **config}
    return CausalSelfAttention(**config).to(device)


@pytest.mark.parametrize("config", [{}, {"n_kv_head": 2}, {"n_kv_head": 1}, {"rope": True}, {"window": 3},
                                    {"bias": False}], ids=["mha", "gqa", "mqa", "rope", "window", "nobias"])
def test_forward_shapes_and_params(config, device):
    attn = make(device, **config)
    out = attn(tt.randn(2, 7, 16, device=device))
    assert out.shape == (2, 7, 16) and out.dtype == tt.float32
    kv = config.get("n_kv_head", 4)
    assert attn.c_attn.weight.shape == ((4 + 2 * kv) * 4, 16), "fused qkv: (n_head + 2 n_kv_head) * head_dim"
    assert attn.c_proj.weight.shape == (16, 16)
    names = set(attn.state_dict())
    assert ("c_attn.bias" in names) == config.get("bias", True)
    assert not any("rope" in n for n in names), "rope tables are derived, not saved"


@pytest.mark.parametrize("config", [{}, {"n_kv_head": 2}, {"n_kv_head": 1}, {"rope": True}, {"rope": True, "n_kv_head": 1},
                                    {"window": 3}, {"window": 4, "rope": True, "n_kv_head": 2}],
                         ids=["mha", "gqa", "mqa", "rope", "rope-mqa", "window", "window-rope-gqa"])
def test_kv_cache_decode_equals_full_forward(config, device):
    attn = make(device, **config)
    x = tt.randn(2, 10, 16, device=device)
    with tt.no_grad():
        full = attn(x).numpy()
        cache = attn.new_kv_cache(batch_size=2)
        pieces = [attn(x[:, :4], kv_cache=cache).numpy()]
        pieces += [attn(x[:, t:t + 1], kv_cache=cache).numpy() for t in range(4, 10)]
    assert cache.length == 10
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_cache_memory_scales_with_kv_heads(device):
    sizes = {kv: make(device, n_kv_head=kv).new_kv_cache(1).nbytes for kv in (4, 2, 1)}
    assert sizes[4] == 2 * 1 * 4 * 12 * 4 * 4  # K and V, batch 1, 4 heads, 12 positions, hd 4, float32
    assert sizes[4] == 2 * sizes[2] == 4 * sizes[1]


def numeric_sum_gradient(fn, array, index, eps=1e-6):
    """d sum(fn()) / d array[index] by central differences (array perturbed in place, then restored)."""
    old = array[index].copy()  # CuPy's array[index] is a 0-d view: it would follow the writes below
    with tt.no_grad():
        array[index] = old + eps
        plus = fn().numpy().sum()
        array[index] = old - eps
        minus = fn().numpy().sum()
    array[index] = old
    return (plus - minus) / (2 * eps)


class _ViewIndexed(np.ndarray):
    """array[i, j] is a 0-d view, as in CuPy (NumPy returns a copied scalar)."""

    def __getitem__(self, index):
        return super().__getitem__(tuple(index) + (Ellipsis,))


def test_numeric_gradient_survives_view_indexing():
    array = np.array([[1.0, 2.0], [3.0, 4.0]]).view(_ViewIndexed)
    estimate = numeric_sum_gradient(lambda: tt.tensor(np.asarray(array) ** 2), array, (1, 0), eps=1e-3)
    assert np.isclose(estimate, 6.0), f"d(x^2)/dx at 3 is 6, got {estimate} (a view of the entry halves it)"
    assert array[1, 0] == 3.0, "the entry must be restored"


@pytest.mark.parametrize("config", [{}, {"n_kv_head": 1, "rope": True}, {"window": 2, "n_kv_head": 1}],
                         ids=["mha", "mqa-rope", "window-mqa"])
def test_gradcheck_layer(config, device):
    attn = make(device, n_embd=8, n_head=2, **config).to(tt.float64)
    x = tt.tensor(np.random.default_rng(0).standard_normal((2, 4, 8)), device=device, requires_grad=True)
    assert gradcheck(attn, (x,)), "gradient of the input"
    attn.zero_grad()  # gradcheck's backward also reached the parameters
    attn(x).sum().backward()
    for name, p in attn.named_parameters():  # parameters: a spread of entries of each
        flat = p.data.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 6)):
            numeric = numeric_sum_gradient(lambda: attn(x), flat, i)
            analytic = p.grad.data.reshape(-1)[i]
            assert abs(analytic - numeric) < 1e-6 + 1e-4 * abs(numeric), f"{name}[{i}]: {analytic} vs {numeric}"


def test_parameter_gradients_flow(device):
    attn = make(device, n_kv_head=2, rope=True)
    attn(tt.randn(2, 5, 16, device=device)).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and np.abs(p.grad.numpy()).sum() > 0, f"{name} got no gradient"


def test_multi_head_attention_is_not_causal(device):
    tt.manual_seed(0)
    mha = MultiHeadAttention(16, 4).to(device)
    x = tt.randn(1, 5, 16, device=device)
    out = mha(x).numpy()
    x2 = tt.tensor(np.concatenate([x.numpy()[:, :4], np.zeros((1, 1, 16), np.float32)], 1), device=device)
    assert not np.allclose(mha(x2).numpy()[:, 0], out[:, 0]), "token 0 sees the last token"
    causal = make(device)
    assert np.allclose(causal(x2).numpy()[:, :4], causal(x).numpy()[:, :4], atol=1e-6), "causal: it does not"
    pad = tt.tensor(np.array([True, True, True, True, False]), device=device)
    np.testing.assert_allclose(mha(x, attn_mask=pad).numpy()[:, :4], mha(x2, attn_mask=pad).numpy()[:, :4], atol=1e-6,
                               err_msg="a padding mask hides the last token")
    with pytest.raises(ValueError, match="causal"):
        MultiHeadAttention(16, 4, window=2)


def test_dropout_only_in_training(device):
    attn = make(device, dropout=0.5)
    x = tt.randn(1, 6, 16, device=device)
    attn.eval()
    np.testing.assert_array_equal(attn(x).numpy(), attn(x).numpy())
    attn.train()
    assert not np.allclose(attn(x).numpy(), attn(x).numpy())


@pytest.mark.parametrize("kwargs, match", [
    ({"n_embd": 10, "n_head": 4}, r"n_embd=10 must be divisible by n_head=4"),
    ({"n_embd": 16, "n_head": 4, "n_kv_head": 3}, r"n_kv_head=3 must divide n_head=4"),
    ({"n_embd": 16, "n_head": 4, "rope": True}, "block_size"),
    ({"n_embd": 12, "n_head": 4, "rope": True, "block_size": 8}, "even"),
])
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CausalSelfAttention(**kwargs)


def test_length_errors_name_both_numbers(device):
    attn = make(device)
    with pytest.raises(ValueError, match=r"13 positions .* block_size=12"):
        attn(tt.randn(1, 13, 16, device=device))
    cache = attn.new_kv_cache(batch_size=1, max_len=5)
    with tt.no_grad():
        attn(tt.randn(1, 4, 16, device=device), kv_cache=cache)
        with pytest.raises(ValueError, match=r"max_len=5.*has 4 and 2 more"):
            attn(tt.randn(1, 2, 16, device=device), kv_cache=cache)
    with pytest.raises(ValueError, match=r"n_embd=16"):
        attn(tt.randn(1, 4, 8, device=device))


@pytest.mark.parametrize("dtype", [tt.float16, tt.float64])
def test_cache_stores_the_dtype_it_is_given(dtype, device):
    cache = KVCache(1, 2, 4, 3, dtype=dtype, device=device)
    assert cache.keys.dtype == cache.values.dtype == dtype
    assert cache.nbytes == 2 * (1 * 2 * 4 * 3) * np.dtype(dtype).itemsize


def test_cache_refuses_gradients_and_wrong_shapes(device):
    attn = make(device)
    cache = attn.new_kv_cache(batch_size=1)
    with pytest.raises(RuntimeError, match="no_grad"):
        attn(tt.randn(1, 2, 16, device=device), kv_cache=cache)
    cache = KVCache(1, 2, 4, 3, device=device)
    with pytest.raises(ValueError, match=r"\(1, 2, ·, 3\)"):
        cache.update(tt.zeros(1, 3, 1, 3, device=device), tt.zeros(1, 3, 1, 3, device=device))
