"""nn.init: statistics on large tensors, fans, gains, in-place writes, seeding."""

import math

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.nn import init


def big(*shape, dtype=tt.float32, device="cpu"):
    return nn.Parameter(tt.zeros(*shape, dtype=dtype, device=device))


def test_fans_follow_pytorch():
    assert init._calculate_fan_in_and_fan_out(big(30, 20)) == (20, 30)
    assert init._calculate_fan_in_and_fan_out(big(8, 4, 3, 3)) == (36, 72)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init._calculate_fan_in_and_fan_out(big(5))


def test_gains():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        init.calculate_gain("swishy")


def test_uniform_and_normal_statistics(device):
    tt.manual_seed(0)
    t = big(500, 400, device=device)
    assert init.uniform_(t, -2.0, 3.0) is t
    a = t.numpy()
    assert a.min() >= -2 and a.max() < 3 and abs(a.mean() - 0.5) < 0.02 and abs(a.std() - 5 / math.sqrt(12)) < 0.01
    init.normal_(t, mean=1.0, std=0.5)
    a = t.numpy()
    assert abs(a.mean() - 1) < 0.005 and abs(a.std() - 0.5) < 0.005 and t.dtype == np.float32


@pytest.mark.parametrize("fill, std, bound", [
    (lambda t: init.xavier_uniform_(t), math.sqrt(2 / (400 + 300)), math.sqrt(6 / 700)),
    (lambda t: init.xavier_uniform_(t, gain=2.0), 2 * math.sqrt(2 / 700), 2 * math.sqrt(6 / 700)),
    (lambda t: init.kaiming_uniform_(t, a=math.sqrt(5)), 1 / math.sqrt(3 * 400), 1 / math.sqrt(400)),
    (lambda t: init.kaiming_uniform_(t, nonlinearity="relu", mode="fan_out"), math.sqrt(2 / 300), math.sqrt(6 / 300)),
    (lambda t: init.kaiming_normal_(t, nonlinearity="relu"), math.sqrt(2 / 400), None),
    (lambda t: init.kaiming_normal_(t, nonlinearity="relu", mode="fan_out"), math.sqrt(2 / 300), None),
    (lambda t: init.kaiming_normal_(t, a=math.sqrt(5)), 1 / math.sqrt(3 * 400), None),  # leaky_relu gain uses a
    (lambda t: init.xavier_normal_(t), math.sqrt(2 / 700), None),
])
def test_scaled_initialisers(fill, std, bound):
    tt.manual_seed(1)
    t = big(300, 400)
    fill(t)
    a = t.numpy()
    assert abs(a.mean()) < 0.02 * std * 10 and abs(a.std() - std) < 0.02 * std
    if bound is not None:
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound


def test_constants_and_in_place(device):
    t = big(3, 4, device=device)
    array = t.data
    assert init.ones_(t) is t and (t.numpy() == 1).all()
    init.constant_(t, 2.5)
    assert (t.numpy() == 2.5).all() and t.data is array, "initialisers write into the existing array"
    init.zeros_(t)
    assert (t.numpy() == 0).all() and t.grad is None and t._parents is None


def test_seeded_init_is_reproducible_and_keeps_dtype():
    tt.manual_seed(7)
    a = nn.Linear(5, 5).weight.numpy().copy()
    tt.manual_seed(7)
    np.testing.assert_array_equal(nn.Linear(5, 5).weight.numpy(), a)
    t = init.normal_(big(10, 10, dtype=tt.float64))
    assert t.dtype == np.float64
