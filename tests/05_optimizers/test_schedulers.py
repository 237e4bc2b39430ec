"""Learning-rate schedulers: values per epoch, groups, initial_lr, SequentialLR, state_dict."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.optim import SGD, AdamW
from tinytorch.optim.lr_scheduler import (
    CosineAnnealingLR, LambdaLR, LinearLR, LRScheduler, SequentialLR, StepLR,
)


def optimizer(device, lrs=(0.1,)):
    groups = [{"params": [tt.tensor([1.0], device=device, requires_grad=True)], "lr": lr} for lr in lrs]
    return SGD(groups, lr=lrs[0])


def trace(scheduler, epochs):
    """get_last_lr() for epochs 0..epochs-1 (epoch 0 is set by the constructor)."""
    out = []
    for _ in range(epochs):
        out.append(scheduler.get_last_lr())
        scheduler.optimizer.step()
        scheduler.step()
    return np.array(out)


def test_step_lr(device):
    got = trace(StepLR(optimizer(device, (0.1, 1.0)), step_size=3, gamma=0.5), 8)
    want = [0.1 * 0.5 ** (e // 3) for e in range(8)]
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], np.array(want) * 10, rtol=1e-12)


def test_lambda_lr_per_group_and_state_dict(device):
    opt = optimizer(device, (0.1, 0.2))
    sched = LambdaLR(opt, [lambda e: 0.9 ** e, lambda e: 1.0 / (e + 1)])
    got = trace(sched, 4)
    np.testing.assert_allclose(got[:, 0], [0.1 * 0.9 ** e for e in range(4)])
    np.testing.assert_allclose(got[:, 1], [0.2 / (e + 1) for e in range(4)])
    assert "lr_lambdas" not in sched.state_dict(), "functions are not saved"
    with pytest.raises(ValueError, match="one per param group"):
        LambdaLR(opt, [lambda e: 1.0])


def test_linear_lr(device):
    got = trace(LinearLR(optimizer(device, (0.3,)), start_factor=0.1, end_factor=1.0, total_iters=4), 7)
    np.testing.assert_allclose(got[:, 0], [0.03, 0.0975, 0.165, 0.2325, 0.3, 0.3, 0.3])
    default = LinearLR(optimizer(device, (0.3,)))
    assert math.isclose(default.get_last_lr()[0], 0.1), "start_factor defaults to 1/3"
    with pytest.raises(ValueError, match="start_factor"):
        LinearLR(optimizer(device), start_factor=0.0)


def test_cosine_annealing(device):
    got = trace(CosineAnnealingLR(optimizer(device, (1.0,)), T_max=10, eta_min=0.1), 21)
    want = [0.1 + 0.9 * (1 + math.cos(math.pi * e / 10)) / 2 for e in range(21)]
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12)
    assert math.isclose(got[10, 0], 0.1) and math.isclose(got[20, 0], 1.0), "past T_max the cosine goes back up"


def test_initial_lr_and_base_lrs(device):
    opt = optimizer(device, (0.1, 0.01))
    sched = StepLR(opt, step_size=1, gamma=0.5)
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.01]
    assert sched.base_lrs == [0.1, 0.01] and sched.last_epoch == 0
    sched.step()
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == 0.05
    again = StepLR(opt, step_size=1, gamma=0.5)  # a second scheduler keeps the saved initial_lr
    assert again.base_lrs == [0.1, 0.01]
    with pytest.raises(KeyError, match="initial_lr"):
        StepLR(optimizer(device), step_size=1, last_epoch=3)
    with pytest.raises(TypeError, match="needs an Optimizer"):
        StepLR([1, 2], step_size=1)


def test_warmup_then_cosine(device):
    opt = AdamW([tt.tensor([1.0], device=device, requires_grad=True)], lr=1.0)
    warmup = LinearLR(opt, start_factor=0.25, total_iters=3)
    cosine = CosineAnnealingLR(opt, T_max=4, eta_min=0.0)
    sched = SequentialLR(opt, [warmup, cosine], milestones=[3])
    got = trace(sched, 9)[:, 0]
    want = [0.25, 0.5, 0.75] + [(1 + math.cos(math.pi * e / 4)) / 2 for e in range(6)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_sequential_checks(device):
    opt = optimizer(device)
    a, b = StepLR(opt, 2), StepLR(opt, 3)
    with pytest.raises(ValueError, match="milestone"):
        SequentialLR(opt, [a, b], milestones=[2, 4])
    with pytest.raises(ValueError, match="different optimizer"):
        SequentialLR(opt, [a, StepLR(optimizer(device), 2)], milestones=[2])


@pytest.mark.parametrize("build", [
    lambda opt: StepLR(opt, step_size=2, gamma=0.3),
    lambda opt: CosineAnnealingLR(opt, T_max=7, eta_min=0.01),
    lambda opt: SequentialLR(opt, [LinearLR(opt, 0.2, total_iters=3), CosineAnnealingLR(opt, T_max=6)], [3]),
])
def test_state_dict_resume(build, device):
    opt = optimizer(device, (0.5, 0.05))
    sched = build(opt)
    trace(sched, 4)
    saved_sched, saved_opt = sched.state_dict(), opt.state_dict()
    rest = trace(sched, 5)

    opt2 = optimizer(device, (0.5, 0.05))
    sched2 = build(opt2)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    np.testing.assert_array_equal(trace(sched2, 5), rest)


def test_base_class_needs_get_lr(device):
    with pytest.raises(NotImplementedError, match="get_lr"):
        LRScheduler(optimizer(device))


def test_two_schedulers_on_one_optimizer_are_refused(device):
    # PyTorch chains them (each multiplies the current rate); our closed forms would overwrite each other
    opt = optimizer(device)
    warm = LinearLR(opt, start_factor=0.5, total_iters=3)
    cosine = CosineAnnealingLR(opt, T_max=4)  # sets epoch 0's rate, 0.1, over the warm-up's 0.05
    opt.step()
    with pytest.raises(RuntimeError, match=r"LinearLR.*param_groups\[0\]\['lr'\].*SequentialLR.*LambdaLR"):
        warm.step()
    cosine.step()  # the rate is the one it set: it goes on
    assert np.isclose(opt.param_groups[0]["lr"], 0.1 * (1 + math.cos(math.pi / 4)) / 2)


def test_a_changed_rate_is_not_overwritten_silently(device):
    opt = optimizer(device)
    sched = CosineAnnealingLR(opt, T_max=4)
    opt.param_groups[0]["lr"] = 0.05
    with pytest.raises(RuntimeError, match="base_lrs"):
        sched.step()
    sched.base_lrs = [0.05]  # the way to rescale a closed-form schedule
    opt.param_groups[0]["lr"] = sched.get_last_lr()[0]
    trace(sched, 3)
    assert np.isclose(opt.param_groups[0]["lr"], 0.05 * (1 + math.cos(math.pi * 3 / 4)) / 2)


def test_resume_in_any_order_sets_the_saved_rate(device):
    opt = optimizer(device, (1.0,))
    sched = CosineAnnealingLR(opt, T_max=8)
    trace(sched, 3)
    opt2 = optimizer(device, (1.0,))
    opt2.load_state_dict(opt.state_dict())  # the optimizer first, then a new scheduler over it
    sched2 = CosineAnnealingLR(opt2, T_max=8)
    sched2.load_state_dict(sched.state_dict())
    assert opt2.param_groups[0]["lr"] == sched2.get_last_lr()[0] == opt.param_groups[0]["lr"]
    np.testing.assert_array_equal(trace(sched2, 4), trace(sched, 4))


@pytest.mark.parametrize("start", [0.5, 1.0])
def test_linear_lr_with_no_iterations_stays_at_start_factor(start, device):
    sched = LinearLR(optimizer(device, (1.0,)), start_factor=start, end_factor=0.8, total_iters=0)
    np.testing.assert_allclose(trace(sched, 3)[:, 0], [start] * 3)  # as PyTorch


def test_a_rate_the_optimizer_loaded_is_not_taken_for_another_schedulers(device):
    """Resuming the optimizer alone (a checkpoint saved without a scheduler): its rate is a checkpoint's, and
    the scheduler goes on with its own schedule instead of refusing."""
    opt = optimizer(device, (1.0,))
    trace(CosineAnnealingLR(opt, T_max=8), 3)
    opt2 = optimizer(device, (1.0,))
    sched2 = CosineAnnealingLR(opt2, T_max=8)
    opt2.load_state_dict(opt.state_dict())
    sched2.step()
    assert opt2.param_groups[0]["lr"] == sched2.get_last_lr()[0]
    opt2.param_groups[0]["lr"] = 0.5  # a change by hand after that is still refused
    with pytest.raises(RuntimeError, match="base_lrs"):
        sched2.step()


def test_a_nan_rate_is_not_a_change(device):
    opt = optimizer(device)
    sched = LambdaLR(opt, lambda epoch: math.nan if epoch >= 1 else 1.0)
    sched.step()
    sched.step()  # nan != nan, but nothing changed the rate
    assert math.isnan(opt.param_groups[0]["lr"])
