"""Milestone: an MLP trained with your own tinytorch on the 8x8 handwritten digits.

    tito milestone run mlp [--json] [--seed N]        (or: python milestones/mlp_digits.py --seed N)

1797 images of 8x8 pixels, 20% held out (always the same split). A 64-256-10 MLP with
AdamW and a cosine learning rate, trained by module 07's Trainer for 30 epochs, should
classify at least 97% of the held-out digits, in seconds on two CPU cores.
"""

import argparse
import json
import time

import numpy as np

import tinytorch as tt
from tinytorch import nn
from tinytorch.data import DataLoader, digits, train_test_split
from tinytorch.training import Trainer

EPOCHS, BATCH, LR, HIDDEN = 30, 64, 3e-3, 256


def load_digits():
    """(train, test) TensorDatasets of flattened images scaled to [0, 1] and int64 labels."""
    images, labels = digits()
    return train_test_split(images.reshape(-1, 64) / 16.0, labels, test_fraction=0.2, seed=0)


def confusion_matrix(model, loader, classes=10):
    """counts[true, predicted] over `loader`, in eval mode."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    model.eval()
    with tt.no_grad():
        for x, y in loader:
            np.add.at(counts, (y.numpy(), model(x).argmax(dim=1).numpy()), 1)
    model.train()
    return counts


def run(seed=0, quiet=False):
    """Train and test the MLP; return test_accuracy (a fraction), seconds, parameters, confusion."""
    start = time.perf_counter()
    train_set, test_set = load_digits()
    tt.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 10))
    train = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    test = DataLoader(test_set, batch_size=512)
    optimizer = tt.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    scheduler = tt.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * len(train))
    trainer = Trainer(model, optimizer, nn.functional.cross_entropy, train, scheduler=scheduler,
                      metrics={"accuracy": tt.metrics.accuracy}, seed=seed, quiet=quiet)
    history = trainer.fit(epochs=EPOCHS)
    result = trainer.evaluate(test)
    return {
        "test_accuracy": result["accuracy"],
        "test_loss": result["loss"],
        "final_train_loss": history.losses[-1],
        "seconds": round(time.perf_counter() - start, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": trainer.step,
        "seed": seed,
        "confusion": confusion_matrix(model, test).tolist(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.seed, quiet=True)))
