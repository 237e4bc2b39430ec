"""all, any, isnan, isinf, isfinite (tensor functions and methods, PyTorch's names), and x[[]]: bool results
with no gradient, on whatever device the tensor is on."""

import numpy as np
import pytest

import tinytorch as tt

VALUES = [[1.0, float("nan"), 0.0], [float("inf"), -float("inf"), 2.0]]


def _host(t):
    return tt.to_numpy(t.data)


def test_elementwise_tests(device):
    x = tt.tensor(VALUES, device=device)
    assert _host(tt.isnan(x)).tolist() == [[False, True, False], [False, False, False]]
    assert _host(x.isinf()).tolist() == [[False, False, False], [True, True, False]]
    assert _host(x.isfinite()).tolist() == [[True, False, True], [False, False, True]]
    assert tt.isnan(x).dtype == np.bool_ and str(tt.isnan(x).device) == str(tt.device(device))
    ints = tt.tensor([[1, 2]], device=device)
    assert _host(ints.isnan()).tolist() == [[False, False]] and _host(ints.isfinite()).tolist() == [[True, True]]
    assert _host(tt.tensor([True, False], device=device).isinf()).tolist() == [False, False]


def test_all_and_any(device):
    x = tt.tensor([[1.0, 0.0], [2.0, 3.0]], device=device)
    assert _host(x.all()).tolist() is False and _host(tt.any(x)).tolist() is True
    assert _host(x.all(dim=1)).tolist() == [False, True] and _host(x.any(dim=0)).tolist() == [True, True]
    assert x.all(dim=0, keepdim=True).shape == (1, 2) and x.all(dim=(0, 1)).shape == ()
    empty = tt.zeros(0, device=device)
    assert _host(empty.all()).tolist() is True and _host(empty.any()).tolist() is False, "as Python's all/any of []"
    assert bool(tt.isnan(tt.tensor(VALUES, device=device)).any())
    assert not tt.all(x).requires_grad


def test_an_empty_list_index_selects_nothing(device):
    x = tt.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)
    assert x[[]].shape == (0, 2)


@pytest.mark.parity
def test_match_torch():
    torch = pytest.importorskip("torch")
    values = np.array(VALUES, dtype=np.float32)
    x, t = tt.tensor(values), torch.tensor(values)
    for name in ("isnan", "isinf", "isfinite"):
        assert _host(getattr(x, name)()).tolist() == getattr(t, name)().tolist(), name
    for name in ("all", "any"):
        for dim in (None, 0, 1, -1):
            kwargs = {} if dim is None else {"dim": dim}
            assert _host(getattr(x, name)(**kwargs)).tolist() == getattr(t, name)(**kwargs).tolist(), (name, dim)
    assert x[[]].shape == tuple(t[[]].shape)
