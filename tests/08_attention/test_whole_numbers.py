"""Module 08's counts follow the backend's one rule (`_check_whole`): a Python int or a NumPy integer, never
a bool or a float (2.0 neither). window=2.0 and window=True were taken (int(window) == window), and so were
n_head=2.0 (8 % 2.0 == 0) and n_kv_head=True."""

import pytest

import tinytorch as tt
from tinytorch.nn.attention import CausalSelfAttention
from tinytorch.nn.functional import scaled_dot_product_attention as sdpa

Q = tt.randn(1, 2, 4, 4)

# name: (call(value), the error it raises); a good value is 2, the minimum 1
SITES = {
    "sdpa.window": (lambda v: sdpa(Q, Q, Q, is_causal=True, window=v),
                    r"attention: window must be a whole number >= 1, got .* \(each query sees"),
    "CausalSelfAttention.n_embd": (lambda v: CausalSelfAttention(v, 1), "n_embd must be a whole number >= 1"),
    "CausalSelfAttention.n_head": (lambda v: CausalSelfAttention(8, v), "n_head must be a whole number >= 1"),
    "CausalSelfAttention.n_kv_head": (lambda v: CausalSelfAttention(8, 2, n_kv_head=v),
                                      "n_kv_head must be a whole number >= 1"),
    "CausalSelfAttention.window": (lambda v: CausalSelfAttention(8, 2, window=v), "window must be a whole number >= 1"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_counts_follow_one_whole_number_rule(site, whole_number_rule):
    call, error = SITES[site]
    whole_number_rule(call, 2, 1, error)


def test_a_window_without_is_causal_still_says_so():
    with pytest.raises(ValueError, match="window=2 needs is_causal=True"):
        sdpa(Q, Q, Q, window=2)
