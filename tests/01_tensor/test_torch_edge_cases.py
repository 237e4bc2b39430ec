"""Edge inputs where TinyTorch disagreed with PyTorch (forward values, dtypes, errors): 0-d tensors, empty dims,
integer powers, dtype promotion in cat/sum/mean, flatten/expand/split arguments. Gradients: tests/02_autograd."""

import warnings

import numpy as np
import pytest

import tinytorch as tt


def host(t):
    return t.cpu().numpy()


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [0, -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_max_min_of_a_0d_tensor_along_dim_0_or_minus_1(name, dim, keepdim, device):
    """torch: tensor(2.5).max(dim=0) is (values=tensor(2.5), indices=tensor(0)), both 0-d, keepdim or not."""
    out = getattr(tt.tensor(2.5, device=device), name)(dim=dim, keepdim=keepdim)
    assert out.values.shape == () and out.indices.shape == ()
    assert out.values.item() == 2.5 and out.indices.item() == 0
    with pytest.raises(IndexError):
        getattr(tt.tensor(2.5, device=device), name)(dim=1)


@pytest.mark.parametrize("dims", [(0, -1), (0, 0), (-1, -1)])
def test_transpose_of_a_0d_tensor(dims, device):
    out = tt.tensor(3.0, device=device).transpose(*dims)
    assert out.shape == () and out.item() == 3.0
    with pytest.raises(IndexError):
        tt.tensor(3.0, device=device).transpose(0, 1)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((0,), 0), ((0, 3), 0), ((0, 3), -1), ((3, 0), 1)])
def test_softmax_over_an_empty_tensor_is_empty(name, shape, dim, device):
    out = getattr(tt.zeros(*shape, device=device), name)(dim)
    assert out.shape == shape and out.dtype == tt.float32


def test_integer_tensor_to_negative_integer_powers(device):
    """torch truncates toward 0 (2 ** -1 = 0, (-1) ** -1 = -1, 0 ** -1 = 0); NumPy raised a ValueError that
    TinyTorch reported as 'shapes cannot be broadcast'. A tensor to a negative number: an error in both."""
    base = tt.tensor([1, 2, -1, -2, 0, 3], device=device)
    out = base ** tt.tensor([-1, -1, -1, -2, -1, 2], device=device)
    assert out.dtype == tt.int64 and out.tolist() == [1, 0, -1, 0, 0, 9]
    out = 2 ** tt.tensor([-1, 0, 3], device=device)
    assert out.dtype == tt.int64 and out.tolist() == [0, 1, 8]
    assert (tt.tensor([2, 3], dtype=tt.int32, device=device) ** tt.tensor(-1, device=device)).tolist() == [0, 0]
    with pytest.raises(RuntimeError, match="negative integer powers"):
        base ** -1
    with pytest.raises(ValueError, match=r"\(2,\) and \(3,\)"):  # a real broadcasting error keeps its message
        tt.tensor([2, 3], device=device) ** tt.tensor([1, 2, 3], device=device)


@pytest.mark.parametrize("other, want", [(tt.int64, tt.float32), (tt.int32, tt.float32), (tt.bool, tt.float32),
                                         (tt.float64, tt.float64), (tt.float16, tt.float32)])
def test_cat_and_stack_promote_as_torch(other, want, device):
    """torch.cat([float32, int64]) is float32; NumPy's concatenate made it float64."""
    a = tt.tensor([[1.5, 2.5]], device=device)
    b = tt.tensor([[1, 0]], dtype=other, device=device)
    for out in (tt.cat([a, b]), tt.cat([b, a]), tt.stack([a, b])):
        assert out.dtype == want
    assert tt.cat([b, b]).dtype == other
    assert tt.cat([tt.tensor([1], dtype=tt.int64, device=device), tt.tensor([1.0], dtype=tt.float16, device=device)]).dtype \
        == tt.float16


def test_sum_of_uint8_is_int64(device):
    """torch sums bytes into int64; NumPy into uint64, where a later `total - 500` wraps around."""
    total = tt.tensor([200, 200], dtype=tt.uint8, device=device).sum()
    assert total.dtype == tt.int64 and total.item() == 400
    assert (total - 500).item() == -100
    rows = tt.tensor([[200, 200], [1, 2]], dtype=tt.uint8, device=device).sum(dim=1, keepdim=True)
    assert rows.dtype == tt.int64 and rows.tolist() == [[400], [3]]


@pytest.mark.parametrize("dim, keepdim, want", [(None, False, 40032.0), (0, False, [40032.0]), (0, True, [[40032.0]])])
def test_mean_of_float16_sums_in_float32(dim, keepdim, want, device):
    """torch's float16 mean accumulates in float32: [60000, 60000, 100] averages to 40032 (40033.3 rounded to a
    half), where the float16 sum overflowed to inf first."""
    x = tt.tensor([[60000.0], [60000.0], [100.0]], dtype=tt.float16, device=device)
    out = x.mean() if dim is None else x.mean(dim=dim, keepdim=keepdim)
    assert out.dtype == tt.float16
    np.testing.assert_array_equal(host(out), np.array(want, dtype=np.float16))


@pytest.mark.parametrize("start, end", [(2, 1), (-1, 0), (1, 0)])
def test_flatten_start_after_end_is_an_error(start, end, device):
    with pytest.raises(RuntimeError, match="start_dim"):
        tt.zeros(2, 3, 4, device=device).flatten(start, end)


@pytest.mark.parametrize("start, end", [(0, 3), (-4, -1), (3, 3)])
def test_flatten_dims_out_of_range_are_an_error(start, end, device):
    with pytest.raises(IndexError, match="out of range"):
        tt.zeros(2, 3, 4, device=device).flatten(start, end)


def test_flatten_of_a_0d_tensor_takes_dims_0_and_minus_1(device):
    assert tt.tensor(2.0, device=device).flatten(0, -1).shape == (1,)
    with pytest.raises(IndexError):
        tt.tensor(2.0, device=device).flatten(0, 1)


@pytest.mark.parametrize("sizes", [(-1, 2, 3), (-1, -1, 3), (3,)])
def test_expand_refuses_minus_1_in_a_new_dim_and_fewer_dims(sizes, device):
    """expand(-1, 2, 3) of a (2, 3) tensor silently gave shape (3, 2, 3) (the -1 read x.shape[-1])."""
    with pytest.raises(RuntimeError, match="expand"):
        tt.zeros(2, 3, device=device).expand(*sizes)


def test_expand_with_minus_1_in_existing_dims(device):
    assert tt.zeros(1, 3, device=device).expand(4, 2, -1).shape == (4, 2, 3)


@pytest.mark.parametrize("size", [0, 2, 5])
def test_split_of_an_empty_dim_gives_one_empty_piece(size, device):
    pieces = tt.zeros(0, 2, device=device).split(size)
    assert len(pieces) == 1 and pieces[0].shape == (0, 2)


@pytest.mark.parametrize("size", [0, -1])
def test_split_size_must_be_positive(size, device):
    with pytest.raises(RuntimeError, match="split"):
        tt.zeros(5, 2, device=device).split(size)


@pytest.mark.parametrize("flag, want", [(True, [[1.0, 2.0]]), (False, np.zeros((0, 2)))])
def test_a_0d_boolean_index_adds_a_dim(flag, want, device):
    """x[True] is x[None], x[False] an empty x[None], as in NumPy and torch (nonzero() of a 0-d array raised)."""
    x = tt.tensor([1.0, 2.0], device=device)
    for index in (flag, tt.tensor(flag, device=device)):
        out = x[index]
        assert out.shape == np.shape(want)
        np.testing.assert_array_equal(host(out), want)
    s = tt.tensor(2.0, device=device)
    assert s[s > 0].tolist() == [2.0] and s[s < 0].shape == (0,)


def test_setitem_with_a_0d_mask(device):
    s = tt.tensor(2.0, device=device)
    s[s > 0] = 3.0
    assert s.item() == 3.0
    s[s < 0] = 5.0
    assert s.item() == 3.0


def test_repr_of_float16_does_not_warn():
    """Comparing a float16 magnitude with 1e8 cast 1e8 to float16 (inf) with an overflow RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        text = repr(tt.tensor([0.5, 1e-5, 3.0], dtype=tt.float16))
    assert text == "tensor([5.0000e-01, 1.0014e-05, 3.0000e+00], dtype=float16)"


def test_cat_backward_gives_each_piece_its_input_dtype(device):
    """torch: the gradient of each input of cat([float32, float64]) is in that input's dtype."""
    a = tt.ones(2, requires_grad=True, device=device)
    b = tt.ones(3, dtype=tt.float64, requires_grad=True, device=device)
    ga, gb = tt.cat([a, b])._backward(tt.ones(5, dtype=tt.float64, device=device).data)
    assert ga.dtype == np.float32 and gb.dtype == np.float64
    assert ga.shape == (2,) and gb.shape == (3,)
