"""The Optimizer base: parameter groups, bad input, zero_grad, closures, state_dict round trips."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.optim import SGD, Adam, AdamW, Optimizer, RMSprop


def leaf(values, device, requires_grad=True):
    return tt.tensor(np.asarray(values, dtype=np.float32), device=device, requires_grad=requires_grad)


def quadratic_grads(params, targets):
    """Set .grad as d/dp of sum((p - target)^2 * (1 + p^2)/2): a deterministic, non-trivial landscape."""
    loss = None
    for p, t in zip(params, targets):
        term = ((p - t) * (p - t) * (p * p + 1.0)).sum() * 0.5
        loss = term if loss is None else loss + term
    loss.backward()
    return loss


# --- parameter groups ----------------------------------------------------------

def test_groups_take_defaults_and_their_own_options(device):
    w, b = leaf([1.0, 2.0], device), leaf([3.0], device)
    opt = SGD([{"params": [w]}, {"params": b, "lr": 0.5, "momentum": 0.9}], lr=0.1, weight_decay=0.01)
    g0, g1 = opt.param_groups
    assert g0["params"][0] is w
    assert g1["params"][0] is b, "a bare tensor in a group's 'params' is wrapped in a list"
    assert (g0["lr"], g0["momentum"], g0["weight_decay"]) == (0.1, 0, 0.01)
    assert (g1["lr"], g1["momentum"], g1["weight_decay"]) == (0.5, 0.9, 0.01)
    w.grad, b.grad = tt.ones(2, device=device), tt.ones(1, device=device)
    opt.step()
    np.testing.assert_allclose(w.cpu().numpy(), [1 - 0.1 * 1.01, 2 - 0.1 * 1.02], rtol=1e-6)
    np.testing.assert_allclose(b.cpu().numpy(), [3 - 0.5 * 1.03], rtol=1e-6)


def test_add_param_group(device):
    w, b = leaf([1.0], device), leaf([2.0], device)
    opt = Adam([w], lr=0.1)
    opt.add_param_group({"params": [b], "lr": 0.01})
    assert len(opt.param_groups) == 2
    assert opt.param_groups[1]["betas"] == (0.9, 0.999), "missing options come from the defaults"
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [w]})
    with pytest.raises(ValueError, match="'params'"):
        opt.add_param_group({"lr": 0.1})


def test_generators_are_accepted(device):
    params = [leaf([1.0], device), leaf([2.0], device)]
    opt = SGD((p for p in params), lr=0.1)
    got = opt.param_groups[0]["params"]
    assert len(got) == 2 and all(a is b for a, b in zip(got, params))
    groups = SGD(({"params": [p], "lr": 0.5 * i} for i, p in enumerate(params, 1)), lr=0.1).param_groups
    assert [g["lr"] for g in groups] == [0.5, 1.0] and groups[1]["params"][0] is params[1]


# --- bad input ---------------------------------------------------------------------

def test_empty_parameter_list():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam(iter([]))


@pytest.mark.parametrize("bad, words", [
    ([1.0, 2.0], "float"),
    ([np.ones(3, np.float32)], "ndarray"),
    ("weights", "str"),
    (42, "int"),
])
def test_not_tensors(bad, words):
    with pytest.raises(ValueError, match=words):
        SGD(bad, lr=0.1)


def test_a_single_tensor_or_a_set_is_refused(device):
    w = leaf([1.0, 2.0], device)
    with pytest.raises(ValueError, match=r"single Tensor.*\[tensor\]"):
        SGD(w, lr=0.1)
    with pytest.raises(ValueError, match="set"):
        SGD({w}, lr=0.1)


def test_a_module_is_refused_with_the_fix():
    class FakeModule:  # anything with a parameters() method looks like a Module
        def parameters(self):
            return iter([])

    with pytest.raises(ValueError, match=r"FakeModule module; pass module.parameters\(\)"):
        SGD(FakeModule(), lr=0.1)


def test_non_leaf_and_duplicates(device):
    w = leaf([1.0, 2.0], device)
    with pytest.raises(ValueError, match="non-leaf"):
        SGD([w * 2.0], lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        SGD([w, w], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        SGD([{"params": [w]}, {"params": [w], "lr": 1.0}], lr=0.1)


@pytest.mark.parametrize("make, words", [
    (lambda p: SGD(p, lr=-0.1), "learning rate"),
    (lambda p: SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p: Adam(p, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda p: Adam(p, eps=-1e-8), "epsilon"),
    (lambda p: AdamW(p, weight_decay=-0.1), "weight_decay"),
    (lambda p: RMSprop(p, alpha=-0.1), "alpha"),
])
def test_bad_hyperparameters(make, words, device):
    with pytest.raises(ValueError, match=words):
        make([leaf([1.0], device)])


def test_frozen_parameters_are_skipped(device):
    """As in PyTorch: a tensor that does not require grad is accepted and never updated."""
    frozen, live = leaf([1.0], device, requires_grad=False), leaf([1.0], device)
    opt = Adam([frozen, live], lr=0.1)
    (frozen * live).sum().backward()
    opt.step()
    assert frozen.item() == 1.0 and frozen.grad is None
    assert live.item() < 1.0
    assert frozen not in opt.state or not opt.state[frozen]


def test_base_class_needs_update(device):
    w = leaf([1.0], device)
    opt = Optimizer([w], {"lr": 0.1})
    w.grad = tt.ones(1, device=device)
    with pytest.raises(NotImplementedError, match="_update"):
        opt.step()


# --- zero_grad, closure, repr ------------------------------------------------------------

def test_zero_grad(device):
    w = leaf([1.0, 2.0], device)
    opt = SGD([w], lr=0.1)
    (w * w).sum().backward()
    opt.zero_grad()
    assert w.grad is None, "set_to_none=True (the default) drops the gradient"
    (w * w).sum().backward()
    grad_array = w.grad.data
    opt.zero_grad(set_to_none=False)
    assert w.grad.data is grad_array and not np.any(w.grad.cpu().numpy()), "set_to_none=False zeroes in place"


def test_step_with_closure(device):
    w = leaf([3.0], device)
    opt = SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with tt.no_grad():  # the closure re-enables grad, as in PyTorch
        loss = opt.step(closure)
    assert loss.item() == 9.0
    assert np.isclose(w.item(), 3.0 - 0.1 * 6.0)
    assert opt.step() is None


def test_step_builds_no_graph(device):
    w = leaf([1.0, 2.0], device)
    opt = Adam([w], lr=0.1)
    (w * w).sum().backward()
    opt.step()
    assert w.is_leaf and w._backward is None and w.requires_grad


def test_repr_lists_groups(device):
    opt = SGD([leaf([1.0], device)], lr=0.1, momentum=0.9)
    text = repr(opt)
    assert text.startswith("SGD (") and "Parameter Group 0" in text and "momentum: 0.9" in text


# --- state_dict / load_state_dict -------------------------------------------------------

CONFIGS = [
    ("sgd-momentum", lambda ps: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3)),
    ("sgd-nesterov-groups", lambda ps: SGD([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.01}],
                                            lr=0.05, momentum=0.8, nesterov=True)),
    ("adam-amsgrad", lambda ps: Adam(ps, lr=0.01, amsgrad=True, weight_decay=1e-2)),
    ("adamw", lambda ps: AdamW(ps, lr=0.01)),
    ("rmsprop-centered-momentum", lambda ps: RMSprop(ps, lr=0.01, momentum=0.5, centered=True)),
]


def make_params(device):
    rng = np.random.default_rng(0)
    return [leaf(rng.standard_normal((3, 2)), device), leaf(rng.standard_normal(4), device)]


def train(opt, params, targets, steps):
    for _ in range(steps):
        opt.zero_grad()
        quadratic_grads(params, targets)
        opt.step()


@pytest.mark.parametrize("name, make", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_resume_is_bit_identical(name, make, device):
    params = make_params(device)
    targets = [tt.zeros(*p.shape, device=device) + 0.5 for p in params]
    opt = make(params)
    train(opt, params, targets, 4)
    saved_params = [p.cpu().numpy().copy() for p in params]
    saved = opt.state_dict()
    train(opt, params, targets, 5)
    expected = [p.cpu().numpy().copy() for p in params]

    resumed = [leaf(a, device) for a in saved_params]
    fresh = make(resumed)
    fresh.load_state_dict(saved)
    train(fresh, resumed, targets, 5)
    for got, want in zip(resumed, expected):
        np.testing.assert_array_equal(got.cpu().numpy(), want, err_msg=f"{name}: resuming must be bit-identical")


def test_state_dict_format_and_copies(device):
    params = make_params(device)
    extra = leaf([1.0], device)
    opt = Adam([{"params": params}, {"params": [extra], "lr": 0.5}], lr=0.01)
    train(opt, params, [tt.zeros(*p.shape, device=device) for p in params], 2)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]], "params are numbered across groups"
    assert sd["param_groups"][1]["lr"] == 0.5
    assert set(sd["state"]) == {0, 1}, "only parameters that have stepped have state"
    assert sd["state"][0]["step"] == 2
    before = tt.tensor(sd["state"][0]["exp_avg"]).cpu().numpy().copy()
    train(opt, params, [tt.zeros(*p.shape, device=device) for p in params], 1)
    assert np.array_equal(tt.tensor(sd["state"][0]["exp_avg"]).cpu().numpy(), before), \
        "state_dict() must copy the state arrays, not alias them"
    opt.param_groups[0]["lr"] = 123.0
    assert sd["param_groups"][0]["lr"] == 0.01


def test_load_state_dict_does_not_alias_and_keeps_dtype(device):
    params = make_params(device)
    opt = SGD(params, lr=0.1, momentum=0.9)
    train(opt, params, [tt.zeros(*p.shape, device=device) for p in params], 1)
    sd = opt.state_dict()
    other = SGD(params, lr=0.1, momentum=0.9)
    other.load_state_dict(sd)
    buf = other.state[params[0]]["momentum_buffer"]
    assert buf is not sd["state"][0]["momentum_buffer"]
    assert buf.dtype == np.float32
    assert other.param_groups[0]["params"][0] is params[0]


def test_load_state_dict_mismatch(device):
    params = make_params(device)
    sd = SGD(params, lr=0.1).state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        SGD([{"params": params[:1]}, {"params": params[1:]}], lr=0.1).load_state_dict(sd)
    with pytest.raises(ValueError, match="group 0 has 2 parameters"):
        SGD(params[:1], lr=0.1).load_state_dict(sd)


def test_a_step_between_forward_and_backward_is_refused(device):
    """The optimizer changes the weights in place: a graph recorded before its step cannot differentiate them
    (PyTorch raises too); backward says so instead of using the new weights."""
    w = tt.tensor([1.0, 2.0], device=device, requires_grad=True)
    opt = tt.optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    loss = (w * w * w).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="changed in place"):
        loss.backward()
