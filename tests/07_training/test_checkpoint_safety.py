"""A checkpoint that cannot be loaded leaves the Trainer as it was, and says what is wrong with it;
a save that was killed leaves no temporary file behind for good."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.training import Trainer
from tinytorch.training.checkpoint import CheckpointError, ForeignCheckpointError, save_checkpoint


def _saved_mid_epoch(parts, folder):
    """A checkpoint of 3 steps into an epoch of 8 batches, with AdamW state in it."""
    model, opt, loss, loader, _ = parts(n=64, batch_size=8, shuffle=True, optimizer="adamw", seed=1)
    trainer = Trainer(model, opt, loss, loader, checkpoint_dir=folder, quiet=True)
    trainer.fit(max_steps=3)
    return trainer.save_checkpoint()


def _two_groups(parts):
    """The same model, its optimizer's parameters split into two groups."""
    model, _, loss, loader, _ = parts(n=64, batch_size=8, shuffle=True, seed=2)
    first, *rest = model.parameters()
    return model, tt.optim.AdamW([{"params": [first]}, {"params": rest}], lr=0.1), loss, loader


def _fewer_batches(parts):
    """A loader with 2 batches an epoch: the checkpoint's position (batch 3) is past its end."""
    model, opt, loss, loader, _ = parts(n=16, batch_size=8, shuffle=True, optimizer="adamw", seed=2)
    return model, opt, loss, loader


@pytest.mark.parametrize("build, expected", [
    (_two_groups, "loaded state dict has 1 parameter groups, this optimizer has 2"),
    (_fewer_batches, "batch 3 of an epoch"),
])
def test_a_checkpoint_that_does_not_fit_leaves_model_and_optimizer_untouched(parts, tmp_path, build, expected):
    path = _saved_mid_epoch(parts, tmp_path / "ckpt")
    model, opt, loss, loader = build(parts)
    trainer = Trainer(model, opt, loss, loader, quiet=True)
    trainer.fit(max_steps=1)
    weights = [p.data.copy() for p in model.parameters()]
    moments = {i: {k: np.copy(v) for k, v in s.items()} for i, s in opt.state_dict()["state"].items()}
    with pytest.raises(ForeignCheckpointError, match=expected) as raised:
        trainer.load_checkpoint(path)
    assert path.name in str(raised.value), "the error names the file"
    for before, p in zip(weights, model.parameters()):
        np.testing.assert_array_equal(p.data, before, err_msg="a failed load changed the model")
    after = opt.state_dict()["state"]
    assert after.keys() == moments.keys()
    for i, entries in moments.items():
        for k, v in entries.items():
            np.testing.assert_array_equal(after[i][k], v, err_msg="a failed load changed the optimizer")
    assert trainer.step == 1, "a failed load changed the Trainer's position"


def test_a_checkpoint_of_something_else_says_so(parts, tmp_path):
    model, opt, loss, loader, _ = parts(n=64, batch_size=8, shuffle=True, optimizer="adamw", seed=1)
    trainer = Trainer(model, opt, loss, loader, quiet=True)
    other = save_checkpoint(tmp_path / "other.safetensors", {"weights": np.ones(3, dtype=np.float32)})
    with pytest.raises(ForeignCheckpointError, match="other.safetensors is not a Trainer checkpoint: it has no "
                                                     "'model'"):
        trainer.load_checkpoint(other)
    foreign = tmp_path / "foreign.safetensors"
    tt.save(model.state_dict(), foreign)  # a valid safetensors file, but weights alone
    with pytest.raises(ForeignCheckpointError, match="foreign.safetensors is not a TinyTorch checkpoint"):
        trainer.load_checkpoint(foreign)
    trainer.load_checkpoint(_saved_mid_epoch(parts, tmp_path / "ckpt"))  # a checkpoint that fits loads
    assert trainer.step == 3


def test_a_foreign_checkpoint_is_not_skipped_as_damaged_by_resume(parts, tmp_path):
    _saved_mid_epoch(parts, tmp_path / "ckpt")
    model, opt, loss, loader = _fewer_batches(parts)
    trainer = Trainer(model, opt, loss, loader, checkpoint_dir=tmp_path / "ckpt", resume=True, quiet=True)
    with pytest.raises(ForeignCheckpointError, match="batch 3 of an epoch"):
        trainer.fit(max_steps=5)


def test_the_next_save_removes_temporary_files_of_a_killed_save_and_nothing_else(parts, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    stale = [".step_00000002.safetensors.k3j_x9q2.tmp", ".step_00000040.safetensors.abcdefgh.tmp"]
    kept = [".step_00000002.safetensors.tmp", "step_00000002.safetensors.abcdefgh.tmp", ".model.safetensors.ab12cd34.tmp",
            "notes.tmp", ".step_notes.safetensors.abcdefgh.tmp"]
    for name in stale + kept:
        (folder / name).write_bytes(b"half a checkpoint")
    model, opt, loss, loader, _ = parts(n=32, batch_size=8)
    Trainer(model, opt, loss, loader, checkpoint_dir=folder, checkpoint_every=1, quiet=True).fit(max_steps=1)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(kept + ["step_00000001.safetensors"]), names


def test_a_failed_save_leaves_the_other_temporary_files_alone(parts, tmp_path, monkeypatch):
    from tinytorch.training import trainer as trainer_module

    folder = tmp_path / "ckpt"
    folder.mkdir()
    stale = folder / ".step_00000002.safetensors.k3j_x9q2.tmp"
    stale.write_bytes(b"half a checkpoint")

    def disk_full(path, state):
        raise OSError("simulated: no space left on device")
    monkeypatch.setattr(trainer_module, "save_checkpoint", disk_full)
    model, opt, loss, loader, _ = parts(n=32, batch_size=8)
    with pytest.raises(OSError, match="simulated"):
        Trainer(model, opt, loss, loader, checkpoint_dir=folder, quiet=True).save_checkpoint()
    assert stale.exists(), "only a successful save cleans up"


def test_a_damaged_checkpoint_is_still_a_checkpoint_error(parts, tmp_path):
    path = _saved_mid_epoch(parts, tmp_path / "ckpt")
    path.write_bytes(path.read_bytes()[:-100])
    model, opt, loss, loader = _fewer_batches(parts)
    with pytest.raises(CheckpointError, match="truncated or corrupt") as raised:
        Trainer(model, opt, loss, loader, quiet=True).load_checkpoint(path)
    assert not isinstance(raised.value, ForeignCheckpointError)


@pytest.mark.parametrize("state", [None, '{"__tensor__": "no such array"}', "not json"])
def test_a_checkpoint_with_a_forged_state_is_a_checkpoint_error(tmp_path, state):
    """A header that claims the format but holds no state, or one no save writes (its SHA-256 matching): the
    file is damaged, not a KeyError or a JSONDecodeError from deep inside the loader."""
    import safetensors.numpy

    from tinytorch.training.checkpoint import FORMAT, _checksum, load_checkpoint
    arrays = {"a": np.zeros(2, dtype=np.float32)}
    metadata = {"format": FORMAT}
    if state is not None:
        metadata.update(state=state, sha256=_checksum(arrays, state))
    path = tmp_path / "forged.safetensors"
    path.write_bytes(safetensors.numpy.save(arrays, metadata=metadata))
    with pytest.raises(CheckpointError, match="forged.safetensors"):
        load_checkpoint(path)
