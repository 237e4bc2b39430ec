"""A regression guard for keeping the float32 detour in the float16 norms (`_in_float32_if_half`): float32
statistics rounded back to float16 left rows of 300 + N(0, 1) 0.24 from PyTorch's float16 layer_norm; run wholly in
float32, they stay within one float16 step, and these tests keep it that way."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.nn import functional as F


@pytest.mark.parity
@pytest.mark.parametrize("rows", ["300 + N(0, 1)", "300 * N(0, 1)", "1e-3 * N(0, 1)", "N(0, 1)"])
def test_float16_layer_norm_is_one_float16_step_from_torch(rows, rng):
    torch = pytest.importorskip("torch")
    d = 768
    noise = rng.standard_normal((16, d))
    x = {"300 + N(0, 1)": 300 + noise, "300 * N(0, 1)": 300 * noise, "1e-3 * N(0, 1)": 1e-3 * noise,
         "N(0, 1)": noise}[rows].astype(np.float16)
    w = rng.uniform(0.5, 2, d).astype(np.float16)
    b = (0.1 * rng.standard_normal(d)).astype(np.float16)
    ours = F.layer_norm(tt.tensor(x), (d,), tt.tensor(w), tt.tensor(b))
    ref = torch.nn.functional.layer_norm(torch.tensor(x), (d,), torch.tensor(w), torch.tensor(b)).numpy()
    assert ours.dtype == tt.float16
    step = float(np.spacing(np.abs(ref).max()))  # one float16 step at the largest output
    assert np.abs(ours.numpy().astype(np.float64) - ref.astype(np.float64)).max() <= step
