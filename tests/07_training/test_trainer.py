"""The training loop: accumulation, clipping, scheduling, evaluation, early stopping, callbacks, logs."""

import json
import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.training import EarlyStopping, Trainer, evaluate


def params(model):
    return [p.data.copy() for p in model.parameters()]


def test_accumulation_equals_one_big_batch(parts):
    big_model, big_opt, loss, big_loader, _ = parts(n=16, batch_size=16)
    big = Trainer(big_model, big_opt, loss, big_loader, quiet=True).fit(max_steps=1)
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    acc = Trainer(model, opt, loss, loader, accum_steps=2, quiet=True).fit(max_steps=1)
    assert len(acc.train) == 1, "2 micro-batches with accum_steps=2 make one optimizer step"
    assert acc.losses[0] == pytest.approx(big.losses[0], rel=1e-6, abs=1e-7)
    for a, b in zip(params(model), params(big_model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg="accumulated step != big-batch step")


def test_last_group_of_an_epoch_is_smaller(parts):
    model, opt, loss, loader, _ = parts(n=24, batch_size=8)  # 3 batches, accum 2: groups of 2 and 1
    history = Trainer(model, opt, loss, loader, accum_steps=2, quiet=True).fit(epochs=2)
    assert [r["epoch"] for r in history.train] == [0, 0, 1, 1]


def test_clip_grad_norm_bounds_the_update(parts):
    model, opt, loss, loader, _ = parts(n=16, batch_size=16, lr=1.0)
    before = params(model)
    Trainer(model, opt, lambda out, t: loss(out, t) * 1000.0, loader, clip_grad_norm=0.01, quiet=True).fit(max_steps=1)
    moved = math.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(params(model), before)))
    assert 0 < moved <= 0.01 * 1.0 + 1e-6, f"an SGD step with lr 1 and clipped norm 0.01 moves <= 0.01, got {moved}"


def test_scheduler_steps_once_per_optimizer_step(parts):
    model, opt, loss, loader, _ = parts(n=32, batch_size=8, lr=1.0)
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    history = Trainer(model, opt, loss, loader, scheduler=sched, accum_steps=2, quiet=True).fit(epochs=1)
    assert [r["lr"] for r in history.train] == [1.0, 0.5], "the lr each step used, halved once per step"
    assert opt.param_groups[0]["lr"] == 0.25


def test_eval_cadence(parts):
    model, opt, loss, loader, val = parts(n=32, batch_size=8)
    history = Trainer(model, opt, loss, loader, val_loader=val, eval_every=3, quiet=True).fit(max_steps=7)
    assert [r["step"] for r in history.eval] == [3, 6]
    model, opt, loss, loader, val = parts(n=32, batch_size=8)
    history = Trainer(model, opt, loss, loader, val_loader=val, quiet=True).fit(epochs=2)
    assert [(r["step"], r["epoch"]) for r in history.eval] == [(4, 1), (8, 2)], "by default: after every epoch"
    assert set(history.eval[0]) >= {"val_loss", "step", "epoch"}


def test_evaluate_restores_the_mode_and_returns_metrics(parts):
    model, opt, loss, loader, val = parts(dropout=0.5)
    trainer = Trainer(model, opt, loss, loader, val_loader=val, metrics={"accuracy": tt.metrics.accuracy}, quiet=True)
    first, second = trainer.evaluate(), trainer.evaluate()
    assert set(first) == {"loss", "accuracy"} and 0.0 <= first["accuracy"] <= 1.0
    assert first == second, "dropout must be off in evaluation: two evaluations agree exactly"
    assert model.training, "evaluate() puts the model back into training mode"
    assert evaluate(model, val, loss)["loss"] == pytest.approx(first["loss"])


def test_early_stopping_stops_the_run(parts):
    model, opt, loss, loader, val = parts(n=32, batch_size=8)
    calls = []

    def worsening(out, target):  # a metric that only gets worse
        calls.append(1)
        return float(len(calls))
    trainer = Trainer(model, opt, loss, loader, val_loader=val, eval_every=1, metrics={"bad": worsening},
                      early_stopping={"monitor": "val_bad", "patience": 2, "mode": "min"}, quiet=True)
    history = trainer.fit(max_steps=50)
    assert len(history.train) == 3, "best at eval 1, no improvement at 2 and 3: stop after step 3"
    assert "early stopping" in history.stop_reason and "val_bad" in history.stop_reason
    bad = Trainer(model, opt, loss, loader, val_loader=val, eval_every=1,
                  early_stopping=EarlyStopping(monitor="val_accuracy"), quiet=True)
    with pytest.raises(KeyError, match="val_accuracy"):
        bad.fit(max_steps=1)


def test_callbacks_see_steps_and_evals_and_can_stop(parts):
    model, opt, loss, loader, val = parts(n=32, batch_size=8)
    seen = []

    class Spy:
        def on_step_end(self, trainer, step, logs):
            seen.append(("step", step, round(logs["loss"], 6)))
            if step == 5:
                trainer.should_stop = True

        def on_eval_end(self, trainer, step, metrics):
            seen.append(("eval", step, sorted(metrics)))
    history = Trainer(model, opt, loss, loader, val_loader=val, eval_every=2, callbacks=[Spy()],
                      quiet=True).fit(max_steps=100)
    assert len(history.train) == 5
    assert [s[:2] for s in seen] == [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("step", 4),
                                     ("eval", 4), ("step", 5)]
    assert seen[2][2] == ["val_loss"]


def test_quiet_prints_nothing_and_the_bar_prints(parts, capfd):
    model, opt, loss, loader, val = parts(n=32, batch_size=8)
    Trainer(model, opt, loss, loader, val_loader=val, quiet=True).fit(epochs=2)
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"quiet=True must print nothing, got {out!r} {err!r}"
    Trainer(model, opt, loss, loader, quiet=False).fit(max_steps=2)
    out, _ = capfd.readouterr()
    assert "loss" in out and "lr" in out and "samples/s" in out, f"the progress line shows loss, lr, speed: {out!r}"


def test_jsonl_log_is_written_and_flushed_each_step(parts, tmp_path):
    log = tmp_path / "run.jsonl"
    model, opt, loss, loader, val = parts(n=32, batch_size=8)
    lines_at_step = []

    class Reader:
        def on_step_end(self, trainer, step, logs):
            lines_at_step.append(len(log.read_text().splitlines()))
    history = Trainer(model, opt, loss, loader, val_loader=val, eval_every=2, log_path=log, callbacks=[Reader()],
                      quiet=True).fit(max_steps=4)
    assert lines_at_step == [1, 2, 4, 5], "each step's line is on disk before the callbacks run"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [r["loss"] for r in train] == history.losses
    assert all({"epoch", "lr", "samples_per_s"} <= set(r) for r in train)
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4]


def test_nan_loss_stops_naming_the_step(parts, tmp_path):
    model, opt, loss, loader, _ = parts(n=32, batch_size=8)
    calls = []

    def poisoned(out, target):
        calls.append(1)
        return loss(out, target) * (float("nan") if len(calls) == 3 else 1.0)
    trainer = Trainer(model, opt, poisoned, loader, quiet=True, log_path=tmp_path / "log.jsonl")
    trainer.fit(max_steps=2)
    before = params(model)
    with pytest.raises(FloatingPointError, match="step 3"):
        trainer.fit(max_steps=10)
    assert all(np.array_equal(a, b) for a, b in zip(before, params(model))), "the nan step must not update"
    assert "non-finite" in (tmp_path / "log.jsonl").read_text().splitlines()[-1]


def test_nan_policy_skip_skips_the_update(parts):
    model, opt, loss, loader, _ = parts(n=32, batch_size=8)
    calls, snapshots = [], []

    def poisoned(out, target):
        calls.append(1)
        return loss(out, target) * (float("inf") if len(calls) == 2 else 1.0)

    class Snap:
        def on_step_end(self, trainer, step, logs):
            snapshots.append(params(trainer.model))
    history = Trainer(model, opt, poisoned, loader, nan_policy="skip", callbacks=[Snap()],
                      quiet=True).fit(max_steps=4)
    assert len(history.train) == 4 and history.train[1].get("skipped") is True
    assert all(np.array_equal(a, b) for a, b in zip(snapshots[0], snapshots[1])), "the skipped step changes nothing"
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[1], snapshots[2])), "training goes on after it"


def test_fit_needs_a_length(parts):
    model, opt, loss, loader, _ = parts()
    with pytest.raises(ValueError, match="epochs"):
        Trainer(model, opt, loss, loader, quiet=True).fit()


def test_a_fresh_run_starts_a_fresh_log(parts, tmp_path):
    log = tmp_path / "run.jsonl"
    for _ in range(2):
        model, opt, loss, loader, _ = parts(n=32, batch_size=8)
        Trainer(model, opt, loss, loader, log_path=log, quiet=True).fit(max_steps=3)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
