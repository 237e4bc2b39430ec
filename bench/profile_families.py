"""Time per op family of a training step's forward and backward, TinyTorch and PyTorch alike
(used by `gpt_shakespeare.py --profile`).

TinyTorch: the op functions the GPT calls are wrapped for the duration of the profile (only the
outermost op of a nested call is timed), and so is the backward closure of every tensor they
return; what the forward or the backward spends outside those ops is the engine's and Python's
share (Module calls, the graph walk, gradient accumulation). PyTorch: torch.profiler's self CPU
time of each aten op, put in the same families by name; autograd's own nodes count as the engine.
Each op call counts with its fastest time over the profiled steps (see `_estimate`).
"""

import time

import numpy as np

FAMILIES = ("matmul", "layout copies", "elementwise", "attention", "LayerNorm", "GELU", "cross-entropy",
            "embedding", "engine + Python")

# TinyTorch: (module, function name, family); functions a module lacks are skipped.
TINYTORCH_OPS = (
    ("tinytorch.nn.layers", "linear", "matmul"),
    ("tinytorch.nn.layers", "embedding", "embedding"),
    ("tinytorch.nn.layers", "layer_norm", "LayerNorm"),
    ("tinytorch.nn.layers", "rms_norm", "LayerNorm"),  # the norm family: a Llama-style config's RMSNorm
    ("tinytorch.nn.layers", "dropout", "elementwise"),
    ("tinytorch.models.gpt", "gelu", "GELU"),
    ("tinytorch.models.gpt", "cross_entropy", "cross-entropy"),
    ("tinytorch.nn.attention", "scaled_dot_product_attention", "attention"),
    ("tinytorch.core.tensor", "add", "elementwise"),
    ("tinytorch.core.tensor", "sub", "elementwise"),
    ("tinytorch.core.tensor", "mul", "elementwise"),
    ("tinytorch.core.tensor", "div", "elementwise"),
    ("tinytorch.core.tensor", "matmul", "matmul"),
    ("tinytorch.core.tensor", "reshape", "layout copies"),
    ("tinytorch.core.tensor", "transpose", "layout copies"),
    ("tinytorch.core.tensor", "permute", "layout copies"),
    ("tinytorch.core.tensor", "getitem", "layout copies"),
    ("tinytorch.core.tensor", "split", "layout copies"),
)

# PyTorch: aten op name -> family (self CPU time); anything else that is not autograd's is "elementwise".
TORCH_FAMILIES = {
    "matmul": ("aten::mm", "aten::bmm", "aten::addmm", "aten::matmul", "aten::linear"),
    "layout copies": ("aten::t", "aten::view", "aten::transpose", "aten::split", "aten::contiguous", "aten::clone",
                      "aten::copy_", "aten::reshape", "aten::_unsafe_view", "aten::as_strided", "aten::narrow",
                      "aten::slice", "aten::select", "aten::expand", "aten::permute", "aten::_reshape_alias",
                      "aten::unsqueeze", "aten::squeeze", "aten::empty_like", "aten::empty_strided",
                      "aten::unsafe_split", "aten::cat", "aten::alias", "aten::detach", "aten::split_with_sizes"),
    "attention": ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "LayerNorm": ("aten::layer_norm", "aten::native_layer_norm", "aten::native_layer_norm_backward",
                  "aten::rms_norm", "aten::_fused_rms_norm", "aten::_fused_rms_norm_backward"),
    "GELU": ("aten::gelu", "aten::gelu_backward"),
    "cross-entropy": ("aten::cross_entropy_loss", "aten::log_softmax", "aten::_log_softmax", "aten::nll_loss",
                      "aten::nll_loss_nd", "aten::nll_loss_forward", "aten::nll_loss_backward",
                      "aten::_log_softmax_backward_data"),
    "embedding": ("aten::embedding", "aten::index_select", "aten::embedding_backward",
                  "aten::embedding_dense_backward", "aten::index_add_", "aten::arange"),
}
_TORCH_FAMILY_OF = {name: family for family, names in TORCH_FAMILIES.items() for name in names}


def _torch_family(name):
    if name in _TORCH_FAMILY_OF:
        return _TORCH_FAMILY_OF[name]
    if name.startswith("aten::"):
        return "elementwise"
    return "engine + Python"  # autograd::engine::..., *Backward0, AccumulateGrad, the optimizer's hooks


def _estimate(steps):
    """Per-step call lists [[(family, ms), ...], ...] -> {family: ms per step, "total": ...}.

    Every step makes the same calls in the same order, so each call's fastest time over the steps
    is what it costs without interference from other processes (the machine is shared); the
    families add those up. Steps whose call sequence differs fall back to the median of the sums.
    """
    families = [[f for f, _ in calls] for calls in steps]
    if all(f == families[0] for f in families):
        best = np.min(np.array([[ms for _, ms in calls] for calls in steps]), axis=0)
        out = dict.fromkeys(FAMILIES, 0.0)
        for family, ms in zip(families[0], best):
            out[family] += float(ms)
    else:
        sums = [{f: sum(ms for g, ms in calls if g == f) for f in FAMILIES} for calls in steps]
        out = {f: float(np.median([s[f] for s in sums])) for f in FAMILIES}
    out["total"] = sum(out.values())
    return out


def _with_rest(calls, total_ms):
    """The calls, plus what the phase spent outside them (Module calls, the graph walk, Python)."""
    return calls + [("engine + Python", total_ms - sum(ms for _, ms in calls))]


# --- TinyTorch ---------------------------------------------------------------------------------------
class _TinytorchOps:
    """Wraps the op functions while active; `calls[phase]` lists (family, seconds) in call order."""

    def __init__(self, clock):
        self.clock = clock
        self.calls = {"forward": [], "backward": []}
        self.depth = 0
        self.saved = []

    def _timed_op(self, fn, family):
        clock, calls = self.clock, self.calls["forward"]

        def op(*args, **kwargs):
            if self.depth:  # inside another wrapped op: its time is that op's
                return fn(*args, **kwargs)
            self.depth += 1
            t0 = clock()
            try:
                out = fn(*args, **kwargs)
            finally:
                self.depth -= 1
            calls.append((family, clock() - t0))
            for t in out if isinstance(out, tuple) else (out,):
                if any(t is a for a in args):
                    continue  # an identity (dropout off) returns its input: that op's backward is not this one's
                if getattr(t, "_backward", None) is not None:
                    t._backward = self._timed_backward(t._backward, family)
            return out
        op.__wrapped__ = fn
        return op

    def _timed_backward(self, backward, family):
        clock, calls = self.clock, self.calls["backward"]

        def timed(g):
            t0 = clock()
            grads = backward(g)
            calls.append((family, clock() - t0))
            return grads
        timed.__name__ = backward.__name__
        return timed

    def __enter__(self):
        import importlib

        for module_name, name, family in TINYTORCH_OPS:
            module = importlib.import_module(module_name)
            if hasattr(module, name):
                self.saved.append((module, name, getattr(module, name)))
                setattr(module, name, self._timed_op(getattr(module, name), family))
        return self

    def __exit__(self, *exc):
        for module, name, fn in reversed(self.saved):
            setattr(module, name, fn)

    def take(self, phase):
        calls = [(f, s * 1e3) for f, s in self.calls[phase]]
        self.calls[phase].clear()
        return calls


def tinytorch_families(forward, backward, after, steps, clock=time.perf_counter):
    """{"forward": {family: ms}, "backward": {...}} over `steps` calls of forward() -> loss,
    backward(loss) and after() (the untimed rest of the step: optimizer, zero_grad)."""
    rows = {"forward": [], "backward": []}
    with _TinytorchOps(clock) as ops:
        for _ in range(steps):
            t0 = clock()
            loss = forward()
            t1 = clock()
            backward(loss)
            t2 = clock()
            after()
            for phase, total in (("forward", t1 - t0), ("backward", t2 - t1)):
                rows[phase].append(_with_rest(ops.take(phase), total * 1e3))
    return {phase: _estimate(per_step) for phase, per_step in rows.items()}


# --- PyTorch -------------------------------------------------------------------------------------------
def torch_families(forward, backward, after, steps):
    """The same table for PyTorch, from torch.profiler's self CPU time per aten op."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            with record_function(f"tt-forward-{i}"):
                loss = forward()
            with record_function(f"tt-backward-{i}"):
                backward(loss)
            after()
    events = sorted(prof.events(), key=lambda e: e.time_range.start)
    marks = [(e.time_range.start, e.time_range.end, e.name) for e in events if e.name.startswith("tt-")]
    starts = np.array([m[0] for m in marks])
    calls = {m[2]: [] for m in marks}
    for e in events:
        if e.name.startswith("tt-"):
            continue
        i = int(np.searchsorted(starts, e.time_range.start, side="right")) - 1
        if i < 0 or e.time_range.start >= marks[i][1]:
            continue  # outside forward and backward (the optimizer)
        calls[marks[i][2]].append((_torch_family(e.name), e.self_cpu_time_total / 1e3))
    rows = {"forward": [], "backward": []}
    for start, end, name in marks:
        rows[name.split("-")[1]].append(_with_rest(calls[name], (end - start) / 1e3))
    return {phase: _estimate(per_step) for phase, per_step in rows.items()}


def family_table(ours, theirs):
    """Rows [family, tt fwd, torch fwd, ratio, tt bwd, torch bwd, ratio] (ms per step)."""
    def ratio(a, b):
        return f"{a / b:.2f}x" if b > 0.005 else "-"
    body = []
    for family in FAMILIES + ("total",):
        row = [family]
        for phase in ("forward", "backward"):
            a, b = ours[phase][family], theirs[phase][family]
            row += [f"{a:.2f}", f"{b:.2f}", ratio(a, b)]
        body.append(row)
    header = ["ms per step", "tinytorch fwd", "torch fwd", "ratio", "tinytorch bwd", "torch bwd", "ratio"]
    return header, body
