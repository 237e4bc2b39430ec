"""Small models and loaders for the Trainer tests (module 06's DataLoader, module 03's layers)."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.data import DataLoader, TensorDataset


def make_data(n=64, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = rng.integers(0, classes, n)
    return x, y


def make_loader(x, y, batch_size, shuffle=False, device="cpu"):
    return DataLoader(TensorDataset(tt.tensor(x, device=device), tt.tensor(y, device=device)),
                      batch_size=batch_size, shuffle=shuffle)


def make_model(features=5, classes=3, seed=0, dropout=0.0):
    tt.manual_seed(seed)
    layers = [nn.Linear(features, 16), nn.ReLU()]
    layers += [nn.Dropout(dropout)] if dropout else []
    return nn.Sequential(*layers, nn.Linear(16, classes))


class Parts:
    """Builds (model, optimizer, loss, loaders) the same way every time it is called."""

    def __init__(self, device):
        self.device = device

    def __call__(self, n=64, batch_size=8, shuffle=False, lr=0.1, optimizer="sgd", seed=0, dropout=0.0):
        x, y = make_data(n, seed=seed)
        model = make_model(seed=seed, dropout=dropout).to(self.device)
        opt = (tt.optim.SGD(model.parameters(), lr=lr) if optimizer == "sgd"
               else tt.optim.AdamW(model.parameters(), lr=lr))
        train = make_loader(x, y, batch_size, shuffle, self.device)
        val = make_loader(x[:24], y[:24], 8, False, self.device)
        return model, opt, nn.functional.cross_entropy, train, val


@pytest.fixture
def parts(device):
    return Parts(device)


@pytest.fixture
def cpu_parts():
    """`parts` on the CPU whatever the test device: splitting a batch over threads is a CPU feature."""
    return Parts("cpu")
