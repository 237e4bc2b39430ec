"""Module 10's counts follow the backend's one rule (`_check_whole`): a Python int or a NumPy integer, never
a bool or a float (2.0 neither), and at least the argument's minimum. GradScaler took growth_interval=2.0 and
True (int(v) == v); grid_for refused np.int64 sizes (tuple(np.int64(8))) and took block=True and shape=-1;
softmax_cross_entropy_rows took threads=True."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.cuda.launch import grid_for
from tinytorch.cuda.raw import softmax_cross_entropy_rows


def _rows(threads):
    """Only the threads check runs on a CPU: past it, host arrays are refused (or CuPy is missing)."""
    try:
        softmax_cross_entropy_rows(np.zeros((2, 3), np.float32), np.zeros(2, np.int64), threads=threads)
    except (ImportError, TypeError) as err:
        if "threads" in str(err):
            raise


# name: (call(value), a good value, the minimum, the error it raises)
SITES = {
    "GradScaler.growth_interval": (lambda v: tt.amp.GradScaler("cpu", growth_interval=v), 2, 1,
                                   r"GradScaler: growth_interval must be a whole number >= 1, got .* \(steps\)"),
    "grid_for.block": (lambda v: grid_for(8, v), 2, 1, "grid_for: .* block sizes >= 1"),
    "grid_for.shape": (lambda v: grid_for(v, 4), 2, 0, "grid_for: .* whole-number sizes >= 0"),
    "softmax_cross_entropy_rows.threads": (_rows, 2, 1, "threads=.* must be a power of two from 1 to 1024"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_counts_follow_one_whole_number_rule(site, whole_number_rule):
    whole_number_rule(*SITES[site])


def test_grid_for_gives_python_ints():
    assert grid_for(np.int64(9), np.int64(4)) == 3 and type(grid_for(np.int64(9), 4)) is int
    assert grid_for((np.int64(7), 6), (4, np.int64(4))) == (2, 2)
