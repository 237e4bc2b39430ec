"""Each user error gets a clear message that names what is wrong."""

import re

import numpy as np
import pytest

import tinytorch as tt


@pytest.mark.parametrize(
    "data, dim",
    [([[1, 2], [3]], 1), ([[1.0], [2.0, 3.0], [4.0]], 1), ([[[1, 2], [3, 4]], [[5, 6], [7]]], 2),
    ],
)
def test_ragged_list_raises_value_error_naming_dim(data, dim):
    with pytest.raises(ValueError) as info:
        tt.tensor(data)
    msg = str(info.value)
    assert "ragged" in msg.lower(), msg
    assert re.search(rf"dim\w*\W{{0,3}}{dim}\b", msg), msg


@pytest.mark.parametrize(
    "sa, sb",
    [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (2,)), ((5,), (4, 2)), ((2, 3, 4), (5, 4, 2)),
     ((2, 2, 3), (2, 2, 3))],
)
def test_matmul_shape_mismatch_names_both_shapes(sa, sb, device):
    with pytest.raises((ValueError, RuntimeError)) as info:
        tt.ones(sa, device=device) @ tt.ones(sb, device=device)
    msg = str(info.value)
    assert str(sa) in msg and str(sb) in msg, msg


def test_matmul_zero_dim_raises(device):
    with pytest.raises((ValueError, RuntimeError)):
        tt.tensor(2.0, device=device) @ tt.ones(2, device=device)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: tt.tensor([1 + 2j]), "complex"),
        (lambda: tt.tensor(np.array([1, 2], dtype=np.complex64)), "complex64"),
        (lambda: tt.tensor(["a", "b"]), None),
        (lambda: tt.tensor(np.array([object(), object()])), "object"),
        (lambda: tt.zeros(2, dtype=np.complex128), "complex128"),
        (lambda: tt.from_numpy(np.array([1j])), "complex"),
        (lambda: tt.ones(2).to(np.complex64), "complex64"),
    ],
    ids=["py-complex", "np-complex64", "str", "object", "zeros-complex", "from_numpy", "to"],
)
def test_unsupported_dtype_raises_type_error(make, name):
    with pytest.raises(TypeError) as info:
        make()
    msg = str(info.value)
    if name is None:  # a string array: numpy calls it <U1 / str
        assert any(s in msg for s in ("<U", "str", "U1")), msg
    else:
        assert name in msg, msg
