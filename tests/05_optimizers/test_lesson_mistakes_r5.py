"""Round-5 mutation escapes of module 05: plausible wrong answers that the older tests let through."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn.utils import _vector_norm, clip_grad_norm_


def test_vector_norm_widens_float16_for_every_p():
    # 1000 cubes of 10 add up to 1e6, beyond float16's 65504; the 3-norm itself, 100, fits
    got = _vector_norm(np, np.full(1000, 10.0, np.float16), 3.0)
    assert got.dtype == np.float16 and np.isclose(got, 100.0, rtol=1e-3)


def test_vector_norm_keeps_float64_wide():
    # squares of 1e-30 underflow in float32; float64 must not be narrowed
    got = _vector_norm(np, np.full(4, 1e-30), 2.0)
    assert got.dtype == np.float64 and np.isclose(got, 2e-30, rtol=1e-9, atol=0)
    assert np.isclose(_vector_norm(np, np.full(4, 1e-30), 1.0), 4e-30, rtol=1e-9, atol=0)


def test_zero_norm_is_float():
    got = _vector_norm(np, np.array([[3.0, 0.0], [0.0, -1.0]], np.float32), 0.0)
    assert got.dtype == np.float32 and got == 2.0
    p = tt.tensor([1.0, 1.0], requires_grad=True)
    p.grad = tt.tensor([0.0, 5.0])
    assert clip_grad_norm_([p], 10.0, norm_type=0).dtype == np.float32


def test_error_if_nonfinite_catches_nan():
    p = tt.tensor([1.0, 1.0], requires_grad=True)
    p.grad = tt.tensor([np.nan, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_zero_gradients_with_max_norm_zero_stay_zero():
    p = tt.tensor([1.0, 1.0], requires_grad=True)
    p.grad = tt.tensor([0.0, 0.0])
    with np.errstate(all="raise"):
        total = clip_grad_norm_([p], 0.0)
    assert total.item() == 0.0 and p.grad.data.tolist() == [0.0, 0.0]
