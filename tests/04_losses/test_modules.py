"""The nn.Module wrappers: PyTorch's constructor arguments, same results as the functions,
weights kept as buffers."""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F
from tinytorch.nn import losses
from tinytorch.nn.layers import Module


def t32(a, device, **kw):
    return tt.tensor(np.asarray(a, dtype=np.float32), device=device, **kw)


@pytest.fixture
def data(rng, device):
    return {
        "logits": t32(rng.standard_normal((5, 4)), device, requires_grad=True),
        "classes": tt.tensor(np.array([0, 3, -100, 1, 2]), device=device),
        "y": t32(rng.standard_normal((5, 4)), device),
        "y01": t32(rng.uniform(0, 1, (5, 4)), device),
        "w": t32([1.0, 2.0, 0.5, 1.5], device),
    }


def cases(d):
    """(module, the same call as a function, input, target)."""
    logp = d["logits"].log_softmax(dim=1)
    probs = d["logits"].sigmoid()
    return [
        (losses.MSELoss(reduction="sum"), lambda x, t: F.mse_loss(x, t, reduction="sum"), d["logits"], d["y"]),
        (losses.L1Loss(), F.l1_loss, d["logits"], d["y"]),
        (losses.CrossEntropyLoss(weight=d["w"], ignore_index=-100, reduction="mean", label_smoothing=0.1),
         lambda x, t: F.cross_entropy(x, t, weight=d["w"], label_smoothing=0.1), d["logits"], d["classes"]),
        (losses.NLLLoss(weight=d["w"], reduction="none"),
         lambda x, t: F.nll_loss(x, t, weight=d["w"], reduction="none"), logp, d["classes"]),
        (losses.BCEWithLogitsLoss(weight=None, reduction="mean", pos_weight=d["w"]),
         lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=d["w"]), d["logits"], d["y01"]),
        (losses.BCELoss(reduction="sum"), lambda x, t: F.binary_cross_entropy(x, t, reduction="sum"),
         probs, d["y01"]),
    ]


def test_modules_match_functions_and_backpropagate(data):
    for module, function, x, target in cases(data):
        assert isinstance(module, Module)
        got, want = module(x, target), function(x, target)
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=type(module).__name__)
        assert got.requires_grad, f"{type(module).__name__} lost the graph"
    data["logits"].grad = None
    losses.CrossEntropyLoss()(data["logits"], data["classes"]).backward()
    assert data["logits"].grad is not None


def test_weights_are_buffers_not_parameters(device):
    w = t32([1.0, 2.0], device)
    criterion = losses.CrossEntropyLoss(weight=w)
    assert list(criterion.parameters()) == []
    assert dict(criterion.named_buffers())["weight"] is w
    assert "weight" in criterion.state_dict()
    assert "pos_weight" in dict(losses.BCEWithLogitsLoss(pos_weight=w).named_buffers())
    assert losses.CrossEntropyLoss().weight is None


def test_repr_and_bad_reduction():
    assert repr(losses.CrossEntropyLoss()) == "CrossEntropyLoss()"
    with pytest.raises(ValueError, match="CrossEntropyLoss: reduction must be"):
        losses.CrossEntropyLoss(reduction="average")


def test_reachable_from_tinytorch_nn():
    assert tt.nn.CrossEntropyLoss is losses.CrossEntropyLoss
    assert tt.nn.functional.cross_entropy is F.cross_entropy
