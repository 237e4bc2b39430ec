"""The Trainer on edge inputs, against what a hand-written PyTorch loop does: empty loaders, limits,
pruning settings, the samples counted in a step whose last micro-batch is smaller, and the loop's
losses, weights and learning rates step for step."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.data import DataLoader, TensorDataset
from tinytorch.training import EarlyStopping, Trainer, evaluate
from tinytorch.training.checkpoint import list_checkpoints, prune_checkpoints


class _EmptyWithoutLen:
    """A loader that yields no batches, as a DataLoader with drop_last=True and fewer samples than batch_size;
    it counts the epochs asked of it, and refuses a 4th: a loop that never ends."""

    def __init__(self):
        self.epochs = 0

    def __iter__(self):
        self.epochs += 1
        assert self.epochs <= 3, "fit keeps starting epochs of a loader that yields no batches"
        return iter(())


class _EmptyLoader(_EmptyWithoutLen):
    def __len__(self):
        return 0


@pytest.mark.parametrize("loader", [_EmptyLoader, _EmptyWithoutLen])
@pytest.mark.parametrize("limits", [{"max_steps": 5}, {"epochs": 2}, {"epochs": 10, "max_steps": 5}])
def test_an_empty_train_loader_is_an_error_not_an_endless_loop(parts, loader, limits):
    model, opt, loss, _, _ = parts(n=16, batch_size=8)
    empty = loader()
    with pytest.raises(ValueError, match="no batches"):
        Trainer(model, opt, loss, empty, quiet=True).fit(**limits)
    assert empty.epochs <= 1


@pytest.mark.parametrize("limits", [{"max_steps": -1}, {"epochs": -1}, {"epochs": 2, "max_steps": -1}])
def test_negative_limits_are_refused(parts, limits):
    # Lightning reads max_steps=-1 as "no limit": a run that silently took no step would look like a bug elsewhere
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    with pytest.raises(ValueError, match="epochs|max_steps"):
        Trainer(model, opt, loss, loader, quiet=True).fit(**limits)


def test_zero_limits_take_no_step(parts):
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    trainer = Trainer(model, opt, loss, loader, quiet=True)
    assert len(trainer.fit(max_steps=0).train) == 0 and len(trainer.fit(epochs=0).train) == 0
    assert (trainer.step, trainer.epoch, trainer.batch_in_epoch) == (0, 0, 0)


@pytest.mark.parametrize("keep_last", [0, -1])
def test_keep_last_below_one_is_refused(parts, tmp_path, keep_last):
    # keep_last=-1 deleted every checkpoint, the one just written too; 0 kept them all
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    with pytest.raises(ValueError, match="keep_last"):
        Trainer(model, opt, loss, loader, checkpoint_dir=tmp_path, checkpoint_every=1, keep_last=keep_last, quiet=True)
    Trainer(model, opt, loss, loader, checkpoint_dir=tmp_path, checkpoint_every=1, keep_last=None,
            quiet=True).fit(max_steps=2)
    assert len(list_checkpoints(tmp_path)) == 2, "keep_last=None keeps every checkpoint"


@pytest.mark.parametrize("keep_last", [0, -1])
def test_prune_checkpoints_refuses_keep_last_below_one(tmp_path, keep_last):
    # the public prune_checkpoints deleted all but the oldest for -1 (the newest went) and kept all for 0
    for step in (1, 2, 3):
        (tmp_path / f"step_{step}.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="keep_last must be a whole number >= 1"):
        prune_checkpoints(tmp_path, keep_last)
    assert len(list_checkpoints(tmp_path)) == 3, "a refused prune deletes nothing"
    prune_checkpoints(tmp_path, None)
    assert len(list_checkpoints(tmp_path)) == 3, "None keeps every checkpoint"
    prune_checkpoints(tmp_path, 1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_3.safetensors"]


def test_early_stopping_patience_becomes_a_python_int():
    assert type(EarlyStopping(patience=np.int64(2)).patience) is int


@pytest.mark.parametrize("accum_steps", [1, 2, 4])
def test_samples_seen_count_a_smaller_last_micro_batch(parts, accum_steps):
    # 42 samples in micro-batches of 8: the 6th has 2. Each step counts its micro-batches' own sizes.
    model, opt, loss, loader, _ = parts(n=42, batch_size=8)
    history = Trainer(model, opt, loss, loader, accum_steps=accum_steps, quiet=True).fit(epochs=2)
    assert history.seen == 2 * 42
    assert history.summary()["samples_per_s_mean"] == pytest.approx(84 / history.seconds)


def test_tokens_seen_count_a_smaller_last_micro_batch(device):
    rng = np.random.default_rng(0)
    x = tt.tensor(rng.standard_normal((10, 3, 4)).astype(np.float32), device=device)
    y = tt.tensor(rng.integers(0, 5, (10, 3)), device=device)  # integer targets of 2 dims: tokens
    tt.manual_seed(0)
    model = nn.Linear(4, 5).to(device)

    def loss(out, target):
        return nn.functional.cross_entropy(out.reshape(-1, 5), target.reshape(-1))
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # one step of micro-batches of 4, 4 and 2 sequences
    history = Trainer(model, tt.optim.SGD(model.parameters(), lr=0.1), loss, loader, accum_steps=3,
                      quiet=True).fit(epochs=1)
    assert (history.unit, history.seen) == ("tokens", 30)


@pytest.mark.parity
@pytest.mark.parametrize("accum_steps", [1, 4])
@pytest.mark.parametrize("clip", [None, 0.5])
def test_trainer_matches_a_hand_written_torch_loop(accum_steps, clip):
    """42 samples, micro-batches of 8 (the last of 2), SGD with momentum and a StepLR schedule stepped once per
    optimizer step: the same losses, learning rates and weights as the loop a PyTorch user writes."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((42, 5)).astype(np.float32), rng.integers(0, 3, 42)
    tt.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    ref = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for p, q in zip(model.parameters(), ref.parameters()):
            q.copy_(torch.from_numpy(p.data.copy()))
    opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = tt.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.8)
    history = Trainer(model, opt, nn.functional.cross_entropy, DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)),
                      batch_size=8), scheduler=sched, accum_steps=accum_steps, clip_grad_norm=clip,
                      quiet=True).fit(epochs=2)

    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    ref_sched = torch.optim.lr_scheduler.StepLR(ref_opt, step_size=1, gamma=0.8)
    batches = [(torch.from_numpy(x[i:i + 8]), torch.from_numpy(y[i:i + 8])) for i in range(0, 42, 8)]
    losses, lrs = [], []
    for _ in range(2):
        for start in range(0, len(batches), accum_steps):
            group = batches[start:start + accum_steps]  # the epoch's last group is stepped, as a mean of its own
            lrs.append(ref_opt.param_groups[0]["lr"])
            ref_opt.zero_grad()
            total = 0.0
            for inputs, target in group:
                batch_loss = torch.nn.functional.cross_entropy(ref(inputs), target)
                (batch_loss / len(group)).backward()
                total += batch_loss.item()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(ref.parameters(), clip)
            ref_opt.step()
            ref_sched.step()
            losses.append(total / len(group))
    assert history.losses == pytest.approx(losses, rel=1e-5, abs=1e-6)
    assert [r["lr"] for r in history.train] == pytest.approx(lrs, rel=1e-12)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("option", ["eval_every", "checkpoint_every"])
@pytest.mark.parametrize("value", [0, -1])
def test_eval_and_checkpoint_every_below_one_are_refused(parts, tmp_path, option, value):
    # 0 was read as "never" (eval_every=0 also turned off the end-of-epoch evaluation); None is how to say that
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    with pytest.raises(ValueError, match=f"{option} must be .*None"):
        Trainer(model, opt, loss, loader, val_loader=loader, checkpoint_dir=tmp_path, quiet=True, **{option: value})


def test_eval_every_and_checkpoint_every_none_keep_their_meaning(parts, tmp_path):
    # None: evaluate at the end of each epoch; no checkpoints during fit, one at its end
    model, opt, loss, loader, _ = parts(n=16, batch_size=8)
    trainer = Trainer(model, opt, loss, loader, val_loader=loader, checkpoint_dir=tmp_path, quiet=True)
    history = trainer.fit(epochs=2)
    assert [r["step"] for r in history.eval] == [2, 4]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000004.safetensors"]


@pytest.mark.parametrize("patience", [1.5, 2.0, True, "3"])
def test_early_stopping_patience_must_be_an_int(patience):
    # 1.5 was taken (stop after 2 bad evaluations); True counted as 1
    with pytest.raises((ValueError, TypeError), match="patience"):
        EarlyStopping(patience=patience)
    assert EarlyStopping(patience=np.int64(2)).patience == 2


def test_early_stopping_takes_a_0d_tensor_as_its_float():
    stopper = EarlyStopping(patience=1)
    assert stopper.update(tt.tensor(0.5)) is False
    assert type(stopper.best) is float and stopper.best == 0.5, f"best became {stopper.best!r}"
    assert stopper.update(tt.tensor(np.float32(0.7))) is True and stopper.best == 0.5
    assert type(stopper.state_dict()["best"]) is float
    with pytest.raises(ValueError, match="one number"):
        stopper.update(tt.tensor([0.1, 0.2]))


@pytest.mark.parametrize("min_delta", [float("nan"), -0.1, float("inf"), -float("inf"), tt.tensor([0.1, 0.2])])
def test_early_stopping_refuses_a_nan_negative_or_infinite_min_delta(min_delta):
    # nan made every comparison False (nothing ever improved); a negative one counted getting worse as improving
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(min_delta=min_delta)


@pytest.mark.parametrize("min_delta", [True, "0.1", None, 1 + 0j, tt.tensor(True)])
def test_early_stopping_refuses_a_min_delta_that_is_not_a_real_number(min_delta):
    with pytest.raises(TypeError, match="min_delta"):
        EarlyStopping(min_delta=min_delta)


def test_early_stopping_takes_min_delta_as_a_float():
    for given, want in ((0, 0.0), (np.float32(0.25), 0.25), (tt.tensor(0.5), 0.5)):
        stopper = EarlyStopping(patience=1, min_delta=given)
        assert type(stopper.min_delta) is float and stopper.min_delta == want
    stopper = EarlyStopping(patience=1, min_delta=tt.tensor(0.5))
    assert [stopper.update(v) for v in (1.0, 0.6)] == [False, True]  # 0.4 better, not by more than 0.5


def _unbatched(n=6):
    """A DataLoader with batch_size=None: each item is one sample, its target a 0-d Tensor."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, 3)).astype(np.float32), rng.integers(0, 3, n)
    return DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)), batch_size=None), x, y


def test_evaluate_counts_an_unbatched_sample_as_one():
    # len() of the 0-d target raised a TypeError
    loader, x, y = _unbatched()
    tt.manual_seed(0)
    model = nn.Linear(3, 3)
    got = evaluate(model, loader, nn.functional.cross_entropy, {"acc": lambda out, t: float(out.argmax() == t)})
    losses = [nn.functional.cross_entropy(model(tt.tensor(a)), tt.tensor(b)).item() for a, b in zip(x, y)]
    assert got["loss"] == pytest.approx(np.mean(losses), rel=1e-6)
    assert got["acc"] == pytest.approx(np.mean(model(tt.tensor(x)).numpy().argmax(-1) == y))


@pytest.mark.parametrize("accum_steps", [1, 4])
def test_fit_counts_an_unbatched_sample_as_one(accum_steps):
    loader, _, _ = _unbatched()
    tt.manual_seed(0)
    model = nn.Linear(3, 3)
    trainer = Trainer(model, tt.optim.SGD(model.parameters(), lr=0.1), nn.functional.cross_entropy, loader,
                      accum_steps=accum_steps, quiet=True)
    history = trainer.fit(epochs=1)
    assert (history.seen, history.unit) == (6, "samples")


def test_a_skipped_step_steps_the_scheduler_too(parts):
    # nan_policy="skip" advanced trainer.step but not the scheduler: the schedule fell one step behind per skip
    model, opt, loss, loader, _ = parts(n=48, batch_size=8, lr=1.0)
    sched = tt.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    calls = []

    def poisoned(out, target):
        calls.append(1)
        return loss(out, target) * (float("nan") if len(calls) in (2, 3) else 1.0)
    trainer = Trainer(model, opt, poisoned, loader, scheduler=sched, nan_policy="skip", quiet=True)
    history = trainer.fit(max_steps=5)
    assert [bool(r.get("skipped")) for r in history.train] == [False, True, True, False, False]
    assert sched.last_epoch == trainer.step == 5
    assert [r["lr"] for r in history.train] == [0.5 ** s for s in range(5)], "lr at step s is the schedule's at s"
    assert opt.param_groups[0]["lr"] == 0.5 ** 5
