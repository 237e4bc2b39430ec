# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 06 — Data
#
# A model learns from **batches**: a few dozen samples at a time, in a fresh
# random order every epoch. This module builds the pipeline that feeds it, with
# PyTorch's names and semantics:
#
# - `Dataset` (what one sample is), `DataLoader` (how samples become batches),
#   samplers (in which order), `default_collate` (how a list of samples becomes
#   one batch of tensors), `Subset`, `random_split`, `ConcatDataset`;
# - datasets that work offline: the 8×8 handwritten `digits`, a text corpus for
#   language modelling, and readers for MNIST and CIFAR-10 files you download;
# - **tokenizers**, which turn text into the integers a language model reads:
#   one token per character, and byte-level BPE as in GPT-2.
#
# **You will implement:** `BatchSampler`, `default_collate`, `CharTokenizer`'s
# `encode`/`decode`, and the two steps of BPE training, `count_pairs` and
# `merge_pair`. The rest is provided, and worth reading.
#
# **Cost to keep in mind:** a training step of a small model takes milliseconds;
# the data pipeline must cost much less. Python loops over samples are the usual
# culprit. At the end you measure batching by indexing once versus stacking
# sample by sample, and tokenizer speed and sequence lengths.

# %%
#| default_exp data.dataset

# %% [markdown]
# ## 1. Datasets: what one sample is
#
# *Why split "data" in two?* A dataset answers two questions: how many samples
# are there (`len(ds)`) and what is sample `i` (`ds[i]`). Everything else —
# order, batch size, shuffling, dropping a ragged last batch, turning samples
# into tensors — is the same for every dataset, so it lives once, in the
# `DataLoader`. A new dataset then needs only `__len__` and `__getitem__`.
#
# `TensorDataset(x, y)` is the simplest: sample `i` is `(x[i], y[i])`. It also
# offers `gather(indices)`: a whole batch by **one fancy index per tensor**
# (`x[[4, 17, 3]]`) instead of `B` separate lookups; section 4 uses it.
#
# `Subset` views some indices of a dataset, `random_split` cuts a dataset into
# random non-overlapping subsets (lengths as counts, or as fractions like
# `[0.8, 0.2]`), and `ConcatDataset` (also `ds1 + ds2`) chains datasets.
#
# *Randomness.* Everything random here takes a `generator`: a
# `numpy.random.Generator`, an int seed, or `None` — then a seed is drawn from
# TinyTorch's global generator, so `tt.manual_seed(0)` makes the run
# reproducible, as `torch.manual_seed` does.

# %%
#| export
"""Datasets: indexable collections of samples, and ways to split and join them."""
import bisect
import math
import numbers

import numpy as np

from tinytorch.core.backend import default_generator
from tinytorch.core.tensor import Tensor


def as_generator(generator=None):
    """A NumPy Generator from a Generator (used as is), an int seed, or None (a seed drawn
    from TinyTorch's global generator, so `tt.manual_seed` makes it reproducible)."""
    if generator is None:
        return np.random.default_rng(int(default_generator().integers(2**63)))
    if isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(f"generator must be None, an int seed or a numpy.random.Generator, got {type(generator).__name__}")


class Dataset:
    """A map-style dataset: `len(ds)` samples, `ds[i]` is sample i. Subclasses define both."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__ (and __len__)")

    def __add__(self, other):
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Sample i is `tuple(t[i] for t in tensors)`; all tensors share their first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset needs at least one tensor")
        for t in tensors:
            if not isinstance(t, Tensor):
                raise TypeError(f"TensorDataset takes tensors, got {type(t).__name__}; wrap arrays with tt.tensor")
        if any(t.ndim == 0 for t in tensors) or len({t.shape[0] for t in tensors}) != 1:
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
            raise ValueError(f"TensorDataset: tensors must share their first dimension, got shapes {shapes}")
        self.tensors = tensors

    def __len__(self):
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def gather(self, indices):
        """The samples `indices` as one batch: one fancy index per tensor, no stacking."""
        index = np.asarray(indices, dtype=np.int64)
        return [t[index] for t in self.tensors]


class Subset(Dataset):
    """The samples `indices` of `dataset`, renumbered 0..len(indices)-1."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices
        if hasattr(dataset, "gather"):  # keep the one-index fast path of the parent
            positions = np.asarray(indices, dtype=np.int64)

            def gather(batch_indices):
                return dataset.gather(positions[np.asarray(batch_indices, dtype=np.int64)])
            self.gather = gather

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]


class ConcatDataset(Dataset):
    """Datasets one after another: indices 0..len(a)-1 are a's, then b's, ..."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset needs at least one dataset")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} is out of range for a ConcatDataset of length {n}")
        which = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]


def _split_lengths(n, lengths):
    """Counts that add up to n; fractions (adding up to 1) are turned into counts as PyTorch does."""
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"random_split: fraction at index {i} is not between 0 and 1: {fraction}")
        counts = [math.floor(n * fraction) for fraction in lengths]
        for i in range(n - sum(counts)):  # hand out the remainder round-robin
            counts[i % len(counts)] += 1
        return counts
    if any(not isinstance(k, numbers.Integral) or k < 0 for k in lengths):
        raise ValueError(f"random_split: lengths must be counts >= 0 or fractions adding up to 1, got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} add up to {sum(lengths)}, but the dataset has {n} samples")
    return [int(k) for k in lengths]


def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping random `Subset`s of the given lengths (counts or fractions)."""
    counts = _split_lengths(len(dataset), lengths)
    order = as_generator(generator).permutation(len(dataset)).tolist()
    ends = np.cumsum(counts).tolist()
    return [Subset(dataset, order[end - count:end]) for count, end in zip(counts, ends)]


# %%
import numpy as np
import tinytorch as tt

xs = tt.tensor(np.arange(10.0).reshape(5, 2))  # 5 samples of 2 features
ys = tt.tensor([0, 1, 0, 1, 1])
ds = TensorDataset(xs, ys)
x2, y2 = ds[2]
print("len:", len(ds), "| sample 2:", x2.data, int(y2.item()))
print("gather([4, 0]):", [t.data.tolist() for t in ds.gather([4, 0])])
train, val = random_split(ds, [0.6, 0.4], generator=0)
print("random_split sizes:", len(train), len(val), "| train indices:", train.indices)
print("concat length:", len(ds + ds))

# %% [markdown]
# ## 2. Samplers: in which order, and in which batches
#
# A **sampler** yields indices. `SequentialSampler` yields `0, 1, …, n-1`.
# `RandomSampler` yields a random permutation, a new one every epoch
# (`replacement=True` draws `num_samples` indices independently instead).
#
# *Why shuffle?* Stochastic gradient descent assumes each batch is a random
# draw. Files are often sorted (all the 0s, then all the 1s…): in file order,
# consecutive batches would pull the weights one way, then another, and the
# model would mostly remember the last class it saw.
#
# *How seeding works.* With `generator=None`, every epoch draws a fresh seed
# from TinyTorch's global generator: epochs differ from each other, yet the
# whole run repeats exactly after `tt.manual_seed(0)`. A `Generator` you pass
# is used directly (its stream goes on across epochs); an int seeds one.
#
# A **batch sampler** groups indices into lists of `batch_size`. The last batch
# holds what is left (`n % batch_size` samples) unless `drop_last=True` drops
# it — useful when every batch must have the same size (batch statistics,
# compiled shapes). So `len(batch_sampler)` is `ceil(n / B)`, or `n // B` with
# `drop_last`.
#
# ### Exercise: `BatchSampler.__iter__` and `__len__`
# Walk the sampler, yield a list each time it holds `batch_size` indices, and
# at the end yield the rest unless `drop_last`. `__len__` follows the formula
# above (use `len(self.sampler)`).

# %%
#| export data.dataloader
"""Samplers (in which order), collation (how samples become a batch) and the DataLoader."""
import math
import numbers
from collections.abc import Mapping

import numpy as np

from tinytorch.core.backend import get_xp, resolve_dtype
from tinytorch.core.tensor import Tensor, _wrap, from_numpy
from tinytorch.data.dataset import as_generator


class Sampler:
    """Yields dataset indices."""

    def __iter__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation per epoch, or `num_samples` independent draws with `replacement`."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement!r}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        # an int seed becomes its Generator here, so its state can be saved and restored
        self.generator = None if generator is None else as_generator(generator)
        n = self.num_samples
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={n!r}")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        rng = self.generator if self.generator is not None else as_generator(None)  # None: fresh seed per epoch
        n = len(self.data_source)
        if self.replacement:
            order = rng.integers(0, n, size=self.num_samples)
        else:  # more samples than the data: whole permutations, then part of one
            full, rest = divmod(self.num_samples, n)
            order = np.concatenate([rng.permutation(n) for _ in range(full)] + [rng.permutation(n)[:rest]])
        return iter(order.tolist())

    def __len__(self):
        return self.num_samples


# %% nbgrader={"grade": false, "grade_id": "batch-sampler", "locked": false, "schema_version": 3, "solution": true}
#| export data.dataloader
class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size` (the last may be shorter)."""

    def __init__(self, sampler, batch_size, drop_last):
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size!r}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last!r}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.drop_last = drop_last

    def __iter__(self):
        ### BEGIN SOLUTION
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch
        ### END SOLUTION

    def __len__(self):
        ### BEGIN SOLUTION
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return math.ceil(len(self.sampler) / self.batch_size)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-batch-sampler", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_batch_sampler():
    got = list(BatchSampler(SequentialSampler(range(10)), 3, drop_last=False))
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]], f"10 indices in batches of 3, the last one partial; got {got}"
    got = list(BatchSampler(SequentialSampler(range(10)), 3, drop_last=True))
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8]], f"drop_last=True drops the partial batch [9]; got {got}"
    got = list(BatchSampler(SequentialSampler(range(6)), 3, drop_last=True))
    assert got == [[0, 1, 2], [3, 4, 5]], f"6 = 2 x 3: nothing to drop; got {got}"
    assert len(BatchSampler(range(10), 3, False)) == 4, "len with a partial batch: ceil(10 / 3) = 4"
    assert len(BatchSampler(range(10), 3, True)) == 3, "len with drop_last: 10 // 3 = 3"
    assert len(BatchSampler(range(2), 5, True)) == 0, "fewer samples than one batch with drop_last: 0 batches"
    shuffled = list(BatchSampler(RandomSampler(range(7), generator=1), 7, False))
    assert len(shuffled) == 1 and sorted(shuffled[0]) == list(range(7)), f"one batch holding a permutation; got {shuffled}"
    ### BEGIN HIDDEN TESTS
    assert list(BatchSampler([5, 3], 1, False)) == [[5], [3]], "batch_size 1: one index per batch, in sampler order"
    ### END HIDDEN TESTS


test_batch_sampler()
print("BatchSampler: ok")

# %% [markdown]
# ## 3. Collation: from a list of samples to one batch
#
# The loader fetches `B` samples — each maybe a tuple `(image, label)`, a dict
# `{"x": ..., "mask": ...}`, or nested deeper — and must return the same
# structure with every leaf **stacked** along a new first dimension of size `B`:
#
# ```
# [(x0, 0), (x1, 1), (x2, 1)]  ->  [stack(x0, x1, x2) of shape (3, ...), tensor([0, 1, 1])]
# ```
#
# The rules of `default_collate` (PyTorch's, with TinyTorch's float32 default):
#
# | a sample's element | the batch's element |
# | --- | --- |
# | `Tensor` | stacked tensor, shape `(B, *shape)` |
# | NumPy array | stacked tensor (float64 becomes float32) |
# | Python/NumPy number | 1-D tensor: ints → int64, floats → float32, bools → bool |
# | `str` / `bytes` | a plain list of them |
# | dict | dict with the same keys, each value collated |
# | namedtuple | the same namedtuple type, each field collated |
# | tuple / list | a **list** of collated fields (all samples of one length) |
#
# The helpers that stack the leaves are provided below.
#
# ### Exercise: `default_collate(batch)`
# Dispatch on the type of the first sample `elem = batch[0]`, in the order of
# the table (check `str`/`bytes` before numbers: `np.str_` is both), and
# recurse for containers. For tuples and lists, raise `RuntimeError` when the
# samples have different lengths.

# %%
#| export data.dataloader
def _stack_tensors(tensors):
    """Stack same-shaped tensors of one device along a new dim 0 (gradients flow back if needed)."""
    if not all(isinstance(t, Tensor) for t in tensors):
        kinds = sorted({type(t).__name__ for t in tensors})
        raise TypeError(f"default_collate: a batch mixes tensors with other types: {kinds}")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise RuntimeError(f"default_collate: cannot stack tensors of different shapes {sorted(shapes)}")
    devices = {str(t._device) for t in tensors}
    if len(devices) != 1:
        raise RuntimeError(f"default_collate: tensors live on different devices {sorted(devices)}")
    dev = tensors[0]._device
    out = get_xp(dev).stack([t.data for t in tensors])  # (B, *shape)

    def stack_backward(g):
        return tuple(g[i] for i in range(len(tensors)))
    return _wrap(out, dev, tuple(tensors), stack_backward)


def _array_to_batch(array):
    """A stacked NumPy array as a tensor; float64 becomes float32 (TinyTorch's default)."""
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    resolve_dtype(array.dtype)  # unsupported dtypes (strings, objects, complex) fail here, by name
    return from_numpy(np.ascontiguousarray(array))


def _stack_arrays(arrays):
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise RuntimeError(f"default_collate: cannot stack arrays of different shapes {sorted(shapes)}")
    return _array_to_batch(np.stack(arrays))


def _numbers_to_batch(values):
    """Python/NumPy numbers as a 1-D tensor: ints -> int64, floats -> float32, bools -> bool."""
    array = np.asarray(values)
    if array.dtype.kind == "i" and not isinstance(values[0], np.generic):
        array = array.astype(np.int64)  # Python ints: int64 on every platform (NumPy 1.x on Windows says int32)
    return _array_to_batch(array)


# %% nbgrader={"grade": false, "grade_id": "collate", "locked": false, "schema_version": 3, "solution": true}
#| export data.dataloader
def default_collate(batch):
    """Merge a list of samples into one batch, keeping the samples' (nested) structure."""
    if len(batch) == 0:
        raise ValueError("default_collate got an empty batch")
    elem = batch[0]
    ### BEGIN SOLUTION
    if isinstance(elem, Tensor):
        return _stack_tensors(batch)
    if isinstance(elem, np.ndarray):
        return _stack_arrays(batch)
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, (numbers.Number, np.generic)):
        return _numbers_to_batch(batch)
    if isinstance(elem, Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple: keep its type
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, (tuple, list)):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    ### END SOLUTION
    raise TypeError(f"default_collate: cannot batch samples of type {type(elem).__name__}; pass a collate_fn")


# %% nbgrader={"grade": true, "grade_id": "test-collate", "locked": true, "points": 3, "schema_version": 3, "solution": false}
from collections import namedtuple


def test_default_collate():
    samples = [(tt.tensor([1.0, 2.0]), 3), (tt.tensor([4.0, 5.0]), 6)]
    x, y = default_collate(samples)
    assert isinstance(x, tt.Tensor) and x.shape == (2, 2), f"tensors stack to shape (B, 2) = (2, 2), got {getattr(x, 'shape', x)}"
    assert np.array_equal(x.data, [[1, 2], [4, 5]]), f"stacked rows in sample order, got {x.data}"
    assert isinstance(y, tt.Tensor) and y.dtype == np.int64, f"Python ints become an int64 tensor, got {getattr(y, 'dtype', y)}"
    assert y.data.tolist() == [3, 6], f"labels [3, 6] expected, got {y.data}"
    assert isinstance(default_collate(samples), list), "a tuple sample collates to a list of fields (as PyTorch)"
    floats = default_collate([0.5, 1.5])
    assert floats.dtype == np.float32 and floats.data.tolist() == [0.5, 1.5], f"Python floats -> float32, got {floats.dtype}"
    arrays = default_collate([np.zeros((2, 3)), np.ones((2, 3))])
    assert arrays.shape == (2, 2, 3) and arrays.dtype == np.float32, f"float64 arrays -> (B, 2, 3) float32, got {arrays.shape} {arrays.dtype}"
    nested = default_collate([{"x": np.float32(1), "meta": ("a", [1, 2])}, {"x": np.float32(2), "meta": ("b", [3, 4])}])
    assert set(nested) == {"x", "meta"}, f"a dict batch keeps the keys, got {set(nested)}"
    assert nested["x"].data.tolist() == [1.0, 2.0], "dict values are collated"
    names, pairs = nested["meta"]
    assert names == ["a", "b"], f"strings are kept as a list, got {names}"
    assert [p.data.tolist() for p in pairs] == [[1, 3], [2, 4]], "a list field collates position by position"
    Point = namedtuple("Point", "x y")
    point = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(point, Point) and point.x.data.tolist() == [1, 3], f"a namedtuple keeps its type, got {point}"
    try:
        default_collate([[1, 2], [3]])
    except RuntimeError:
        pass
    else:
        raise AssertionError("samples [1, 2] and [3] have different lengths: raise RuntimeError")
    ### BEGIN HIDDEN TESTS
    flags = default_collate([True, False])
    assert flags.dtype == np.bool_, f"bools -> bool tensor, got {flags.dtype}"
    ### END HIDDEN TESTS


test_default_collate()
print("default_collate: ok")

# %% [markdown]
# ## 4. The `DataLoader`
#
# The loader only wires the pieces together:
#
# ```
# sampler (order) -> BatchSampler (groups) -> dataset[i] for each i -> collate_fn -> batch
# ```
#
# Its options follow PyTorch, including which ones exclude each other:
# `shuffle=True` builds a `RandomSampler`, so it cannot be combined with your
# own `sampler`; a `batch_sampler` replaces `batch_size`, `shuffle`, `sampler`
# and `drop_last`; `batch_size=None` turns batching off (samples come one by
# one, NumPy arrays turned into tensors). Violations raise `ValueError`, as does
# `batch_size < 1`. An empty dataset is an error here: a loader that yields
# nothing would turn a wrong path into a training run that silently does nothing.
#
# *The fast path.* Fetching `B` samples one by one and stacking them costs `B`
# Python calls and `B` small tensors per batch. When the dataset can `gather`
# a batch itself (`TensorDataset`, `TextDataset`, and a `Subset` of either)
# and no `collate_fn` is given, the loader asks it for the whole batch: one
# fancy index per tensor. The result is the same; section 9 measures the time.

# %%
#| export data.dataloader
def default_convert(data):
    """What `batch_size=None` applies to each sample: NumPy arrays become tensors, recursively."""
    if isinstance(data, np.ndarray):
        return _array_to_batch(data)
    if isinstance(data, Mapping):
        return {key: default_convert(value) for key, value in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, (tuple, list)):
        return type(data)(default_convert(d) for d in data)
    return data


class DataLoader:
    """Iterate over a dataset in batches: sampler -> batch sampler -> fetch -> collate."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 drop_last=False, collate_fn=None, generator=None):
        if len(dataset) == 0:
            raise ValueError(f"DataLoader got an empty dataset ({type(dataset).__name__} of length 0): "
                             f"there is nothing to load; check the path or the split")
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        generator = None if generator is None else as_generator(generator)
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        batching = batch_sampler is not None
        self.collate_fn = collate_fn or (default_collate if batching else default_convert)
        # Fast path: the dataset builds the whole batch itself (same result as default_collate).
        self._gather = getattr(dataset, "gather", None) if batching and collate_fn is None else None

    def __iter__(self):
        if self.batch_sampler is None:
            for index in self.sampler:
                yield self.collate_fn(self.dataset[index])
            return
        for indices in self.batch_sampler:
            if self._gather is not None:
                yield self._gather(indices)
            else:
                yield self.collate_fn([self.dataset[i] for i in indices])

    def __len__(self):
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)


# %%
loader = DataLoader(ds, batch_size=2, shuffle=True, generator=0)
print("len(loader) =", len(loader), "(5 samples, batches of 2)")
for xb, yb in loader:
    print("x", tuple(xb.shape), "y", yb.data.tolist())
tt.manual_seed(0)
first = [yb.data.tolist() for _, yb in DataLoader(ds, batch_size=5, shuffle=True)]
tt.manual_seed(0)
again = [yb.data.tolist() for _, yb in DataLoader(ds, batch_size=5, shuffle=True)]
print("same order after tt.manual_seed(0):", first == again)

# %% [markdown]
# ## 5. Datasets that come with TinyTorch
#
# **Digits.** 1,797 handwritten digits as 8×8 images with pixel values 0–16,
# ten classes. They come from the UCI *Optical Recognition of Handwritten
# Digits* data set (E. Alpaydin and C. Kaynak, 1998; its test part): 32×32
# bitmaps from 43 writers, each 4×4 block counted into one pixel. UCI licenses
# it under CC BY 4.0 (attribution: cite the data set as above). scikit-learn
# ships the same file (`sklearn/datasets/data/digits.csv.gz`); `digits()` reads
# that copy when scikit-learn is installed and otherwise the identical copy in
# `tinytorch/assets/06_data/`. Small enough to train an MLP on in seconds,
# real enough that accuracy means something.
#
# **A text corpus.** `kjv_text()` returns 1.1 MB of the King James Bible
# (Genesis 1 to 1 Samuel 17; one verse per line, a heading per chapter). The
# translation of 1611 is in the public domain (in the United Kingdom the Crown's
# letters patent still restrict printing it; elsewhere it is free). The text was
# dumped from Debian's `bible-kjv-text` package, whose copyright file states the
# copyright has expired. It is plain, regular English with a small alphabet —
# good for a character-level or BPE language model on a laptop.
#
# Both files live in `modules/06_data/assets/`; `tito export` copies them byte
# for byte to `tinytorch/assets/06_data/`, and the package reads them with
# `importlib.resources`, so they work from a fresh clone or an installed wheel.
#
# **Data you bring.** `load_mnist(root)` reads MNIST or Fashion-MNIST IDX files
# (`train-images-idx3-ubyte[.gz]`, …) and `load_cifar10(root)` reads
# CIFAR-10's *binary version* (`data_batch_1.bin` … `test_batch.bin`). No
# pickle is ever loaded: a pickle file can run arbitrary code. Both check the
# files (magic numbers, dimension counts, sizes against headers) and name the
# file when something is wrong. `train_test_split` makes a seeded split.

# %%
#| export data.datasets
"""Built-in datasets (digits, a text corpus), readers for MNIST/CIFAR-10 files, TextDataset."""
import functools
import gzip
import importlib.resources
import importlib.util
import io
import math
import os
import zlib
from pathlib import Path

import numpy as np

from tinytorch.core.tensor import from_numpy
from tinytorch.data.dataset import Dataset, TensorDataset

_ASSET_FOLDER = "06_data"
_DIGITS_FILE = "digits.csv.gz"
_KJV_FILE = "kjv.txt.gz"


def asset_path(name):
    """A file shipped in tinytorch/assets/06_data/ (a Traversable; `.read_bytes()` works)."""
    path = importlib.resources.files("tinytorch") / "assets" / _ASSET_FOLDER / name
    if not path.is_file():
        raise FileNotFoundError(f"tinytorch asset {_ASSET_FOLDER}/{name} is missing; run `tito export` "
                                f"(it copies modules/{_ASSET_FOLDER}/assets/ into tinytorch/assets/)")
    return path


def _read_maybe_gzip(path, data=None):
    """The bytes of a file, decompressed when it is gzip; errors name the file."""
    data = Path(path).read_bytes() if data is None else data
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as err:
        raise ValueError(f"{path}: truncated or corrupt gzip file ({err})") from None


def _sklearn_digits():
    """scikit-learn's copy of digits.csv.gz, found without importing sklearn; None if absent."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / _DIGITS_FILE
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def _digits_table():
    path = _sklearn_digits() or asset_path(_DIGITS_FILE)
    text = _read_maybe_gzip(path, path.read_bytes()).decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2)  # (1797, 64 pixels + label)
    if table.shape != (1797, 65) or table[:, :64].max() > 16 or table[:, 64].max() > 9:
        raise ValueError(f"{path}: expected 1797 rows of 64 pixels in 0..16 and a label 0..9, got {table.shape}")
    return table


def digits():
    """The 8x8 handwritten digits: images float32 (1797, 8, 8), values 0..16; labels int64 (1797,).

    UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998), CC BY 4.0; read from
    scikit-learn's copy when it is installed, else from the identical copy shipped in tinytorch/assets.
    """
    table = _digits_table()
    images = table[:, :64].reshape(-1, 8, 8).astype(np.float32)
    return from_numpy(images), from_numpy(table[:, 64].copy())


def train_test_split(*tensors, test_fraction=0.2, seed=0):
    """Shuffle with `seed` (same seed, same split), hold out `round(n * test_fraction)` samples:
    returns (train TensorDataset, test TensorDataset)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    full = TensorDataset(*tensors)
    n = len(full)
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} of {n} samples leaves an empty train or test set")
    order = np.random.default_rng(seed).permutation(n)
    train, test = np.sort(order[n_test:]), np.sort(order[:n_test])
    return TensorDataset(*full.gather(train)), TensorDataset(*full.gather(test))


@functools.lru_cache(maxsize=1)
def kjv_text():
    """1.1 MB of the King James Bible (public domain), Genesis 1 to 1 Samuel 17, as a str."""
    return gzip.decompress(asset_path(_KJV_FILE).read_bytes()).decode("utf-8")


# %% [markdown]
# The IDX format (MNIST's): a 4-byte **magic number** — two zero bytes, a byte
# for the element type (`0x08` = unsigned byte), a byte for the number of
# dimensions — then one big-endian 32-bit size per dimension, then the data.
# An image file is `0x00000803` (bytes, 3 dims: N, 28, 28), a label file
# `0x00000801`. So the file size is known from the header: anything else means
# a truncated download or a different file.
#
# CIFAR-10's binary version has no header: records of 1 label byte + 3,072
# pixel bytes (1,024 red, then green, then blue, rows of 32), 10,000 per file.

# %%
#| export data.datasets
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.int16, 0x0C: np.int32, 0x0D: np.float32, 0x0E: np.float64}


def read_idx(path):
    """An IDX file (raw or .gz) as a NumPy array, with its header checked against its size."""
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(f"{path}: {len(data)} bytes is too short for an IDX header (4-byte magic number)")
    zero, code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or code not in _IDX_TYPES:
        raise ValueError(f"{path}: bad magic number 0x{int.from_bytes(data[:4], 'big'):08x}: an IDX file starts "
                         f"with two zero bytes and a type byte in {[hex(c) for c in _IDX_TYPES]}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header announces {ndim} dimensions, but the file ({len(data)} bytes) "
                         f"cannot hold their sizes")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[code]).newbyteorder(">")
    expected = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"{path}: {problem}: the header says shape {shape} of {dtype.name} ({expected} bytes), "
                         f"the file has {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=4 + 4 * ndim)
    return array.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _find(root, names, what):
    for name in names:
        for candidate in (Path(root) / name, Path(root) / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {what} in {root}: expected one of {', '.join(names)} (optionally .gz)")


def _read_idx_expect(path, ndim):
    magic = {1: 0x0801, 3: 0x0803}[ndim]
    array = read_idx(path)
    if array.ndim != ndim or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected an IDX file of unsigned bytes with {ndim} dimension(s) "
                         f"(magic 0x{magic:08x}), got {array.dtype.name} of shape {array.shape}")
    return array


def load_mnist(root, train=True):
    """MNIST or Fashion-MNIST from IDX files in `root`: images uint8 (N, 28, 28), labels int64 (N,)."""
    prefix = "train" if train else "t10k"
    images_path = _find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"], f"{prefix} images")
    labels_path = _find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"], f"{prefix} labels")
    images = _read_idx_expect(images_path, 3)
    labels = _read_idx_expect(labels_path, 1)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    return from_numpy(images), from_numpy(labels.astype(np.int64))


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte + 1024 red + 1024 green + 1024 blue


def read_cifar10_batch(path):
    """One CIFAR-10 binary file: images uint8 (N, 3, 32, 32), labels uint8 (N,)."""
    data = Path(path).read_bytes()
    if not data or len(data) % _CIFAR_RECORD:
        raise ValueError(f"{path}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte records "
                         f"(1 label byte + 3072 pixel bytes); truncated, or not CIFAR-10's binary version")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.argmax(labels >= len(CIFAR10_CLASSES)))
        raise ValueError(f"{path}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0..9")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(root, train=True):
    """CIFAR-10 (binary version) from `root` or `root/cifar-10-batches-bin`:
    images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    folder = Path(root) / "cifar-10-batches-bin"
    folder = folder if folder.is_dir() else Path(root)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 files missing in {folder}: {', '.join(missing)}")
    parts = [read_cifar10_batch(folder / name) for name in names]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts]).astype(np.int64)
    return from_numpy(images), from_numpy(labels)


# %%
images, labels = digits()
print("digits:", tuple(images.shape), images.dtype, "| classes:", np.unique(labels.data).tolist(),
      "| pixel range:", images.data.min(), "..", images.data.max())
print("\n".join("".join(" .:-=+*#%@"[int(v) * 9 // 16] for v in row) for row in images.data[0]), "<- label", labels.data[0])
digits_train, digits_test = train_test_split(images, labels, test_fraction=0.2, seed=0)
print("train/test:", len(digits_train), len(digits_test))
corpus = kjv_text()
print(f"kjv_text(): {len(corpus.encode()):,} bytes, {len(set(corpus))} distinct characters")
print(corpus[:120])

# %% [markdown]
# ## 6. Tokenizers: text as integers
#
# A language model reads a sequence of integer **token ids** and predicts the
# next one. A **tokenizer** fixes the vocabulary and maps text to ids
# (`encode`) and back (`decode`). The choice is a trade-off:
#
# - **characters**: a tiny vocabulary (≈ 60 for English), every text encodes,
#   but sequences are long — one token per character — so a model with a
#   context of 256 tokens sees 256 characters;
# - **words**: short sequences, but a huge vocabulary, and any unseen word is
#   lost;
# - **subwords (BPE)**: a vocabulary of a few thousand to 50k pieces; frequent
#   words are one token, rare words several pieces, and nothing is ever
#   unknown. Sequences are 3–4× shorter than characters on English, so the
#   same context window covers 3–4× more text — paid for by a bigger embedding
#   table and output layer (`vocab_size × d_model` each).
#
# `CharTokenizer` builds its vocabulary from a text: the sorted set of its
# characters, id = position. A character it never saw is an error that names
# it — unless you pass `unk="?"` (or any string), which adds an explicit
# unknown token that such characters map to (and decode to).
#
# ### Exercise: `CharTokenizer.encode` and `decode`
# `encode`: first find the characters of `text` missing from `self.stoi`; if any
# and `self.unk_id is None`, raise `ValueError` listing them (use
# `_describe_chars`); otherwise map each character to its id, unknown ones to
# `self.unk_id`. `decode`: join `self.itos[i]`; an id outside
# `0..vocab_size-1` raises `ValueError` naming it (negative ids too: Python
# indexing would silently wrap them).

# %%
#| export data.tokenizers
"""Tokenizers: text <-> lists of integer ids. One token per character, or byte-level BPE (GPT-2 style)."""
import heapq
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from tinytorch.core.backend import to_numpy
from tinytorch.core.tensor import Tensor


def _id_list(ids):
    """Ids from a list, a 1-D NumPy array or a 1-D tensor, as Python ints."""
    if isinstance(ids, Tensor):
        ids = to_numpy(ids.data)
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"decode takes a 1-D sequence of integer ids, got {ids.dtype.name} of shape {ids.shape}")
        return ids.tolist()
    return [int(i) for i in ids]


def _describe_chars(chars):
    shown = ", ".join(repr(c) for c in sorted(chars)[:10])
    return shown + (f" and {len(chars) - 10} more" if len(chars) > 10 else "")


def _write_json_atomic(path, obj):
    """Write JSON to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(obj, handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read_json(path, kind):
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a saved tokenizer (invalid JSON: {err})") from None
    if not isinstance(state, dict) or state.get("type") != kind:
        raise ValueError(f"{path}: not a saved {kind} tokenizer")
    return state


# %% nbgrader={"grade": false, "grade_id": "char-tokenizer", "locked": false, "schema_version": 3, "solution": true}
#| export data.tokenizers
class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of `text`."""

    def __init__(self, text, unk=None):
        self.itos = sorted(set(text))  # id -> character
        if unk is not None:
            if not isinstance(unk, str) or not unk:
                raise ValueError(f"unk must be a non-empty string, got {unk!r}")
            if unk not in self.itos:
                self.itos.append(unk)
        self.stoi = {s: i for i, s in enumerate(self.itos)}  # character -> id
        self.unk = unk
        self.unk_id = None if unk is None else self.stoi[unk]

    @property
    def vocab_size(self):
        return len(self.itos)

    def encode(self, text):
        """Text -> list of ids; unknown characters raise (or map to `unk` when configured)."""
        ### BEGIN SOLUTION
        unknown = set(text) - self.stoi.keys()
        if unknown and self.unk_id is None:
            raise ValueError(f"CharTokenizer: characters not in the vocabulary: {_describe_chars(unknown)}; "
                             f"build the tokenizer from a text that has them, or pass unk=...")
        lookup = self.stoi.get
        return [lookup(c, self.unk_id) for c in text]
        ### END SOLUTION

    def decode(self, ids):
        """Ids -> text."""
        ids = _id_list(ids)
        ### BEGIN SOLUTION
        bad = [i for i in ids if not 0 <= i < len(self.itos)]
        if bad:
            raise ValueError(f"CharTokenizer: ids {bad[:10]} are outside 0..{len(self.itos) - 1}")
        return "".join([self.itos[i] for i in ids])
        ### END SOLUTION

    def save(self, path):
        """Save as JSON (atomically)."""
        _write_json_atomic(path, {"type": "char", "version": 1, "chars": self.itos, "unk": self.unk})

    @classmethod
    def load(cls, path):
        state = _read_json(path, "char")
        tokenizer = cls("", unk=None)
        tokenizer.itos = list(state["chars"])
        tokenizer.stoi = {s: i for i, s in enumerate(tokenizer.itos)}
        tokenizer.unk = state["unk"]
        tokenizer.unk_id = None if tokenizer.unk is None else tokenizer.stoi[tokenizer.unk]
        return tokenizer


# %% nbgrader={"grade": true, "grade_id": "test-char-tokenizer", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_char_tokenizer():
    tok = CharTokenizer("hello world")
    assert tok.itos == [" ", "d", "e", "h", "l", "o", "r", "w"], f"vocabulary = sorted unique characters, got {tok.itos}"
    ids = tok.encode("hold")
    assert ids == [3, 5, 4, 1], f"'hold' -> ids of h, o, l, d = [3, 5, 4, 1], got {ids}"
    assert tok.decode(ids) == "hold", f"decode(encode(s)) should give s back, got {tok.decode(ids)!r}"
    assert tok.decode(np.array(ids)) == "hold", "decode accepts a NumPy array of ids"
    try:
        tok.encode("hex!")
    except ValueError as err:
        assert "'x'" in str(err) and "'!'" in str(err), f"the error should name the unknown characters: {err}"
    else:
        raise AssertionError("encode('hex!'): 'x' and '!' are not in the vocabulary, raise ValueError")
    safe = CharTokenizer("abc", unk="?")
    assert safe.encode("abz") == [0, 1, 3], f"with unk='?', unknown 'z' maps to the unk id 3, got {safe.encode('abz')}"
    assert safe.decode(safe.encode("abz")) == "ab?", "the unk id decodes to the unk string"
    for bad in ([8], [-1]):
        try:
            tok.decode(bad)
        except ValueError:
            pass
        else:
            raise AssertionError(f"decode({bad}): id outside 0..7 must raise ValueError")
    ### BEGIN HIDDEN TESTS
    assert tok.encode("") == [] and tok.decode([]) == "", "empty text <-> empty ids"
    ### END HIDDEN TESTS


test_char_tokenizer()
print("CharTokenizer: ok")

# %% [markdown]
# ## 7. Byte-pair encoding (BPE), byte-level
#
# *Idea.* Start with the 256 possible **bytes** as the vocabulary (so any
# UTF-8 text encodes; nothing is ever unknown). Then repeat: find the most
# frequent **adjacent pair** of tokens in the training text, give it a new id,
# replace every occurrence. Each **merge** adds one token; stop at `vocab_size`.
#
# *Worked example.* Text `aaabdaaabac`, bytes `a=97, b=98, c=99, d=100`:
#
# ```
# tokens  a a a b d a a a b a c
# pairs   aa:4  ab:2  bd:1  da:1  ba:1  ac:1        -> merge (a, a) into 256 = "aa"
# tokens  256 a b d 256 a b a c                      (aaa -> 256 a: left to right, no overlap)
# pairs   (256,a):2  ab:2  bd:1  (d,256):1  ba:1  ac:1
#         tie at 2: take the smaller pair, (97, 98) < (256, 97) -> merge (a, b) into 257 = "ab"
# tokens  256 257 d 256 257 a c                      11 bytes -> 7 tokens
# ```
#
# *Words first.* GPT-2 does not run BPE over raw text: a regex first cuts it into
# words, and merges happen only inside a word, so no token spans `"dog. The"`
# and the same word always encodes the same way. GPT-2's pattern uses
# `\p{L}` (letters) and `\p{N}` (numbers), which Python's `re` lacks. We write
# the same classes with what `re` has: letters are `[^\W\d_]` (word characters
# that are neither digits nor `_`), numbers `\d`, and "other" is `[^\s\w]|_`.
# The alternatives, tried in order at each position:
#
# | piece | matches |
# | --- | --- |
# | `'(?:[sdmt]\|ll\|ve\|re)` | English contractions: `'s`, `'ll`, … |
# | ` ?[^\W\d_]+` | a word, with the one space before it |
# | ` ?\d+` | a number, with its space |
# | ` ?(?:[^\s\w]\|_)+` | a run of punctuation/symbols, with its space |
# | `\s+(?!\S)` | spaces not followed by a word (so `"  x"` → `" "`, `" x"`) |
# | `\s+` | any other whitespace |
#
# Every character is whitespace, a letter, a digit or "other", so the pieces
# always join back to the exact text — which makes decode(encode(s)) == s.
#
# *Training fast.* The text is split once and each distinct word counted once
# with its frequency (`{(b'T', b'h', b'e'): 1042, ...}`). Recounting all pairs
# after every merge would cost (merges × words); instead we keep the pair
# counts and, for each merge, touch only the words that contain the merged
# pair: subtract their old pairs, merge, add their new pairs. A heap finds the
# most frequent pair (stale heap entries are skipped when popped).
#
# ### Exercise: `count_pairs(words)` and `merge_pair(word, pair, new_id)`
# `words` maps a word (a tuple of ids) to its frequency; `count_pairs` returns
# `{pair: count}` over all adjacent pairs, each weighted by its word's frequency.
# `merge_pair` replaces each occurrence of `pair` in `word`, scanning left to
# right without overlap (`(a, a, a)` → `(new, a)`), and returns a tuple.

# %% nbgrader={"grade": false, "grade_id": "bpe-merge", "locked": false, "schema_version": 3, "solution": true}
#| export data.tokenizers
def count_pairs(words):
    """{word (tuple of ids): frequency} -> {adjacent pair: frequency-weighted count}."""
    ### BEGIN SOLUTION
    counts = defaultdict(int)
    for word, freq in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += freq
    return dict(counts)
    ### END SOLUTION


def merge_pair(word, pair, new_id):
    """Replace each occurrence of `pair` in `word`, left to right, by `new_id`; returns a tuple."""
    ### BEGIN SOLUTION
    first, second = pair
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == first and word[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-bpe-merge", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_bpe_merge():
    word = tuple(b"aaabdaaabac")
    counts = count_pairs({word: 1})
    assert counts[(97, 97)] == 4, f"'aa' occurs 4 times in aaabdaaabac, got {counts.get((97, 97))}"
    assert counts[(97, 98)] == 2 and counts[(100, 97)] == 1, f"'ab' twice, 'da' once; got {counts}"
    assert sum(counts.values()) == len(word) - 1, "a word of n tokens has n - 1 adjacent pairs"
    weighted = count_pairs({(1, 2): 5, (1, 2, 1, 2): 2})
    assert weighted == {(1, 2): 9, (2, 1): 2}, f"counts are weighted by word frequency: (1,2) 5 + 2*2 = 9; got {weighted}"
    merged = merge_pair(word, (97, 97), 256)
    assert merged == (256, 97, 98, 100, 256, 97, 98, 97, 99), f"aaa -> (256, a): left to right, no overlap; got {merged}"
    assert isinstance(merged, tuple), "merge_pair returns a tuple"
    assert merge_pair(merged, (97, 98), 257) == (256, 257, 100, 256, 257, 97, 99), "second merge of the worked example"
    assert merge_pair((1, 1, 1, 1), (1, 1), 9) == (9, 9), "(1,1,1,1) -> (9, 9)"
    assert merge_pair((5,), (5, 5), 9) == (5,) and merge_pair((), (1, 2), 9) == (), "short words are left alone"
    ### BEGIN HIDDEN TESTS
    assert merge_pair((1, 2, 3), (2, 3), 7) == (1, 7), "a pair at the end merges"
    ### END HIDDEN TESTS


test_bpe_merge()
print("count_pairs, merge_pair: ok")

# %% [markdown]
# The tokenizer around them (provided). `train` runs the incremental loop
# described above. `encode` splits the text with the same regex and, inside
# each word, applies the learned merges **in the order they were learned**
# (always the adjacent pair of lowest rank first), which reproduces how the
# training text was merged; words already seen come from a cache. `decode`
# joins the tokens' bytes; only a sequence of ids that does not form valid
# UTF-8 (possible with arbitrary ids, never with ids from `encode`) shows
# `�` (`errors="replace"`). `save`/`load` use JSON, written atomically.

# %%
#| export data.tokenizers
# GPT-2's pre-tokenizer without the `regex` package (see the table in the lesson).
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


def train_merges(words, num_merges):
    """Learn up to `num_merges` merges from {word (tuple of byte ids): frequency}.

    Incremental: pair counts are kept, and each merge touches only the words containing the
    merged pair. Ties go to the smallest pair. Stops early when no pair is left.
    """
    words = dict(words)
    symbols = list(words)  # symbols[w]: the current tokens of word w
    freqs = [words[word] for word in symbols]
    counts = count_pairs(words)
    where = defaultdict(set)  # pair -> words that (may) contain it
    for w, word in enumerate(symbols):
        for pair in zip(word, word[1:]):
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges:
        while heap and counts.get(heap[0][1]) != -heap[0][0]:  # skip stale entries
            heapq.heappop(heap)
        if not heap:
            break
        _, pair = heapq.heappop(heap)
        new_id = 256 + len(merges)
        merges.append(pair)
        changed = defaultdict(int)
        for w in where.pop(pair):
            old = symbols[w]
            new = merge_pair(old, pair, new_id)
            if new == old:
                continue
            for p in zip(old, old[1:]):
                changed[p] -= freqs[w]
            for p in zip(new, new[1:]):
                changed[p] += freqs[w]
                where[p].add(w)
            symbols[w] = new
        for p, delta in changed.items():
            if delta:
                counts[p] = counts.get(p, 0) + delta
                if counts[p] > 0:
                    heapq.heappush(heap, (-counts[p], p))
                else:
                    del counts[p]
    return merges


class BPETokenizer:
    """Byte-level BPE: 256 byte tokens plus one token per learned merge."""

    def __init__(self, merges=(), pattern=SPLIT_PATTERN):
        self.pattern = pattern
        self._split = re.compile(pattern).findall
        self._set_merges(list(merges))

    def _set_merges(self, merges):
        vocab = [bytes([b]) for b in range(256)]
        for k, (first, second) in enumerate(merges):
            if not (0 <= first < 256 + k and 0 <= second < 256 + k):
                raise ValueError(f"merge {k} ({first}, {second}) refers to a token not defined before it")
            vocab.append(vocab[first] + vocab[second])
        self.merges = [tuple(pair) for pair in merges]
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}  # pair -> merge order
        self.vocab = vocab  # id -> bytes
        self._cache = {}

    @property
    def vocab_size(self):
        return len(self.vocab)

    def train(self, text, vocab_size):
        """Learn `vocab_size - 256` merges from `text` (fewer if the text runs out of pairs)."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the byte tokens), got {vocab_size!r}")
        words = Counter(self._split(text))
        byte_words = Counter()
        for word, freq in words.items():
            byte_words[tuple(word.encode("utf-8"))] += freq
        self._set_merges(train_merges(byte_words, vocab_size - 256))
        return self

    def _encode_word(self, word):
        ids = tuple(word.encode("utf-8"))
        ranks = self.ranks
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if pair not in ranks:
                break
            ids = merge_pair(ids, pair, 256 + ranks[pair])
        return ids

    def encode(self, text):
        """Text -> list of ids."""
        cache, out = self._cache, []
        if len(cache) > 100_000:
            cache.clear()
        for word in self._split(text):
            ids = cache.get(word)
            if ids is None:
                ids = cache[word] = self._encode_word(word)
            out.extend(ids)
        return out

    def decode(self, ids):
        """Ids -> text (invalid UTF-8 from arbitrary ids shows as U+FFFD)."""
        ids = _id_list(ids)
        try:
            data = b"".join([self.vocab[i] if i >= 0 else None for i in ids])
        except (IndexError, TypeError):
            bad = [i for i in ids if not 0 <= i < len(self.vocab)]
            raise ValueError(f"BPETokenizer: ids {bad[:10]} are outside 0..{len(self.vocab) - 1}") from None
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id):
        """The bytes a token stands for (handy to inspect merges)."""
        return self.vocab[token_id]

    def save(self, path):
        """Save merges and split pattern as JSON (atomically)."""
        state = {"type": "byte-bpe", "version": 1, "pattern": self.pattern, "merges": [list(m) for m in self.merges]}
        _write_json_atomic(path, state)

    @classmethod
    def load(cls, path):
        state = _read_json(path, "byte-bpe")
        return cls([tuple(m) for m in state["merges"]], pattern=state["pattern"])


# %%
bpe = BPETokenizer().train("aaabdaaabac", vocab_size=258)
print("merges:", bpe.merges, "->", [bpe.token_bytes(i) for i in (256, 257)])
print("encode:", bpe.encode("aaabdaaabac"))
sample = corpus[:200_000]
bpe = BPETokenizer().train(sample, vocab_size=512)
print("first merges:", [bpe.token_bytes(256 + k) for k in range(12)])
print("longest tokens:", sorted(bpe.vocab, key=len)[-5:])
line = "And God said, Let there be light: and there was light."
ids = bpe.encode(line)
print(f"{len(line)} characters -> {len(ids)} tokens:", [bpe.token_bytes(i).decode(errors='replace') for i in ids])
assert bpe.decode(ids) == line

# %% [markdown]
# ## 8. `TextDataset`: next-token windows
#
# A language model is trained to predict token `t+1` from tokens `..t`. From one
# long array of ids we cut windows of `block_size`: input `x = ids[i : i+T]`,
# target `y = ids[i+1 : i+T+1]` — `y` is `x` shifted by one, so one window holds
# `T` predictions. Every start `i` is a sample: `len = n_tokens - T`.
#
# The text is encoded **once** into an int64 array (re-encoding per sample
# would cost more than the model). The validation split is the **last**
# `val_fraction` of the tokens, not a random subset: random windows from one
# text overlap their neighbours, so a random split would test on text the
# model trained on. `gather` builds a batch of windows with one fancy index:
# `ids[starts[:, None] + arange(T + 1)]`, shape `(B, T + 1)`.

# %%
#| export data.datasets
def _read_text(text_or_path):
    """A path (Path, or a str naming an existing file; .gz is decompressed) is read; other str is the text."""
    is_path = isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and len(text_or_path) < 4096
        and os.path.isfile(text_or_path))
    if not is_path:
        if not isinstance(text_or_path, str):
            raise TypeError(f"TextDataset takes a str or a path, got {type(text_or_path).__name__}")
        return text_or_path
    return _read_maybe_gzip(text_or_path).decode("utf-8")


class TextDataset(Dataset):
    """(x, y) windows of `block_size` token ids from a text, y = x shifted by one."""

    def __init__(self, text_or_path, tokenizer, block_size, split="train", val_fraction=0.1):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        ids = np.asarray(tokenizer.encode(_read_text(text_or_path)), dtype=np.int64)  # encoded once
        n_train = len(ids) - int(len(ids) * val_fraction)
        self.ids = ids[:n_train] if split == "train" else ids[n_train:]
        self.block_size = block_size
        self.split = split
        if len(self.ids) < block_size + 1:
            raise ValueError(f"TextDataset: the {split} split has {len(self.ids)} tokens, fewer than block_size + 1 "
                             f"= {block_size + 1}; use a longer text or a smaller block_size/val_fraction")

    def __len__(self):
        return len(self.ids) - self.block_size

    def __getitem__(self, index):
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"window {index} is out of range for a TextDataset of {n} windows")
        window = self.ids[index:index + self.block_size + 1]
        return from_numpy(window[:-1]), from_numpy(window[1:])

    def gather(self, indices):
        """A batch of windows by one fancy index: [x (B, T), y (B, T)]."""
        starts = np.asarray(indices, dtype=np.int64)
        windows = self.ids[starts[:, None] + np.arange(self.block_size + 1)]  # (B, T + 1)
        return [from_numpy(np.ascontiguousarray(windows[:, :-1])), from_numpy(np.ascontiguousarray(windows[:, 1:]))]


# %%
chars = CharTokenizer(corpus)
text_train = TextDataset(corpus, chars, block_size=8)
text_val = TextDataset(corpus, chars, block_size=8, split="val")
x0, y0 = text_train[0]
print(f"{len(text_train):,} train windows, {len(text_val):,} val windows")
print("x:", repr(chars.decode(x0)), "-> y:", repr(chars.decode(y0)))
xb, yb = next(iter(DataLoader(text_train, batch_size=4, shuffle=True, generator=0)))
print("batch:", tuple(xb.shape), tuple(yb.shape), xb.dtype)

# %% [markdown]
# ## 9. What it costs
#
# **Batching.** An epoch over the digits (1,797 samples, batches of 64) two
# ways: the fast path (one fancy index per tensor per batch) and the general
# path (`collate_fn=default_collate` turns the fast path off: 64 lookups and a
# stack per batch).

# %%
import time


def epoch_seconds(loader, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return best


digits_ds = TensorDataset(images, labels)
fast = epoch_seconds(DataLoader(digits_ds, batch_size=64, shuffle=True, generator=0))
slow = epoch_seconds(DataLoader(digits_ds, batch_size=64, shuffle=True, generator=0, collate_fn=default_collate))
print(f"epoch of digits: fancy index {fast * 1e3:.2f} ms, per-sample stack {slow * 1e3:.2f} ms ({slow / fast:.0f}x)")

# %% [markdown]
# **Tokenizers.** Speed (tokens per second), sequence length (characters per
# token), and the memory of the encoded corpus. Ids stored as int64 take 8
# bytes each; any vocabulary under 65,536 fits in `uint16` (2 bytes), which is
# how large corpora are kept on disk — convert to int64 only per batch.

# %%
text = corpus[:200_000]
for name, tok in (("char", chars), ("bpe-512", bpe)):
    start = time.perf_counter()
    encoded = tok.encode(text)
    seconds = time.perf_counter() - start
    print(f"{name:8s}: vocab {tok.vocab_size:4d}, {len(encoded):7,} tokens ({len(text) / len(encoded):.2f} chars/token), "
          f"{len(encoded) / seconds / 1e6:.2f} M tokens/s")
whole = np.asarray(chars.encode(corpus), dtype=np.int64)
print(f"whole corpus, char ids: int64 {whole.nbytes / 2**20:.1f} MiB, uint16 {whole.astype(np.uint16).nbytes / 2**20:.1f} MiB "
      f"(the text itself: {len(corpus.encode()) / 2**20:.1f} MiB)")
start = time.perf_counter()
BPETokenizer().train(text, vocab_size=512)
print(f"BPE training on {len(text) // 1000} KB to 512 tokens: {time.perf_counter() - start:.2f} s")

# %% [markdown]
# Expect the fast path to be an order of magnitude faster than stacking: the
# work is the same copy of bytes, but done by one NumPy call instead of a
# Python loop. BPE makes the sequence several times shorter than characters,
# at a vocabulary 512/~60 times larger: the model's context covers more text,
# its embedding and output layers grow. `bench/bpe.py` measures training on
# 1 MB and encoding throughput.
#
# **Next:** module 07 puts a model, a loss, an optimizer and these loaders
# into a training loop.
