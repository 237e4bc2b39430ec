"""Edge inputs where the sampling utilities once disagreed with PyTorch / Hugging Face sampling."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.models import GPT, GPTConfig, sample_next_token, top_k_filter, top_p_filter

LOGITS = np.array([[0.0, 1.0, 5.0, 2.0]])


@pytest.mark.parametrize("kwargs, message", [
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),  # kept nothing: every draw was token 0
    ({"top_p": -0.5}, r"top_p must be in \(0, 1\]"),
    ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"temperature": -1.0}, "temperature must be a number >= 0"),  # sampled the least likely tokens
    ({"temperature": float("nan")}, "temperature must be a number >= 0"),  # every draw was token 0
    ({"top_k": 0}, "top_k must be a whole number >= 1"),  # NumPy's "kth(=4) out of bounds"
])
def test_sample_next_token_checks_its_arguments(kwargs, message):
    """generate refused these; sample_next_token, called directly, drew from a wrong distribution."""
    with pytest.raises(ValueError, match=message):
        sample_next_token(LOGITS, rng=np.random.default_rng(0), **kwargs)


def test_top_p_filter_refuses_p_zero():
    """p = 0 kept no token at all (every logit -inf), a row with no distribution."""
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        top_p_filter(LOGITS, 0.0)


@pytest.mark.parametrize("row", [[np.nan, 1.0, 2.0], [-np.inf, -np.inf, -np.inf], [np.inf, 1.0, 2.0]],
                         ids=["nan", "all -inf", "+inf"])
def test_sampling_a_row_without_a_distribution_raises(row):
    """torch.multinomial refuses probabilities with nan or inf; the NumPy sampler returned token 0."""
    with pytest.raises(ValueError, match="no finite maximum"):
        sample_next_token(np.array([row]), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="no finite maximum"):
        sample_next_token(np.array([row]), top_p=0.9, rng=np.random.default_rng(0))


def test_generate_from_a_model_that_outputs_nan_raises(device):
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8)).to(device)
    model.lm_head.weight.data.fill(float("nan"))  # tied: the embeddings too
    with pytest.raises(ValueError, match="no finite maximum"):
        model.generate([[1, 2, 3]], 2, seed=0)
    greedy = model.generate([[1, 2, 3]], 1, temperature=0)  # argmax of nan: the first nan, as torch.argmax
    assert greedy.numpy().tolist() == [[1, 2, 3, 0]]


@pytest.mark.parametrize("temperature", [0, 1.0])
@pytest.mark.parametrize("shape", [(4,), (1, 1, 4), ()])
def test_sample_next_token_needs_logits_b_by_v(temperature, shape):
    """One id per row of (B, V): 1-D logits returned a 0-d argmax when greedy but an IndexError when sampling."""
    logits = np.zeros(shape) if shape == () else np.arange(4.0).reshape(shape)
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        sample_next_token(logits, temperature=temperature, rng=np.random.default_rng(0))
    if shape == (4,):  # one row is (1, V), in both modes
        assert sample_next_token(logits[None], temperature=temperature, rng=np.random.default_rng(0)).shape == (1,)


@pytest.mark.parametrize("k", [-1, "2"])
def test_top_k_filter_refuses_k_that_is_not_a_positive_int(k):
    """top_k_filter had no check (top_p_filter has one); 0, True, 2.0 and NumPy ints are in test_whole_numbers.py."""
    with pytest.raises(ValueError, match="top_k must be a whole number >= 1"):
        top_k_filter(LOGITS, k)
