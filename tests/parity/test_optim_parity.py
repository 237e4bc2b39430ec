"""Optimizers, schedulers and clip_grad_norm_ against PyTorch: 50 training steps of a small MLP
from the same initial weights, on the same data, each framework computing its own loss and
gradients. Parameters must follow PyTorch's trajectory to 1e-5 (relative, float32)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402
from tinytorch import nn  # noqa: E402
from tinytorch.nn.functional import cross_entropy  # noqa: E402
from tinytorch.nn.utils import clip_grad_norm_  # noqa: E402
from tinytorch.optim import SGD, Adam, AdamW, RMSprop  # noqa: E402
from tinytorch.optim import lr_scheduler as ours_sched  # noqa: E402

pytestmark = pytest.mark.parity
RTOL, ATOL = 1e-5, 1e-6
STEPS = 50
T = torch.optim

# (name, optimizer class pair, kwargs, scheduler builder taking (module, optimizer))
CASES = [
    ("sgd-step", SGD, T.SGD, dict(lr=0.1), lambda s, o: s.StepLR(o, step_size=10, gamma=0.5)),
    ("sgd-momentum-cosine", SGD, T.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3),
     lambda s, o: s.CosineAnnealingLR(o, T_max=STEPS, eta_min=1e-3)),
    ("sgd-nesterov-linear", SGD, T.SGD, dict(lr=0.05, momentum=0.9, nesterov=True),
     lambda s, o: s.LinearLR(o, start_factor=0.5, total_iters=20)),
    ("sgd-dampening-maximize-lambda", SGD, T.SGD,
     dict(lr=0.02, momentum=0.5, dampening=0.2, maximize=True),
     lambda s, o: s.LambdaLR(o, lambda e: 1.0 / (1 + 0.1 * e))),
    ("adam-warmup-cosine", Adam, T.Adam, dict(lr=3e-3),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.1, total_iters=10),
                                     s.CosineAnnealingLR(o, T_max=STEPS - 10)], milestones=[10])),
    ("adam-l2-amsgrad-step", Adam, T.Adam,
     dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2, amsgrad=True),
     lambda s, o: s.StepLR(o, step_size=15, gamma=0.3)),
    ("adamw-warmup-cosine", AdamW, T.AdamW, dict(lr=5e-3, weight_decay=0.1),
     lambda s, o: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.2, total_iters=5),
                                     s.CosineAnnealingLR(o, T_max=STEPS - 5, eta_min=1e-4)], milestones=[5])),
    ("adamw-amsgrad-linear", AdamW, T.AdamW, dict(lr=5e-3, amsgrad=True),
     lambda s, o: s.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=STEPS)),
    ("rmsprop-cosine", RMSprop, T.RMSprop, dict(lr=1e-3),
     lambda s, o: s.CosineAnnealingLR(o, T_max=STEPS)),
    ("rmsprop-centered-momentum-step", RMSprop, T.RMSprop,
     dict(lr=1e-3, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3),
     lambda s, o: s.StepLR(o, step_size=20, gamma=0.5)),
]


def torch_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16),
                               torch.nn.ReLU(), torch.nn.Linear(16, 3))


def our_copy(ref, device):
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    for ours, theirs in zip(model.parameters(), ref.parameters()):
        ours.data[...] = theirs.detach().numpy()
    return model.to(device)


def data(device):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    return (tt.tensor(x, device=device), tt.tensor(y, device=device)), (torch.tensor(x), torch.tensor(y))


def compare(ours, theirs, what):
    for i, (a, b) in enumerate(zip(ours.parameters(), theirs.parameters())):
        np.testing.assert_allclose(a.cpu().numpy(), b.detach().numpy(), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{what}: parameter {i}")


@pytest.mark.parametrize("name, ours_cls, torch_cls, kwargs, schedule", CASES, ids=[c[0] for c in CASES])
def test_trajectory_matches_pytorch(name, ours_cls, torch_cls, kwargs, schedule, device):
    ref = torch_mlp()
    model = our_copy(ref, device)
    # two groups, as in real training: the biases get their own (smaller) learning rate
    def groups(m):
        params = list(m.parameters())
        return [{"params": params[0::2]}, {"params": params[1::2], "lr": kwargs["lr"] / 2}]

    opt, ref_opt = ours_cls(groups(model), **kwargs), torch_cls(groups(ref), **kwargs)
    sched, ref_sched = schedule(ours_sched, opt), schedule(T.lr_scheduler, ref_opt)
    (x, y), (tx, ty) = data(device)
    for step in range(STEPS):
        opt.zero_grad()
        ref_opt.zero_grad()
        loss = cross_entropy(model(x), y)
        ref_loss = torch.nn.functional.cross_entropy(ref(tx), ty)
        loss.backward()
        ref_loss.backward()
        opt.step()
        ref_opt.step()
        sched.step()
        ref_sched.step()
        np.testing.assert_allclose(sched.get_last_lr(), ref_sched.get_last_lr(), rtol=1e-12,
                                   err_msg=f"{name}: learning rates differ at step {step}")
        compare(model, ref, f"{name}, step {step}")
    np.testing.assert_allclose(loss.item(), ref_loss.item(), rtol=RTOL)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("max_norm", [0.05, 100.0])
def test_clip_grad_norm_matches_pytorch(norm_type, max_norm, device):
    ref = torch_mlp()
    model = our_copy(ref, device)
    (x, y), (tx, ty) = data(device)
    cross_entropy(model(x), y).backward()
    torch.nn.functional.cross_entropy(ref(tx), ty).backward()
    total = clip_grad_norm_(model.parameters(), max_norm, norm_type=norm_type)
    ref_total = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm, norm_type=norm_type)
    np.testing.assert_allclose(total.item(), ref_total.item(), rtol=RTOL)
    for a, b in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), rtol=RTOL, atol=1e-7)


def test_state_dict_layout_matches_pytorch(device):
    ref = torch_mlp()
    model = our_copy(ref, device)
    opt, ref_opt = AdamW(model.parameters(), lr=1e-3), T.AdamW(ref.parameters(), lr=1e-3)
    (x, y), (tx, ty) = data(device)
    cross_entropy(model(x), y).backward()
    torch.nn.functional.cross_entropy(ref(tx), ty).backward()
    opt.step()
    ref_opt.step()
    ours, theirs = opt.state_dict(), ref_opt.state_dict()
    assert ours["param_groups"][0]["params"] == theirs["param_groups"][0]["params"]
    assert set(ours["state"]) == set(theirs["state"])
    assert set(ours["state"][0]) == set(theirs["state"][0])
    np.testing.assert_allclose(tt.tensor(ours["state"][0]["exp_avg_sq"]).cpu().numpy(),
                               theirs["state"][0]["exp_avg_sq"].numpy(), rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("norm_type", [0.0, 2.0, 3.0])
def test_clip_grad_norm_float16_and_norm_zero_match_pytorch(norm_type, device):
    grads = [np.full(1000, 10.0, np.float16), np.array([0.0, -3.0, 0.5], np.float16), np.zeros(2, np.float16)]
    ours = [tt.tensor(np.zeros_like(g), device=device, requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float16, requires_grad=True) for g in grads]
    for a, b, g in zip(ours, theirs, grads):
        a.grad, b.grad = tt.tensor(g, device=device), torch.tensor(g)
    total = clip_grad_norm_(ours, 1.0, norm_type=norm_type)
    ref_total = torch.nn.utils.clip_grad_norm_(theirs, 1.0, norm_type=norm_type)
    assert total.dtype == tt.float16
    np.testing.assert_allclose(total.item(), ref_total.item(), rtol=1e-3)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), rtol=2e-3, atol=1e-4)


def test_resume_with_the_optimizer_loaded_first_matches_pytorch(device):
    def run(opt_cls, sched_mod, param):
        opt = opt_cls([param()], lr=1.0)
        sched = sched_mod.CosineAnnealingLR(opt, T_max=8)
        for _ in range(3):
            opt.step()
            sched.step()
        opt2 = opt_cls([param()], lr=1.0)
        opt2.load_state_dict(opt.state_dict())
        sched2 = sched_mod.CosineAnnealingLR(opt2, T_max=8)
        sched2.load_state_dict(sched.state_dict())
        return opt2.param_groups[0]["lr"], sched2.get_last_lr()

    ours = run(SGD, ours_sched, lambda: tt.tensor([0.0], device=device, requires_grad=True))
    theirs = run(T.SGD, T.lr_scheduler, lambda: torch.zeros(1, requires_grad=True))
    np.testing.assert_allclose(ours[0], theirs[0], rtol=RTOL)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=RTOL)
