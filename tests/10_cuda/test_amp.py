"""Mixed precision: autocast's dtype per op and GradScaler's trajectory, against PyTorch on the CPU."""

import threading

import numpy as np
import pytest

import tinytorch as tt
import tinytorch.nn.functional as F
from tinytorch.core.amp import FLOAT32_OPS, LOWER_PRECISION_OPS, _cast
from tinytorch.models import GPT, GPTConfig

pytest.importorskip("ml_dtypes", reason="bfloat16 on the CPU needs ml_dtypes: pip install 'tinytorch[bfloat16]'")

BF16 = tt.bfloat16


def test_tinytorch_exports_autocast_like_torch():
    assert tt.autocast is tt.amp.autocast and tt.amp.GradScaler is tt.GradScaler
    assert BF16.name == "bfloat16" and BF16.itemsize == 2


def _ops(lib, x, w, q):
    """(name, result) of every op on autocast's lists that both libraries have, from float32 inputs."""
    if lib == "torch":
        import torch.nn.functional as TF
        return {"matmul": x @ w.T, "linear": TF.linear(x, w),
                "scaled_dot_product_attention": TF.scaled_dot_product_attention(q, q, q, is_causal=True),
                "mixed": x.to(__import__("torch").bfloat16) @ w.T}
    return {"matmul": x @ w.T, "linear": F.linear(x, w),
            "scaled_dot_product_attention": F.scaled_dot_product_attention(q, q, q, is_causal=True),
            "mixed": _cast(x, BF16) @ w.T}


@pytest.mark.parity
def test_each_op_runs_in_the_dtype_torch_autocast_gives_it(rng):
    torch = pytest.importorskip("torch")
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(4, 8), (6, 8), (1, 2, 5, 8)]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = _ops("torch", *[torch.tensor(a) for a in arrays])
    with tt.autocast("cpu", dtype=BF16):
        ours = _ops("tt", *[tt.tensor(a) for a in arrays])
    for name in theirs:
        assert str(theirs[name].dtype) == f"torch.{ours[name].dtype.name}", name
        assert ours[name].dtype == BF16, name
        # bfloat16 keeps 8 significant bits: results agree to ~1 rounding step of the larger values
        np.testing.assert_allclose(ours[name].data.astype(np.float32), theirs[name].float().numpy(),
                                   rtol=2 ** -7, atol=2 ** -6, err_msg=name)
    outside = _ops("tt", *[tt.tensor(a) for a in arrays])
    assert all(outside[n].dtype == tt.float32 for n in ("matmul", "linear", "scaled_dot_product_attention"))


def _losses(F, x, t, y):
    """Each loss on autocast's float32 list, from bfloat16 inputs (what a low-precision op hands it)."""
    return {"cross_entropy": F.cross_entropy(x, t), "nll_loss": F.nll_loss(x, t), "mse_loss": F.mse_loss(x, y),
            "binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits(x, y)}


@pytest.mark.parity
def test_losses_run_in_float32_as_in_torch(rng):
    torch = pytest.importorskip("torch")
    x, y = (rng.standard_normal((4, 5)).astype(np.float32) for _ in range(2))
    y = 1 / (1 + np.exp(-y))  # probabilities, for the binary loss
    t = np.array([0, 3, 1, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = _losses(torch.nn.functional, torch.tensor(x).bfloat16(), torch.tensor(t), torch.tensor(y).bfloat16())
    with tt.autocast("cpu", dtype=BF16):
        ours = _losses(F, _cast(tt.tensor(x), BF16), tt.tensor(t), _cast(tt.tensor(y), BF16))
    assert set(ours) == FLOAT32_OPS and not FLOAT32_OPS & LOWER_PRECISION_OPS
    for name, value in ours.items():
        assert theirs[name].dtype == torch.float32, name
        assert value.dtype == tt.float32, f"{name} under autocast must compute in float32, got {value.dtype}"
        # both cast the same bfloat16 inputs up, so they agree to float32 rounding
        np.testing.assert_allclose(value.item(), theirs[name].item(), rtol=1e-5, err_msg=name)


def test_a_gpt_step_under_autocast_keeps_float32_master_weights_and_gradients(rng):
    config = GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16, bias=True)
    tokens = rng.integers(0, 17, (2, 9))
    idx, target = tt.tensor(tokens[:, :-1]), tt.tensor(tokens[:, 1:])

    def loss_and_grads(amp):
        tt.manual_seed(0)
        model = GPT(config)
        with tt.autocast("cpu", dtype=BF16, enabled=amp):
            logits, _ = model(idx)
            loss = F.cross_entropy(logits.view(-1, 17), target.view(-1))  # runs in float32 itself
        assert loss.dtype == tt.float32, "the loss runs in float32 under autocast"
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters()}, model, logits.dtype
    loss32, grads32, _, dtype32 = loss_and_grads(False)
    loss16, grads16, model, dtype16 = loss_and_grads(True)
    assert dtype32 == tt.float32 and dtype16 == BF16, "the GPT's logits come from a linear: bfloat16 under autocast"
    assert abs(loss16 - loss32) < 0.05, (loss16, loss32)
    for name, p in model.named_parameters():
        assert p.dtype == tt.float32 and grads16[name].dtype == tt.float32, name
        a, b = grads16[name].data.ravel(), grads32[name].data.ravel()
        cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30)
        assert cosine > 0.98, f"{name}: bfloat16 gradient points elsewhere (cosine {cosine:.3f})"


def test_autocast_is_per_thread_nests_and_restores_after_errors():
    w = tt.randn(3, 3)
    seen = {}
    with tt.autocast("cpu", dtype=BF16):
        worker = threading.Thread(target=lambda: seen.update(other=(w @ w).dtype))
        worker.start()
        worker.join()
        with tt.autocast("cpu", enabled=False):
            seen["disabled"] = (w @ w).dtype
        with pytest.raises(KeyError):
            with tt.autocast("cpu", dtype=tt.float16):
                assert (w @ w).dtype == tt.float16
                raise KeyError("inside")
        seen["outer"] = (w @ w).dtype
    assert seen == {"other": tt.float32, "disabled": tt.float32, "outer": BF16}
    assert (w @ w).dtype == tt.float32


def test_autocast_leaves_tensors_of_another_device_type_alone():
    w = tt.randn(3, 3)
    with tt.autocast("cuda", dtype=tt.float16):
        assert (w @ w).dtype == tt.float32, "autocast('cuda') must not cast cpu tensors"


def test_autocast_as_a_decorator():
    """@autocast(...) on a function, as torch.autocast: each call runs under the policy, and only the call."""
    layer = tt.nn.Linear(4, 3)

    @tt.autocast("cpu")
    def forward(x):
        """the model's forward"""
        return layer(x)
    assert forward(tt.randn(2, 4)).dtype == tt.bfloat16 and forward.__doc__ == "the model's forward"
    assert layer(tt.randn(2, 4)).dtype == tt.float32


def test_autocast_leaves_float64_alone():
    """As torch.autocast: float64 tensors (a gradcheck, a float64 model) are not cast to low precision."""
    layer = tt.nn.Linear(4, 3, dtype=tt.float64)
    x = tt.randn(2, 4, dtype=tt.float64)
    with tt.autocast("cpu"):
        assert layer(x).dtype == tt.float64 and (x @ x.T).dtype == tt.float64
        assert F.mse_loss(x, x).dtype == tt.float64


def test_autocast_arguments_are_checked():
    with pytest.raises(ValueError, match="device_type"):
        tt.autocast("tpu")
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        tt.autocast("cpu", dtype=tt.float64)
    with pytest.raises(TypeError, match="no bfloat16"):
        tt.autocast("cuda", dtype=BF16)


def _trajectory(lib, steps, plant_at, growth_interval=2, clip=False):
    """(scale after each update, weights after each step, growth tracker) for one library."""
    if lib == "torch":
        import torch
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=growth_interval)
        tensor, to_numpy = torch.tensor, (lambda t: t.detach().numpy().copy())
        clip_ = torch.nn.utils.clip_grad_norm_
    else:
        tt.manual_seed(0)
        model = tt.nn.Linear(4, 3)
        opt = tt.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scaler = tt.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=growth_interval)
        tensor, to_numpy = tt.tensor, (lambda t: t.data.copy())
        clip_ = tt.nn.utils.clip_grad_norm_
    start = {"weight": np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "bias": np.float32([0.1, -0.2, 0.3])}
    model.load_state_dict({k: tensor(v.copy()) for k, v in start.items()})
    rng = np.random.default_rng(1)
    scales, params = [], []
    for step in range(steps):
        x = tensor(rng.standard_normal((5, 4)).astype(np.float32))
        opt.zero_grad()
        scaler.scale((model(x) ** 2).mean()).backward()
        if step in plant_at:
            grad = model.bias.grad
            grad[1] = float("inf") if step % 2 else float("nan")
        if clip:
            scaler.unscale_(opt)
            clip_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        scales.append(scaler.get_scale())
        params.append(to_numpy(model.weight))
    tracker = scaler._get_growth_tracker() if lib == "torch" else scaler._growth_tracker
    return scales, params, int(tracker)


@pytest.mark.parity
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # clipping the planted NaN, as torch
def test_grad_scaler_matches_torch_step_for_step(clip):
    pytest.importorskip("torch")
    plant = {2, 3, 9}  # nan, inf; then 5 clean steps: the scale grows every 2nd, and the count restarts
    theirs = _trajectory("torch", 12, plant, clip=clip)
    ours = _trajectory("tt", 12, plant, clip=clip)
    assert ours[0] == theirs[0], f"scales: ours {ours[0]}, torch {theirs[0]}"
    assert ours[0] == [16, 32, 16, 8, 8, 16, 16, 32, 32, 16, 16, 32], "growth every 2 clean steps, backoff on inf/nan"
    for step, (a, b) in enumerate(zip(ours[1], theirs[1])):
        np.testing.assert_allclose(a, b, atol=1e-6, err_msg=f"weights after step {step}")
    np.testing.assert_array_equal(ours[1][2], ours[1][1])  # skipped steps leave the weights alone
    assert ours[2] == theirs[2]


def test_grad_scaler_refuses_misuse():
    w = tt.nn.Parameter(np.ones(2, np.float32))
    opt = tt.optim.SGD([w], lr=0.1)
    scaler = tt.amp.GradScaler()
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    with pytest.raises(RuntimeError, match="no parameter of this optimizer has a gradient"):
        scaler.step(opt)  # backward forgotten: update() would grow the scale on no evidence (torch raises too)
    scaler.scale(w.sum()).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already called"):
        scaler.unscale_(opt)
    scaler.step(opt)
    with pytest.raises(RuntimeError, match="twice"):
        scaler.step(opt)
    scaler.update()
    for bad in [dict(growth_factor=1.0), dict(backoff_factor=1.5), dict(growth_interval=0), dict(init_scale=0.0)]:
        with pytest.raises(ValueError):
            tt.amp.GradScaler(**bad)
    off = tt.amp.GradScaler(enabled=False)
    loss = w.sum()
    assert off.scale(loss) is loss and off.get_scale() == 1.0


@pytest.mark.parity
def test_keyword_arguments_are_cast_like_positional_ones(rng):
    torch = pytest.importorskip("torch")
    from tinytorch.core.tensor import _autocast_call
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in [(2, 4), (3, 4), (3,)])
    seen = []
    with tt.autocast("cpu", dtype=BF16):
        _autocast_call("linear", lambda t, weight, bias: seen.append((weight.dtype, bias.dtype)) or t,
                       tt.tensor(x), weight=tt.tensor(w), bias=tt.tensor(b))
        ours = F.linear(tt.tensor(x), weight=tt.tensor(w), bias=tt.tensor(b))
    assert seen == [(BF16, BF16)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = torch.nn.functional.linear(torch.tensor(x), weight=torch.tensor(w), bias=torch.tensor(b))
    assert ours.dtype == BF16 and theirs.dtype == torch.bfloat16
    np.testing.assert_array_equal(ours.data.astype(np.float32), theirs.float().numpy())


@pytest.mark.parity
@pytest.mark.parametrize("bad", [0, 1, 2])  # which of three optimizers sees the inf
def test_grad_scaler_skips_only_the_optimizer_whose_gradients_overflowed(bad):
    torch = pytest.importorskip("torch")
    result = {}
    for lib in (torch, tt):
        params = [lib.nn.Parameter(lib.tensor(np.ones(2, np.float32))) for _ in range(3)]
        opts = [lib.optim.SGD([p], lr=0.1) for p in params]
        scaler = lib.amp.GradScaler("cpu", init_scale=4.0)
        scaler.scale(lib.tensor(1.0))
        for i, (p, opt) in enumerate(zip(params, opts)):
            p.grad = lib.tensor([float("inf") if i == bad else 4.0, 4.0])
            scaler.step(opt)
        scaler.update()
        result[lib.__name__] = ([p.detach().numpy().tolist() for p in params], scaler.get_scale())
    assert result["tinytorch"] == result["torch"], result
    stepped = [[1.0, 1.0] if i == bad else pytest.approx([0.9, 0.9]) for i in range(3)]
    assert result["torch"] == (stepped, 2.0)  # only the bad one skipped; any inf halves the scale
