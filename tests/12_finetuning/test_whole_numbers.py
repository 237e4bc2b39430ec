"""Module 12's sizes follow the backend's one rule (`_check_whole`): a Python int or a NumPy integer, never
a bool or a float (2.0 neither). RNN sizes and LoRA's rank refused np.int64."""

import numpy as np
import pytest

from tinytorch import nn
from tinytorch.finetune import LoRALinear

# name: (call(value), the error it raises); a good value is 2, the minimum 1
SITES = {
    "RNN.input_size": (lambda v: nn.RNN(v, 3), "RNN: input_size must be a whole number >= 1"),
    "RNN.hidden_size": (lambda v: nn.RNN(3, v), "RNN: hidden_size must be a whole number >= 1"),
    "LSTM.num_layers": (lambda v: nn.LSTM(3, 3, num_layers=v), "LSTM: num_layers must be a whole number >= 1"),
    "LoRALinear.rank": (lambda v: LoRALinear(nn.Linear(4, 4), rank=v), "LoRALinear: rank must be a whole number >= 1"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_sizes_follow_one_whole_number_rule(site, whole_number_rule):
    call, error = SITES[site]
    whole_number_rule(call, 2, 1, error)


def test_rnn_sizes_become_python_ints():
    rnn = nn.GRU(np.int64(3), np.int64(4), num_layers=np.int64(2))
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers) == (3, 4, 2) and type(rnn.hidden_size) is int
    assert rnn.weight_hh_l1.shape == (12, 4)
