"""The lesson's test fixtures (NumPy references of the kernels) have a file of their own, out of the launch code."""

import numpy as np

from tinytorch.cuda import fixtures, launch

NAMES = ("_reference_bias_gelu", "_reference_softmax", "_reference_layer_norm")


def test_fixtures_are_out_of_the_launch_file():
    for name in NAMES:
        assert hasattr(fixtures, name), f"tinytorch.cuda.fixtures lacks {name}"
        assert not hasattr(launch, name), f"tinytorch.cuda.launch still defines the lesson's fixture {name}"
    assert fixtures.__all__ == [], "the fixtures stay out of `from tinytorch.cuda import *`"


def test_the_references():
    x = np.array([[0.0, 1.0, -1.0]], np.float32)
    np.testing.assert_allclose(fixtures._reference_softmax(x).sum(-1), [1.0], rtol=1e-6)
    np.testing.assert_allclose(fixtures._reference_bias_gelu(x, 0.0), [[0.0, 0.841192, -0.158808]], atol=1e-6)
    out = fixtures._reference_layer_norm(x, np.ones(3), np.zeros(3), 0.0)
    np.testing.assert_allclose(out, [[0.0, 1.224745, -1.224745]], atol=1e-6)
