"""A stand-in for CuPy on a machine without a GPU: NumPy underneath, CuPy's refusals on top.

Arrays are `DeviceArray`s (an ndarray subclass). Like CuPy's, they refuse what would copy a
device number to the host behind the caller's back (`bool()`, `int()`, `float()`, `.item()`,
`.tolist()`, `.nonzero()`), accept only their own kind in `where` and as a setitem value, and
copy to the host only through `.get()`. Running TinyTorch on `cuda:0` with this module as the
namespace finds every hidden host sync and every NumPy value handed to CuPy, on any CPU.
Limits: `np.asarray(device_array)` still converts silently (NumPy does not ask a subclass).
"""
import types

import numpy as np
import pytest


class HostSyncError(RuntimeError):
    """A device number was read on the host outside `to_host`."""


class DeviceArray(np.ndarray):
    def _sync(self, what):
        raise HostSyncError(f"{what} on a device array: a hidden host sync")

    def __bool__(self): self._sync("bool()")
    def __int__(self): self._sync("int()")
    def __float__(self): self._sync("float()")
    def __index__(self): self._sync("operator.index()")
    def item(self, *args): self._sync(".item()")
    def tolist(self): self._sync(".tolist()")
    def nonzero(self): self._sync(".nonzero() (its size is data-dependent)")

    def get(self):
        return np.array(self.view(np.ndarray))

    def __getitem__(self, index):
        return _wrap(super().__getitem__(index))

    def __setitem__(self, index, value):
        if isinstance(value, (np.ndarray, list, tuple)) and not isinstance(value, DeviceArray):
            raise TypeError(f"Unsupported type {type(value).__name__} as a setitem value "
                            f"(CuPy takes device arrays and Python scalars)")
        super().__setitem__(index, value)


def _wrap(out):
    if isinstance(out, tuple):
        return tuple(_wrap(o) for o in out)
    if isinstance(out, list):
        return [_wrap(o) for o in out]
    if isinstance(out, (np.ndarray, np.generic)) and not isinstance(out, DeviceArray):
        return np.asarray(out).view(DeviceArray)
    return out


def _refuse_host(name, args):
    for a in args:
        if isinstance(a, (np.ndarray, list)) and not isinstance(a, DeviceArray):
            raise TypeError(f"{name}: CuPy takes device arrays, got a {type(a).__name__}")


class _BitGenerator:
    """Like CuPy's: the whole state lives in the int8 device array `_state`, read and written by
    each draw, so writing into `_state` in place (as a restore must) changes the next numbers."""

    def __init__(self, seed):
        self._rng = np.random.default_rng(seed)
        self._state = np.zeros(40, np.int8).view(DeviceArray)
        self._store()

    def _store(self):
        s = self._rng.bit_generator.state
        raw = (s["state"]["state"].to_bytes(16, "little") + s["state"]["inc"].to_bytes(16, "little")
               + s["has_uint32"].to_bytes(4, "little") + s["uinteger"].to_bytes(4, "little"))
        self._state.view(np.ndarray)[...] = np.frombuffer(raw, np.int8)

    def _load(self):
        raw = self._state.view(np.ndarray).tobytes()
        number = lambda a, b: int.from_bytes(raw[a:b], "little")  # noqa: E731
        self._rng.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": number(32, 36),
                                         "uinteger": number(36, 40),
                                         "state": {"state": number(0, 16), "inc": number(16, 32)}}


class _Generator:
    def __init__(self, seed, fake):
        self.bit_generator, self._fake = _BitGenerator(seed), fake

    def __getattr__(self, name):
        bits = self.bit_generator
        draw = getattr(bits._rng, name)

        def on_device(*a, **k):
            self._fake.draws.append(name)
            bits._load()
            out = _wrap(draw(*a, **k))
            bits._store()
            return out
        return on_device


class FakeCupy(types.ModuleType):
    """`get_xp(cuda:0)` for the tests: numpy's functions, results as DeviceArrays."""

    ndarray = DeviceArray = DeviceArray
    HostSyncError = HostSyncError

    def __init__(self):
        super().__init__("fake_cupy")
        self.cuda = types.SimpleNamespace(Device=lambda index: types.SimpleNamespace(use=lambda: None))
        self.random = types.SimpleNamespace(default_rng=lambda seed=None: _Generator(seed, self))
        self.draws = []  # the names of the device generators' draws (random, standard_normal...)
        self.uploads = []  # (shape, dtype) of each NumPy array copied to the device by asarray/array

    def __getattr__(self, name):
        fn = getattr(np, name)
        if not callable(fn) or isinstance(fn, type):
            return fn
        if name == "where":
            def where(*args):
                _refuse_host("where", args)
                return _wrap(np.where(*args))
            return where
        if isinstance(fn, np.ufunc):
            return fn  # ufuncs keep the subclass (and keep .at, .reduce)
        return lambda *a, **k: _wrap(fn(*a, **k))

    def get_default_memory_pool(self):  # what the Trainer reads for peak memory: a host-side counter
        return types.SimpleNamespace(total_bytes=lambda: 0, used_bytes=lambda: 0)

    def _note_upload(self, a):
        if isinstance(a, np.ndarray) and not isinstance(a, DeviceArray):
            self.uploads.append((a.shape, a.dtype))

    def asarray(self, a, dtype=None):
        self._note_upload(a)
        return _wrap(np.asarray(a.view(np.ndarray) if isinstance(a, DeviceArray) else a, dtype=dtype))

    def array(self, a, dtype=None, copy=True):
        self._note_upload(a)
        return _wrap(np.array(a.view(np.ndarray) if isinstance(a, DeviceArray) else a, dtype=dtype))


@pytest.fixture
def fake_gpu(monkeypatch):
    """`cuda:0` backed by FakeCupy for one test: the cuda code paths, run on this CPU."""
    from tinytorch.core import backend
    from tinytorch.nn.functional import _causal_bias

    def forget_device_state():  # nothing made on the fake may reach a real GPU's tests
        backend._gpu_generators.clear()
        backend._pending_checks.clear()
        _causal_bias.cache_clear()
    fake = FakeCupy()
    monkeypatch.setattr(backend, "_cuda_probe", (fake, None, 1))
    monkeypatch.setattr(backend._current_gpu, "index", None)
    forget_device_state()
    yield fake
    forget_device_state()
