"""optimizer.state_dict() holds Tensors in PyTorch's layout; state dicts of raw arrays still load."""

import numpy as np

import tinytorch as tt
from tinytorch.optim import SGD, AdamW


def stepped(opt_class, steps=2, **options):
    tt.manual_seed(0)
    w = tt.randn(3, 2, requires_grad=True)
    opt = opt_class([w], **options)
    for _ in range(steps):
        (w * w).sum().backward()
        opt.step()
        opt.zero_grad()
    return w, opt


def test_state_values_are_tensors_in_pytorchs_layout():
    w, opt = stepped(AdamW, lr=0.1)
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"} and list(sd["state"]) == [0]
    entry = sd["state"][0]
    assert set(entry) == {"step", "exp_avg", "exp_avg_sq"}
    for name in ("exp_avg", "exp_avg_sq"):
        assert isinstance(entry[name], tt.Tensor), f"{name} must be a Tensor, as in PyTorch, not a raw array"
        assert entry[name].shape == w.shape and entry[name].dtype == np.float32
    assert sd["param_groups"][0]["params"] == [0]


def test_tensor_state_and_old_array_state_both_resume_exactly():
    w, opt = stepped(SGD, lr=0.1, momentum=0.9)
    sd = opt.state_dict()
    old_style = {"state": {0: {k: v.numpy() if isinstance(v, tt.Tensor) else v for k, v in sd["state"][0].items()}},
                 "param_groups": sd["param_groups"]}
    results = []
    for saved in (sd, old_style):
        w2 = tt.tensor(w.numpy(), requires_grad=True)
        fresh = SGD([w2], lr=0.1, momentum=0.9)
        fresh.load_state_dict(saved)
        (w2 * w2).sum().backward()
        fresh.step()
        results.append(w2.numpy())
    (w * w).sum().backward()
    opt.step()
    np.testing.assert_array_equal(results[0], w.numpy())
    np.testing.assert_array_equal(results[1], w.numpy())
