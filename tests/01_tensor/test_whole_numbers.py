"""One rule for every count and size argument (batch_size, n_head, patience, rank, ...): the backend's
`_check_whole`. A Python int or a NumPy integer is a whole number; a bool, a float (even 2.0) and a Tensor are not."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.backend import _check_whole, _is_whole


@pytest.mark.parametrize("value, ok", [
    (2, True), (np.int64(2), True), (np.uint8(2), True),
    (True, False), (np.bool_(True), False), (2.0, False), (np.float32(2.0), False), (0, False), (-1, False),
    ("2", False), (None, False), (tt.tensor(2), False),
])
def test_whole_number_rule(value, ok):
    assert _is_whole(value) == ok
    if ok:
        got = _check_whole(value, "n_things")
        assert got == 2 and type(got) is int, "a NumPy integer comes back as a Python int"
    else:
        with pytest.raises(ValueError, match=r"^n_things must be a whole number >= 1, got .*; it counts$"):
            _check_whole(value, "n_things", hint="; it counts")


def test_the_minimum_is_the_callers():
    assert _check_whole(0, "max_new_tokens", 0) == 0 and _check_whole(np.int64(256), "vocab_size", 256) == 256
    with pytest.raises(ValueError, match="vocab_size must be a whole number >= 256, got 255"):
        _check_whole(255, "vocab_size", 256)
