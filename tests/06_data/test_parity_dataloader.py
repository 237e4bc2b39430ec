"""DataLoader, samplers, random_split and default_collate against PyTorch's torch.utils.data."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinytorch as tt  # noqa: E402
from tinytorch.data import BatchSampler, DataLoader, Dataset, RandomSampler, default_collate, random_split  # noqa: E402

pytestmark = pytest.mark.parity
tud = torch.utils.data


class Items(Dataset, tud.Dataset):
    """One dataset both frameworks can read: sample i is (i, [i, 2i] as floats)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return i, np.array([i, 2 * i], dtype=np.float32)


def as_lists(batch):
    """Structure + values of a batch from either framework, for comparison."""
    if isinstance(batch, (tt.Tensor, torch.Tensor)):
        return ("tensor", np.asarray(batch.data if isinstance(batch, tt.Tensor) else batch.numpy()).tolist())
    if isinstance(batch, dict):
        return {k: as_lists(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and all(isinstance(b, str) for b in batch):
        return ("strings", list(batch))  # PyTorch keeps the container zip made (a tuple inside); we give a list
    if isinstance(batch, (list, tuple)):
        return (type(batch).__name__, [as_lists(b) for b in batch])
    return batch


@pytest.mark.parametrize("n", [1, 7, 10, 12])
@pytest.mark.parametrize("batch_size", [1, 3, 5, 12])
@pytest.mark.parametrize("drop_last", [False, True])
def test_len_and_batches_match(n, batch_size, drop_last):
    ours = DataLoader(Items(n), batch_size=batch_size, drop_last=drop_last)
    theirs = tud.DataLoader(Items(n), batch_size=batch_size, drop_last=drop_last)
    assert len(ours) == len(theirs)
    assert [as_lists(b) for b in ours] == [as_lists(b) for b in theirs]


def test_collate_structure_matches():
    samples = [{"a": (i, 0.5 * i, "s"), "b": [np.float32(i), np.arange(2, dtype=np.int64) + i]} for i in range(3)]
    ours, theirs = as_lists(default_collate(samples)), as_lists(tud.default_collate(samples))
    assert ours == theirs


def test_batch_sampler_and_random_sampler_lengths_match():
    for n, bs in [(10, 3), (9, 3), (1, 2)]:
        for drop_last in (False, True):
            assert len(BatchSampler(range(n), bs, drop_last)) == len(tud.BatchSampler(range(n), bs, drop_last))
    assert len(RandomSampler(range(5), replacement=True, num_samples=9)) == len(
        tud.RandomSampler(range(5), replacement=True, num_samples=9))
    ours = list(RandomSampler(range(4), num_samples=8, generator=0))
    theirs = list(tud.RandomSampler(range(4), num_samples=8, generator=torch.Generator().manual_seed(0)))
    for order in (ours, theirs):  # without replacement, num_samples > n: whole permutations one after another
        assert sorted(order[:4]) == sorted(order[4:]) == [0, 1, 2, 3]


@pytest.mark.parametrize("n, lengths", [(10, [0.7, 0.3]), (11, [0.5, 0.5]), (10, [1 / 3] * 3), (7, [0.1, 0.2, 0.7]),
                                        (10, [3, 7])])
def test_random_split_lengths_match(n, lengths):
    ours = [len(p) for p in random_split(list(range(n)), lengths, generator=0)]
    theirs = [len(p) for p in tud.random_split(list(range(n)), lengths, generator=torch.Generator().manual_seed(0))]
    assert ours == theirs


@pytest.mark.parametrize("kwargs", [
    {"sampler": [0, 1], "shuffle": True}, {"batch_sampler": [[0]], "batch_size": 2},
    {"batch_sampler": [[0]], "drop_last": True}, {"batch_size": None, "drop_last": True}, {"batch_size": 0},
])
def test_the_same_options_are_rejected(kwargs):
    with pytest.raises(ValueError):
        tud.DataLoader(Items(3), **kwargs)
    with pytest.raises(ValueError):
        DataLoader(Items(3), **kwargs)


def test_a_bool_index_reads_as_in_pytorch():
    """Python counts True as 1; PyTorch's TensorDataset, Subset and ConcatDataset hand it on as it is."""
    from tinytorch.data import ConcatDataset, Subset, TensorDataset
    data = np.arange(6.0, dtype=np.float32).reshape(3, 2)
    ours, theirs = TensorDataset(tt.tensor(data)), tud.TensorDataset(torch.tensor(data))
    pairs = [(ours, theirs), (Subset(ours, [2, 0, 1]), tud.Subset(theirs, [2, 0, 1])),
             (ConcatDataset([ours, ours]), tud.ConcatDataset([theirs, theirs]))]
    for mine, torchs in pairs:
        for index in (True, False):
            got, want = mine[index][0], torchs[index][0]
            assert got.shape == tuple(want.shape) and tt.to_numpy(got.data).tolist() == want.numpy().tolist()
