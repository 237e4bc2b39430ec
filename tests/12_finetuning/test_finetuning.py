"""Module 12: LoRA (merge exactness, trainable count, adapter files), classification, distillation, RNN grads."""

import os

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.autograd import gradcheck
from tinytorch.finetune import (GPTForSequenceClassification, LoRALinear, adapter_state_dict, distillation_loss,
                                inject_lora, last_token_pool, load_adapter_state_dict, load_adapters, mean_pool,
                                merge_and_unload, merge_lora, save_adapters, soft_targets)
from tinytorch.models import GPT, GPTConfig
from tinytorch.nn import functional as F

SMALL = dict(vocab_size=40, block_size=16, n_layer=2, n_head=4, n_embd=96)


def small_classifier(seed=0, **lora):
    tt.manual_seed(seed)
    model = GPTForSequenceClassification(GPT(GPTConfig(**SMALL)), num_labels=2)
    names = inject_lora(model, ["attn.c_attn"], **{"rank": 4, "alpha": 8, **lora})
    model.score.requires_grad_(True)
    return model, names


def batch(seed=0, B=4, T=10):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, SMALL["vocab_size"], (B, T))
    lengths = rng.integers(1, T + 1, B)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    return tt.tensor(idx), mask


def test_lora_trains_only_adapters_and_head_with_few_parameters():
    model, names = small_classifier()
    assert names == ["gpt.transformer.h.0.attn.c_attn", "gpt.transformer.h.1.attn.c_attn"]
    trainable = model.num_parameters(trainable_only=True)
    total = model.num_parameters()
    assert trainable == 2 * 4 * (96 + 288) + 96 * 2, "r·(in + out) per adapted layer plus the head"
    assert trainable / total < 0.02, f"{trainable / total:.2%} of the parameters train; LoRA r=4 should be < 2 %"
    idx, mask = batch()
    F.cross_entropy(model(idx, mask), tt.tensor([0, 1, 0, 1])).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} trains but got no gradient"
        else:
            assert p.grad is None, f"{name} is frozen but got a gradient"


def test_merge_and_unmerge_are_exact():
    model, _ = small_classifier(dropout=0.1)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.lora_B.weight, 0.0, 0.5)
    model.eval()
    idx, mask = batch(1)
    before = [m.base.weight.numpy().copy() for m in model.modules() if isinstance(m, LoRALinear)]
    out = model(idx, mask).numpy()
    merge_lora(model)
    assert np.abs(model(idx, mask).numpy() - out).max() < 1e-5, "merged forward must equal the adapter forward"
    for m, w in zip([m for m in model.modules() if isinstance(m, LoRALinear)], before):
        assert m.merged and np.abs(m.base.weight.numpy() - w).max() > 1e-3, "merge changes the base weight"
        m.unmerge()
        assert np.abs(m.base.weight.numpy() - w).max() <= 1e-6, "unmerge restores the base weight to 1e-6"
    with pytest.raises(RuntimeError, match="not merged"):
        m.unmerge()


def test_lora_dropout_only_in_training():
    tt.manual_seed(0)
    lora = LoRALinear(nn.Linear(8, 8), rank=2, alpha=2, dropout=0.5)
    nn.init.normal_(lora.lora_B.weight, 0.0, 1.0)
    x = tt.randn(4, 8)
    assert not np.allclose(lora(x).numpy(), lora(x).numpy()), "dropout on the adapter path in training"
    lora.eval()
    assert np.allclose(lora(x).numpy(), lora(x).numpy())


def test_adapter_file_is_small_and_round_trips(tmp_path):
    model, _ = small_classifier()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.data[...] = np.random.default_rng(0).standard_normal(p.shape)
    save_adapters(model, tmp_path / "adapters.safetensors")
    tt.save(model.state_dict(), tmp_path / "model.safetensors")
    ratio = os.path.getsize(tmp_path / "adapters.safetensors") / os.path.getsize(tmp_path / "model.safetensors")
    assert ratio < 0.05, f"the adapter file is {ratio:.1%} of the model"
    idx, mask = batch(2)
    want = model.eval()(idx, mask).numpy()
    fresh, _ = small_classifier(seed=0)  # same base weights (same seed), adapters at their init
    assert not np.allclose(fresh.eval()(idx, mask).numpy(), want)
    load_adapters(fresh, tmp_path / "adapters.safetensors")
    np.testing.assert_allclose(fresh(idx, mask).numpy(), want, atol=1e-6)
    other, _ = small_classifier(rank=2)
    with pytest.raises(ValueError, match="another rank"):
        load_adapters(other, tmp_path / "adapters.safetensors")


def test_load_adapter_state_dict_checks_everything_before_changing_the_model():
    model, _ = small_classifier()
    state = {name: p.detach() * 0 + 1 for name, p in adapter_state_dict(model).items()}  # a checkpoint's tensors
    fresh, _ = small_classifier(seed=1)
    assert load_adapter_state_dict(fresh, state) is fresh
    for name, p in adapter_state_dict(fresh).items():
        assert np.all(p.numpy() == 1), f"{name} was not loaded"
    before = {name: p.numpy().copy() for name, p in fresh.state_dict().items()}
    last = list(state)[-1]  # the others fit: a check done while copying would have copied them already
    bad = {**{name: t * 0 + 2 for name, t in state.items()}, last: state[last][:1]}
    with pytest.raises(ValueError, match=f"from a checkpoint\\): {last} has shape"):
        load_adapter_state_dict(fresh, bad, source="from a checkpoint")
    for name, value in fresh.state_dict().items():
        assert np.array_equal(value.numpy(), before[name]), f"{name} changed although the state did not fit"


def test_inject_lora_unknown_target_lists_the_layers():
    with pytest.raises(ValueError, match="c_fc"):
        inject_lora(GPT(GPTConfig(**SMALL)), ["attn.qkv"])


def test_inject_lora_with_a_typo_leaves_the_model_as_it_was():
    model = GPT(GPTConfig(**SMALL))
    with pytest.raises(ValueError, match="attn.qkv"):
        inject_lora(model, ["attn.c_attn", "attn.qkv"])  # one good target, one typo
    assert not any(isinstance(m, LoRALinear) for m in model.modules()), "no layer may be wrapped"
    assert all(p.requires_grad for p in model.parameters()), "nothing may be frozen"


def test_classifier_pools_the_last_real_token():
    tt.manual_seed(0)
    model = GPTForSequenceClassification(GPT(GPTConfig(**SMALL)), num_labels=3).eval()
    idx, mask = batch(3)
    logits = model(idx, mask)
    assert logits.shape == (4, 3)
    for b in range(4):  # right padding is invisible to a causal model: the row alone gives the same logits
        n = int(mask[b].sum())
        alone = model(tt.tensor(idx.numpy()[b:b + 1, :n]))
        np.testing.assert_allclose(alone.numpy()[0], logits.numpy()[b], atol=1e-5)
    with pytest.raises(ValueError, match="right-padded"):
        model(idx, np.array([[0, 1] * 5] * 4))


def test_last_token_pool_gradcheck():
    hidden = tt.randn(3, 4, 2, requires_grad=True)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert gradcheck(lambda h: last_token_pool(h, mask), (hidden,))


def test_mean_pool_leaves_padding_out():
    hidden = tt.randn(2, 4, 3, requires_grad=True)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = mean_pool(hidden, mask).numpy()
    np.testing.assert_allclose(pooled[0], hidden.numpy()[0, :2].mean(0), atol=1e-6, err_msg=(
        "mean_pool, row 0 has 2 real tokens of 4: the mean of those 2 (sum / mask count, not / T)"))
    np.testing.assert_allclose(pooled[1], hidden.numpy()[1].mean(0), atol=1e-6, err_msg=(
        "mean_pool, row 1 has no padding: the mean over all 4 tokens"))
    assert gradcheck(lambda h: mean_pool(h, mask), (hidden,))


def test_kl_div_gradcheck():
    rng = np.random.default_rng(0)
    a = tt.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    b = tt.tensor(rng.random((3, 4)) + 0.1, requires_grad=True)
    for reduction in ("batchmean", "sum", "mean", "none"):
        assert gradcheck(lambda u, v, r=reduction: F.kl_div(u, v, reduction=r), (a, b))
    assert gradcheck(lambda u, v: F.kl_div(u, v, reduction="batchmean", log_target=True), (a, b))


def test_distillation_loss_temperature_and_mix():
    rng = np.random.default_rng(0)
    zs = tt.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    zt = tt.tensor(rng.standard_normal((5, 3)))
    y = tt.tensor([0, 1, 2, 1, -100])
    for T in (1.0, 4.0):
        p = F.softmax(zt / T, -1)
        kl = F.kl_div(F.log_softmax(zs / T, -1), p, reduction="batchmean").item()
        assert abs(distillation_loss(zs, zt, temperature=T).item() - T * T * kl) < 1e-5, "soft term = T²·KL"
    ce = F.cross_entropy(zs, y, ignore_index=-100).item()
    soft = distillation_loss(zs, zt, temperature=2.0).item()
    mixed = distillation_loss(zs, zt, y, temperature=2.0, alpha=0.3).item()
    assert abs(mixed - (0.3 * soft + 0.7 * ce)) < 1e-5, "alpha·soft + (1 - alpha)·hard, ignored labels skipped"
    assert gradcheck(lambda s: distillation_loss(s, zt, y, temperature=2.0, alpha=0.5), (zs,))
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(zs, zt, temperature=0.0)


def test_distillation_takes_a_loaders_batches_and_refuses_sequence_logits():
    """distill's batches as a DataLoader gives them, (x, y) with x one tensor, train as (x,) does; (B, T, V)
    logits are refused (batchmean would sum over time) and named."""
    from tinytorch.finetune.distill import distill
    rng = np.random.default_rng(0)
    x, y = tt.tensor(rng.standard_normal((4, 3)).astype(np.float32)), tt.tensor([0, 1, 1, 0])
    runs = []
    for batch in ((x, y), ((x,), y)):
        tt.manual_seed(0)
        student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
        runs.append(distill(student, teacher, [batch], tt.optim.SGD(student.parameters(), lr=0.1)))
    assert runs[0] == runs[1]
    z = tt.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"student_logits must be \(B, classes\), got shape \(2, 3, 5\)"):
        distillation_loss(z, z)
    with pytest.raises(ValueError, match="differ in shape"):
        distillation_loss(tt.randn(2, 5), tt.randn(2, 4))


def test_recurrent_layers_name_a_wrong_state_or_an_empty_sequence():
    gru, lstm = nn.GRU(2, 3, batch_first=True), nn.LSTM(2, 3, batch_first=True)
    x = tt.randn(4, 5, 2)
    assert gru(x)[0].shape == lstm(x)[0].shape == (4, 5, 3)  # a right state and sequence run the cells
    with pytest.raises(TypeError, match="h_0 must be a Tensor"):
        gru(x, (tt.zeros(1, 4, 3), tt.zeros(1, 4, 3)))  # an LSTM's (h_0, c_0) passed to a GRU
    for layer in (gru, lstm):
        with pytest.raises(ValueError, match="no time steps"):
            layer(tt.randn(4, 0, 2))


def test_soft_targets_run_the_teacher_in_eval_without_graph():
    tt.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train()
    x = tt.randn(6, 4)
    a, b = soft_targets(teacher, x), soft_targets(teacher, x)
    assert not a.requires_grad and np.allclose(a.numpy(), b.numpy()), "eval mode (no dropout), no graph"
    assert teacher.training, "the teacher's mode is restored"


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_rnn_gradcheck_through_time(kind):
    """The input's gradient through two layers and three steps (parameter grads: tests/parity/test_rnn.py)."""
    tt.manual_seed(0)
    layer = getattr(nn, kind)(2, 3, num_layers=2, batch_first=True).double()
    h0 = tt.randn(2, 2, 3, dtype=np.float64, requires_grad=True)
    x = tt.randn(2, 3, 2, dtype=np.float64, requires_grad=True)
    state = lambda h: (h, h * 0.5) if kind == "LSTM" else h  # noqa: E731
    assert gradcheck(lambda inp, h: layer(inp, state(h))[0], (x, h0))


def test_a_model_with_lora_injected_still_generates_with_its_kv_cache():
    tt.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=16, n_layer=1, n_head=2, n_embd=16))
    inject_lora(model, targets=["attn.c_attn"], rank=2, alpha=4)
    out = model.generate(tt.tensor([[1, 2, 3]], dtype=tt.int64), max_new_tokens=4)
    assert out.shape == (1, 7), f"generate through LoRA layers: expected (1, 7), got {out.shape}"


def randomized_gpt(targets, seed=0, **config):
    """A small GPT with LoRA on `targets`, every B random (a fresh adapter would change nothing)."""
    tt.manual_seed(seed)
    model = GPT(GPTConfig(**{**SMALL, **config})).eval()
    inject_lora(model, targets, rank=4, alpha=8)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.lora_B.weight, 0.0, 0.1)
    return model


def logits(model, idx=((1, 2, 3, 4, 5),)):
    return model(tt.tensor(list(idx)))[0].numpy()


def test_merge_refuses_a_weight_tied_to_another_layer():
    model = randomized_gpt(["lm_head"])  # tie_weights: lm_head's weight is transformer.wte's
    want, wte = logits(model), model.transformer.wte.weight.numpy().copy()
    with pytest.raises(RuntimeError, match=r"lm_head\.base\.weight.*transformer\.wte\.weight"):
        merge_lora(model)
    assert not model.lm_head.merged and np.array_equal(model.transformer.wte.weight.numpy(), wte)
    np.testing.assert_array_equal(logits(model), want)  # the adapter still works, unmerged
    with pytest.raises(RuntimeError, match="not merged"):
        model.lm_head.unmerge()
    untied = randomized_gpt(["lm_head"], tie_weights=False)  # its own lm_head weight: merging is fine
    want, wte = logits(untied), untied.transformer.wte.weight.numpy().copy()
    merge_lora(untied)
    np.testing.assert_allclose(logits(untied), want, atol=1e-5)
    assert np.array_equal(untied.transformer.wte.weight.numpy(), wte)


def test_a_merged_model_checkpoint_round_trips(tmp_path):
    model = randomized_gpt(["attn.c_attn", "attn.c_proj"])
    unmerged_keys = set(model.state_dict())
    base = model.transformer.h[0].attn.c_attn.base.weight.numpy().copy()
    want = logits(model)
    merge_lora(model)
    tt.save(model.state_dict(), tmp_path / "merged.safetensors")
    state = tt.load(tmp_path / "merged.safetensors")
    # Into a model with the adapters not merged: its forward would add them a second time.
    with pytest.raises(RuntimeError, match="lora_merged"):
        randomized_gpt(["attn.c_attn", "attn.c_proj"], seed=1).load_state_dict(state)
    loaded = merge_lora(randomized_gpt(["attn.c_attn", "attn.c_proj"], seed=1))  # merged, like the checkpoint
    loaded.load_state_dict(state)
    np.testing.assert_allclose(logits(loaded), want, atol=1e-5)
    loaded.transformer.h[0].attn.c_attn.unmerge()  # the loaded adapters are the ones inside the weight
    np.testing.assert_allclose(loaded.transformer.h[0].attn.c_attn.base.weight.numpy(), base, atol=1e-6)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.unmerge()
    assert set(model.state_dict()) == unmerged_keys, "an unmerged model saves what it always saved"
    with pytest.raises(RuntimeError, match="lora_merged"):  # nor an unmerged checkpoint into a merged model
        merge_lora(randomized_gpt(["attn.c_attn", "attn.c_proj"], seed=1)).load_state_dict(model.state_dict())


def test_adapters_load_only_into_an_unmerged_model(tmp_path):
    model = randomized_gpt(["attn.c_attn"])
    save_adapters(model, tmp_path / "adapters.safetensors")
    merged = merge_lora(randomized_gpt(["attn.c_attn"], seed=1))
    with pytest.raises(ValueError, match="merged"):  # new adapters beside a weight that holds the old ones
        load_adapters(merged, tmp_path / "adapters.safetensors")


def test_merge_and_unload_gives_a_plain_gpt_for_save_pretrained(tmp_path):
    model = randomized_gpt(["attn.c_attn", "attn.c_proj"])
    want = logits(model)
    for prepare in (lambda m: m, merge_lora):  # with adapters, merged or not: GPT-2's format has no place for them
        with pytest.raises(ValueError, match="merge_and_unload"):
            prepare(model).save_pretrained(tmp_path)
    assert merge_and_unload(model) is model
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(GPT(GPTConfig(**SMALL)).state_dict()), "a plain GPT's names"
    np.testing.assert_allclose(logits(model), want, atol=1e-5)
    model.save_pretrained(tmp_path)
    np.testing.assert_allclose(logits(GPT.from_pretrained(tmp_path)), want, atol=1e-5)


def test_gru_cell_where_the_update_and_reset_gates_matter():
    """z ≠ ½ and r ≠ 1, so (1 − z)·n + z·h and n = tanh(n_x + r·n_h) are pinned (values from torch.nn.GRUCell)."""
    from tinytorch.nn.rnn import gru_cell
    h = tt.ones(1, 1)
    assert gru_cell(tt.tensor([[0.0, 1.0, 0.5]]), h, tt.zeros(3, 1)).item() == pytest.approx(0.8553, abs=1e-4)
    assert gru_cell(tt.tensor([[0.0, 0.0, 1.0]]), h, tt.tensor([[0.0], [0.0], [1.0]])).item() == \
        pytest.approx(0.9526, abs=1e-4)


def test_kl_div_mean_divides_by_the_element_count():
    x = tt.tensor(np.log(np.array([[0.2, 0.8], [0.5, 0.5]], np.float32)))
    t = tt.tensor([[0.5, 0.5], [0.9, 0.1]])
    assert F.kl_div(x, t, reduction="mean").item() == pytest.approx(0.1478, abs=1e-4)  # torch's value
    assert F.kl_div(x, t, reduction="batchmean").item() == pytest.approx(0.2956, abs=1e-4)


@pytest.mark.parametrize("shape", [(0, 3), (0,)])
def test_kl_div_of_an_empty_input_averages_to_nan_and_sums_to_zero(shape):
    """PyTorch: 'mean' and 'batchmean' of nothing are 0/0 = NaN (not 0, not ZeroDivisionError); 'sum' is 0."""
    x, t = tt.zeros(*shape, requires_grad=True), tt.zeros(*shape)
    for reduction in ("mean", "batchmean"):
        loss = F.kl_div(x, t, reduction=reduction)
        assert np.isnan(loss.item()), f"{reduction} of an empty input: expected nan, got {loss.item()}"
        loss.backward()
        assert x.grad.shape == shape
    assert F.kl_div(x, t, reduction="sum").item() == 0.0


def test_distillation_loss_passes_ignore_index_to_the_hard_term():
    z = tt.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    loss = distillation_loss(z, z, tt.tensor([0, 2]), alpha=0.0, ignore_index=2)
    assert loss.item() == pytest.approx(0.2413, abs=1e-4)  # torch's cross_entropy(ignore_index=2): row 0 alone


def test_hidden_states_end_with_the_final_norm():
    """The GPT's own logits are lm_head(ln_f(blocks)): hidden_states must be what lm_head reads."""
    tt.manual_seed(0)
    clf = GPTForSequenceClassification(GPT(GPTConfig(**SMALL)), num_labels=2).eval()
    idx = tt.tensor([[1, 2, 3, 4]])
    logits = clf.gpt(idx)[0].numpy()
    np.testing.assert_allclose(clf.gpt.lm_head(clf.hidden_states(idx)).numpy(), logits, atol=1e-5)


def test_lora_dropout_acts_on_the_input_not_on_the_update():
    lora = LoRALinear(nn.Linear(4, 16), rank=2, alpha=2, dropout=0.5)
    lora.lora_B.weight.data[...] = 1.0  # every output reads the same A·dropout(x)
    for seed in range(5):
        tt.manual_seed(seed)
        update = (lora(tt.ones(3, 4)) - lora.base(tt.ones(3, 4))).numpy()
        assert np.ptp(update, axis=1).max() < 1e-5, f"seed {seed}: outputs of one row differ: {update}"


def test_soft_targets_keep_an_eval_teacher_in_eval():
    teacher = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).eval()
    soft_targets(teacher, tt.ones(1, 2))
    assert not teacher.training


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_layers_match_torch_from_a_nonzero_state(kind):
    """Twin of test-rnn-layers: each layer's _cell passes h (and c), bias_hh, and returns the state in order."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, h0, c0 = (rng.standard_normal(shape).astype(np.float32) for shape in ((3, 2, 4), (1, 2, 5), (1, 2, 5)))
    ours, theirs = getattr(nn, kind)(4, 5), getattr(torch.nn, kind)(4, 5)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            getattr(theirs, name).copy_(torch.tensor(p.numpy()))
    oh = tt.tensor(h0, requires_grad=True)
    out, final = ours(tt.tensor(x), (oh, tt.tensor(c0)) if kind == "LSTM" else oh)
    th = torch.tensor(h0, requires_grad=True)
    ref, ref_final = theirs(torch.tensor(x), (th, torch.tensor(c0)) if kind == "LSTM" else th)
    pairs = zip([out, *final] if kind == "LSTM" else [out, final], [ref, *ref_final] if kind == "LSTM" else [ref, ref_final])
    for what, (o, r) in zip(["output", "h_n", "c_n"], pairs):
        np.testing.assert_allclose(o.numpy(), r.detach().numpy(), atol=1e-5, err_msg=f"{kind} {what}")
    out.sum().backward()
    ref.sum().backward()
    np.testing.assert_allclose(oh.grad.numpy(), th.grad.numpy(), atol=1e-5, err_msg=f"{kind}: d output / d h_0")


def test_distill_takes_the_teachers_targets_in_eval_mode():
    """Twin of test-distill: a dropout teacher left in training mode gives one loss for one batch at lr=0."""
    from tinytorch.finetune import distill
    tt.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5))
    losses = distill(student, teacher, [(tt.randn(8, 4), None)] * 3, tt.optim.SGD(student.parameters(), lr=0.0))
    assert max(losses) - min(losses) < 1e-6, losses
    assert teacher.training, "the teacher's mode is restored"


def test_merging_a_merged_layer_raises():
    """Twin of test-lora-linear: a second merge would add B·A twice."""
    lora = LoRALinear(nn.Linear(3, 2), rank=1)
    lora.merge()
    with pytest.raises(RuntimeError, match="already merged"):
        lora.merge()


def test_hidden_states_draw_the_gpts_dropout_masks_in_training_mode():
    """Twin of test-classifier: hidden_states is GPT.forward's body, embedding dropout included."""
    tt.manual_seed(0)
    clf = GPTForSequenceClassification(GPT(GPTConfig(**SMALL, dropout=0.5)), num_labels=2)
    idx = tt.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    tt.manual_seed(1)
    hidden = clf.hidden_states(idx)
    tt.manual_seed(1)
    np.testing.assert_allclose(clf.gpt.lm_head(hidden).numpy(), clf.gpt(idx)[0].numpy(), atol=1e-5)


# Twins of the graded checks added after mutation round 4: each of these mistakes passed pytest too.
def test_hidden_states_of_a_rope_gpt_add_no_position_table():
    """Twin of test-classifier: a RoPE GPT has no wpe; its positions enter inside attention."""
    tt.manual_seed(0)
    clf = GPTForSequenceClassification(GPT(GPTConfig(**SMALL, rope=True)), num_labels=2).eval()
    idx = tt.tensor([[1, 2, 3, 4]])
    np.testing.assert_allclose(clf.gpt.lm_head(clf.hidden_states(idx)).numpy(), clf.gpt(idx)[0].numpy(), atol=1e-5)


def test_mean_pooling_classifier_leaves_the_padding_out():
    """Twin of test-classifier: pooling='mean' pools with the mask, so a padded row scores as the row alone."""
    tt.manual_seed(0)
    clf = GPTForSequenceClassification(GPT(GPTConfig(**SMALL)), num_labels=2, pooling="mean").eval()
    padded = clf(tt.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]]), [[1, 1, 1, 0, 0], [1] * 5]).numpy()
    np.testing.assert_allclose(padded[0], clf(tt.tensor([[1, 2, 3]])).numpy()[0], atol=1e-5)


def test_last_token_pool_takes_a_float_mask():
    hidden = tt.tensor(np.arange(24, dtype=np.float32).reshape(2, 4, 3))
    pooled = last_token_pool(hidden, tt.tensor([[1.0, 1.0, 1.0, 0.0], [1.0] * 4]))
    assert pooled.tolist() == [[6.0, 7.0, 8.0], [21.0, 22.0, 23.0]]


def test_merge_and_unmerge_keep_the_weight_float32():
    lora = LoRALinear(nn.Linear(3, 2), rank=1, alpha=2)
    nn.init.normal_(lora.lora_B.weight, 0.0, 1.0)
    lora.merge()
    assert lora.base.weight.numpy().dtype == np.float32, "merge casts the float64 update back to the weight's dtype"
    lora.unmerge()
    assert lora.base.weight.numpy().dtype == np.float32


def test_inject_lora_passes_rank_alpha_and_dropout_on():
    tt.manual_seed(0)
    gpt = GPT(GPTConfig(**SMALL))
    inject_lora(gpt, ["attn.c_attn"], rank=2, alpha=4, dropout=0.1)
    got = [(b.attn.c_attn.rank, b.attn.c_attn.scaling, b.attn.c_attn.lora_dropout.p) for b in gpt.transformer.h]
    assert got == [(2, 2.0, 0.1)] * 2


@pytest.mark.parametrize("temperature", [0.5, 1.5])
def test_distillation_loss_at_a_non_integer_temperature_matches_torch(temperature):
    torch = pytest.importorskip("torch")
    z, t = [[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]], [[0.0, 0.0, 4.0], [1.0, 1.0, 1.0]]
    want = temperature ** 2 * torch.nn.functional.kl_div(torch.log_softmax(torch.tensor(z) / temperature, -1),
                                                         torch.softmax(torch.tensor(t) / temperature, -1),
                                                         reduction="batchmean")
    got = distillation_loss(tt.tensor(z), tt.tensor(t), temperature=temperature).item()
    assert got == pytest.approx(want.item(), abs=1e-5)


def test_soft_targets_restore_the_mode_when_the_forward_raises():
    teacher = nn.Linear(3, 2)
    with pytest.raises(RuntimeError, match="in_features"):
        soft_targets(teacher, tt.ones(1, 4))
    assert teacher.training, "the teacher's mode is restored in a finally:"


def test_distill_two_batches_each_with_its_own_targets_temperature_and_alpha():
    """Twin of test-distill: floats, each batch's own teacher targets, temperature and alpha passed on, zero_grad."""
    from tinytorch.finetune import distill
    from tinytorch.finetune.distill import _two_batches
    got, want, weight, twin = _two_batches(distill, distillation_loss, soft_targets)
    assert [type(v) for v in got] == [float, float]
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(weight, twin, atol=1e-6)
