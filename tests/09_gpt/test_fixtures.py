"""The lesson's test fixtures have a file of their own, out of the model's code."""

import numpy as np

import tinytorch as tt
from tinytorch.models import GPT, GPTConfig, fixtures, gpt


def test_fixtures_are_out_of_the_model_file():
    """_DecayToy and _spy_forward were defined in tinytorch/models/gpt.py, among the library code."""
    for name in ("_DecayToy", "_spy_forward"):
        assert not hasattr(gpt, name), f"tinytorch.models.gpt still defines the lesson's fixture {name}"
        assert hasattr(fixtures, name), f"tinytorch.models.fixtures lacks {name}"


def test_the_fixtures_work():
    toy = fixtures._DecayToy()
    assert toy.head.weight is toy.embed_tokens.weight, "the toy's head is tied to its embedding"
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8))
    seen, modes = [], []
    fixtures._spy_forward(model, seen, modes)
    model.generate([[1, 2, 3]], 2, temperature=0)
    del model.forward
    assert [s.shape for s in seen] == [(1, 3), (1, 1)] and modes == [False, False]
    assert np.array_equal(seen[0], [[1, 2, 3]])
