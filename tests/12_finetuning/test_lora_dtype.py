"""LoRALinear's output dtype is its base layer's, before and after merge (PEFT's rule): the adapters stay float32
beside a float16 base, and their sum with the base output is cast back. It once returned float32 unmerged and
float16 merged."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.finetune import LoRALinear


def _adapted(dtype, device, bias=True):
    tt.manual_seed(0)
    base = nn.Linear(8, 4, bias=bias, device=device, dtype=dtype)
    lora = LoRALinear(base, rank=2, alpha=4)
    nn.init.normal_(lora.lora_B.weight, 0.0, 0.5)  # a nonzero update, so merging changes the weight
    return lora


@pytest.mark.parametrize("bias", [True, False])
def test_float16_base_keeps_float16_before_and_after_merge(bias, device):
    lora = _adapted(tt.float16, device, bias)
    assert lora.lora_A.weight.dtype == tt.float32 and lora.lora_B.weight.dtype == tt.float32
    x = tt.randn(3, 8, device=device).to(tt.float16)
    before = lora(x)
    lora.merge()
    after = lora(x)
    assert before.dtype == after.dtype == lora.base(x).dtype == tt.float16
    np.testing.assert_allclose(before.numpy().astype(np.float32), after.numpy().astype(np.float32),
                               rtol=1e-2, atol=1e-2)  # two float16 roundings apart
    lora.unmerge()
    assert lora(x).dtype == tt.float16
    np.testing.assert_allclose(lora(x).numpy().astype(np.float32), before.numpy().astype(np.float32),
                               rtol=1e-2, atol=1e-2)  # W + ΔW - ΔW in float16 is W up to a rounding


def test_float16_base_trains_float32_adapters(device):
    """The cast back is differentiable: the float32 adapters get float32 gradients, the frozen base none."""
    lora = _adapted(tt.float16, device)
    x = tt.randn(3, 8, device=device).to(tt.float16)
    out = lora(x)
    out.float().sum().backward()
    assert lora.lora_A.weight.grad.dtype == tt.float32 and lora.lora_B.weight.grad.dtype == tt.float32
    assert lora.base.weight.grad is None
    assert np.isfinite(lora.lora_A.weight.grad.numpy()).all() and np.abs(lora.lora_A.weight.grad.numpy()).max() > 0


def test_float32_base_is_unchanged(device):
    lora = _adapted(tt.float32, device)
    x = tt.randn(3, 8, device=device)
    before = lora(x)
    lora.merge()
    assert before.dtype == lora(x).dtype == tt.float32
    np.testing.assert_allclose(before.numpy(), lora(x).numpy(), atol=1e-5)


def test_under_autocast_the_output_is_the_autocast_dtype():
    """Autocast makes the base output bfloat16 though its weight is float32: the output follows base(x), not the
    weight, merged or not."""
    pytest.importorskip("ml_dtypes")
    from tinytorch import autocast, bfloat16

    lora = _adapted(tt.float32, "cpu")
    x = tt.randn(3, 8)
    with autocast("cpu", dtype=bfloat16):
        before = lora(x)
        lora.merge()
        after = lora(x)
    assert before.dtype == after.dtype == bfloat16
