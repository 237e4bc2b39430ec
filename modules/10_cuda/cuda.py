# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Module 10 — CUDA: kernels and mixed precision
#
# On the CPU every op of TinyTorch is one NumPy call. On a GPU (`device="cuda"`) it is one
# CuPy call, and each of those launches one or more *kernels*: small programs that thousands
# of GPU threads run at once. This module opens that box. You write the kernels a transformer
# spends its time in, in Python, with **numba-cuda**, and then make training cheaper with
# **mixed precision**: matmuls in 16-bit floats, everything that needs range in 32.
#
# No GPU is needed. numba ships a **CUDA simulator** that runs every thread of a kernel as a
# Python thread on the CPU: grids, shared memory, barriers and atomics behave as on a GPU,
# about a million times slower. Every test here runs in it; on a machine with a GPU the very
# same kernels run on CuPy arrays, unchanged.
#
# **You will write:**
#
# 1. `bias_gelu_kernel`: a fused elementwise kernel, one thread per element;
# 2. `softmax_kernel`: a row softmax with an *online* max and sum, one thread per row;
# 3. `layer_norm_kernel`: LayerNorm's forward, one thread per row;
# 4. `sum_kernel`: a block reduction in shared memory, blocks combined with an atomic add;
# 5. `matmul_kernel`: a tiled matrix product through shared memory;
# 6. `autocast`: which op runs in which dtype;
# 7. `GradScaler`: dynamic loss scaling, skipping steps that overflow.
#
# **Cost to keep in mind:** a GPU is fast only when it is busy and fed. Most transformer ops
# move far more bytes than they compute on, so the speed of memory, not of arithmetic,
# decides their time; fusing ops and reusing data from fast memory are the two levers.

# %%
#| default_exp cuda.kernels

# %% [markdown]
# `provided.py` holds the plumbing: it loads numba (in the simulator when CuPy sees no GPU),
# marks a Python function as a kernel (`@kernel`), sizes grids (`grid_for`) and gives kernels
# their arrays (`kernel_array`, `device_empty`, `device_zeros`). For mixed precision it adds the
# `bfloat16` dtype, a differentiable `_cast`, and `GradScaler`'s constructor and checks.
# `_autocast_state` is module 01's hook: linear, matmul and attention consult it. The tests
# compare the kernels with NumPy references (`_reference_softmax`, ...; provided too, in the
# fixtures file `tinytorch.cuda.fixtures`), and `_constants` lets them relaunch a kernel with
# other block sizes.

# %%
import functools
import math
import time

import numpy as np

import tinytorch as tt
from tinytorch.core.amp import (_autocast_dtype, _cast, _GradScalerBase, _is_float_tensor_on, _with_policy,
                                bfloat16)
from tinytorch.core.backend import float32, to_host
from tinytorch.core.tensor import _autocast_state
from tinytorch.cuda.launch import (cuda, device_empty, device_zeros, grid_for, kernel, kernel_array, check_row_vectors,
                                   _constants, _simulated_atomic_adds, uses_simulator)
from tinytorch.cuda.fixtures import _reference_bias_gelu, _reference_layer_norm, _reference_softmax  # the tests' own
from tinytorch.cuda.raw import CUDA_SOURCES, compile_ptx, nvrtc_unavailable_reason

print("kernels run in the", "CUDA simulator (CPU)" if uses_simulator() else "GPU")

# %% [markdown]
# ## 1. The GPU execution model, with numbers
#
# Take an NVIDIA H100 (the H200 is the same chip with faster, larger memory).
#
# - **Threads, blocks, grid.** A launch runs a *grid* of *blocks*; a block is up to 1,024
#   threads. Every thread runs the same kernel and finds its work from its indices:
#   `cuda.grid(1)` = blockIdx.x · blockDim.x + threadIdx.x. Blocks are independent and may
#   run in any order; only threads of one block can cooperate.
# - **Warps.** The hardware runs a block 32 threads at a time, a *warp*, in lockstep: one
#   instruction for all 32. Threads of a warp that branch differently run both branches,
#   one after the other.
# - **Streaming multiprocessors (SMs).** 132 of them. Each holds up to 2,048 threads
#   (64 warps) and 65,536 registers, and switches between warps every cycle: while one warp
#   waits ~500 cycles for memory, others compute. *Occupancy* is the fraction of those 64
#   warp slots in use; a kernel with many registers or much shared memory per thread gets
#   fewer warps and hides less latency. 132 SMs × 2,048 threads: a launch needs ~270,000
#   threads to fill the chip.
# - **Memory hierarchy.** Registers (per thread, ~1 cycle) → shared memory (per block, up
#   to 228 KB per SM, ~30 cycles, written by the program) → L2 cache (50 MB) → HBM, the
#   "global" memory (80 GB at 3.35 TB/s on an H100; 141 GB at 4.8 TB/s on an H200).
# - **Coalescing.** A warp's 32 loads of consecutive 4-byte floats become one 128-byte
#   transaction; 32 loads with a stride become up to 32 transactions. Neighbouring threads
#   should read neighbouring addresses.
# - **Launch overhead and host syncs.** A launch costs the CPU ~5 µs, during which the GPU
#   can do a lot: at 4.8 TB/s, 24 MB of traffic. Launches are queued, so the CPU normally
#   runs ahead. Anything that needs a GPU value on the CPU (`.item()`, `bool(...)`, printing
#   a loss) stops the CPU until the queue drains: ~10-20 µs plus all queued work, and the GPU
#   then idles until the CPU queues more.
#
# **Compute or memory?** An H100 does ~67 TFLOP/s in float32 on its ordinary cores and
# ~990 TFLOP/s in bfloat16 on its tensor cores, but moves only 3.35 TB/s. An op that does
# fewer than 67 / 3.35 ≈ 20 float32 FLOPs per byte moved (its *arithmetic intensity*) waits
# on memory. Adding a bias is 1 FLOP per 12 bytes; GELU ~10 FLOPs per 8 bytes. Both are
# memory-bound, by factors of ~250 and ~16. Only large matmuls are compute-bound.
#
# ## 2. A first kernel: fused bias + GELU
#
# A GPT's MLP computes gelu(x Wᵀ + b). Done as two ops, the bias add reads x and writes a
# temporary (8 bytes per element), and GELU reads the temporary and writes the output
# (8 more). One *fused* kernel reads x once and writes once: half the traffic, so about half
# the time. For the MLP of nanoGPT's GPU config (64 × 256 tokens × 1,536 features, 25 M
# floats), 16 bytes per element is 403 MB, 84 µs at 4.8 TB/s; fused, 42 µs.
#
# GELU in its tanh form, as in module 01: gelu(v) = ½ v (1 + tanh(√(2/π) (v + 0.044715 v³))).
#
# *Worked example:* v = 1: √(2/π) ≈ 0.7979, times 1.044715 is 0.8336, tanh gives 0.6823,
# and ½ · 1 · 1.6823 = 0.8412.
#
# **The thread's job.** Launch one thread per element of the (rows, n) array, in a 1-D grid.
# Thread i handles the flat index i: row i // n, column i % n. Consecutive threads touch
# consecutive addresses (coalesced), and the grid is rounded up to whole blocks, so the last
# block has threads past the end: each must check that its index exists before touching
# memory.
#
# ### Exercise 1: `bias_gelu_kernel(x, bias, out)`
#
# - **Hint 1.** One element per thread: find the element, guard it, compute, store.
# - **Hint 2.** i = `cuda.grid(1)`; valid while i < rows · n; v = the element plus its column's bias;
#   out = ½ v (1 + tanh(c (v + 0.044715 v³))) with c = `GELU_C`.
# - **Hint 3.** Four steps: the index, an `if` on its range, `row, col` from `//` and `%`,
#   then two or three lines of arithmetic with `math.tanh`. No loops.

# %% nbgrader={"grade": false, "grade_id": "bias-gelu-kernel", "locked": false, "schema_version": 3, "solution": true}
#| export
THREADS = 16  # threads per 1-D block: small for the simulator (see below); 128-256 on a GPU
GELU_C = math.sqrt(2.0 / math.pi)


@kernel
def bias_gelu_kernel(x, bias, out):
    """out[r, c] = gelu(x[r, c] + bias[c]) (tanh form); one thread per element."""
    ### BEGIN SOLUTION
    i = cuda.grid(1)
    n = x.shape[1]
    if i < x.shape[0] * n:
        row, col = i // n, i % n
        v = x[row, col] + bias[col]
        inner = GELU_C * (v + 0.044715 * v * v * v)
        out[row, col] = 0.5 * v * (1.0 + math.tanh(inner))
    ### END SOLUTION


def bias_gelu(x, bias):
    """gelu(x + bias), tanh form, for x (rows, n) and bias (n,), in one fused kernel."""
    x, bias = kernel_array(x), kernel_array(bias)
    check_row_vectors("bias_gelu", x, bias=bias)
    out = device_empty(x)
    bias_gelu_kernel[grid_for(x.size, THREADS), THREADS](x, bias, out)
    return out


# %% nbgrader={"grade": true, "grade_id": "test-bias-gelu", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_bias_gelu():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    keep = x.copy()
    out = bias_gelu(x, b)
    assert np.array_equal(x, keep), "bias_gelu changed its input x: a kernel writes only `out`"
    assert out.shape == (8, 16), f"one output per element: (8, 16), got {out.shape}"
    assert np.allclose(out, _reference_bias_gelu(x, b), atol=1e-5), "bias_gelu differs from gelu(x + bias)"
    one = bias_gelu(np.ones((1, 1), np.float32), np.zeros(1, np.float32))
    assert abs(one[0, 0] - 0.8412) < 1e-3, f"gelu(1) = 0.8412 (the worked example), got {one[0, 0]}"
    odd = rng.standard_normal((3, 7)).astype(np.float32)  # 21 elements, 2 blocks: 11 threads have none
    out = bias_gelu(odd, np.zeros(7, np.float32))
    assert np.allclose(out, _reference_bias_gelu(odd, 0), atol=1e-5), \
        "3 x 7: threads past the last element must do nothing (guard the index)"
    try:
        far = bias_gelu(np.array([[-60.0, 60.0]], np.float32), np.zeros(2, np.float32))
    except OverflowError as e:  # the simulator's math.exp overflow (a GPU gives inf / inf = NaN)
        far = e
    assert isinstance(far, np.ndarray) and np.allclose(far, [[0.0, 60.0]]), f"gelu(-60) = 0 and gelu(60) = 60 " \
        f"(the tanh saturates at -1 and 1), got {far!r}: a tanh built from exponentials overflows; math.tanh does not"
    ### BEGIN HIDDEN TESTS
    wide = rng.standard_normal((2, 40)).astype(np.float32)
    bw = rng.standard_normal(40).astype(np.float32)
    assert np.allclose(bias_gelu(wide, bw), _reference_bias_gelu(wide, bw), atol=1e-5), "rows longer than a block"
    ### END HIDDEN TESTS


test_bias_gelu()

# %% [markdown]
# On a GPU the arithmetic costs nothing next to the two memory accesses: this kernel runs
# at the speed of memory, which is the best an elementwise op can do.
#
# ## 3. A row softmax with an online max and sum
#
# softmax(z)ᵢ = e^(zᵢ − m) / Σⱼ e^(zⱼ − m), with m = max z so that no exponent overflows.
# Done naively that is three passes over the row: the max, the sum, the output. Every pass
# is a full read of the row from memory.
#
# The **online** trick (Milakov and Gimelshein, 2018; the heart of FlashAttention) finds
# the max and the sum in *one* pass. Keep a running max m and a running sum s of e^(zⱼ − m)
# over the values seen so far. When a new value v arrives:
#
# - if v ≤ m: s ← s + e^(v − m);
# - if v > m: every term in s was scaled by e^(−m) and must now be scaled by e^(−v), so
#   s ← s · e^(m − v) + 1 (the 1 is v's own term, e^(v − v)), then m ← v.
#
# One edge: a masked position holds −∞, and it may come first, while m is still −∞. Its
# term e^(−∞) is 0, but e^(v − m) computes e^(−∞ − (−∞)) = e^(NaN): a −∞ must add nothing.
#
# *Worked example,* z = [1, 3, 2]: start m = −∞, s = 0. v = 1 > m: s = 0 · e^(−∞) + 1 = 1,
# m = 1. v = 3 > m: s = 1 · e^(1 − 3) + 1 = 1.135, m = 3. v = 2 ≤ m: s = 1.135 + e^(−1) =
# 1.503. The outputs are e^(z − 3) / 1.503 = [0.090, 0.665, 0.245].
#
# Here one thread handles one row (a fine layout for many short rows; long rows want a block
# per row, as the CUDA C kernel of section 7 does). Note the access pattern: thread r reads
# row r, so neighbouring threads read addresses a whole row apart, uncoalesced. On a GPU a
# block-per-row layout fixes that; here the algorithm is the lesson.
#
# ### Exercise 2: `softmax_kernel(x, out)`
#
# - **Hint 1.** One thread per row: a first loop finds m and s together, a second writes
#   the outputs.
# - **Hint 2.** The two update rules above; the output is e^(z − m) / s.
# - **Hint 3.** row = `cuda.grid(1)`, guarded by the number of rows; the running max
#   starts at minus infinity and the running sum at zero; inside the first loop an `if v > m: ...`
#   and a second branch for the other values that leaves −∞ out; the second loop uses `math.exp`.

# %% nbgrader={"grade": false, "grade_id": "softmax-kernel", "locked": false, "schema_version": 3, "solution": true}
#| export
@kernel
def softmax_kernel(x, out):
    """out[r] = softmax(x[r]) for every row r of a 2-D array; one thread per row, one pass for m and s."""
    ### BEGIN SOLUTION
    row = cuda.grid(1)
    if row < x.shape[0]:
        m = -math.inf
        s = 0.0
        for c in range(x.shape[1]):
            v = x[row, c]
            if v > m:
                s = s * math.exp(m - v) + 1.0
                m = v
            elif v > -math.inf:  # a masked -inf adds e^-inf = 0 (and -inf - -inf would be NaN)
                s += math.exp(v - m)
        for c in range(x.shape[1]):
            out[row, c] = math.exp(x[row, c] - m) / s
    ### END SOLUTION


def softmax_rows(x):
    """softmax over the last axis of a 2-D array, by `softmax_kernel`."""
    x = kernel_array(x)
    out = device_empty(x)
    softmax_kernel[grid_for(x.shape[0], THREADS), THREADS](x, out)
    return out


# %% nbgrader={"grade": true, "grade_id": "test-softmax-kernel", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_softmax_kernel():
    out = softmax_rows(np.array([[1.0, 3.0, 2.0]], np.float32))
    assert out.shape == (1, 3), f"one output per input: (1, 3), got {out.shape}"
    assert np.allclose(out, [[0.090, 0.665, 0.245]], atol=1e-3), f"the worked example gives [0.090, 0.665, 0.245], got {out}"
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 16)) * 5).astype(np.float32)
    keep = x.copy()
    assert np.allclose(softmax_rows(x), _reference_softmax(keep), atol=1e-6), "8 x 16 rows differ from NumPy's softmax"
    assert np.array_equal(x, keep), "softmax_rows changed its input x: a kernel writes only `out`"
    tall = rng.standard_normal((20, 3)).astype(np.float32)  # 20 rows: 2 blocks of THREADS = 16 threads
    assert np.allclose(softmax_rows(tall), _reference_softmax(tall), atol=1e-6), "20 rows run on 2 blocks: rows " \
        f"16-19 belong to block 1 (row = cuda.grid(1), not threadIdx.x); rows 16-19 came out {softmax_rows(tall)[16:]}"
    low = "logits [-1000, -999, -1001]: expected [0.245, 0.665, 0.090] (the running max must start at -inf), got "
    try:
        got = softmax_rows(np.array([[-1000.0, -999.0, -1001.0]], np.float32))
    except ZeroDivisionError as e:  # the simulator's 0 / 0 (a GPU writes NaN)
        raise AssertionError(low + repr(e)) from None
    assert np.allclose(got, [[0.245, 0.665, 0.090]], atol=1e-3), low + str(got)
    big = np.array([[1000.0, 1001.0, 999.0], [-5.0, -5.0, -5.0]], np.float32)
    got = softmax_rows(big)
    assert np.isfinite(got).all(), "large logits overflowed: subtract the running max before exponentiating"
    assert np.allclose(got, _reference_softmax(big), atol=1e-6), "rows of large or equal values are wrong"
    masked = np.array([[-np.inf, 1.0, 2.0], [1.0, -np.inf, 2.0]], np.float32)
    assert np.allclose(softmax_rows(masked), _reference_softmax(masked), atol=1e-6), \
        "a masked -inf (first in row 0) must get 0 and add nothing to the sum, not NaN"
    ### BEGIN HIDDEN TESTS
    falling = np.array([[5.0, 4.0, 3.0, 2.0, 1.0]], np.float32)  # the max comes first: only the else-branch
    assert np.allclose(softmax_rows(falling), _reference_softmax(falling), atol=1e-6), "a row whose max is first"
    ### END HIDDEN TESTS


test_softmax_kernel()

# %% [markdown]
# Two passes over the row instead of three: a third less memory traffic. FlashAttention
# applies the same rescaling to the *output* as well, so attention never writes its T×T
# scores to memory at all.
#
# ## 4. LayerNorm's forward
#
# For a row x of n features: μ = Σ x / n, σ² = Σ (x − μ)² / n (the biased variance, as
# PyTorch's LayerNorm uses), y = (x − μ) / √(σ² + ε) · w + b.
#
# *Worked example:* x = [1, 2, 3], w = 1, b = 0, ε = 0: μ = 2, σ² = 2/3, y = [−1.2247, 0,
# 1.2247].
#
# Two passes for the statistics (mean, then the squared deviations) are more accurate than
# one pass over Σx and Σx², which cancels catastrophically when μ is large next to σ.
#
# ### Exercise 3: `layer_norm_kernel(x, weight, bias, eps, out)`
#
# - **Hint 1.** One thread per row: the mean, the variance, then the output, each a loop
#   over the row.
# - **Hint 2.** The three formulas above; compute 1 / √(σ² + ε) once.
# - **Hint 3.** Guard the row index; accumulate in plain Python floats; the last loop
#   writes `out[row, c]` from x, the mean, that reciprocal, `weight[c]` and `bias[c]`.

# %% nbgrader={"grade": false, "grade_id": "layer-norm-kernel", "locked": false, "schema_version": 3, "solution": true}
#| export
@kernel
def layer_norm_kernel(x, weight, bias, eps, out):
    """out[r] = (x[r] - mean) / sqrt(var + eps) * weight + bias over the last axis; one thread per row."""
    ### BEGIN SOLUTION
    row = cuda.grid(1)
    if row < x.shape[0]:
        n = x.shape[1]
        mean = 0.0
        for c in range(n):
            mean += x[row, c]
        mean /= n
        var = 0.0
        for c in range(n):
            d = x[row, c] - mean
            var += d * d
        inv_std = 1.0 / math.sqrt(var / n + eps)
        for c in range(n):
            out[row, c] = (x[row, c] - mean) * inv_std * weight[c] + bias[c]
    ### END SOLUTION


def layer_norm_rows(x, weight, bias, eps=1e-5):
    """LayerNorm over the last axis of a 2-D array, by `layer_norm_kernel`."""
    x, weight, bias = kernel_array(x), kernel_array(weight), kernel_array(bias)
    check_row_vectors("layer_norm_rows", x, weight=weight, bias=bias)
    out = device_empty(x)
    layer_norm_kernel[grid_for(x.shape[0], THREADS), THREADS](x, weight, bias, np.float32(eps), out)
    return out


# %% nbgrader={"grade": true, "grade_id": "test-layer-norm-kernel", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_layer_norm_kernel():
    out = layer_norm_rows(np.array([[1.0, 2.0, 3.0]], np.float32), np.ones(3, np.float32), np.zeros(3, np.float32), 0.0)
    assert out.shape == (1, 3), f"one output per input: (1, 3), got {out.shape}"
    assert np.allclose(out, [[-1.2247, 0.0, 1.2247]], atol=1e-4), f"the worked example gives [-1.2247, 0, 1.2247], got {out}"
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    w, b = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    keep = x.copy()
    assert np.allclose(layer_norm_rows(x, w, b), _reference_layer_norm(keep, w, b, 1e-5), atol=1e-5), \
        "8 x 16 rows differ from LayerNorm (biased variance, weight and bias applied)"
    assert np.array_equal(x, keep), f"layer_norm_rows changed its input: a kernel writes only `out` (keep x - mean " \
        f"in a local); x[0, :3] was {keep[0, :3]}, became {x[0, :3]}"
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    tiny = layer_norm_rows(np.array([[0.0, 0.001, 0.002, 0.003]], np.float32), ones, zeros)
    assert np.allclose(tiny, [[-0.4472, -0.1491, 0.1491, 0.4472]], atol=1e-4), \
        f"variance 1.25e-6 next to eps 1e-5: divide by sqrt(var + eps), eps INSIDE the root; expected " \
        f"[-0.4472, -0.1491, 0.1491, 0.4472], got {tiny}"
    third = layer_norm_rows(np.array([[1.0, 2.0, 3.0]], np.float32), ones[:3], zeros[:3], eps=1 / 3)
    assert np.allclose(third, [[-1.0, 0.0, 1.0]], atol=1e-5), \
        f"eps = 1/3 on [1, 2, 3]: var + eps = 2/3 + 1/3 = 1, so [-1, 0, 1]; got {third} (use the eps argument)"
    tall = rng.standard_normal((20, 16)).astype(np.float32)  # 20 rows: 2 blocks of THREADS = 16 threads
    assert np.allclose(layer_norm_rows(tall, w, b), _reference_layer_norm(tall, w, b, 1e-5), atol=1e-5), \
        "20 rows run on 2 blocks: rows 16-19 belong to block 1 (row = cuda.grid(1), not threadIdx.x)"
    ### BEGIN HIDDEN TESTS
    shifted = (x + 1000).astype(np.float32)
    assert np.allclose(layer_norm_rows(shifted, w, b), _reference_layer_norm(x, w, b, 1e-5), atol=2e-3), \
        "a large mean: compute the variance from deviations, not from the sum of squares"
    ### END HIDDEN TESTS


test_layer_norm_kernel()

# %% [markdown]
# ## 5. Threads that cooperate: a reduction in shared memory
#
# Summing n numbers has no "one thread per output": there is a single output. The classic
# answer is a **tree** inside each block. Every thread loads one value into **shared
# memory**, an array all threads of the block see. Then, for stride = 8, 4, 2, 1, thread t
# (for t < stride) adds the value at t + stride into its own slot. With 16 threads, after
# log₂(16) = 4 rounds slot 0 holds the block's sum.
#
# Between rounds every thread must have finished writing before any reads: that is
# `cuda.syncthreads()`, a barrier for the whole block (every thread must reach it, so it
# never goes inside an `if` only some threads take). Blocks cannot wait for each other, so
# each block's thread 0 adds its partial sum to the single output with
# `cuda.atomic.add(out, 0, value)`: a read-add-write no other thread can interleave.
#
# *Worked example,* 8 values [1..8] with 4 threads per block: stride 2 gives [1+3, 2+4] =
# [4, 6] in slots 0 and 1, stride 1 gives 10; the second block gives 26; the atomics make 36.
#
# ### Exercise 4: `sum_kernel(x, out)`
#
# - **Hint 1.** Load (0 past the end), then halve the number of active threads each round
#   with a barrier after every round, then one atomic add per block.
# - **Hint 2.** A shared array of THREADS float32 slots; slot t gets x[i] for
#   i = `cuda.grid(1)`; as long as the stride is positive, threads t < stride add slot t + stride into slot t.
# - **Hint 3.** t = `cuda.threadIdx.x`; stride starts at THREADS // 2 and is halved by a
#   `while` loop with `cuda.syncthreads()` at the end of each round (outside the `if`);
#   thread 0 calls `cuda.atomic.add`.

# %% nbgrader={"grade": false, "grade_id": "sum-kernel", "locked": false, "schema_version": 3, "solution": true}
#| export
@kernel
def sum_kernel(x, out):
    """out[0] += sum of x (1-D): a tree per block of THREADS threads in shared memory, then one atomic add."""
    ### BEGIN SOLUTION
    partial = cuda.shared.array(THREADS, np.float32)
    t = cuda.threadIdx.x
    i = cuda.grid(1)
    partial[t] = x[i] if i < x.shape[0] else 0.0
    cuda.syncthreads()
    stride = THREADS // 2
    while stride > 0:
        if t < stride:
            partial[t] += partial[t + stride]
        cuda.syncthreads()
        stride //= 2
    if t == 0:
        cuda.atomic.add(out, 0, partial[0])
    ### END SOLUTION


def sum_all(x):
    """The sum of every element, by `sum_kernel` (a 1-element array)."""
    x = kernel_array(x).reshape(-1)
    out = device_zeros(x, shape=(1,))
    sum_kernel[grid_for(x.size, THREADS), THREADS](x, out)
    return out


# %% nbgrader={"grade": true, "grade_id": "test-sum-kernel", "locked": true, "points": 3, "schema_version": 3, "solution": false}
def test_sum_kernel():
    out = sum_all(np.arange(1, 9, dtype=np.float32))
    assert out.shape == (1,), f"the sum lands in a 1-element array, got shape {out.shape}"
    assert out[0] == 36, f"1 + 2 + ... + 8 = 36, got {out[0]}: a thread read partial[] before the others wrote " \
        "it? Each round of shared-memory writes needs a cuda.syncthreads() before any thread reads them; and threads " \
        "with i >= n must still write 0 into their slot (else it keeps stale memory)"
    ones = sum_all(np.ones(70, np.float32))  # 5 blocks, the last one partly empty
    assert ones[0] == 70, f"70 ones over 5 blocks: 70, got {ones[0]} (every block must add its part, once)"
    with _simulated_atomic_adds() as adds:  # None on a GPU
        sum_all(np.ones(70, np.float32))
    assert adds is None or len(adds) == 5, \
        f"70 values in 5 blocks: thread 0 of each block adds the block's sum with cuda.atomic.add, 5 atomic adds; " \
        f"got {len(adds)}. On a GPU blocks run at the same time: two blocks doing out[0] += ... can both read the " \
        f"old total, and one block's part is lost (the simulator runs blocks one by one, so the sum cannot show it)"
    rng = np.random.default_rng(3)
    x = rng.standard_normal(37).astype(np.float32)
    assert abs(sum_all(x)[0] - x.sum()) < 1e-4, "37 random values: the sum differs from NumPy's"
    if uses_simulator():  # a GPU compiled the kernel with THREADS = 16 already
        with _constants(globals(), THREADS=8):  # the grader allows a few dozen threads; a GPU uses 128-256
            try:
                got = sum_all(np.ones(40, np.float32))[0]
            except IndexError as e:  # a slot past the shared array
                got = repr(e)
        assert got == 40, f"with THREADS = 8, 40 ones (5 blocks) summed to {got}: size the tree from THREADS"
    ### BEGIN HIDDEN TESTS
    assert sum_all(np.ones(16, np.float32))[0] == 16, "exactly one full block"
    ### END HIDDEN TESTS


test_sum_kernel()

# %% [markdown]
# Floating-point addition is not associative: the tree adds in a different order from
# NumPy, and the atomics add the blocks in whatever order they finish, so two runs on a GPU
# can differ in the last bits. Deterministic training avoids atomics for this reason.
#
# ## 6. A tiled matrix product
#
# C = A B with A (M × K) and B (K × N). The direct kernel gives each thread one C[i, j] and
# a loop over k that reads a row of A and a column of B from global memory: 2K loads per
# output, every value of A read N times. The **tiled** kernel has a block of TILE × TILE
# threads compute a TILE × TILE tile of C. It walks along K one tile at a time: each thread
# loads *one* element of A's tile and one of B's into shared memory, the block waits
# (`syncthreads`), every thread then does TILE multiply-adds from shared memory, and the
# block waits again before the next tiles overwrite them. Global loads per output drop from
# 2K to 2K / TILE: 16× fewer with TILE = 16, as a GPU would use (this lesson uses TILE = 4,
# for the simulator's sake: see the note after the test).
#
# Tiles at the edges stick out of A or B when M, N or K is not a multiple of TILE: load 0
# there, so the extra products add nothing, and store only where C exists.
#
# Thread (ty, tx) = (`cuda.threadIdx.y`, `cuda.threadIdx.x`) of block (by, bx) owns C[row,
# col] with row = by · TILE + ty and col = bx · TILE + tx. Making x the column keeps a warp's
# loads of B and stores of C on consecutive addresses.
#
# ### Exercise 5: `matmul_kernel(a, b, c)`
#
# - **Hint 1.** Two shared tiles; a loop over the tiles along K: load, barrier, accumulate,
#   barrier; then one guarded store.
# - **Hint 2.** In step t, the thread loads A[row, t·TILE + tx] and B[t·TILE + ty, col]
#   (or 0 outside), then adds Σₖ sa[ty, k] · sb[k, tx] over the tile.
# - **Hint 3.** `cuda.shared.array((TILE, TILE), np.float32)` twice; the number of tiles
#   is a ceiling division of K by TILE; an accumulator starts at 0; two `cuda.syncthreads()`
#   per step.

# %% nbgrader={"grade": false, "grade_id": "matmul-kernel", "locked": false, "schema_version": 3, "solution": true}
#| export
TILE = 4  # a block computes a TILE x TILE tile of C with TILE x TILE threads (16-32 on a GPU)


@kernel
def matmul_kernel(a, b, c):
    """c = a @ b for 2-D float32 arrays, by TILE x TILE tiles staged in shared memory."""
    ### BEGIN SOLUTION
    sa = cuda.shared.array((TILE, TILE), np.float32)
    sb = cuda.shared.array((TILE, TILE), np.float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    acc = 0.0
    for t in range((a.shape[1] + TILE - 1) // TILE):
        k = t * TILE + tx
        sa[ty, tx] = a[row, k] if row < a.shape[0] and k < a.shape[1] else 0.0
        k = t * TILE + ty
        sb[ty, tx] = b[k, col] if k < b.shape[0] and col < b.shape[1] else 0.0
        cuda.syncthreads()
        for kk in range(TILE):
            acc += sa[ty, kk] * sb[kk, tx]
        cuda.syncthreads()
    if row < c.shape[0] and col < c.shape[1]:
        c[row, col] = acc
    ### END SOLUTION


def matmul_tiled(a, b):
    """a @ b by `matmul_kernel`: a grid of (N / TILE, M / TILE) blocks, rounded up."""
    a, b = kernel_array(a), kernel_array(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul_tiled: shapes {a.shape} and {b.shape} cannot be multiplied")
    c = device_empty(a, shape=(a.shape[0], b.shape[1]))
    matmul_kernel[grid_for((b.shape[1], a.shape[0]), (TILE, TILE)), (TILE, TILE)](a, b, c)
    return c


# %% nbgrader={"grade": true, "grade_id": "test-matmul-kernel", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_matmul_kernel():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((4, 4)).astype(np.float32)
    b = rng.standard_normal((4, 4)).astype(np.float32)
    c = matmul_tiled(a, b)
    assert c.shape == (4, 4), f"(4, 4) @ (4, 4) is (4, 4), got {c.shape}"
    assert np.allclose(c, a @ b, atol=1e-4), "one tile: C differs from a @ b"
    a = rng.standard_normal((6, 10)).astype(np.float32)  # 2 x 2 blocks, K spans 3 tiles, edges stick out
    b = rng.standard_normal((10, 7)).astype(np.float32)
    c = matmul_tiled(a, b)
    assert c.shape == (6, 7), f"(6, 10) @ (10, 7) is (6, 7), got {c.shape}"
    assert np.allclose(c, a @ b, atol=1e-4), \
        "6x10 @ 10x7: wrong where tiles stick out (load 0 outside A and B) or K spans several tiles"
    a, b = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((8, 12)).astype(np.float32)
    c, want = matmul_tiled(a, b), a @ b  # a grid of 3 x 1 blocks
    assert np.allclose(c, want, atol=1e-4), "(4, 8) @ (8, 12) runs on 3 x 1 blocks: row comes from blockIdx.y, col " \
        f"from blockIdx.x; row 0 expected {want[0].round(2)}, got {c[0].round(2)}"
    ### BEGIN HIDDEN TESTS
    v = rng.standard_normal((1, 5)).astype(np.float32)
    w = rng.standard_normal((5, 3)).astype(np.float32)
    assert np.allclose(matmul_tiled(v, w), v @ w, atol=1e-5), "a 1 x 5 @ 5 x 3 product (mostly padding)"
    ### END HIDDEN TESTS


test_matmul_kernel()

# %% [markdown]
# **What the simulator costs.** Each GPU thread is an operating-system thread of Python, each
# barrier a thread barrier. That is why the blocks here are tiny (16 threads; TILE = 4): the
# grader allows a submission a few dozen threads. A GPU wants 128-256 threads per block
# (TILE 16-32) to keep its warps full; only the two constants change. On a machine with a GPU,
# `TINYTORCH_TEST_DEVICE=cuda pytest tests/10_cuda` runs these kernels on CuPy arrays. The cell
# below times a 16 × 16 product: 16 blocks of 16 threads.

# %%
small = np.ones((16, 16), np.float32)
start = time.perf_counter()
matmul_tiled(small, small)
print(f"a 16x16 product in the simulator: {time.perf_counter() - start:.3f} s")

# %% [markdown]
# A GPU does that product in a few microseconds, mostly launch overhead. On a real GPU, these kernels are still not
# cuBLAS: a production matmul also keeps tiles in registers, uses tensor cores in bf16 and
# overlaps the next tile's loads with the current tile's math, reaching ~70 % of peak where
# this one reaches a few percent.
#
# ## 7. A kernel in CUDA C
#
# numba compiles Python to the GPU's assembly, PTX. Most GPU code, cuBLAS and PyTorch's
# included, is written in **CUDA C++** instead and compiled by NVIDIA's compiler; NVRTC is
# that compiler as a library, which CuPy calls to build a `cupy.RawKernel` from a string.
# `provided.py` holds one: a fused softmax-cross-entropy forward. Each row's loss,
# log Σ e^(z − m) + m − z_target, comes from one block: its threads stride over the classes,
# then reduce the max and the sum with a shared-memory tree, exactly as in section 5. The
# fused kernel reads the logits twice and writes one number per row; the composite of NumPy
# style ops (max, subtract, exp, sum, log, gather) reads and writes the whole logit matrix
# about six times. For a GPT's 50,257-way output at 16,384 tokens that matrix is 3.3 GB.
#
# NVRTC needs no GPU to compile: CI compiles every CUDA C source here to PTX for an H100
# (`compute_90`), so a syntax error never waits for a GPU machine to be found.

# %%
reason = nvrtc_unavailable_reason()
for name, source in CUDA_SOURCES.items():
    if reason is None:
        print(f"{name}: {len(compile_ptx(source, name))} characters of PTX")
    else:
        print(f"{name}: not compiled here: {reason}")

# %% [markdown]
# ## 8. Mixed precision: which op runs in which dtype
#
# A float32 has 8 exponent bits and 23 mantissa bits. The two 16-bit formats split their
# bits differently:
#
# | dtype | exponent | mantissa | largest | smallest normal | decimal digits |
# | --- | --- | --- | --- | --- | --- |
# | float32 | 8 | 23 | 3.4e38 | 1.2e-38 | ~7 |
# | float16 | 5 | 10 | 65,504 | 6.1e-5 | ~3 |
# | bfloat16 | 8 | 7 | 3.4e38 | 1.2e-38 | ~2 |
#
# Tensor cores multiply 16-bit inputs and accumulate in float32 at ~15× the float32 rate,
# and 16-bit activations halve the memory traffic. But 16 bits cannot hold everything:
# bfloat16 has float32's range and little precision (1 + 1/256 rounds to 1); float16 has more
# precision and little range (70,000 overflows to inf; gradients below 6e-8 flush to 0).
#
# So **autocast** picks a dtype per op, the way PyTorch's lists do:
#
# - **low precision** for the ops that are matrix products and tolerate rounding: `matmul`,
#   `linear`, `scaled_dot_product_attention`. Inputs are cast down, the output is low
#   precision (the products accumulate in float32 inside);
# - **float32** for the ops that sum many terms or take logs and exponentials of large
#   values, where rounding compounds: the losses (`cross_entropy`, `mse_loss`, …);
# - everything else runs in whatever dtype its inputs have.
#
# The **weights stay float32** (the *master* copy): autocast casts them for each op, and the
# cast's backward turns the gradient back into float32, so the optimizer updates float32
# numbers. A bfloat16 weight would lose every update smaller than 1/256 of itself.
#
# Module 01's `_autocast_call(name, fn, *args)` is the hook: `matmul` (and the `@` operator),
# `linear`, `scaled_dot_product_attention` and the four losses call their function through it
# (the decorator `@_autocast_op(name)` on their `def`), and it hands the call to
# `_autocast_state.run` whenever that is set. `autocast` sets it while it is active. As in
# PyTorch, each device type has its own policy: a `cuda` block inside a `cpu` block leaves the
# cpu policy on. The provided `_with_policy(hook, device_type, run)` returns a new hook that
# sends each op to the policy of its tensors' device type, with `device_type`'s policy set to
# `run` (`None`: off for that device type only). On the CPU, bfloat16 comes from `ml_dtypes`
# (NumPy has none); it is slow (no BLAS) but shows the rounding exactly.
#
# ### Exercise 6: `autocast(device_type, dtype)`
#
# `__enter__` installs the hook with `self._run` as this device type's policy (or with none
# when `enabled=False`), remembering the hook that was there; `__exit__` puts that back, so
# that blocks nest. `_run(name, fn, args, kwargs)` applies the policy to one call.
#
# - **Hint 1.** Choose the target dtype from the two op lists (or call `fn` untouched), cast
#   the floating tensors of this device type, call, and give a low-precision op's output the
#   low dtype too.
# - **Hint 2.** `_cast(x, dtype)` is the differentiable cast; `_is_float_tensor_on(x,
#   self.device_type)` tells which arguments to cast; keyword arguments are cast like
#   positional ones.
# - **Hint 3.** Enter: save `_autocast_state.run`, then set it to what `_with_policy` makes
#   of it. `_run`: an `if`/`elif`/`else` on `name` gives the target; a small helper casts one
#   argument; comprehensions cast `args` and `kwargs`; the result of a low-precision op goes
#   through `_cast` once more.

# %% nbgrader={"grade": false, "grade_id": "autocast", "locked": false, "schema_version": 3, "solution": true}
#| export core.amp
LOWER_PRECISION_OPS = frozenset({"matmul", "linear", "scaled_dot_product_attention"})
FLOAT32_OPS = frozenset({"cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits"})


class autocast:
    """`with autocast("cpu", dtype=bfloat16):` runs matmuls in low precision, losses in float32."""

    def __init__(self, device_type, dtype=None, enabled=True):
        self.device_type = device_type
        self.fast_dtype = _autocast_dtype(device_type, dtype)
        self.enabled = enabled
        self._outer = None

    def __enter__(self):
        ### BEGIN SOLUTION
        self._outer = _autocast_state.run
        _autocast_state.run = _with_policy(self._outer, self.device_type, self._run if self.enabled else None)
        ### END SOLUTION
        return self

    def __exit__(self, *exc_info):
        ### BEGIN SOLUTION
        _autocast_state.run = self._outer
        ### END SOLUTION
        return False

    def __call__(self, fn):
        """As a decorator, as torch.autocast: each call of `fn` runs under a policy like this one."""
        def under_autocast(*args, **kwargs):
            with autocast(self.device_type, self.fast_dtype, self.enabled):
                return fn(*args, **kwargs)
        return functools.wraps(fn)(under_autocast)

    def _run(self, name, fn, args, kwargs):
        """Call `fn` with its floating tensors cast to the dtype this policy gives op `name`."""
        ### BEGIN SOLUTION
        if name in LOWER_PRECISION_OPS:
            target = self.fast_dtype
        elif name in FLOAT32_OPS:
            target = float32
        else:
            return fn(*args, **kwargs)

        def cast(x):
            return _cast(x, target) if _is_float_tensor_on(x, self.device_type) else x
        out = fn(*[cast(a) for a in args], **{k: cast(v) for k, v in kwargs.items()})
        low = target is self.fast_dtype and _is_float_tensor_on(out, self.device_type)
        return _cast(out, target) if low else out
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "test-autocast", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_autocast():
    tt.manual_seed(0)
    layer = tt.nn.Linear(4, 3)
    x = tt.randn(2, 4, requires_grad=True)
    with autocast("cpu", dtype=bfloat16):
        y = layer(x)
        assert y.dtype == bfloat16, f"linear under autocast runs in bfloat16, got {y.dtype}"
        assert (x @ layer.weight.T).dtype == bfloat16, "matmul under autocast runs in bfloat16"
        with autocast("cpu", enabled=False):
            assert layer(x).dtype == float32, "autocast(enabled=False) inside turns it off"
        assert layer(x).dtype == bfloat16, "leaving the inner block restores the outer policy"
        with autocast("cuda", enabled=False):
            assert layer(x).dtype == bfloat16, "a cuda block leaves the cpu policy on (pass the outer hook on)"
        try:
            tt.nn.functional.cross_entropy(y, tt.tensor(np.array([0, 2])))
        except TypeError as e:
            raise AssertionError("autocast casts only float16/32 tensors: an int target must stay int; "
                                 f"cross_entropy(logits, int target) raised {e}") from None
    assert layer(x).dtype == float32, "after the block every op is float32 again"
    assert layer.weight.dtype == float32, "the weights stay float32 (the master copy)"
    assert np.allclose(y.data.astype(np.float32), layer(x).data, atol=0.05), "bfloat16 result far from float32's"
    _cast(y, float32).sum().backward()
    assert layer.weight.grad.dtype == float32 and x.grad.dtype == float32, \
        f"gradients reach the float32 leaves as float32, got {layer.weight.grad.dtype}, {x.grad.dtype}"
    from tinytorch.core.tensor import _autocast_call
    seen = []
    with autocast("cpu", dtype=bfloat16):
        _autocast_call("cross_entropy", lambda t: seen.append(t.dtype) or t, _cast(x, bfloat16))
        _autocast_call("linear", lambda t, weight: seen.append(weight.dtype) or t, x, weight=layer.weight)
    assert seen[0] == float32, f"losses run in float32 under autocast: the loss saw {seen[0]}"
    assert seen[1] == bfloat16, f"keyword arguments are cast too: linear(x, weight=w) saw a {seen[1]} weight"
    ### BEGIN HIDDEN TESTS
    try:
        with autocast("cpu"):
            raise KeyError("boom")
    except KeyError:
        pass
    else:
        raise AssertionError("an exception inside `with autocast(...)` must propagate: __exit__ swallowed KeyError")
    assert _autocast_state.run is None, "an exception inside the block must still restore the state"
    with autocast("cpu", dtype=tt.float16):
        assert layer(x).dtype == tt.float16, "float16 is the other low dtype"
    ### END HIDDEN TESTS


test_autocast()

# %% [markdown]
# ## 9. Loss scaling: `GradScaler`
#
# In float16, small gradients underflow: a gradient of 1e-8 is stored as 0 and that weight
# never learns. **Loss scaling** multiplies the loss by a large S (say 2¹⁶ = 65,536) before
# backward, so every gradient is S times larger and clears the underflow; before the
# optimizer step the gradients are divided by S again (*unscaled*), in float32.
#
# S cannot be fixed: too large and some gradient overflows to inf. **Dynamic** scaling
# adjusts it:
#
# - after unscaling, if any gradient holds inf or NaN, **skip** the optimizer step (that
#   batch's update is lost, the weights stay clean) and multiply S by `backoff_factor` (0.5);
# - after `growth_interval` (2,000) steps in a row without inf/NaN, multiply S by
#   `growth_factor` (2), to use as much range as is safe; an overflowing step resets the count.
#
# *Worked example,* S = 4, growth_interval = 2: two clean steps → S = 8; an overflow → step
# skipped, S = 4, count 0; a clean step → count 1, S = 4.
#
# The loop is `scaler.scale(loss).backward()`, `scaler.step(optimizer)`, `scaler.update()`
# (plus `scaler.unscale_(optimizer)` before clipping, which must see true gradients). With
# bfloat16's float32 range, underflow is rare and a scaler is usually left out.
#
# ### Exercise 7: `GradScaler.unscale_`, `step` and `update`
#
# The base class holds `_scale` (a float32), `_growth_tracker`, the factors,
# `_found_inf` (optimizer id → whether its gradients had inf/NaN this iteration) and
# `_stepped`, plus `_grads(optimizer)` and the precondition checks.
#
# - **Hint 1.** `unscale_`: divide every gradient by S in place and remember whether one was
#   not finite. `step`: unscale if not done yet, then step only when all were finite.
#   `update`: the two rules above.
# - **Hint 2.** Multiply by the float32 of 1/S (as PyTorch does) rather than dividing; a
#   non-finite check per gradient is `np.isfinite(g).all()` (CuPy arrays accept NumPy's
#   ufuncs); combine them with `&` and read the result on the host once, through
#   `to_host` (one counted sync, not one per tensor).
# - **Hint 3.** `update`: any value of `_found_inf` True → S times the backoff factor and a
#   zero count; otherwise count + 1, and when it reaches the interval, grow S (only if the
#   grown value still fits a float32, `np.finfo(np.float32).max`) and zero the count.

# %% nbgrader={"grade": false, "grade_id": "grad-scaler", "locked": false, "schema_version": 3, "solution": true}
#| export core.amp
class GradScaler(_GradScalerBase):
    """Dynamic loss scaling: scale the loss, unscale the grads, skip steps with inf/NaN, adapt the scale."""

    def scale(self, outputs):
        """outputs × the current scale (a tensor, or a list/tuple of them)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        return outputs * float(self._scale)

    def unscale_(self, optimizer):
        """Divide `optimizer`'s gradients by the scale, in place, and record whether any was inf/NaN."""
        if not self._enabled:
            return
        self._check_unscale(optimizer)
        ### BEGIN SOLUTION
        inv_scale = np.float32(1.0 / np.float64(self._scale))
        finite = True
        for g in self._grads(optimizer):
            finite = finite & np.isfinite(g).all()
            g *= inv_scale
        self._found_inf[id(optimizer)] = not bool(to_host(finite))
        ### END SOLUTION

    def step(self, optimizer, *args, **kwargs):
        """optimizer.step() unless the unscaled gradients hold inf/NaN; returns its result or None."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if id(optimizer) in self._stepped:
            raise RuntimeError("GradScaler.step called twice for this optimizer; call update() in between")
        ### BEGIN SOLUTION
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        self._stepped.add(id(optimizer))
        skip = self._found_inf[id(optimizer)]  # inf/NaN: keep the weights, update() backs off
        return None if skip else optimizer.step(*args, **kwargs)
        ### END SOLUTION

    def update(self, new_scale=None):
        """Back off after an overflow, grow after growth_interval clean steps; start a new iteration."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = np.float32(new_scale)
        else:
            if not self._found_inf:
                raise RuntimeError("GradScaler.update: no inf checks were recorded; call step() or unscale_() first")
            ### BEGIN SOLUTION
            if any(self._found_inf.values()):
                self._scale = np.float32(self._scale * self._backoff_factor)
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self._growth_interval:
                    grown = float(self._scale) * self._growth_factor
                    if grown <= float(np.finfo(np.float32).max):
                        self._scale = np.float32(grown)
                    self._growth_tracker = 0
            ### END SOLUTION
        self._found_inf.clear()
        self._stepped.clear()


# %% nbgrader={"grade": true, "grade_id": "test-grad-scaler", "locked": true, "points": 4, "schema_version": 3, "solution": false}
def test_grad_scaler():
    w = tt.nn.Parameter(np.ones(3, np.float32))
    opt = tt.optim.SGD([w], lr=0.1)
    scaler = GradScaler(init_scale=4.0, growth_interval=2)
    scales, weights = [], [w.data.copy()]
    for step, planted in enumerate([False, False, False, True, False, False, False, False], start=1):
        opt.zero_grad()
        loss = (w * tt.tensor([1.0, 2.0, 3.0])).sum()
        scaled = scaler.scale(loss)
        assert abs(scaled.item() - loss.item() * scaler.get_scale()) < 1e-3, "scale(loss) multiplies by the scale"
        scaled.backward()
        if planted:
            w.grad[0] = np.inf
        if step == 5:
            scaler.unscale_(opt)  # as before clipping: step() must not unscale a second time
        scaler.step(opt)
        assert not planted or np.array_equal(w.data, weights[-1]), \
            f"step {step} has an inf gradient: step() must skip optimizer.step(); weights {weights[-1]} became {w.data}"
        scaler.update()
        scales.append(scaler.get_scale())
        weights.append(w.data.copy())
    sgd = 0.1 * np.array([1.0, 2.0, 3.0])  # one SGD step on the true gradient [1, 2, 3]
    assert np.allclose(weights[1], weights[0] - sgd), \
        f"step 1: step() unscales, so SGD sees the gradient [1, 2, 3]: expected [0.9, 0.8, 0.7], got {weights[1]}"
    assert scales == [4.0, 8.0, 8.0, 4.0, 4.0, 8.0, 8.0, 16.0], "scales after each update: expected [4, 8, 8, 4, 4, " \
        "8, 8, 16] (growth_interval=2: grow after 2 clean steps in a row, then count from 0 again; an overflow halves " \
        f"the scale and restarts that count), got {scales}"
    assert np.allclose(weights[5], weights[4] - sgd), \
        f"step 5 called scaler.unscale_(opt) before scaler.step(opt), as for clipping: step() must not unscale " \
        f"again; expected one SGD step on [1, 2, 3], {weights[4] - sgd}, got {weights[5]}"
    a, b = tt.nn.Parameter(np.ones(2, np.float32)), tt.nn.Parameter(np.ones(1, np.float32))
    two, opt2 = GradScaler(init_scale=4.0), tt.optim.SGD([a, b], lr=0.1)
    a.grad, b.grad = tt.tensor([np.inf, 1.0]), tt.tensor([4.0])  # only the FIRST parameter overflows
    two.step(opt2)
    two.update()
    assert b.data[0] == 1.0 and two.get_scale() == 2.0, "an inf in any gradient, here only the first " \
        f"parameter's, skips the step and halves the scale 4 -> 2; got b = {b.data}, scale {two.get_scale()}"
    opt_a, opt_b = tt.optim.SGD([a], lr=0.1), tt.optim.SGD([b], lr=0.1)
    a.grad, b.grad = tt.tensor([np.inf, 1.0]), tt.tensor([4.0])  # scale 2: b's true gradient is 2
    two.step(opt_a)
    two.step(opt_b)
    assert np.allclose(b.data, [0.8]), "two optimizers, an inf only in A's gradients: step(A) skips, step(B) " \
        f"must still step B (each optimizer's own inf check): expected b = [0.8], got {b.data}"
    for again, name in ((opt_a, "A"), (opt_b, "B")):  # A's step was skipped, B's was taken
        try:
            two.step(again)
        except RuntimeError:
            pass
        else:
            raise AssertionError(f"a second step({name}) before update() must raise RuntimeError: step() records "
                                 f"{name} in _stepped, whether it skipped the step or not")
    three, params = GradScaler(init_scale=4.0), [tt.nn.Parameter(np.ones(1, np.float32)) for _ in range(3)]
    opts = [tt.optim.SGD([p], lr=0.1) for p in params]
    for p, g, o in zip(params, [1.0, np.inf, 1.0], opts):  # `o`, not `opt`: the hidden test below uses opt
        p.grad = tt.tensor([g])
        three.step(o)
    three.update()
    assert three.get_scale() == 2.0, "three optimizers, an inf only in the middle one's gradients: update() halves " \
        f"the scale when ANY optimizer found an inf: expected 2.0, got {three.get_scale()}"
    got = three.step(opts[0], lambda: 5.0)
    assert got == 5.0, f"step(optimizer, closure) passes its arguments on and returns optimizer.step's result, got {got}"
    s16, kept = GradScaler(init_scale=2.0 ** 16, growth_interval=1), w.data.copy()
    w.grad = tt.tensor([np.nan, 1.0, 1.0])  # 0 * inf or inf - inf in backward: NaN, not inf
    s16.step(opt)
    s16.update()
    assert np.array_equal(w.data, kept) and s16.get_scale() == 2.0 ** 15, "a NaN gradient skips the step and " \
        f"halves the scale like an inf: weights {kept} became {w.data}, scale {s16.get_scale()} (expected 32768)"
    w.grad = tt.tensor([1.0, 1.0, 1.0])
    s16.step(opt)
    s16.update()
    assert (s16.get_scale(), s16._growth_tracker) == (2.0 ** 16, 0), "growth_interval=1, a clean step: 32768 grows " \
        f"to 65536 (only float32's max stops growth) and the count restarts at 0; got {s16.get_scale()}, " \
        f"count {s16._growth_tracker}"
    ### BEGIN HIDDEN TESTS
    s = GradScaler(init_scale=2.0 ** 127, growth_factor=4.0, growth_interval=1)
    opt.zero_grad()
    s.scale(w.sum()).backward()
    s.step(opt)
    s.update()
    assert s.get_scale() == 2.0 ** 127, "a scale that would overflow float32 is not grown"
    ### END HIDDEN TESTS


test_grad_scaler()

# %% [markdown]
# Together, one training step reads as in PyTorch: the forward under `autocast`, the loss
# scaled before backward, the step through the scaler. (On a CPU the bfloat16 matmuls are
# slow; the point is that the loss falls as in float32.)

# %%
tt.manual_seed(0)
model = tt.nn.Sequential(tt.nn.Linear(8, 16), tt.nn.GELU(), tt.nn.Linear(16, 1))
optimizer = tt.optim.AdamW(model.parameters(), lr=1e-2)
scaler = GradScaler(init_scale=2.0 ** 10)
inputs = tt.randn(64, 8)
targets = inputs.sum(dim=1, keepdim=True)
for step in range(30):
    with autocast("cpu", dtype=bfloat16):
        prediction = model(inputs)
    loss = tt.nn.functional.mse_loss(_cast(prediction, float32), targets)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}  loss {loss.item():.4f}  scale {scaler.get_scale():.0f}")

# %% [markdown]
# ## 10. What it costs
#
# - **Kernels.** An elementwise or row-wise kernel is worth exactly its memory traffic:
#   fusing k ops saves k − 1 round trips through HBM. Launch overhead (~5 µs) dominates every
#   kernel that moves less than ~20 MB, which is why fusion also pays for small tensors, and
#   why one training step should never wait on the GPU (a host sync) except when logging.
# - **Shared memory** turns K-fold re-reads from HBM into re-reads at ~20× the bandwidth;
#   tiling is why matmuls are compute-bound and everything else is not.
# - **Mixed precision** halves the bytes of every activation and runs matmuls on tensor
#   cores (~15× float32's rate on an H100); the float32 master weights and optimizer state
#   stay as they were, so parameter memory does not shrink. On a CPU, bfloat16 through
#   `ml_dtypes` is much *slower* than float32 (no BLAS): it is here to show the numerics.
# - **Loss scaling** costs one pass over the gradients and one host sync per step (the
#   skip decision), and loses one step each time the scale backs off.
#
# `tito train gpt --amp bf16` (CPU) or `--amp fp16` (cuda, with a `GradScaler`) trains the GPT
# this way: each step's forward runs under `autocast`, the checkpoints stay float32, and the
# MFU is measured against the device's 16-bit peak.
