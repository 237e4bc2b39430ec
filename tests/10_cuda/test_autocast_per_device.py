"""autocast keeps one policy per device type, as PyTorch does: a cuda block inside a cpu block leaves the cpu
policy on, and leaving any block restores exactly what was there, also after an exception."""

import threading

import pytest

import tinytorch as tt
from tinytorch.core.tensor import _autocast_state

BF16 = tt.bfloat16


def test_cuda_autocast_inside_cpu_autocast_keeps_the_cpu_policy():
    w = tt.randn(3, 3)
    with tt.autocast("cpu", dtype=BF16):
        with tt.autocast("cuda"):
            assert (w @ w).dtype == BF16, "entering cuda autocast must leave cpu autocast on (torch does)"
        assert (w @ w).dtype == BF16
    assert (w @ w).dtype == tt.float32 and _autocast_state.run is None


def test_cpu_autocast_inside_cuda_autocast_and_disabling_one_device_type():
    w = tt.randn(3, 3)
    with tt.autocast("cuda"):
        with tt.autocast("cpu", dtype=tt.float16):
            assert (w @ w).dtype == tt.float16
            with tt.autocast("cuda", enabled=False):  # turns cuda off, not cpu
                assert (w @ w).dtype == tt.float16
            with tt.autocast("cpu", enabled=False):
                assert (w @ w).dtype == tt.float32
            assert (w @ w).dtype == tt.float16
        assert (w @ w).dtype == tt.float32, "only cuda autocast is on again: cpu tensors are left alone"


def test_each_exit_restores_the_exact_previous_hook_even_after_exceptions():
    w = tt.randn(3, 3)
    seen = [_autocast_state.run]
    with tt.autocast("cpu", dtype=BF16):
        seen.append(_autocast_state.run)
        with pytest.raises(KeyError):
            with tt.autocast("cuda"):
                with tt.autocast("cpu", enabled=False):
                    raise KeyError("inside")
        assert _autocast_state.run is seen[1] and (w @ w).dtype == BF16
    assert _autocast_state.run is seen[0] is None


def test_the_policies_follow_the_hook_into_a_thread_that_carries_it():
    """ThreadedStep (module 07) hands the caller's hook to its threads: both device types' policies go along."""
    w, seen = tt.randn(3, 3), []
    with tt.autocast("cpu", dtype=BF16), tt.autocast("cuda"):
        hook = _autocast_state.run

        def worker():
            _autocast_state.run = hook
            seen.append((w @ w).dtype)
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen == [BF16]


def test_the_decorator_nests_with_another_device_types_block():
    layer = tt.nn.Linear(4, 3)

    @tt.autocast("cuda")
    def forward(x):
        return layer(x)
    with tt.autocast("cpu", dtype=BF16):
        assert forward(tt.randn(2, 4)).dtype == BF16
    assert forward(tt.randn(2, 4)).dtype == tt.float32
