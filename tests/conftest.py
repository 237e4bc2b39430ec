"""Shared fixtures for the TinyTorch test suite.

Run on another device with ``TINYTORCH_TEST_DEVICE=cuda pytest``; without a
usable GPU every test that takes the ``device`` fixture is skipped, with the
reason the package gives (CuPy missing, no driver, no device).
"""

import os

import numpy as np
import pytest

import tinytorch as tt

TEST_DEVICE = os.environ.get("TINYTORCH_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def device():
    """The device string tests create their tensors on ("cpu" or "cuda[:N]")."""
    if TEST_DEVICE.startswith("cuda") and not tt.cuda_available():
        pytest.skip(
            f"TINYTORCH_TEST_DEVICE={TEST_DEVICE} but CUDA is unavailable: "
            f"{tt.cuda_unavailable_reason()}"
        )
    return TEST_DEVICE


@pytest.fixture
def rng():
    """A seeded NumPy generator, so failures reproduce."""
    return np.random.default_rng(0)
