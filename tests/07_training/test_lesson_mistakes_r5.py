"""Wrong answers a mutation review saw pass both the graded cells and pytest (round 5): one test each."""

import math

import tinytorch as tt
from tinytorch import nn
from tinytorch.training import EarlyStopping, Trainer
from tinytorch.training.trainer import train_step


def test_train_step_returns_the_first_non_finite_loss_at_once():
    # checking the total after the loop runs every micro-batch and turns inf, -inf into nan
    tt.manual_seed(0)
    model = nn.Linear(3, 1)
    opt = tt.optim.SGD(model.parameters(), lr=0.1)
    scales, calls = [math.inf, -math.inf], []

    def loss_fn(out, target):
        calls.append(1)
        return nn.functional.mse_loss(out, target) * scales[len(calls) - 1]
    batch = (tt.ones(2, 3), tt.zeros(2, 1))
    assert train_step(model, loss_fn, opt, [batch, batch]) == math.inf
    assert len(calls) == 1 and all(p.grad is None for p in model.parameters())


def test_early_stopping_needs_more_than_min_delta_beyond_the_last_best():
    equal = EarlyStopping(patience=1)
    assert [equal.update(v) for v in (1.0, 1.0)] == [False, True], "an equal value is no improvement"
    slow = EarlyStopping(patience=5, mode="max", min_delta=0.05)
    slow.update(0.6), slow.update(0.64)  # 0.64 is within min_delta (absolute, not relative): best stays 0.6
    assert (slow.best, slow.bad_evals) == (0.6, 1)
    slow.update(0.66)  # more than 0.05 above 0.6
    assert (slow.best, slow.bad_evals) == (0.66, 0)


def test_a_loader_without_len_ends_its_epoch_after_a_full_last_group(parts):
    model, opt, loss, train, _ = parts(n=32)  # 4 micro-batches: two full groups, no leftover

    class NoLength:
        def __iter__(self):
            return iter(train)
    trainer = Trainer(model, opt, loss, NoLength(), accum_steps=2, quiet=True)
    trainer.fit(max_steps=2)
    trainer._run_epoch(None)  # the iterator runs out: the epoch ends (a wrong loop would go on forever in fit)
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (2, 1, 0)
    trainer.fit(max_steps=3)
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (3, 1, 2)
