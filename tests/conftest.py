"""Shared fixtures for the TinyTorch test suite.

Run on another device with ``TINYTORCH_TEST_DEVICE=cuda pytest``. A run asked to
use a GPU that cannot (CuPy missing, no driver, no such device) fails at the
start with the reason, instead of skipping every device test and looking green.
"""

import os
import sys

import numpy as np
import pytest

import tinytorch as tt

TEST_DEVICE = os.environ.get("TINYTORCH_TEST_DEVICE", "cpu")


def pytest_configure(config):
    if not TEST_DEVICE.startswith("cuda"):
        return
    try:
        tt.get_xp(tt.device(TEST_DEVICE))
    except (RuntimeError, ValueError) as err:
        raise pytest.UsageError(f"TINYTORCH_TEST_DEVICE={TEST_DEVICE} but this device is unusable: {err}. "
                                f"Unset it to test on the CPU.") from None


@pytest.fixture(scope="session")
def device():
    """The device string tests create their tensors on ("cpu" or "cuda[:N]")."""
    return TEST_DEVICE


@pytest.fixture
def rng():
    """A seeded NumPy generator, so failures reproduce."""
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _fresh_process_group():
    """Each test starts without a process group (a test that made one leaves none behind)."""
    yield
    process_group = sys.modules.get("tinytorch.distributed.process_group")
    if process_group is not None and process_group.is_initialized():
        process_group.destroy_process_group()


FOX = "the quick brown fox jumps over the lazy dog. " * 40  # 1,800 characters: enough for --config tiny


@pytest.fixture
def run_folder(tmp_path, monkeypatch):
    """A folder tito takes for the repo (links to modules/, milestones/), made the working directory, so
    that `tito train gpt` puts runs/ under tmp_path; fox.txt in it is a corpus for `--config tiny`."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("modules", "milestones", "pyproject.toml"):
        (tmp_path / name).symlink_to(os.path.join(root, name))
    (tmp_path / "fox.txt").write_text(FOX, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(params=["numpy int", "bool", "float", "below minimum"])
def whole_number_rule(request):
    """Checks one count argument against module 01's one rule (`_check_whole`): `call(value)` accepts a NumPy
    integer, and refuses a bool, a float equal to a good value (2.0) and a value below the minimum, each with a
    ValueError matching `error`."""
    def check(call, good, minimum, error):
        if request.param == "numpy int":
            call(np.int64(good))  # accepted
            return
        value = {"bool": True, "float": float(good), "below minimum": minimum - 1}[request.param]
        with pytest.raises(ValueError, match=error):
            call(value)
    return check
