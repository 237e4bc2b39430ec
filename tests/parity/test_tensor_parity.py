"""Forward values and gradients against PyTorch (the oracle), float32, tolerance ~1e-5."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import tinytorch as tt  # noqa: E402

pytestmark = pytest.mark.parity
RTOL = ATOL = 1e-5


def sample(shape, domain, rng):
    a = rng.standard_normal(shape)
    if domain == "pos":
        a = rng.uniform(0.5, 2.0, shape)
    elif domain == "nonzero":
        a = np.where(a >= 0, 1.0, -1.0) * rng.uniform(0.3, 2.0, shape)
    elif domain == "logits":
        a = a * 1000.0
    return a.astype(np.float32)


def run_both(fn_tt, fn_torch, shapes, domains, device, rng):
    """Run one op in both frameworks; compare outputs and the grads of sum(out * w)."""
    domains = domains.split() if domains else ["any"] * len(shapes)
    arrays = [sample(s, d, rng) for s, d in zip(shapes, domains)]
    ours = [tt.tensor(a, device=device, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    out, ref = fn_tt(*ours), fn_torch(*theirs)
    if isinstance(ref, tuple):  # (values, indices) namedtuples
        assert len(out) == len(ref)
        for o, r in zip(out[1:], ref[1:]):
            np.testing.assert_array_equal(o.cpu().numpy(), r.numpy())
        out, ref = out[0], ref[0]
    assert out.shape == tuple(ref.shape)
    assert out.dtype == np.dtype(str(ref.dtype).replace("torch.", ""))
    np.testing.assert_allclose(out.cpu().numpy(), ref.detach().numpy(), rtol=RTOL, atol=ATOL)
    if not ref.requires_grad:
        return
    w = rng.standard_normal(ref.shape).astype(np.float32)
    (out * tt.tensor(w, device=device)).sum().backward()
    (ref * torch.tensor(w)).sum().backward()
    for a, b in zip(ours, theirs):
        if b.grad is None:
            assert a.grad is None or np.all(a.grad.cpu().numpy() == 0)
            continue
        assert a.grad.shape == tuple(b.grad.shape)
        assert a.grad.dtype == tt.float32
        np.testing.assert_allclose(a.grad.cpu().numpy(), b.grad.numpy(), rtol=RTOL, atol=ATOL)


F = torch.nn.functional
# (name, tinytorch fn, torch fn, shapes, domains)
CASES = [
    ("add_bcast", lambda a, b: a + b, lambda a, b: a + b, [(3, 1, 5), (4, 1)], ""),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, [(2, 3), (3,)], ""),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [(2, 3), (2, 1)], ""),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(2, 3), (3,)], "any nonzero"),
    ("pow", lambda a, b: a ** b, lambda a, b: a ** b, [(2, 3), (2, 3)], "pos any"),
    ("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, [(2, 3)], ""),
    ("rpow", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(2, 3)], ""),
    ("rsub_rdiv", lambda a: 1.0 - 2.0 / a, lambda a: 1.0 - 2.0 / a, [(2, 3)], "nonzero"),
    ("neg", lambda a: -a, lambda a: -a, [(2, 3)], ""),
    ("exp", lambda a: a.exp(), torch.exp, [(2, 3)], ""),
    ("log", lambda a: a.log(), torch.log, [(2, 3)], "pos"),
    ("sqrt", lambda a: a.sqrt(), torch.sqrt, [(2, 3)], "pos"),
    ("abs", lambda a: a.abs(), torch.abs, [(2, 3)], "nonzero"),
    ("tanh", lambda a: a.tanh(), torch.tanh, [(2, 3)], ""),
    ("sigmoid", lambda a: a.sigmoid(), torch.sigmoid, [(2, 3)], ""),
    ("relu", lambda a: a.relu(), torch.relu, [(2, 3)], "nonzero"),
    ("gelu_none", lambda a: a.gelu(), F.gelu, [(4, 5)], ""),
    ("gelu_tanh", lambda a: a.gelu(approximate="tanh"),
     lambda a: F.gelu(a, approximate="tanh"), [(4, 5)], ""),
    ("clamp", lambda a: a.clamp(min=-0.5, max=0.5), lambda a: a.clamp(min=-0.5, max=0.5),
     [(4, 5)], ""),
    ("softmax", lambda a: a.softmax(dim=-1), lambda a: a.softmax(dim=-1), [(3, 5)], ""),
    ("softmax_dim0", lambda a: tt.softmax(a, dim=0), lambda a: torch.softmax(a, dim=0),
     [(3, 5)], ""),
    ("softmax_logits", lambda a: a.softmax(-1), lambda a: a.softmax(-1), [(3, 5)], "logits"),
    ("log_softmax", lambda a: a.log_softmax(dim=1), lambda a: a.log_softmax(dim=1),
     [(2, 3, 4)], ""),
    ("log_softmax_logits", lambda a: a.log_softmax(-1), lambda a: a.log_softmax(-1),
     [(3, 5)], "logits"),
    ("sum", lambda a: a.sum(), lambda a: a.sum(), [(3, 4)], ""),
    ("sum_dims", lambda a: a.sum(dim=(0, -1), keepdim=True),
     lambda a: a.sum(dim=(0, -1), keepdim=True), [(2, 3, 4)], ""),
    ("mean", lambda a: a.mean(dim=1), lambda a: a.mean(dim=1), [(2, 3, 4)], ""),
    ("var", lambda a: a.var(), lambda a: a.var(), [(3, 4)], ""),
    ("var_dim", lambda a: a.var(dim=1, keepdim=True), lambda a: a.var(dim=1, keepdim=True),
     [(2, 3, 4)], ""),
    ("var_c0", lambda a: a.var(dim=-1, correction=0), lambda a: a.var(dim=-1, correction=0),
     [(2, 3, 4)], ""),
    ("max", lambda a: a.max(), lambda a: a.max(), [(3, 4)], ""),
    ("max_dim", lambda a: tuple(a.max(dim=1)), lambda a: tuple(a.max(dim=1)), [(2, 3, 4)], ""),
    ("max_dim_keep", lambda a: tuple(a.max(dim=-1, keepdim=True)),
     lambda a: tuple(a.max(dim=-1, keepdim=True)), [(2, 3, 4)], ""),
    ("min_dim", lambda a: tuple(a.min(0)), lambda a: tuple(a.min(0)), [(3, 4)], ""),
    ("argmax", lambda a: a.argmax(dim=1), lambda a: a.argmax(dim=1), [(3, 4)], ""),
    ("argmax_flat", lambda a: a.argmax(), lambda a: a.argmax(), [(3, 4)], ""),
    ("index_repeat", lambda a: a[[0, 0, 2, 0]], lambda a: a[[0, 0, 2, 0]], [(3, 4)], ""),
    ("index_2d_repeat", lambda a: a[[1, 1, 0], [2, 2, 2]], lambda a: a[[1, 1, 0], [2, 2, 2]],
     [(3, 4)], ""),
    ("index_mixed", lambda a: a[1:, None, [0, 0, 3]], lambda a: a[1:, None, [0, 0, 3]],
     [(3, 4)], ""),
    ("index_tensor", lambda a: a[tt.tensor([[0, 1], [1, 1]], device=a.device)],
     lambda a: a[torch.tensor([[0, 1], [1, 1]])], [(3, 4)], ""),
    ("index_mask", lambda a: a[a > 0], lambda a: a[a > 0], [(3, 4)], "nonzero"),
    ("index_ellipsis", lambda a: a[..., 1:3], lambda a: a[..., 1:3], [(2, 3, 4)], ""),
    ("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)], ""),
    ("matmul_batched", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)], ""),
    ("matmul_1d", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (2, 4, 3)], ""),
    ("matmul_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)], ""),
    ("reshape_permute", lambda a: a.reshape(3, 2, 4).permute(2, 0, 1),
     lambda a: a.reshape(3, 2, 4).permute(2, 0, 1), [(2, 3, 4)], ""),
    ("transpose_flatten", lambda a: a.transpose(0, 2).flatten(1),
     lambda a: a.transpose(0, 2).flatten(1), [(2, 3, 4)], ""),
    ("expand_squeeze", lambda a: a.unsqueeze(0).expand(3, -1, -1).squeeze(2),
     lambda a: a.unsqueeze(0).expand(3, -1, -1).squeeze(2), [(4, 1)], ""),
    ("cat_stack", lambda a, b: tt.stack([tt.cat([a, b], dim=1), tt.cat([b, a], dim=1)], dim=-1),
     lambda a, b: torch.stack([torch.cat([a, b], dim=1), torch.cat([b, a], dim=1)], dim=-1),
     [(2, 3), (2, 3)], ""),
    ("split", lambda a: a.split([1, 3], dim=1)[1], lambda a: a.split([1, 3], dim=1)[1],
     [(3, 4)], ""),
    ("where", lambda a, b: tt.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b),
     [(3, 4), (4,)], "nonzero any"),
    ("masked_fill", lambda a: a.masked_fill(a < 0, -1e9).softmax(-1),
     lambda a: a.masked_fill(a < 0, -1e9).softmax(-1), [(3, 4)], "nonzero"),
    ("cross_entropy", lambda a: -a.log_softmax(-1)[[0, 1, 2], [3, 0, 1]].mean(),
     lambda a: F.cross_entropy(a, torch.tensor([3, 0, 1])), [(3, 5)], ""),
    ("layernorm_like",
     lambda a: (a - a.mean(-1, keepdim=True)) / (a.var(-1, correction=0, keepdim=True) + 1e-5).sqrt(),
     lambda a: F.layer_norm(a, (a.shape[-1],)), [(3, 8)], ""),
]


@pytest.mark.parametrize("name, fn_tt, fn_torch, shapes, domains", CASES,
                         ids=[c[0] for c in CASES])
def test_parity_with_torch(name, fn_tt, fn_torch, shapes, domains, device):
    run_both(fn_tt, fn_torch, shapes, domains, device, np.random.default_rng(7))


def test_repeated_index_grad_parity(device):
    idx = [0, 0, 1, 3, 3, 3]
    x = tt.zeros(5, device=device, requires_grad=True)
    y = torch.zeros(5, requires_grad=True)
    x[idx].sum().backward()
    y[idx].sum().backward()
    np.testing.assert_array_equal(x.grad.cpu().numpy(), y.grad.numpy())


def test_var_matches_torch_unbiased_default(device):
    a = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(tt.tensor(a, device=device).var(0).cpu().numpy(),
                               torch.tensor(a).var(0).numpy(), rtol=RTOL, atol=ATOL)


PROMOTION_DTYPES = ["float16", "float32", "float64", "int64", "int32", "uint8", "int8", "bool"]


@pytest.mark.parametrize("shapes", [((2,), ()), ((), (2,)), ((), ()), ((2,), (2,))])
def test_result_dtypes_match_pytorch(shapes, device):
    """Every pair of dtypes, 0-d or not, through add, mul, div and where: PyTorch's result dtype (a 0-d
    tensor of the same kind does not widen the other; a float beats an int of any width)."""
    def ours(dtype, shape):
        return tt.ones(*shape, dtype=getattr(tt, dtype), device=device)

    def theirs(dtype, shape):
        return torch.ones(shape, dtype=getattr(torch, dtype))

    pick_tt, pick_torch = tt.tensor([True, False], device=device), torch.tensor([True, False])
    ops = {"add": (tt.add, torch.add), "mul": (tt.mul, torch.mul), "div": (tt.div, torch.div),
           "where": (lambda a, b: tt.where(pick_tt, a, b), lambda a, b: torch.where(pick_torch, a, b))}
    wrong = []
    for a, b in ((a, b) for a in PROMOTION_DTYPES for b in PROMOTION_DTYPES):
        for name, (op_tt, op_torch) in ops.items():
            want = str(op_torch(theirs(a, shapes[0]), theirs(b, shapes[1])).dtype).replace("torch.", "")
            got = op_tt(ours(a, shapes[0]), ours(b, shapes[1])).dtype.name
            if got != want:
                wrong.append(f"{name}({a}{list(shapes[0])}, {b}{list(shapes[1])}): {got}, PyTorch {want}")
    assert not wrong, "\n".join(wrong)
