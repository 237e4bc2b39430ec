"""Module 07's counts follow the backend's one rule (`_check_whole`): a Python int or a NumPy integer, never
a bool or a float (2.0 neither), and at least the argument's minimum. `threads` refused np.int64; accum_steps,
keep_last, epochs and max_steps took True and 2.5."""

import pytest

from tinytorch.training import EarlyStopping, ThreadedStep, Trainer


def _trainer(parts, tmp_path, **options):
    model, opt, loss, loader, val = parts(n=16, batch_size=8)
    return Trainer(model, opt, loss, loader, val_loader=val, checkpoint_dir=tmp_path, quiet=True, **options)


# name: (call(parts, tmp_path, value), a good value, the minimum, the error it raises)
SITES = {
    "Trainer.threads": (lambda p, d, v: _trainer(p, d, threads=v), 2, 1, "threads must be a whole number >= 1"),
    "ThreadedStep.threads": (lambda p, d, v: ThreadedStep(p()[0], v), 2, 1, "threads must be a whole number >= 1"),
    "Trainer.accum_steps": (lambda p, d, v: _trainer(p, d, accum_steps=v), 2, 1, "accum_steps must be a whole"),
    "Trainer.eval_every": (lambda p, d, v: _trainer(p, d, eval_every=v), 2, 1, "eval_every must be a whole .*None"),
    "Trainer.checkpoint_every": (lambda p, d, v: _trainer(p, d, checkpoint_every=v), 2, 1,
                                 "checkpoint_every must be a whole .*None"),
    "Trainer.keep_last": (lambda p, d, v: _trainer(p, d, keep_last=v), 2, 1, "keep_last must be a whole .*None"),
    "EarlyStopping.patience": (lambda p, d, v: EarlyStopping(patience=v), 2, 1,
                               r"patience must be a whole number >= 1, got .* \(a count of evaluations\)"),
    "fit.epochs": (lambda p, d, v: _trainer(p, d).fit(epochs=v), 2, 0, "epochs must be a whole number >= 0"),
    "fit.max_steps": (lambda p, d, v: _trainer(p, d).fit(max_steps=v), 2, 0, "max_steps must be a whole number >= 0"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_counts_follow_one_whole_number_rule(cpu_parts, tmp_path, site, whole_number_rule):
    call, good, minimum, error = SITES[site]
    whole_number_rule(lambda value: call(cpu_parts, tmp_path, value), good, minimum, error)

