"""The CPU fast path equals the lesson's version: attention weights with one shift per (batch, head) block."""

import numpy as np
import pytest

from tinytorch.nn.functional import _causal_bias, _fast_attention_weights, attention_weights


def scores_inputs(rng, batch=(3, 2), t_q=7, t_k=9, d=5, scale=1.0):
    q = (rng.standard_normal(batch + (t_q, d)) * scale).astype(np.float32)
    k = rng.standard_normal(batch + (t_k, d)).astype(np.float32)
    return q, k


@pytest.mark.parametrize("masked", ["none", "causal", "per-row"])
def test_fast_attention_weights_equal_the_lessons(masked, rng):
    q, k = scores_inputs(rng)
    bias = {"none": None, "causal": _causal_bias(7, 9, None, "cpu", np.float32),
            "per-row": np.where(rng.random((3, 1, 7, 9)) < 0.3, -np.inf, 0).astype(np.float32)}[masked]
    np.testing.assert_allclose(_fast_attention_weights(q, k, bias), attention_weights(q, k, bias), atol=1e-6)


def test_rows_far_below_their_block_are_redone_exactly(rng):
    q, k = scores_inputs(rng)
    q[0, 1, 3] *= 0.0  # a row of zeros: its scores are all 0 ...
    q[0, 1, 4] = k[0, 1, 0] * 40  # ... while another row of the same block reaches ~40 * |k|^2, far above
    bias = np.zeros((7, 9), np.float32)
    bias[5] = -200.0  # a row pushed 200 below the rest: e^(-200) underflows to 0 without the redo
    bias[6] = -95.0  # and one 95 below: denormal numbers, a few bits of precision left
    fast, exact = _fast_attention_weights(q, k, bias), attention_weights(q, k, bias)
    np.testing.assert_allclose(fast, exact, atol=1e-6)
    np.testing.assert_allclose(fast.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(fast[0, 1, 3], 1 / 9, atol=1e-6)


def test_fully_masked_rows_and_blocks_are_zero(rng):
    q, k = scores_inputs(rng)
    bias = np.zeros((3, 2, 7, 9), np.float32)
    bias[0, 0, 2] = -np.inf  # one row
    bias[1, 1] = -np.inf  # one whole (batch, head) block
    fast = _fast_attention_weights(q, k, bias)
    assert np.isfinite(fast).all()
    assert not fast[0, 0, 2].any() and not fast[1, 1].any()
    np.testing.assert_allclose(fast, attention_weights(q, k, bias), atol=1e-6)


def test_nan_scores_stay_nan_as_in_the_lesson(rng):
    q, k = scores_inputs(rng)
    q[2, 0, 1, 0] = np.nan
    fast, exact = _fast_attention_weights(q, k), attention_weights(q, k)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(exact))


def test_large_scores_do_not_overflow(rng):
    q, k = scores_inputs(rng, scale=60.0)  # scores in the hundreds: e^s overflows without a shift
    fast = _fast_attention_weights(q, k)
    assert np.isfinite(fast).all()
    np.testing.assert_allclose(fast, attention_weights(q, k), atol=1e-6)


def test_float16_rows_far_below_their_block_equal_the_lessons(rng):
    """float16's exponentials flush to 0 some 11 units below the block's maximum, long before a row's
    sum is under the float32 cutoff: half-precision scores take the lesson's per-row shift."""
    q, k = scores_inputs(rng, batch=(1, 1), t_q=8, t_k=8, d=16, scale=0.25)
    bias = np.zeros((8, 8), np.float16)
    bias[5] = -16.0
    q, k = q.astype(np.float16), k.astype(np.float16)
    fast = _fast_attention_weights(q, k, bias)
    want = attention_weights(q.astype(np.float32), k.astype(np.float32), bias.astype(np.float32))
    assert fast.dtype == np.float16
    np.testing.assert_allclose(fast.astype(np.float32), want, atol=3e-3, err_msg="row 5 lost to float16 underflow")


def test_no_queries_give_no_weights(rng):
    q, k = scores_inputs(rng, t_q=0)
    assert _fast_attention_weights(q, k).shape == attention_weights(q, k).shape == (3, 2, 0, 9)
