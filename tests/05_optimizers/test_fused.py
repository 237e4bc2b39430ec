"""Adam(..., fused=True): the lesson's update as one compiled pass (module 05's provided code). It must
give the lesson's result to the last bit, keep the same state, and refuse what it cannot run."""

import importlib.util

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.optim import Adam, AdamW

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="fused=True needs numba")

OPTIONS = {
    "adam": (Adam, {}),
    "adamw": (AdamW, dict(weight_decay=0.1)),
    "adam-l2": (Adam, dict(weight_decay=0.05)),
    "maximize": (AdamW, dict(maximize=True, weight_decay=0.01)),
    "amsgrad": (Adam, dict(amsgrad=True, betas=(0.8, 0.5), eps=1e-6)),
    "amsgrad-l2-maximize": (Adam, dict(amsgrad=True, weight_decay=0.02, maximize=True)),
}


@pytest.fixture
def kernel_runs(monkeypatch):
    """What each call of the fused update returned (True: the kernel ran; False: the lesson's path did)."""
    import tinytorch.optim.optimizer as optimizer_module

    runs, update = [], optimizer_module._fused_adam_update

    def recorded(*args):
        runs.append(update(*args))
        return runs[-1]
    monkeypatch.setattr(optimizer_module, "_fused_adam_update", recorded)
    return runs


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [tt.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
            for shape in [(33, 17), (17,), (), (4, 5, 6)]]


def _run(make, fused, dtype, steps=4):
    """Parameters and optimizer after `steps` steps on gradients that change sign and size."""
    params = _params(dtype)
    opt = make(params, fused)
    rng = np.random.default_rng(1)
    for step in range(steps):
        for p in params:
            p.grad = tt.tensor((rng.standard_normal(p.shape) * 10.0 ** (step - 2)).astype(dtype))
        opt.step()
    return params, opt


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_fused_equals_the_lesson_to_the_last_bit(name, dtype, kernel_runs):
    cls, options = OPTIONS[name]
    make = lambda params, fused: cls(params, lr=0.01, fused=fused, **options)  # noqa: E731
    lesson, lesson_opt = _run(make, False, dtype)
    fused, fused_opt = _run(make, True, dtype)
    assert fused_opt.fused and not lesson_opt.fused
    assert kernel_runs == [True] * 16, "4 steps of 4 parameters, each through the kernel"
    for i, (a, b) in enumerate(zip(fused, lesson)):
        assert a.data.dtype == dtype and a.data.shape == b.data.shape
        np.testing.assert_array_equal(a.data, b.data, err_msg=f"{name}: parameter {i} after 4 steps")
        want, got = lesson_opt.state[b], fused_opt.state[a]
        assert set(got) == set(want) and got["step"] == want["step"] == 4
        for key in set(want) - {"step"}:
            assert got[key].dtype == dtype
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name}: state {key!r} of parameter {i}")


@needs_numba
def test_fused_updates_in_place_and_reads_any_gradient_layout():
    p = tt.tensor(np.ones((4, 6), np.float32), requires_grad=True)
    q = tt.tensor(np.ones((4, 6), np.float32), requires_grad=True)
    fused, lesson = AdamW([p], lr=0.1, fused=True), AdamW([q], lr=0.1)
    grad = np.arange(24, dtype=np.float32).reshape(6, 4).T  # a transposed (non-contiguous) gradient
    p.grad, q.grad = tt.tensor(grad), tt.tensor(grad.copy())
    fused.step()
    lesson.step()
    arrays = [p.data, fused.state[p]["exp_avg"], fused.state[p]["exp_avg_sq"]]
    addresses = [a.ctypes.data for a in arrays]
    p.grad, q.grad = tt.tensor(grad), tt.tensor(grad.copy())
    fused.step()
    lesson.step()
    assert [a.ctypes.data for a in (p.data, fused.state[p]["exp_avg"], fused.state[p]["exp_avg_sq"])] == addresses
    np.testing.assert_array_equal(p.data, q.data)


@needs_numba
def test_a_non_contiguous_parameter_takes_the_lesson_path():
    base = np.ones((6, 4), np.float32)
    p = tt.tensor(base.copy(), requires_grad=True)
    p.data = p.data.T  # a view the kernel cannot walk as one block
    q = tt.tensor(np.ones((4, 6), np.float32), requires_grad=True)
    fused, lesson = Adam([p], lr=0.1, fused=True), Adam([q], lr=0.1)
    for _ in range(2):
        p.grad, q.grad = tt.tensor(np.full((4, 6), 0.5, np.float32)), tt.tensor(np.full((4, 6), 0.5, np.float32))
        fused.step()
        lesson.step()
    np.testing.assert_array_equal(p.data, q.data)


@needs_numba
def test_a_broadcast_gradient_or_state_on_another_layout_takes_the_lesson_path(kernel_runs):
    """The kernel walks p, its gradient and its state as flat blocks of p's size: anything else is the lesson's."""
    p, q = (tt.tensor(np.ones(50, np.float32), requires_grad=True) for _ in range(2))
    fused, lesson = AdamW([p], lr=0.1, fused=True), AdamW([q], lr=0.1)
    p.grad, q.grad = tt.tensor(np.float32(0.5)), tt.tensor(np.float32(0.5))  # a 0-d gradient, broadcast
    fused.step()
    lesson.step()
    np.testing.assert_array_equal(p.data, q.data)
    r, s = (tt.tensor(np.ones((6, 4), np.float32).T, requires_grad=True) for _ in range(2))  # transposed at step 1
    fused, lesson = Adam([r], lr=0.1, fused=True), Adam([s], lr=0.1)
    for step in range(3):
        if step == 1:
            r.data, s.data = np.ascontiguousarray(r.data), np.ascontiguousarray(s.data)  # its state stays transposed
        r.grad, s.grad = (tt.tensor(np.full((4, 6), 0.5 + step, np.float32)) for _ in range(2))
        fused.step()
        lesson.step()
    np.testing.assert_array_equal(r.data, s.data)
    np.testing.assert_array_equal(fused.state[r]["exp_avg"], lesson.state[s]["exp_avg"])
    assert kernel_runs == [False] * 4


@needs_numba
def test_fused_state_dict_continues_in_a_lesson_optimizer():
    make = lambda params, fused: AdamW(params, lr=0.01, amsgrad=True, fused=fused)  # noqa: E731
    fused, fused_opt = _run(make, True, np.float32, steps=2)
    lesson, lesson_opt = _run(make, False, np.float32, steps=4)
    copies = [tt.tensor(p.data.copy(), requires_grad=True) for p in fused]
    resumed = make(copies, False)
    resumed.load_state_dict(fused_opt.state_dict())
    assert not resumed.fused, "fused is the optimizer's own choice, not part of its state"
    rng = np.random.default_rng(1)
    for step in range(4):
        grads = [(rng.standard_normal(p.shape) * 10.0 ** (step - 2)).astype(np.float32) for p in copies]
        if step < 2:
            continue  # the two steps the fused optimizer took
        for p, g in zip(copies, grads):
            p.grad = tt.tensor(g)
        resumed.step()
    for a, b in zip(copies, lesson):
        np.testing.assert_array_equal(a.data, b.data)


def test_fused_refuses_what_it_cannot_run(monkeypatch):
    p = tt.tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(TypeError, match="fused must be True, False or None, got 'yes'"):
        Adam([p], fused="yes")
    assert Adam([p], fused=None).fused is False and AdamW([p], fused=False).fused is False
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "numba" else
                        real_find_spec(name, *a))
    with pytest.raises(ImportError, match=r"AdamW\(fused=True\) compiles its update with numba, which is not "
                                          r"installed: pip install 'tinytorch\[fused\]'"):
        AdamW([p], fused=True)


@needs_numba
def test_fused_refuses_other_dtypes_and_devices():
    ok = tt.tensor(np.ones(3, np.float32), requires_grad=True)
    half = tt.tensor(np.ones(3, np.float16), requires_grad=True)
    with pytest.raises(ValueError, match="fused=True runs on CPU float32/float64 parameters, but parameter 1 is "
                                         "float16 on cpu"):
        AdamW([ok, half], fused=True)
    opt = AdamW([ok], fused=True)
    ok._device = tt.device("cuda:0")  # moved after the optimizer was made
    ok.grad = tt.tensor(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="but a parameter is float32 on cuda:0"):
        opt.step()
