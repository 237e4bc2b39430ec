"""bench/profile_families.py (`gpt_shakespeare.py --profile`) on a tiny GPT: every op family of the step
is found in both frameworks, forward and backward, and TinyTorch's ops are unwrapped afterwards."""

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.parity
SEEN = ("matmul", "attention", "LayerNorm", "GELU", "cross-entropy", "embedding", "layout copies")


def load(name, monkeypatch):
    monkeypatch.setattr(sys, "path", [str(ROOT / "bench")] + sys.path)
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_table(table, framework):
    for phase in ("forward", "backward"):
        missing = [f for f in SEEN if table[phase][f] <= 0]
        assert not missing, f"{framework} {phase}: no time found for {missing}; did an op move or change name?"
        total = table[phase]["total"]
        assert abs(sum(v for f, v in table[phase].items() if f != "total") - total) < 1e-6 * max(total, 1)


def test_every_family_is_timed_in_both_frameworks(monkeypatch):
    families, pair = load("profile_families", monkeypatch), load("gpt_pair", monkeypatch)
    shape = dict(vocab_size=17, n_layer=1, n_head=2, n_embd=16, block_size=8)
    theirs = pair.torch_gpt(**shape)
    ours = pair.tinytorch_gpt(**shape, weights=pair.torch_weights(theirs))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 17, (2, 8)), rng.integers(0, 17, (2, 8))
    import torch

    import tinytorch as tt

    tx, ty, ox, oy = torch.from_numpy(x), torch.from_numpy(y), tt.tensor(x), tt.tensor(y)
    check_table(families.torch_families(lambda: theirs(tx, ty)[1], lambda loss: loss.backward(),
                                        lambda: theirs.zero_grad(set_to_none=True), 3), "torch")
    originals = {(m, n): getattr(importlib.import_module(m), n) for m, n, _ in families.TINYTORCH_OPS
                 if hasattr(importlib.import_module(m), n)}
    check_table(families.tinytorch_families(lambda: ours(ox, oy)[1], lambda loss: loss.backward(),
                                            lambda: ours.zero_grad(), 3), "tinytorch")
    for (module, name), fn in originals.items():
        assert getattr(importlib.import_module(module), name) is fn, f"{module}.{name} is still wrapped"
