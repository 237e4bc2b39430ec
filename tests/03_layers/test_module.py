"""Module: registration, names, modes, devices, state dicts, printing, containers."""

import copy
from collections import OrderedDict

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn


class Block(nn.Module):
    def __init__(self, device="cpu"):
        super().__init__()
        self.fc = nn.Linear(4, 4, device=device)
        self.norm = nn.LayerNorm(4, device=device)
        self.register_buffer("count", tt.zeros(1, device=device))
        self.register_buffer("cache", tt.zeros(2, device=device), persistent=False)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.norm(self.fc(x)))


class Net(nn.Module):
    def __init__(self, device="cpu"):
        super().__init__()
        self.layers = nn.ModuleList([Block(device), Block(device)])
        self.head = nn.Linear(4, 2, bias=False, device=device)
        self.scale = 3.0

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def test_named_parameters_use_dotted_paths():
    names = [n for n, _ in Net().named_parameters()]
    assert names == ["layers.0.fc.weight", "layers.0.fc.bias", "layers.0.norm.weight", "layers.0.norm.bias",
                     "layers.1.fc.weight", "layers.1.fc.bias", "layers.1.norm.weight", "layers.1.norm.bias",
                     "head.weight"]
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [n for n, _ in seq.named_parameters(prefix="mlp")][0] == "mlp.0.weight"


def test_parameters_modules_children_and_buffers():
    net = Net()
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())
    assert net.num_parameters() == 2 * (4 * 4 + 4 + 4 + 4) + 4 * 2
    assert [n for n, _ in net.named_children()] == ["layers", "head"]
    assert [n for n, _ in net.named_modules()][:4] == ["", "layers", "layers.0", "layers.0.fc"]
    assert len(list(net.modules())) == 1 + 1 + 2 * 4 + 1
    assert [n for n, _ in net.named_buffers()] == ["layers.0.count", "layers.0.cache", "layers.1.count", "layers.1.cache"]
    assert len(list(net.parameters(recurse=False))) == 0
    assert "scale" not in dict(net.named_parameters()) and net.scale == 3.0


def test_shared_parameters_and_modules_count_once():
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight  # weight tying, as GPT-2 does
    model = nn.Sequential(emb, head)
    assert len(list(model.parameters())) == 1
    assert list(model.state_dict()) == ["0.weight", "1.weight"]  # state_dict keeps both names, as PyTorch
    shared = nn.Linear(2, 2)
    twice = nn.Sequential(shared, shared)
    assert len(list(twice.modules())) == 2 and twice.num_parameters() == 6


def test_reassignment_moves_between_registries():
    m = nn.Linear(2, 2)
    m.bias = None
    assert [n for n, _ in m.named_parameters()] == ["weight"] and m.bias is None
    with pytest.raises(TypeError, match="cannot assign Linear as parameter 'weight'"):
        m.weight = nn.Linear(1, 1)  # as PyTorch: a registered parameter takes a Parameter or None
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'weight'"):
        m.weight = tt.ones(2, 2)  # (a plain tensor here left the weight out of parameters() and state_dict())
    del m.weight
    m.weight = nn.Linear(1, 1)  # once the name is free, it may become a module
    assert "weight" in m._modules and "weight" not in m._parameters
    with pytest.raises(TypeError, match="as child module 'weight'"):
        m.weight = tt.ones(1)
    del m.weight
    assert not hasattr(m, "weight") and not list(m.named_modules())[1:]
    m.register_buffer("stat", tt.ones(2))
    m.stat = tt.zeros(2)
    assert m.state_dict()["stat"].tolist() == [0.0, 0.0]
    with pytest.raises(TypeError, match="buffer 'stat'"):
        m.stat = [1, 2]


def test_registration_errors_name_the_problem():
    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter([1.0])

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgot()
    m = nn.Module()
    with pytest.raises(KeyError, match="without '.'"):
        m.register_buffer("a.b", tt.zeros(1))
    with pytest.raises(KeyError, match="already has an attribute"):
        m.register_buffer("train", tt.zeros(1))
    with pytest.raises(TypeError, match="wrap it in Parameter"):
        m.register_parameter("w", tt.zeros(1))
    with pytest.raises(NotImplementedError, match="forward"):
        m(tt.zeros(1))


def test_parameter_type_and_repr():
    p = nn.Parameter([1.0, 2.0])
    assert p.dtype == np.float32 and p.requires_grad and p.is_leaf
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    t = tt.tensor([1.0, 2.0])
    shared = nn.Parameter(t)
    shared.data[0] = 5.0
    assert t.data[0] == 5.0, "Parameter(tensor) shares the tensor's array, as in PyTorch"
    assert nn.Parameter([1, 2]).dtype == np.float32, "integer data becomes float32"
    assert not nn.Parameter([1.0], requires_grad=False).requires_grad
    assert type(p * 2) is tt.Tensor and (p * 2).requires_grad


def test_train_eval_switches_every_dropout(device):
    net = Net(device)
    x = tt.randn(8, 4, device=device)
    def named(training):  # the modules whose flag is `training`
        return [name or "(the model)" for name, m in net.named_modules() if m.training == training]
    assert not named(False), f"a new model is in training mode, but these modules are not: {named(False)}"
    assert net.eval() is net, "eval() returns the module itself"
    assert not named(True), f"eval() must switch every sub-module; still training: {named(True)}"
    tt.manual_seed(0)
    a, b = net(x), net(x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # eval: deterministic
    net.train()
    tt.manual_seed(0)
    c = net(x)
    tt.manual_seed(0)
    np.testing.assert_array_equal(c.numpy(), net(x).numpy())  # same seed, same masks
    assert not np.allclose(c.numpy(), a.numpy())  # dropout is active in training


def test_zero_grad_and_requires_grad():
    m = nn.Linear(2, 2)
    m(tt.ones(1, 2)).sum().backward()
    m.zero_grad(set_to_none=False)
    assert m.weight.grad is not None and (m.weight.grad.data == 0).all()
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None
    m.requires_grad_(False)
    assert m.num_parameters(trainable_only=True) == 0 and m.num_parameters() == 6


def test_apply_visits_children_first():
    seen = []
    net = nn.Sequential(nn.Linear(1, 1), nn.Sequential(nn.Tanh()))
    assert net.apply(lambda m: seen.append(type(m).__name__)) is net
    assert seen == ["Linear", "Tanh", "Sequential", "Sequential"]


def test_state_dict_round_trip_nested_with_buffers(device):
    tt.manual_seed(0)
    src, dst = Net(device), Net(device)
    src.layers[1].count = tt.tensor([7.0], device=device)
    sd = src.state_dict()
    assert "layers.0.count" in sd and "layers.0.cache" not in sd, "non-persistent buffers are not saved"
    assert list(sd)[:5] == ["layers.0.count", "layers.0.fc.weight", "layers.0.fc.bias",
                            "layers.0.norm.weight", "layers.0.norm.bias"], "each module's own entries, then children"
    assert all(not t.requires_grad for t in sd.values())
    params_before = list(dst.parameters())
    result = dst.load_state_dict(sd)
    assert result == ([], []) and result.missing_keys == []
    assert all(a is b for a, b in zip(params_before, dst.parameters())), "loading keeps the Parameter objects"
    for name, value in dst.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), sd[name].numpy(), err_msg=name)
    assert dst.layers[1].count.item() == 7.0
    sd["head.weight"].data[...] = 0  # state_dict shares memory with the model
    assert (src.head.weight.data == 0).all()


def test_load_state_dict_copies_into_own_arrays_and_keeps_dtype(device):
    src, dst = nn.Linear(2, 2, device=device), nn.Linear(2, 2, device=device)
    before = dst.weight.data
    dst.load_state_dict(src.state_dict())
    assert dst.weight.data is before, "the numbers are copied in, not the array rebound"
    src.weight.data[...] = 5.0  # an optimizer step on src must not move dst
    assert not (dst.weight.numpy() == 5.0).any()
    dst.load_state_dict({"weight": np.zeros((2, 2)), "bias": np.zeros(2)})  # float64, as torch: cast in
    assert dst.weight.dtype == tt.float32 and dst.bias.dtype == tt.float32
    assert dst.weight.numpy().tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_load_state_dict_reports_every_problem_by_name():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    sd = model.state_dict()
    del sd["0.bias"]
    sd["2.weight"] = tt.zeros(4, 3)
    sd["module.extra"] = tt.zeros(1)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(sd)
    message = str(info.value)
    assert "Error(s) in loading state_dict for Sequential" in message
    assert 'Missing key(s) in state_dict: "0.bias"' in message
    assert 'Unexpected key(s) in state_dict: "module.extra"' in message
    assert "size mismatch for 2.weight: copying a param with shape (4, 3) from checkpoint, " \
           "the shape in current model is (1, 3)" in message
    before = model[0].weight.data.copy()
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(sd, strict=False)  # shapes are always checked
    np.testing.assert_array_equal(model[0].weight.data, before)  # nothing was half-loaded
    sd["2.weight"] = tt.ones(1, 3)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert (missing, unexpected) == (["0.bias"], ["module.extra"])
    assert (model[2].weight.data == 1).all()


def test_to_dtype_and_device(device):
    m = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))
    m.register_buffer("steps", tt.zeros(1, dtype=tt.int64))
    m(tt.ones(1, 2)).sum().backward()
    weight = m[0].weight
    assert m.to(tt.float64) is m and weight.dtype == np.float64 and weight.grad.dtype == np.float64
    assert m.steps.dtype == np.int64, "integer buffers are not cast"
    assert m[0].weight is weight, "to() converts in place"
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())
    with pytest.raises(TypeError, match="floating"):
        m.to(tt.int32)
    m.to(device)
    assert all(str(t.device) == str(tt.device(device)) for t in m._all_tensors())
    assert m(tt.ones(1, 2, device=device)).device == tt.device(device)
    m.cpu()
    assert isinstance(weight.data, np.ndarray) and weight.device == tt.device("cpu")


@pytest.mark.cuda
def test_to_cuda_moves_parameters_grads_and_buffers():
    if not tt.cuda_available():
        pytest.skip(tt.cuda_unavailable_reason())
    m = nn.Linear(2, 3)
    m.register_buffer("stat", tt.ones(3))
    m(tt.ones(1, 2)).sum().backward()
    m.to("cuda")
    for t in (m.weight, m.weight.grad, m.bias, m.stat):
        assert t.device == tt.device("cuda") and not isinstance(t.data, np.ndarray)
    y = m(tt.ones(4, 2, device="cuda"))
    y.sum().backward()
    assert y.device == tt.device("cuda") and m.weight.grad.device == tt.device("cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        m(tt.ones(1, 2))


def test_repr_matches_pytorch_layout():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert repr(seq) == "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): ReLU()\n)"
    nested = nn.Sequential(OrderedDict(block=nn.Sequential(nn.Tanh()), out=nn.Linear(1, 1, bias=False)))
    assert repr(nested) == ("Sequential(\n  (block): Sequential(\n    (0): Tanh()\n  )\n"
                            "  (out): Linear(in_features=1, out_features=1, bias=False)\n)")
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    assert repr(nn.Dropout()) == "Dropout(p=0.5, inplace=False)"
    assert repr(nn.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(nn.Softmax(dim=1)) == "Softmax(dim=1)"
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert repr(nn.Module()) == "Module()"


def test_sequential_indexing_and_iteration():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c and list(seq) == [a, b, c]
    assert list(seq[1:]._modules) == ["1", "2"] and seq[1:][0] is b
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    assert seq(tt.ones(5, 2)).shape == (5, 1)
    named = nn.Sequential(OrderedDict(hidden=a, act=b))
    assert [n for n, _ in named.named_children()] == ["hidden", "act"] and named.hidden is a
    assert len(seq.append(nn.Sigmoid())) == 4


def test_module_list_and_dict():
    layers = nn.ModuleList([nn.Linear(2, 2)])
    layers.append(nn.Tanh()).extend([nn.Linear(2, 1)])
    assert len(layers) == 3 and isinstance(layers[-1], nn.Linear)
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    layers[1] = nn.ReLU()
    assert isinstance(layers[1], nn.ReLU) and len(layers[0:2]) == 2
    empty = nn.ModuleList()
    assert len(empty) == 0 and list(empty.parameters()) == []
    del layers[0]  # as a Python list (and PyTorch): the rest renumbered from 0
    assert [type(m).__name__ for m in layers] == ["ReLU", "Linear"] and list(layers._modules) == ["0", "1"]
    layers.insert(0, nn.Tanh())
    assert [n for n, _ in layers.named_parameters()] == ["2.weight", "2.bias"]
    assert isinstance(layers.pop(), nn.Linear) and len(layers) == 2 and list(layers.parameters()) == []
    del layers[:]
    assert len(layers) == 0
    heads = nn.ModuleDict({"a": nn.Linear(1, 1), "b": nn.Identity()})
    heads["c"] = nn.Linear(1, 2)
    assert list(heads) == ["a", "b", "c"] and "c" in heads and len(heads) == 3
    assert [n for n, _ in heads.named_parameters()] == ["a.weight", "a.bias", "c.weight", "c.bias"]
    del heads["a"]
    assert list(heads.keys()) == ["b", "c"]
    with pytest.raises(NotImplementedError, match="container"):
        layers(tt.ones(1))


def test_deepcopy_gives_an_independent_model():
    m = nn.Sequential(nn.Linear(2, 2))
    clone = copy.deepcopy(m)
    clone[0].weight.data += 1
    assert not np.allclose(clone[0].weight.data, m[0].weight.data)
    assert [n for n, _ in clone.named_parameters()] == ["0.weight", "0.bias"]
    assert clone[0].weight is clone._modules["0"]._parameters["weight"]


def test_package_layout_keeps_the_public_import_paths():
    """Module lives in nn.module, activations and containers in their own files; the old paths still work."""
    from tinytorch.nn import layers, module
    from tinytorch.nn.layers import GELU, Module, ModuleDict, ModuleList, Parameter, ReLU, Sequential

    assert Module is nn.Module is module.Module and Parameter is nn.Parameter
    assert (Sequential, ModuleList, ModuleDict) == (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    assert (ReLU, GELU) == (nn.ReLU, nn.GELU)
    assert issubclass(layers.Linear, Module) and issubclass(Sequential, Module)


def test_reassignment_keeps_registration_order():
    m = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    setattr(m, "0", nn.Linear(2, 3))
    assert list(m._modules) == ["0", "1"], "PyTorch keeps a re-assigned name in its place"
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(np.zeros((2, 2), dtype=np.float32))
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
