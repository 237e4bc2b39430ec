"""Random numbers for a cuda tensor are drawn by that GPU's generator: no host sync, no copy.

Run on FakeCupy (see conftest.py): its generator keeps its state in a device array as CuPy's does,
it records each draw (`fake.draws`) and each NumPy array copied to the device (`fake.uploads`)."""
import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.core import backend
from tinytorch.core.backend import count_host_syncs, default_generator
from tinytorch.data import DataLoader, TensorDataset
from tinytorch.training import Trainer
from tinytorch.training.checkpoint import load_checkpoint, save_checkpoint
from tinytorch.training.trainer import _get_states, _set_states


def _on_host(t):
    return t.data.get()


def test_rand_randn_randint_are_drawn_on_the_gpu(fake_gpu):
    tt.manual_seed(0)
    with count_host_syncs(include_cpu=True) as syncs:
        u = tt.rand(3, 4, device="cuda")
        z = tt.randn((2, 5), device="cuda", dtype=tt.float64)
        k = tt.randint(2, 9, (6,), device="cuda")
        h = tt.randint(4, (3,), device="cuda")
    assert syncs.count == 0, f"drawing made {syncs.count} device->host conversions"
    assert fake_gpu.uploads == [], f"random numbers were made on the host and copied over: {fake_gpu.uploads}"
    assert fake_gpu.draws == ["random", "standard_normal", "integers", "integers"]
    assert all(isinstance(t.data, fake_gpu.DeviceArray) for t in (u, z, k, h))
    assert (u.dtype, z.dtype, k.dtype) == (tt.float32, tt.float64, tt.int64)
    assert u.shape == (3, 4) and z.shape == (2, 5) and k.shape == (6,)
    assert ((_on_host(k) >= 2) & (_on_host(k) < 9)).all() and ((_on_host(h) >= 0) & (_on_host(h) < 4)).all()


def test_a_seed_repeats_the_gpu_stream_which_differs_from_the_cpu_one(fake_gpu):
    tt.manual_seed(7)
    first = _on_host(tt.randn(8, device="cuda"))
    cpu = tt.randn(8).numpy()
    tt.manual_seed(7)
    np.testing.assert_array_equal(_on_host(tt.randn(8, device="cuda")), first)
    np.testing.assert_array_equal(tt.randn(8).numpy(), cpu)
    np.testing.assert_array_equal(cpu, np.random.default_rng(7).standard_normal(8, dtype=np.float32),
                                  err_msg="the CPU stream must not change")
    assert not np.array_equal(first, cpu), "cuda draws from its own generator, as in PyTorch"


def test_randint_checks_its_arguments():
    with pytest.raises(TypeError, match="size"):
        tt.randint(5)
    with pytest.raises(ValueError, match="greater than low"):
        tt.randint(3, 3, (2,))
    tt.manual_seed(1)
    np.testing.assert_array_equal(tt.randint(0, 10, (5,)).numpy(), np.random.default_rng(1).integers(0, 10, 5))


def test_a_linear_on_cuda_is_initialised_on_the_gpu(fake_gpu):
    tt.manual_seed(3)
    with count_host_syncs(include_cpu=True) as syncs:
        layer = nn.Linear(4, 3, device="cuda")
        embedding = nn.Embedding(5, 2, device="cuda")
    assert syncs.count == 0 and fake_gpu.uploads == [], "init drew on the host and copied to the GPU"
    assert fake_gpu.draws == ["random", "random", "standard_normal"], "weight, bias, embedding"
    bound = 1 / np.sqrt(4)
    assert (np.abs(_on_host(layer.weight)) <= bound).all() and (np.abs(_on_host(layer.bias)) <= bound).all()
    tt.manual_seed(3)
    np.testing.assert_array_equal(_on_host(nn.Linear(4, 3, device="cuda").weight), _on_host(layer.weight))
    assert embedding.weight.data.dtype == np.float32


def test_gpu_generator_state_survives_a_checkpoint(fake_gpu, tmp_path):
    tt.manual_seed(0)
    tt.rand(5, device="cuda")
    states = _get_states([default_generator()])
    assert [s["cuda"] for s in states[1:]] == [0], "the GPU generator's state is saved with the CPU one's"
    path = save_checkpoint(tmp_path / "c.safetensors", {"rng": states})
    expected = _on_host(tt.rand(5, device="cuda"))
    backend._gpu_generators.clear()  # as in a new process
    _set_states([default_generator()], load_checkpoint(path, "cuda")["rng"])
    np.testing.assert_array_equal(_on_host(tt.rand(5, device="cuda")), expected)


def test_a_gpu_runs_checkpoint_resumes_on_the_cpu():
    cpu_state = np.random.default_rng(7).bit_generator.state
    gpu_entry = {"cuda": 0, "state": np.zeros(8, np.int8)}  # saved by a run on cuda:0
    generator = np.random.default_rng(0)
    _set_states([generator], [cpu_state, gpu_entry])  # this machine has no GPU: its state is not needed
    assert generator.bit_generator.state == cpu_state


def _cuda_trainer(folder, **kwargs):
    tt.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 5)).astype(np.float32), rng.integers(0, 3, 24)
    loader = DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)), batch_size=8, shuffle=True)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).to("cuda")
    opt = tt.optim.AdamW(model.parameters(), lr=1e-2)
    return Trainer(model, opt, nn.CrossEntropyLoss(), loader, device="cuda", seed=3, quiet=True,
                   checkpoint_dir=folder, **kwargs), model


def test_a_resumed_cuda_run_with_dropout_is_exact(fake_gpu, tmp_path):
    whole, model = _cuda_trainer(tmp_path / "whole")
    tt.rand(3, device="cuda")  # fit's seed=3 reseeds the GPU's generator too: this draw changes nothing
    whole.fit(max_steps=5)
    stopped, _ = _cuda_trainer(tmp_path / "cut", checkpoint_every=2)
    stopped.fit(max_steps=2)
    backend._gpu_generators.clear()  # the resumed run starts in a new process
    resumed, resumed_model = _cuda_trainer(tmp_path / "cut", resume=True)
    tt.rand(3, device="cuda")  # whatever ran before the resume, the checkpoint's state wins
    resumed.fit(max_steps=5)
    assert fake_gpu.draws.count("random") > 5, "dropout should draw on the GPU"
    for a, b in zip(model.parameters(), resumed_model.parameters()):
        np.testing.assert_array_equal(_on_host(a), _on_host(b), err_msg="the resumed run differs")
