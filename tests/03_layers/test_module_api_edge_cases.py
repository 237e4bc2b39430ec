"""Edge cases of the Module API, the containers and nn.init where TinyTorch must agree with PyTorch."""

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.nn import init


def kinds(modules):
    return [None if m is None else type(m).__name__ for m in modules]


@pytest.mark.parametrize("mode", ["yes", 0, 1, None])
def test_train_mode_must_be_a_bool(mode):
    """train(0) and train("yes") set `training` to 0 / "yes" (PyTorch: ValueError); nothing changes."""
    model = nn.Sequential(nn.Dropout(0.5))
    with pytest.raises(ValueError, match="boolean"):
        model.train(mode)
    assert model.training is True and model[0].training is True
    assert model.train(False) is model and model[0].training is False


def test_register_refuses_a_name_of_another_kind():
    """register_buffer over a Parameter silently turned it into a buffer (PyTorch: KeyError), and so on."""
    m = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="weight"):
        m.register_buffer("weight", tt.zeros(2, 2))
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"] and not list(m.named_buffers())
    m.register_buffer("stat", tt.zeros(1))
    with pytest.raises(KeyError, match="stat"):
        m.register_parameter("stat", nn.Parameter(tt.zeros(1)))
    with pytest.raises(KeyError, match="stat"):
        m.add_module("stat", nn.ReLU())
    assert [n for n, _ in m.named_buffers()] == ["stat"]
    m.register_buffer("stat", tt.ones(1), persistent=False)  # the same kind again: replaced
    assert m.stat.tolist() == [1.0] and "stat" not in m.state_dict()
    m.register_parameter("bias", nn.Parameter(tt.zeros(2)))
    m.add_module("head", nn.ReLU())
    m.add_module("head", nn.Tanh())
    assert kinds(m.children()) == ["Tanh"]


def test_add_module_none_keeps_the_name_registered():
    """add_module(name, None) registers the name, holding None, as in PyTorch (it registered nothing)."""
    m = nn.Module()
    m.add_module("head", None)
    assert list(m._modules) == ["head"] and m.head is None
    assert list(m.children()) == [] and len(list(m.modules())) == 1
    with pytest.raises(TypeError, match="child module 'head'"):
        m.head = tt.zeros(1)
    assert repr(m) == "Module(\n  (head): None\n)"


def test_module_list_with_none_entries():
    """ModuleList([a, None, b]) raised KeyError; list[0] = None shrank the list and broke its indexing."""
    layers = nn.ModuleList([nn.ReLU(), None, nn.Tanh()])
    assert len(layers) == 3 and kinds(layers) == ["ReLU", None, "Tanh"]
    assert kinds(layers.children()) == ["ReLU", "Tanh"]
    layers[0] = None
    assert len(layers) == 3 and kinds(layers) == [None, None, "Tanh"] and type(layers[-1]).__name__ == "Tanh"
    del layers[1]
    assert list(layers._modules) == ["0", "1"] and kinds(layers) == [None, "Tanh"]
    layers.insert(0, nn.SiLU())
    assert kinds(layers) == ["SiLU", None, "Tanh"]
    assert len(nn.Sequential(nn.ReLU(), None)) == 2


def test_sequential_edits_like_pytorch():
    """Sequential had no del, item assignment, insert, extend or pop (PyTorch has them all)."""
    seq = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Tanh())
    del seq[0]
    assert list(seq._modules) == ["0", "1"] and kinds(seq) == ["ReLU", "Tanh"]
    seq[-1] = nn.Sigmoid()
    assert kinds(seq) == ["ReLU", "Sigmoid"]
    assert seq.insert(0, nn.Identity()) is seq and kinds(seq) == ["Identity", "ReLU", "Sigmoid"]
    seq.insert(-1, nn.SiLU())
    assert kinds(seq) == ["Identity", "ReLU", "SiLU", "Sigmoid"] and list(seq._modules) == ["0", "1", "2", "3"]
    assert seq.extend([nn.GELU()]) is seq and kinds(seq)[-1] == "GELU"
    assert type(seq.pop(1)).__name__ == "ReLU" and kinds(seq) == ["Identity", "SiLU", "Sigmoid", "GELU"]
    del seq[1:3]
    assert kinds(seq) == ["Identity", "GELU"] and list(seq._modules) == ["0", "1"]
    with pytest.raises(IndexError):
        seq.insert(3, nn.ReLU())
    with pytest.raises(IndexError):
        seq[2] = nn.ReLU()
    x = tt.tensor([[-1.0, 2.0]])
    np.testing.assert_allclose(seq(x).numpy(), nn.GELU()(x).numpy())


def test_sequential_item_assignment_keeps_ordered_dict_names():
    from collections import OrderedDict

    seq = nn.Sequential(OrderedDict([("act", nn.ReLU()), ("out", nn.Tanh())]))
    seq[1] = nn.Sigmoid()
    assert list(seq._modules) == ["act", "out"] and kinds(seq) == ["ReLU", "Sigmoid"]


def test_module_dict_pop_clear_and_missing_key():
    """del d[missing] raised AttributeError (PyTorch: KeyError); pop and clear were missing."""
    d = nn.ModuleDict({"b": nn.ReLU(), "a": nn.Tanh()})
    with pytest.raises(KeyError):
        del d["missing"]
    assert type(d.pop("b")).__name__ == "ReLU" and list(d) == ["a"] and not hasattr(d, "b")
    with pytest.raises(KeyError):
        d.pop("b")
    d.clear()
    assert len(d) == 0 and list(d.children()) == []


@pytest.mark.parametrize("fill", [lambda t: init.uniform_(t, 3.0, 2.0), lambda t: init.normal_(t, 0.0, -1.0)])
def test_random_fills_refuse_bad_ranges(fill):
    """uniform_(a > b) and normal_(std < 0) filled silently (PyTorch raises); the tensor is untouched."""
    t = tt.ones(3)
    with pytest.raises((ValueError, RuntimeError)):
        fill(t)
    assert t.tolist() == [1.0, 1.0, 1.0]
    assert init.uniform_(tt.ones(3), 2.0, 2.0).tolist() == [2.0, 2.0, 2.0], "a == b is allowed"
    assert init.normal_(tt.ones(3), 5.0, 0.0).tolist() == [5.0, 5.0, 5.0], "std 0 is allowed"


@pytest.mark.parametrize("fill", [init.uniform_, init.normal_])
def test_random_fills_refuse_integer_tensors(fill):
    """On an int tensor the draws were truncated to integers (uniform_: all zeros); PyTorch raises."""
    t = tt.tensor([7, 7], dtype=tt.int64)
    with pytest.raises((TypeError, NotImplementedError)):
        fill(t)
    assert t.tolist() == [7, 7]
    assert init.constant_(t, 3).tolist() == [3, 3], "constant_ on ints is fine, as in PyTorch"


@pytest.mark.parametrize("fill", [init.kaiming_uniform_, init.kaiming_normal_])
def test_kaiming_leaves_an_empty_tensor_alone(fill):
    """Kaiming on any tensor with a 0-size dim returns it untouched (a 1-D one raised about its fans)."""
    for shape in [(0,), (0, 3), (3, 0), (2, 0, 3)]:
        t = tt.tensor(np.zeros(shape, dtype=np.float32))
        assert fill(t) is t and t.shape == shape
    for shape in [(), (3,)]:  # not empty: the fans still need 2 dims
        with pytest.raises(ValueError, match="2 dimensions"):
            fill(tt.tensor(np.ones(shape, dtype=np.float32)))


@pytest.mark.parity
def test_container_edits_match_torch():
    torch = pytest.importorskip("torch")

    def run(lib):
        seq = lib.Sequential(lib.ReLU(), lib.Tanh(), lib.Sigmoid())
        del seq[-1]
        seq.insert(1, lib.Identity())
        seq.append(lib.SiLU())
        seq[0] = lib.GELU()
        popped = seq.pop(-1)
        layers = lib.ModuleList([lib.ReLU(), None])
        layers[1] = None
        d = lib.ModuleDict({"x": lib.ReLU(), "y": lib.Tanh()})
        d.pop("x")
        return (kinds(seq), list(seq._modules), type(popped).__name__, len(layers), kinds(layers), list(d))

    assert run(nn) == run(torch.nn)
