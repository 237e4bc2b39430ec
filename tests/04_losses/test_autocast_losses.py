"""The losses go through module 01's autocast hook under their own names.

Module 10's `autocast` runs the ops on its float32 list in float32, and can do so only for
ops that call through the hook. This test plants a recording policy in the hook (module 01
only), so it runs before module 10 exists; tests/10_cuda/test_amp.py checks the dtypes
against torch.autocast.
"""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F
from tinytorch.core.tensor import _autocast_state

LOSSES = {
    "mse_loss": lambda x, t, y: F.mse_loss(x, y),
    "cross_entropy": lambda x, t, y: F.cross_entropy(x, t),
    "nll_loss": lambda x, t, y: F.nll_loss(F.log_softmax(x, dim=1), t),
    "binary_cross_entropy_with_logits": lambda x, t, y: F.binary_cross_entropy_with_logits(x, y.sigmoid()),
}


@pytest.mark.parametrize("name", LOSSES)
def test_each_loss_calls_autocast_under_its_name(name, rng):
    x, y = (tt.tensor(rng.standard_normal((4, 5)).astype(np.float32)) for _ in range(2))
    target = tt.tensor(np.array([0, 3, 1, 4]))
    plain = LOSSES[name](x, target, y).item()
    seen = []

    def record(op, fn, args, kwargs):  # a policy that changes nothing, only records
        seen.append(op)
        return fn(*args, **kwargs)
    _autocast_state.run = record
    try:
        value = LOSSES[name](x, target, y).item()
    finally:
        _autocast_state.run = None
    assert name in seen, f"{name} must be decorated with @_autocast_op({name!r}); the hook saw {seen}"
    assert value == plain, "a policy that changes nothing must leave the loss unchanged"
