"""Indexing: basic (ints, slices, None, Ellipsis) and advanced (int/bool tensors, lists, arrays)."""

import numpy as np
import pytest

import tinytorch as tt

A = np.arange(60, dtype=np.float32).reshape(3, 4, 5)

INDEXES = [
    0, -1, (1, 2), (1, 2, 3), slice(1, 3), (slice(None), 1), (slice(None, None, 2),),
    (slice(None), slice(1, None, 2), -1), (None,), (slice(None), None, 1), (Ellipsis, 0),
    (0, Ellipsis), (Ellipsis, None), (Ellipsis, slice(1, 3)),
    [0, 2], [2, 0, 0], [-1], ([0, 1], [1, 2]), (slice(None), [0, 3]), (0, [1, 1, 3]),
    (Ellipsis, [4, 0]), (slice(1, None), [0, 0], slice(None, 2)),
]


@pytest.mark.parametrize("index", INDEXES, ids=[repr(i) for i in INDEXES])
def test_getitem_matches_numpy(index, device):
    out = tt.tensor(A, device=device)[index]
    expected = A[index]
    assert out.shape == expected.shape
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


def test_index_with_int_tensor_and_array(device):
    x = tt.tensor(A, device=device)
    idx = tt.tensor([2, 0, 2], device=device)
    np.testing.assert_array_equal(x[idx].cpu().numpy(), A[[2, 0, 2]])
    np.testing.assert_array_equal(x[np.array([1, 0])].cpu().numpy(), A[[1, 0]])
    np.testing.assert_array_equal(x[:, idx[:2]].cpu().numpy(), A[:, [2, 0]])
    two_d = tt.tensor([[0, 1], [2, 2]], device=device)
    np.testing.assert_array_equal(x[two_d].cpu().numpy(), A[np.array([[0, 1], [2, 2]])])


def test_index_with_bool_mask(device):
    x = tt.tensor(A, device=device)
    mask = x > 30
    out = x[mask]
    assert out.shape == (int((A > 30).sum()),)
    np.testing.assert_array_equal(out.cpu().numpy(), A[A > 30])
    row_mask = tt.tensor([True, False, True], device=device)
    np.testing.assert_array_equal(x[row_mask].cpu().numpy(), A[[True, False, True]])


def test_zero_dim_index_tensor(device):
    x = tt.tensor(A, device=device)
    np.testing.assert_array_equal(x[tt.tensor(1, device=device)].cpu().numpy(), A[1])


def test_index_out_of_range_raises(device):
    with pytest.raises(IndexError):
        tt.tensor(A, device=device)[3]
