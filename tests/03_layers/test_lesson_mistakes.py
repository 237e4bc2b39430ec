"""Mistakes in module 03's lesson code that the other tests let through (mutation review, round 4):
fans of a 3-D weight, Linear's bias bound, padding_idx=0, a bias-only layer_norm backward, an embedding
backward with T != D, a buffer set to None or replaced by a Parameter, and dtype= reaching every parameter."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.autograd import gradcheck
from tinytorch.nn import functional as F
from tinytorch.nn import init


@pytest.mark.parity
@pytest.mark.parametrize("shape", [(8, 4, 5), (6, 3, 2, 3, 4)])
def test_fans_of_conv_shaped_weights_match_torch(shape):
    torch = pytest.importorskip("torch")
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    assert init._calculate_fan_in_and_fan_out(nn.Parameter(tt.zeros(*shape))) == expected


@pytest.mark.parity
def test_linear_bias_bound_is_one_over_sqrt_in_as_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tt.manual_seed(0)
    want = float(torch.nn.Linear(4, 1000).bias.detach().abs().max())  # just under 1/√4 = 0.5
    got = float(np.abs(nn.Linear(4, 1000).bias.numpy()).max())
    assert 0.45 < want <= 0.5 and 0.45 < got <= 0.5, (want, got)


def test_dtype_reaches_every_parameter():
    assert nn.Embedding(3, 2, dtype=tt.float64).weight.dtype == np.float64
    ln = nn.LayerNorm(4, dtype=tt.float64)
    assert ln.weight.dtype == np.float64 and ln.bias.dtype == np.float64


@pytest.mark.parity
def test_padding_idx_zero_is_a_padding_row_as_torch(device):
    torch = pytest.importorskip("torch")
    assert (nn.Embedding(10, 4, padding_idx=0, device=device).weight.numpy()[0] == 0).all()
    assert (torch.nn.Embedding(10, 4, padding_idx=0).weight[0] == 0).all()
    idx = [[1, 1, 0], [4, 1, 2]]
    table = np.arange(15, dtype=np.float32).reshape(5, 3)
    w = tt.tensor(table, device=device, requires_grad=True)
    F.embedding(tt.tensor(idx, device=device), w, padding_idx=0).sum().backward()
    tw = torch.tensor(table, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(idx), tw, padding_idx=0).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), tw.grad.numpy())  # row 0 gets nothing


@pytest.mark.parity
def test_embedding_backward_with_more_positions_than_width_matches_torch(device):
    torch = pytest.importorskip("torch")
    idx = [[1, 2], [4, 1]]  # T = 2 positions, D = 4 wide: g must be cut into rows of width D
    table = np.arange(24, dtype=np.float32).reshape(6, 4)
    g = np.arange(16, dtype=np.float32).reshape(2, 2, 4)
    w = tt.tensor(table, device=device, requires_grad=True)
    F.embedding(tt.tensor(idx, device=device), w).backward(tt.tensor(g, device=device))
    tw = torch.tensor(table, requires_grad=True)
    torch.nn.functional.embedding(torch.tensor(idx), tw).backward(torch.tensor(g))
    np.testing.assert_array_equal(w.grad.numpy(), tw.grad.numpy())


@pytest.mark.parity
def test_layer_norm_with_bias_but_no_weight_matches_torch(device, rng):
    torch = pytest.importorskip("torch")
    x_np, b_np, g_np = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((3, 4))
    x = tt.tensor(x_np.astype(np.float32), device=device, requires_grad=True)
    b = tt.tensor(b_np.astype(np.float32), device=device, requires_grad=True)
    F.layer_norm(x, (4,), None, b).backward(tt.tensor(g_np.astype(np.float32), device=device))
    tx, tb = torch.tensor(x_np, requires_grad=True), torch.tensor(b_np, requires_grad=True)
    torch.nn.functional.layer_norm(tx, (4,), None, tb).backward(torch.tensor(g_np))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(b.grad.numpy(), tb.grad.numpy(), atol=1e-5)
    x64, b64 = tt.tensor(x_np, requires_grad=True), tt.tensor(b_np, requires_grad=True)
    assert gradcheck(lambda a, d: F.layer_norm(a, 4, None, d), (x64, b64))


def counter(lib):
    """A bare module with a weight and a buffer 'steps', in tinytorch or torch."""
    m = lib.nn.Module()
    m.weight = lib.nn.Parameter(lib.ones(2))
    m.register_buffer("steps", lib.tensor([1.0]))
    return m


@pytest.mark.parity
def test_buffer_set_to_none_stays_a_buffer_and_leaves_the_state_dict_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (tt, torch):
        m = counter(lib)
        m.steps = None
        assert "steps" in m._buffers and m._buffers["steps"] is None, lib.__name__
        assert list(m.state_dict()) == ["weight"], lib.__name__


@pytest.mark.parity
def test_parameter_replacing_a_buffer_is_what_state_dict_saves_as_torch():
    torch = pytest.importorskip("torch")
    for lib in (tt, torch):
        m = counter(lib)
        m.steps = lib.nn.Parameter(lib.tensor([5.0]))
        assert "steps" not in m._buffers, lib.__name__
        assert [n for n, _ in m.named_parameters()] == ["weight", "steps"], lib.__name__
        assert m.state_dict()["steps"].tolist() == [5.0], lib.__name__
