"""ThreadedStep on batches it cannot cut into `threads` blocks: unbatched samples (DataLoader(batch_size=None)),
a last batch with fewer rows than threads, and batches whose inputs are a dict; each trains as one thread does."""

import threading

import numpy as np
import pytest

import tinytorch as tt
from tinytorch import nn
from tinytorch.data import DataLoader, Dataset, TensorDataset
from tinytorch.training import ThreadedStep, Trainer, train_step


class _Net(nn.Module):
    """3 features -> 1, with dropout; records the threads its forward ran in. A dict input is {"x", "scale"}."""

    def __init__(self, dropout):
        super().__init__()
        self.hidden, self.drop, self.out = nn.Linear(3, 8), nn.Dropout(dropout), nn.Linear(8, 1)
        self.ran_in = []

    def forward(self, inputs):
        self.ran_in.append(threading.get_ident())
        if isinstance(inputs, dict):
            scale = inputs["scale"]
            inputs = inputs["x"] * (scale.reshape(-1, 1) if scale.ndim else scale)
        return self.out(self.drop(self.hidden(inputs).relu()))


class _DictInputs(Dataset):
    def __init__(self, x, y):
        self.x, self.y, self.scale = tt.tensor(x), tt.tensor(y), tt.tensor(np.float32(0.5))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "scale": self.scale}, self.y[i]


def _mse(out, target):
    return nn.functional.mse_loss(out.reshape(target.shape), target)


def _data(n=9):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3)).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def _fit(loader, threads, dropout=0.0, accum_steps=1):
    tt.manual_seed(0)
    model = _Net(dropout)
    opt = tt.optim.SGD(model.parameters(), lr=0.1)
    history = Trainer(model, opt, _mse, loader, threads=threads, accum_steps=accum_steps, seed=1,
                      quiet=True).fit(epochs=2)
    return history.losses, [p.data.copy() for p in model.parameters()]


def _same_run(got, want, rtol=1e-6):
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, err_msg="losses differ from one thread's")
    for a, b in zip(got[1], want[1]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-7, err_msg="weights differ from one thread's")


@pytest.mark.parametrize("target_shape", ["0-d", "one row"])
@pytest.mark.parametrize("accum_steps", [1, 2])
def test_unbatched_samples_train_as_one_thread(target_shape, accum_steps):
    """DataLoader(batch_size=None) yields one sample: features (3,), target 0-d or (1,). Its features are not
    rows to cut over the threads: each sample runs whole, as a one-row batch does, dropout draws included."""
    x, y = _data()
    y = y if target_shape == "0-d" else y[:, None]
    want = None
    for threads in (1, 2, 3):
        loader = DataLoader(TensorDataset(tt.tensor(x), tt.tensor(y)), batch_size=None)
        got = _fit(loader, threads, dropout=0.5, accum_steps=accum_steps)
        if want is None:
            want = got
        else:
            _same_run(got, want)


def test_an_unbatched_sample_with_dict_inputs_runs_whole():
    x, y = _data()
    runs = [_fit(DataLoader(_DictInputs(x, y), batch_size=None), threads, dropout=0.5) for threads in (1, 2)]
    _same_run(runs[1], runs[0])


def test_one_sample_runs_in_the_calling_thread_and_batches_are_still_cut():
    x, y = _data(4)
    tt.manual_seed(0)
    model = _Net(0.0)
    opt = tt.optim.SGD(model.parameters(), lr=0.1)
    step = ThreadedStep(model, 2)
    step(_mse, opt, [(tt.tensor(x[0]), tt.tensor(y[0]))])
    assert model.ran_in == [threading.get_ident()], "one sample's forward ran in a pool thread, or was cut"
    model.ran_in.clear()  # (the replicas share the model's list, as they share its other attributes)
    step(_mse, opt, [(tt.tensor(x), tt.tensor(y))])  # a batch after it: cut in two as before
    assert len(set(model.ran_in)) == 2, "a 4-row batch after an unbatched step was not cut over the threads"
    step.close()


def test_one_sample_matches_train_step_with_cross_entropy():
    """A class sample: features (3,), a 0-d class index, logits (C,): the lesson's train_step's loss and weights."""
    x, _ = _data(1)
    losses, weights = [], []
    for threaded in (False, True):
        tt.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
        opt = tt.optim.SGD(model.parameters(), lr=0.1)
        micro = [(tt.tensor(x[0]), tt.tensor(np.array(2)))] * 2
        loss = nn.functional.cross_entropy
        losses.append(ThreadedStep(model, 2)(loss, opt, micro) if threaded else train_step(model, loss, opt, micro))
        weights.append([p.data.copy() for p in model.parameters()])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for a, b in zip(weights[1], weights[0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dict_inputs", [False, True])
def test_a_last_batch_smaller_than_the_threads_and_dict_inputs(threads, dict_inputs):
    """9 samples in batches of 4: the last batch has 1 row, fewer than the threads; inputs a dict or a tensor."""
    x, y = _data()

    def loader():
        return DataLoader(_DictInputs(x, y) if dict_inputs else TensorDataset(tt.tensor(x), tt.tensor(y)),
                          batch_size=4)
    _same_run(_fit(loader(), threads, accum_steps=2), _fit(loader(), 1, accum_steps=2), rtol=1e-5)


def test_a_0d_input_runs_whole_and_backpropagates():
    """An unbatched 0-d input (a token index into an Embedding) gives logits (C,): one block, the model's own
    output, whose backward is the model's (a one-block join handed the backward an empty slice of the gradient)."""
    losses, grads = [], []
    for threaded in (False, True):
        tt.manual_seed(0)
        model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3))
        opt = tt.optim.SGD(model.parameters(), lr=0.1)
        micro = [(tt.tensor(np.array(7)), tt.tensor(np.array(1)))]
        loss = nn.functional.cross_entropy
        losses.append(ThreadedStep(model, 2)(loss, opt, micro) if threaded else train_step(model, loss, opt, micro))
        grads.append([p.grad.data.copy() for p in model.parameters()])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for a, b in zip(grads[1], grads[0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_model_that_returns_its_loss_runs_a_one_row_batch_whole():
    """A 0-d output (the model computes its loss) cannot be joined from row blocks, but a one-row batch is one
    block with nothing to join: it runs as train_step does (it raised IndexError); a 4-row batch is refused."""
    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)

        def forward(self, inputs):
            x, y = inputs
            return nn.functional.mse_loss(self.net(x).reshape(y.shape), y)
    x, y = _data(1)
    losses = []
    for threaded in (False, True):
        tt.manual_seed(0)
        model = WithLoss()
        opt = tt.optim.SGD(model.parameters(), lr=0.1)
        micro = [((tt.tensor(x), tt.tensor(y)), None)]
        own = lambda out, _: out  # noqa: E731
        losses.append(ThreadedStep(model, 2)(own, opt, micro) if threaded else train_step(model, own, opt, micro))
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    x, y = _data(4)
    model = WithLoss()
    with pytest.raises(ValueError, match="scalar tensor"):
        ThreadedStep(model, 2)(own, tt.optim.SGD(model.parameters(), lr=0.1), [((tt.tensor(x), tt.tensor(y)), None)])
