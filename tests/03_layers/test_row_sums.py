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


def test_half_precision_rows_are_summed_in_float32(rng):
    """A float16 row of 768 values near 100 sums past float16's 65504: the sums are taken in float32,
    the means come back as float16, and layer_norm / rms_norm stay finite and right."""
    import tinytorch as tt
    from tinytorch.nn import functional as F

    a = (100 + 3 * rng.standard_normal((4, 768))).astype(np.float16)
    mean = _row_mean(a)
    assert mean.dtype == np.float16
    np.testing.assert_allclose(mean, a.astype(np.float32).mean(axis=-1, keepdims=True), rtol=1e-3)
    want = (a - a.astype(np.float32).mean(axis=-1, keepdims=True)) / a.astype(np.float32).std(axis=-1, keepdims=True)
    out = F.layer_norm(tt.tensor(a), (768,)).data
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.astype(np.float32), want, atol=2e-2, err_msg="float16 layer_norm")
    x = (10 * rng.standard_normal((4, 768))).astype(np.float16)
    x32 = x.astype(np.float32)
    want = x32 / np.sqrt((x32 * x32).mean(axis=-1, keepdims=True))
    np.testing.assert_allclose(F.rms_norm(tt.tensor(x), (768,)).data.astype(np.float32), want, atol=2e-2,
                               err_msg="float16 rms_norm")
