"""GradScaler on edge arguments, as torch.amp.GradScaler("cpu")."""

import numpy as np
import pytest

from tinytorch.amp import GradScaler


@pytest.mark.parametrize("init_scale", [1e39, 2.0 ** 128])
def test_grad_scaler_refuses_an_init_scale_that_float32_cannot_hold(init_scale):
    # torch keeps the scale in a float32 tensor: 1e39 raises "value cannot be converted to type float without
    # overflow" on its first scale(); here it became inf, so every step overflowed and backed off for ever
    with pytest.raises(ValueError, match="init_scale"):
        GradScaler(init_scale=init_scale)
    top = float(np.finfo(np.float32).max)  # the largest float32 is still taken
    assert GradScaler(init_scale=top).get_scale() == top
