"""Round-5 lesson mistakes in module 02: each test fails for one plausible wrong student answer
that the other tests let through (gradcheck's eps/atol/None grads/empty inputs, freeing, skipped nodes)."""
import numpy as np

from tinytorch.core.autograd import backward, gradcheck
from tinytorch.core.tensor import Tensor, from_op


def test_gradcheck_fails_a_backward_that_returns_none_for_an_input():
    def lost_b(a, b):
        return from_op(a.data * b.data, a._device, (a, b), lambda g: (g * b.data, None))
    a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([3.0, -1.0], requires_grad=True)
    assert gradcheck(lost_b, (a, b), raise_exception=False) is False


def test_gradcheck_passes_eps_atol_rtol_on_and_accepts_empty_inputs():
    one = Tensor([1.0], requires_grad=True)
    assert gradcheck(lambda a: a ** 3, (one,), eps=0.5, atol=0.0, rtol=0.01, raise_exception=False) is False
    assert gradcheck(lambda a: a * a.detach(), (Tensor([1.0, 2.0], requires_grad=True),), atol=100.0)
    assert gradcheck(lambda a: a * 2.0, (Tensor(np.ones((0, 3)), requires_grad=True),))


def test_backward_frees_intermediates_and_skips_nodes_without_gradient():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * 3.0
    backward(h.sum())
    assert h._parents == ()
    c = from_op(x.data * 2.0, x._device, (x,), lambda g: (None,))
    x.grad = None
    backward((c * 1.0).sum())
    assert x.grad is None
