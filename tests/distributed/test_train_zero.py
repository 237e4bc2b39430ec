"""`tito train gpt --nproc N --zero {1,2,3} [--checkpoint-blocks]`, and the optimizer it uses under ZeRO-2/3.

ShardedOptimizer runs GPT's two AdamW groups (decay for matmul weights only) on FullyShardedDataParallel's
flat shards: it must step exactly like the plain optimizer, and its state_dict must be the plain one's, so a
checkpoint moves between world sizes. Then one real 2-rank ZeRO-3 run with checkpointed blocks, resumed by one
process, and the options the command refuses."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.distributed import FullyShardedDataParallel, ThreadGroup, get_rank, get_world_size
from tinytorch.distributed.fsdp import ShardedOptimizer
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import AdamW

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("distributed_launch", HERE / "launch.py")
_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_launch)

needs_mpi = pytest.mark.skipif(_launch.mpi_missing() is not None, reason=str(_launch.mpi_missing()))

CONFIG = dict(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
TOKENS = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (3, 6, CONFIG["block_size"] + 1))
OPTIM = dict(lr=1e-2, betas=(0.9, 0.99))
tt.manual_seed(0)
INIT = {k: v.numpy().copy() for k, v in GPT(GPTConfig(**CONFIG)).state_dict().items()}


def _loss(model, tokens):
    logits, _ = model(tt.tensor(tokens[:, :-1], dtype=tt.int64))
    return cross_entropy(logits.view(-1, logits.shape[-1]), tt.tensor(tokens[:, 1:], dtype=tt.int64).view(-1))


def _numpy(state):
    if isinstance(state, dict):
        return {k: _numpy(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_numpy(v) for v in state]
    return state.numpy().copy() if isinstance(state, tt.Tensor) else (state.copy() if hasattr(state, "copy") else state)


def _train(steps, sharded, load=None):
    """AdamW (GPT's decay groups) for `steps` batches from INIT (or from `load`); sharded: ZeRO-3 on this rank's part."""
    model = GPT(GPTConfig(**CONFIG))
    model.load_state_dict(INIT if load is None else load[0])
    groups = model.configure_optimizers(weight_decay=0.1, learning_rate=OPTIM["lr"], betas=OPTIM["betas"]).param_groups
    net, n, r = model, 1, 0
    if sharded:
        net = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=3)
        opt = ShardedOptimizer(net, [dict(g) for g in groups], AdamW, **OPTIM)
        n, r = get_world_size(), get_rank()
    else:
        opt = AdamW(groups, **OPTIM)
    if load is not None:
        opt.load_state_dict(load[1])
    for batch in TOKENS[:steps] if load is None else TOKENS[-steps:]:
        part = len(batch) // n
        _loss(net, batch[r * part:(r + 1) * part]).backward()
        opt.step()
        opt.zero_grad()
    return _numpy(net.state_dict()), _numpy(opt.state_dict())


def _assert_same(got, want, what, tol=1e-5):
    assert set(got) == set(want), f"{what}: keys {sorted(got)[:5]} vs {sorted(want)[:5]}"
    for key, value in want.items():
        if isinstance(value, dict):
            _assert_same(got[key], value, f"{what}[{key}]", tol)
        elif hasattr(value, "shape"):
            assert got[key].shape == value.shape, f"{what}[{key}]: shape {got[key].shape}, expected {value.shape}"
            worst = float(np.abs(got[key] - value).max()) if value.size else 0.0
            assert worst <= tol, f"{what}[{key}] differs from the plain AdamW run by {worst:.3g}"
        else:
            assert got[key] == value, f"{what}[{key}]: {got[key]!r}, expected {value!r}"


def test_sharded_optimizer_steps_and_saves_like_plain_adamw_with_decay_groups():
    model, optim = _train(3, sharded=False)
    for world in (2, 3):  # 3 ranks: the units' sizes are not multiples of 3, so the shards are padded
        got_model, got_optim = ThreadGroup.run(world, _train, 3, True)[0]
        _assert_same(got_model, model, f"ZeRO-3 on {world} ranks, weights")
        assert got_optim["param_groups"] == optim["param_groups"], "the groups are the plain optimizer's"
        _assert_same(got_optim["state"], optim["state"], f"ZeRO-3 on {world} ranks, optimizer state")


def test_a_sharded_checkpoint_resumes_at_another_world_size():
    model, optim = _train(3, sharded=False)
    two_steps = ThreadGroup.run(3, _train, 2, True)[0]  # consolidated at world size 3 ...
    model_resumed, optim_resumed = ThreadGroup.run(2, _train, 1, True, two_steps)[0]  # ... re-sharded for 2
    _assert_same(model_resumed, model, "3 ranks for 2 steps, then 2 ranks for 1")
    _assert_same(optim_resumed["state"], optim["state"], "optimizer state after resuming")
    plain_model, _ = _train(1, False, load=two_steps)  # and one process loads it as plain AdamW
    _assert_same(plain_model, model, "3 ranks for 2 steps, then one process for 1")


def test_sharded_optimizer_refuses_groups_it_cannot_run():
    def build(groups):
        model = GPT(GPTConfig(**CONFIG))
        params = list(model.parameters())
        fsdp = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=2)
        ShardedOptimizer(fsdp, groups(params), AdamW, lr=1e-3)

    with pytest.raises(ValueError, match="leave out"):
        ThreadGroup.run(1, build, lambda params: [{"params": params[:-1]}])
    opt = ThreadGroup.run(1, lambda: _lr_groups())[0]
    with pytest.raises(ValueError, match="only in weight_decay"):
        opt.step()


def _lr_groups():
    model = GPT(GPTConfig(**CONFIG))
    params = list(model.parameters())
    fsdp = FullyShardedDataParallel(model, units=model.transformer.h, zero_stage=2)
    return ShardedOptimizer(fsdp, [{"params": params[:3], "lr": 1e-2}, {"params": params[3:]}], AdamW, lr=1e-3)


def _tito(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tito", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=HERE.parent.parent)


def _train_gpt(text, run, *args):
    proc = _tito("train", "gpt", "--config", "tiny", "--data", text, "--out", run, "--json", "--threads", "1",
                 "--sample-tokens", "0", *args)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.distributed
@needs_mpi
def test_tito_train_zero3_with_checkpointed_blocks_matches_ddp_and_resumes_in_one_process(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 400)
    zero3 = _train_gpt(text, tmp_path / "zero3", "--steps", 4, "--nproc", 2, "--zero", 3, "--checkpoint-blocks")
    ddp = _train_gpt(text, tmp_path / "ddp", "--steps", 4, "--nproc", 2)
    assert zero3["world_size"] == 2 and zero3["steps"] == 4 and "ZeRO-3" in zero3["parallel"]
    for key in ("final_train_loss", "val_loss"):  # same batches, same AdamW groups, same clipping over all ranks
        assert np.isfinite(zero3[key]) and abs(zero3[key] - ddp[key]) < 1e-5, (
            f"{key}: ZeRO-3 with checkpointed blocks {zero3[key]}, DDP {ddp[key]}")
    weights = [tt.load(tmp_path / run / "model.safetensors") for run in ("zero3", "ddp")]
    worst = max(float(np.abs(weights[0][k].numpy() - w.numpy()).max()) for k, w in weights[1].items())
    assert worst < 1e-5, f"the consolidated ZeRO-3 weights differ from DDP's by {worst:.3g}"
    # the consolidated Adam moments: each rank gathers its shards' state keys in the same order (they pair
    # rank 0's exp_avg with rank 1's exp_avg_sq otherwise, in processes whose set orders differ)
    saved = [tt.load(sorted((tmp_path / run / "checkpoints").glob("*.safetensors"))[-1]) for run in ("zero3", "ddp")]
    moments = [k for k in saved[1] if k.startswith("state/optimizer/state/")]
    assert moments and set(moments) <= set(saved[0]), "ZeRO-3's checkpoint holds the plain optimizer's state"
    worst = max(float(np.abs(saved[0][k].numpy() - saved[1][k].numpy()).max()) for k in moments)
    assert worst < 1e-6, f"the consolidated ZeRO-3 optimizer state differs from DDP's by {worst:.3g}"

    resumed = _train_gpt(text, tmp_path / "zero3", "--steps", 5, "--resume")  # one process, from the checkpoint
    assert resumed["world_size"] == 1 and resumed["steps"] == 5 and np.isfinite(resumed["final_train_loss"])
    sample = _tito("sample", "--checkpoint", tmp_path / "zero3", "--max-new-tokens", 5, "--seed", 0)
    assert sample.returncode == 0 and len(sample.stdout.strip()) > 0, sample.stderr[-2000:]


def _recipe():
    spec = importlib.util.spec_from_file_location("gpt_text_recipe", HERE.parent.parent / "milestones" / "gpt_text.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    return recipe


def test_zero_in_one_process_is_a_group_of_one_and_trains_like_the_plain_run(tmp_path):
    recipe, text = _recipe(), tmp_path / "text.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 400)
    runs = {zero: recipe.train(data=text, preset="tiny", steps=3, out=tmp_path / f"zero{zero}", quiet=True,
                               sample_tokens=0, zero=zero, checkpoint_blocks=zero == 3) for zero in (None, 1, 3)}
    for zero in (1, 3):
        assert runs[zero]["world_size"] == 1 and f"ZeRO-{zero}" in runs[zero]["parallel"]
        assert abs(runs[zero]["val_loss"] - runs[None]["val_loss"]) < 1e-5, (
            f"--zero {zero} in one process: val loss {runs[zero]['val_loss']}, plain {runs[None]['val_loss']}")


@pytest.mark.parametrize("args, message", [
    (["--nproc", 2, "--checkpoint-blocks"], "--checkpoint-blocks with --nproc needs --zero 2 or 3"),
    (["--zero", 1, "--checkpoint-blocks"], "--checkpoint-blocks with --zero 1 needs --zero 2 or 3"),
    (["--nproc", 2, "--zero", 4], "--zero 4: choose 1"),
])
def test_tito_train_refuses_parallel_settings_that_cannot_run(tmp_path, args, message):
    proc = _tito("train", "gpt", "--config", "tiny", "--steps", 1, "--out", tmp_path / "run", *args)
    assert proc.returncode == 2, f"exit {proc.returncode}: {proc.stdout[-1000:]}{proc.stderr[-2000:]}"
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists(), "a refused run writes nothing"
