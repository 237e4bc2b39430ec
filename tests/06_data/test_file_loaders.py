"""MNIST/Fashion-MNIST IDX files and CIFAR-10 binary files, built small in tmp_path."""

import gzip
import struct

import numpy as np
import pytest

from tinytorch.data import load_cifar10, load_mnist, read_cifar10_batch, read_idx


def idx_bytes(array, code=0x08):
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.asarray(array).astype(dtype).tobytes()


def write_mnist(folder, n=5, prefix="train", gz=True, dotted=False, size=28):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    sep = "." if dotted else "-"
    for name, array in ((f"{prefix}-images{sep}idx3-ubyte", images), (f"{prefix}-labels{sep}idx1-ubyte", labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


@pytest.mark.parametrize("gz, dotted", [(True, False), (False, False), (False, True)])
def test_load_mnist_round_trip(tmp_path, gz, dotted):
    images, labels = write_mnist(tmp_path, gz=gz, dotted=dotted)
    got_images, got_labels = load_mnist(tmp_path)
    assert got_images.shape == (5, 28, 28) and got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    assert np.array_equal(got_images.data, images) and np.array_equal(got_labels.data, labels)


def test_load_mnist_test_split(tmp_path):
    images, _ = write_mnist(tmp_path, n=3, prefix="t10k")
    assert np.array_equal(load_mnist(tmp_path, train=False)[0].data, images)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path, train=True)


def test_read_idx_other_types(tmp_path):
    values = np.arange(6, dtype=np.float32).reshape(2, 3) / 4
    (tmp_path / "f.idx").write_bytes(idx_bytes(values, 0x0D))
    got = read_idx(tmp_path / "f.idx")
    assert got.dtype == np.float32 and got.dtype.byteorder in "=|<" and np.array_equal(got, values)
    shorts = np.array([-2, 300, 7], dtype=np.int16)
    (tmp_path / "s.idx").write_bytes(idx_bytes(shorts, 0x0B))
    assert read_idx(tmp_path / "s.idx").tolist() == [-2, 300, 7]


def test_bad_magic_names_the_file(tmp_path):
    write_mnist(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = bytearray(path.read_bytes())
    data[0] = 0x1F
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: bad magic number 0x1f000803"):
        load_mnist(tmp_path)


def test_unknown_type_code_is_bad_magic(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x42, 1, 1) + b"\x00")
    with pytest.raises(ValueError, match="x.idx: bad magic number 0x00004201"):
        read_idx(path)


def test_truncated_file_names_file_and_sizes(tmp_path):
    write_mnist(tmp_path, n=4, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated: the header says shape \(4, 28, 28\)"):
        load_mnist(tmp_path)


def test_trailing_bytes_are_an_error(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(path)


def test_header_too_short(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="too short"):
        read_idx(path)
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, 3) + b"\x00\x00\x00\x05")
    with pytest.raises(ValueError, match="3 dimensions"):
        read_idx(path)


def test_truncated_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: truncated or corrupt gzip"):
        load_mnist(tmp_path)


def test_wrong_dimension_count_names_the_file(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((5, 2), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: expected an IDX file of unsigned bytes with 1"):
        load_mnist(tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    write_mnist(tmp_path, n=5, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------- CIFAR-10

def cifar_bytes(labels, rng):
    images = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([np.asarray(labels, dtype=np.uint8)[:, None], images.reshape(len(labels), -1)], axis=1)
    return records.tobytes(), images


def write_cifar(folder, per_file=2):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    train_images = []
    for i in range(1, 6):
        data, images = cifar_bytes([i % 10] * per_file, rng)
        (folder / f"data_batch_{i}.bin").write_bytes(data)
        train_images.append(images)
    data, test_images = cifar_bytes([9, 0, 3], rng)
    (folder / "test_batch.bin").write_bytes(data)
    return np.concatenate(train_images), test_images


@pytest.mark.parametrize("nested", [False, True])
def test_load_cifar10(tmp_path, nested):
    folder = tmp_path / "cifar-10-batches-bin" if nested else tmp_path
    train_images, test_images = write_cifar(folder)
    images, labels = load_cifar10(tmp_path)
    assert images.shape == (10, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(images.data, train_images)
    assert labels.data.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    images, labels = load_cifar10(tmp_path, train=False)
    assert np.array_equal(images.data, test_images) and labels.data.tolist() == [9, 0, 3]


def test_cifar_record_layout_is_label_then_rgb_planes(tmp_path):
    record = bytes([7]) + bytes([1] * 1024) + bytes([2] * 1024) + bytes([3] * 1024)
    (tmp_path / "b.bin").write_bytes(record)
    images, labels = read_cifar10_batch(tmp_path / "b.bin")
    assert labels.tolist() == [7]
    assert [int(images[0, c].mean()) for c in range(3)] == [1, 2, 3], "channels are the red, green, blue planes"


def test_cifar_truncated_file_names_the_file(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"data_batch_3.bin: 6141 bytes is not a whole number of 3073-byte records"):
        load_cifar10(tmp_path)


def test_cifar_bad_label_and_missing_file(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "test_batch.bin"
    data = bytearray(path.read_bytes())
    data[3073] = 12
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="test_batch.bin: record 1 has label 12"):
        load_cifar10(tmp_path, train=False)
    (tmp_path / "data_batch_4.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4.bin"):
        load_cifar10(tmp_path)


def test_cifar_empty_file(tmp_path):
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="e.bin: 0 bytes"):
        read_cifar10_batch(tmp_path / "e.bin")


def test_no_pickle_in_the_data_package():
    import inspect

    import tinytorch.data as data
    for module in (data.dataset, data.dataloader, data.datasets, data.tokenizers):
        assert "pickle" not in inspect.getsource(module)
