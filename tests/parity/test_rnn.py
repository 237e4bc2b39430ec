"""nn.RNN / nn.GRU / nn.LSTM against PyTorch: torch's weights copied in; outputs, states and grads to 1e-5."""

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
from tinytorch import nn  # noqa: E402

pytestmark = pytest.mark.parity
TOL = 1e-5

CASES = [  # (kind, kwargs, batch_first input)
    ("RNN", {}, False),
    ("RNN", {"nonlinearity": "relu", "num_layers": 2}, True),
    ("GRU", {}, True),
    ("GRU", {"num_layers": 2, "bias": False}, False),
    ("LSTM", {}, True),
    ("LSTM", {"num_layers": 2}, False),
]


def pair(kind, kwargs, batch_first, seed=0):
    torch.manual_seed(seed)
    theirs = getattr(torch.nn, kind)(3, 5, batch_first=batch_first, **kwargs)
    ours = getattr(nn, kind)(3, 5, batch_first=batch_first, **kwargs)
    state = OrderedDict((k, tt.tensor(v.detach().numpy())) for k, v in theirs.state_dict().items())
    assert list(state) == list(ours.state_dict()), "parameter names and order differ from PyTorch's"
    ours.load_state_dict(state)
    return ours, theirs


def states(result, kind):
    output, final = result
    return [output, *final] if kind == "LSTM" else [output, final]


@pytest.mark.parametrize("kind,kwargs,batch_first", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_forward_and_backward_match_torch(kind, kwargs, batch_first):
    ours, theirs = pair(kind, kwargs, batch_first)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 3) if batch_first else (6, 2, 3)).astype(np.float32)
    layers = kwargs.get("num_layers", 1)
    h0 = rng.standard_normal((layers, 2, 5)).astype(np.float32)
    c0 = rng.standard_normal((layers, 2, 5)).astype(np.float32)
    tx, ox = torch.tensor(x, requires_grad=True), tt.tensor(x, requires_grad=True)
    th, oh = torch.tensor(h0, requires_grad=True), tt.tensor(h0, requires_grad=True)
    tc, oc = torch.tensor(c0, requires_grad=True), tt.tensor(c0, requires_grad=True)
    ref = states(theirs(tx, (th, tc) if kind == "LSTM" else th), kind)
    out = states(ours(ox, (oh, oc) if kind == "LSTM" else oh), kind)
    weights = [rng.standard_normal(tuple(r.shape)).astype(np.float32) for r in ref]
    for o, r, what in zip(out, ref, ["output", "h_n", "c_n"]):
        assert o.shape == tuple(r.shape), f"{what}: shape {o.shape}, PyTorch {tuple(r.shape)}"
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=TOL, atol=TOL, err_msg=what)
    sum((r * torch.tensor(w)).sum() for r, w in zip(ref, weights)).backward()
    total = None
    for o, w in zip(out, weights):
        term = (o * tt.tensor(w)).sum()
        total = term if total is None else total + term
    total.backward()
    pairs = [(ox, tx, "input"), (oh, th, "h_0")] + ([(oc, tc, "c_0")] if kind == "LSTM" else [])
    for o, t, what in pairs:
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=TOL, atol=TOL, err_msg=f"grad of {what}")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), theirs_params[name].grad.numpy(), rtol=TOL, atol=TOL,
                                   err_msg=f"grad of {name}")


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_unbatched_input_and_default_state_match_torch(kind):
    ours, theirs = pair(kind, {}, False, seed=1)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    ref, out = states(theirs(torch.tensor(x)), kind), states(ours(tt.tensor(x)), kind)
    for o, r in zip(out, ref):
        assert o.shape == tuple(r.shape)
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), rtol=TOL, atol=TOL)


def test_init_range_matches_torch():
    lstm = nn.LSTM(3, 16)
    bound = 1 / np.sqrt(16)
    values = np.concatenate([p.numpy().ravel() for p in lstm.parameters()])
    assert values.min() >= -bound and values.max() <= bound and values.std() > bound / 3, \
        "PyTorch initialises every RNN weight from U(-1/sqrt(H), 1/sqrt(H))"


def test_bad_input_names_the_layout():
    with pytest.raises(ValueError, match=r"\(B, T, input_size\)"):
        nn.GRU(3, 5, batch_first=True)(tt.zeros(2, 4, 7))
    with pytest.raises(NotImplementedError, match="time-reversed"):
        nn.LSTM(3, 5, bidirectional=True)
