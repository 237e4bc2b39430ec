"""Activation checkpointing on edge inputs, against torch.utils.checkpoint.checkpoint(use_reentrant=False):
a module whose input needs no grad (its weights do), a lambda that captures the module (GPT's
`checkpoint_blocks` with frozen embeddings), the recomputation under the forward's autocast policy, and
a tuple output (refused clearly)."""

import functools
import warnings

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.amp import autocast
from tinytorch.models import GPT, GPTConfig
from tinytorch.utils import checkpoint


def test_checkpoint_of_a_module_gives_its_weights_gradients_when_the_input_needs_none():
    tt.manual_seed(0)
    layer = tt.nn.Linear(3, 2)
    x = tt.randn(4, 3)  # data: no grad
    y = checkpoint(layer, x)
    assert y.requires_grad, "the output depends on the layer's weights, which require grad"
    y.sum().backward()
    assert np.allclose(layer.weight.grad.numpy(), np.ones((2, 1)) * x.numpy().sum(axis=0), atol=1e-5)
    assert np.allclose(layer.bias.grad.numpy(), [4.0, 4.0])


def test_checkpoint_of_a_lambda_that_captures_a_module_gives_its_weights_gradients():
    tt.manual_seed(0)
    layer = tt.nn.Linear(3, 2)
    x = tt.randn(4, 3)
    checkpoint(lambda h: layer(h) * 2.0, x).sum().backward()
    assert layer.bias.grad is not None and np.allclose(layer.bias.grad.numpy(), [8.0, 8.0])


def test_gpt_checkpoint_blocks_with_frozen_embeddings_still_trains_the_blocks():
    config = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
    grads = []
    for checkpointed in (False, True):
        tt.manual_seed(0)
        model = GPT(GPTConfig(**config, checkpoint_blocks=checkpointed))
        model.transformer.wte.weight.requires_grad_(False)
        model.transformer.wpe.weight.requires_grad_(False)
        logits, _ = model(tt.tensor(np.array([[1, 2, 3, 4]])))
        logits.sum().backward()
        grads.append({n: p.grad for n, p in model.transformer.h.named_parameters()})
    for name, g in grads[0].items():
        assert grads[1][name] is not None, f"{name}: no gradient through the checkpointed block"
        assert np.allclose(grads[1][name].numpy(), g.numpy(), atol=1e-5), name


def test_checkpoint_warns_when_nothing_it_can_see_requires_grad():
    x, w = tt.randn(2, 3), tt.randn(3, 3, requires_grad=True)
    with pytest.warns(UserWarning, match="requires grad"):
        checkpoint(lambda t: t @ w, x)  # w is read, but checkpoint cannot see it (as torch's reentrant default)
    with tt.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint(lambda t: t @ w, x)  # no graph wanted: no warning


def test_checkpoint_sees_the_modules_passed_to_a_partial():
    """_captured_modules looked at a partial's function only: a module given as its argument went unseen."""
    layer = tt.nn.Linear(3, 3)
    x = tt.randn(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the layer's weight requires grad: no "nothing requires grad" warning
        checkpoint(functools.partial(lambda t, m: m(t), m=layer), x).sum().backward()
        checkpoint(functools.partial(lambda m, t: m(t), layer), x).sum().backward()
    assert layer.weight.grad is not None


def _checkpointed_under_autocast():
    tt.manual_seed(0)
    layer = tt.nn.Linear(5, 4)
    x = tt.randn(3, 5, requires_grad=True)
    with autocast("cpu"):
        plain = layer(x)
    plain.float().sum().backward()
    want = layer.weight.grad.numpy().copy(), x.grad.numpy().copy()
    layer.weight.grad = layer.bias.grad = x.grad = None
    with autocast("cpu"):
        y = checkpoint(layer, x)
    y.float().sum().backward()  # backward outside the block: the recomputation must still run in bfloat16
    return layer, x, y, want


def test_checkpoint_recomputes_under_the_forward_autocast_policy():
    # torch's checkpoint runs the recomputation under the autocast state of the forward; ours ran it under the
    # state of backward (float32 here), so the gradients were not those of the bfloat16 forward
    layer, x, y, want = _checkpointed_under_autocast()
    assert str(y.dtype) == "bfloat16"
    assert np.array_equal(layer.weight.grad.numpy(), want[0]) and np.array_equal(x.grad.numpy(), want[1])


@pytest.mark.parity
def test_checkpoint_under_autocast_matches_torch():
    torch = pytest.importorskip("torch")
    layer, x, y, _ = _checkpointed_under_autocast()
    tl = torch.nn.Linear(5, 4)
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(layer.weight.numpy()))
        tl.bias.copy_(torch.tensor(layer.bias.numpy()))
    with torch.autocast("cpu"):
        ty = torch.utils.checkpoint.checkpoint(tl, torch.tensor(x.numpy()), use_reentrant=False)
    assert str(y.dtype) == "bfloat16" and ty.dtype == torch.bfloat16
    ty.float().sum().backward()
    assert np.allclose(layer.weight.grad.numpy(), tl.weight.grad.numpy(), atol=1e-2)


def test_checkpoint_refuses_a_tuple_output_clearly():
    x = tt.randn(2, requires_grad=True)
    with pytest.raises(TypeError, match="one tensor"):
        checkpoint(lambda a: (a * 2, a * 3), x)
