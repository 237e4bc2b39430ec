"""End to end: a small MLP (module 03's Linear) learns XOR with every optimizer."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.nn.functional import cross_entropy
from tinytorch.nn.utils import clip_grad_norm_
from tinytorch.optim import SGD, Adam, AdamW, RMSprop
from tinytorch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

OPTIMIZERS = {
    "sgd-momentum": lambda ps: SGD(ps, lr=0.2, momentum=0.9),
    "sgd-nesterov": lambda ps: SGD(ps, lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": lambda ps: Adam(ps, lr=0.03),
    "adam-amsgrad": lambda ps: Adam(ps, lr=0.03, amsgrad=True),
    "adamw": lambda ps: AdamW(ps, lr=0.03, weight_decay=0.01),
    "rmsprop": lambda ps: RMSprop(ps, lr=0.01, momentum=0.5),
}


def xor_data(device, n=128):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    return tt.tensor(x, device=device), tt.tensor(y, device=device), y


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_mlp_learns_xor(name, device):
    tt.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).to(device)
    opt = OPTIMIZERS[name](model.parameters())
    steps = 120
    schedule = SequentialLR(opt, [LinearLR(opt, start_factor=0.2, total_iters=10),
                                  CosineAnnealingLR(opt, T_max=steps - 10)], milestones=[10])
    inputs, targets, labels = xor_data(device)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        logits = model(inputs)
        loss = cross_entropy(logits, targets)
        first = loss.item() if first is None else first
        loss.backward()
        clip_grad_norm_(model.parameters(), max_norm=5.0)
        opt.step()
        assert opt.param_groups[0]["lr"] > 0
        schedule.step()
    accuracy = (logits.argmax(dim=1).cpu().numpy() == labels).mean()
    assert loss.item() < 0.3 * first, f"{name}: loss went from {first:.3f} to only {loss.item():.3f}"
    assert accuracy > 0.9, f"{name}: accuracy {accuracy:.2f} on XOR"
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_parameters_are_nn_parameters(device):
    model = nn.Linear(3, 2).to(device)
    opt = AdamW(model.parameters(), lr=0.1)
    assert all(isinstance(p, nn.Parameter) for p in opt.param_groups[0]["params"])
    weight = model.weight.data
    model(tt.ones(4, 3, device=device)).sum().backward()
    opt.step()
    assert model.weight.data is weight, "the optimizer updates the Parameter's array in place"
    with pytest.raises(ValueError, match=r"Linear module; pass module.parameters\(\)"):
        SGD(model, lr=0.1)


def test_no_decay_group_for_biases(device):
    """The usual GPT split: weight decay on matrices only."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1)).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=0.1, weight_decay=0.5)
    biases = [p.cpu().numpy().copy() for p in no_decay]
    weights = [p.cpu().numpy().copy() for p in decay]
    for p in model.parameters():
        p.grad = tt.zeros(*p.shape, device=device)
    opt.step()  # zero gradients: only the decoupled decay moves anything
    for p, before in zip(no_decay, biases):
        np.testing.assert_array_equal(p.cpu().numpy(), before)
    for p, before in zip(decay, weights):
        np.testing.assert_allclose(p.cpu().numpy(), before * (1 - 0.1 * 0.5), rtol=1e-6)
