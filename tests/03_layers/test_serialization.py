"""tinytorch.save / tinytorch.load: safetensors round trip, atomic writes, clear errors."""

import os

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn


def make_model(device="cpu"):
    model = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 3))
    model.register_buffer("steps", tt.tensor([3], dtype=tt.int64))
    return model.to(device)


def test_round_trip_restores_every_tensor(tmp_path, device):
    tt.manual_seed(0)
    model = make_model(device)
    path = tmp_path / "model.safetensors"
    tt.save(model.state_dict(), path)
    loaded = tt.load(path)
    assert list(loaded) == list(model.state_dict()), "load keeps the state dict's key order"
    for name, value in model.state_dict().items():
        assert loaded[name].dtype == value.dtype and loaded[name].device == tt.device("cpu")
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy(), err_msg=name)
    tt.manual_seed(1)
    fresh = make_model(device)
    fresh.load_state_dict(tt.load(str(path), device=device))
    idx = tt.tensor([[1, 2, 9]], device=device)
    np.testing.assert_array_equal(fresh(idx).numpy(), model(idx).numpy())
    assert fresh.steps.item() == 3


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    tt.save({"a": tt.ones(2)}, path)
    tt.save({"a": tt.zeros(3)}, path)  # overwrite
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]
    assert tt.load(path)["a"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(TypeError, match="'bad'"):
        tt.save({"a": tt.ones(2), "bad": [1.0, 2.0]}, path)
    assert os.listdir(tmp_path) == ["ckpt.safetensors"] and tt.load(path)["a"].shape == (3,), \
        "a failed save must leave the previous checkpoint untouched"


def test_saved_files_get_the_mode_open_would_give_and_keep_their_own(tmp_path):
    """mkstemp makes its file private (0600): a checkpoint in a shared run folder must not be."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "model.safetensors"
        tt.save({"a": tt.ones(2)}, path)
        assert os.stat(path).st_mode & 0o777 == 0o644, oct(os.stat(path).st_mode)
        os.chmod(path, 0o640)
        tt.save({"a": tt.zeros(2)}, path)  # a rewrite keeps the mode the owner chose
        assert os.stat(path).st_mode & 0o777 == 0o640, oct(os.stat(path).st_mode)
    finally:
        os.umask(old)


def test_non_tensor_values_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"'step'.*int.*not a Tensor"):
        tt.save({"w": tt.ones(1), "step": 5}, tmp_path / "x.safetensors")


def test_truncated_file_is_reported_with_its_path(tmp_path):
    path = tmp_path / "model.safetensors"
    tt.save(make_model().state_dict(), path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 16)
    with pytest.raises(RuntimeError, match=r"model\.safetensors.*truncated or corrupt"):
        tt.load(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RuntimeError, match=r"model\.safetensors.*truncated or corrupt"):
        tt.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        tt.load(tmp_path / "nowhere.safetensors")


def test_files_are_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file
    path = tmp_path / "w.safetensors"
    tt.save({"w": tt.tensor([[1.0, 2.0]]), "n": tt.tensor([1, 2], dtype=tt.int32)}, path)
    arrays = load_file(str(path))
    assert arrays["w"].dtype == np.float32 and arrays["n"].dtype == np.int32
    np.testing.assert_array_equal(arrays["w"], [[1.0, 2.0]])
