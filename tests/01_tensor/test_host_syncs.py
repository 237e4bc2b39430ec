"""The one device->host conversion (`to_host`), its counter, and checks that wait for a sync."""
import numpy as np
import pytest

import tinytorch as tt
from tinytorch.core.backend import check_later, count_host_syncs, to_device, to_host, to_numpy


def test_to_device_takes_a_device_string():
    array = np.arange(3.0)
    assert to_device(array, "cpu") is array and to_device(array, tt.device("cpu")) is array


def test_item_is_one_counted_conversion():
    x = tt.tensor([[1.0, 2.0]])
    with count_host_syncs() as gpu_only, count_host_syncs(include_cpu=True) as every:
        assert x.sum().item() == 3.0
    assert gpu_only.count == 0, "a NumPy array costs no transfer: not counted by default"
    assert every.count == 1, "item() must go through to_host exactly once"


def test_conversions_all_go_through_to_host():
    x = tt.tensor([1.0, 2.0])
    with count_host_syncs(include_cpu=True) as syncs:
        x.numpy()
        x.tolist()
        bool(x[0])
        float(x[1])
        to_numpy(x.data)
    assert syncs.count == 5


def test_counting_stops_when_the_block_ends():
    with count_host_syncs(include_cpu=True) as syncs:
        pass
    to_host(np.ones(2))
    assert syncs.count == 0


def test_check_later_raises_at_once_on_the_cpu():
    check_later(np.bool_(False), lambda: AssertionError("must not be raised"))
    with pytest.raises(IndexError, match="bad id"):
        check_later(np.array(1) > 0, lambda: IndexError("bad id"))
