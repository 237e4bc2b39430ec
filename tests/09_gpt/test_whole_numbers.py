"""Module 09's counts follow the backend's one rule (`_check_whole`): a Python int or a NumPy integer, never
a bool or a float (2.0 neither), and at least the argument's minimum. GPTConfig refused np.int64 and did not
check n_kv_head and window."""

import json

import numpy as np
import pytest

from tinytorch.models import GPT, GPTConfig, top_k_filter

TINY = dict(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=8)
LOGITS = np.array([[1.0, 3.0, 2.0, 0.5]])


def _generate(max_new_tokens):
    GPT(GPTConfig(**TINY)).generate(np.array([[1, 2]]), max_new_tokens, temperature=0.0)


# name: (call(value), a good value, the minimum, the error it raises)
SITES = {
    **{f"GPTConfig.{name}": (lambda v, name=name: GPTConfig(**{**TINY, name: v}), 2, 1,
                             f"GPTConfig.{name} must be a whole number >= 1")
       for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "window")},
    "generate.max_new_tokens": (_generate, 2, 0, "max_new_tokens must be a whole number >= 0"),
    "top_k_filter.k": (lambda v: top_k_filter(LOGITS, v), 2, 1, "top_k must be a whole number >= 1"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_counts_follow_one_whole_number_rule(site, whole_number_rule):
    whole_number_rule(*SITES[site])


def test_config_fields_become_python_ints():
    config = GPTConfig(**{**TINY, "n_layer": np.int64(2), "window": np.int64(4)})
    assert type(config.n_layer) is int and type(config.window) is int
    assert json.loads(json.dumps(config.to_dict()))["n_layer"] == 2, "a config from NumPy numbers saves as JSON"
