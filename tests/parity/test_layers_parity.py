"""Layers against PyTorch: same weights and inputs; outputs and input/parameter grads to 1e-5."""

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
from tinytorch import nn  # noqa: E402

pytestmark = pytest.mark.parity
RTOL = ATOL = 1e-5


def copy_weights(ours, theirs):
    """Load the torch module's parameters into ours, by name (and check the names agree)."""
    state = OrderedDict((k, tt.tensor(v.detach().numpy())) for k, v in theirs.state_dict().items())
    assert list(state) == list(ours.state_dict()), "parameter names differ from PyTorch's"
    ours.load_state_dict(state)


def compare(ours, theirs, x, device, integer_input=False):
    """Forward both on x; backward sum(out * w); compare outputs, input grads and parameter grads."""
    ours.to(device)
    tx = torch.tensor(x, requires_grad=not integer_input)
    ox = tt.tensor(x, device=device, requires_grad=not integer_input)
    ref, out = theirs(tx), ours(ox)
    assert out.shape == tuple(ref.shape) and out.dtype == np.float32
    np.testing.assert_allclose(out.cpu().numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    w = np.random.default_rng(1).standard_normal(ref.shape).astype(np.float32)
    (ref * torch.tensor(w)).sum().backward()
    (out * tt.tensor(w, device=device)).sum().backward()
    if not integer_input:
        np.testing.assert_allclose(ox.grad.cpu().numpy(), tx.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="input grad")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.cpu().numpy(), theirs_params[name].grad.numpy(),
                                   rtol=RTOL, atol=ATOL, err_msg=f"grad of {name}")


def sample(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("bias", [True, False])
def test_linear(device, bias):
    torch.manual_seed(0)
    run(lambda: nn.Linear(5, 3, bias=bias), torch.nn.Linear(5, 3, bias=bias), sample(2, 4, 5), device)


def run(ours_factory, theirs, x, device, integer_input=False):
    ours = ours_factory()
    copy_weights(ours, theirs)
    compare(ours, theirs, x, device, integer_input)


def test_linear_default_init_matches_pytorch_distribution():
    torch.manual_seed(0)
    ours, theirs = nn.Linear(256, 128), torch.nn.Linear(256, 128)
    bound = 1 / 16  # 1/sqrt(in_features)
    for a, b in ((ours.weight, theirs.weight), (ours.bias, theirs.bias)):
        a, b = a.numpy(), b.detach().numpy()
        assert np.abs(a).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(a).max() > 0.95 * bound and np.abs(b).max() > 0.95 * bound
    assert abs(ours.weight.numpy().std() / theirs.weight.detach().numpy().std() - 1) < 0.03


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding(device, padding_idx):
    torch.manual_seed(0)
    theirs = torch.nn.Embedding(7, 4, padding_idx=padding_idx)
    idx = np.array([[0, 3, 3, 6], [3, 0, 1, 1]], dtype=np.int64)  # repeated indices and the padding row
    run(lambda: nn.Embedding(7, 4, padding_idx=padding_idx), theirs, idx, device, integer_input=True)


@pytest.mark.parametrize("shape, normalized", [((4, 6), (6,)), ((2, 3, 8), (8,)), ((2, 3, 4), (3, 4))])
def test_layer_norm(device, shape, normalized):
    theirs = torch.nn.LayerNorm(normalized)
    with torch.no_grad():  # non-trivial affine parameters
        theirs.weight.copy_(torch.tensor(sample(*normalized) + 1))
        theirs.bias.copy_(torch.tensor(sample(*normalized)))
    run(lambda: nn.LayerNorm(normalized), theirs, sample(*shape) * 3 + 1, device)


def test_layer_norm_without_affine(device):
    run(lambda: nn.LayerNorm(6, elementwise_affine=False), torch.nn.LayerNorm(6, elementwise_affine=False),
        sample(3, 6), device)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(device, approximate):
    run(lambda: nn.GELU(approximate), torch.nn.GELU(approximate=approximate), sample(5, 7) * 3, device)


@pytest.mark.parametrize("ours, theirs", [
    (nn.SiLU, torch.nn.SiLU), (nn.ReLU, torch.nn.ReLU), (nn.Tanh, torch.nn.Tanh), (nn.Sigmoid, torch.nn.Sigmoid),
    (lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)), (nn.Flatten, torch.nn.Flatten),
])
def test_activations(device, ours, theirs):
    run(ours, theirs(), sample(4, 3, 2) * 4, device)


def test_dropout_eval_is_identity(device):
    theirs = torch.nn.Dropout(0.3).eval()
    run(lambda: nn.Dropout(0.3).eval(), theirs, sample(4, 5), device)


def test_sequential_mlp(device):
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.LayerNorm(8),
                                 torch.nn.Dropout(0.1), torch.nn.Linear(8, 2)).eval()
    ours = lambda: nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8),  # noqa: E731
                                 nn.Dropout(0.1), nn.Linear(8, 2)).eval()
    run(ours, theirs, sample(3, 6), device)
    assert repr(ours()) == repr(theirs)


def test_state_dict_loads_into_pytorch():
    ours = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = sample(2, 3)
    np.testing.assert_allclose(ours(tt.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=RTOL, atol=ATOL)
