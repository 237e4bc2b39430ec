"""Sampling filters and GPT.generate: greedy, seeds, KV cache vs recompute, stop tokens, errors."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.models import GPT, GPTConfig, sample_next_token, top_k_filter, top_p_filter

TINY = dict(vocab_size=29, block_size=10, n_layer=2, n_head=2, n_embd=16)


def make(device, **overrides):
    tt.manual_seed(0)
    return GPT(GPTConfig(**{**TINY, **overrides})).to(device)


def prompt(device, batch=2, length=3):
    return tt.tensor(np.random.default_rng(0).integers(0, TINY["vocab_size"], (batch, length)), device=device)


def test_top_k_on_hand_made_logits():
    z = np.array([[0.1, 2.0, -1.0, 0.5, 1.5]])
    assert np.array_equal(np.isfinite(top_k_filter(z, 3)), [[False, True, False, True, True]])
    assert np.array_equal(top_k_filter(z, 10), z) and not np.shares_memory(top_k_filter(z, 10), z), "a copy, k >= V too"
    assert np.array_equal(np.isfinite(top_k_filter(np.array([3.0, 3.0, 1.0]), 1)), [True, True, False]), "ties kept"


def test_top_p_on_hand_made_logits():
    z = np.log(np.array([[0.1, 0.45, 0.05, 0.4]]))
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.5)), [[False, True, False, True]])
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.9)), [[True, True, False, True]])
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.3)), [[False, True, False, False]])
    assert np.array_equal(top_p_filter(z, 1.0), z)


def test_sample_next_token_distribution():
    z = np.log(np.array([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, axis=0)
    rng = np.random.default_rng(0)
    freq = np.bincount(sample_next_token(z, rng=rng), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    freq = np.bincount(sample_next_token(z, top_p=0.7, rng=rng), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.625, 0.375, 0, 0], atol=0.015)
    freq = np.bincount(sample_next_token(z, top_k=3, rng=rng), minlength=4) / 20000
    np.testing.assert_allclose(freq, [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=0.015)
    sharp = np.bincount(sample_next_token(z, temperature=0.25, rng=rng), minlength=4) / 20000
    assert sharp[0] > 0.85, f"low temperature concentrates on the top token: {sharp}"
    rng = np.random.default_rng(0)
    assert np.array_equal(sample_next_token(np.array([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]]), temperature=0, rng=rng), [1, 0])
    assert rng.random() == np.random.default_rng(0).random(), "greedy returns before drawing: rng is untouched"


def test_greedy_is_argmax_of_the_model(device):
    model = make(device).eval()
    p = prompt(device)
    out = model.generate(p, 1, temperature=0)
    expected = model(p)[0].numpy()[:, -1].argmax(-1)
    assert out.shape == (2, 4) and out.dtype == tt.int64
    assert np.array_equal(out.numpy()[:, :3], p.numpy()) and np.array_equal(out.numpy()[:, 3], expected)


@pytest.mark.parametrize("config", [{}, {"rope": True}, {"n_kv_head": 1}, {"window": 4}],
                         ids=["gpt2", "rope", "mqa", "window"])
def test_cached_equals_uncached_greedy(config, device):
    model = make(device, **config)
    p = prompt(device)
    cached = model.generate(p, 15, temperature=0)  # past block_size=10: both crop and recompute
    uncached = model.generate(p, 15, temperature=0, use_cache=False)
    assert cached.shape == (2, 18)
    assert np.array_equal(cached.numpy(), uncached.numpy()), "cached and recomputed greedy decoding differ"


def test_cached_equals_uncached_sampled_with_seed(device):
    model = make(device)
    a = model.generate(prompt(device), 8, temperature=0.9, top_k=10, top_p=0.95, seed=5)
    b = model.generate(prompt(device), 8, temperature=0.9, top_k=10, top_p=0.95, seed=5, use_cache=False)
    assert np.array_equal(a.numpy(), b.numpy())


def test_seed_determinism(device):
    model = make(device)
    a = model.generate(prompt(device), 12, seed=1).numpy()
    b = model.generate(prompt(device), 12, seed=1).numpy()
    c = model.generate(prompt(device), 12, seed=2).numpy()
    assert np.array_equal(a, b), "same seed, same tokens"
    assert not np.array_equal(a, c), "another seed, other tokens"
    zero = [model.generate(prompt(device), 12, seed=0).numpy() for _ in range(2)]
    assert np.array_equal(*zero), "seed=0 is a seed too"
    tt.manual_seed(7)
    d = model.generate(prompt(device), 12).numpy()
    tt.manual_seed(7)
    assert np.array_equal(d, model.generate(prompt(device), 12).numpy()), "seed=None follows tt.manual_seed"


def test_stop_tokens(device):
    model = make(device)
    p = prompt(device, batch=1)
    free = model.generate(p, 8, temperature=0).numpy()[0]
    first_new = free[3]
    stopped = model.generate(p, 8, temperature=0, stop=int(first_new)).numpy()[0]
    assert np.array_equal(stopped, free[:4]), "generation ends right after the stop token, which is kept"
    stopped = model.generate(p, 8, temperature=0, stop=[999, int(free[5])]).numpy()[0]
    assert len(stopped) <= 6 and stopped[-1] == free[5]
    model.transformer.ln_f.weight.data[...] = 0  # every logit 0: greedy picks token 0
    assert model.generate(p, 5, temperature=0, stop=0).shape == (1, 4), "stop=0 is a stop id"


def test_stop_tokens_in_a_batch(device):
    model = make(device)
    p = prompt(device, batch=2)
    free = model.generate(p, 6, temperature=0).numpy()
    stop = int(free[0, 3])
    out = model.generate(p, 6, temperature=0, stop=stop).numpy()
    row1_stops = np.flatnonzero(free[1, 3:] == stop)
    if row1_stops.size == 0:  # row 1 never stops: it runs to the end, row 0 repeats its stop token
        assert out.shape == (2, 9) and np.all(out[0, 3:] == stop) and np.array_equal(out[1], free[1])
    else:
        assert out.shape[1] == 4 + max(0, row1_stops[0])


def test_long_prompt_and_zero_tokens(device):
    model = make(device)
    long = tt.tensor(np.arange(15)[None] % TINY["vocab_size"], device=device)
    out = model.generate(long, 3, temperature=0)
    assert out.shape == (1, 18), "a prompt longer than block_size is cropped, not refused"
    assert np.array_equal(out.numpy()[0, -3:], model.generate(long, 3, temperature=0, use_cache=False).numpy()[0, -3:])
    assert np.array_equal(model.generate(prompt(device), 0).numpy(), prompt(device).numpy())
    assert model.generate([1, 2, 3], 2, temperature=0).shape == (1, 5), "a 1-D list prompt is one row"


def test_generate_restores_mode_and_records_no_graph(device):
    model = make(device, dropout=0.1)
    assert model.training
    out = model.generate(prompt(device), 3, temperature=0)
    assert model.training, "training mode is restored after generate"
    assert not out.requires_grad
    model.eval()
    model.generate(prompt(device), 3, temperature=0)
    assert not model.training


def test_generate_from_training_mode_uses_no_dropout(device):
    model = make(device, dropout=0.5)
    train_mode = [model.generate(prompt(device), 8, temperature=0).numpy() for _ in range(3)]
    model.eval()
    want = model.generate(prompt(device), 8, temperature=0).numpy()
    assert all(np.array_equal(got, want) for got in train_mode), "greedy generation with dropout must not vary"


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1.0}, "temperature must be a number >= 0"),
    ({"temperature": None}, "temperature must be a number >= 0"),
    ({"temperature": float("nan")}, "temperature must be a number >= 0"),
    ({"top_k": 0}, "top_k must be a whole number >= 1"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"max_new_tokens": -1}, "max_new_tokens must be a whole number >= 0"),
])
def test_generate_errors(kwargs, message, device):
    model = make(device)
    kwargs = {"max_new_tokens": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        model.generate(prompt(device), **kwargs)


def test_empty_prompt_and_bad_ids(device):
    model = make(device)
    with pytest.raises(ValueError, match="T >= 1"):
        model.generate(np.zeros((1, 0), dtype=np.int64), 2)
    with pytest.raises(IndexError, match="token id 40"):
        model.generate([[1, 40]], 2)


def test_top_p_stops_as_soon_as_the_mass_reaches_p():
    # Hugging Face's TopPLogitsWarper keeps the smallest set whose mass is >= p: [0.5] alone at p = 0.5
    z = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.5)), [True, False, False, False])
    assert np.array_equal(np.isfinite(top_p_filter(z, 0.75)), [True, True, False, False])
    assert np.array_equal(np.isfinite(top_p_filter(z + 3, 0.6)), [True, True, False, False]), "softmax, not exp"
