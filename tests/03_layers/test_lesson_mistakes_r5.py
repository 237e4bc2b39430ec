"""Round-5 lesson mistakes in module 03: each test fails for one plausible wrong student answer
that the other tests let through (dropout on zeros, None registrations, 1-D and empty inputs, 2-D norm shapes)."""
import numpy as np

import tinytorch as tt
from tinytorch.core.autograd import gradcheck
from tinytorch.nn import functional as F
from tinytorch.nn.layers import Embedding, Linear, Module, Parameter


def test_dropout_backward_uses_the_mask_not_the_output():
    x = tt.tensor(np.zeros(1000, np.float32), requires_grad=True)
    (g,) = F.dropout(x, 0.5)._backward(np.ones(1000, np.float32))
    assert 0.4 < (g == 2).mean() < 0.6


def test_none_buffers_plain_tensors_and_none_children_are_not_walked():
    class Pair(Module):
        def __init__(self):
            super().__init__()
            self.weight = Parameter([1.0])
            self.register_buffer("steps", tt.tensor([0.0]))
            self.register_buffer("empty", None)
            self.plain = tt.tensor([1.0])

    class Tree(Module):
        def __init__(self):
            super().__init__()
            self.first, self.inner = Pair(), Pair()

    assert [n for n, _ in Pair().named_buffers()] == ["steps"]
    tree = Tree()
    tree.inner = None
    assert [n for n, _ in tree.named_modules()] == ["", "first"]
    assert list(tree.state_dict()) == ["first.weight", "first.steps"]


def test_linear_one_d_input_and_zero_in_features():
    w, b = Parameter([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), Parameter([0.0, 0.0, 1.0])
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    y = F.linear(x, w, b)
    assert y.shape == (3,) and y.tolist() == [1, 2, 4]
    gx, gw, gb = y._backward(np.ones(3, np.float32))
    assert np.shape(gx) == (2,) and np.array_equal(gx, [2, 2])
    assert np.array_equal(gw, [[1, 2]] * 3) and np.array_equal(gb, [1, 1, 1])
    assert Linear(0, 3).bias.tolist() == [0, 0, 0]


def test_embedding_of_an_empty_batch():
    table = Parameter(np.arange(15, dtype=np.float32).reshape(5, 3))
    out = F.embedding(tt.tensor(np.zeros((0, 2), np.int64)), table)
    assert out.shape == (0, 2, 3)
    (g,) = out._backward(np.ones((0, 2, 3), np.float32))
    assert np.array_equal(g, np.zeros((5, 3)))
    assert Embedding(4, 2)(tt.tensor(np.zeros(0, np.int64))).shape == (0, 2)


def test_norm_affine_grads_over_two_normalized_dims():
    x = tt.tensor(np.random.default_rng(0).standard_normal((2, 3, 4)), requires_grad=True)
    assert gradcheck(lambda a, c, d: F.layer_norm(a, (3, 4), c, d),
                     (x, Parameter(np.arange(12.0).reshape(3, 4)), Parameter(np.ones((3, 4)))))
    assert gradcheck(lambda a, c: F.rms_norm(a, (3, 4), c), (x, Parameter(np.arange(12.0).reshape(3, 4))))
