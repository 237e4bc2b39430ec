"""digits(), train_test_split, kjv_text() and the assets they read."""

import gzip
import importlib.resources
from pathlib import Path

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.data import DataLoader, asset_path, digits, kjv_text, train_test_split
from tinytorch.data import datasets as datasets_module

REPO = Path(__file__).resolve().parents[2]


def test_digits_shape_dtype_classes_and_range():
    images, labels = digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert labels.shape == (1797,) and labels.dtype == np.int64
    assert np.bincount(labels.data).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert images.data.min() == 0 and images.data.max() == 16
    assert np.array_equal(images.data == np.round(images.data), np.ones_like(images.data, dtype=bool)), "counts 0..16"


def test_digits_first_image_is_a_zero():
    images, labels = digits()
    assert labels.data[0] == 0
    assert images.data[0, 0].tolist() == [0, 0, 5, 13, 9, 1, 0, 0]


def test_digits_without_sklearn_reads_the_shipped_copy(monkeypatch):
    monkeypatch.setattr(datasets_module, "_sklearn_digits", lambda: None)
    datasets_module._digits_table.cache_clear()
    try:
        images, labels = digits()
    finally:
        datasets_module._digits_table.cache_clear()
    assert images.shape == (1797, 8, 8) and set(np.unique(labels.data)) == set(range(10))


def test_shipped_digits_asset_is_the_sklearn_file_format():
    rows = gzip.decompress(asset_path("digits.csv.gz").read_bytes()).decode().splitlines()
    assert len(rows) == 1797 and all(len(r.split(",")) == 65 for r in rows)


def test_train_test_split_is_reproducible_and_disjoint():
    images, labels = digits()
    train, test = train_test_split(images, labels, test_fraction=0.2, seed=0)
    assert (len(train), len(test)) == (1438, 359)
    again_train, _ = train_test_split(images, labels, test_fraction=0.2, seed=0)
    assert np.array_equal(train.tensors[1].data, again_train.tensors[1].data)
    other, _ = train_test_split(images, labels, test_fraction=0.2, seed=1)
    assert not np.array_equal(train.tensors[0].data, other.tensors[0].data)
    # disjoint and complete: every image lands in exactly one part
    keys = lambda ds: {row.tobytes() + bytes([int(y)]) for row, y in zip(ds.tensors[0].data, ds.tensors[1].data)}
    full = {row.tobytes() + bytes([int(y)]) for row, y in zip(images.data, labels.data)}
    assert keys(train) | keys(test) == full
    x, y = next(iter(DataLoader(train, batch_size=32, shuffle=True, generator=0)))
    assert x.shape == (32, 8, 8) and y.shape == (32,)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1e-9])
def test_train_test_split_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(tt.zeros(10), test_fraction=fraction)


def test_kjv_text_is_real_text_of_the_promised_size():
    text = kjv_text()
    assert len(text.encode("utf-8")) >= 1_000_000
    assert text.startswith("Genesis 1\nIn the beginning God created the heaven and the earth.\n")
    assert "1 Samuel 17" in text and "Exodus 20" in text
    assert len(set(text)) < 100


def test_assets_are_under_the_size_budget():
    folder = importlib.resources.files("tinytorch") / "assets" / "06_data"
    sizes = {p.name: len(p.read_bytes()) for p in folder.iterdir()}
    assert sizes["kjv.txt.gz"] < 1_500_000 and sizes["digits.csv.gz"] < 100_000


def test_exported_assets_equal_the_module_assets():
    for name in ("digits.csv.gz", "kjv.txt.gz"):
        source = REPO / "modules/06_data/assets" / name
        assert asset_path(name).read_bytes() == source.read_bytes(), f"run `tito export`: {name} differs"


def test_missing_asset_names_the_fix():
    with pytest.raises(FileNotFoundError, match="tito export"):
        asset_path("nope.bin")
