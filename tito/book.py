"""`tito book build`: the course as a static HTML book (Jupyter Book 1), built from modules/.

book/ holds only hand-written files (`_config.yml`, the landing page `intro.md`).
Everything else is generated into OUT/source/, never into book/:

    intro.md                  book/intro.md with the module table filled in
    modules/NN_name.py        each module's notebook; solutions and hidden tests stripped
                              (student edition) unless --with-solutions
    reference/cli.md          `tito ... --help` of every command
    reference/api/*.md        signatures and docstrings of tinytorch's public names

then Jupyter Book builds OUT/_build/html/ with warnings as errors, so a broken
cross-reference fails the build. It reads the percent-format notebooks directly
(jupytext through `nb_custom_formats`).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from tito.errors import TitoError, user_errors
from tito.notebooks import ModuleFile, find_root, list_modules, read_notebook, strip_solutions

PACKAGE = "tinytorch"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
console = Console(soft_wrap=True, highlight=False)
app = typer.Typer(help="The course as a book: static HTML built from the modules.", no_args_is_help=True)


@dataclass(frozen=True)
class ModuleSummary:
    module: ModuleFile
    docname: str  # "modules/01_tensor"
    title: str  # "Module 01 — Tensor"
    exercises: int  # solution cells
    points: int  # graded points


@dataclass(frozen=True)
class BookBuild:
    html: Path  # OUT/_build/html
    seconds: float
    pages: int  # modules


# ---------------------------------------------------------------- generated pages


def module_page(module: ModuleFile, with_solutions: bool) -> str:
    """The notebook text of a module's page: the student's release unless `with_solutions`."""
    text = module.path.read_text(encoding="utf-8")
    return text if with_solutions else strip_solutions(text)


def summarize(module: ModuleFile) -> ModuleSummary:
    notebook = read_notebook(module)
    headings = [c.source.strip() for c in notebook.cells if c.cell_type == "markdown"]
    title = next((h.splitlines()[0][2:].strip() for h in headings if h.startswith("# ")), module.folder)
    exercises = sum(1 for c in notebook.cells if c.nbgrader.get("solution") and c.cell_type == "code")
    points = sum(c.nbgrader.get("points", 0) for c in notebook.cells if c.is_graded)
    return ModuleSummary(module, f"modules/{module.folder}", title, exercises, points)


def module_table(summaries: list[ModuleSummary]) -> str:
    rows = ["| module | exercises | points |", "| --- | --- | --- |"]
    rows += [f"| {{doc}}`{s.title} <{s.docname}>` | {s.exercises} | {s.points} |" for s in summaries]
    return "\n".join(rows)


EDITION_NOTE = {
    False: "This is the **student edition**: exercises show `raise NotImplementedError()` "
    "where your code goes, and hidden tests are left out.",
    True: "This is the **instructor edition**: every solution is shown between "
    "`### BEGIN SOLUTION` and `### END SOLUTION`, and hidden tests between their markers.",
}


def cli_reference(cli) -> str:
    """`tito <command> --help` for every command and group, as the terminal shows it.

    `cli` is the whole tito command (`typer.main.get_command(app)`, or the root of the
    running command's context): this file does not import tito.main, which imports it.
    """
    lines = ["# Command-line reference: `tito`", "", "Generated from `tito ... --help`."]
    for path in _command_paths(cli, []):
        code, output = _help_text(cli, path)
        if code != 0:
            raise TitoError(f"`tito {' '.join(path)} --help` failed: {output}")
        heading = "#" * min(len(path) + 2, 4)
        lines += ["", f"{heading} `{' '.join(['tito', *path])}`", ""]
        lines += ["```text", output.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _help_text(cli, path: list[str]) -> tuple[int, str]:
    """Exit code and output of `tito PATH --help`, run in-process at a fixed width, no colour."""
    from typer.testing import CliRunner

    with CliRunner().isolation(env={"COLUMNS": "90", "NO_COLOR": "1"}, color=False) as streams:
        try:
            cli.main(args=[*path, "--help"], prog_name="tito")
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        return code, streams[0].getvalue().decode("utf-8", errors="replace")


def _command_paths(command, path: list[str]) -> list[list[str]]:
    """[[], ["book"], ["book", "build"], ...]: every command and group, groups first."""
    paths = [path]
    children = getattr(command, "commands", {})  # a group (typer vendors its own click)
    for name in sorted(children):
        if not getattr(children[name], "hidden", False):
            paths += _command_paths(children[name], [*path, name])
    return paths


# ---------------------------------------------------------------- API reference


@dataclass
class ApiFile:
    dotted: str  # "tinytorch.nn.layers"
    public: str  # where its names are imported from: "tinytorch.nn"
    source: str  # "modules/03_layers/layers.py"
    tree: ast.Module
    names: list[str]


def api_files(root: Path) -> list[ApiFile]:
    """Every generated file of the package with a non-empty `__all__`, in path order."""
    package = root / PACKAGE
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(root)
        if path.name == "__init__.py" or "assets" in rel.parts:
            continue
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        names = _dunder_all(tree)
        if names:
            dotted = ".".join(rel.with_suffix("").parts)
            first = text.splitlines()[0]
            source = first.split(" from ", 1)[-1].split(" by ", 1)[0] if first.startswith("# Autogenerated") else ""
            found.append(ApiFile(dotted, _public_home(root, dotted), source, tree, names))
    return found


def _dunder_all(tree: ast.Module) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    return []


def _public_home(root: Path, dotted: str) -> str:
    """The shortest package that re-exports `dotted` through `from ... import *` chains."""
    home = dotted
    while "." in home:
        parent = home.rsplit(".", 1)[0]
        init = root.joinpath(*parent.split("."), "__init__.py")
        if not init.is_file() or home not in _star_imports(init, parent):
            break
        home = parent
    return home


def _star_imports(init: Path, package: str) -> set[str]:
    found = set()
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and [a.name for a in node.names] == ["*"]:
            base = package if node.level else ""
            found.add(".".join(p for p in [base, node.module or ""] if p))
    return found


def api_pages(root: Path) -> dict[str, str]:
    """{relative page path: markdown}: an index, then one page per public package."""
    by_home: dict[str, list[ApiFile]] = {}
    for file in api_files(root):
        by_home.setdefault(file.public, []).append(file)
    index = [
        "# API reference",
        "",
        "Every public name of the `tinytorch` package, as `tito export` generates it from the",
        "modules: its signature and docstring. One page per package you import from:",
        "",
        *[f"- {{doc}}`{home} <{home}>`" for home in by_home],
    ]
    pages = {"reference/api/index.md": "\n".join(index) + "\n"}
    for home, files in by_home.items():
        pages[f"reference/api/{home}.md"] = _package_page(home, files)
    return pages


def _package_page(home: str, files: list[ApiFile]) -> str:
    lines = [f"# `{home}`", ""]
    for file in files:
        lines += [f"## `{file.dotted}`", ""]
        if file.source:
            lines += [f"Generated from `{file.source}`. Import these names from `{home}`.", ""]
        nodes = _top_level(file.tree)
        for name in file.names:
            lines += _describe(name, nodes.get(name))
    return "\n".join(lines).rstrip() + "\n"


def _top_level(tree: ast.Module) -> dict[str, ast.AST]:
    nodes: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            nodes[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        nodes.setdefault(leaf.id, node)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            nodes.setdefault(node.target.id, node)
    return nodes


def _describe(name: str, node: ast.AST | None) -> list[str]:
    lines = [f"### `{name}`", ""]
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        signature = f"class {name}({_arguments(init)})" if init else f"class {name}" + (f"({bases})" if bases else "")
        lines += ["```python", signature, "```", ""]
        if bases and init:
            lines += [f"Subclass of `{bases}`.", ""]
        lines += _docstring(node)
        for method in node.body:
            if isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_public_method(method.name):
                lines += [f"- `{method.name}({_arguments(method)})`" + _first_line(method)]
        lines += [""]
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        lines += ["```python", f"def {name}({_arguments(node, drop_self=False)})", "```", ""]
        lines += _docstring(node)
    elif node is not None:
        value = ast.unparse(node).splitlines()[0]
        lines += ["```python", value if len(value) <= 100 else value[:97] + "...", "```", ""]
    return lines


def _is_public_method(name: str) -> bool:
    return not name.startswith("_") or name in {"__call__", "__len__", "__iter__", "__getitem__"}


def _arguments(node: ast.FunctionDef | None, drop_self: bool = True) -> str:
    if node is None:
        return ""
    args = node.args
    if drop_self and args.posonlyargs + args.args:
        args = ast.arguments(
            posonlyargs=args.posonlyargs[1:], args=args.args[1:] if not args.posonlyargs else args.args,
            vararg=args.vararg, kwonlyargs=args.kwonlyargs, kw_defaults=args.kw_defaults,
            kwarg=args.kwarg, defaults=args.defaults,
        )
    return ast.unparse(args)


def _first_line(node: ast.AST) -> str:
    doc = ast.get_docstring(node)
    return f": {doc.strip().splitlines()[0]}" if doc else ""


def _docstring(node: ast.AST) -> list[str]:
    """The docstring as Markdown; lines Markdown would misread (headings, doctests) are fenced."""
    doc = ast.get_docstring(node)
    if not doc:
        return []
    out, fenced = [], False
    for line in doc.splitlines():
        code = line.startswith(("    ", ">>>", "...", "#"))
        if code != fenced and (line.strip() or not code):
            out.append("```python" if code else "```")
            fenced = code
        out.append(line)
    if fenced:
        out.append("```")
    return out + [""]


# ---------------------------------------------------------------- staging and building


def stage(root: Path, source: Path, cli, with_solutions: bool = False,
          execute: bool = False) -> list[ModuleSummary]:
    """Write the book's whole source tree into `source`; return the modules it holds."""
    book = root / "book"
    if not (book / "_config.yml").is_file():
        raise TitoError(f"no {book / '_config.yml'}: the book's configuration is missing")
    modules = list_modules(root)
    if not modules:
        raise TitoError(f"no modules under {root / 'modules'}")
    summaries = [summarize(m) for m in modules]

    config = yaml.safe_load((book / "_config.yml").read_text(encoding="utf-8"))
    if with_solutions:
        config["title"] = f"{config.get('title', 'TinyTorch')} (instructor edition)"
    config.setdefault("execute", {})["execute_notebooks"] = "force" if execute else "off"
    config["execute"]["allow_errors"] = not with_solutions  # the student's stubs raise NotImplementedError

    api = api_pages(root)
    files = {
        "_config.yml": yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        "_toc.yml": _toc(summaries, list(api)),
        "intro.md": (book / "intro.md").read_text(encoding="utf-8")
        .replace("{{ module_table }}", module_table(summaries))
        .replace("{{ edition_note }}", EDITION_NOTE[with_solutions]),
        "reference/cli.md": cli_reference(cli),
        **api,
    }
    for summary in summaries:
        files[f"{summary.docname}.py"] = module_page(summary.module, with_solutions)

    wanted = {source / rel for rel in files}
    if source.is_dir():  # drop pages of modules that no longer exist
        for stale in [p for p in source.rglob("*") if p.is_file() and p not in wanted]:
            stale.unlink()
    for rel, text in files.items():
        _write_if_changed(source / rel, text)  # unchanged files keep their mtime: faster rebuilds
    return summaries


def _toc(summaries: list[ModuleSummary], api: list[str]) -> str:
    api_sections = [{"file": page.removesuffix(".md")} for page in api if not page.endswith("/index.md")]
    toc = {
        "format": "jb-book",
        "root": "intro",
        "parts": [
            {"caption": "Modules", "chapters": [{"file": s.docname} for s in summaries]},
            {"caption": "Reference", "chapters": [{"file": "reference/cli"}, {"file": "reference/api/index", "sections": api_sections}]},
        ],
    }
    return yaml.safe_dump(toc, sort_keys=False)


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def default_out(root: Path, with_solutions: bool) -> Path:
    return root / "book" / "_build" / ("instructor" if with_solutions else "student")


def build(root: Path, out: Path, cli, with_solutions: bool = False, execute: bool = False,
          quiet: bool = True) -> BookBuild:
    """Stage the sources under OUT/source/ and build OUT/_build/html/; raise TitoError on any warning."""
    try:
        import jupyter_book  # noqa: F401 -- only to say clearly that it is missing
    except ImportError:
        raise TitoError("jupyter-book is not installed; install the book extra: pip install -e '.[book]'") from None
    start = time.perf_counter()
    out = out.resolve()
    summaries = stage(root, out / "source", cli, with_solutions, execute)
    command = [
        sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
        "build", str(out / "source"), "--path-output", str(out), "--warningiserror", "--keep-going",
    ]
    env = {**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, env=env)
    html = out / "_build" / "html"
    if proc.returncode != 0 or not (html / "index.html").is_file():
        output = _ANSI.sub("", proc.stdout + proc.stderr)
        problems = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
        detail = "\n".join(problems) or output[-4000:]
        raise TitoError(f"the book did not build (warnings are errors):\n{detail}")
    if not quiet:
        console.print(escape(proc.stdout.strip()))
    return BookBuild(html, time.perf_counter() - start, len(summaries))


@app.command("build")
def build_command(
    ctx: typer.Context,
    with_solutions: bool = typer.Option(False, "--with-solutions", help="Instructor edition: show solutions and hidden tests."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: book/_build/student, or book/_build/instructor with --with-solutions)."),
    execute: bool = typer.Option(False, "--execute", help="Run every notebook and show its outputs (slow)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Jupyter Book's own output."),
) -> None:
    """Build the course book as static HTML, offline, from modules/ (warnings are errors)."""
    with user_errors():
        root = find_root()
        cli = ctx.find_root().command  # the whole tito command, for the CLI reference page
        result = build(root, out or default_out(root, with_solutions), cli, with_solutions, execute,
                       quiet=not verbose)
    edition = "instructor" if with_solutions else "student"
    console.print(
        f"[green]built[/green] the {edition} edition ({result.pages} modules) in {result.seconds:.1f} s: "
        f"{escape(str(result.html / 'index.html'))}"
    )
