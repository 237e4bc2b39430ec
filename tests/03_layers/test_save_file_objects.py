"""tt.save / tt.load take a path or a binary file object (io.BytesIO, an open file): still safetensors."""

import io

import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load

import tinytorch as tt
from tinytorch import nn


def test_save_and_load_through_bytesio():
    tt.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    buffer = io.BytesIO()
    tt.save(model.state_dict(), buffer)
    raw = buffer.getvalue()
    assert set(safetensors_load(raw)) == set(model.state_dict()), "the bytes are a plain safetensors file"
    assert not raw.startswith(b"\x80"), "never a pickle"
    buffer.seek(0)
    loaded = tt.load(buffer)
    assert list(loaded) == list(model.state_dict()), "the state dict's order is kept"
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded[name].numpy(), value.numpy())


def test_open_files_and_paths_give_the_same_bytes(tmp_path):
    state = {"b": tt.arange(3).float(), "a": tt.ones(2, 2)}
    tt.save(state, tmp_path / "by_path.safetensors")
    with open(tmp_path / "by_handle.safetensors", "wb") as handle:
        tt.save(state, handle)
    assert (tmp_path / "by_path.safetensors").read_bytes() == (tmp_path / "by_handle.safetensors").read_bytes()
    with open(tmp_path / "by_handle.safetensors", "rb") as handle:
        assert list(tt.load(handle)) == ["b", "a"]


def test_a_damaged_file_object_is_named():
    with pytest.raises(RuntimeError, match="truncated or corrupt"):
        tt.load(io.BytesIO(b"\x10\x00"))
