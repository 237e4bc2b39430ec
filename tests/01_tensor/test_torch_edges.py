"""Edge cases where NumPy's answer differs from PyTorch's: dtypes of clamp with 0-d bounds, reductions' dims
(values and gradients of pow, max/min and dim=() need backward: tests/02_autograd)."""

import numpy as np
import pytest

import tinytorch as tt

def host(t):
    return t.cpu().numpy()


# (x values, x dtype, min, max): a bound is a number, None, or (values, dtype) for a tensor
CLAMP_CASES = [
    ([0.5, 1.5, -1.0], "float32", ([1.0], "float64"), None),   # shaped float64 bound: float64
    ([0.5, 1.5, -1.0], "float32", (1.0, "float64"), None),     # 0-d float64 bound: stays float32
    ([0.5, 1.5, -1.0], "float32", None, (1.0, "float64")),
    ([0.5, 1.5, -1.0], "float16", (0.0, "float32"), (1.0, "float64")),
    ([1, 2, 3], "int32", (2, "int64"), None),                  # 0-d int64 bound: stays int32
    ([1, 2, 3], "int64", (1.5, "float64"), None),              # 0-d of a higher kind: its dtype
    ([1, 2, 3], "int64", (1.5, "float64"), (2.5, "float16")),
    ([1, 2, 3], "int64", 1.5, None),                           # a Python float: the default float32
    ([1, 2, 3], "int64", 0, 2),
]


@pytest.mark.parity
@pytest.mark.parametrize("values, dtype, lo, hi", CLAMP_CASES)
def test_clamp_dtype_and_values_match_torch(values, dtype, lo, hi, device):
    torch = pytest.importorskip("torch")

    def ours(b):
        return tt.tensor(b[0], dtype=getattr(tt, b[1]), device=device) if isinstance(b, tuple) else b

    def theirs(b):
        return torch.tensor(b[0], dtype=getattr(torch, b[1])) if isinstance(b, tuple) else b

    out = tt.tensor(values, dtype=getattr(tt, dtype), device=device).clamp(ours(lo), ours(hi))
    ref = torch.tensor(values, dtype=getattr(torch, dtype)).clamp(theirs(lo), theirs(hi))
    assert out.dtype == np.dtype(str(ref.dtype).replace("torch.", ""))
    np.testing.assert_array_equal(host(out), ref.numpy())


@pytest.mark.parametrize("dim", [(), []])
@pytest.mark.parametrize("name", ["sum", "mean", "var"])
def test_an_empty_dim_reduces_over_all_as_in_torch(name, dim, device):
    """torch 2.x: dim=() or [] means every dim for these reductions (NumPy's axis=() reduces none)."""
    x = tt.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), device=device)
    out, whole = getattr(x, name)(dim=dim), getattr(x, name)()
    assert out.shape == () and np.allclose(host(out), host(whole)), f"{name}(dim={dim!r}) gave {host(out)}"


def test_a_dim_out_of_range_is_an_error_even_for_a_0d_tensor():
    with pytest.raises(IndexError, match="out of range"):
        tt.tensor(1.0).sum(dim=3)
