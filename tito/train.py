"""`tito train gpt` and `tito sample`: the main job, a GPT trained and sampled with your tinytorch.

The recipe (presets, data, schedule) lives in milestones/gpt_text.py; this file only turns
command-line options into a call and the result into a report.
"""

from __future__ import annotations

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


def _recipe():
    """Load milestones/gpt_text.py, or say which module the student still has to finish."""
    root = find_root()
    milestone = MILESTONES["gpt"]
    problem = missing_module(milestone, module_names(root))
    if problem is not None:
        raise TitoError(f"training a GPT needs modules {', '.join(milestone.needs)}: {problem}")
    return load_script(root, milestone)


def _set_blas_threads(n: int) -> None:
    """Thread count for NumPy's BLAS; only takes effect before NumPy is first imported."""
    if n < 1:
        raise TitoError(f"--threads must be at least 1, got {n}")
    if "numpy" in sys.modules:
        raise TitoError("--threads must be set before NumPy is imported (set OPENBLAS_NUM_THREADS instead)")
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(n)


@app.command("gpt")
def train_gpt(
    data: Optional[Path] = typer.Option(None, help="A UTF-8 text file to train on (default: the built-in corpus)."),
    tokenizer: str = typer.Option("char", help="char or bpe (byte-level BPE, 512 tokens)."),
    config: str = typer.Option("small", help="Preset: tiny, small (nanoGPT's CPU run) or medium."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default: the preset's)."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    out: Path = typer.Option(Path("runs/gpt"), help="Run directory: checkpoints, log, model, tokenizer."),
    seed: int = typer.Option(0, help="Seed for the weights and the data order."),
    threads: Optional[int] = typer.Option(None, help="BLAS threads (default: the library's; 1 is often "
                                                     "fastest for small models on a busy machine)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object with the results, nothing else."),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel ranks (MPI processes, or GPUs with "
                                                 "--device cuda); each takes a batch per step."),
) -> None:
    """Train a GPT on text (offline), show progress and validation loss, save it, print a sample."""
    if nproc > 1 and not under_launcher():  # start nproc copies of this command under mpiexec
        options = dict(data=data, tokenizer=tokenizer, config=config, steps=steps, device=device, out=out,
                       seed=seed, threads=threads)
        flags = [f for f, on in (("--resume", resume), ("--json", json_output)) if on]
        with user_errors():
            code = launch(nproc, ["-m", "tito", "train", "gpt", "--nproc", str(nproc), *flags,
                                  *[arg for k, v in options.items() if v is not None for arg in (f"--{k}", str(v))]])
        raise typer.Exit(code)
    with user_errors():
        if threads is not None:
            _set_blas_threads(threads)
        recipe = _recipe()
        if tokenizer not in ("char", "bpe"):
            raise TitoError(f"--tokenizer {tokenizer!r}: use char or bpe")
        if config not in recipe.PRESETS:
            raise TitoError(f"--config {config!r}: choose one of {', '.join(recipe.PRESETS)}")
        if steps is not None and steps < 1:
            raise TitoError(f"--steps must be at least 1, got {steps}")
        try:
            result = recipe.train(data=data, tokenizer=tokenizer, preset=config, steps=steps, device=device,
                                  resume=resume, out=out, seed=seed, quiet=json_output, distributed=nproc > 1)
        except recipe.DataError as err:
            raise TitoError(str(err)) from None
        except RuntimeError as err:  # e.g. device='cuda' without a usable GPU
            if "device" not in str(err):
                raise
            raise TitoError(str(err)) from None
    if result.get("rank", 0) != 0:
        return  # rank 0 reports for all
    if json_output:
        print(json.dumps(result))
        return
    table = Table(title=f"GPT ({config}, {tokenizer} tokens) trained in {result['out']}")
    table.add_column("result")
    table.add_column("value", justify="right")
    for key in ("steps", "parameters", "final_train_loss", "val_loss", "tokens_per_s", "seconds"):
        value = result[key]
        table.add_row(key, f"{value:,.4f}" if isinstance(value, float) else f"{value:,}")
    console.print(table)
    console.print(Panel(escape(result["sample"]), title="sample"))
    console.print(f"more: tito sample --checkpoint {result['out']} --prompt '...'")


def sample_command(
    checkpoint: Path = typer.Option(..., help="A run directory (runs/gpt) or one of its checkpoints."),
    prompt: str = typer.Option("\n", help="Text to continue."),
    max_new_tokens: int = typer.Option(300, help="How many tokens to generate."),
    temperature: float = typer.Option(0.8, help="0 is greedy; higher is more random."),
    top_k: Optional[int] = typer.Option(None, help="Sample only among the k likeliest tokens."),
    top_p: Optional[float] = typer.Option(None, help="Sample from the smallest set of tokens with this mass."),
    seed: Optional[int] = typer.Option(None, help="Seed for reproducible samples."),
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N."),
) -> None:
    """Generate text from a trained GPT."""
    with user_errors():
        recipe = _recipe()
        try:
            model, tok = recipe.load_run(checkpoint, device=device)
            text = recipe.generate_text(model, tok, prompt, max_new_tokens, temperature, top_k, top_p, seed, device)
        except (FileNotFoundError, ValueError) as err:
            raise TitoError(str(err)) from None
    print(text)
