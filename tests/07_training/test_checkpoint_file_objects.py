"""save_checkpoint / load_checkpoint take a path or a binary file object, like tt.save / tt.load."""

import io

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_checkpoint_round_trips_through_a_bytes_buffer(tmp_path):
    state = {"model": {"weight": tt.tensor([[1.0, 2.0], [3.0, 4.0]])}, "step": 7, "loss": float("nan")}
    buffer = io.BytesIO()
    assert save_checkpoint(buffer, state) is buffer
    save_checkpoint(tmp_path / "ck.safetensors", state)
    from_file = load_checkpoint(tmp_path / "ck.safetensors")
    buffer.seek(0)
    loaded = load_checkpoint(buffer)
    np.testing.assert_array_equal(loaded["model"]["weight"].numpy(), [[1.0, 2.0], [3.0, 4.0]])
    assert loaded["step"] == 7 and np.isnan(loaded["loss"])
    np.testing.assert_array_equal(loaded["model"]["weight"].numpy(), from_file["model"]["weight"].numpy())


def test_a_damaged_buffer_is_a_checkpoint_error():
    buffer = io.BytesIO()
    save_checkpoint(buffer, {"w": tt.ones(3)})
    damaged = io.BytesIO(buffer.getvalue()[:-5])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_checkpoint(damaged)
