"""Dataset, TensorDataset, Subset, ConcatDataset, random_split."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.data import ConcatDataset, Dataset, Subset, TensorDataset, as_generator, random_split


def make(n, device):
    x = tt.tensor(np.arange(2 * n, dtype=np.float32).reshape(n, 2), device=device)
    y = tt.tensor(np.arange(n) % 3, device=device)
    return TensorDataset(x, y)


def test_tensor_dataset_items_and_len(device):
    ds = make(5, device)
    assert len(ds) == 5
    x, y = ds[3]
    assert x.data.tolist() == [6.0, 7.0] and int(y.item()) == 0
    x, y = ds[-1]
    assert x.data.tolist() == [8.0, 9.0], "negative indices count from the end"
    assert str(x.device) == str(tt.device(device))
    with pytest.raises(IndexError):
        ds[5]


def test_tensor_dataset_gather_matches_items(device):
    ds = make(7, device)
    x, y = ds.gather([6, 0, 3, 3])
    assert x.shape == (4, 2) and y.shape == (4,)
    assert tt.to_numpy(x.data).tolist() == [tt.to_numpy(ds[i][0].data).tolist() for i in (6, 0, 3, 3)]
    assert tt.to_numpy(y.data).tolist() == [6 % 3, 0, 0, 0]


def test_gather_takes_indices_as_items_do(device):
    """A batch index means what ds[i] means: -1 is the last sample, and one out of range is an IndexError
    naming the dataset and its length (not NumPy's message about some array's axis)."""
    ds = make(5, device)
    x, _ = ds.gather([-1, -5, 4])
    assert tt.to_numpy(x.data).tolist() == [[8.0, 9.0], [0.0, 1.0], [8.0, 9.0]]
    for bad in ([5], [0, -6]):
        with pytest.raises(IndexError, match=f"index {bad[-1]} is out of range for a TensorDataset of length 5"):
            ds.gather(bad)
    part = Subset(ds, [4, 2, 0])
    x, _ = part.gather([-1, 0])
    assert tt.to_numpy(x.data).tolist() == [[0.0, 1.0], [8.0, 9.0]], "a Subset's -1 is its own last sample"
    with pytest.raises(IndexError, match="index 3 is out of range for a Subset of length 3"):
        part.gather([3])  # within the parent's length: it must not quietly give the parent's sample 3


def test_tensor_dataset_rejects_bad_input():
    with pytest.raises(ValueError, match="first dimension.*\\(3,\\).*\\(4,\\)"):
        TensorDataset(tt.zeros(3), tt.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(TypeError, match="ndarray"):
        TensorDataset(np.zeros(3))
    with pytest.raises(ValueError, match="first dimension"):
        TensorDataset(tt.tensor(1.0))


def test_base_dataset_needs_getitem():
    with pytest.raises(NotImplementedError, match="__getitem__"):
        Dataset()[0]


def test_subset_renumbers_and_keeps_gather(device):
    ds = make(10, device)
    sub = Subset(ds, [9, 2, 5])
    assert len(sub) == 3
    assert sub[0][0].data.tolist() == ds[9][0].data.tolist()
    x, _ = sub.gather([2, 0])
    assert tt.to_numpy(x.data).tolist() == [[10.0, 11.0], [18.0, 19.0]], "gather maps subset positions to parent indices"

    class Plain(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return i * 10
    plain = Subset(Plain(), [3, 1])
    assert not hasattr(plain, "gather"), "no gather when the parent has none"
    assert [plain[0], plain[1]] == [30, 10]


def test_concat_dataset_and_add(device):
    a, b = make(3, device), make(2, device)
    both = ConcatDataset([a, b])
    assert len(both) == 5 and len(a + b) == 5
    assert both.cumulative_sizes == [3, 5]
    assert both[3][0].data.tolist() == b[0][0].data.tolist()
    assert both[-1][0].data.tolist() == b[1][0].data.tolist()
    with pytest.raises(IndexError, match="out of range"):
        both[5]
    with pytest.raises(ValueError, match="at least one"):
        ConcatDataset([])


def test_concat_skips_empty_parts():
    both = ConcatDataset([[], [1, 2], [], [3]])
    assert [both[i] for i in range(len(both))] == [1, 2, 3]


@pytest.mark.parametrize("n, lengths, expected", [
    (10, [7, 3], [7, 3]),
    (10, [0.7, 0.3], [7, 3]),
    (10, [0.5, 0.5], [5, 5]),
    (11, [0.5, 0.5], [6, 5]),  # the remainder goes round-robin, first split first
    (10, [1 / 3, 1 / 3, 1 / 3], [4, 3, 3]),
    (5, [0.0, 1.0], [0, 5]),
    (3, [0, 3], [0, 3]),
])
def test_random_split_lengths(n, lengths, expected):
    parts = random_split(list(range(n)), lengths, generator=0)
    assert [len(p) for p in parts] == expected
    indices = sorted(i for p in parts for i in p.indices)
    assert indices == list(range(n)), "the parts partition the dataset"


def test_random_split_errors():
    with pytest.raises(ValueError, match="add up to 9.*10 samples"):
        random_split(list(range(10)), [5, 4])
    with pytest.raises(ValueError, match="counts"):
        random_split(list(range(10)), [12, -2])
    with pytest.raises(ValueError, match="counts"):
        random_split(list(range(10)), [0.6, 0.6])


def test_random_split_is_reproducible():
    data = list(range(20))
    first = [p.indices for p in random_split(data, [10, 10], generator=3)]
    assert first == [p.indices for p in random_split(data, [10, 10], generator=3)]
    assert first != [p.indices for p in random_split(data, [10, 10], generator=4)]
    tt.manual_seed(1)
    seeded = [p.indices for p in random_split(data, [10, 10])]
    tt.manual_seed(1)
    assert seeded == [p.indices for p in random_split(data, [10, 10])], "tt.manual_seed makes generator=None repeat"


def test_as_generator():
    rng = np.random.default_rng(0)
    assert as_generator(rng) is rng
    assert as_generator(5).integers(1000) == np.random.default_rng(5).integers(1000)
    with pytest.raises(TypeError, match="generator"):
        as_generator("seed")
    with pytest.raises(TypeError):
        as_generator(True)


def test_normalize_indices_keeps_an_int64_array_in_range():
    """It runs once a batch: an int64 array in range comes back as it is; a list, or negatives, cost one array."""
    from tinytorch.data.dataset import _normalize_indices
    ready = np.array([4, 0, 2], dtype=np.int64)
    assert _normalize_indices(ready, 5, "TensorDataset") is ready, "an int64 array in range needs no copy"
    negative = np.array([-1, 0, -5], dtype=np.int64)
    out = _normalize_indices(negative, 5, "TensorDataset")
    assert out.tolist() == [4, 0, 0] and out.dtype == np.int64
    assert negative.tolist() == [-1, 0, -5] and not np.shares_memory(out, negative), "the caller's array is left alone"
    assert _normalize_indices(np.array([3, -1], dtype=np.int32), 5, "X").dtype == np.int64
    assert _normalize_indices((1, -2), 5, "X").tolist() == [1, 3] and _normalize_indices([], 5, "X").dtype == np.int64


def test_normalize_indices_makes_one_array_from_a_list_with_negatives():
    import tracemalloc

    from tinytorch.data.dataset import _normalize_indices
    n = 200_000
    indices = [-1] + list(range(n - 1))
    tracemalloc.start()
    try:
        out = _normalize_indices(indices, n, "TensorDataset")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out[0] == n - 1 and out[1:].tolist() == list(range(n - 1))
    assert peak < 1.5 * out.nbytes, f"a list with negatives: one int64 array at peak, not {peak / out.nbytes:.1f}"


@pytest.mark.parametrize("bad", [[True, False], np.array([True, False]), np.array([1.0, 0.0]), np.array([1.5])])
def test_gather_refuses_bool_and_float_index_arrays(bad):
    """Cast to int64 they would silently read samples 1 and 0 (or 1 for 1.5); a bool mask is not a batch."""
    ds = make(5, "cpu")
    for dataset in (ds, Subset(ds, [4, 3, 2, 1, 0])):
        with pytest.raises(TypeError, match="indices must be integers"):
            dataset.gather(bad)


def test_concat_hands_a_bool_on_as_pytorch_does():
    """PyTorch's ConcatDataset hands index True on unchanged (TensorDataset's t[True] adds a dim); it read sample 1."""
    ds = make(3, "cpu")
    both = ConcatDataset([ds, make(2, "cpu")])
    assert both[True][0].shape == ds[True][0].shape == (1, 3, 2)
    assert both[np.int64(1)][0].data.tolist() == ds[1][0].data.tolist()
