"""The GPT step's fused, in-place and blocked kernels against PyTorch at the sizes where their
fast paths engage (several cache blocks, non-contiguous gradients), forward and backward."""

import importlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402

BLOCK = importlib.import_module("tinytorch.core.tensor")._BLOCK  # elements per cache block

pytestmark = pytest.mark.parity
F = torch.nn.functional


def both(x, device):
    """The same float32 data as a TinyTorch tensor on `device` and a torch tensor, both requiring grad."""
    return tt.tensor(x, device=device, requires_grad=True), torch.tensor(x, requires_grad=True)


def check_grads(pairs, rtol=1e-5, atol=1e-5):
    for name, ours, theirs in pairs:
        assert ours.grad is not None, f"{name}: no gradient reached it"
        np.testing.assert_allclose(ours.grad.cpu().numpy(), theirs.grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of {name}")


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, BLOCK // 2 + 7)], ids=["one block", "3 blocks"])
def test_gelu_tanh_blocks_match_torch(device, rng, shape):
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    ox, tx = both(x, device)
    out, ref = ox.gelu(approximate="tanh"), F.gelu(tx, approximate="tanh")
    np.testing.assert_allclose(out.cpu().numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    # a transposed (non-contiguous) incoming gradient, as a reshape/transpose upstream gives
    w = rng.standard_normal(shape[::-1]).astype(np.float32).T
    (out * tt.tensor(w, device=device)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    check_grads([("x", ox, tx)])


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_gelu_tanh_gradient_of_huge_inputs_matches_torch(dtype):
    """Past |x| ~ 10 the gradient is exactly 1 or 0; the x³ term must not overflow into inf·0 = nan
    (float16's x² overflows at |x| = 256)."""
    x = np.array([300.0, -300.0, 40.0, -40.0, 3.0, -3.0], dtype=dtype)
    ox, tx = tt.tensor(x, requires_grad=True), torch.tensor(x.astype(np.float32), requires_grad=True)
    ox.gelu(approximate="tanh").sum().backward()
    F.gelu(tx, approximate="tanh").sum().backward()
    assert ox.grad.data.dtype == dtype
    np.testing.assert_allclose(ox.grad.data.astype(np.float32), tx.grad.numpy(), rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("table_rows", [5, 1 << 16], ids=["one-hot product", "sorted runs"])
@pytest.mark.parametrize("ids", [[3, 1, 3, 0, 3, 1], [], [-1, 4, 4]], ids=["repeats", "empty", "negative"])
def test_scatter_add_rows_adds_repeats(ids, table_rows):
    from tinytorch.core.backend import scatter_add

    rng = np.random.default_rng(0)
    values = rng.standard_normal((len(ids), 3)).astype(np.float32)
    ours, expected = np.ones((table_rows, 3), np.float32), np.ones((table_rows, 3), np.float32)
    scatter_add(ours, np.array(ids, dtype=np.int64), values)
    np.add.at(expected, np.array(ids, dtype=np.int64), values)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6, err_msg="each repeated row must add up once per use")


@pytest.mark.parametrize("table_rows", [5, 1 << 16], ids=["one-hot product", "sorted runs"])
def test_scatter_add_rows_keeps_a_non_finite_value_in_its_row(table_rows):
    """An inf in one gradient row stays in that row (0·inf in the one-hot product would be nan everywhere)."""
    from tinytorch.core.backend import scatter_add

    values = np.ones((4, 3), np.float32)
    values[0, 0], values[3, 1] = np.inf, np.nan
    ids = np.array([1, 2, 2, 3], dtype=np.int64)
    ours, expected = np.zeros((table_rows, 3), np.float32), np.zeros((table_rows, 3), np.float32)
    scatter_add(ours, ids, values)
    np.add.at(expected, ids, values)
    np.testing.assert_array_equal(ours, expected)


def test_embedding_backward_matches_torch(device, rng):
    ids = rng.integers(0, 65, (12, 64))
    weight = rng.standard_normal((65, 32)).astype(np.float32)
    ow, tw = both(weight, device)
    out = tt.nn.functional.embedding(tt.tensor(ids, device=device), ow)
    ref = F.embedding(torch.tensor(ids), tw)
    w = rng.standard_normal(ref.shape).astype(np.float32)
    (out * tt.tensor(w, device=device)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    check_grads([("weight", ow, tw)])
