"""Causal attention forward + backward: TinyTorch's fused op vs PyTorch's SDPA, on the CPU.

    python bench/attention.py [--B 12 --H 4 --T 64 --D 32 --repeat 50]

Shapes default to the nanoGPT shakespeare-char config (batch 12, 4 heads of 32, 64 tokens).
"""

import argparse
import time

import numpy as np

import tinytorch as tt
from tinytorch.nn.functional import scaled_dot_product_attention


def best_ms(step, repeat):
    step()  # warm up (and build the cached mask)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("B", 12), ("H", 4), ("T", 64), ("D", 32), ("repeat", 50)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    shape = (args.B, args.H, args.T, args.D)
    arrays = [np.random.default_rng(i).standard_normal(shape).astype(np.float32) for i in range(3)]

    ours = [tt.tensor(a, requires_grad=True) for a in arrays]

    def tinytorch_step():
        for t in ours:
            t.grad = None
        scaled_dot_product_attention(*ours, is_causal=True).sum().backward()

    print(f"shape (B, H, T, D) = {shape}, causal, forward + backward, best of {args.repeat}")
    print(f"tinytorch: {best_ms(tinytorch_step, args.repeat):7.3f} ms")
    try:
        import torch
    except ImportError:
        print("torch: not installed")
        return
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]

    def torch_step():
        for t in theirs:
            t.grad = None
        torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=True).sum().backward()

    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads): "
          f"{best_ms(torch_step, args.repeat):7.3f} ms")


if __name__ == "__main__":
    main()
