"""Samplers, default_collate and DataLoader: every edge case of batching and shuffling."""

from collections import namedtuple

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.data import (
    BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset, TensorDataset,
    default_collate, default_convert,
)


class Squares(Dataset):
    """Sample i is (i, i*i as float, {'id': str(i)}): exercises the general (non-gather) path."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.array([i, i * i], dtype=np.float32), i, {"id": str(i)}


def tensor_ds(n, device):
    return TensorDataset(tt.tensor(np.arange(n * 3, dtype=np.float32).reshape(n, 3), device=device),
                         tt.tensor(np.arange(n), device=device))


def labels(loader):
    return [tt.to_numpy(batch[1].data).tolist() for batch in loader]


# ---------------------------------------------------------------- samplers

def test_sequential_sampler():
    assert list(SequentialSampler(range(4))) == [0, 1, 2, 3]
    assert len(SequentialSampler(range(4))) == 4


def test_random_sampler_is_a_permutation_and_differs_per_epoch():
    sampler = RandomSampler(range(50), generator=0)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
    assert first != second, "each epoch draws a new permutation"
    again = RandomSampler(range(50), generator=0)
    assert [list(again), list(again)] == [first, second], "the same seed repeats the same epochs"


def test_random_sampler_global_seed():
    tt.manual_seed(7)
    a = list(RandomSampler(range(30)))
    tt.manual_seed(7)
    b = list(RandomSampler(range(30)))
    assert a == b


def test_random_sampler_generator_object_continues_its_stream():
    rng = np.random.default_rng(3)
    sampler = RandomSampler(range(10), generator=rng)
    assert list(sampler) == np.random.default_rng(3).permutation(10).tolist()


def test_random_sampler_num_samples_and_replacement():
    more = list(RandomSampler(range(4), num_samples=10, generator=0))
    assert len(more) == 10
    assert sorted(more[:4]) == sorted(more[4:8]) == [0, 1, 2, 3], "without replacement: whole permutations first"
    drawn = list(RandomSampler(range(3), replacement=True, num_samples=100, generator=0))
    assert len(drawn) == 100 and set(drawn) <= {0, 1, 2} and len(set(drawn)) == 3
    assert len(RandomSampler(range(3), replacement=True, num_samples=7)) == 7


def test_random_sampler_with_replacement_draws_independently():
    draws = list(RandomSampler(range(10), replacement=True, num_samples=10, generator=0))
    assert len(set(draws)) < 10, f"10 independent draws from 0..9 repeat an index (a permutation would not): {draws}"


def test_random_sampler_fewer_samples_than_data():
    few = list(RandomSampler(range(10), num_samples=4, generator=0))
    assert len(few) == 4 == len(set(few)), f"num_samples=4 of 10: 4 distinct indices, got {few}"


@pytest.mark.parametrize("kwargs, error", [
    ({"num_samples": 0}, ValueError), ({"num_samples": -1}, ValueError), ({"num_samples": 2.5}, ValueError),
    ({"replacement": 1}, TypeError),
])
def test_random_sampler_rejects_bad_arguments(kwargs, error):
    with pytest.raises(error):
        RandomSampler(range(5), **kwargs)


def test_random_sampler_of_empty_data_is_an_error():
    with pytest.raises(ValueError, match="num_samples=0"):
        RandomSampler([])


@pytest.mark.parametrize("n, size, drop_last, expected", [
    (10, 3, False, [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]),
    (10, 3, True, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
    (9, 3, False, [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),
    (2, 5, False, [[0, 1]]),
    (2, 5, True, []),
    (3, 1, False, [[0], [1], [2]]),
])
def test_batch_sampler(n, size, drop_last, expected):
    sampler = BatchSampler(SequentialSampler(range(n)), size, drop_last)
    assert list(sampler) == expected, f"{n} indices in batches of {size} (drop_last={drop_last})"
    assert len(sampler) == len(expected), \
        f"len(BatchSampler) for {n} indices, batch_size {size}, drop_last={drop_last}: ceil or floor of {n}/{size}"


@pytest.mark.parametrize("size", [0, -2, 1.5, True, None])
def test_batch_sampler_rejects_bad_batch_size(size):
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(range(3), size, False)


def test_batch_sampler_rejects_non_bool_drop_last():
    with pytest.raises(ValueError, match="drop_last"):
        BatchSampler(range(3), 2, 1)


# ---------------------------------------------------------------- collate

def test_collate_tensors_numbers_and_dtypes(device):
    batch = default_collate([(tt.tensor([1.0, 2.0], device=device), 1, 0.5, True),
                             (tt.tensor([3.0, 4.0], device=device), 2, 1.5, False)])
    x, ints, floats, flags = batch
    assert isinstance(batch, list), "tuples collate to a list, as in PyTorch"
    assert x.shape == (2, 2) and str(x.device) == str(tt.device(device))
    assert ints.dtype == np.int64 and floats.dtype == np.float32 and flags.dtype == np.bool_
    assert floats.data.tolist() == [0.5, 1.5]


def test_collate_numpy_arrays_and_scalars():
    out = default_collate([np.zeros((2, 2)), np.ones((2, 2))])
    assert out.shape == (2, 2, 2) and out.dtype == np.float32, "float64 arrays become float32"
    assert default_collate([np.zeros(3, dtype=np.uint8)] * 4).dtype == np.uint8
    assert default_collate([np.int32(1), np.int32(2)]).dtype == np.int32
    assert default_collate([np.float64(1), np.float64(2)]).dtype == np.float32
    assert default_collate([1, 2.5]).data.tolist() == [1.0, 2.5], "mixed ints and floats give floats"


def test_collate_nested_structures():
    Pair = namedtuple("Pair", "a b")
    samples = [{"x": Pair(np.float32(i), [i, (str(i), b"z")]), "y": [i, i + 1]} for i in range(3)]
    out = default_collate(samples)
    assert set(out) == {"x", "y"}
    assert isinstance(out["x"], Pair)
    assert out["x"].a.data.tolist() == [0.0, 1.0, 2.0]
    ints, (names, raw) = out["x"].b
    assert ints.data.tolist() == [0, 1, 2]
    assert names == ["0", "1", "2"] and raw == [b"z"] * 3
    assert [t.data.tolist() for t in out["y"]] == [[0, 1, 2], [1, 2, 3]]


def test_collate_errors():
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(RuntimeError, match="equal size"):  # every sample is checked, not just the last
        default_collate([[1, 2], [3], [4, 5]])
    with pytest.raises(RuntimeError, match="different shapes"):
        default_collate([tt.zeros(2), tt.zeros(3)])
    with pytest.raises(RuntimeError, match="different shapes"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(TypeError, match="mixes tensors"):
        default_collate([tt.zeros(2), np.zeros(2)])
    with pytest.raises(TypeError, match="NoneType"):
        default_collate([None, None])
    with pytest.raises(ValueError, match="empty batch"):
        default_collate([])


def test_collate_stack_keeps_gradients():
    a = tt.tensor([1.0, 2.0], requires_grad=True)
    b = tt.tensor([3.0, 4.0], requires_grad=True)
    out = default_collate([a, b])
    (out * tt.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert a.grad.data.tolist() == [1.0, 2.0] and b.grad.data.tolist() == [3.0, 4.0]


def test_default_convert():
    out = default_convert((np.zeros(2), {"k": [np.ones(1, dtype=np.int64)]}, 3))
    assert isinstance(out, tuple) and isinstance(out[0], tt.Tensor) and out[0].dtype == np.float32
    assert isinstance(out[1]["k"][0], tt.Tensor) and out[2] == 3


# ---------------------------------------------------------------- loader

@pytest.mark.parametrize("n, size, drop_last, count", [
    (10, 3, False, 4), (10, 3, True, 3), (10, 5, False, 2), (10, 5, True, 2), (1, 4, False, 1), (10, 10, True, 1),
    (10, 20, False, 1),
])
def test_len_and_last_partial_batch(n, size, drop_last, count, device):
    loader = DataLoader(tensor_ds(n, device), batch_size=size, drop_last=drop_last)
    batches = labels(loader)
    assert len(loader) == len(batches) == count
    sizes = [len(b) for b in batches]
    assert all(s == size for s in sizes[:-1])
    assert sizes[-1] == (size if drop_last or n % size == 0 else n % size), f"last batch sizes {sizes}"


def test_sequential_order_and_shapes(device):
    loader = DataLoader(tensor_ds(5, device), batch_size=2)
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(2, 3), (2, 3), (1, 3)]
    assert labels(loader) == [[0, 1], [2, 3], [4]]


def test_default_batch_size_is_one():
    loader = DataLoader(Squares(3))
    assert len(loader) == 3
    x, i, meta = next(iter(loader))
    assert x.shape == (1, 2) and i.data.tolist() == [0] and meta == {"id": ["0"]}


def test_general_path_collates_structures():
    loader = DataLoader(Squares(5), batch_size=2)
    x, i, meta = list(loader)[1]
    assert x.data.tolist() == [[2, 4], [3, 9]] and i.data.tolist() == [2, 3] and meta == {"id": ["2", "3"]}


def test_shuffle_reproducible_by_seed_and_generator(device):
    ds = tensor_ds(40, device)
    one = labels(DataLoader(ds, batch_size=8, shuffle=True, generator=0))
    assert one == labels(DataLoader(ds, batch_size=8, shuffle=True, generator=0)), \
        "generator=0 twice must give the same order: the loader must hand its generator to RandomSampler"
    assert one != labels(DataLoader(ds, batch_size=8, shuffle=True, generator=1)), \
        "generator=0 and generator=1 gave the same order: the loader must use the generator it is given"
    assert sorted(sum(one, [])) == list(range(40)), "each sample exactly once per epoch"
    loader = DataLoader(ds, batch_size=8, shuffle=True, generator=np.random.default_rng(5))
    again = DataLoader(ds, batch_size=8, shuffle=True, generator=np.random.default_rng(5))
    assert [labels(loader), labels(loader)] == [labels(again), labels(again)], \
        "two loaders on equally seeded Generators must give the same two epochs"
    assert labels(loader) != labels(loader), "a new order every epoch"


def test_shuffle_reproducible_by_manual_seed(device):
    ds = tensor_ds(40, device)
    tt.manual_seed(123)
    loader = DataLoader(ds, batch_size=8, shuffle=True)
    first_run = [labels(loader), labels(loader)]
    tt.manual_seed(123)
    loader = DataLoader(ds, batch_size=8, shuffle=True)
    assert [labels(loader), labels(loader)] == first_run, \
        "generator=None: the same tt.manual_seed must repeat the same epochs"
    assert first_run[0] != first_run[1], \
        "each epoch must reshuffle: with generator=None every epoch draws a fresh seed " \
        "(as_generator(None)), but epochs 0 and 1 gave the same order"


def test_fast_path_gives_the_same_batches_as_collate(device):
    ds = tensor_ds(23, device)
    fast = DataLoader(ds, batch_size=5, shuffle=True, generator=2)
    slow = DataLoader(ds, batch_size=5, shuffle=True, generator=2, collate_fn=default_collate)
    assert fast._gather is not None and slow._gather is None
    for (fx, fy), (sx, sy) in zip(fast, slow):
        assert fx.shape == sx.shape and fx.dtype == sx.dtype and fy.dtype == sy.dtype
        assert np.array_equal(tt.to_numpy(fx.data), tt.to_numpy(sx.data))
        assert np.array_equal(tt.to_numpy(fy.data), tt.to_numpy(sy.data))


def test_fast_path_gathers_once_per_batch(device, monkeypatch):
    ds = tensor_ds(10, device)
    calls = []
    monkeypatch.setattr(TensorDataset, "__getitem__", lambda self, i: calls.append(i))
    batches = list(DataLoader(ds, batch_size=4))
    assert not calls, "the fast path must not fetch samples one by one"
    assert len(batches) == 3


def test_fast_path_through_subset(device):
    ds = tensor_ds(10, device)
    sub = Subset(ds, [9, 8, 7, 1])
    assert labels(DataLoader(sub, batch_size=3)) == [[9, 8, 7], [1]]


def test_custom_collate_fn_is_used():
    loader = DataLoader(Squares(4), batch_size=2, collate_fn=lambda samples: len(samples))
    assert list(loader) == [2, 2]


def test_custom_sampler_and_batch_sampler():
    assert labels(DataLoader(Squares(5), batch_size=2, sampler=[4, 0, 2])) == [[4, 0], [2]]
    loader = DataLoader(Squares(5), batch_sampler=[[3, 1], [0]])
    assert labels(loader) == [[3, 1], [0]] and len(loader) == 2
    assert loader.batch_size is None


def test_an_empty_sampler_is_used_not_replaced():
    loader = DataLoader(Squares(5), batch_size=2, sampler=[])  # falsy, but given: torch yields no batch
    assert len(loader) == 0 and list(loader) == [], f"an empty sampler you pass gives 0 batches, got {len(loader)}"


def test_batch_size_none_disables_batching():
    loader = DataLoader(Squares(3), batch_size=None)
    samples = list(loader)
    assert len(loader) == 3
    x, i, meta = samples[2]
    assert isinstance(x, tt.Tensor) and x.shape == (2,) and i == 2 and meta == {"id": "2"}


@pytest.mark.parametrize("kwargs, message", [
    ({"sampler": [0, 1], "shuffle": True}, "sampler option is mutually exclusive with shuffle"),
    ({"batch_sampler": [[0]], "batch_size": 2}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "shuffle": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "sampler": [0]}, "batch_sampler option is mutually exclusive"),
    ({"batch_sampler": [[0]], "drop_last": True}, "batch_sampler option is mutually exclusive"),
    ({"batch_size": None, "drop_last": True}, "mutually exclusive with drop_last"),
    ({"batch_size": 0}, "batch_size should be a positive integer value, but got batch_size=0"),
    ({"batch_size": -3}, "batch_size=-3"),
])
def test_exclusive_and_invalid_options_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(Squares(3), **kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
def test_empty_dataset_is_a_clear_error(shuffle):
    with pytest.raises(ValueError, match="empty dataset"):
        DataLoader(Squares(0), batch_size=2, shuffle=shuffle)


def test_single_sample_shuffled_with_drop_last_gives_no_batches():
    loader = DataLoader(Squares(1), batch_size=2, shuffle=True, drop_last=True, generator=0)
    assert len(loader) == 0 and list(loader) == []


def test_a_subclass_that_changes_items_is_loaded_through_its_own_getitem():
    """TensorDataset's gather (one indexing op per batch) gives the parent's items: a subclass that augments in
    __getitem__ must get its own, also through Subset; a subclass that brings its own gather keeps the fast path."""
    class Scaled(TensorDataset):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return x * 100, y

    class FastScaled(Scaled):
        def gather(self, indices):
            x, y = TensorDataset.gather(self, indices)
            return x * 100, y
    for kind in (Scaled, FastScaled):
        ds = kind(tt.tensor(np.arange(4, dtype=np.float32)), tt.tensor(np.arange(4)))
        assert next(iter(DataLoader(ds, batch_size=4)))[0].tolist() == [0, 100, 200, 300], kind.__name__
        assert next(iter(DataLoader(Subset(ds, [3, 1]), batch_size=2)))[0].tolist() == [300, 100], kind.__name__
    assert DataLoader(ds, batch_size=4)._gather is not None, "a subclass's own gather is still used"


def test_a_wrapper_that_forwards_attributes_is_loaded_item_by_item():
    """A wrapper whose __getattr__ hands on its inner dataset's gather: gather is not its own, so each
    sample goes through the wrapper's __getitem__."""
    class Wrapped(Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, index):
            x, y = self.inner[index]
            return x + 1, y

        def __getattr__(self, name):
            return getattr(self.inner, name)
    inner = TensorDataset(tt.tensor(np.arange(3, dtype=np.float32)), tt.tensor(np.arange(3)))
    assert next(iter(DataLoader(Wrapped(inner), batch_size=3)))[0].tolist() == [1, 2, 3]
