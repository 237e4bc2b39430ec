# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 07 — Training
#
# Every training script repeats one loop: fetch a batch, run the model, compute
# the loss, backpropagate, update the weights, now and then evaluate, now and then
# save. Written again in every script, each copy gets one detail wrong: gradients
# never cleared, evaluation left in training mode, a checkpoint that cannot resume
# because it forgot the random state. This module writes the loop once, as
# `tinytorch.training.Trainer`, so that a script says only what differs: the model,
# the data, the loss.
#
# **You will write:**
#
# 1. `train_step`: one optimizer step, with gradient accumulation;
# 2. `evaluate`: the model's loss and metrics on held-out data, without changing it;
# 3. `EarlyStopping.update`: when to give up;
# 4. the loop over an epoch, grouping micro-batches into steps;
# 5. `save_checkpoint`, the Trainer's `state_dict` and its `load_checkpoint`: a run
#    that dies at step 120 continues from step 120 and computes the same losses, to
#    the last bit, as a run that never stopped.
#
# The progress bar, the metrics log, the checkpoint file format and the Trainer's
# settings are provided (`modules/07_training/provided.py`).

# %%
#| default_exp training.trainer

# %% [markdown]
# The tools from earlier modules that your code calls: `no_grad` (module 02) and
# `clip_grad_norm_` (module 05).

# %%
#| export
import math

from tinytorch.core.autograd import no_grad
from tinytorch.nn.utils import clip_grad_norm_

# %% [markdown]
# From the provided code you use: `atomic_write` (module 03's one durable write),
# the checkpoint format's `flatten_state`, `_checksum` and `FORMAT`, the reader
# `load_checkpoint`, the generator helpers `_generators`, `_get_states`, `_set_states`,
# `_TrainerBase`, which holds the Trainer's settings and bookkeeping, and
# `_validate_early_stopping` and `_metric_value`, which check `EarlyStopping`'s
# arguments and turn a one-element Tensor it is given into a float, and `_num_samples`,
# which counts the samples in a batch's target.

# %%
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import safetensors.numpy

import tinytorch as tt
from tinytorch import nn
from tinytorch.core.serialization import atomic_write
from tinytorch.data import DataLoader
from tinytorch.training.checkpoint import FORMAT, CheckpointError, _checksum, flatten_state, load_checkpoint
from tinytorch.training.progress import read_log, sparkline
from tinytorch.training.trainer import _generators, _get_states, _metric_value, _set_states, _TrainerBase
from tinytorch.training.trainer import _num_samples, _validate_early_stopping
from tinytorch.training.fixtures import _Positions, _Recorder, _tiny_classification, _tiny_regression  # the tests' own

# %% [markdown]
# ## 1. One optimizer step, with gradient accumulation
#
# *Why.* A step is five moves in a fixed order: clear the old gradients
# (`zero_grad`), run the model (forward), measure it (loss), compute the gradients
# (backward), move the weights (`optimizer.step()`). Forget the first and each step
# adds onto the last step's gradients, because autograd *accumulates* into `.grad`
# (module 02).
#
# That accumulation is also useful. The batch that trains well (say 512 sequences)
# often does not fit in memory at once: the activations kept for the backward pass
# grow with the batch. Because a batch's loss is a **mean**, k small micro-batches
# give the big batch's gradient. For B = k·b samples cut into k micro-batches of b,
#
# $$L = \frac{1}{B}\sum_{i=1}^{B} \ell_i = \frac{1}{k}\sum_{j=1}^{k} L_j
# \quad\Rightarrow\quad \nabla L = \sum_{j=1}^{k} \nabla\!\left(\frac{L_j}{k}\right),$$
#
# where $L_j$ is micro-batch j's mean loss. Backpropagating $L_j / k$ for each
# micro-batch adds up, in `.grad`, exactly the big batch's gradient; then one
# `optimizer.step()`. Only one micro-batch's activations are alive at a time.
#
# *Worked example.* Losses 0.9 and 0.5 on two micro-batches of 8 give the same
# gradient as loss 0.7 on the 16 samples together, and the step reports 0.7.
#
# Two guards belong in the step. A **non-finite loss** (nan or inf: a learning rate
# too high, a log of zero) must never reach the weights, since one nan gradient makes
# every parameter nan: clear the gradients and return the value, with no step.
# **Gradient clipping** (module 05's `clip_grad_norm_`) rescales the gradients when
# their global norm exceeds a bound, once all micro-batches have added up.
#
# ### Exercise: `train_step(model, loss_fn, optimizer, micro_batches, clip_grad_norm=None)`
#
# `micro_batches` is a list of `(inputs, target)` pairs. Return the mean of the
# micro-batch losses as a Python float (or the first non-finite loss).
#
# - Hint 1: the step owns its gradients: it starts from zero and ends with one update.
# - Hint 2: backpropagate $L_j / k$ with k = `len(micro_batches)`; report $\frac{1}{k}\sum_j L_j$.
# - Hint 3: `zero_grad`; for each pair: forward, loss, its float with `.item()`, a
#   `math.isfinite` check (on failure: `zero_grad` again and return), backward of the
#   scaled loss, add to a running total; after the loop: clip if asked, `step`, return.
#
# *Cost.* k micro-batches cost k forward and backward passes, the same arithmetic as
# one big batch but k times the Python overhead, and 1/k of the activation memory.

# %% nbgrader={"grade": false, "grade_id": "train-step", "locked": false, "schema_version": 3, "solution": true}
#| export
def train_step(model, loss_fn, optimizer, micro_batches, clip_grad_norm=None):
    """One optimizer step over `micro_batches` [(inputs, target), ...]; returns their mean loss.

    A nan or inf loss clears the gradients and is returned at once, without a step."""
    ### BEGIN SOLUTION
    optimizer.zero_grad()
    total = 0.0
    for inputs, target in micro_batches:
        loss = loss_fn(model(inputs), target)
        value = loss.item()
        if not math.isfinite(value):
            optimizer.zero_grad()  # the nan never reaches the weights
            return value
        (loss / len(micro_batches)).backward()
        total += value
    if clip_grad_norm is not None:
        clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return total / len(micro_batches)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-train-step", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_train_step():
    mse = nn.functional.mse_loss
    big, big_opt, x, y = _tiny_regression()
    big_loss = train_step(big, mse, big_opt, [(x, y)])
    small, small_opt, _, _ = _tiny_regression()
    mse(small(x), y).backward()  # stale gradients that the step must clear first
    small_loss = train_step(small, mse, small_opt, [(x[:8], y[:8]), (x[8:], y[8:])])
    assert isinstance(small_loss, float), f"train_step returns a Python float, got {type(small_loss)}"
    assert abs(big_loss - small_loss) < 1e-6, f"mean of the micro-batch losses {small_loss} != batch loss {big_loss}"
    for (name, p), q in zip(big.named_parameters(), small.parameters()):
        assert np.allclose(p.data, q.data, atol=1e-6), (
            f"after 2 micro-batches of 8, {name} differs from one step on 16 samples: start with zero_grad(), "
            f"and divide each micro-batch loss by len(micro_batches) before backward()")
    kept = all(q.grad is not None and np.allclose(p.grad.data, q.grad.data)
               for p, q in zip(big.parameters(), small.parameters()))
    assert kept, "after the step, .grad holds the step's gradients (the next step's zero_grad clears them, as in " \
        "PyTorch): 2 micro-batches of 8 leave the gradient of the 16 samples, but .grad was cleared or differs"

    model, opt, x, y = _tiny_regression()
    before = [p.data.copy() for p in model.parameters()]
    calls = []

    def second_is_nan(out, t):  # the first micro-batch backpropagates; the second one's loss is nan
        calls.append(1)
        return mse(out, t) * (float("nan") if len(calls) == 2 else 1.0)
    bad = train_step(model, second_is_nan, opt, [(x[:8], y[:8]), (x[8:], y[8:])])
    assert isinstance(bad, float) and math.isnan(bad), f"a nan loss must be returned, got {bad}"
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters())), \
        "a nan loss must not change the weights (no optimizer step)"
    assert all(p.grad is None for p in model.parameters()), \
        "a nan loss in the 2nd micro-batch must clear the gradients the 1st one left: zero_grad() before returning"
    worse = train_step(model, lambda out, t: mse(out, t) * math.inf, opt, [(x, y)])
    kept = all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters()))
    assert worse == math.inf and kept, ("an inf loss must be handled like nan (test math.isfinite, not only isnan): "
                                        f"return inf, with no step; got {worse}, weights {'kept' if kept else 'changed'}")
    calls = []
    worse = train_step(model, lambda out, t: calls.append(1) or mse(out, t) * math.inf, opt, [(x[:8], y[:8])] * 2)
    assert (worse, len(calls)) == (math.inf, 1), "return the first non-finite loss at once, before running the next " \
        f"micro-batch: an inf in micro-batch 1 of 2 gives inf after 1 call of loss_fn, got {worse} after {len(calls)}"
    model, opt, x, y = _tiny_regression()
    before = [p.data.copy() for p in model.parameters()]
    train_step(model, mse, opt, [(x, y)], clip_grad_norm=0.0)
    assert all(np.array_equal(b, p.data) for b, p in zip(before, model.parameters())), \
        "clip_grad_norm=0.0 is a limit too: it clips the gradient to norm 0, so SGD leaves the weights as they " \
        "were (only None means no clipping)"
    one, one_opt, x, y = _tiny_regression()
    train_step(one, mse, one_opt, [(x, y)], clip_grad_norm=0.5)
    two, two_opt, _, _ = _tiny_regression()
    train_step(two, mse, two_opt, [(x[:8], y[:8]), (x[8:], y[8:])], clip_grad_norm=0.5)
    gap = max(np.abs(p.data - q.data).max() for p, q in zip(one.parameters(), two.parameters()))
    assert gap < 1e-6, (f"clip once, after all micro-batches have added up: with clip_grad_norm=0.5, 2 micro-batches "
                        f"of 8 must step like 1 batch of 16, but the weights differ by {gap:.1e}")
    ### BEGIN HIDDEN TESTS
    model, opt, x, y = _tiny_regression()
    before = [p.data.copy() for p in model.parameters()]
    train_step(model, lambda out, t: mse(out, t) * 1000.0, opt, [(x, y)], clip_grad_norm=0.01)
    change = np.sqrt(sum(((p.data - b) ** 2).sum() for b, p in zip(before, model.parameters())))
    assert change <= 0.1 * 0.01 + 1e-6, f"with clip_grad_norm=0.01 and lr 0.1 an SGD step moves <= 0.001, got {change}"
    ### END HIDDEN TESTS


test_train_step()
print("train_step: ok")

# %% [markdown]
# ## 2. Evaluation
#
# *Why a separate function.* Evaluation measures the model; it must not change it,
# nor pay for what only training needs:
#
# - `model.eval()` switches the layers that behave differently in training (dropout
#   stops dropping), and afterwards the model goes back to the mode it was in, even
#   if evaluation raised;
# - `no_grad()` records no graph: no memory held for a backward pass that never
#   comes, and no time spent recording it;
# - the average is over **samples**, not batches: the last batch is often smaller,
#   and a plain mean of batch means would over-weight it.
#
# *The math.* With batches of sizes $n_b$ and batch-mean losses $L_b$, the loss over
# the whole set is $\sum_b n_b L_b \,/\, \sum_b n_b$, and the same for every metric.
#
# *Worked example.* Batches of 64, 64 and 8 with batch means 0.5, 0.5 and 1.0 give
# (0.5·64 + 0.5·64 + 1.0·8) / 136 = 0.53, not the 0.67 of a plain mean.
#
# ### Exercise: `evaluate(model, loader, loss_fn, metrics=None)`
#
# `metrics` maps names to functions `fn(output, target) -> float` (a batch mean, like
# module 04's `accuracy`). Return `{"loss": ..., name: ...}`, each a sample-weighted
# mean over the loader, as Python floats; an empty loader is a `ValueError`.
#
# - Hint 1: switch the mode, compute without a graph, and restore the mode whatever happens.
# - Hint 2: keep one running total per name and a sample count; each batch adds
#   $n_b \cdot L_b$ to its total, with $n_b$ the batch's sample count from the
#   provided sample counter named in the introduction (it also counts the 0-d
#   target of one unbatched sample, which a `DataLoader(batch_size=None)` yields);
#   divide at the end.
# - Hint 3: `model.eval()`; `try:` / `finally:` around a `with no_grad():` loop over
#   `(inputs, target)`; one forward per batch, reused by the loss and every metric
#   (`.item()` for the loss, `float(...)` for metrics); `model.train(was_training)`
#   in the `finally`.

# %% nbgrader={"grade": false, "grade_id": "evaluate", "locked": false, "schema_version": 3, "solution": true}
#| export
def evaluate(model, loader, loss_fn, metrics=None):
    """Sample-weighted mean loss and metrics over `loader`, in eval mode and without a graph."""
    metrics = dict(metrics or {})
    ### BEGIN SOLUTION
    was_training = model.training
    sums = dict.fromkeys(["loss", *metrics], 0.0)  # sample-weighted totals
    count = 0
    model.eval()
    try:
        with no_grad():
            for inputs, target in loader:
                output = model(inputs)
                n = _num_samples(target)
                sums["loss"] += loss_fn(output, target).item() * n
                for name, fn in metrics.items():
                    sums[name] += float(fn(output, target)) * n
                count += n
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return {name: total / count for name, total in sums.items()}
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-evaluate", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_evaluate():
    model = _Recorder()
    batches = [(tt.tensor([[1.0], [1.0]]), tt.tensor([[0.0], [0.0]])),
               (tt.tensor([[3.0]]), tt.tensor([[0.0]]))]
    try:  # a metric returns a Python float, like module 04's accuracy
        result = evaluate(model, batches, nn.functional.mse_loss, {"first": lambda out, t: float(out.data[0, 0])})
    except AttributeError as err:
        raise AssertionError(f"metrics return Python floats: convert with float(...), not .item(); got {err}") from None
    assert set(result) == {"loss", "first"}, f"expected keys loss and first, got {sorted(result)}"
    assert all(type(v) is float for v in result.values()), f"return Python floats (.item(), float()), got {result}"
    assert abs(result["loss"] - (1 + 1 + 9) / 3) < 1e-6, \
        f"weight each batch by its size: (1·2 + 9·1) / 3 = 3.667, got {result['loss']}"
    assert abs(result["first"] - (1 * 2 + 3 * 1) / 3) < 1e-6, f"metrics are weighted too, got {result['first']}"
    assert model.seen == [(False, False), (False, False)], \
        f"the model must run in eval mode under no_grad, saw (training, grad) = {model.seen}"
    assert model.training, "evaluate must put the model back in training mode"
    model.eval()
    evaluate(model, batches, nn.functional.mse_loss)
    assert not model.training, "a model that was in eval mode stays in eval mode"
    try:
        got = evaluate(model, [], nn.functional.mse_loss)
    except ValueError:
        got = "ValueError"
    assert got == "ValueError", f"an empty loader has no samples to average over: raise ValueError, got {got!r}"
    unbatched = [(tt.tensor(2.0), tt.tensor(0.0)), (tt.tensor(4.0), tt.tensor(0.0))]  # as batch_size=None gives
    got = evaluate(model, unbatched, nn.functional.mse_loss)["loss"]
    assert abs(got - 10.0) < 1e-6, f"a 0-d target is one sample (_num_samples, not len): (4 + 16) / 2 = 10, got {got}"
    ### BEGIN HIDDEN TESTS
    model.train()
    try:
        evaluate(model, batches, lambda out, t: 1 / 0)
    except ZeroDivisionError:
        pass
    assert model.training, "the mode is restored even when the loss raises"
    ### END HIDDEN TESTS


test_evaluate()
print("evaluate: ok")

# %% [markdown]
# *Cost.* Evaluation is a forward pass per batch and nothing else: with no graph
# recorded it takes roughly a third of a training step's time and none of its
# activation memory, so it can use larger batches than training.
#
# ## 3. Early stopping
#
# Validation loss falls, flattens, then rises as the model starts to memorise the
# training set. Early stopping watches one evaluated metric (`monitor`, e.g.
# `"val_loss"`) and stops the run once it has not improved for `patience`
# evaluations in a row. "Improved" means beyond `min_delta`: for `mode="min"`,
# value < best − min_delta; for `mode="max"` (accuracy), value > best + min_delta.
# A nan never improves anything.
#
# *Worked example*, mode min, patience 2: 1.0 (best), 0.8 (best), 0.85 (1 bad), 0.79
# (best, counter reset), 0.9 (1 bad), 0.95 (2 bad: stop).
#
# ### Exercise: `EarlyStopping.update(value)`
#
# Record one evaluation: update `self.best` and `self.bad_evals`, and return True
# when the run should stop.
#
# - Hint 1: `best` starts at +inf (min) or −inf (max), as in PyTorch Lightning: any
#   real first value improves on it, and a nan does not.
# - Hint 2: one comparison serves both modes if you multiply by a sign (+1 for min,
#   −1 for max): improved when sign·(value − best) < −min_delta. Any comparison with
#   nan is False, so a nan falls into "not improved" by itself.
# - Hint 3: compute the sign; if improved, set best and reset the counter, else add
#   one to it; return whether the counter reached `patience`.

# %% nbgrader={"grade": false, "grade_id": "early-stopping", "locked": false, "schema_version": 3, "solution": true}
#| export
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` evaluations."""

    def __init__(self, monitor="val_loss", patience=3, mode="min", min_delta=0.0):
        patience, min_delta = _validate_early_stopping(mode, patience, min_delta)  # provided: an int, a float
        self.monitor, self.patience, self.mode, self.min_delta = monitor, patience, mode, min_delta
        self.best = math.inf if mode == "min" else -math.inf  # the best so far: none yet, so any value beats it
        self.bad_evals = 0  # evaluations in a row without improvement

    def update(self, value):
        """Record one evaluation of the monitored metric; True means: stop now."""
        value = _metric_value(value)  # provided: a one-element Tensor becomes its float
        ### BEGIN SOLUTION
        sign = 1.0 if self.mode == "min" else -1.0
        if sign * (value - self.best) < -self.min_delta:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        return self.bad_evals >= self.patience
        ### END SOLUTION

    def state_dict(self):
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, state):
        best = state["best"]  # None in checkpoints saved before best started at ±inf
        self.best = (math.inf if self.mode == "min" else -math.inf) if best is None else best
        self.bad_evals = state["bad_evals"]


# %% nbgrader={"grade": true, "grade_id": "test-early-stopping", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_early_stopping():
    stopper = EarlyStopping(patience=2, mode="min")
    decisions = [stopper.update(v) for v in [1.0, 0.8, 0.85, 0.79, 0.9, 0.95]]
    assert decisions == [False, False, False, False, False, True], \
        f"mode min, patience 2 on 1.0, 0.8, 0.85, 0.79, 0.9, 0.95 should stop only at the end, got {decisions}"
    assert stopper.best == 0.79, f"best should be 0.79, got {stopper.best}"
    up = EarlyStopping(patience=1, mode="max", min_delta=0.05)
    assert [up.update(v) for v in [0.5, 0.6]] == [False, False], "mode max: 0.6 > 0.5 + 0.05 improves"
    assert up.update(0.62), "mode max, min_delta 0.05: 0.62 is not above 0.6 + 0.05, so patience 1 stops"
    once = EarlyStopping(patience=1)
    got = [once.update(v) for v in (1.0, 2.0, 3.0)]
    assert got == [False, True, True], \
        f"patience 1 on 1, 2, 3: once patience is used up, every later update says stop too; got {got}"
    late = EarlyStopping(patience=2)
    got = [late.update(v) for v in (float("nan"), 0.5, 0.4)]
    assert got == [False, False, False] and late.best == 0.4, \
        f"a nan is never a best: on nan, 0.5, 0.4 expected [False, False, False], best 0.4; got {got}, best {late.best}"
    slow, flat = EarlyStopping(patience=5, mode="max", min_delta=0.05), EarlyStopping(patience=1)
    got = [slow.update(v) for v in (0.6, 0.64, 0.66)] and (slow.best, slow.bad_evals, flat.update(1.0), flat.update(1.0))
    assert got == (0.66, 0, False, True), "improved means beyond best by more than min_delta, best being the last value " \
        "that improved: max, min_delta 0.05 on 0.6, 0.64, 0.66 gives best 0.66 and 0 bad evals; and a value equal " \
        f"to best is no improvement: patience 1 on 1.0, 1.0 stops. Got (best, bad_evals, stop, stop) = {got}"
    ### BEGIN HIDDEN TESTS
    nan = EarlyStopping(patience=1)
    nan.update(1.0)
    assert nan.update(float("nan")), "a nan is not an improvement"
    ### END HIDDEN TESTS


test_early_stopping()
print("EarlyStopping: ok")


# %% [markdown]
# ## 4. The loop
#
# An **epoch** is one pass over the training loader's micro-batches. Every
# `accum_steps` consecutive micro-batches form a group, and a group makes one
# optimizer **step**. The last group of an epoch may be smaller: 5 micro-batches
# with `accum_steps=2` make groups of 2, 2 and 1, and since `train_step` divides by
# the group's own length, the short group still gets a mean.
#
# The `Trainer` is built in layers, one class per exercise: `_TrainerLoop` here, then
# `_SavingTrainer` and `Trainer` in section 5, each subclassing the one before. At
# the bottom, the provided `_TrainerBase` does everything around the loop.
# `fit(epochs=..., max_steps=...)` calls your `_run_epoch(max_steps)` until either
# limit is reached.
# `self._optimizer_step(group)` calls your `train_step`, then steps the LR scheduler
# (once per optimizer step, so warm-up and cosine schedules count steps, not
# epochs; a step skipped for a nan loss counts too, so the schedule stays in step
# with `trainer.step`), logs the step, updates the progress bar, runs the callbacks and evaluates
# on cadence. `self._after_step(end_of_epoch)` closes a finished epoch and writes a
# checkpoint on cadence.
#
# A run can stop in the middle of an epoch (`max_steps`, or a callback that sets
# `trainer.should_stop`) and `fit` can be called again to go on. So the epoch's
# iterator lives on the trainer: `self._epoch_batches()` returns the current epoch's
# iterator, or starts a new epoch. And `self.batch_in_epoch` counts the micro-batches
# this epoch has used: a checkpoint needs it to resume mid-epoch.
#
# *Worked example.* 40 samples in micro-batches of 8, `accum_steps=2`, `fit(epochs=2)`:
# 5 micro-batches per epoch, steps after micro-batches 2, 4 and 5 of each epoch,
# 6 steps in all. `fit(max_steps=4)` stops after micro-batch 2 of the second epoch;
# a later `fit(max_steps=6)` goes on with micro-batch 3.
#
# ### Exercise: `_TrainerLoop._run_epoch(max_steps)`
#
# Run the rest of the current epoch, stopping early once `self._finished(None,
# max_steps)` says so.
#
# - Hint 1: collect micro-batches in a list; a full list, or the epoch's last
#   micro-batch, makes a step.
# - Hint 2: the last micro-batch is the one where `batch_in_epoch` equals
#   `self._batches_per_epoch()`. That is None for a loader without `len()`: there the
#   epoch ends when the iterator runs out, and a leftover group still makes a step.
# - Hint 3: loop over `self._epoch_batches()`: append, count it in
#   `self.batch_in_epoch`, decide `last`; on a full group or `last`: `_optimizer_step`,
#   `_after_step(last)`, a fresh empty group, and return if `last` or finished. After
#   the loop: step a leftover group, then `_after_step(True)`.

# %% nbgrader={"grade": false, "grade_id": "run-epoch", "locked": false, "schema_version": 3, "solution": true}
#| export
class _TrainerLoop(_TrainerBase):
    """The Trainer's loop: micro-batches grouped into optimizer steps, epoch after epoch."""

    def _run_epoch(self, max_steps):
        """Train on the rest of the current epoch, one optimizer step per `accum_steps` micro-batches."""
        ### BEGIN SOLUTION
        n_batches = self._batches_per_epoch()
        group = []
        for batch in self._epoch_batches():
            group.append(batch)
            self.batch_in_epoch += 1
            last = self.batch_in_epoch == n_batches
            if len(group) == self.accum_steps or last:
                self._optimizer_step(group)
                self._after_step(end_of_epoch=last)
                group = []
                if last or self._finished(None, max_steps):
                    return
        if group:  # a loader without len(): the epoch's last, smaller group
            self._optimizer_step(group)
        self._after_step(end_of_epoch=True)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-run-epoch", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_run_epoch():
    spy = _Positions()
    trainer = _TrainerLoop(*_tiny_classification(), accum_steps=2, callbacks=[spy], quiet=True)
    history = trainer.fit(epochs=2)
    expected = [(0, 2), (0, 4), (0, 5), (1, 2), (1, 4), (1, 5)]
    assert spy.seen == expected, (f"5 micro-batches per epoch, accum_steps=2: steps after micro-batches 2, 4, 5 "
                                  f"of each epoch; (epoch, batch_in_epoch) at each step were {spy.seen}")
    assert (trainer.step, trainer.epoch, len(history.train)) == (6, 2, 6), \
        f"2 epochs of 3 steps: step 6, epoch 2; got step {trainer.step}, epoch {trainer.epoch}"
    spy = _Positions()
    trainer = _TrainerLoop(*_tiny_classification(), accum_steps=2, callbacks=[spy], quiet=True)
    trainer.fit(max_steps=4)
    assert spy.seen == expected[:4], f"max_steps=4 stops after the 4th step, saw {spy.seen}"
    trainer.fit(max_steps=6)
    assert spy.seen == expected, f"a second fit goes on mid-epoch where the first stopped, saw {spy.seen}"
    halt = type("Halt", (), {"on_step_end": lambda self, trainer, step, logs: setattr(trainer, "should_stop", True)})
    trainer = _TrainerLoop(*_tiny_classification(), accum_steps=2, callbacks=[halt()], quiet=True)
    trainer.fit(epochs=1)
    assert trainer.step == 1, "a callback that sets trainer.should_stop stops the run after that step, even in mid-" \
        f"epoch: ask self._finished(None, max_steps) after each step; 1 step expected, took {trainer.step}"
    trainer = _TrainerLoop(*_tiny_classification(n=32), accum_steps=2, quiet=True)
    trainer.fit(max_steps=2)
    got = (trainer.epoch, trainer.batch_in_epoch)
    assert got == (1, 0), (f"32 samples, accum_steps=2: step 2 ends on the epoch's last micro-batch, so it closes the "
                           f"epoch (_after_step(end_of_epoch=True)): expected (epoch, batch_in_epoch) (1, 0), got {got}")
    ### BEGIN HIDDEN TESTS
    model, opt, loss, loader = _tiny_classification()

    class NoLength:
        def __iter__(self):
            return iter(loader)
    spy = _Positions()
    trainer = _TrainerLoop(model, opt, loss, NoLength(), accum_steps=2, callbacks=[spy], quiet=True)
    trainer.fit(epochs=1)
    assert spy.seen == [(0, 2), (0, 4), (0, 5)] and trainer.epoch == 1, \
        f"a loader without len(): the leftover micro-batch still makes a step, saw {spy.seen}"
    trainer = _TrainerLoop(model, opt, loss, NoLength(), accum_steps=5, quiet=True)
    trainer.fit(max_steps=1)  # one full group of the 5 micro-batches; then the iterator runs out, with no leftover
    trainer._run_epoch(None)
    assert (trainer.step, trainer.epoch) == (1, 1), "a loader without len() whose micro-batches fill the last group: " \
        f"the epoch still ends when the iterator runs out; expected step 1, epoch 1, got {trainer.step}, {trainer.epoch}"
    ### END HIDDEN TESTS


test_run_epoch()
print("_run_epoch: ok")

# %% [markdown]
# ## 5. Checkpoints that survive a crash
#
# ### Atomic, and one file
#
# A checkpoint of a big model takes seconds to write. If the process dies in the
# middle (out of memory, a pre-empted cloud machine, Ctrl-C, a power cut),
# `open(path, "wb")` has already truncated the old file: the new checkpoint *and* the
# previous one are lost, and the next resume reads half a file. Module 03's
# `atomic_write(path, data)` is tinytorch's one durable write: it writes a temporary
# file in the same folder, fsyncs it, renames it over `path` with `os.replace`
# (atomic), then fsyncs the folder. A crash leaves the old file or the new one,
# never half of one.
#
# The file format is provided. A checkpoint is one safetensors file,
# `step_00000120.safetensors`. `flatten_state(state, arrays)` walks the nested state,
# moves every tensor and array into the dict `arrays` under a path-like name
# (`model/0.weight`, `optimizer/state/0/exp_avg`) and returns a JSON-able tree that
# points at them (integer keys and tuples are marked, so they come back as they
# were). A safetensors file holds arrays plus a metadata dict of strings; the tree
# goes there as JSON text, beside `FORMAT` and a SHA-256 of arrays and tree,
# `_checksum(arrays, tree_json)`, so that a flipped bit is caught when loading
# instead of trained on. One file means one rename: the arrays and their description
# cannot get out of step.
#
# ### Exercise: `save_checkpoint(path, state)`
#
# Write `state` to `path` as one safetensors file, with `atomic_write`, and return
# `Path(path)` (or the file object itself: like `tt.save`, `path` may be an open binary file).
#
# - Hint 1: flatten, describe, checksum, serialise to bytes, write atomically.
# - Hint 2: the metadata holds three strings: `"format"`, `"state"` (the tree as JSON,
#   with nan allowed: a logged loss may be nan) and `"sha256"`.
# - Hint 3: an empty `arrays` dict; the tree from `flatten_state`; `json.dumps` with
#   `allow_nan=True`; the checksum; `safetensors.numpy.save(arrays, metadata=...)`
#   returns the file's bytes; hand them to `atomic_write`.

# %% nbgrader={"grade": false, "grade_id": "save-checkpoint", "locked": false, "schema_version": 3, "solution": true}
#| export training.checkpoint
def save_checkpoint(path, state):
    """Write `state` (nested dicts of tensors, arrays, numbers...) to one safetensors file, atomically."""
    ### BEGIN SOLUTION
    arrays = {}
    tree_json = json.dumps(flatten_state(state, arrays), allow_nan=True)
    metadata = {"format": FORMAT, "state": tree_json, "sha256": _checksum(arrays, tree_json)}
    atomic_write(path, safetensors.numpy.save(arrays, metadata=metadata))
    return path if hasattr(path, "write") else Path(path)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-save-checkpoint", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def _load_error(path):
    # The CheckpointError message load_checkpoint gives for `path`, or None when it loads.
    try:
        load_checkpoint(path)
    except CheckpointError as err:
        return str(err)


def test_save_checkpoint():
    global atomic_write
    state = {"model": {"weight": tt.ones(2, 3)}, "optimizer": {"state": {0: {"step": 3}}, "betas": (0.9, 0.999)},
             "loss": float("nan")}
    real_write, writes = atomic_write, []
    atomic_write = lambda path, data: writes.append(Path(path)) or real_write(path, data)  # noqa: E731
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "step_00000001.safetensors"
            assert save_checkpoint(path, state) == path, "save_checkpoint returns the path it wrote"
            assert writes == [path], f"write the file once, with atomic_write; its writes were {writes}"
            assert _load_error(path) is None, (f"load_checkpoint cannot read what save_checkpoint wrote "
                                               f"({_load_error(path)}): the metadata needs format, state and sha256")
            back = load_checkpoint(path)
            assert back["model"]["weight"].shape == (2, 3), "the tensors come back with their shapes"
            assert back["optimizer"] == state["optimizer"], f"the tree must come back as it was: {back['optimizer']}"
            assert math.isnan(back["loss"]), "nan must survive the JSON (allow_nan=True)"
            path.write_bytes(path.read_bytes()[:-3] + b"\xff\xff\xff")  # damage the weight's last float
            assert _load_error(path), "a damaged weight must be caught: store the SHA-256 of arrays and tree"
    finally:
        atomic_write = real_write
    buffer = io.BytesIO()
    try:  # like tt.save, `path` may be an open binary file: write to it and return it
        back = save_checkpoint(buffer, state)
    except TypeError as err:
        back = err
    assert back is buffer, f"save_checkpoint(io.BytesIO(), state) must return that buffer (not a Path), got {back!r}"
    assert load_checkpoint(io.BytesIO(buffer.getvalue()))["optimizer"] == state["optimizer"], "write into the buffer"


test_save_checkpoint()
print("save_checkpoint: ok")

# %% [markdown]
# ### What to save to resume exactly
#
# "Resume" should mean: the run continues as if it had never stopped, the same
# losses to the last bit. That needs every piece of state the next step reads:
#
# | state | why |
# | --- | --- |
# | model parameters and buffers | the weights themselves |
# | optimizer state | Adam's moving averages and step count: without them the first steps after resuming jump |
# | LR scheduler | its step counter decides the next learning rate |
# | step, epoch, micro-batch in epoch | when to evaluate, save and stop; where in the data we are |
# | **the random generators** | dropout masks and the shuffled order of the data come from them |
# | early stopping | the best value so far and the count of bad evaluations |
# | config | what the run was, for whoever reads the file later |
#
# The random generators are the subtle part. The epoch's shuffled order was drawn
# when the epoch began, so the trainer keeps the generators' state *at the start of
# the epoch* (`self._epoch_start_rng`, recorded by `_epoch_batches`) as well as now.
# Generator states are small dicts of integers (`Generator.bit_generator.state`),
# saved as JSON: never pickle, which runs code when loaded.
#
# ### Exercise: `_SavingTrainer.state_dict()`
#
# Return a dict with six keys: `"model"`, `"optimizer"`, `"scheduler"` (None without a
# scheduler), `"trainer"` (a dict of `step`, `epoch`, `batch_in_epoch` and
# `early_stopping`: its state, or None), `"rng"` (a dict: `"now"`, the generators'
# states now, and `"epoch_start"`) and `"config"` (`accum_steps`, `clip_grad_norm`,
# `seed`, plus the entries of `self.config`).
#
# - Hint 1: everything that carries state already has a `state_dict()`; the trainer
#   adds its own counters.
# - Hint 2: `_generators(self.train_loader, strict=True)` lists tinytorch's global
#   generator, then the loader's own; `_get_states` reads their states. `strict=True`
#   refuses a loader seeded with a plain int, whose state cannot be saved.
# - Hint 3: one dict literal with the six keys; `{**self.config}` merges the user's
#   entries into `"config"`.

# %% nbgrader={"grade": false, "grade_id": "state-dict", "locked": false, "schema_version": 3, "solution": true}
#| export
class _SavingTrainer(_TrainerLoop):
    """The Trainer's loop, and the state a checkpoint saves."""

    def state_dict(self):
        """Everything a resumed run needs (see the table above)."""
        ### BEGIN SOLUTION
        generators = _generators(self.train_loader, strict=True)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "trainer": {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,  # where in the epoch's data we are
                "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            },
            "rng": {
                "now": _get_states(generators),
                "epoch_start": self._epoch_start_rng,  # replays this epoch's shuffled order
            },
            "config": {"accum_steps": self.accum_steps, "clip_grad_norm": self.clip_grad_norm,
                       "seed": self.seed, **self.config},
        }
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-state-dict", "locked": true, "points": 2, "schema_version": 3, "solution": false}
def test_state_dict():
    model, opt, loss, loader = _tiny_classification(shuffle=True, dropout=0.2)
    model[0].register_buffer("marker", tt.zeros(1))  # a buffer is model state too
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    trainer = _SavingTrainer(model, opt, loss, loader, scheduler=sched, accum_steps=2, early_stopping=EarlyStopping(),
                             seed=3, config={"name": "test"}, quiet=True)
    trainer.fit(max_steps=4)  # 3 steps per epoch: step 4 is mid-epoch
    state = trainer.state_dict()
    keys = {"model", "optimizer", "scheduler", "trainer", "rng", "config"}
    assert isinstance(state, dict) and set(state) == keys, f"state_dict needs the keys {sorted(keys)}"
    want = {"step": 4, "epoch": 1, "batch_in_epoch": 2, "early_stopping": {"best": math.inf, "bad_evals": 0}}
    for key in want:  # step 4 is in epoch 1 after micro-batch 2; early stopping saves its own state_dict()
        assert state["trainer"].get(key) == want[key], \
            f"state['trainer'][{key!r}] at step 4 should be {want[key]}, got {state['trainer'].get(key, 'no such key')}"
    assert state["trainer"] == want, f"state['trainer'] holds exactly {sorted(want)}, got {sorted(state['trainer'])}"
    assert state["scheduler"] == sched.state_dict(), "save the scheduler's state_dict"
    assert sorted(state["model"]) == sorted(model.state_dict()), \
        f"save the model's state_dict() (buffers too): expected {sorted(model.state_dict())}, got {sorted(state['model'])}"
    assert state["optimizer"]["state"].keys() == opt.state_dict()["state"].keys(), "save the optimizer's state_dict"
    assert state["rng"] == {"now": _get_states(_generators(loader)), "epoch_start": trainer._epoch_start_rng}, \
        "rng holds the generators' states now and at the start of the epoch"
    assert state["config"] == {"accum_steps": 2, "clip_grad_norm": None, "seed": 3, "name": "test"}, \
        f"config: accum_steps, clip_grad_norm, seed and the user's config, got {state['config']}"
    try:
        bare = _SavingTrainer(*_tiny_classification(), quiet=True).state_dict()
    except AttributeError as err:
        raise AssertionError(f"a Trainer without a scheduler or early stopping: save None for each instead of "
                             f"calling their state_dict(); state_dict raised {err!r}") from None
    got = (bare["scheduler"], bare["trainer"]["early_stopping"])
    assert got == (None, None), f"no scheduler, no early stopping: save None for each, got {got}"
    model, opt, loss, loose = _tiny_classification()
    loose.generator = 3  # a plain int seed: a checkpoint could not save its state, nor resume the data order
    try:
        got = type(_SavingTrainer(model, opt, loss, loose, quiet=True).state_dict()).__name__
    except ValueError:
        got = "ValueError"
    assert got == "ValueError", f"a loader seeded with a plain int must be refused (strict=True), state_dict gave a {got}"


test_state_dict()
print("state_dict: ok")

# %% [markdown]
# ### Loading, and finding the place in the data
#
# Loading gives every object its part of the state back. Then the data position:
# to resume after micro-batch 37 of an epoch, restore the generators to the start of
# the epoch, build the epoch's iterator again (it draws the same shuffled order),
# skip the 37 micro-batches already used, and only then restore the generators to
# their state "now", so that dropout masks continue as they would have.
#
# *Worked example.* 40 samples, micro-batches of 8, `accum_steps=2`: a checkpoint at
# step 5 is in epoch 1 after micro-batch 4. Loading it replays epoch 1's order, skips
# 4 micro-batches, and step 6 trains on micro-batch 5, as the uninterrupted run did.
#
# ### Exercise: `Trainer.load_checkpoint(path)`
#
# The given first line reads the file (`self._read_checkpoint`: the format, the
# checksum, and whether it fits this Trainer: the optimizer's layout, the data position).
# It checks everything before you change anything: a checkpoint that does not fit leaves
# the model and the optimizer as they were. Restore everything from `state`. After your
# code, the given `self._after_load()` cuts the metrics log back to the checkpoint's step.
#
# - Hint 1: the inverse of `state_dict`, then the data position.
# - Hint 2: `load_state_dict` for the model, the optimizer, the scheduler and early
#   stopping (each if the trainer has one and the file saved one); the
#   three counters; `_set_states(generators, states)` with the generators of
#   `_generators(self.train_loader)`.
# - Hint 3: set `self._epoch_start_rng` from the file and `self._batches` to None; if
#   `batch_in_epoch > 0`: set the epoch-start states, make `self._batches` a fresh
#   `self._train_batches()` and call `next` on it `batch_in_epoch` times; last, set
#   the states "now".

# %% nbgrader={"grade": false, "grade_id": "load-checkpoint", "locked": false, "schema_version": 3, "solution": true}
#| export
class Trainer(_SavingTrainer):
    """The training loop: accumulation, clipping, scheduling, evaluation, early stopping,
    callbacks, progress, a JSONL log and exactly resumable checkpoints."""

    def load_checkpoint(self, path):
        """Restore a checkpoint so that training continues exactly where it stopped."""
        state = self._read_checkpoint(path)  # provided: the file, checked to fit this Trainer
        ### BEGIN SOLUTION
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        saved = state["trainer"]
        self.step, self.epoch, self.batch_in_epoch = saved["step"], saved["epoch"], saved["batch_in_epoch"]
        if self.early_stopping is not None and saved["early_stopping"] is not None:
            self.early_stopping.load_state_dict(saved["early_stopping"])
        generators = _generators(self.train_loader)
        self._epoch_start_rng, self._batches = state["rng"]["epoch_start"], None
        if self.batch_in_epoch > 0:  # replay this epoch's order and skip what was used
            _set_states(generators, state["rng"]["epoch_start"])
            self._batches = self._train_batches()
            for _ in range(self.batch_in_epoch):
                next(self._batches)
        _set_states(generators, state["rng"]["now"])
        ### END SOLUTION
        self._after_load()
        return Path(path)


# %% nbgrader={"grade": true, "grade_id": "test-load-checkpoint", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def _resumable(folder, **options):
    # The same run every time: dropout, shuffled data, AdamW and a cosine schedule.
    model, opt, loss, loader = _tiny_classification(shuffle=True, dropout=0.2, lr=0.01)
    sched = tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    return Trainer(model, opt, loss, loader, scheduler=sched, accum_steps=2, checkpoint_dir=folder, seed=3,
                   quiet=True, **options)


def test_load_checkpoint():
    with tempfile.TemporaryDirectory() as folder:
        folder, stopper = Path(folder), EarlyStopping()
        stopper.update(0.5), stopper.update(0.7)  # best 0.5 and 1 bad evaluation, in every checkpoint
        whole = _resumable(folder / "whole", checkpoint_every=1, keep_last=None, early_stopping=stopper)
        whole = whole.fit(max_steps=12).losses
        resumed = _resumable(folder / "resumed", early_stopping=EarlyStopping())
        resumed.load_checkpoint(folder / "whole/step_00000005.safetensors")
        position = (resumed.step, resumed.epoch, resumed.batch_in_epoch)
        assert position == (5, 1, 4), f"step 5 is epoch 1 after micro-batch 4, loaded {position}"
        adam_steps = [float(p["step"]) for p in resumed.optimizer.state_dict()["state"].values()]
        assert adam_steps == [5.0] * 4, \
            f"the optimizer's state must be restored too (AdamW's moments, and step counts of 5 for the 4 " \
            f"parameters), or the steps after resuming differ; got step counts {adam_steps}"
        assert resumed.scheduler.last_epoch == 5, \
            f"the scheduler must resume at step 5 (last_epoch 5), got {resumed.scheduler.last_epoch}"
        got = resumed.early_stopping.state_dict()
        assert got == {"best": 0.5, "bad_evals": 1}, f"restore early stopping: expected best 0.5, bad_evals 1, got {got}"
        rest = resumed.fit(max_steps=12).losses
        for start, why in ((3, "step 3 ends epoch 0: replay the data only when batch_in_epoch > 0"),
                           (4, "step 4 is mid-epoch: restore self._epoch_start_rng from the file")):
            again = _resumable(folder / f"from{start}", checkpoint_every=1)
            again.load_checkpoint(folder / f"whole/step_{start:08d}.safetensors")
            again.fit(max_steps=5)
            want, got = (load_checkpoint(folder / run / "step_00000005.safetensors")["rng"]
                         for run in ("whole", f"from{start}"))
            assert got == want, f"resumed from step {start}, the step-5 checkpoint saved other generator states: {why}"
    assert len(rest) == 7, f"resumed at step 5, fit(max_steps=12) takes 7 more steps, took {len(rest)}"
    first = next((i for i, (a, b) in enumerate(zip(rest, whole[5:])) if a != b), None)
    assert first is None, \
        f"steps 6-12 after resuming must give the uninterrupted run's losses, to the last bit; step {6 + first} " \
        f"gave {rest[first]} instead of {whole[5 + first]} (is every random generator restored: the data " \
        f"order and dropout's?)\nresumed: {rest}\nwhole:   {whole[5:]}"


test_load_checkpoint()
print("load_checkpoint: ok")

# %% [markdown]
# `fit` uses it in two ways. `Trainer(..., resume=True)` loads the newest checkpoint
# in `checkpoint_dir`, and if that file is damaged falls back to the previous one with
# a warning naming the damaged file (a crash can only damage the newest).
# `fit(resume_from=path)` loads exactly that file and raises if it is damaged.
#
# ## 6. Training with it
#
# Handwritten 8x8 digits (module 06), a small MLP (module 03), cross-entropy
# (module 04), AdamW with a cosine schedule (module 05): the script says what
# differs, the Trainer does the rest. Gradient accumulation makes micro-batches of
# 32 act as batches of 64; the test set is evaluated every 40 steps; a checkpoint is
# written every 40 steps, keeping the last two. (The graded test of section 5 showed
# that a run resumed from one of them computes the very same losses.)

# %%
from tinytorch.data import digits, train_test_split
from tinytorch.training.checkpoint import list_checkpoints

images, labels = digits()
train_set, test_set = train_test_split(images.reshape(-1, 64) / 16.0, labels, test_fraction=0.2, seed=0)
workdir = tempfile.TemporaryDirectory(prefix="tinytorch-07-")
tt.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
optimizer = tt.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
scheduler = tt.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
trainer = Trainer(model, optimizer, nn.functional.cross_entropy, DataLoader(train_set, batch_size=32, shuffle=True),
                  DataLoader(test_set, batch_size=256), scheduler=scheduler, accum_steps=2, clip_grad_norm=1.0,
                  eval_every=40, metrics={"accuracy": tt.metrics.accuracy},
                  checkpoint_dir=Path(workdir.name), checkpoint_every=40, keep_last=2, seed=0, quiet=True)
start = time.perf_counter()
history = trainer.fit(max_steps=200)
step_ms = (time.perf_counter() - start) / 200 * 1e3
for record in history.eval:
    print(f"step {record['step']:3d}  val_loss {record['val_loss']:.3f}  val_accuracy {record['val_accuracy']:.3f}")
print("loss", sparkline(history.losses, width=50), [p.name for p in list_checkpoints(workdir.name)])

# %% [markdown]
# ## 7. What it costs
#
# **Checkpoint size.** A checkpoint holds the parameters (4 bytes each in float32)
# and the optimizer state: AdamW keeps two moments per parameter, so about 3× the
# parameters' bytes (plain SGD: 1×; SGD with momentum: 2×). For a 124 M-parameter
# GPT-2 that is 0.5 GB of weights and 1.5 GB of checkpoint. The JSON part
# (generators, schedule, config) is a few kB.
#
# **Time.** A save serialises, writes and fsyncs, and fsync waits for the disk.
# Saving every step would dominate a small model's training; every few hundred steps
# costs well under one percent. The Trainer's own bookkeeping (logging, callbacks,
# counters) adds a few microseconds of Python per step, and resuming mid-epoch
# replays the skipped micro-batches' loading (not their training).
#
# **Throughput.** `history.summary()` reports the mean over the whole run, which
# counts the evaluations and saves, and the median step apart: the two differ as much
# as evaluation costs. Given the model's FLOPs per token, `Trainer(flops_per_token=...)`
# also logs the MFU, the share of the device's peak FLOP/s the model uses (module 09's
# GPT knows its FLOPs). The peak is that of the dtype the matmuls run in: float32, or a
# 16-bit dtype under module 10's mixed precision when `fit` runs inside `autocast` (or
# `compute_dtype=` names it). Measured here, with the step time of the run above
# (evaluations and saves included):

# %%
n_params = sum(p.numel() for p in model.parameters())
start = time.perf_counter()
size = trainer.save_checkpoint().stat().st_size
save_ms = (time.perf_counter() - start) * 1e3
print(f"{n_params:,} parameters = {4 * n_params / 1e3:.1f} kB of float32; checkpoint {size / 1e3:.1f} kB "
      f"= {size / (4 * n_params):.2f}x the parameters")
print(f"one save: {save_ms:.1f} ms; one step: {step_ms:.2f} ms; saving every 500 steps adds "
      f"{save_ms / (500 * step_ms):.2%}")
run = history.summary()
print(f"{run['samples_per_s_mean']:,.0f} samples/s over the run, {run['samples_per_s_median']:,.0f} in the median "
      f"step; peak memory {run['peak_memory_mib']:.0f} MiB ({run['memory_kind']})")
workdir.cleanup()

# %% [markdown]
# ## Summary
#
# - A step clears the gradients, then adds up each micro-batch's loss divided by the
#   number of micro-batches: the sum is the big batch's gradient. A non-finite loss
#   never reaches the weights.
# - Evaluation runs in eval mode, without a graph, and averages over samples.
# - The loop groups micro-batches into steps and can stop and go on mid-epoch.
# - A checkpoint is one file written atomically and checksummed; resuming exactly
#   needs the optimizer, the schedule, the counters, the random generators and the
#   position in the data, not only the weights.
#
# **Milestone.** Everything so far trains a real model now: `tito milestone run mlp`
# trains an MLP on the digits with your own `tinytorch` and checks that it
# classifies at least 97% of the held-out images, in seconds.
