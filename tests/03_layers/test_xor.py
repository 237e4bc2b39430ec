"""End to end: an MLP built from these layers learns XOR with a hand-written SGD loop."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
def test_mlp_learns_xor(device, activation):
    tt.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), activation(), nn.Linear(8, 1), nn.Sigmoid()).to(device)
    x = tt.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], device=device)
    y = tt.tensor([[0.0], [1.0], [1.0], [0.0]], device=device)
    first = None
    for _ in range(500):
        loss = ((model(x) - y) ** 2).mean()
        first = loss.item() if first is None else first
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 1.0 * p.grad.data
    predictions = (model(x).numpy() > 0.5).astype(np.float32)
    assert (predictions == y.numpy()).all(), f"XOR not learned: loss {first:.3f} -> {loss.item():.3f}, {predictions.ravel()}"
    assert loss.item() < 0.05 * first
