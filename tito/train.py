"""`tito train gpt` and `tito sample`: the main job, a GPT trained and sampled with your tinytorch.

The recipe (presets, data, schedule) lives in milestones/gpt_text.py; this file only turns
command-line options into a call and the result into a report.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from tito.errors import TitoError, user_errors
from tito.milestone import MILESTONES, load_script, missing_module, module_names
from tito.notebooks import find_root
from tito.run import launch, under_launcher

console = Console(soft_wrap=True, highlight=False)
app = typer.Typer(help="Train a model with your own tinytorch.", no_args_is_help=True)


def _repo():
    """The repo around the working folder, else the one this tito was installed from (`pip install -e .`), so
    that `tito train gpt` and `tito sample` work from any folder; the error names the working folder."""
    try:
        return find_root()
    except TitoError as outside:
        try:
            return find_root(Path(__file__).resolve().parent)
        except TitoError:
            raise outside from None


def _recipe():
    """Load milestones/gpt_text.py, or say which module the student still has to finish."""
    root = _repo()
    milestone = MILESTONES["gpt"]
    problem = missing_module(milestone, module_names(root))
    if problem is not None:
        raise TitoError(f"training a GPT needs modules {', '.join(milestone.needs)}: {problem}")
    return load_script(root, milestone)


_BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _blas_threads(n: int):
    """Thread count for NumPy's BLAS while the run lasts: through the environment before NumPy is imported,
    through threadpoolctl once it is (tito called in-process, from a notebook or a test); both are put back
    afterwards, so the caller's process keeps its own BLAS threads."""
    if n < 1:
        raise TitoError(f"--threads must be at least 1, got {n}")
    saved = {name: os.environ.get(name) for name in _BLAS_VARIABLES}
    os.environ.update({name: str(n) for name in _BLAS_VARIABLES})
    try:
        if "numpy" in sys.modules:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=n, user_api="blas"):
                yield
        else:
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@app.command("gpt")
def train_gpt(
    data: Optional[Path] = typer.Option(None, help="A UTF-8 text file to train on (default: the built-in corpus)."),
    tokenizer: Optional[str] = typer.Option(None, help="char (default) or bpe (byte-level BPE, 512 tokens)."),
    config: Optional[str] = typer.Option(None, help="Preset: tiny, small (default; nanoGPT's CPU run) or medium."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: the preset's)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (default: the newest run) "
                                                         "from its newest checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out (once the new one has "
                                                               "started)."),
    out: Optional[Path] = typer.Option(None, help="Run folder (default: a new one, runs/gpt, runs/gpt-2, ...); "
                                                  "one holding another run needs --resume or --overwrite."),
    seed: Optional[int] = typer.Option(None, help="Seed for the weights and the data order (default 0; a resumed "
                                                  "run keeps its own)."),
    threads: Optional[int] = typer.Option(None, help="CPU threads: each step's batch is split over N threads "
                                          "(BLAS at one thread in each) and BLAS gets N threads elsewhere (default: 2 "
                                          "on 2+ CPUs for the small and medium configs, else 1 and BLAS's own; with "
                                          "--nproc, --zero or on cuda, BLAS threads only)."),
    sample_tokens: int = typer.Option(300, help="Length of the sample printed at the end (0: none)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object with the results, nothing else."),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel ranks (MPI processes, or GPUs with "
                                                 "--device cuda); each takes a batch per step."),
    peak_tflops: Optional[float] = typer.Option(None, "--peak-tflops", help="The device's peak TFLOPS for the "
                                                "MFU (default: the GPU's data sheet, or measured on a CPU)."),
    zero: Optional[int] = typer.Option(None, "--zero", help="ZeRO stage over the --nproc ranks: 1 shards the "
                                       "optimizer state, 2 also the gradients, 3 also the weights (FSDP over the "
                                       "blocks); checkpoints stay whole, for any world size."),
    checkpoint_blocks: bool = typer.Option(False, "--checkpoint-blocks", help="Keep only each block's input and "
                                           "recompute the block in backward: less memory, ~1/3 more compute "
                                           "(with --nproc, needs --zero 2 or 3)."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: bf16 (cpu, needs ml_dtypes) or fp16 "
                                      "(with loss scaling; cuda); weights and checkpoints stay float32."),
    init_from: Optional[Path] = typer.Option(None, "--init-from", help="A finished run to LoRA-fine-tune on --data "
                                             "(its config and tokenizer; needs --lora-rank); the base run is "
                                             "left as it is."),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="Rank of the LoRA adapters (with --init-from)."),
    lora_alpha: float = typer.Option(16, "--lora-alpha", help="LoRA's alpha: the update is scaled by alpha/rank."),
    lora_targets: Optional[str] = typer.Option(None, "--lora-targets", help="Comma-separated Linear layers to adapt "
                                               "(default: attn.c_attn,attn.c_proj)."),
) -> None:
    """Train a GPT on text (offline), show progress and validation loss, save it, print a sample."""
    if nproc > 1 and not under_launcher():  # start nproc copies of this command under mpiexec
        with user_errors():  # a setting that cannot run is refused before any rank starts
            try:
                recipe = _recipe()
                recipe.check_parallel(zero, checkpoint_blocks, distributed=True)
                recipe.mixed_precision(amp, device, zero)
                recipe.check_lora(init_from, lora_rank, distributed=True, zero=zero)
            except ValueError as err:  # the recipe's RunError
                raise TitoError(str(err)) from None
        options = {"data": data, "tokenizer": tokenizer, "config": config, "steps": steps, "device": device,
                   "out": out, "seed": seed, "threads": threads, "sample-tokens": sample_tokens,
                   "peak-tflops": peak_tflops, "zero": zero, "amp": amp}
        flags = [f for f, on in (("--resume", resume), ("--overwrite", overwrite), ("--json", json_output),
                                 ("--checkpoint-blocks", checkpoint_blocks)) if on]
        with user_errors():
            code = launch(nproc, ["-m", "tito", "train", "gpt", "--nproc", str(nproc), *flags,
                                  *[arg for k, v in options.items() if v is not None for arg in (f"--{k}", str(v))]])
        raise typer.Exit(code)
    with user_errors(), contextlib.ExitStack() as run_scope:
        if nproc < 1:
            raise TitoError(f"--nproc must be at least 1, got {nproc}")
        if sample_tokens < 0:
            raise TitoError(f"--sample-tokens must be 0 or more, got {sample_tokens}")
        if threads is not None:
            run_scope.enter_context(_blas_threads(threads))
        recipe = _recipe()
        runs_before = set(recipe.run_dirs())
        resumed = out if out is not None or not resume else recipe.newest_run()  # --resume alone: the newest
        try:
            result = recipe.train(data=data, tokenizer=tokenizer, preset=config, steps=steps, device=device,
                                  resume=resume, overwrite=overwrite, out=out, seed=seed, quiet=json_output,
                                  sample_tokens=sample_tokens, distributed=nproc > 1, peak_tflops=peak_tflops,
                                  zero=zero, checkpoint_blocks=checkpoint_blocks, amp=amp, init_from=init_from,
                                  lora_rank=lora_rank, lora_alpha=lora_alpha,
                                  lora_targets=lora_targets.split(",") if lora_targets else None,
                                  threads=threads if nproc == 1 else None)
        except recipe.RunError as err:  # bad options, data, run folder or checkpoint: nothing was written
            raise TitoError(str(err)) from None
        except KeyboardInterrupt:  # Ctrl-C: checkpoints are written atomically, so the newest one is whole
            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"[yellow]interrupted:[/] {escape(_interrupted(recipe, resumed, runs_before))}")
            raise typer.Exit(130) from None
        except OSError as err:  # a write failed (disk full, a file-size cap): writes are atomic, so the last
            # whole checkpoint is still there
            where = f" ({err.filename})" if err.filename else ""
            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"[red]error:[/] {escape(err.strerror or str(err))}{escape(where)}; "
                f"{escape(_interrupted(recipe, resumed, runs_before))}")
            raise typer.Exit(1) from None
    if result.get("rank", 0) != 0:
        return  # rank 0 reports for all
    if json_output:
        print(json.dumps(result))
        return
    table = Table(title=f"GPT ({result['preset']}, {result['tokenizer']} tokens) trained in {result['out']}"
                        + (f", {result['parallel']}" if result.get("parallel") else ""))
    table.add_column("result")
    table.add_column("value", justify="right")
    for label, value in _summary_rows(result):
        table.add_row(label, value)
    console.print(table)
    if sample_tokens:
        console.print(Panel(escape(result["sample"]), title="sample"))
    console.print(f"more: tito sample --checkpoint {result['out']} --prompt '...'")


def _interrupted(recipe, out: Optional[Path], runs_before: set) -> str:
    """Where an interrupted run stands: its newest checkpoint and how to resume from it."""
    from tinytorch.training.checkpoint import list_checkpoints

    started = [out] if out is not None else sorted(set(recipe.run_dirs()) - runs_before)
    if not started or not (started[0] / "config.json").is_file():
        return "the run had not started; nothing was written"
    run = started[0]
    checkpoints = list_checkpoints(run / "checkpoints")
    if not checkpoints:
        return f"{run} has no checkpoint yet (the first is written at the first evaluation); nothing to resume"
    return f"kept the newest checkpoint, {checkpoints[-1]}; continue with: tito train gpt --resume --out {run}"


def _summary_rows(result):
    """(label, text) rows of a run's summary: losses to 4 places, counts and speeds as integers."""
    def number(value, fmt="{:,}"):
        return "-" if value is None else fmt.format(value)

    ranks = " (all ranks)" if result.get("world_size", 1) > 1 else ""
    mfu = result.get("mfu")
    return [
        ("steps", number(result["steps"])), ("parameters", number(result["parameters"])),
        *([("trainable (LoRA adapters)", number(result["trainable_parameters"])),
           ("adapters file / base model file", f"{result['lora']['adapters_bytes']:,} / "
                                               f"{result['lora']['base_bytes']:,} bytes")] if result.get("lora") else []),
        ("precision", result.get("precision", "fp32")),
        ("threads per step", number(result.get("threads"))),
        ("final train loss", number(result["final_train_loss"], "{:.4f}")),
        ("val loss", number(result["val_loss"], "{:.4f}")),
        (f"tokens/s, mean over the run{ranks}", number(result.get("tokens_per_s"))),
        (f"tokens/s, median step{ranks}", number(result.get("tokens_per_s_median"))),
        ("MFU per device", "-" if mfu is None else f"{mfu:.2%} of {result['peak']}"),
        (f"peak memory, MiB ({result.get('memory', '-')})", number(result.get("peak_memory_mib"), "{:,.0f}")),
        ("seconds", number(result["seconds"], "{:,.1f}")),
    ]


def _check_sampling(max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    if max_new_tokens < 0:
        raise TitoError(f"--max-new-tokens must be 0 or more, got {max_new_tokens}")
    if temperature < 0:
        raise TitoError(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise TitoError(f"--top-k must be at least 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise TitoError(f"--top-p must be in (0, 1], got {top_p}")


def sample_command(
    checkpoint: Optional[Path] = typer.Option(None, help="A run folder (runs/gpt) or one of its checkpoints "
                                                         "(default: the newest run under runs/)."),
    prompt: Optional[str] = typer.Option(None, help="Text to continue (default: a new line, where the model "
                                                    "knows one)."),
    max_new_tokens: int = typer.Option(300, help="How many tokens to generate."),
    temperature: float = typer.Option(0.8, help="0 is greedy; higher is more random."),
    top_k: Optional[int] = typer.Option(None, help="Sample only among the k likeliest tokens."),
    top_p: Optional[float] = typer.Option(None, help="Sample from the smallest set of tokens with this mass."),
    seed: Optional[int] = typer.Option(None, help="Seed for reproducible samples."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Generate text from a trained GPT (the newest run unless --checkpoint says which)."""
    with user_errors():
        _check_sampling(max_new_tokens, temperature, top_k, top_p)
        recipe = _recipe()
        try:
            run = checkpoint or recipe.newest_run()  # None: load_run says there is no run yet
            model, tok = recipe.load_run(run, device=device)
            if checkpoint is None:
                Console(stderr=True).print(f"[dim]sampling from {escape(str(run))}, the newest run[/]")
            text = recipe.generate_text(model, tok, prompt, max_new_tokens, temperature, top_k, top_p, seed, device)
        except ValueError as err:  # a bad run folder (recipe.RunError) or prompt
            raise TitoError(str(err)) from None
    print(text)
