"""TokenDataset over a memory-mapped token array: no copy into RAM, int64 batches."""

import tracemalloc

import numpy as np
import pytest

from tinytorch.data import DataLoader, TokenDataset

N = 2_000_000  # 4 MB of uint16 ids on disk


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "train.bin"
    np.arange(N, dtype=np.int64).astype(np.uint16).tofile(path)  # ids wrap at 65536
    return path


def test_construction_does_not_read_the_array_into_ram(token_file):
    tracemalloc.start()  # NumPy reports its allocations to tracemalloc
    try:
        ds = TokenDataset(token_file, block_size=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000, f"building the dataset allocated {peak:,} bytes; the array is {2 * N:,}"
    assert isinstance(ds.tokens, np.memmap) and ds.tokens.dtype == np.uint16


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_npy_opened_memory_mapped_is_used_in_place(tmp_path, dtype):
    np.save(tmp_path / "ids.npy", np.arange(1000, dtype=dtype))
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    ds = TokenDataset(mapped, block_size=4)
    assert ds.tokens is mapped, "the array is used as it is, not converted"
    assert TokenDataset(tmp_path / "ids.npy", block_size=4).tokens.dtype == dtype


def test_batches_are_int64_windows(token_file):
    ds = TokenDataset(token_file, block_size=8)
    assert len(ds) == N - 8
    x, y = ds[70_000]
    assert x.dtype == np.int64 and x.data.tolist() == [(70_000 + i) % 65536 for i in range(8)]
    assert y.data.tolist() == [(70_001 + i) % 65536 for i in range(8)], "y is x shifted by one"
    xb, yb = next(iter(DataLoader(ds, batch_size=4, shuffle=True)))
    assert xb.shape == (4, 8) and xb.dtype == np.int64 and yb.dtype == np.int64
    assert np.array_equal((xb.data[:, 1:]), yb.data[:, :-1])


def test_windows_are_cut_by_the_lessons_text_dataset(monkeypatch):
    """One implementation: TokenDataset runs the lesson's TextDataset methods, so a stripped TextDataset
    stops it too."""
    from tinytorch.data import datasets

    def stub(name):
        def not_written(*args):
            raise NotImplementedError(f"TextDataset.{name}: not written yet")
        return not_written

    ds = TokenDataset(np.arange(20, dtype=np.uint16), block_size=4)
    for name, use in (("__len__", len), ("__getitem__", lambda d: d[3]), ("gather", lambda d: d.gather([0, 2]))):
        with monkeypatch.context() as patch:
            patch.setattr(datasets.TextDataset, name, stub(name))
            with pytest.raises(NotImplementedError, match=name):
                use(ds)


def test_windows_are_copies_and_indices_are_checked(tmp_path):
    np.save(tmp_path / "ids.npy", np.arange(100, dtype=np.int64))
    ds = TokenDataset(tmp_path / "ids.npy", block_size=4)
    x, _ = ds[-1]
    xb, _ = ds.gather([0, 95])
    assert x.data.tolist() == [95, 96, 97, 98] and xb.data[1].tolist() == [95, 96, 97, 98]
    assert not np.shares_memory(x.data, ds.tokens) and not np.shares_memory(xb.data, ds.tokens), \
        "batches are copies, never views of the mapped file"
    with pytest.raises(IndexError, match="TokenDataset"):
        ds[len(ds)]


def test_bad_inputs_say_what_is_expected():
    with pytest.raises(TypeError, match="1-D integer array"):
        TokenDataset(np.zeros((2, 5), dtype=np.int32), block_size=2)
    with pytest.raises(ValueError, match="fewer than block_size"):
        TokenDataset(np.arange(4), block_size=8)


def test_a_text_dataset_that_reads_ids_whole_gets_a_clear_error(monkeypatch):
    """A student's TextDataset may use np.take or other whole-array functions on self.ids: on a file of
    tokens that would read it all, element by element; TokenDataset says what to do instead."""
    from tinytorch.data import TextDataset

    def gather_with_take(self, indices):
        rows = np.asarray(indices)[:, None] + np.arange(self.block_size + 1)
        return np.take(self.ids, rows)
    monkeypatch.setattr(TextDataset, "gather", gather_with_take)
    data = TokenDataset(np.arange(100, dtype=np.uint16), block_size=4)
    assert data.ids.size == 100 and data.ids.dtype == np.int64 and data.ids.ndim == 1
    with pytest.raises(TypeError, match="index self.ids with a slice or an index array"):
        data.gather([0, 5])
