"""`Tensor.__index__`: a one-element integer or bool tensor is a Python int wherever Python asks for an index
(`operator.index`, `range`, list and tuple indexing, slices, `hex`), as in PyTorch; anything else is a TypeError."""

import operator

import numpy as np
import pytest

import tinytorch as tt

ONE_ELEMENT_INTEGERS = [
    (tt.tensor(3), 3),
    (tt.tensor([2]), 2),
    (tt.tensor([[1]]), 1),
    (tt.tensor(-1), -1),
    (tt.tensor(7, dtype=tt.int32), 7),
    (tt.tensor(200, dtype=tt.uint8), 200),
    (tt.tensor(5, dtype=tt.int8), 5),
    (tt.tensor(True), 1),
    (tt.tensor([False]), 0),
]


@pytest.mark.parametrize("t, want", ONE_ELEMENT_INTEGERS)
def test_operator_index_of_a_one_element_integer_tensor(t, want, device):
    got = operator.index(t.to(device))
    assert got == want and type(got) is int  # a bool tensor gives 1 or 0, not True or False


def test_python_takes_an_integer_tensor_as_an_index(device):
    three, one = tt.tensor(3, device=device), tt.tensor([1], device=device)
    assert list(range(three)) == [0, 1, 2]
    assert [10, 20, 30][one] == 20 and (10, 20, 30)[tt.tensor(-1, device=device)] == 30
    assert [10, 20, 30, 40][one:three] == [20, 30]
    assert "abcd"[one] == "b" and hex(tt.tensor(255, device=device)) == "0xff"


@pytest.mark.parametrize("t", [
    tt.tensor(3.0), tt.tensor([1.0]), tt.tensor(2.0, dtype=tt.float16), tt.tensor([1, 2]),
    tt.tensor(np.zeros(0, dtype=np.int64)), tt.tensor([[1, 2], [3, 4]]),
], ids=["float-0d", "float-1", "float16", "two-ints", "empty", "matrix"])
def test_a_float_or_many_element_tensor_is_no_index(t, device):
    t = t.to(device)
    with pytest.raises(TypeError, match="only integer tensors of a single element can be converted to an index"):
        operator.index(t)
    with pytest.raises(TypeError):
        [1, 2, 3][t]
    with pytest.raises(TypeError):
        range(t)


def test_tensor_indexing_keeps_its_own_rules(device):
    """A Tensor index into a Tensor is still an array index: x[tensor([1])] keeps the dim, as in PyTorch."""
    x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert x[tt.tensor([1], device=device)].shape == (1, 2)
    assert x[tt.tensor(1, device=device)].shape == (2,)
    assert x[tt.tensor([True, False], device=device)].shape == (1, 2)


@pytest.mark.parity
def test_index_matches_torch():
    torch = pytest.importorskip("torch")
    for values, dtype in [(3, "int64"), ([2], "int64"), ([[1]], "int32"), (True, "bool"), (200, "uint8"),
                          (3.0, "float32"), ([1, 2], "int64"), ([], "int64")]:
        t = torch.tensor(values, dtype=getattr(torch, dtype))
        x = tt.tensor(np.array(values, dtype=dtype))
        try:
            want = operator.index(t)
        except TypeError as err:
            with pytest.raises(TypeError, match=str(err)):
                operator.index(x)
        else:
            got = operator.index(x)
            assert got == want and type(got) is type(want), (values, dtype)
