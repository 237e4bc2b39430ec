"""GPT against Hugging Face's GPT-2 (the oracle): same checkpoint, same logits, same greedy tokens."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
import tinytorch as tt  # noqa: E402
from tinytorch.models import GPT  # noqa: E402

pytestmark = pytest.mark.parity
SHAPE = dict(n_layer=2, n_head=4, n_embd=64, vocab_size=100, n_positions=32)


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    config = transformers.GPT2Config(**SHAPE, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # make LayerNorms and biases non-trivial, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def hf_greedy(model, ids, n):
    ids = torch.tensor(ids)
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids.numpy()


IDS = np.random.default_rng(0).integers(0, 100, (2, 12))


def test_from_pretrained_matches_transformers(hf_model, tmp_path, device):
    hf_model.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(tmp_path, device=device)
    assert ours.config.block_size == 32 and ours.config.n_embd == 64 and ours.config.vocab_size == 100
    logits = ours(tt.tensor(IDS, device=device))[0].numpy()
    np.testing.assert_allclose(logits, hf_logits(hf_model, IDS), atol=1e-4, rtol=1e-4)
    generated = ours.generate(tt.tensor(IDS, device=device), 20, temperature=0).numpy()
    np.testing.assert_array_equal(generated, hf_greedy(hf_model, IDS, 20), "greedy generations differ")


def test_save_pretrained_loads_in_transformers(hf_model, tmp_path, device):
    hf_model.save_pretrained(tmp_path / "hf")
    ours = GPT.from_pretrained(tmp_path / "hf", device=device)
    ours.save_pretrained(tmp_path / "ours")
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    ours_logits = ours(tt.tensor(IDS, device=device))[0].numpy()
    np.testing.assert_allclose(hf_logits(theirs, IDS), ours_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(hf_logits(theirs, IDS), hf_logits(hf_model, IDS), atol=1e-5)


def test_fresh_tinytorch_model_loads_in_transformers(tmp_path):
    tt.manual_seed(0)
    ours = GPT(tt.models.GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64)).eval()
    ours.save_pretrained(tmp_path)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    np.testing.assert_allclose(hf_logits(theirs, IDS), ours(tt.tensor(IDS))[0].numpy(), atol=1e-4, rtol=1e-4)
