"""ThreadedStep: the lesson's train_step with each batch split over CPU threads, checked against it."""

import importlib.util
import math
import threading
import time

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.core.tensor import _autocast_state
from tinytorch.training import ThreadedStep, Trainer, train_step



def params(model):
    return [p.data.copy() for p in model.parameters()]


def batches(n_micro, rows, seed=0):
    rng = np.random.default_rng(seed)  # as conftest's make_data: 5 features, 3 classes
    x = rng.standard_normal((n_micro * rows, 5)).astype(np.float32)
    y = rng.integers(0, 3, n_micro * rows)
    return [(tt.tensor(x[i * rows:(i + 1) * rows]), tt.tensor(y[i * rows:(i + 1) * rows])) for i in range(n_micro)]


@pytest.mark.parametrize("threads, rows", [(2, 8), (2, 7), (3, 8), (4, 2)])
def test_equals_train_step(threads, rows, cpu_parts):
    """Same losses and same weights as the lesson's train_step, over accumulation, clipping and AdamW."""
    parts = cpu_parts
    model, opt, loss, _, _ = parts(optimizer="adamw", lr=0.05)
    twin, twin_opt, _, _, _ = parts(optimizer="adamw", lr=0.05)
    step = ThreadedStep(twin, threads)
    for i in range(3):
        micro = batches(2, rows, seed=i)
        want = train_step(model, loss, opt, micro, clip_grad_norm=0.5)
        got = step(loss, twin_opt, micro, clip_grad_norm=0.5)
        assert got == pytest.approx(want, rel=1e-5), f"step {i}: mean loss {got}, train_step gave {want}"
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg="weights after threaded steps != train_step's")
    step.close()


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="fused=True needs numba")
def test_fused_adamw_updates_in_the_threads_as_the_lessons(cpu_parts, monkeypatch):
    """The threads' share of AdamW runs the fused kernel (it releases Python's lock): same weights."""
    import tinytorch.optim.optimizer as optimizer_module

    fused_threads, kernel = set(), optimizer_module._fused_adam_update

    def counted(*args):
        ran = kernel(*args)
        if ran:  # the kernel itself ran, not the lesson's path
            fused_threads.add(threading.get_ident())
        return ran
    monkeypatch.setattr(optimizer_module, "_fused_adam_update", counted)
    model, _, loss, _, _ = cpu_parts(optimizer="adamw", lr=0.05)
    twin, _, _, _, _ = cpu_parts(optimizer="adamw", lr=0.05)
    opt, twin_opt = tt.optim.AdamW(model.parameters(), lr=0.05), tt.optim.AdamW(twin.parameters(), lr=0.05, fused=True)
    step = ThreadedStep(twin, 2)
    for i in range(3):
        micro = batches(1, 8, seed=i)
        train_step(model, loss, opt, micro)
        step(loss, twin_opt, micro)
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg="fused AdamW in the threads != the lesson's")
    assert all(twin_opt.state[p]["step"] == 3 for p in twin.parameters())
    assert len(fused_threads) == 2, "both threads' parameters go through the fused kernel"
    step.close()


def test_one_row_batches_and_the_gradients_left(cpu_parts):
    """Fewer rows than threads: only as many shares as rows; the model keeps whole gradients, replicas none."""
    parts = cpu_parts
    model, opt, loss, _, _ = parts(lr=0.1)
    twin, twin_opt, _, _, _ = parts(lr=0.1)
    step = ThreadedStep(twin, 3)
    micro = batches(1, 1)
    assert step(loss, twin_opt, micro) == pytest.approx(train_step(model, loss, opt, micro), rel=1e-6)
    for a, b in zip(twin.parameters(), model.parameters()):
        np.testing.assert_allclose(a.grad.data, b.grad.data, rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for replica in step._replicas for p in replica.parameters())


def test_tied_weights_stay_tied_and_match(cpu_parts):
    """A weight used twice (tied) gets both uses' gradient, as in train_step."""
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(5, 5, bias=False)
            self.out = nn.Linear(5, 3)
            self.out2 = nn.Linear(5, 5, bias=False)
            self.out2.weight = self.inp.weight

        def forward(self, x):
            return self.out(self.out2(self.inp(x).relu()))

    tt.manual_seed(0)
    model = Tied()
    tt.manual_seed(0)
    twin = Tied()
    loss = nn.functional.cross_entropy
    opt, twin_opt = tt.optim.SGD(model.parameters(), lr=0.1), tt.optim.SGD(twin.parameters(), lr=0.1)
    step = ThreadedStep(twin, 2)
    assert step._replicas[0].out2.weight is step._replicas[0].inp.weight, "the replica lost the tie"
    for i in range(2):
        micro = batches(1, 8, seed=i)
        train_step(model, loss, opt, micro)
        step(loss, twin_opt, micro)
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_replicas_follow_rebound_weights(cpu_parts):
    """The model's parameters may get new arrays (load_state_dict, an optimizer written another way): the
    next step computes with those, not with the arrays the replicas were made with."""
    parts = cpu_parts
    model, opt, loss, _, _ = parts()
    twin, twin_opt, _, _, _ = parts(seed=1)
    step = ThreadedStep(twin, 2)
    step(loss, twin_opt, batches(1, 8))
    for mine, theirs in zip(twin.parameters(), model.parameters()):  # new arrays, as load_state_dict may give
        mine.data = theirs.data.copy()
    micro = batches(1, 8, seed=5)
    assert step(loss, twin_opt, micro) == pytest.approx(train_step(model, loss, opt, micro), rel=1e-6)
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_replaced_layer_gets_new_replicas(cpu_parts):
    """Replicas are copies: after a layer of the model is replaced, the next step must not use the old one."""
    model, opt, loss, _, _ = cpu_parts()
    twin, twin_opt, _, _, _ = cpu_parts()
    step = ThreadedStep(twin, 2)
    step(loss, twin_opt, batches(1, 8))
    train_step(model, loss, opt, batches(1, 8))
    tt.manual_seed(3)
    model.add_module("2", nn.Linear(16, 3))
    tt.manual_seed(3)
    twin.add_module("2", nn.Linear(16, 3))
    opt, twin_opt = tt.optim.SGD(model.parameters(), lr=0.1), tt.optim.SGD(twin.parameters(), lr=0.1)
    micro = batches(1, 8, seed=1)
    assert step(loss, twin_opt, micro) == pytest.approx(train_step(model, loss, opt, micro), rel=1e-6)
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_does_not_depend_on_thread_timing(cpu_parts):
    """Each share draws from its own generator, seeded from the default one: which thread draws its
    dropout mask first (here forced both ways) changes nothing."""
    class Late(nn.Module):  # holds back the forward of the thread it names, so the other draws first
        def __init__(self, late_in_main):
            super().__init__()
            self.late_in_main = late_in_main

        def forward(self, x):
            if (threading.current_thread() is threading.main_thread()) == self.late_in_main:
                time.sleep(0.05)
            return x

    runs = []
    for late_in_main in (True, False):
        model, opt, loss, _, _ = cpu_parts(dropout=0.5)
        model = nn.Sequential(Late(late_in_main), *model)
        opt = tt.optim.SGD(model.parameters(), lr=0.1)
        tt.manual_seed(7)
        step = ThreadedStep(model, 2)
        losses = [step(loss, opt, batches(1, 16, seed=i)) for i in range(2)]
        runs.append((losses, params(model)))
        step.close()
    assert runs[0][0] == runs[1][0], "the order the threads ran in changed the losses"
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


def test_non_finite_loss_changes_nothing(cpu_parts):
    model, opt, loss, _, _ = cpu_parts(lr=0.1)
    before = params(model)
    step = ThreadedStep(model, 2)
    value = step(lambda out, t: loss(out, t) * float("nan"), opt, batches(1, 8))
    assert math.isnan(value)
    assert all(p.grad is None for p in model.parameters()), "a nan step must leave no gradient behind"
    for a, b in zip(params(model), before):
        np.testing.assert_array_equal(a, b)


def test_an_error_in_any_thread_is_raised_and_the_step_still_works(cpu_parts):
    model, opt, loss, _, _ = cpu_parts()
    calls = []

    class FailsInThePool(nn.Module):
        def forward(self, x):
            calls.append(threading.current_thread().name)
            if threading.current_thread() is not threading.main_thread() and len(calls) <= 2:
                raise ValueError("bad block")
            return x

    model = nn.Sequential(FailsInThePool(), *model)
    step = ThreadedStep(model, 2)
    with pytest.raises(ValueError, match="bad block"):
        step(loss, opt, batches(1, 8))
    assert len(calls) == 2, "both blocks ran before the error was raised"
    assert math.isfinite(step(loss, opt, batches(1, 8)))


def test_threads_see_the_callers_grad_and_autocast_modes(cpu_parts):
    """Grad mode and autocast are per thread: the pool's threads must run in the caller's."""
    model, opt, loss, _, _ = cpu_parts()
    seen = []

    def passthrough(name, fn, args, kwargs):
        seen.append(threading.current_thread() is threading.main_thread())
        return fn(*args, **kwargs)
    step = ThreadedStep(model, 2)
    _autocast_state.run = passthrough
    try:
        step(loss, opt, batches(1, 8))
    finally:
        _autocast_state.run = None
    assert True in seen and False in seen, "the pool's thread ran its share without the caller's autocast"


def test_an_optimizer_with_its_own_step_is_called_once(cpu_parts):
    model, _, loss, _, _ = cpu_parts()

    class Counting(tt.optim.SGD):
        steps = 0

        def step(self, closure=None):
            Counting.steps += 1
            return super().step(closure)
    ThreadedStep(model, 2)(loss, Counting(model.parameters(), lr=0.1), batches(1, 8))
    assert Counting.steps == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad, cpu_parts):
    model, opt, loss, loader, _ = cpu_parts()
    with pytest.raises(ValueError, match="threads"):
        ThreadedStep(model, bad)
    with pytest.raises(ValueError, match="threads"):
        Trainer(model, opt, loss, loader, threads=bad, quiet=True)


def test_threads_on_a_gpu_are_refused(cpu_parts):
    model, opt, loss, loader, _ = cpu_parts()
    with pytest.raises(ValueError, match="CPU threads"):
        Trainer(model, opt, loss, loader, threads=2, device="cuda", quiet=True)


def test_trainer_with_threads_matches_one_thread(cpu_parts):
    parts = cpu_parts
    runs = []
    for threads in (1, 2):
        model, opt, loss, loader, val = parts(n=48, batch_size=12, optimizer="adamw", lr=0.01)
        history = Trainer(model, opt, loss, loader, val_loader=val, accum_steps=2, clip_grad_norm=1.0,
                          threads=threads, quiet=True).fit(epochs=2)
        runs.append((history.losses, [r["val_loss"] for r in history.eval], params(model)))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    np.testing.assert_allclose(runs[1][1], runs[0][1], rtol=1e-5)
    for a, b in zip(runs[1][2], runs[0][2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_any_loss_sees_the_whole_batch(cpu_parts):
    """The loss is computed on the joined output: a sum, or a mean that skips ignored targets, is the
    whole batch's, not an average of the blocks'."""
    for loss in (lambda out, t: nn.functional.cross_entropy(out, t, reduction="sum"),
                 lambda out, t: nn.functional.cross_entropy(out, t, ignore_index=0)):
        model, opt, _, _, _ = cpu_parts(lr=0.01)
        twin, twin_opt, _, _, _ = cpu_parts(lr=0.01)
        micro = batches(1, 9, seed=3)
        want = train_step(model, loss, opt, micro)
        got = ThreadedStep(twin, 2)(loss, twin_opt, micro)
        assert got == pytest.approx(want, rel=1e-5)
        for a, b in zip(params(twin), params(model)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_split_model_output_keeps_its_structure_and_backpropagates(cpu_parts):
    """(tensor, None) outputs, as GPT's (logits, loss): joined tensor first, None kept; its backward
    fills the model's gradients as a plain backward would."""
    model, _, loss, _, _ = cpu_parts()

    class Pair(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x), None
    pair = Pair(model)
    x, y = batches(1, 10)[0]
    loss(model(x), y).backward()
    want = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    step = ThreadedStep(pair, 2)
    out = step.split_model(x)
    assert out[1] is None and tuple(out[0].shape) == (10, 3)
    loss(out[0], y).backward()
    for p, w in zip(model.parameters(), want):
        np.testing.assert_allclose(p.grad.data, w, rtol=1e-5, atol=1e-7)


def test_split_output_backward_twice_with_retain_graph(cpu_parts):
    """retain_graph=True keeps the blocks' graphs: a second backward adds the same gradients again, as
    on the model itself; without it the second backward is refused."""
    model, _, loss, _, _ = cpu_parts()
    x, y = batches(1, 10)[0]
    loss(model(x), y).backward()
    once = [p.grad.data.copy() for p in model.parameters()]
    model.zero_grad()
    step = ThreadedStep(model, 2)
    total = loss(step.split_model(x), y)
    total.backward(retain_graph=True)
    total.backward()
    for p, w in zip(model.parameters(), once):
        np.testing.assert_allclose(p.grad.data, 2 * w, rtol=1e-5, atol=1e-7,
                                   err_msg="two backward passes through the split output != twice one")
    with pytest.raises(RuntimeError, match="freed"):
        total.backward()
    step.close()


def test_two_outputs_with_gradients_are_refused(cpu_parts):
    model, _, _, _, _ = cpu_parts()

    class Two(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x), self.net(x)
    with pytest.raises(ValueError, match="more than one tensor with a gradient"):
        ThreadedStep(Two(model), 2).split_model(batches(1, 4)[0][0])


def test_inputs_with_extras_are_split_by_their_tensors(cpu_parts):
    """A tuple or dict of inputs is cut along the rows of its tensors; None and numbers go to every block."""
    model, opt, loss, _, _ = cpu_parts()
    twin, twin_opt, _, _, _ = cpu_parts()

    class Takes(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inputs):
            assert inputs["unused"] is None and inputs["scale"] == 2.0
            return self.net(inputs["x"]) * inputs["scale"]
    x, y = batches(1, 8)[0]
    want = train_step(Takes(model), loss, opt, [({"x": x, "unused": None, "scale": 2.0}, y)])
    got = ThreadedStep(Takes(twin), 2)(loss, twin_opt, [({"x": x, "unused": None, "scale": 2.0}, y)])
    assert got == pytest.approx(want, rel=1e-6)
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tensors_of_different_lengths_in_one_batch_are_refused(cpu_parts):
    model, _, _, _, _ = cpu_parts()
    x, _ = batches(1, 8)[0]
    with pytest.raises(ValueError, match="8 rows and another 5|5 rows and another 8"):
        ThreadedStep(model, 2).split_model((x, tt.tensor(np.zeros(5, dtype=np.float32))))


def test_a_threaded_run_with_dropout_resumes_exactly(cpu_parts, tmp_path):
    """The blocks' generators are drawn from the default one, which checkpoints hold: a resumed threaded
    run repeats the uninterrupted one bit for bit, dropout included."""
    from tinytorch.training.progress import read_log

    def trainer(folder, **kwargs):
        model, opt, loss, loader, val = cpu_parts(n=40, batch_size=8, shuffle=True, optimizer="adamw", lr=0.01,
                                                  dropout=0.3)
        return Trainer(model, opt, loss, loader, val_loader=val, accum_steps=2, clip_grad_norm=1.0, eval_every=4,
                       checkpoint_dir=folder / "ckpt", log_path=folder / "log.jsonl", seed=3, quiet=True,
                       threads=2, **kwargs)

    def losses(folder):
        return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss"))
                for r in read_log(folder / "log.jsonl") if r["kind"] in ("train", "eval")]
    trainer(tmp_path / "a").fit(max_steps=10)
    trainer(tmp_path / "b", checkpoint_every=5).fit(max_steps=7)
    (tmp_path / "b/ckpt/step_00000007.safetensors").unlink()
    trainer(tmp_path / "b", resume=True).fit(max_steps=10)
    assert losses(tmp_path / "b") == losses(tmp_path / "a")


def test_a_dropped_step_ends_its_threads(cpu_parts):
    """Nothing the pool keeps may hold the step: once dropped, its executor is collected and its threads end."""
    import gc

    model, opt, loss, _, _ = cpu_parts()
    before = {t for t in threading.enumerate() if t.name.startswith("tinytorch-step")}
    step = ThreadedStep(model, 3)
    step(loss, opt, batches(1, 9))
    del step
    gc.collect()
    deadline = time.monotonic() + 5
    while {t for t in threading.enumerate() if t.name.startswith("tinytorch-step")} - before:
        assert time.monotonic() < deadline, "the pool's threads outlived their ThreadedStep"
        time.sleep(0.01)


def test_sub_module_modes_and_attributes_reach_the_replicas(cpu_parts):
    """A Dropout put in eval mode, or given another rate, inside a training model: the replicas follow,
    as they would in one thread (PyTorch's replicate shares a module's attributes too)."""
    model, opt, loss, _, _ = cpu_parts(dropout=0.5, lr=0.1)  # Linear, ReLU, Dropout, Linear
    twin, twin_opt, _, _, _ = cpu_parts(dropout=0.5, lr=0.1)
    for net in (model, twin):
        net.train()
        net[2].eval()  # that Dropout alone: off
    step = ThreadedStep(twin, 2)
    micro = batches(1, 8)
    assert step(loss, twin_opt, micro) == pytest.approx(train_step(model, loss, opt, micro), rel=1e-6)
    for net in (model, twin):
        net[2].train()
        net[2].p = 0.0  # on, but dropping nothing
    micro = batches(1, 8, seed=2)
    assert step(loss, twin_opt, micro) == pytest.approx(train_step(model, loss, opt, micro), rel=1e-6)
    for a, b in zip(params(twin), params(model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dict_and_namedtuple_outputs_are_joined_whole(cpu_parts):
    from collections import namedtuple

    Out = namedtuple("Out", "logits extra")
    model, _, _, _, _ = cpu_parts()

    class Wrapped(nn.Module):
        def __init__(self, net, kind):
            super().__init__()
            self.net, self.kind = net, kind

        def forward(self, x):
            logits = self.net(x)
            return {"logits": logits, "extra": None} if self.kind == "dict" else Out(logits, None)
    x, _ = batches(1, 16)[0]
    for kind in ("dict", "namedtuple"):
        out = ThreadedStep(Wrapped(model, kind), 2).split_model(x)
        logits = out["logits"] if kind == "dict" else out.logits
        assert tuple(logits.shape) == (16, 3), f"{kind}: the blocks' outputs were not all joined"
        np.testing.assert_allclose(logits.data, model(x).data, rtol=1e-5, atol=1e-6)
        assert (out["extra"] if kind == "dict" else out.extra) is None


def test_split_model_follows_the_model_between_steps(cpu_parts):
    """split_model used on its own (no step around it) sees the model as it is now: its mode and its
    weights after load_state_dict, not the replicas' state from when they were made."""
    model, _, _, _, _ = cpu_parts(dropout=0.5)
    step = ThreadedStep(model, 2)
    x, _ = batches(1, 8)[0]
    model.eval()  # dropout off: split output = model output
    np.testing.assert_allclose(step.split_model(x).data, model(x).data, rtol=1e-6,
                               err_msg="a replica kept training mode (dropout) after model.eval()")
    other, _, _, _, _ = cpu_parts(dropout=0.5)
    for p in other.parameters():
        p.data = p.data + 1.0
    model.load_state_dict(other.state_dict())
    np.testing.assert_allclose(step.split_model(x).data, model(x).data, rtol=1e-6,
                               err_msg="a replica kept the weights it had before load_state_dict")
    step.close()


def test_outputs_without_rows_are_refused_and_arrays_joined(cpu_parts):
    """Arrays in the output are joined like tensors; a scalar or lists of different lengths cannot be split
    by rows and say so instead of returning the first block's."""
    from collections import namedtuple

    model, _, _, _, _ = cpu_parts()
    Pair = namedtuple("Pair", "x extra")

    class Outputs(nn.Module):
        def __init__(self, net, kind):
            super().__init__()
            self.net, self.kind = net, kind

        def forward(self, inputs):
            x = inputs.x if isinstance(inputs, tuple) else inputs
            logits = self.net(x)
            return {"array": (logits, logits.data.argmax(axis=1)),
                    "scalar": (logits, tt.tensor(np.float32(len(x)))),
                    "per-row list": [logits[i] for i in range(len(x))]}[self.kind]
    x, _ = batches(1, 5)[0]
    with tt.no_grad():
        logits, preds = ThreadedStep(Outputs(model, "array"), 2).split_model(Pair(x, None))
        assert preds.shape == (5,) and (preds == model(x).data.argmax(axis=1)).all()
        for kind in ("scalar", "per-row list"):
            with pytest.raises(ValueError, match="cannot be split"):
                ThreadedStep(Outputs(model, kind), 2).split_model(x)


def test_a_model_that_cannot_be_copied_is_refused_clearly(cpu_parts):
    """A model holding something deepcopy cannot copy (a lock here; a process group in FSDP) is refused
    with the reason, not deepcopy's bare error."""
    model, _, _, _, _ = cpu_parts()
    model.lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot be copied .*leave threads at 1"):
        ThreadedStep(model, 2)


def test_ctrl_c_waits_for_the_pool_before_it_is_raised(cpu_parts):
    """Ctrl-C while the main thread waits for the pool: the pool's block still finishes before the
    KeyboardInterrupt leaves the step, so no thread keeps writing into the next one. Events, not a timer,
    order it: the signal goes once both blocks ran their forward, and the pool's block waits until the
    signal arrived (a timer could fire after the whole step on a loaded machine: DID NOT RAISE)."""
    import os
    import signal

    model, opt, loss, _, _ = cpu_parts()
    main_done, pool_inside, delivered, finished = threading.Event(), threading.Event(), threading.Event(), []

    class Last(nn.Module):  # the model's last layer: after it the main thread waits for the pool
        def forward(self, x):
            if threading.current_thread() is threading.main_thread():
                main_done.set()
            else:
                pool_inside.set()
                delivered.wait(10)
                time.sleep(0.1)  # still running after Ctrl-C: the step must wait for it
                finished.append(True)
            return x

    def ctrl_c():
        if main_done.wait(10) and pool_inside.wait(10):
            time.sleep(0.05)  # most likely the main thread waits for the pool by now (before is fine too)
            os.kill(os.getpid(), signal.SIGINT)  # a real signal: it cuts the wait short

    def on_sigint(signum, frame):
        delivered.set()
        raise KeyboardInterrupt
    step = ThreadedStep(nn.Sequential(*model, Last()), 2)
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        threading.Thread(target=ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            step(loss, opt, batches(1, 8))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert finished == [True], "the step returned while its pool thread was still running"


def test_a_closed_step_says_so(cpu_parts):
    model, opt, loss, _, _ = cpu_parts()
    step = ThreadedStep(model, 2)
    step.close()
    with pytest.raises(RuntimeError, match="closed"):
        step(loss, opt, batches(1, 8))


def test_the_pool_runs_in_the_callers_grad_mode(cpu_parts):
    model, _, _, _, _ = cpu_parts()
    seen = []

    class Records(nn.Module):
        def forward(self, x):
            seen.append((threading.current_thread() is threading.main_thread(), tt.is_grad_enabled()))
            return x
    step = ThreadedStep(nn.Sequential(Records(), *model), 2)
    with tt.no_grad():
        out = step.split_model(batches(1, 8)[0][0])
    assert sorted(seen) == [(False, False), (True, False)], seen
    assert not out.requires_grad


def test_a_nan_in_a_later_micro_batch_leaves_no_gradient(cpu_parts):
    model, opt, loss, _, _ = cpu_parts(lr=0.1)
    before = params(model)
    calls = []

    def second_is_nan(out, t):
        calls.append(1)
        return loss(out, t) * (float("nan") if len(calls) == 2 else 1.0)
    value = ThreadedStep(model, 2)(second_is_nan, opt, batches(2, 8))
    assert math.isnan(value)
    assert all(p.grad is None for p in model.parameters()), "the first micro-batch's gradients were left behind"
    for a, b in zip(params(model), before):
        np.testing.assert_array_equal(a, b)


def test_threads_leave_the_default_stream_alone_without_dropout(cpu_parts):
    """A model that draws no random numbers: a split step does not draw from the default generator either,
    so a loader shuffling from it gives the same order, and the run the same losses, as one thread."""
    runs = []
    for threads in (1, 2):
        tt.manual_seed(5)
        model, opt, loss, _, _ = cpu_parts(optimizer="adamw", lr=0.01)
        x = np.random.default_rng(0).standard_normal((24, 5)).astype(np.float32)
        y = np.random.default_rng(1).integers(0, 3, 24)
        from tinytorch.data import DataLoader, TensorDataset
        loader = DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)), batch_size=8, shuffle=True)
        runs.append(Trainer(model, opt, loss, loader, threads=threads, quiet=True).fit(epochs=3).losses)
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5)


def test_fit_ends_its_threads(cpu_parts):
    model, opt, loss, loader, _ = cpu_parts()
    before = {t for t in threading.enumerate() if t.name.startswith("tinytorch-step")}
    trainer = Trainer(model, opt, loss, loader, threads=2, quiet=True)
    trainer.fit(max_steps=2)
    deadline = time.monotonic() + 5
    while {t for t in threading.enumerate() if t.name.startswith("tinytorch-step")} - before:
        assert time.monotonic() < deadline, "fit returned with its step's threads still running"
        time.sleep(0.01)
    trainer.fit(max_steps=4)  # a later fit makes a new pool
    assert trainer.step == 4


def test_a_second_thread_driving_the_same_step_is_refused(cpu_parts):
    """Two threads running one ThreadedStep at once would mix their replicas' gradients: the second is told."""
    model, opt, loss, _, _ = cpu_parts()
    inside, release = threading.Event(), threading.Event()

    class Waits(nn.Module):  # holds the first step inside its forward until the second has tried
        def forward(self, x):
            if threading.current_thread().name == "first":
                inside.set()
                release.wait(10)
            return x
    step = ThreadedStep(nn.Sequential(Waits(), *model), 2)
    first = threading.Thread(target=step, args=(loss, opt, batches(1, 8)), name="first")
    first.start()
    assert inside.wait(10)
    try:
        with pytest.raises(RuntimeError, match="running a step in another thread"):
            step(loss, opt, batches(1, 8))
        with pytest.raises(RuntimeError, match="running a step in another thread"):
            step.split_model(batches(1, 8)[0][0])
    finally:
        release.set()
        first.join(10)
    step(loss, opt, batches(1, 8))  # once the first is done, this thread may
    step.close()
