"""Wrong answers a mutation review saw pass both the graded cells and pytest (round 4): one test each."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.training import EarlyStopping, Trainer, evaluate
from tinytorch.training.checkpoint import load_checkpoint
from tinytorch.training.trainer import train_step


@pytest.mark.parity
def test_train_step_clips_once_after_all_micro_batches_like_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((16, 2)).astype(np.float32)
    tt.manual_seed(0)
    model = nn.Linear(4, 2)
    ref = torch.nn.Linear(4, 2)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(model.weight.data)), ref.bias.copy_(torch.tensor(model.bias.data))
    halves = [(tt.tensor(x[:8]), tt.tensor(y[:8])), (tt.tensor(x[8:]), tt.tensor(y[8:]))]
    train_step(model, nn.functional.mse_loss, tt.optim.SGD(model.parameters(), lr=0.1), halves, clip_grad_norm=0.5)
    torch.nn.functional.mse_loss(ref(torch.tensor(x)), torch.tensor(y)).backward()
    torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    torch.optim.SGD(ref.parameters(), lr=0.1).step()
    np.testing.assert_allclose(model.weight.data, ref.weight.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(model.bias.data, ref.bias.detach().numpy(), atol=1e-6)


def test_evaluate_on_an_empty_loader_raises():
    with pytest.raises(ValueError, match="no batches"):
        evaluate(nn.Linear(1, 1), [], nn.functional.mse_loss)


def test_early_stopping_keeps_saying_stop_after_patience_runs_out():
    stopper = EarlyStopping(patience=1)
    assert [stopper.update(v) for v in (1.0, 2.0, 3.0)] == [False, True, True]
    stopper.load_state_dict({"best": 1.0, "bad_evals": 2})  # e.g. a checkpoint from a run with patience 2
    assert stopper.update(4.0)


@pytest.mark.parametrize("mode, values, best", [("min", [math.nan, 0.5, 0.4], 0.4), ("max", [math.nan, 0.5, 0.6], 0.6)])
def test_early_stopping_a_first_nan_is_never_the_best(mode, values, best):
    # Lightning starts from +inf (min) or -inf (max): a nan compares False, so it never becomes the best
    stopper = EarlyStopping(patience=2, mode=mode)
    assert [stopper.update(v) for v in values] == [False, False, False]
    assert stopper.best == best and stopper.bad_evals == 0
    nans = EarlyStopping(patience=2)
    assert [nans.update(math.nan) for _ in range(2)] == [False, True], "nans count as bad evaluations"


def test_a_full_group_on_the_epochs_last_micro_batch_closes_the_epoch(parts):
    model, opt, loss, train, _ = parts(n=32)  # 4 micro-batches of 8: steps after 2 and 4
    trainer = Trainer(model, opt, loss, train, accum_steps=2, quiet=True)
    trainer.fit(max_steps=2)
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (2, 1, 0)


def test_state_dict_saves_the_models_buffers(parts):
    model, opt, loss, train, _ = parts()
    model[0].register_buffer("marker", tt.ones(1))
    state = Trainer(model, opt, loss, train, quiet=True).state_dict()
    assert sorted(state["model"]) == sorted(model.state_dict()) and "0.marker" in state["model"]


def _resumable(folder, parts, **options):
    model, opt, loss, train, _ = parts(n=40, shuffle=True, dropout=0.2, optimizer="adamw", lr=0.01)
    return Trainer(model, opt, loss, train, accum_steps=2, checkpoint_dir=folder, seed=3, quiet=True, **options)


@pytest.mark.parametrize("start", [3, 4])  # 3 ends epoch 0 (nothing to replay); 4 is mid-epoch 1
def test_a_resumed_runs_next_checkpoint_holds_the_same_generator_states(tmp_path, parts, start):
    _resumable(tmp_path / "whole", parts, checkpoint_every=1, keep_last=None).fit(max_steps=6)
    again = _resumable(tmp_path / "again", parts, checkpoint_every=1)
    again.load_checkpoint(tmp_path / f"whole/step_{start:08d}.safetensors")
    again.fit(max_steps=6)
    for step in range(start + 1, 7):
        name = f"step_{step:08d}.safetensors"
        assert load_checkpoint(tmp_path / "again" / name)["rng"] == load_checkpoint(tmp_path / "whole" / name)["rng"]
    whole = _resumable(tmp_path / "once", parts).fit(max_steps=8).losses
    resumed = _resumable(tmp_path / "twice", parts)  # and the run resumed twice trains like the whole one
    resumed.load_checkpoint(tmp_path / "again" / "step_00000005.safetensors")
    assert resumed.fit(max_steps=8).losses == whole[5:]


def test_load_checkpoint_restores_early_stopping(tmp_path, parts):
    stopper = EarlyStopping()
    stopper.update(0.5), stopper.update(0.7)
    path = _resumable(tmp_path, parts, early_stopping=stopper).save_checkpoint()
    resumed = _resumable(tmp_path, parts, early_stopping=EarlyStopping())
    resumed.load_checkpoint(path)
    assert resumed.early_stopping.state_dict() == {"best": 0.5, "bad_evals": 1}


def test_early_stopping_loads_a_checkpoint_saved_before_best_started_at_infinity():
    from tinytorch.training import EarlyStopping

    for mode, value, start in (("min", 0.5, math.inf), ("max", 0.5, -math.inf)):
        stopper = EarlyStopping(patience=2, mode=mode)
        stopper.load_state_dict({"best": None, "bad_evals": 0})  # the old format: no evaluation yet
        assert stopper.best == start and stopper.update(value) is False and stopper.best == value
