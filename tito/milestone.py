"""`tito milestone`: end-to-end runs that show the student's own tinytorch training a real model.

A milestone is a script under `milestones/` with a `run(seed, quiet) -> dict` function. It is
registered once, in MILESTONES, with the modules it needs; each module has a tiny smoke check,
so that an unfinished module is reported by name instead of as a traceback.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tito.errors import TitoError, user_errors
from tito.notebooks import find_root, list_modules

console = Console(soft_wrap=True, highlight=False)
app = typer.Typer(help="End-to-end milestones trained with your own tinytorch.", no_args_is_help=True)


@dataclass(frozen=True)
class Milestone:
    name: str
    trains: str
    needs: tuple[str, ...]  # module numbers, "01" ... "07"
    script: str  # relative to the repo root; defines run(seed, quiet) -> dict
    target: str  # result key that must reach `goal`
    goal: float
    higher_is_better: bool = True  # accuracy: at least `goal`; a loss: at most `goal`
    also: tuple[str, ...] = ()  # result keys that must be true as well (e.g. an ordering of models)

    def reached(self, value: float) -> bool:
        return value >= self.goal if self.higher_is_better else value <= self.goal

    def describe(self, value: float) -> str:
        if self.higher_is_better:
            return f"{value:.2%} (goal {self.goal:.0%})"
        return f"{value:.4f} (goal <= {self.goal})"


MILESTONES = {m.name: m for m in [
    Milestone("mlp", "an MLP on 8x8 handwritten digits: >= 97% test accuracy in under 60 s",
              ("01", "02", "03", "04", "05", "06", "07"), "milestones/mlp_digits.py", "test_accuracy", 0.97),
    Milestone("gpt", "a character-level GPT on the built-in corpus (tito train gpt): val loss <= 1.95",
              ("01", "02", "03", "04", "05", "06", "07", "08", "09"), "milestones/gpt_text.py", "val_loss", 1.95, higher_is_better=False),
    Milestone("finetune", "LoRA on a pretrained GPT vs a distilled GRU vs a GRU from scratch (which book is a verse "
              "from?): LoRA >= distilled >= scratch, LoRA >= majority + 15 points",
              ("01", "02", "03", "04", "05", "06", "07", "08", "09", "12"), "milestones/finetune.py",
              "lora_over_majority", 0.15, also=("order_holds",)),
]}


# ---------------------------------------------------------------- module smoke checks


def _tensor():
    import tinytorch as tt
    assert (tt.tensor([1.0, 2.0]) + tt.tensor([3.0, 4.0])).sum().item() == 10.0


def _autograd():
    import tinytorch as tt
    x = tt.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def _layers():
    from tinytorch import nn
    nn.Sequential(nn.Linear(2, 3), nn.ReLU())(__import__("tinytorch").zeros(1, 2)).sum().backward()


def _losses():
    import tinytorch as tt
    tt.nn.functional.cross_entropy(tt.zeros(2, 3, requires_grad=True), tt.tensor([0, 1])).backward()
    tt.metrics.accuracy(tt.zeros(2, 3), tt.tensor([0, 1]))


def _optimizers():
    import tinytorch as tt
    w = tt.ones(2, requires_grad=True)
    opt = tt.optim.Adam([w], lr=0.1)
    (w * w).sum().backward()
    tt.nn.utils.clip_grad_norm_([w], 1.0)
    opt.step()
    tt.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=2).step()


def _data():
    import tinytorch as tt
    loader = tt.data.DataLoader(tt.data.TensorDataset(tt.zeros(4, 2), tt.zeros(4)), batch_size=2, shuffle=True)
    assert len(list(loader)) == 2
    assert callable(tt.data.digits)


def _training():
    import tinytorch as tt
    from tinytorch.training import EarlyStopping, Trainer, evaluate, train_step  # noqa: F401
    model = tt.nn.Linear(2, 1)
    batches = [(tt.ones(2, 2), tt.zeros(2, 1))]
    train_step(model, tt.nn.functional.mse_loss, tt.optim.SGD(model.parameters(), lr=0.1), batches)
    evaluate(model, batches, tt.nn.functional.mse_loss)
    EarlyStopping().update(1.0)


def _attention():
    import tinytorch as tt
    q = tt.randn(1, 2, 3, 4, requires_grad=True)
    tt.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    tt.nn.CausalSelfAttention(8, 2)(tt.randn(1, 3, 8))


def _gpt():
    import tinytorch as tt
    from tinytorch.models import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4))
    model(tt.tensor([[1, 2]]), tt.tensor([[2, 3]]))[1].backward()
    model.generate(tt.tensor([[1]]), 2, seed=0)


def _finetuning():
    import tinytorch as tt
    from tinytorch.finetune import LoRALinear, distillation_loss, last_token_pool
    tt.nn.GRU(2, 3, batch_first=True)(tt.zeros(1, 2, 2))
    LoRALinear(tt.nn.Linear(2, 2), rank=1)(tt.zeros(1, 2))
    distillation_loss(tt.zeros(1, 2), tt.zeros(1, 2), tt.tensor([0]))
    last_token_pool(tt.zeros(1, 2, 2), [[1, 0]])


CHECKS: dict[str, Callable[[], None]] = {
    "01": _tensor, "02": _autograd, "03": _layers, "04": _losses, "05": _optimizers, "06": _data, "07": _training,
    "08": _attention, "09": _gpt, "12": _finetuning,
}


def module_names(root: Path) -> dict[str, str]:
    """"05" -> "optimizers", from the folders under modules/."""
    return {f"{m.number:02d}": m.folder.split("_", 1)[1] for m in list_modules(root)}


def _incomplete(number: str, names: dict[str, str], err: BaseException) -> str:
    label = f"module {number} ({names.get(number, '?')})"
    if isinstance(err, (ImportError, AttributeError, NotImplementedError)):
        from tito.exercises import not_complete_message
        return not_complete_message(number, names.get(number, "?"))
    return f"{label} fails a quick check ({type(err).__name__}: {err}); run `tito test {number}`"


def missing_module(milestone: Milestone, names: dict[str, str]) -> str | None:
    """Why the milestone cannot run yet (the first module whose smoke check fails), or None."""
    for number in milestone.needs:
        try:
            CHECKS[number]()
        except Exception as err:  # a smoke check: any failure means "not ready", named
            return _incomplete(number, names, err)
    return None


def _module_in_traceback(err: BaseException, names: dict[str, str]) -> str | None:
    """The module that generated the innermost tinytorch/ file in `err`'s traceback."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename)
        if "tinytorch" in path.parts and path.suffix == ".py" and path.exists():
            match = re.search(r"modules/(\d+)_", path.open(encoding="utf-8").readline())
            if match:
                return _incomplete(match.group(1), names, err)
    return None


def load_script(root: Path, milestone: Milestone):
    path = root / milestone.script
    if not path.is_file():
        raise TitoError(f"milestone {milestone.name!r}: its script {milestone.script} is missing")
    spec = importlib.util.spec_from_file_location(f"milestone_{milestone.name}", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


# ---------------------------------------------------------------- commands


@app.command("list")
def list_command() -> None:
    """Every milestone: what it trains, the modules it needs, and whether it can run now."""
    with user_errors():
        names = module_names(find_root())
    table = Table(title="tito milestones")
    for column in ["name", "trains", "needs modules", "status"]:
        table.add_column(column)
    for m in MILESTONES.values():
        problem = missing_module(m, names)
        status = "[green]ready[/]" if problem is None else f"[yellow]{escape(problem)}[/]"
        table.add_row(m.name, m.trains, ", ".join(m.needs), status)
    console.print(table)


@app.command("run")
def run_command(
    name: str = typer.Argument(..., help="Which milestone (see `tito milestone list`)."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object with the results, nothing else."),
    seed: int = typer.Option(0, help="Seed for the weights and the data order."),
    quick: bool = typer.Option(False, "--quick", help="A shorter run, for tests (milestones that offer one)."),
) -> None:
    """Train a milestone model with your tinytorch and check it reaches its goal."""
    with user_errors():
        if name not in MILESTONES:
            raise TitoError(f"no milestone named {name!r}; there are: {', '.join(MILESTONES)}")
        milestone = MILESTONES[name]
        root = find_root()
        names = module_names(root)
        problem = missing_module(milestone, names)
        if problem is not None:
            raise TitoError(f"milestone {name!r} cannot run yet: {problem}")
        script = load_script(root, milestone)
        try:
            if quick and "quick" not in inspect.signature(script.run).parameters:
                raise TitoError(f"milestone {name!r} has no --quick mode; run it without --quick")
            result = script.run(seed=seed, quiet=json_output, **({"quick": True} if quick else {}))
        except (ImportError, NotImplementedError) as err:
            raise TitoError(f"milestone {name!r} stopped: "
                            f"{_module_in_traceback(err, names) or f'{type(err).__name__}: {err}'}") from None
    result["passed"] = milestone.reached(result[milestone.target]) and all(result[key] for key in milestone.also)
    if json_output:
        print(json.dumps(result))
    else:
        show(milestone, result)
    if not result["passed"]:
        raise typer.Exit(1)


def show(milestone: Milestone, result: dict) -> None:
    summary = Table(title=f"milestone {milestone.name}")
    summary.add_column("result")
    summary.add_column("value", justify="right")
    summary.add_row(milestone.target, milestone.describe(result[milestone.target]))
    summary.add_row("time", f"{result['seconds']:.1f} s")
    summary.add_row("parameters", f"{result['parameters']:,}")
    for key in milestone.also:
        summary.add_row(key, "yes" if result[key] else "[red]no[/]")
    console.print(summary)
    if result.get("table"):
        console.print(models_table(result["table"]))
    if result.get("confusion"):
        console.print(confusion_table(result["confusion"]))
    verdict = "[green]passed[/]" if result["passed"] else "[red]not reached[/]"
    console.print(f"milestone {milestone.name}: {verdict}")


def confusion_table(matrix: list[list[int]]) -> Table:
    """Rows: true class; columns: predicted class; the diagonal in green."""
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("")
    for j in range(len(matrix)):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(matrix):
        cells = [f"[green]{v}[/]" if i == j else (f"[red]{v}[/]" if v else "[dim]0[/]") for j, v in enumerate(row)]
        table.add_row(str(i), *cells)
    return table


def models_table(rows: list[dict]) -> Table:
    """A milestone's per-model rows: trainable parameters, accuracy (mean ± std over seeds), seconds."""
    table = Table(title="models (test accuracy: mean ± std over seeds)")
    for column in ["model", "trainable parameters", "accuracy", "time"]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(row["model"], f"{row['trainable']:,}", f"{row['accuracy']:.1%} ± {row['std']:.1%}",
                      f"{row['seconds']:.1f} s")
    return table
