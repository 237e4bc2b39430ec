"""Module 13's provided code runs the lesson's own `_FlatUnit.gather` and `_FlatUnit.flatten`, and module 11's
model check, rather than copies of them: with prefetch and param_dtype on, in checkpoints, and in
ShardedOptimizer's consolidated state (on ThreadGroup ranks)."""

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.distributed as dist
from tinytorch.distributed import ThreadGroup
from tinytorch.distributed.fsdp import FullyShardedDataParallel, ShardedOptimizer, _FlatUnit
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn.functional import cross_entropy
from tinytorch.optim import AdamW

CONFIG = dict(vocab_size=23, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0, bias=False)
TOKENS = np.random.default_rng(0).integers(0, CONFIG["vocab_size"], (4, CONFIG["block_size"] + 1))
tt.manual_seed(0)
INIT = {k: v.numpy().copy() for k, v in GPT(GPTConfig(**CONFIG)).state_dict().items()}


def _wrapped(**options):
    model = GPT(GPTConfig(**CONFIG))
    model.load_state_dict(INIT)  # thread ranks share one RNG: the values come from outside
    return FullyShardedDataParallel(model, units=model.transformer.h, **options)


def _step(net, opt):
    logits, _ = net(tt.tensor(TOKENS[:, :-1], dtype=tt.int64))
    logits = logits.view(-1, logits.shape[-1]).float()
    cross_entropy(logits, tt.tensor(TOKENS[:, 1:], dtype=tt.int64).view(-1)).backward()
    opt.step()
    opt.zero_grad()


@pytest.fixture
def lesson_calls(monkeypatch):
    """The calls of the lesson's _FlatUnit.gather and _FlatUnit.flatten, on every thread rank, in order."""
    calls = []
    for name in ("gather", "flatten"):
        def counted(self, *args, _name=name, _original=getattr(_FlatUnit, name)):
            calls.append(_name)
            return _original(self, *args)
        monkeypatch.setattr(_FlatUnit, name, counted)
    return calls


def _counted(calls, what):
    """Run what() on this rank with `calls` emptied first; every rank's calls of the lesson's methods, by name."""
    dist.barrier()
    if dist.get_rank() == 0:
        calls.clear()
    dist.barrier()
    what()
    dist.barrier()
    counts = {name: calls.count(name) for name in ("gather", "flatten")}
    dist.barrier()  # every rank has counted before any calls more
    return counts


@pytest.mark.parametrize("options", [{"prefetch": True}, {"param_dtype": tt.bfloat16},
                                     {"prefetch": True, "zero_stage": 2}])
def test_the_options_gather_through_the_lessons_gather(lesson_calls, options):
    def rank():
        net = _wrapped(**options)
        issued, issue = [], net._issue_gather
        net._issue_gather = lambda unit, async_op: issued.append(async_op) or issue(unit, async_op)
        opt = AdamW(net.parameters(), lr=1e-2)
        counts = _counted(lesson_calls, lambda: [_step(net, opt) for _ in range(2)])
        return counts["gather"], issued
    ranks = ThreadGroup.run(2, rank)
    issued = [async_op for _, one_rank in ranks for async_op in one_rank]
    assert issued and (True in issued) == bool(options.get("prefetch")), f"gathers issued: {issued}"
    assert ranks[0][0] == len(issued), (
        f"{options}: each of the {len(issued)} gathers must run the lesson's _FlatUnit.gather, "
        f"it ran {ranks[0][0]} times")


def test_checkpoints_flatten_and_gather_through_the_lesson(lesson_calls):
    def rank():
        net = _wrapped(zero_stage=2)
        model_groups = net.module.configure_optimizers(weight_decay=0.1, learning_rate=1e-2).param_groups
        opt = ShardedOptimizer(net, [dict(g) for g in model_groups], AdamW, lr=1e-2)
        _step(net, opt)
        weights = [u.full.copy() for u in net.units]
        saved = {}
        counted_save = _counted(lesson_calls, lambda: saved.update(state=opt.state_dict()))
        unchanged = all(np.array_equal(u.full, w) for u, w in zip(net.units, weights))
        model_state = net.state_dict(rank0_only=False)
        counted_load = _counted(lesson_calls, lambda: (net.load_state_dict(model_state),
                                                       opt.load_state_dict(saved["state"])))
        return len(net.units), counted_save, counted_load, unchanged
    units, save, load, unchanged = ThreadGroup.run(2, rank)[0]
    assert unchanged, "gathering ZeRO-2's optimizer state must not write into the kept weights"
    assert save["gather"] == 2 * 2 * units, (
        f"ShardedOptimizer.state_dict gathers exp_avg and exp_avg_sq of each unit with the lesson's gather: "
        f"{save['gather']} calls on 2 ranks for {units} units")
    assert load["flatten"] == 2 * (units + 2 * units), (
        f"loading flattens the weights and both moments of each unit with the lesson's flatten: "
        f"{load['flatten']} calls on 2 ranks for {units} units")


def test_ranks_that_built_different_models_are_refused_naming_the_parameter():
    def rank():
        config = dict(CONFIG, n_embd=16 if dist.get_rank() == 0 else 8)
        model = GPT(GPTConfig(**config))
        FullyShardedDataParallel(model, units=model.transformer.h)
    with pytest.raises(ValueError, match=r"FullyShardedDataParallel: rank \d and rank \d have different parameters "
                                         r"\(\('transformer.wte.weight'"):
        ThreadGroup.run(2, rank)


@pytest.mark.parametrize("options", [{"prefetch": True}, {"param_dtype": tt.bfloat16}])
def test_a_gather_that_reads_the_group_works_under_the_options(monkeypatch, options):
    """A student's gather may read pg.size or pg.rank: the group the options hand it has them."""
    def gather(self, pg):
        out = self.xp.empty(pg.size * self.shard_size, dtype=self.dtype)
        pg.all_gather(out.reshape(pg.size, -1), self.shard.data.copy())
        return self._views(out)
    monkeypatch.setattr(_FlatUnit, "gather", gather)

    def rank():
        net = _wrapped(**options)
        opt = AdamW(net.parameters(), lr=1e-2)
        _step(net, opt)
        return [p.numpy().copy() for p in net.parameters()]
    plain = ThreadGroup.run(2, lambda: [p.numpy().copy() for p in _wrapped().parameters()])
    stepped = ThreadGroup.run(2, rank)
    assert len(stepped[0]) == len(plain[0]) and any(
        not np.array_equal(a, b) for a, b in zip(stepped[0], plain[0])), "the step ran and moved the shards"


def test_a_state_dict_of_other_shapes_is_refused_naming_the_key():
    """A transposed weight has the right size: flattened, it would load silently as other numbers."""
    def rank():
        net = _wrapped()
        bad = dict(INIT, **{"transformer.h.0.attn.c_attn.weight": INIT["transformer.h.0.attn.c_attn.weight"].T})
        with pytest.raises(RuntimeError, match=r"size mismatch for transformer\.h\.0\.attn\.c_attn\.weight"):
            net.load_state_dict({k: tt.tensor(v) for k, v in bad.items()})
        opt = ShardedOptimizer(net, [{"params": list(net.module.parameters())}], AdamW, lr=1e-2)
        _step(net, opt)
        state = opt.state_dict()
        first = next(iter(state["state"]))
        state["state"][first]["exp_avg"] = state["state"][first]["exp_avg"].reshape(-1)[:-1]
        with pytest.raises(RuntimeError, match=rf"state 'exp_avg' of parameter {first} has shape"):
            opt.load_state_dict(state)
        return True
    assert ThreadGroup.run(2, rank) == [True, True]


def test_a_key_left_out_with_strict_false_keeps_its_value():
    """PyTorch's strict=False loads the keys given and leaves the others as they are (it zeroed them)."""
    kept, changed = "transformer.h.1.mlp.c_fc.weight", "transformer.h.0.mlp.c_fc.weight"

    def rank():
        net = _wrapped()
        net.load_state_dict({changed: tt.tensor(np.full_like(INIT[changed], 0.5))}, strict=False)
        return {k: v.numpy() for k, v in net.state_dict().items()}  # rank 0 holds the consolidated state
    after = ThreadGroup.run(2, rank)[0]
    assert np.array_equal(after[kept], INIT[kept]), "a key left out of the state dict must keep its value"
    assert (after[changed] == 0.5).all()
