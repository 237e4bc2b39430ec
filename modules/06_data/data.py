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
# A model learns from **batches**: a few dozen samples at a time, in a fresh random
# order every epoch. A language model also needs its text turned into integers first.
# This module builds both pipelines, with PyTorch's names and semantics:
#
# ```
# dataset[i] ──> sampler (order) ──> batch sampler (groups) ──> collate ──> batch of tensors
# text ──> tokenizer (characters or byte-pair merges) ──> ids ──> next-token windows
# ```
#
# **You will write:** `random_split`, `RandomSampler`'s shuffling, `BatchSampler`,
# `default_collate`, the `DataLoader`'s wiring and loop, the character tokenizer, and
# byte-level BPE: counting pairs, merging a pair, the training loop, the vocabulary,
# encoding by merge rank, and the next-token windows of `TextDataset`.
#
# **Provided** (in `provided.py`, exported before this lesson): the `Dataset` protocol
# and `TensorDataset`/`Subset`/`ConcatDataset`, `SequentialSampler`, the helpers that
# stack a batch's leaves, argument checks with PyTorch's error messages, the built-in
# datasets and file readers, tokenizer save/load, and GPT-2's pre-tokenizer regex.
#
# **Cost to keep in mind:** a training step of a small model takes milliseconds, so the
# data pipeline must cost much less. Python loops over samples are the usual culprit;
# the last section measures batching by one fancy index against stacking sample by
# sample, and tokenizer speed and sequence lengths.

# %%
#| default_exp data.dataset

# %% [markdown]
# The cell below imports what this lesson builds on: the provided dataset classes and
# generator handling, the samplers' and loader's argument checks, the leaf-stacking
# helpers, the file and text readers, and the tokenizers' validation and JSON helpers.

# %%
import heapq
import math
import numbers
from collections import Counter, defaultdict
from collections.abc import Mapping

import numpy as np

import tinytorch as tt
from tinytorch.core.tensor import Tensor, from_numpy
from tinytorch.data.dataloader import (Sampler, SequentialSampler, _check_batch_sampler, _check_loader_options,
                                       _check_random_sampler, _numbers_to_batch, _stack_arrays, _stack_tensors,
                                       default_convert)
from tinytorch.data.dataset import (Dataset, Subset, TensorDataset, _normalize_index, _split_lengths, as_generator,
                                    _batch_gather, _normalize_indices)
from tinytorch.data.datasets import _check_text_dataset, _read_text, digits, kjv_text
from tinytorch.data.tokenizers import (SPLIT_PATTERN, _BPEBase, _check_merges, _check_text, _check_vocab_size,
                                       _compile_pattern, _describe_chars, _id_list, _read_json, _save_json)

# %% [markdown]
# ## 1. Datasets, and a random split
#
# *Why split "data" in two?* A dataset answers two questions: how many samples are
# there (`len(ds)`) and what is sample `i` (`ds[i]`). Everything else (order, batch
# size, shuffling, dropping a ragged last batch, turning samples into tensors) is the
# same for every dataset, so it lives once, in the `DataLoader`. A new dataset needs
# only `__len__` and `__getitem__`.
#
# Provided: `TensorDataset(x, y)`, whose sample `i` is `(x[i], y[i])`, with
# `gather(indices)`, a whole batch by **one fancy index per tensor** (`x[[4, 17, 3]]`)
# instead of `B` lookups; `Subset(ds, indices)`, a renumbered view of some samples;
# `ConcatDataset` (also `ds1 + ds2`).
#
# *Randomness.* Everything random here takes a `generator`: a `numpy.random.Generator`
# (used as is), an int seed, or `None`, in which case a seed is drawn from TinyTorch's
# global generator, so `tt.manual_seed(0)` makes the run repeat, as `torch.manual_seed`
# does. `as_generator(generator)` turns any of the three into a NumPy Generator.
#
# ### `random_split`: hold out data without bias
#
# A validation set must be a random sample of the data: files are often sorted (by
# class, by date, by writer), and cutting the last 20 % of a sorted file tests on a
# different distribution than the one the model trained on.
#
# The math is one permutation. With `n` samples and part sizes `k_1, ..., k_m`
# (`sum k_j = n`), draw a random permutation `π` of `0..n-1` and give part `j` the
# positions from `k_1 + ... + k_{j-1}` up to `k_1 + ... + k_j`. Every index lands in
# exactly one part, and every assignment of indices to parts of these sizes is equally
# likely.
#
# *Worked example.* `n = 5`, sizes `[3, 2]`, permutation `[4, 0, 3, 1, 2]`: the parts are
# `Subset(ds, [4, 0, 3])` and `Subset(ds, [1, 2])`. Fractions such as `[0.8, 0.2]` are
# turned into counts first (the provided `_split_lengths`, with PyTorch's rule: floor each,
# then hand out the remainder one by one from the first part).
#
# ### Exercise: `random_split(dataset, lengths, generator=None)`
#
# - Hint 1: shuffle the indices once, then cut the shuffled list into consecutive pieces.
# - Hint 2: part `j` ends at the running sum of the counts up to `j` and starts `count_j`
#   before that.
# - Hint 3: `order` = the generator's `permutation(n)` as a Python list; `ends` = the
#   cumulative sums of `counts`; return one `Subset(dataset, order[start:end])` per part,
#   in the order of `lengths`.

# %% nbgrader={"grade": false, "grade_id": "random-split", "locked": false, "schema_version": 3, "solution": true}
#| export
def random_split(dataset, lengths, generator=None):
    """Split into non-overlapping random `Subset`s of the given lengths (counts or fractions)."""
    counts = _split_lengths(len(dataset), lengths)
    ### BEGIN SOLUTION
    order = as_generator(generator).permutation(len(dataset)).tolist()
    ends = np.cumsum(counts).tolist()
    return [Subset(dataset, order[end - count:end]) for count, end in zip(counts, ends)]
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-random-split", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_random_split():
    parts = random_split(list(range(10)), [7, 3], generator=0)
    assert isinstance(parts, list) and len(parts) == 2, f"lengths [7, 3] give a list of 2 Subsets, got {parts!r}"
    assert all(isinstance(p, Subset) for p in parts), "each part is a Subset of the dataset"
    assert [len(p) for p in parts] == [7, 3], f"part sizes should be [7, 3], got {[len(p) for p in parts]}"
    both = sorted(list(parts[0].indices) + list(parts[1].indices))
    assert both == list(range(10)), f"the parts must partition 0..9, every index exactly once; got {both}"
    expected = np.random.default_rng(0).permutation(10).tolist()
    assert list(parts[0].indices) == expected[:7], "part 0 = the first 7 positions of generator.permutation(10)"
    assert list(parts[1].indices) == expected[7:], "part 1 = the next 3 positions of the same permutation"
    again = random_split(list(range(10)), [0.7, 0.3], generator=0)
    assert [list(p.indices) for p in again] == [expected[:7], expected[7:]], "fractions 0.7/0.3 of 10 = counts 7/3"
    shared = sorted(sum([list(p.indices) for p in random_split(list(range(10)), [5, 5], np.random.default_rng(0))], []))
    assert shared == list(range(10)), f"a Generator passed in: the parts must still partition 0..9, got {shared}: " \
        "draw one permutation and cut it (a new permutation per part overlaps)"
    tt.manual_seed(3)
    first = [list(p.indices) for p in random_split(list(range(20)), [10, 10])]
    tt.manual_seed(3)
    assert first == [list(p.indices) for p in random_split(list(range(20)), [10, 10])], \
        "with generator=None, tt.manual_seed must make the split repeat (use as_generator)"
    ### BEGIN HIDDEN TESTS
    empty, full = random_split(list(range(4)), [0, 4], generator=1)
    assert len(empty) == 0 and sorted(full.indices) == [0, 1, 2, 3], "an empty part is allowed"
    ### END HIDDEN TESTS


test_random_split()
print("random_split: ok")

# %%
xs = tt.tensor(np.arange(10.0).reshape(5, 2))  # 5 samples of 2 features
ys = tt.tensor([0, 1, 0, 1, 1])
ds = TensorDataset(xs, ys)
x2, y2 = ds[2]
print("len:", len(ds), "| sample 2:", x2.data, int(y2.item()))
train, val = random_split(ds, [0.6, 0.4], generator=0)
print("random_split sizes:", len(train), len(val), "| train indices:", train.indices)

# %% [markdown]
# **Cost.** One permutation: `O(n)` time and `8n` bytes of int64 indices, once. A `Subset`
# copies no samples; it keeps its list of indices and looks samples up in the parent.
#
# ## 2. Samplers: in which order, and in which batches
#
# A **sampler** yields indices. `SequentialSampler` (provided) yields `0, 1, ..., n-1`.
# `RandomSampler` yields a random order.
#
# *Why shuffle?* Stochastic gradient descent assumes each batch is a random draw from
# the data. In file order (all the 0s, then all the 1s...), consecutive batches would
# pull the weights one way, then another, and the model would mostly remember the last
# class it saw. A **new** permutation every epoch also keeps the model from fitting the
# order of the batches.
#
# *The math.* Without replacement, an epoch is a uniform random permutation of
# `0..n-1`: each sample is seen exactly once. With `num_samples > n`, take whole
# permutations one after another, then the first `num_samples mod n` positions of one
# more (PyTorch's rule), so every sample is seen `floor(num_samples / n)` or one more
# times. With `replacement=True`, draw `num_samples` indices independently and uniformly
# from `0..n-1`: some repeat, some are missed (about `e^{-1}`, 37 %, per epoch of `n`).
#
# *Seeding.* With `generator=None`, every epoch draws a fresh seed from TinyTorch's
# global generator (`as_generator(None)`): epochs differ from each other, yet the whole
# run repeats after `tt.manual_seed(0)`. A generator you pass is used directly, and its
# stream goes on across epochs, so epochs differ too.
#
# ### Exercise: `RandomSampler.__iter__`
#
# - Hint 1: pick the generator for this epoch, then build the whole order as one array.
# - Hint 2: with replacement, `num_samples` uniform integers in `[0, n)`; without,
#   `divmod(num_samples, n)` gives the number of whole permutations and the rest.
# - Hint 3: `rng` = `self.generator` or, when it is None, `as_generator(None)`;
#   `rng.integers(0, n, size=...)` or `np.concatenate` of `full` permutations and
#   the first `rest` positions of one more permutation; return an iterator over the order
#   as Python ints (NumPy's `tolist`).

# %% nbgrader={"grade": false, "grade_id": "random-sampler", "locked": false, "schema_version": 3, "solution": true}
#| export data.dataloader
class RandomSampler(Sampler):
    """A random permutation per epoch, or `num_samples` independent draws with `replacement`."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        # an int seed becomes its Generator here, so its state can be saved and restored
        self.generator = None if generator is None else as_generator(generator)
        _check_random_sampler(replacement, self.num_samples)

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        ### BEGIN SOLUTION
        rng = self.generator if self.generator is not None else as_generator(None)  # None: fresh seed per epoch
        n = len(self.data_source)
        if self.replacement:
            order = rng.integers(0, n, size=self.num_samples)
        else:  # more samples than the data: whole permutations, then part of one
            full, rest = divmod(self.num_samples, n)
            order = np.concatenate([rng.permutation(n) for _ in range(full)] + [rng.permutation(n)[:rest]])
        return iter(order.tolist())
        ### END SOLUTION

    def __len__(self):
        return self.num_samples


# %% nbgrader={"grade": true, "grade_id": "test-random-sampler", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_random_sampler():
    order = list(RandomSampler(range(8), generator=0))
    assert sorted(order) == list(range(8)), f"without replacement an epoch is a permutation of 0..7, got {order}"
    assert order != list(range(8)), "the order should be shuffled, not 0..7"
    assert all(type(i) is int for i in order), "yield Python ints (convert the NumPy array with .tolist())"
    sampler = RandomSampler(range(8), generator=1)
    assert list(sampler) != list(sampler), "a new permutation every epoch: keep drawing from the same generator"
    drawn = list(RandomSampler(range(3), replacement=True, num_samples=50, generator=0))
    assert len(drawn) == 50 and set(drawn) == {0, 1, 2}, f"50 draws from 0..2 with replacement, got {drawn}"
    draws = list(RandomSampler(range(10), replacement=True, num_samples=10, generator=0))
    assert len(set(draws)) < 10, f"replacement=True: 10 independent draws from 0..9 repeat an index, got {draws}"
    more = list(RandomSampler(range(4), num_samples=10, generator=0))
    assert len(more) == 10, f"num_samples=10 yields 10 indices, got {len(more)}"
    assert sorted(more[:4]) == sorted(more[4:8]) == [0, 1, 2, 3], f"whole permutations first, got {more}"
    assert len(set(more[8:])) == 2, f"then 2 distinct indices from one more permutation, got {more[8:]}"
    assert more[:4] != more[4:8], f"each lap is a new permutation, not the same order again: got {more}"
    tails = sorted({i for seed in range(5) for i in RandomSampler(range(10), num_samples=2, generator=seed)})
    assert max(tails) >= 2, f"num_samples=2 of 10: any 2 of the 10 indices, cut from a permutation of all 10; " \
        f"5 seeds only ever gave {tails}"
    few = list(RandomSampler(range(10), num_samples=4, generator=0))
    assert len(few) == 4 == len(set(few)), f"num_samples=4 of 10: 4 distinct indices (part of a permutation), got {few}"
    tt.manual_seed(0)
    first = list(RandomSampler(range(20)))
    tt.manual_seed(0)
    assert first == list(RandomSampler(range(20))), "generator=None: tt.manual_seed makes the order repeat"
    sampler = RandomSampler(range(20))
    epochs = [list(sampler), list(sampler)]
    assert epochs[0] != epochs[1], ("generator=None: each epoch must reshuffle with a fresh seed "
                                    f"(as_generator(None)), but epochs 0 and 1 both gave {epochs[0]}")
    ### BEGIN HIDDEN TESTS
    assert list(RandomSampler(range(1), generator=0)) == [0], "one sample: one index"
    ### END HIDDEN TESTS


test_random_sampler()
print("RandomSampler: ok")

# %% [markdown]
# A **batch sampler** groups indices into lists of `batch_size`. The last batch holds
# what is left (`n mod B` samples) unless `drop_last=True` drops it, which helps when every
# batch must have the same size (batch statistics, compiled shapes). So
# `len(batch_sampler)` is `ceil(n / B)`, or `floor(n / B)` with `drop_last`.
#
# *Worked example.* 10 indices, `B = 3`: `[0, 1, 2] [3, 4, 5] [6, 7, 8] [9]`, 4 batches;
# with `drop_last`, the `[9]` goes and there are 3.
#
# ### Exercise: `BatchSampler.__iter__` and `__len__`
#
# - Hint 1: walk the sampler once, collecting indices; a full list is a batch.
# - Hint 2: yield when the list reaches `batch_size`; after the loop, a non-empty list is
#   the partial batch. `__len__` is the formula above, from `len(self.sampler)`.
# - Hint 3: `batch = []`, `for index in self.sampler`, `append`, yield and start a new list
#   when full; at the end yield the rest unless `self.drop_last`; `__len__` uses `//` or
#   `math.ceil`.

# %% nbgrader={"grade": false, "grade_id": "batch-sampler", "locked": false, "schema_version": 3, "solution": true}
#| export data.dataloader
class BatchSampler(Sampler):
    """Groups the indices of `sampler` into lists of `batch_size` (the last may be shorter)."""

    def __init__(self, sampler, batch_size, drop_last):
        _check_batch_sampler(batch_size, drop_last)
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
    got = len(BatchSampler(range(9), 3, False))
    assert got == 3, f"len without a partial batch: ceil(9 / 3) = 3 (no empty last batch), got {got}"
    assert len(BatchSampler(range(2), 5, True)) == 0, "fewer samples than one batch with drop_last: 0 batches"
    shuffled = list(BatchSampler(RandomSampler(range(7), generator=1), 7, False))
    assert len(shuffled) == 1 and sorted(shuffled[0]) == list(range(7)), f"one batch holding a permutation; got {shuffled}"
    ### BEGIN HIDDEN TESTS
    assert list(BatchSampler([5, 3], 1, False)) == [[5], [3]], "batch_size 1: one index per batch, in sampler order"
    ### END HIDDEN TESTS


test_batch_sampler()
print("BatchSampler: ok")

# %% [markdown]
# **Cost.** Batching indices is `O(n)` list appends per epoch, negligible next to
# fetching the samples. Shuffling the **indices**, not the data, is what keeps it cheap:
# no sample is copied until it is fetched.
#
# ## 3. Collation: from a list of samples to one batch
#
# The loader fetches `B` samples, each maybe a tuple `(image, label)`, a dict
# `{"x": ..., "mask": ...}`, or nested deeper, and must return the same structure with
# every leaf **stacked** along a new first dimension of size `B`:
#
# ```
# [(x0, 0), (x1, 1), (x2, 1)]  ->  [stack(x0, x1, x2) of shape (3, ...), tensor([0, 1, 1])]
# ```
#
# It is a recursion on the structure of the first sample: a leaf is stacked; a container
# is taken apart field by field (the `k`-th fields of all samples form a smaller batch),
# each field collated, and the container rebuilt. The rules of `default_collate`
# (PyTorch's, with TinyTorch's float32 default):
#
# | a sample's element | the batch's element | provided helper |
# | --- | --- | --- |
# | `Tensor` | stacked tensor, shape `(B, *shape)` | `_stack_tensors` |
# | NumPy array | stacked tensor (float64 becomes float32) | `_stack_arrays` |
# | `str` / `bytes` | a plain list of them | |
# | Python/NumPy number | 1-D tensor: ints → int64, floats → float32, bools → bool | `_numbers_to_batch` |
# | dict | dict with the same keys, each value collated | |
# | namedtuple | the same namedtuple type, each field collated | |
# | tuple / list | a **list** of collated fields (all samples of one length) | |
#
# ### Exercise: `default_collate(batch)`
#
# - Hint 1: dispatch on the type of `elem = batch[0]`, in the order of the table; check
#   `str`/`bytes` before numbers (`np.str_` is both), and namedtuple before tuple.
# - Hint 2: for a container, "transpose" the batch: the values of key `k` across samples,
#   or the `i`-th fields across samples (`zip(*batch)`), then recurse on each.
# - Hint 3: `isinstance` checks against `Tensor`, `np.ndarray`, `(str, bytes)`,
#   `(numbers.Number, np.generic)`, `Mapping`, a tuple with `_fields`, `(tuple, list)`;
#   a namedtuple is rebuilt with `type(elem)(*fields)`; samples of unequal length raise
#   `RuntimeError`. Anything else falls through to the `TypeError` below.

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
    out = default_collate(samples)
    assert isinstance(out, list) and len(out) == 2, f"a tuple sample collates to a list of 2 fields, got {out!r}"
    x, y = out
    assert isinstance(x, tt.Tensor) and x.shape == (2, 2), f"tensors stack to shape (B, 2) = (2, 2), got {getattr(x, 'shape', x)}"
    assert np.array_equal(x.data, [[1, 2], [4, 5]]), f"stacked rows in sample order, got {x.data}"
    assert isinstance(y, tt.Tensor) and y.dtype == np.int64, f"Python ints become an int64 tensor, got {getattr(y, 'dtype', y)}"
    assert y.data.tolist() == [3, 6], f"labels [3, 6] expected, got {y.data}"
    floats = default_collate([0.5, 1.5])
    assert isinstance(floats, tt.Tensor) and floats.dtype == np.float32, f"Python floats -> float32, got {floats!r}"
    arrays = default_collate([np.zeros((2, 3)), np.ones((2, 3))])
    assert isinstance(arrays, tt.Tensor) and arrays.shape == (2, 2, 3) and arrays.dtype == np.float32, \
        f"float64 arrays -> (B, 2, 3) float32, got {arrays!r}"
    nested = default_collate([{"x": np.float32(1), "meta": ("a", [1, 2])}, {"x": np.float32(2), "meta": ("b", [3, 4])}])
    assert isinstance(nested, dict) and list(nested) == ["x", "meta"], \
        f"a dict batch keeps the keys, in the samples' order (x, meta), got {nested!r}"
    assert nested["x"].data.tolist() == [1.0, 2.0], "dict values are collated"
    names, pairs = nested["meta"]
    assert names == ["a", "b"], f"strings are kept as a list, got {names}"
    try:
        raw = default_collate([b"ab", b"cd"])
    except TypeError as err:
        raw = err
    assert raw == [b"ab", b"cd"], f"bytes are kept as a list, like str: [b'ab', b'cd']; got {raw!r}"
    assert [p.data.tolist() for p in pairs] == [[1, 3], [2, 4]], "a list field collates position by position"
    Point = namedtuple("Point", "x y")
    point = default_collate([Point(1, 2.0), Point(3, 4.0)])
    assert isinstance(point, Point) and point.x.data.tolist() == [1, 3], f"a namedtuple keeps its type, got {point}"
    try:
        default_collate([[1, 2], [3], [4, 5]])
    except RuntimeError:
        pass
    else:
        raise AssertionError("samples [1, 2], [3], [4, 5]: the middle one is shorter, so raise RuntimeError "
                             "(compare every sample's length with the first's)")
    ### BEGIN HIDDEN TESTS
    flags = default_collate([True, False])
    assert flags.dtype == np.bool_, f"bools -> bool tensor, got {flags.dtype}"
    ### END HIDDEN TESTS


test_default_collate()
print("default_collate: ok")

# %% [markdown]
# ## 4. The `DataLoader`
#
# The loader wires the pieces together:
#
# ```
# sampler (order) -> BatchSampler (groups) -> dataset[i] for each i -> collate_fn -> batch
# ```
#
# Its options follow PyTorch. `shuffle=True` means "build a `RandomSampler`" (with the
# loader's `generator`), `shuffle=False` a `SequentialSampler`, unless you pass your own
# `sampler`. A `batch_size` means "wrap the sampler in a `BatchSampler`"; passing a
# `batch_sampler` instead replaces `batch_size`, `shuffle`, `sampler` and `drop_last`;
# `batch_size=None` turns batching off, and samples come one by one through
# `default_convert` (NumPy arrays become tensors). Which options exclude each other, and
# the error for an empty dataset, are checked by the provided `_check_loader_options`.
#
# *The fast path.* Fetching `B` samples one by one and stacking them costs `B` Python
# calls and `B` small tensors per batch. When the dataset can `gather` a batch itself
# (`TensorDataset`, `TextDataset`, a `Subset` of either) and no `collate_fn` is given,
# the loader asks it for the whole batch: one fancy index per tensor, the same result.
# `__init__` stores that method as `self._gather` (or None).
#
# ### Exercise: the sampler chain in `DataLoader.__init__`, `__iter__` and `__len__`
#
# - Hint 1: `__init__` builds the missing links of the chain; `__iter__` walks the last
#   link and turns each group of indices into a batch.
# - Hint 2: no batch sampler means no batching: one sample per index, through
#   `collate_fn`. Otherwise each list of indices becomes one `_gather(indices)` call when
#   the fast path is on, else `collate_fn` of the list of fetched samples.
# - Hint 3: in `__init__`, two `if`s: no `sampler` given, build one of the two samplers
#   (the random one gets the loader's `generator`); a `batch_size` given, wrap the sampler
#   in a `BatchSampler` with `drop_last`.
#   `__iter__` is a generator: two `for` loops with `yield`, and a `return` between them.
#   `__len__` is the length of the last link of the chain.

# %% nbgrader={"grade": false, "grade_id": "dataloader", "locked": false, "schema_version": 3, "solution": true}
#| export data.dataloader
class DataLoader:
    """Iterate over a dataset in batches: sampler -> batch sampler -> fetch -> collate."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 drop_last=False, collate_fn=None, generator=None):
        _check_loader_options(dataset, batch_size, shuffle, sampler, batch_sampler, drop_last)
        if batch_sampler is not None:  # it replaces batch_size and drop_last
            batch_size, drop_last = None, False
        generator = None if generator is None else as_generator(generator)
        ### BEGIN SOLUTION
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        ### END SOLUTION
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.generator = generator
        batching = batch_sampler is not None
        self.collate_fn = collate_fn or (default_collate if batching else default_convert)
        self._gather = _batch_gather(dataset) if batching and collate_fn is None else None

    def __iter__(self):
        ### BEGIN SOLUTION
        if self.batch_sampler is None:
            for index in self.sampler:
                yield self.collate_fn(self.dataset[index])
            return
        for indices in self.batch_sampler:
            if self._gather is not None:
                yield self._gather(indices)
            else:
                yield self.collate_fn([self.dataset[i] for i in indices])
        ### END SOLUTION

    def __len__(self):
        ### BEGIN SOLUTION
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-dataloader", "locked": true, "points": 3, "schema_version": 3, "solution": false}
class Squares(Dataset):
    """Sample i is (i, i * i), and no gather: the loader must fetch and collate."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return i, i * i


class CountingGather(TensorDataset):
    """A TensorDataset that records each gather call."""

    calls = []

    def gather(self, indices):
        self.calls.append(list(indices))
        return super().gather(indices)


def test_dataloader():
    data = TensorDataset(tt.tensor(np.arange(14.0).reshape(7, 2)), tt.tensor(np.arange(7)))
    loader = DataLoader(data, batch_size=3)
    batches = list(loader)
    assert len(batches) == 3 and len(loader) == 3, \
        f"7 samples in batches of 3: 3 batches, got {len(batches)} batches and len(loader) = {len(loader)}"
    assert [b[1].data.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]], "without shuffle: in order"
    assert batches[0][0].shape == (3, 2), f"a batch of x has shape (3, 2), got {batches[0][0].shape}"
    shuffled = sum([b[1].data.tolist() for b in DataLoader(data, batch_size=3, shuffle=True, generator=0)], [])
    assert sorted(shuffled) == list(range(7)) and shuffled != list(range(7)), f"shuffle: a permutation, got {shuffled}"
    want = list(RandomSampler(range(7), generator=0))
    runs = []
    for seed in (1, 2):
        tt.manual_seed(seed)
        runs.append([b[1].data.tolist() for b in DataLoader(data, batch_size=7, shuffle=True)])
    assert runs[0] != runs[1], f"shuffle, generator=None: another tt.manual_seed gives another order (no fixed seed); " \
        f"seeds 1 and 2 both gave {runs[0]}"
    assert shuffled == want, f"shuffle with generator=0: hand the loader's generator to RandomSampler, so the order is " \
        f"{want} as from RandomSampler(..., generator=0); got {shuffled}"
    assert len(list(DataLoader(data, batch_size=3, drop_last=True))) == 2, "drop_last drops the batch [6]"
    none = len(DataLoader(data, batch_size=8, drop_last=True))
    assert none == 0, f"7 samples, batch_size=8, drop_last: no batch, so len(loader) is 0 (the batch sampler's); got {none}"
    general = [b[1].data.tolist() for b in DataLoader(Squares(), batch_size=2)]
    assert general == [[0, 1], [4, 9], [16]], f"no gather: fetch each sample, then default_collate; got {general}"
    assert list(DataLoader(Squares(), batch_size=2, collate_fn=len)) == [2, 2, 1], "collate_fn gets the list of samples"
    assert list(DataLoader(Squares(), batch_size=None))[3] == (3, 9), "batch_size=None: samples one by one"
    item = next(iter(DataLoader([np.ones(2, np.float32)], batch_size=None)))
    assert isinstance(item, tt.Tensor), "batch_size=None: each sample still goes through collate_fn (default_convert " \
        f"turns an array into a Tensor, as in torch); got {type(item).__name__}"
    assert list(DataLoader(Squares(), sampler=[4, 1], batch_size=2, collate_fn=list)) == [[(4, 16), (1, 1)]], \
        "a sampler you pass decides the order"
    empty = DataLoader(Squares(), sampler=[], batch_size=2)
    assert len(empty) == 0 and list(empty) == [], "a sampler you pass is used even when it is empty (falsy but " \
        f"not None): 0 batches expected, got {len(empty)}"
    assert list(DataLoader(Squares(), batch_sampler=[[2], [0, 1]], collate_fn=len)) == [1, 2], "batch_sampler: its groups"
    groups = len(DataLoader(Squares(), batch_sampler=[[2], [0, 1]]))
    assert groups == 2, f"with a batch_sampler (and batch_size None), len(loader) is its number of groups, 2; got {groups}"
    CountingGather.calls.clear()
    list(DataLoader(CountingGather(*data.tensors), batch_size=4))
    assert CountingGather.calls == [[0, 1, 2, 3], [4, 5, 6]], \
        f"with a gather and no collate_fn, ask the dataset for each whole batch; calls: {CountingGather.calls}"
    ### BEGIN HIDDEN TESTS
    tt.manual_seed(0)
    first = [b[1].data.tolist() for b in DataLoader(data, batch_size=7, shuffle=True)]
    tt.manual_seed(0)
    assert first == [b[1].data.tolist() for b in DataLoader(data, batch_size=7, shuffle=True)], "tt.manual_seed repeats"
    ### END HIDDEN TESTS


test_dataloader()
print("DataLoader: ok")

# %%
loader = DataLoader(ds, batch_size=2, shuffle=True, generator=0)
print("len(loader) =", len(loader), "(5 samples, batches of 2)")
for xb, yb in loader:
    print("x", tuple(xb.shape), "y", yb.data.tolist())

# %% [markdown]
# ## 5. Datasets that come with TinyTorch
#
# Two datasets work offline, from a fresh clone (their sources and licenses are in
# `provided.py` and `assets/SOURCES.md`):
#
# - `digits()`: 1,797 handwritten digits as 8×8 images with pixel values 0–16, ten
#   classes (UCI, CC BY 4.0). Small enough to train an MLP on in seconds, real enough
#   that accuracy means something. `train_test_split` makes a seeded split into two
#   `TensorDataset`s.
# - `kjv_text()`: 1.1 MB of the King James Bible (public domain), plain English with a
#   small alphabet: good for a character-level or BPE language model on a laptop.
#
# For data you download, `load_mnist(root)` reads MNIST or Fashion-MNIST IDX files and
# `load_cifar10(root)` CIFAR-10's binary version; both check sizes against headers and
# name the file when something is wrong.

# %%
images, labels = digits()
print("digits:", tuple(images.shape), images.dtype, "| classes:", np.unique(labels.data).tolist())
print("\n".join("".join(" .:-=+*#%@"[int(v) * 9 // 16] for v in row) for row in images.data[0]), "<- label", labels.data[0])
corpus = kjv_text()
print(f"kjv_text(): {len(corpus.encode()):,} bytes, {len(set(corpus))} distinct characters")

# %% [markdown]
# ## 6. Tokenizers: text as integers
#
# A language model reads a sequence of integer **token ids** and predicts the next one. A
# **tokenizer** fixes the vocabulary and maps text to ids (`encode`) and back (`decode`).
# The choice is a trade-off:
#
# - **characters**: a tiny vocabulary (about 60 for English), every text encodes, but
#   sequences are long: a context of 256 tokens sees 256 characters;
# - **words**: short sequences, but a huge vocabulary, and any unseen word is lost;
# - **subwords (BPE)**: a few thousand to 50k pieces; frequent words are one token, rare
#   words several, nothing is ever unknown. Sequences are 3–4× shorter than characters on
#   English, so the same context covers 3–4× more text, paid for by a bigger embedding
#   table and output layer (`vocab_size × d_model` each).
#
# `CharTokenizer` builds its vocabulary from a text: the **sorted** set of its characters,
# id = position (sorted, so the same text always gives the same ids). A character it
# never saw is an error that names it, unless you pass `unk="?"` (any non-empty string):
# it is added at the end of the vocabulary if the text lacks it, and unknown characters
# map to it.
#
# *Worked example.* `"hello world"`: vocabulary `[' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']`,
# so `"hold"` encodes to `[3, 5, 4, 1]`.
#
# ### Exercise: `CharTokenizer.__init__`'s vocabulary, `encode`, `decode`
#
# - Hint 1: two tables, id → character (`itos`, a list) and character → id (`stoi`, a dict).
# - Hint 2: `encode` first finds the characters of the text missing from `stoi` (a set
#   difference); if there are some and no `unk`, raise `ValueError` naming them
#   (`_describe_chars`). `decode` looks each id up in `itos` and joins.
# - Hint 3: `sorted(set(text))`, append `unk` when given and missing; `stoi` by
#   `enumerate`; keep `self.unk` and `self.unk_id` (None without `unk`). `encode` returns
#   a list built with `dict.get`, the unk id as its default; `decode` joins strings (the ids are already
#   checked by `_id_list`).

# %% nbgrader={"grade": false, "grade_id": "char-tokenizer", "locked": false, "schema_version": 3, "solution": true}
#| export data.tokenizers
class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of `text`."""

    def __init__(self, text, unk=None):
        if unk is not None and (not isinstance(unk, str) or not unk):
            raise ValueError(f"unk must be a non-empty string, got {unk!r}")
        ### BEGIN SOLUTION
        self.itos = sorted(set(text))  # id -> character
        if unk is not None and unk not in self.itos:
            self.itos.append(unk)
        self.stoi = {s: i for i, s in enumerate(self.itos)}  # character -> id
        self.unk = unk
        self.unk_id = None if unk is None else self.stoi[unk]
        ### END SOLUTION

    @property
    def vocab_size(self):
        return len(self.itos)

    def encode(self, text):
        """Text -> list of ids; unknown characters raise (or map to `unk` when configured)."""
        _check_text(text, "CharTokenizer")
        ### BEGIN SOLUTION
        unknown = set(text) - self.stoi.keys()
        if unknown and self.unk_id is None:
            raise ValueError(f"CharTokenizer: characters not in the vocabulary: {_describe_chars(unknown)}; "
                             f"build the tokenizer from a text that has them, or pass unk=...")
        lookup = self.stoi.get
        return [lookup(c, self.unk_id) for c in text]
        ### END SOLUTION

    def decode(self, ids):
        """Ids (list, 1-D array or tensor) -> text."""
        ids = _id_list(ids, self.vocab_size, "CharTokenizer")
        ### BEGIN SOLUTION
        return "".join([self.itos[i] for i in ids])
        ### END SOLUTION

    def save(self, path):
        """Save as JSON (atomically)."""
        _save_json(path, {"type": "char", "version": 1, "chars": self.itos, "unk": self.unk})

    @classmethod
    def load(cls, path):
        state = _read_json(path, "char")
        chars, unk = state["chars"], state["unk"]
        if unk is not None and chars and chars[-1] == unk:  # unk was appended (or sorts last anyway)
            chars = chars[:-1]
        return cls("".join(chars), unk=unk)


# %% nbgrader={"grade": true, "grade_id": "test-char-tokenizer", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_char_tokenizer():
    tok = CharTokenizer("hello world")
    assert tok.itos == [" ", "d", "e", "h", "l", "o", "r", "w"], f"vocabulary = sorted unique characters, got {tok.itos}"
    assert tok.stoi["o"] == 5 and tok.vocab_size == 8, f"stoi maps a character to its position, got {tok.stoi}"
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
    assert safe.itos == ["a", "b", "c", "?"], f"unk '?' is appended to the vocabulary, got {safe.itos}"
    assert safe.encode("abz") == [0, 1, 3], f"with unk='?', unknown 'z' maps to the unk id 3, got {safe.encode('abz')}"
    assert safe.decode(safe.encode("abz")) == "ab?", "the unk id decodes to the unk string"
    first = CharTokenizer("ab?", unk="?")  # '?' sorts before 'a'
    try:
        got = (first.unk_id, first.encode("az"))
    except ValueError as err:
        got = err
    assert got == (0, [1, 0]), "'ab?' with unk='?': '?' sorts first, so unk_id is its id 0 (not always the last) " \
        f"and 'az' -> [1, 0] (an unk_id of 0 is set); expected (unk_id, ids) = (0, [1, 0]), got {got!r}"
    ### BEGIN HIDDEN TESTS
    assert tok.encode("") == [] and tok.decode([]) == "", "empty text <-> empty ids"
    assert CharTokenizer("abc", unk="a").itos == ["a", "b", "c"], "an unk already in the text is not added twice"
    ### END HIDDEN TESTS


test_char_tokenizer()
print("CharTokenizer: ok")

# %% [markdown]
# **Cost.** `encode` is one dict lookup per character, `O(len(text))`, about 10–20 M
# characters per second in Python; the vocabulary is `O(V)`, tiny.
#
# ## 7. Byte-pair encoding (BPE), byte-level
#
# *Idea.* Start with the 256 possible **bytes** as the vocabulary, so any UTF-8 text
# encodes and nothing is ever unknown. Then repeat: find the most frequent **adjacent
# pair** of tokens in the training text, give it a new id, replace every occurrence.
# Each **merge** adds one token; stop at `vocab_size`. Frequent strings ("the", " and")
# end up as single tokens because their pieces are merged early and often.
#
# *The math.* Let the text be token sequence `t_1 ... t_N` and `c(a, b)` the number of
# positions `i` with `(t_i, t_{i+1}) = (a, b)`. A merge picks
# `argmax_{(a,b)} c(a, b)` (ties: the smallest pair, so training is deterministic) and
# shortens the text by exactly `c(a, b)` tokens, minus overlaps (`a a a` holds two `aa`
# pairs but only one can merge). So each merge is the greedy best single step at
# shortening the training text.
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
# *Words first.* GPT-2 does not run BPE over raw text: a regex first cuts it into words,
# and merges happen only inside a word, so no token spans `"dog. The"` and the same word
# always encodes the same way. The provided `SPLIT_PATTERN` is GPT-2's pattern, compiled
# with the `regex` package (`\p{L}`: any letter, `\p{N}`: any number, `²` and `Ⅻ` included;
# see `provided.py`); its alternatives, tried in order at each position:
#
# | piece | matches |
# | --- | --- |
# | `'s\|'t\|'re\|'ve\|'m\|'ll\|'d` | English contractions: `'s`, `'ll`, … |
# | ` ?\p{L}+` | a word, with the one space before it |
# | ` ?\p{N}+` | a number, with its space (`'x² 2³'` → `x`, `²`, ` 2³`) |
# | ` ?[^\s\p{L}\p{N}]+` | a run of punctuation/symbols, with its space |
# | `\s+(?!\S)` | spaces not followed by a word (so `"  x"` → `" "`, `" x"`) |
# | `\s+` | any other whitespace |
#
# Every character is whitespace, a letter, a digit or "other", so the pieces always join
# back to the exact text, which makes `decode(encode(s)) == s`.
#
# Training therefore works on **distinct words with their frequencies**,
# `{(32, 116, 104, 101): 1042, ...}` (" the" as bytes, seen 1,042 times): a pair inside a
# word counts as often as the word occurs.
#
# ### Exercise: `count_pairs(words)` and `merge_pair(word, pair, new_id)`
#
# `count_pairs` returns `{pair: count}` over all adjacent pairs, each weighted by its
# word's frequency. `merge_pair` replaces each occurrence of `pair` in `word`, scanning
# left to right without overlap (`(a, a, a)` → `(new, a)`), and returns a tuple.
#
# - Hint 1: a word of `n` tokens has `n - 1` adjacent pairs; merging is a scan with an
#   index that sometimes jumps by two.
# - Hint 2: `count(a, b) = sum over words of freq(word) * (occurrences of (a, b) in it)`;
#   at position `i`, if `word[i], word[i+1]` is the pair, emit `new_id` and skip to
#   `i + 2`, else emit `word[i]` and go to `i + 1`.
# - Hint 3: `zip(word, word[1:])` lists the pairs; a `defaultdict(int)`; a `while i < n`
#   loop appending to a list, converted with `tuple(...)` at the end.

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
    assert isinstance(counts, dict), f"count_pairs returns a dict, got {type(counts).__name__}"
    assert counts.get((97, 97)) == 4, f"'aa' occurs 4 times in aaabdaaabac, got {counts.get((97, 97))}"
    assert counts.get((97, 98)) == 2 and counts.get((100, 97)) == 1, f"'ab' twice, 'da' once; got {counts}"
    assert sum(counts.values()) == len(word) - 1, "a word of n tokens has n - 1 adjacent pairs"
    weighted = count_pairs({(1, 2): 5, (1, 2, 1, 2): 2})
    assert weighted == {(1, 2): 9, (2, 1): 2}, f"counts are weighted by word frequency: (1,2) 5 + 2*2 = 9; got {weighted}"
    merged = merge_pair(word, (97, 97), 256)
    assert isinstance(merged, tuple), f"merge_pair returns a tuple, got {type(merged).__name__}"
    assert merged == (256, 97, 98, 100, 256, 97, 98, 97, 99), f"aaa -> (256, a): left to right, no overlap; got {merged}"
    assert merge_pair(merged, (97, 98), 257) == (256, 257, 100, 256, 257, 97, 99), "second merge of the worked example"
    assert merge_pair((1, 1, 1, 1), (1, 1), 9) == (9, 9), "(1,1,1,1) -> (9, 9)"
    assert merge_pair((5,), (5, 5), 9) == (5,) and merge_pair((), (1, 2), 9) == (), "short words are left alone"
    ### BEGIN HIDDEN TESTS
    assert merge_pair((1, 2, 3), (2, 3), 7) == (1, 7), "a pair at the end merges"
    ### END HIDDEN TESTS


test_bpe_merge()
print("count_pairs, merge_pair: ok")

# %% [markdown]
# ### The merge loop, fast
#
# The plain loop recounts every pair after every merge: `M` merges over `W` distinct
# words cost `O(M · W · L)` (words of length `L`), minutes for a 1 MB text and 1,000
# merges. But a merge of `(a, b)` changes only the words that contain `(a, b)`, and in
# those words only the pairs around each occurrence. So keep, across merges:
#
# - `symbols[w]`: the current tokens of word `w`, and `freqs[w]` its frequency;
# - `counts`: the pair counts (`count_pairs` once, at the start);
# - `where[pair]`: the set of words that may contain `pair` (it may hold words that no
#   longer do: a merge leaves the word unchanged then, and that is harmless);
# - a **heap** of `(-count, pair)`: its top is the most frequent pair, smallest first on
#   ties, because tuples compare element by element.
#
# Then each merge is: pop the heap until its top entry is **current**
# (`counts[pair] == -neg_count`; an entry pushed before a count changed is stale);
# record the merge with id `256 + len(merges)`; for each word in `where.pop(pair)`,
# merge it, and add `-freq` for each of its old pairs and `+freq` for each of its new
# pairs to a `changed` dict (also adding the word to `where` of each new pair); finally
# apply `changed` to `counts`, deleting pairs that drop to 0 and pushing the new count of
# every pair that changed. Stop after `num_merges`, or earlier when the heap runs empty.
#
# *Worked example, second merge above.* Merging `(97, 97)` in `a a a b d a a a b a c`
# removes `aa:4, ab:2, bd:1, da:1, ba:1, ac:1` and adds the new word's pairs
# `(256,a):2, ab:2, bd:1, (d,256):1, ba:1, ac:1`: net, `aa` drops to 0 and
# `(256, a)`, `(d, 256)` appear, `da` disappears, and nothing else changes.
#
# Each merge now costs time proportional to the words it touches, not to all words.
#
# ### Exercise: `train_merges(words, num_merges)`
#
# - Hint 1: build the four structures once, then loop: find the best current pair, merge
#   it in the words that have it, update the counts by difference.
# - Hint 2: the update for one word of frequency `f`: for every pair `p` of the old word,
#   `changed[p] -= f`; for every pair of the new word, `changed[p] += f`. A pair whose
#   total change is 0 needs no new heap entry.
# - Hint 3: `symbols = list(words)`, `freqs`, `counts = count_pairs(words)`,
#   `where = defaultdict(set)`, `heap` + `heapq.heapify`; loop until `num_merges` pairs are
#   recorded: skip stale entries with `heapq.heappop`, `break` when the heap is empty, pop the pair,
#   `merge_pair` each word, `heapq.heappush((-counts[p], p))` after each update.

# %% nbgrader={"grade": false, "grade_id": "train-merges", "locked": false, "schema_version": 3, "solution": true}
#| export data.tokenizers
def train_merges(words, num_merges):
    """Learn up to `num_merges` merges from {word (tuple of byte ids): frequency}.

    Incremental: pair counts are kept, and each merge touches only the words containing the
    merged pair. Ties go to the smallest pair. Stops early when no pair is left.
    """
    ### BEGIN SOLUTION
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
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-train-merges", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_train_merges():
    example = {tuple(b"aaabdaaabac"): 1}
    merges = train_merges(example, 2)
    assert isinstance(merges, list), f"train_merges returns a list of pairs, got {type(merges).__name__}"
    assert merges == [(97, 97), (97, 98)], f"the worked example learns (a, a) then (a, b), got {merges}"
    assert train_merges(example, 0) == [], "num_merges=0: no merges"
    everything = train_merges(example, 100)
    assert len(everything) == 7, f"7 merges turn aaabdaaabac into one token, then no pair is left; got {everything}"
    assert everything[2:] == [(256, 257), (97, 99), (100, 258), (258, 260), (261, 259)], \
        f"later merges join merged tokens (ids 256 + k); got {everything}"
    try:
        weighted = train_merges({(1, 2): 3, (2, 3): 5}, 2)
    except KeyError as err:
        raise AssertionError(f"train_merges({{(1, 2): 3, (2, 3): 5}}, 2) raised KeyError {err}: a pair was picked "
                             "again after its merge, as its count did not drop to 0; when a word changes, its pairs' "
                             "counts change by the word's frequency (5 for (2, 3)), not by 1") from None
    assert weighted == [(2, 3), (1, 2)], f"(2, 3) occurs 5 times, (1, 2) 3: most frequent first; got {weighted}"
    ties = train_merges({(5, 6): 1, (1, 2): 1, (3, 4): 1}, 3)
    assert ties == [(1, 2), (3, 4), (5, 6)], f"ties go to the smallest pair, got {ties}"
    updated = train_merges({(1, 2, 1, 2): 2, (2, 1): 3}, 2)
    assert updated == [(2, 1), (1, 256)], ("(2, 1): 2 + 3 = 5 beats (1, 2): 4; then the words are (1, 256, 2) x2 and "
                                           f"(256,) x3, and (1, 256) ties (256, 2) at 2 and is smaller; got {updated}")
    ### BEGIN HIDDEN TESTS
    text = kjv_text()[:5000]
    counted = Counter(tuple(w.encode()) for w in _compile_pattern(SPLIT_PATTERN).findall(text))
    reference, current = [], dict(counted)
    for k in range(40):  # recount everything after each merge: slow, obviously right
        pair_counts = count_pairs(current)
        best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
        reference.append(best)
        merged = Counter()
        for word, freq in current.items():
            merged[merge_pair(word, best, 256 + k)] += freq
        current = dict(merged)
    assert train_merges(counted, 40) == reference, "the incremental loop must match recounting after every merge"
    ### END HIDDEN TESTS


test_train_merges()
print("train_merges: ok")

# %% [markdown]
# ## 8. The BPE tokenizer: vocabulary, training, encoding by rank
#
# The merges are the whole model. From them:
#
# - the **vocabulary**: token `256 + k` is the bytes of merge `k`'s first token followed
#   by its second's, so `vocab[id]` is built in one pass in merge order (a merge only
#   joins tokens defined before it, which the provided `_check_merges` enforces);
# - the **ranks**: `ranks[pair] = k`, the order in which pair `k` was learned.
#
# *Training* splits the text with the pattern (`self._split`), counts each distinct word,
# re-keys the counts by the word's UTF-8 bytes as a tuple of ints, and runs
# `train_merges` for `vocab_size - 256` merges.
#
# *Encoding a word* must reproduce what training did to it. Training merged pairs in rank
# order, so encoding repeats: among the adjacent pairs of the word, take the one of
# **lowest rank**; if no pair has a rank, stop; else merge it (id `256 + rank`) and look
# again. Taking the most frequent pair *in this word* instead would give different tokens
# for the same word than training saw.
#
# *Worked example.* Merges `[(98, 99), (97, 98)]` (rank 0: `bc`, rank 1: `ab`) and the word
# `abc`: pairs `ab` (rank 1) and `bc` (rank 0): merge `bc` into 256 → `a 256`; the pair
# `(97, 256)` has no rank: stop. `ab` never merges here, because in training `bc` went
# first.
#
# `encode_ordinary` splits the text with `self._split` and keeps each word's ids in
# `self._cache`, so a word is encoded once however often it occurs: the ids of the text are
# the concatenation of its words' ids. A word's ids come from the provided
# `self._word_ids(word)`: your `_encode_word`, renumbered when the vocabulary came from
# files with ids of their own (GPT-2's `vocab.json`). The provided `encode` cuts the
# text at special tokens such as `<|endoftext|>` first (they get ids of their own after
# the merges, and are never split or merged) and calls yours on the pieces between them;
# `encode_iterable(lines)` streams a file through it with bounded memory, and
# `BPETokenizer.from_gpt2_files("vocab.json", "merges.txt")` loads GPT-2's own vocabulary
# (its merges written as bytes, its own ids) and encodes exactly as GPT-2 does. `decode` joins the tokens' bytes and decodes UTF-8 with
# `errors="replace"`: an id sequence that splits a character (possible with arbitrary
# ids, never with ids from `encode`) shows `U+FFFD` instead of raising.
#
# ### Exercise: `_set_merges`, `train`, `_encode_word`, `encode_ordinary`, `decode`
#
# - Hint 1: the vocabulary grows by concatenation; training prepares `{byte word: freq}`;
#   encoding is a loop that merges the best-ranked pair until none is left.
# - Hint 2: `vocab[256 + k] = vocab[first] + vocab[second]`; the best pair minimises
#   `ranks.get(pair, infinity)`; a word of one token has nothing to merge.
# - Hint 3: `vocab` starts as the 256 one-byte `bytes` objects (`bytes([b])`); set
#   `self.vocab`, `self.merges` (a list) and `self.ranks` (a dict from `enumerate`). `train`: a
#   `Counter` over `self._split(text)`, re-keyed by `tuple(word.encode("utf-8"))`, then
#   `self._set_merges(train_merges(...))`. `_encode_word`: `min` over
#   `zip(ids, ids[1:])` with a `key`, then `merge_pair`. `encode_ordinary`: look each word up
#   in the cache, fill it on a miss with `self._word_ids`, `extend` one output list. `decode`: `b"".join`, then
#   `.decode("utf-8", errors="replace")`.

# %% nbgrader={"grade": false, "grade_id": "bpe-tokenizer", "locked": false, "schema_version": 3, "solution": true}
#| export data.tokenizers
class BPETokenizer(_BPEBase):
    """Byte-level BPE: 256 byte tokens plus one token per learned merge, then the special tokens."""

    def __init__(self, merges=(), pattern=SPLIT_PATTERN, special_tokens=None):
        self.pattern = pattern
        self._split = _compile_pattern(pattern).findall
        self._set_special_tokens(special_tokens)
        self._set_merges(_check_merges(merges))

    def _set_merges(self, merges):
        """The vocabulary (id -> bytes) and ranks (pair -> merge order) of a list of merges."""
        ### BEGIN SOLUTION
        vocab = [bytes([b]) for b in range(256)]
        for first, second in merges:
            vocab.append(vocab[first] + vocab[second])
        self.vocab = vocab  # id -> bytes
        self.merges = list(merges)
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}  # pair -> merge order
        ### END SOLUTION
        self._vocab_ready()  # provided: a fresh word cache, then the special tokens' ids

    @property
    def vocab_size(self):
        return len(self.vocab)

    def train(self, text, vocab_size):
        """Learn `vocab_size - 256` merges from `text` (fewer if the text runs out of pairs)."""
        _check_vocab_size(vocab_size)
        self._file_ids = None  # a vocabulary read from files loses its own numbering
        ### BEGIN SOLUTION
        byte_words = Counter()
        for word, freq in Counter(self._split(text)).items():
            byte_words[tuple(word.encode("utf-8"))] += freq
        self._set_merges(train_merges(byte_words, vocab_size - 256))
        ### END SOLUTION
        return self

    def _encode_word(self, word):
        """One pre-tokenized word -> tuple of ids, applying merges lowest rank first."""
        ### BEGIN SOLUTION
        ids = tuple(word.encode("utf-8"))
        ranks = self.ranks
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, len(ranks)))
            if pair not in ranks:
                break
            ids = merge_pair(ids, pair, 256 + ranks[pair])
        return ids
        ### END SOLUTION

    def encode_ordinary(self, text):
        """Text -> list of ids, special tokens read as ordinary text (`encode` handles them)."""
        _check_text(text, "BPETokenizer")
        if len(self._cache) > 100_000:  # bound the memory of long runs over varied text
            self._cache.clear()
        ### BEGIN SOLUTION
        cache, out = self._cache, []
        for word in self._split(text):
            ids = cache.get(word)
            if ids is None:
                ids = cache[word] = self._word_ids(word)
            out.extend(ids)
        return out
        ### END SOLUTION

    def decode(self, ids):
        """Ids -> text (invalid UTF-8 from arbitrary ids shows as U+FFFD)."""
        ids = _id_list(ids, self.vocab_size, "BPETokenizer")
        ### BEGIN SOLUTION
        return b"".join([self.vocab[i] for i in ids]).decode("utf-8", errors="replace")
        ### END SOLUTION

    def token_bytes(self, token_id):
        """The bytes a token stands for (handy to inspect merges)."""
        return self.vocab[token_id]

    def save(self, path):
        """Save merges and split pattern as JSON (atomically)."""
        _save_json(path, {"type": "byte-bpe", "version": 1, "pattern": self.pattern,
                          "merges": [list(m) for m in self.merges], **self._extra_state()})

    @classmethod
    def load(cls, path):
        return cls._from_state(_read_json(path, "byte-bpe"))


# %% nbgrader={"grade": true, "grade_id": "test-bpe-tokenizer", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_bpe_tokenizer():
    tok = BPETokenizer([(97, 97), (97, 98)])
    assert len(tok.vocab) == 258 and tok.vocab[97] == b"a", f"256 bytes + 2 merges = 258 tokens, got {len(tok.vocab)}"
    assert tok.vocab[256] == b"aa" and tok.vocab[257] == b"ab", f"merged tokens are concatenations: {tok.vocab[256:]}"
    assert tok.ranks == {(97, 97): 0, (97, 98): 1}, f"ranks map each pair to its merge order, got {tok.ranks}"
    ids = tok.encode("aaabdaaabac")
    assert ids == [256, 257, 100, 256, 257, 97, 99], f"the worked example encodes to 7 tokens, got {ids}"
    by_rank = BPETokenizer([(98, 99), (97, 98)]).encode("abc")
    assert by_rank == [97, 256], f"'abc' with bc at rank 0: merge bc first, then ab cannot apply; got {by_rank}"
    assert BPETokenizer([(97, 98), (256, 99)]).encode("abc") == [257], "merges chain: ab, then (ab, c)"
    assert tok.decode(ids) == "aaabdaaabac", "decode joins the tokens' bytes"
    assert tok.decode([0xE6]) == "\ufffd", "half a UTF-8 character decodes as U+FFFD (errors='replace')"
    e_acute = tok.decode([0xC3, 0xA9])
    assert e_acute == "é", f"é is the two bytes C3 A9: join all the bytes, then decode once; got {e_acute!r}"
    words = BPETokenizer([(32, 32)]).encode_ordinary("a    b")
    assert words == [97, 256, 32, 32, 98], \
        f"encode_ordinary splits the text into words ('a', '   ', ' b') and merges inside each; got {words}"
    files = BPETokenizer.from_vocab_and_merges({0: b"ab", **{b + 1: bytes([b]) for b in range(256)}}, [(b"a", b"b")])
    assert files.encode_ordinary("abc") == [0, 100], "a vocabulary with ids of its own (ab = 0, byte b = b + 1): " \
        f"take each word's ids from self._word_ids; got {files.encode_ordinary('abc')}"
    trained = BPETokenizer().train("aaabdaaabac", vocab_size=258)
    assert trained.merges == [(97, 97), (97, 98)], f"train on the worked example, got {trained.merges}"
    freq = BPETokenizer().train("xyxyxy ab ab ab ab", vocab_size=257).merges
    assert freq == [(32, 97)], "' ab' occurs 4 times: its pairs count 4 and beat xy (3, all in one word); " \
        f"count each word times its frequency; got {freq}"
    text = "low lower lowest, low low!"
    trained = BPETokenizer().train(text, vocab_size=262)
    assert trained.vocab_size == 262, f"vocab_size 262 = 256 bytes + 6 merges, got {trained.vocab_size}"
    assert trained.vocab[256:] == [b"lo", b"low", b" low", b" lowe", b"st", b" lower"], \
        f"split into words, count, train_merges: expected lo, low, ' low', ... got {trained.vocab[256:]}"
    assert trained.decode(trained.encode(text)) == text, "decode(encode(text)) == text"
    utf8 = BPETokenizer().train("ééé", vocab_size=257).merges
    assert utf8 == [(0xC3, 0xA9)], f"train on UTF-8 bytes: 'é' is the bytes C3 A9, so the first merge is (195, 169); " \
        f"got {utf8}"
    assert len(trained.encode(text)) < len(text.encode()), "trained BPE encodes its text in fewer tokens than bytes"
    ### BEGIN HIDDEN TESTS
    assert trained.encode("日本") == list("日本".encode()), "unseen text falls back to bytes"
    ### END HIDDEN TESTS


test_bpe_tokenizer()
print("BPETokenizer: ok")

# %%
sample = corpus[:200_000]
bpe = BPETokenizer().train(sample, vocab_size=512)
print("first merges:", [bpe.token_bytes(256 + k) for k in range(12)])
line = "And God said, Let there be light: and there was light."
ids = bpe.encode(line)
print(f"{len(line)} characters -> {len(ids)} tokens:", [bpe.token_bytes(i).decode(errors='replace') for i in ids])

# %% [markdown]
# ## 9. `TextDataset`: next-token windows
#
# A language model is trained to predict token `t+1` from tokens `..t`. From one long
# array of ids we cut windows of `block_size` `T`: input `x = ids[i : i+T]`, target
# `y = ids[i+1 : i+T+1]`. `y` is `x` shifted by one, so one window holds `T` predictions.
# Every start `i` is a sample, so there are `n_tokens - T` of them.
#
# The text is encoded **once** into an int64 array (re-encoding per sample would cost
# more than the model). The validation split is the **last** `val_fraction` of the
# tokens, not a random subset: windows from one text overlap their neighbours, so a
# random split would test on text the model trained on. With `n` tokens, the train
# split keeps the first `n - floor(n · val_fraction)`.
#
# *Bigger than RAM.* An int64 array costs 8 bytes a token: 8 GB for a billion tokens. nanoGPT
# stores ids once as uint16 on disk (2 bytes; enough for GPT-2's 50,257 ids) and maps the file
# into memory. The provided `TokenDataset(path_or_array, block_size)` runs your `__len__`,
# `__getitem__` and `gather` on such a `np.memmap` (or `np.load(..., mmap_mode="r")`), through an
# `ids` that reads and widens to int64 only the ids they index: the operating system reads just
# the pages a batch touches.
#
# *Worked example.* Ids `[0..9]` (10 tokens), `T = 3`: 7 windows; window 2 is
# `x = [2, 3, 4]`, `y = [3, 4, 5]`. `gather([0, 6])` returns `x` of shape `(2, 3)`:
# `[[0, 1, 2], [6, 7, 8]]`, and `y` = `[[1, 2, 3], [7, 8, 9]]`.
#
# ### Exercise: the split in `__init__`, `__len__`, `__getitem__`, `gather`
#
# - Hint 1: one window of `T + 1` ids holds both `x` (all but the last) and `y` (all but
#   the first).
# - Hint 2: a batch of windows is a 2-D fancy index: row `b` reads positions
#   `start_b + 0, ..., start_b + T`, which broadcasting builds from a column of starts plus
#   a row `0..T`.
# - Hint 3: `n_train` from `int(len(ids) * val_fraction)`; slice `ids` for the split;
#   `__getitem__` returns `from_numpy` of the two slices of one window; `gather`: `starts`
#   as an int64 array of shape `(B, 1)`, `np.arange(T + 1)`, windows `(B, T + 1)`, then
#   two `from_numpy(np.ascontiguousarray(...))`, returned as a list `[x, y]`.

# %% nbgrader={"grade": false, "grade_id": "text-dataset", "locked": false, "schema_version": 3, "solution": true}
#| export data.datasets
class TextDataset(Dataset):
    """(x, y) windows of `block_size` token ids from a text, y = x shifted by one. `allowed_special` goes to
    `tokenizer.encode` as tiktoken takes it ("all" or a set of names, e.g. {"<|endoftext|>"}); None passes nothing."""

    def __init__(self, text_or_path, tokenizer, block_size, split="train", val_fraction=0.1, allowed_special=None):
        _check_text_dataset(split, val_fraction, block_size)
        special = {} if allowed_special is None else {"allowed_special": allowed_special}  # tiktoken's: "all", {names}
        ids = np.asarray(tokenizer.encode(_read_text(text_or_path), **special), dtype=np.int64)  # encoded once
        ### BEGIN SOLUTION
        n_train = len(ids) - int(len(ids) * val_fraction)
        self.ids = ids[:n_train] if split == "train" else ids[n_train:]
        ### END SOLUTION
        self.block_size = int(block_size)
        self.split = split
        if len(self.ids) < block_size + 1:
            raise ValueError(f"TextDataset: the {split} split has {len(self.ids)} tokens, fewer than block_size + 1 "
                             f"= {block_size + 1}; use a longer text or a smaller block_size/val_fraction")

    def __len__(self):
        ### BEGIN SOLUTION
        return len(self.ids) - self.block_size
        ### END SOLUTION

    def __getitem__(self, index):
        index = _normalize_index(index, len(self), "TextDataset")
        ### BEGIN SOLUTION
        window = self.ids[index:index + self.block_size + 1]
        return from_numpy(window[:-1]), from_numpy(window[1:])
        ### END SOLUTION

    def gather(self, indices):
        """A batch of windows by one fancy index: [x (B, T), y (B, T)]."""
        indices = _normalize_indices(indices, len(self), "TextDataset")  # provided: -1 is the last window, as in ds[-1]
        ### BEGIN SOLUTION
        starts = np.asarray(indices, dtype=np.int64)
        windows = self.ids[starts[:, None] + np.arange(self.block_size + 1)]  # (B, T + 1)
        return [from_numpy(np.ascontiguousarray(windows[:, :-1])), from_numpy(np.ascontiguousarray(windows[:, 1:]))]
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-text-dataset", "locked": true, "points": 2, "schema_version": 3, "solution": false}
class DigitTokenizer:
    """'0'..'9' -> 0..9, so the expected ids can be read off the text."""

    def encode(self, text):
        return [int(c) for c in text]


def test_text_dataset():
    ds = TextDataset("0123456789", DigitTokenizer(), block_size=3, val_fraction=0.0)
    assert len(ds) == 7, f"10 tokens, windows of 3: 7 samples, got {len(ds)}"
    x, y = ds[2]
    assert isinstance(x, tt.Tensor) and x.shape == (3,), f"x is a tensor of shape (3,), got {x!r}"
    assert x.data.tolist() == [2, 3, 4] and y.data.tolist() == [3, 4, 5], f"window 2: x 2,3,4 -> y 3,4,5; got {x.data}, {y.data}"
    assert x.dtype == np.int64, f"ids are int64, got {x.dtype}"
    assert ds[-1][1].data.tolist() == [7, 8, 9], "negative indices count from the end"
    batch = ds.gather([0, 6])
    assert type(batch) is list and len(batch) == 2 and batch[0].shape == (2, 3), \
        f"gather gives a list [x (B, T), y (B, T)], as default_collate does; got a {type(batch).__name__}: {batch!r}"
    assert batch[0].data.tolist() == [[0, 1, 2], [6, 7, 8]], f"x rows of windows 0 and 6, got {batch[0].data}"
    assert batch[1].data.tolist() == [[1, 2, 3], [7, 8, 9]], f"y = x shifted by one, got {batch[1].data}"
    assert batch[1].data.flags.c_contiguous and not np.shares_memory(batch[0].data, batch[1].data), \
        "gather: x and y must be separate contiguous copies, not overlapping views of one array of windows"
    text = "0123456789" * 3 + "0"  # 31 tokens
    train = TextDataset(text, DigitTokenizer(), block_size=2, val_fraction=0.1)
    val = TextDataset(text, DigitTokenizer(), block_size=2, split="val", val_fraction=0.1)
    assert train.ids.tolist() == list(range(10)) * 2 + list(range(8)), \
        f"train: the first 31 - floor(31 * 0.1) = 28 tokens (int(31 * 0.9) = 27 rounds down), got {len(train.ids)}"
    assert val.ids.tolist() == [8, 9, 0], f"val: the last floor(31 * 0.1) = 3 tokens, got {val.ids}"
    tail = TextDataset("0123456789" * 2 + "012345678", DigitTokenizer(), 1, split="val", val_fraction=0.1).ids.tolist()
    assert tail == [7, 8], f"val of 29 tokens: the last floor(29 * 0.1) = floor(2.9) = 2 tokens [7, 8] (round down), got {tail}"
    ### BEGIN HIDDEN TESTS
    xb, yb = next(iter(DataLoader(ds, batch_size=7)))
    assert xb.shape == (7, 3) and yb.data[:, -1].tolist() == [3, 4, 5, 6, 7, 8, 9], "the loader's fast path"
    ### END HIDDEN TESTS


test_text_dataset()
print("TextDataset: ok")

# %%
chars = CharTokenizer(corpus)
text_train = TextDataset(corpus, chars, block_size=8)
x0, y0 = text_train[0]
print(f"{len(text_train):,} train windows | x: {chars.decode(x0)!r} -> y: {chars.decode(y0)!r}")

# %% [markdown]
# ## 10. What it costs
#
# **Batching.** An epoch over the digits (1,797 samples, batches of 64) two ways: the fast
# path (one fancy index per tensor per batch) and the general path
# (`collate_fn=default_collate` turns the fast path off: 64 lookups and a stack per batch).

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
# **Tokenizers.** Speed (tokens per second), sequence length (characters per token), and
# the memory of the encoded corpus. Ids stored as int64 take 8 bytes each; any vocabulary
# under 65,536 fits in `uint16` (2 bytes), which is how large corpora are kept on disk;
# convert to int64 only per batch.

# %%
text = corpus[:200_000]
for name, tok in (("char", chars), ("bpe-512", bpe)):
    start = time.perf_counter()
    encoded = tok.encode(text)
    seconds = time.perf_counter() - start
    print(f"{name:8s}: vocab {tok.vocab_size:4d}, {len(encoded):7,} tokens ({len(text) / len(encoded):.2f} chars/token), "
          f"{len(encoded) / seconds / 1e6:.2f} M tokens/s")
whole = np.asarray(chars.encode(corpus), dtype=np.int64)
print(f"whole corpus, char ids: int64 {whole.nbytes / 2**20:.1f} MiB, uint16 {whole.astype(np.uint16).nbytes / 2**20:.1f} MiB")
start = time.perf_counter()
BPETokenizer().train(text, vocab_size=512)
print(f"BPE training on {len(text) // 1000} KB to 512 tokens: {time.perf_counter() - start:.2f} s")

# %% [markdown]
# Expect the fast path to be an order of magnitude faster than stacking: the work is the
# same copy of bytes, but done by one NumPy call instead of a Python loop. BPE makes the
# sequence several times shorter than characters, at a vocabulary 512/~60 times larger:
# the model's context covers more text, and its embedding and output layers grow. BPE
# training costs `O(total word length)` to count, then per merge only the words it
# touches; `bench/bpe.py` measures training on 1 MB and encoding throughput.
#
# **Next:** module 07 puts a model, a loss, an optimizer and these loaders into a
# training loop.
