"""End to end: the losses train. Logistic regression (BCE with logits) and softmax regression
(cross-entropy) reach 100% accuracy on linearly separable data with plain gradient descent."""

import numpy as np

import tinytorch as tt
import tinytorch.nn.functional as F
from tinytorch.metrics import Mean, accuracy


def blobs(rng, centers, n=40):
    points = np.concatenate([rng.normal(c, 0.6, (n, 2)) for c in centers]).astype(np.float32)
    labels = np.repeat(np.arange(len(centers)), n)
    return points, labels


def test_logistic_regression_converges(rng, device):
    points, labels = blobs(rng, [(-2, -1), (2, 1)])
    X = tt.tensor(points, device=device)
    Y = tt.tensor(labels.astype(np.float32), device=device)
    w = tt.zeros(2, device=device, requires_grad=True)
    b = tt.zeros(1, device=device, requires_grad=True)
    losses = []
    for _ in range(100):
        loss = F.binary_cross_entropy_with_logits(X @ w + b, Y)
        for param in (w, b):
            param.grad = None
        loss.backward()
        for param in (w, b):
            param.data -= 0.5 * param.grad.data
        losses.append(loss.item())
    assert losses[-1] < 0.05 < losses[0], f"loss should fall well below 0.05: {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert accuracy(X @ w + b, Y) == 1.0


def test_softmax_regression_converges(rng, device):
    points, labels = blobs(rng, [(-3, 0), (3, 0), (0, 4)])
    X, T = tt.tensor(points, device=device), tt.tensor(labels, device=device)
    W = tt.zeros(2, 3, device=device, requires_grad=True)
    b = tt.zeros(3, device=device, requires_grad=True)
    epoch = Mean()
    for _ in range(150):
        loss = F.cross_entropy(X @ W + b, T, label_smoothing=0.05)
        W.grad = b.grad = None
        loss.backward()
        W.data -= 0.3 * W.grad.data
        b.data -= 0.3 * b.grad.data
        epoch.update(loss, weight=len(points))
    assert accuracy(X @ W + b, T) == 1.0
    assert loss.item() < epoch.compute(), "the last loss is below the running mean of all of them"
