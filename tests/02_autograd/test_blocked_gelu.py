"""GPT-2's GELU runs block by block (cache-sized blocks of 64 Ki elements); with tiny blocks, so that a
small input spans several and ends in a partial one, its gradient still passes gradcheck."""

import importlib

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.autograd import gradcheck

core_tensor = importlib.import_module("tinytorch.core.tensor")


@pytest.mark.parametrize("block", [4, 7, 1 << 16])
def test_blocked_tanh_gelu_passes_gradcheck(monkeypatch, rng, block):
    monkeypatch.setattr(core_tensor, "_BLOCK", block)
    x = tt.tensor(rng.standard_normal((3, 5)) * 3, dtype=tt.float64, requires_grad=True)
    assert gradcheck(lambda t: t.gelu(approximate="tanh"), (x,))


def test_blocked_tanh_gelu_matches_the_formula(monkeypatch, rng):
    monkeypatch.setattr(core_tensor, "_BLOCK", 4)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    expected = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(tt.tensor(x).gelu(approximate="tanh").numpy(), expected, rtol=1e-5, atol=1e-6)


def test_blocked_tanh_gelu_of_an_empty_tensor():
    x = tt.zeros(0, 3, requires_grad=True)
    x.gelu(approximate="tanh").sum().backward()
    assert x.grad.shape == (0, 3), "an empty input has an empty gradient (no block to run)"
