"""Edge inputs where the data pipeline must agree with PyTorch's torch.utils.data."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.data import DataLoader, default_convert


def test_default_convert_keeps_string_arrays():
    """batch_size=None on a sample holding a string array raised TypeError; PyTorch passes the array on."""
    labels = np.array(["cat", "dog"])
    out = default_convert((np.ones(2), labels))
    assert isinstance(out[0], tt.Tensor) and out[1] is labels
    objects = np.array([{"a": 1}, None], dtype=object)
    assert default_convert(objects) is objects
    (sample,) = DataLoader([{"name": np.array(["x"]), "x": np.zeros(3)}], batch_size=None)
    assert sample["name"].tolist() == ["x"] and isinstance(sample["x"], tt.Tensor)


@pytest.mark.parametrize("scalar, dtype", [
    (np.float32(1.5), np.float32), (np.float64(1.5), np.float32), (np.int64(3), np.int64), (np.int32(3), np.int32),
    (np.bool_(True), np.bool_),
])
def test_default_convert_turns_numpy_scalars_into_0d_tensors(scalar, dtype):
    """A NumPy scalar was passed on as it is; PyTorch makes it a 0-d tensor (float64 -> float32 here, as arrays)."""
    out = default_convert([scalar])[0]
    assert isinstance(out, tt.Tensor) and out.shape == () and out.dtype == dtype and out.item() == scalar.item()
    assert default_convert(np.array(2.0)).shape == (), "a 0-d array stays 0-d (it became shape (1,))"
    assert default_convert(np.str_("a")) == "a" and default_convert(3) == 3 and default_convert("s") == "s"


@pytest.mark.parity
def test_default_convert_matches_torch_on_strings_and_scalars():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader as TorchLoader

    samples = [(np.int64(4), np.array(["a"]), 2.5)]
    ours = next(iter(DataLoader(samples, batch_size=None)))
    theirs = next(iter(TorchLoader(samples, batch_size=None)))
    assert isinstance(theirs[0], torch.Tensor) and isinstance(ours[0], tt.Tensor)
    assert ours[0].item() == theirs[0].item() and ours[0].shape == tuple(theirs[0].shape)
    assert ours[1].tolist() == theirs[1].tolist() and type(ours[1]) is type(theirs[1])
    assert ours[2] == theirs[2]
