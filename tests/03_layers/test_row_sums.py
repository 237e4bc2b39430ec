"""Module 03's provided row sums (a BLAS matrix-vector product, a vecdot) equal NumPy's reductions."""

import numpy as np
import pytest

from tinytorch.nn.functional import _row_mean, _row_sum


@pytest.mark.parametrize("shape", [(6, 128), (2, 3, 64, 64), (4, 1000), (5,)])
def test_row_sums_equal_numpys(shape, rng):
    a = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(_row_sum(a), a.sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_row_sum(a, b), (a * b).sum(axis=-1, keepdims=True), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(_row_mean(a), a.mean(axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)
    assert _row_sum(a).dtype == np.float32 and _row_mean(a, b).shape == shape[:-1] + (1,)
