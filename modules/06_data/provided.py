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
# # Module 06 — Data: provided code
#
# The infrastructure around the lesson (`data.py`): you may read it, you never edit it.
# `tito export` writes it into `tinytorch/data/` before the lesson's own cells, so the
# lesson's code can use every name defined here.
#
# - `data.dataset`: seeding (`as_generator`), the `Dataset` protocol, `TensorDataset`,
#   `Subset`, `ConcatDataset`, and the argument parsing of `random_split`;
# - `data.dataloader`: `Sampler`, `SequentialSampler`, the helpers that stack the leaves
#   of a batch, `default_convert`, and the option checks of the loader and samplers;
# - `data.datasets`: the built-in datasets (digits, a text corpus) and the readers for
#   MNIST (IDX) and CIFAR-10 (binary) files you download;
# - `data.tokenizers`: id validation, saving and loading tokenizers as JSON (written
#   with `atomic_write`), and GPT-2's pre-tokenizer regex.

# %%
#| default_exp data.dataset

# %%
#| export
import bisect
import math
import numbers

import numpy as np

from tinytorch.core.backend import _is_whole, default_generator
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


def _batch_gather(dataset):
    """`dataset.gather` (a batch of samples in one indexing op), or None where it would not give what
    `__getitem__` gives: a subclass that changed `__getitem__` (augmentation, new labels) but kept the
    parent's `gather` must have each sample through its own `__getitem__`, as PyTorch's DataLoader does."""
    gather = getattr(dataset, "gather", None)
    if gather is None or "gather" in getattr(dataset, "__dict__", {}):  # (a Subset's: checked when it was made)
        return gather

    def owner(name):  # (None: a wrapper that hands `gather` on from another object, by __getattr__)
        return next((cls for cls in type(dataset).__mro__ if name in vars(cls)), None)
    gathers, gets = owner("gather"), owner("__getitem__")
    return gather if gathers is not None and gets is not None and issubclass(gathers, gets) else None


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
        index = _normalize_indices(indices, len(self), "TensorDataset")
        return [t[index] for t in self.tensors]


class Subset(Dataset):
    """The samples `indices` of `dataset`, renumbered 0..len(indices)-1."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = indices
        parent_gather = _batch_gather(dataset)
        if parent_gather is not None:  # keep the one-index fast path of the parent
            positions = np.asarray(indices, dtype=np.int64)

            def gather(batch_indices):
                return parent_gather(positions[_normalize_indices(batch_indices, len(positions), "Subset")])
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
        if not isinstance(index, (bool, np.bool_)):  # a bool goes on as it is, as in PyTorch (t[True] adds a dim)
            index = _normalize_index(index, len(self), "ConcatDataset")
        which = bisect.bisect_right(self.cumulative_sizes, index)
        return self.datasets[which][index - self.cumulative_sizes[which - 1] if which else index]


def _normalize_index(index, n, what):
    """`index` in -n..n-1 as 0..n-1 (negative counts from the end); IndexError names `what`. A bool is
    refused: Python counts it as an int, so ds[True] would silently read sample 1."""
    if isinstance(index, (bool, np.bool_)):
        raise TypeError(f"{what} indices must be integers, got bool {index!r}")
    if not -n <= index < n:
        raise IndexError(f"index {index} is out of range for a {what} of length {n}")
    return index + n if index < 0 else index


def _normalize_indices(indices, n, what):
    """`indices` as an int64 array, each in -n..n-1 taken as 0..n-1, as `_normalize_index` takes one.
    It runs once a batch, so it makes at most one new array: none for an int64 array already in 0..n-1."""
    index = np.asarray(indices)
    owned = isinstance(indices, (list, tuple, range))  # asarray made a new array, ours to change
    if index.dtype != np.int64:
        if index.size and index.dtype.kind not in "iuO":  # bools (a mask) and floats would read other samples
            raise TypeError(f"{what} indices must be integers, got an array of {index.dtype}")
        index, owned = np.asarray(index, dtype=np.int64), True
    if index.size:
        low, high = index.min(), index.max()
        if low < -n or high >= n:
            outside = (index < -n) | (index >= n)
            raise IndexError(f"index {int(index[outside][0])} is out of range for a {what} of length {n}")
        if low < 0:  # -n..-1 -> 0..n-1; 0..n-1 stay
            index = np.remainder(index, n, out=index if owned else None)
    return index


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
    if not all(_is_whole(k, 0) for k in lengths):
        raise ValueError(f"random_split: lengths must be counts (whole numbers >= 0) or fractions adding up to 1, "
                         f"got {lengths}")
    if sum(lengths) != n:
        raise ValueError(f"random_split: lengths {lengths} add up to {sum(lengths)}, but the dataset has {n} samples")
    return [int(k) for k in lengths]


# %% [markdown]
# ## Samplers, collation helpers, loader options
#
# `_stack_tensors` records the stack as an op (`from_op`), so gradients flow back to the
# samples when a batch is built from tensors that require them. The `_check_*` functions
# hold PyTorch's argument rules and error messages, so the lesson's classes show only
# what they do.

# %%
#| export data.dataloader
import math
import numbers
from collections.abc import Mapping

import numpy as np

from tinytorch.core.backend import _is_whole, get_xp, resolve_dtype
from tinytorch.core.tensor import Tensor, from_numpy, from_op
from tinytorch.data.dataset import _batch_gather, as_generator  # noqa: F401  (_batch_gather: the lesson's DataLoader)


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


def _check_random_sampler(replacement, num_samples):
    if not isinstance(replacement, bool):
        raise TypeError(f"replacement should be a boolean value, but got replacement={replacement!r}")
    if not _is_whole(num_samples):  # PyTorch's message, the backend's rule (NumPy integers are fine)
        raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples!r}")


def _check_batch_sampler(batch_size, drop_last):
    if not _is_whole(batch_size):
        raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size!r}")
    if not isinstance(drop_last, bool):
        raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last!r}")


def _check_loader_options(dataset, batch_size, shuffle, sampler, batch_sampler, drop_last):
    """PyTorch's rules for which DataLoader options exclude each other."""
    if len(dataset) == 0:
        raise ValueError(f"DataLoader got an empty dataset ({type(dataset).__name__} of length 0): "
                         f"there is nothing to load; check the path or the split")
    if sampler is not None and shuffle:
        raise ValueError("sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None:
        if batch_size != 1 or shuffle or sampler is not None or drop_last:
            raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                             "and drop_last")
    elif batch_size is None and drop_last:
        raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")


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
    return from_op(out, dev, tuple(tensors), stack_backward)


def _array_to_batch(array):
    """A stacked NumPy array as a tensor; float64 becomes float32 (TinyTorch's default)."""
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    resolve_dtype(array.dtype)  # unsupported dtypes (strings, objects, complex) fail here, by name
    return from_numpy(np.ascontiguousarray(array).reshape(array.shape))  # (ascontiguousarray makes 0-d 1-d)


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


def default_convert(data):
    """What `batch_size=None` applies to each sample, recursively, as PyTorch's: NumPy arrays and NumPy
    numbers become tensors (a number a 0-d one); arrays of strings or objects are passed on as they are."""
    if isinstance(data, np.ndarray):
        return data if data.dtype.kind in "USO" else _array_to_batch(data)
    if isinstance(data, np.generic) and data.dtype.kind in "biuf":
        return _array_to_batch(np.asarray(data))
    if isinstance(data, Mapping):
        return {key: default_convert(value) for key, value in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, (tuple, list)):
        return type(data)(default_convert(d) for d in data)
    return data


# %% [markdown]
# ## Built-in datasets and file readers
#
# Both bundled files live in `modules/06_data/assets/`; `tito export` copies them byte for
# byte to `tinytorch/assets/06_data/`, and the package reads them with
# `importlib.resources`, so they work from a fresh clone or an installed wheel.
#
# **Digits**: UCI *Optical Recognition of Handwritten Digits* (E. Alpaydin and C. Kaynak,
# 1998; its test part), CC BY 4.0: 32x32 bitmaps from 43 writers, each 4x4 block counted
# into one pixel (0..16). scikit-learn ships the same file; `digits()` reads that copy when
# scikit-learn is installed, else the identical one in the assets.
#
# **Text**: `kjv_text()` is 1.1 MB of the King James Bible (Genesis 1 to 1 Samuel 17), dumped
# from Debian's `bible-kjv-text` package, whose copyright file states the copyright has
# expired (in the United Kingdom the Crown's letters patent still restrict printing it).
#
# **MNIST's IDX format**: a 4-byte magic number (two zero bytes, a type byte, `0x08` =
# unsigned byte, and a dimension count), one big-endian 32-bit size per dimension, then the
# data; so the file size is known from the header, and anything else means a truncated
# download or another file. **CIFAR-10's binary version** has no header: records of one
# label byte and 3,072 pixel bytes (1,024 red, then green, then blue). No pickle is ever
# loaded: a pickle file can run arbitrary code.

# %%
#| export data.datasets
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

from tinytorch.core.backend import _check_whole
from tinytorch.core.tensor import from_numpy
from tinytorch.data.dataset import Dataset, TensorDataset, _normalize_index, _normalize_indices

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


_TEXT_FILE_SUFFIXES = {".txt", ".text", ".gz", ".md", ".csv", ".tsv", ".json", ".jsonl"}  # a str ending so is a path


def _read_text(text_or_path):
    """A path (Path, or a str naming an existing file; .gz is decompressed) is read; other str is the text."""
    is_path = isinstance(text_or_path, os.PathLike) or (
        isinstance(text_or_path, str) and "\n" not in text_or_path and len(text_or_path) < 4096
        and os.path.isfile(text_or_path))
    if not is_path:
        if not isinstance(text_or_path, str):
            raise TypeError(f"TextDataset takes a str or a path, got {type(text_or_path).__name__}")
        if "\n" not in text_or_path and os.path.splitext(text_or_path)[1].lower() in _TEXT_FILE_SUFFIXES:
            raise FileNotFoundError(f"TextDataset: there is no file {text_or_path!r} (a str naming a file is read, "
                                    f"other text is used as the text itself): check the path")
        return text_or_path
    return _read_maybe_gzip(text_or_path).decode("utf-8")


class _Int64Reads:
    """A 1-D array of token ids left where it is (e.g. a `np.memmap`): indexing reads just the ids asked
    for and returns them as a new int64 array. The lesson's `TextDataset` methods index `self.ids`;
    through this they read only the windows of a batch."""

    dtype, ndim = np.dtype(np.int64), 1

    def __init__(self, tokens):
        self.tokens = tokens
        self.shape, self.size = tokens.shape, tokens.size

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, key):
        return np.array(self.tokens[key], dtype=np.int64)  # a copy: never a view of the file

    def __array__(self, dtype=None, copy=None):  # np.take, np.asarray, ...: each would read the whole file
        raise TypeError(f"TokenDataset: index self.ids with a slice or an index array; it is a file of "
                        f"{self.size:,} tokens and is never read whole")


class TokenDataset(Dataset):
    """(x, y) next-token windows, y = x shifted by one, over a 1-D array of token ids that stays where it
    is: a `np.memmap`, an `.npy` opened with `mmap_mode="r"`, or a path (`.npy`, or a raw file of `dtype`
    ids such as nanoGPT's uint16 `train.bin`). Only the windows a batch asks for are read, and only they
    are widened to int64; the array itself is never copied into RAM.

    The windows are cut by the lesson's `TextDataset` (`__len__`, `__getitem__`, `gather`), run on
    `self.ids`, which reads `self.tokens` lazily. It is defined later in this file, so it is called
    rather than subclassed."""

    def __init__(self, tokens, block_size, dtype=np.uint16):
        if isinstance(tokens, (str, os.PathLike)):
            path = os.fspath(tokens)
            tokens = np.load(path, mmap_mode="r") if path.endswith(".npy") else np.memmap(path, dtype, mode="r")
        if not isinstance(tokens, np.ndarray) or tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            raise TypeError(f"TokenDataset takes a 1-D integer array of token ids (np.memmap, np.load(..., "
                            f"mmap_mode='r')) or a path, got {type(tokens).__name__} "
                            f"{getattr(tokens, 'dtype', '')} {getattr(tokens, 'shape', '')}")
        _check_text_dataset("train", 0.0, block_size)
        if len(tokens) < block_size + 1:
            raise ValueError(f"TokenDataset: {len(tokens)} tokens are fewer than block_size + 1 = {block_size + 1}")
        self.tokens, self.block_size = tokens, int(block_size)
        self.ids = _Int64Reads(tokens)

    def __len__(self):
        return TextDataset.__len__(self)  # noqa: F821  (the lesson's exercise, same file)

    def __getitem__(self, index):
        index = _normalize_index(index, len(self), "TokenDataset")
        return TextDataset.__getitem__(self, index)  # noqa: F821  (the lesson's exercise, same file)

    def gather(self, indices):
        """A batch of windows by one fancy index: [x (B, T), y (B, T)], int64."""
        return TextDataset.gather(self, indices)  # noqa: F821  (the lesson's exercise, same file)


def _check_text_dataset(split, val_fraction, block_size):
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    _check_whole(block_size, "block_size")


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


# %% [markdown]
# ## Tokenizer plumbing
#
# `_id_list` turns what `decode` receives (a list, a 1-D array, a 1-D tensor, or one id) into
# Python ints and rejects ids outside the vocabulary by name: Python would silently wrap a
# negative index. Tokenizers are saved as JSON through `atomic_write` (module 03), the one
# durable write of the package: a crash leaves the old file or the new one, never half.
#
# GPT-2's pre-tokenizer uses `\p{L}` (letters) and `\p{N}` (numbers: digits, but also `²`,
# `½` and `Ⅻ`), which Python's `re` lacks (its `\d` is decimal digits only, and `\w` counts
# `²` as a letter); `SPLIT_PATTERN` is GPT-2's pattern verbatim, compiled with the `regex`
# package, as GPT-2 and tiktoken do. The lesson's table explains each alternative.
#
# `_BPEBase` is what `BPETokenizer` does around the lesson's encoding: special tokens such as
# `<|endoftext|>` (never split or merged, their own ids, tiktoken's `allowed_special` /
# `disallowed_special`), `encode_iterable` (streaming with bounded memory), and vocabularies
# with their own ids, such as GPT-2's `vocab.json` + `merges.txt`.

# %%
#| export data.tokenizers
import functools
import heapq  # heapq, Counter, defaultdict: used by the lesson's tokenizers below
import json
import numbers
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

try:
    import regex as _regex
except ImportError:  # the package imports without it; BPETokenizer then says what to install
    _regex = None

from tinytorch.core.backend import _check_whole, to_numpy
from tinytorch.core.serialization import atomic_write
from tinytorch.core.tensor import Tensor

# GPT-2's pre-tokenizer, verbatim: it needs the `regex` package for \p{L} (letters) and
# \p{N} (numbers, including ² and Ⅻ, which Python's `re` cannot name).
SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _compile_pattern(pattern):
    """A pre-tokenizer pattern compiled with `regex` (the package GPT-2 and tiktoken use)."""
    if _regex is None:
        raise ImportError("BPETokenizer needs the `regex` package for GPT-2's pre-tokenizer (\\p{L}, \\p{N}): "
                          "pip install regex")
    return _regex.compile(pattern)


def _id_list(ids, vocab_size, who):
    """Ids from a list, a 1-D NumPy array or a 1-D tensor (or one id, as Hugging Face's `decode` takes), as
    Python ints in 0..vocab_size-1."""
    if isinstance(ids, Tensor):
        ids = to_numpy(ids.data)
    if isinstance(ids, np.ndarray):
        if ids.ndim > 1 or (ids.dtype.kind not in "iu" and ids.size):
            raise ValueError(f"decode takes a 1-D sequence of integer ids, got {ids.dtype.name} of shape {ids.shape}")
        ids = ids.tolist()  # a 0-d array gives one int
    ids = [ids] if isinstance(ids, numbers.Integral) else list(ids)
    bad = [i for i in ids if not isinstance(i, numbers.Integral)]  # int("7") and int(7.9) would read them silently
    if bad:
        raise TypeError(f"{who}.decode takes integer ids, got {type(bad[0]).__name__} {bad[0]!r}")
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"{who}: ids {bad[:10]} are outside 0..{vocab_size - 1}")
    return ids


def _check_text(text, who):
    """`encode` takes a str: bytes or a list would otherwise be read item by item (with `unk`, silently)."""
    if not isinstance(text, str):
        raise TypeError(f"{who}.encode takes a str, got {type(text).__name__}"
                        + ("; decode bytes first: data.decode('utf-8')" if isinstance(text, (bytes, bytearray)) else ""))


def _describe_chars(chars):
    """Up to ten characters, repr'd and sorted, for an error message."""
    shown = ", ".join(repr(c) for c in sorted(chars)[:10])
    return shown + (f" and {len(chars) - 10} more" if len(chars) > 10 else "")


def _check_vocab_size(vocab_size):
    _check_whole(vocab_size, "vocab_size", 256, " (256 byte tokens come first)")


def _check_merges(merges):
    """Each merge may only join tokens defined before it (the 256 bytes, earlier merges)."""
    merges = [tuple(pair) for pair in merges]
    for k, pair in enumerate(merges):
        if len(pair) != 2 or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in pair):
            raise TypeError(f"BPETokenizer takes merges as pairs of token ids (ints: 0-255 the bytes, 256 + k "
                            f"the token of merge k), got {pair!r} at position {k}; for merges of bytes as in "
                            f"GPT-2's merges.txt use BPETokenizer.from_vocab_and_merges or from_gpt2_files")
        first, second = pair
        if not (0 <= first < 256 + k and 0 <= second < 256 + k):
            raise ValueError(f"merge {k} ({first}, {second}) refers to a token not defined before it")
    return [(int(a), int(b)) for a, b in merges]


def _gpt2_bytes_to_unicode():
    """GPT-2's printable stand-in for every byte in its files: printable bytes stand for themselves,
    the others (space, control bytes) for the characters from U+0100 on (space is 'Ġ')."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    others = [b for b in range(256) if b not in printable]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table


def _gpt2_token_bytes(token, decoder):
    try:
        return bytes(decoder[ch] for ch in token)
    except KeyError as err:
        raise ValueError(f"{token!r} is not in GPT-2's byte-to-unicode alphabet (character {err})") from None


@functools.lru_cache(maxsize=64)
def _special_regex(names):
    """One alternation of the special tokens (a frozenset), longest first: overlapping ones resolve to the
    longest. Cached: every `encode` asks for it, and building it costs more than encoding a short text."""
    return _regex.compile("|".join(_regex.escape(s) for s in sorted(names, key=len, reverse=True)))


class _BPEBase:
    """What BPETokenizer does around the lesson's byte-pair encoding: special tokens, streaming,
    and vocabularies whose ids are not the lesson's own (GPT-2's vocab.json)."""

    def _set_special_tokens(self, special_tokens):
        names = list(special_tokens or ())
        if any(not isinstance(s, str) or not s for s in names) or len(set(names)) != len(names):
            raise ValueError(f"special_tokens must be distinct non-empty strings, got {names!r}")
        self._special_names = names
        self._file_ids = None  # (internal -> external id array, {special: id}) for a vocabulary read from files

    def _vocab_ready(self):
        """After the merges change: renumber the vocabulary if it came from files, add the special tokens."""
        self._cache = {}  # word -> ids, valid for these merges only
        if self._file_ids is None:
            self._ids = None
            self.special_tokens = {s: len(self.vocab) + n for n, s in enumerate(self._special_names)}
        else:
            self._ids, self.special_tokens = self._file_ids
            by_id = {int(e): b for e, b in zip(self._ids, self.vocab)}
            by_id.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
            self.vocab = [by_id.get(i, b"") for i in range(max(by_id) + 1)]  # indexed by the files' ids
            return
        self.vocab = self.vocab + [s.encode("utf-8") for s in self._special_names]

    def _word_ids(self, word):
        """A pre-tokenized word's ids: `_encode_word`, renumbered when the vocabulary came from files."""
        ids = self._encode_word(word)
        return ids if self._ids is None else tuple(int(self._ids[i]) for i in ids)

    # --- special tokens ------------------------------------------------------------------
    def _special_sets(self, allowed_special, disallowed_special):
        known = frozenset(self.special_tokens)  # frozensets: the keys of _special_regex's cache
        allowed = known if allowed_special == "all" else frozenset(allowed_special)
        unknown = allowed - known
        if unknown:
            raise ValueError(f"allowed_special names {sorted(unknown)}, which are not special tokens of this "
                             f"tokenizer (it has {sorted(known)})")
        disallowed = known - allowed if disallowed_special == "all" else frozenset(disallowed_special)
        return allowed, disallowed

    def _encode_text(self, text, allowed, disallowed):
        """Ids of `text`: allowed special tokens get their own ids; a disallowed one is an error."""
        if disallowed:
            found = _special_regex(disallowed).search(text)
            if found:
                raise ValueError(f"the text contains the special token {found.group()!r}; pass "
                                 f"allowed_special={{{found.group()!r}}} (or 'all') to encode it as one token, "
                                 f"or disallowed_special=() to encode it as ordinary text")
        if not allowed:
            return self.encode_ordinary(text)
        out, pos = [], 0
        for match in _special_regex(allowed).finditer(text):
            out += self.encode_ordinary(text[pos:match.start()])
            out.append(self.special_tokens[match.group()])
            pos = match.end()
        return out + self.encode_ordinary(text[pos:])

    def encode(self, text, allowed_special=(), disallowed_special="all"):
        """Text -> list of ids. Special tokens in the text, as in tiktoken: those in `allowed_special`
        ("all" or a set of names) become their own id; any other raises, unless `disallowed_special`
        (default "all": every special token not allowed) leaves it out, then it is ordinary text."""
        _check_text(text, type(self).__name__)
        return self._encode_text(text, *self._special_sets(allowed_special, disallowed_special))

    def encode_iterable(self, iterable, allowed_special=(), disallowed_special="all"):
        """Ids of the concatenated strings of `iterable` (e.g. the lines of an open file), yielded as they
        come, with the same ids as `encode` of the whole text; memory stays bounded by the longest line."""
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        held = ""
        for chunk in iterable:
            held += chunk
            cut = self._safe_cut(held)
            if cut:
                yield from self._encode_text(held[:cut], allowed, disallowed)
                held = held[cut:]
        if held:
            yield from self._encode_text(held, allowed, disallowed)

    def _safe_cut(self, text):
        """Where `text` can be cut so that encoding both parts equals encoding it whole, whatever follows."""
        # Fast path: just before a newline that follows a non-space character ("...x|\n..."). No pre-token
        # holds both (only whitespace pieces hold a newline), and only whitespace pieces look ahead.
        end = len(text)
        while (cut := text.rfind("\n", 1, end)) > 0:
            if not text[cut - 1].isspace() and self._inside_special(text, cut) is None:
                return cut
            end = cut
        # In general: before the last pre-token (it may continue), the whitespace before it (the
        # pattern's `\s+(?!\S)` looks one character ahead) and any start of a special token.
        pieces = self._split(text)
        cut = len(text) - len(pieces[-1]) if pieces else 0
        longest = max(map(len, self.special_tokens), default=0)
        for start in range(max(0, len(text) - longest + 1), len(text)):
            if any(s.startswith(text[start:]) for s in self.special_tokens):
                cut = min(cut, start)
                break
        inside = self._inside_special(text, cut)
        cut = cut if inside is None else inside
        while cut and text[cut - 1].isspace():
            cut -= 1
        return cut

    def _inside_special(self, text, cut):
        """The start of a special token that occurs across position `cut` of `text`, else None."""
        longest = max(map(len, self.special_tokens), default=0)
        if longest < 2:
            return None
        first = max(0, cut - longest + 1)
        special = _special_regex(frozenset(self.special_tokens))
        for match in special.finditer(text, first, cut + longest - 1, overlapped=True):
            if match.start() < cut < match.end():
                return match.start()
        return None

    # --- vocabularies from elsewhere -------------------------------------------------------
    @classmethod
    def from_vocab_and_merges(cls, vocab, merges, special_tokens=None, pattern=SPLIT_PATTERN):
        """A tokenizer from a vocabulary {id: bytes} and merges [(bytes, bytes), ...] in rank order,
        keeping the vocabulary's ids (e.g. GPT-2's). Vocabulary entries that no merge makes and that are
        not single bytes, and any `special_tokens` (strings), are special tokens."""
        own = {bytes([b]): b for b in range(256)}  # bytes -> the lesson's id
        pairs = []
        for k, (first, second) in enumerate(merges):
            if first not in own or second not in own:
                raise ValueError(f"merge {k} ({first!r}, {second!r}) joins a token no earlier merge made")
            if first + second in own:
                raise ValueError(f"merge {k} makes {first + second!r}, which an earlier merge already made")
            pairs.append((own[first], own[second]))
            own[first + second] = 256 + k
        ids = {bytes(b): int(i) for i, b in vocab.items()}
        missing = [b for b in own if b not in ids]
        if missing:
            raise ValueError(f"the vocabulary lacks {len(missing)} token(s) the bytes and merges make, "
                             f"e.g. {missing[:3]}")
        specials = {b.decode("utf-8", errors="replace"): i for b, i in ids.items() if b not in own}
        for name in special_tokens or ():
            specials.setdefault(name, ids.get(name.encode("utf-8"), max([*ids.values(), *specials.values()]) + 1))
        tokenizer = cls(pairs, pattern=pattern)
        tokenizer._special_names = list(specials)
        tokenizer._file_ids = (np.array([ids[b] for b in sorted(own, key=own.get)]), specials)
        tokenizer._vocab_ready()
        return tokenizer

    @classmethod
    def from_gpt2_files(cls, vocab_path, merges_path, special_tokens=None):
        """A tokenizer from GPT-2's `vocab.json` (token -> id) and `merges.txt` (one "first second" per line),
        whose tokens spell bytes with GPT-2's printable stand-ins ('Ġ' for a space)."""
        decoder = {ch: b for b, ch in _gpt2_bytes_to_unicode().items()}
        with open(vocab_path, encoding="utf-8") as handle:
            vocab = {int(i): _gpt2_token_bytes(tok, decoder) for tok, i in json.load(handle).items()}
        merges = []
        with open(merges_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.startswith("#version") or not line.strip():
                    continue
                parts = line.rstrip("\n").split(" ")
                if len(parts) != 2:
                    raise ValueError(f"{merges_path}:{number}: expected two tokens separated by a space, got {line!r}")
                merges.append(tuple(_gpt2_token_bytes(p, decoder) for p in parts))
        return cls.from_vocab_and_merges(vocab, merges, special_tokens=special_tokens)

    # --- save and load ---------------------------------------------------------------------
    def _extra_state(self):
        """What `save` adds to the merges and pattern: the special tokens and the files' numbering."""
        return {"special_tokens": dict(self.special_tokens),
                "ids": None if self._ids is None else [int(i) for i in self._ids]}

    @classmethod
    def _from_state(cls, state):
        tokenizer = cls([tuple(m) for m in state["merges"]], pattern=state["pattern"],
                        special_tokens=list(state.get("special_tokens") or ()))
        if state.get("ids") is not None:
            tokenizer._file_ids = (np.array(state["ids"]), dict(state["special_tokens"]))
            tokenizer._vocab_ready()
        return tokenizer


def _save_json(path, state):
    """Save a tokenizer's state as JSON, atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle, ensure_ascii=False)
    atomic_write(path, write)


def _read_json(path, kind):
    """A saved tokenizer's state, checked to be of `kind`."""
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a saved tokenizer (invalid JSON: {err})") from None
    if not isinstance(state, dict) or state.get("type") != kind:
        raise ValueError(f"{path}: not a saved {kind} tokenizer")
    return state
