"""One GPT in PyTorch and in TinyTorch with the same weights, and the check that both compute the same.

Shared by bench/gpt_shakespeare.py (CPU) and bench/gpu.py (CUDA). `torch_gpt` is nanoGPT's model.py
trimmed to what the benchmarks use (no biases, no dropout, tied embeddings, GELU with tanh);
`tinytorch_gpt` builds TinyTorch's GPT in the same shape and loads the PyTorch weights; `compare_step`
runs one forward and backward of both on one batch and returns how far apart they are.
"""

import contextlib
import math

import numpy as np


def torch_gpt(vocab_size, n_layer, n_head, n_embd, block_size, seed=1337, device="cpu"):
    """nanoGPT's GPT in PyTorch, initialised as nanoGPT does from `seed`, on `device`."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self, C, H):
            super().__init__()
            self.n_head = H
            self.c_attn = nn.Linear(C, 3 * C, bias=False)
            self.c_proj = nn.Linear(C, C, bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hd)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self, C):
            super().__init__()
            self.c_fc = nn.Linear(C, 4 * C, bias=False)
            self.c_proj = nn.Linear(4 * C, C, bias=False)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self, C, H):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, bias=False)
            self.attn = CausalSelfAttention(C, H)
            self.ln_2 = nn.LayerNorm(C, bias=False)
            self.mlp = MLP(C)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self, V, T, L, H, C):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(V, C), wpe=nn.Embedding(T, C),
                h=nn.ModuleList([Block(C, H) for _ in range(L)]), ln_f=nn.LayerNorm(C, bias=False)))
            self.lm_head = nn.Linear(C, V, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as nanoGPT
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * L))

        @staticmethod
        def _init_weights(module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            T = idx.shape[1]
            x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T, device=idx.device))
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))
            loss = None
            if targets is not None:
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            return logits, loss

    torch.manual_seed(seed)
    return GPT(vocab_size, block_size, n_layer, n_head, n_embd).to(device)


def torch_weights(model):
    """The PyTorch model's state dict as NumPy arrays on the host (the tied matrix under both names)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def tinytorch_gpt(vocab_size, n_layer, n_head, n_embd, block_size, weights=None, device="cpu"):
    """TinyTorch's GPT in the same shape; `weights` (name -> array) from `torch_weights`.

    The PyTorch model above uses nanoGPT's names, which are TinyTorch's too, and both store
    Linear weights as (out, in): the copy needs no renaming and no transpose.
    """
    from tinytorch.models.gpt import GPT, GPTConfig

    config = GPTConfig(vocab_size=vocab_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                       block_size=block_size, dropout=0.0, bias=False, tie_weights=True)
    model = GPT(config)
    if weights is not None:
        model.load_state_dict({torch_to_tinytorch_name(k): v for k, v in weights.items()})
        assert model.lm_head.weight is model.transformer.wte.weight, "weight tying lost while loading"
    return model.to(device)


def torch_to_tinytorch_name(name):
    return name  # identical layouts (see tinytorch_gpt); kept as the one place to map if they diverge


def _rel(a, b):
    """Largest absolute difference relative to the largest magnitude of `b`, in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-30))


def compare_step(theirs, ours, x, y, theirs_autocast=contextlib.nullcontext, ours_autocast=contextlib.nullcontext):
    """Loss, logits, every block's output and every gradient of both models on one batch.

    `theirs` is the PyTorch model, `ours` TinyTorch's with the same weights, each on its own device;
    x, y are (B, T) int64 NumPy arrays. The autocast arguments make a context for each forward."""
    import torch

    import tinytorch as tt
    from tinytorch.core.backend import to_numpy

    t_device = next(theirs.parameters()).device
    o_device = next(iter(ours.parameters())).device
    theirs_h, ours_h = [], []
    hooks = [block.register_forward_hook(lambda m, i, o: theirs_h.append(o.detach().float().cpu().numpy()))
             for block in theirs.transformer.h]
    with theirs_autocast():
        logits_t, loss_t = theirs(torch.from_numpy(x).to(t_device), torch.from_numpy(y).to(t_device))
    loss_t.backward()
    for hook in hooks:
        hook.remove()
    for block in ours.transformer.h:  # record each block's output: wrap forward (unwrapped below)
        block.forward = (lambda f: lambda *a, **k: ours_h.append(f(*a, **k)) or ours_h[-1])(block.forward)
    try:
        with ours_autocast():
            logits_o, loss_o = ours(tt.tensor(x, device=o_device), tt.tensor(y, device=o_device))
        loss_o.backward()
    finally:
        for block in ours.transformer.h:
            del block.forward  # the instance attribute: the class's forward again

    out = {"loss_torch": loss_t.item(), "loss_tinytorch": float(loss_o.item()),
           "logits_max_rel": _rel(to_numpy(logits_o.data), logits_t.detach().float().cpu().numpy()),
           "blocks_max_rel": [_rel(to_numpy(o.data), t) for o, t in zip(ours_h, theirs_h)]}
    theirs_p = dict(theirs.named_parameters())
    out["grad_max_rel"] = {name: _rel(to_numpy(p.grad.data), theirs_p[name].grad.float().cpu().numpy())
                           for name, p in ours.named_parameters()}
    return out
