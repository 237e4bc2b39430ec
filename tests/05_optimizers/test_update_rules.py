"""Every update rule against a float64 reference written from PyTorch's documented algorithms,
plus hand-computed single steps, in-place updates (no reallocation) and float32 throughout."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.optim import SGD, Adam, AdamW, RMSprop


# --- float64 references (one parameter array, a list of gradients) ---------------------------

def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    p, buf, out = p.astype(np.float64), None, []
    for g in grads:
        g = -g if maximize else g
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        out.append(p)
    return out


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False, maximize=False):
    p = p.astype(np.float64)
    m, v, vmax, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    b1, b2 = betas
    for t, g in enumerate(grads, start=1):
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        m_hat = m / (1 - b1 ** t)
        v_hat = (vmax if amsgrad else v) / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def ref_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                maximize=False):
    p = p.astype(np.float64)
    s, gbar, buf, out = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p), []
    for g in grads:
        g = (-g if maximize else g) + weight_decay * p
        s = alpha * s + (1 - alpha) * g * g
        if centered:
            gbar = alpha * gbar + (1 - alpha) * g
            avg = np.sqrt(s - gbar * gbar) + eps
        else:
            avg = np.sqrt(s) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
        out.append(p)
    return out


CASES = [
    ("sgd", lambda ps: SGD(ps, lr=0.1), lambda p, gs: ref_sgd(p, gs, 0.1)),
    ("sgd-momentum", lambda ps: SGD(ps, lr=0.1, momentum=0.9), lambda p, gs: ref_sgd(p, gs, 0.1, 0.9)),
    ("sgd-dampening-wd", lambda ps: SGD(ps, lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.1),
     lambda p, gs: ref_sgd(p, gs, 0.05, 0.8, 0.3, 0.1)),
    ("sgd-nesterov", lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
     lambda p, gs: ref_sgd(p, gs, 0.1, 0.9, weight_decay=0.01, nesterov=True)),
    ("sgd-maximize", lambda ps: SGD(ps, lr=0.1, momentum=0.5, maximize=True),
     lambda p, gs: ref_sgd(p, gs, 0.1, 0.5, maximize=True)),
    # maximize negates the gradient before weight decay is added: the decay still shrinks the weights
    ("sgd-maximize-wd", lambda ps: SGD(ps, lr=0.1, momentum=0.5, weight_decay=0.5, maximize=True),
     lambda p, gs: ref_sgd(p, gs, 0.1, 0.5, weight_decay=0.5, maximize=True)),
    ("adam", lambda ps: Adam(ps, lr=0.01), lambda p, gs: ref_adam(p, gs, 0.01)),
    ("adam-l2", lambda ps: Adam(ps, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     lambda p, gs: ref_adam(p, gs, 0.01, (0.8, 0.99), 1e-6, 0.1)),
    # β2 = 0.5 forgets fast, so v drops below its running max often: the step must use the max
    ("adam-amsgrad", lambda ps: Adam(ps, lr=0.01, betas=(0.9, 0.5), amsgrad=True),
     lambda p, gs: ref_adam(p, gs, 0.01, (0.9, 0.5), amsgrad=True)),
    ("adam-maximize", lambda ps: Adam(ps, lr=0.01, maximize=True), lambda p, gs: ref_adam(p, gs, 0.01, maximize=True)),
    ("adam-maximize-wd", lambda ps: Adam(ps, lr=0.01, weight_decay=0.5, maximize=True),
     lambda p, gs: ref_adam(p, gs, 0.01, weight_decay=0.5, maximize=True)),
    ("adamw", lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
     lambda p, gs: ref_adam(p, gs, 0.01, weight_decay=0.1, decoupled=True)),
    ("adamw-amsgrad", lambda ps: AdamW(ps, lr=0.01, amsgrad=True),
     lambda p, gs: ref_adam(p, gs, 0.01, weight_decay=0.01, amsgrad=True, decoupled=True)),
    ("rmsprop", lambda ps: RMSprop(ps, lr=0.01), lambda p, gs: ref_rmsprop(p, gs, 0.01)),
    ("rmsprop-centered-momentum-wd",
     lambda ps: RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.05),
     lambda p, gs: ref_rmsprop(p, gs, 0.01, 0.9, weight_decay=0.05, momentum=0.7, centered=True)),
    ("rmsprop-maximize", lambda ps: RMSprop(ps, lr=0.01, maximize=True),
     lambda p, gs: ref_rmsprop(p, gs, 0.01, maximize=True)),
]


def address(array):
    return array.ctypes.data if isinstance(array, np.ndarray) else array.data.ptr


def state_arrays(opt, p):
    return {k: v for k, v in opt.state[p].items() if hasattr(v, "shape")}


@pytest.mark.parametrize("name, make, reference", CASES, ids=[c[0] for c in CASES])
def test_matches_reference_in_place_float32(name, make, reference, device):
    rng = np.random.default_rng(1)
    start = rng.standard_normal((4, 3)).astype(np.float32)
    # gradients with a trend and sign flips, then a shrinking phase (v falls below amsgrad's max)
    grads = [(rng.standard_normal((4, 3)) * (2.0 if i < 3 else 0.1) + 0.3).astype(np.float32) for i in range(8)]
    p = tt.tensor(start, device=device, requires_grad=True)
    opt = make([p])
    want = reference(start, [g.astype(np.float64) for g in grads])
    addresses = None
    for i, g in enumerate(grads):
        p.grad = tt.tensor(g, device=device)
        grad_array = p.grad.data
        opt.step()
        assert p.grad.data is grad_array and np.array_equal(p.grad.cpu().numpy(), g), \
            f"{name}: step() must not modify the gradient"
        now = [address(p.data)] + [address(a) for a in state_arrays(opt, p).values()]
        if addresses is None:
            addresses = now
        assert now == addresses, f"{name}: step {i} reallocated the parameter or a state array"
        assert p.dtype == np.float32 and all(a.dtype == np.float32 for a in state_arrays(opt, p).values()), \
            f"{name}: parameters and state must stay float32"
        np.testing.assert_allclose(p.cpu().numpy(), want[i], rtol=2e-5, atol=2e-6,
                                   err_msg=f"{name}: step {i} differs from the reference")


@pytest.mark.parametrize("make, keys", [
    (lambda ps: SGD(ps, lr=0.1), set()),
    (lambda ps: SGD(ps, lr=0.1, momentum=0.9), {"momentum_buffer"}),
    (lambda ps: Adam(ps), {"step", "exp_avg", "exp_avg_sq"}),
    (lambda ps: AdamW(ps, amsgrad=True), {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}),
    (lambda ps: RMSprop(ps), {"step", "square_avg"}),
    (lambda ps: RMSprop(ps, momentum=0.9, centered=True), {"step", "square_avg", "momentum_buffer", "grad_avg"}),
])
def test_state_keys_follow_pytorch(make, keys, device):
    p = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    opt = make([p])
    p.grad = tt.ones(2, device=device)
    opt.step()
    assert set(opt.state[p]) == keys


def test_hand_computed_steps(device):
    """The worked examples of the lesson."""
    def run(make, grads):
        p = tt.tensor([1.0], device=device, requires_grad=True)
        opt = make([p])
        for g in grads:
            p.grad = tt.tensor([g], device=device)
            opt.step()
        return p.item()

    assert math.isclose(run(lambda ps: SGD(ps, lr=0.1, momentum=0.9), [0.5, 0.5]), 0.855, rel_tol=1e-6)
    assert math.isclose(run(lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True), [0.5, 0.5]), 0.7695, rel_tol=1e-6)
    assert math.isclose(run(lambda ps: Adam(ps, lr=0.1), [0.5]), 0.9, rel_tol=1e-6)
    assert math.isclose(run(lambda ps: Adam(ps, lr=0.1), [1000.0]), 0.9, rel_tol=1e-6), "Adam is scale-free"
    assert math.isclose(run(lambda ps: AdamW(ps, lr=0.1, weight_decay=0.01), [0.5]), 0.899, rel_tol=1e-6)
    # RMSprop, one step: s = 0.01 * 0.25, theta = 1 - 0.01 * 0.5 / (0.05 + 1e-8)
    assert math.isclose(run(lambda ps: RMSprop(ps, lr=0.01), [0.5]), 1 - 0.01 * 0.5 / 0.05, rel_tol=1e-6)


def test_adamw_decay_is_decoupled_from_the_gradient_scale(device):
    """Adam's L2 decay is divided by sqrt(v); AdamW's is not: with a huge gradient the difference shows."""
    def decay_effect(cls, **kw):
        moved = []
        for start in (1.0, 2.0):
            p = tt.tensor([start], device=device, requires_grad=True)
            opt = cls([p], lr=0.1, weight_decay=0.5, **kw)
            p.grad = tt.tensor([1000.0], device=device)
            opt.step()
            moved.append(start - p.item())
        return moved[1] - moved[0]  # extra movement caused by the larger weight

    assert math.isclose(decay_effect(AdamW), 0.1 * 0.5 * 1.0, rel_tol=1e-4), "AdamW: lr*wd*theta more"
    assert abs(decay_effect(Adam)) < 1e-4, "Adam: the L2 term drowns in the normalised gradient"


def test_parameters_without_grad_are_left_alone(device):
    a = tt.tensor([1.0], device=device, requires_grad=True)
    b = tt.tensor([2.0], device=device, requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    a.grad = tt.ones(1, device=device)
    opt.step()
    assert b.item() == 2.0 and not opt.state.get(b)
    assert a.item() < 1.0
