"""Find, read and validate module notebooks (Jupytext percent-format `.py` files).

Cells come from jupytext; this file only adds what jupytext does not give us:
line numbers, `#| ` directives, strict checks of cell metadata, and nbgrader-style
solution stripping.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import keyword
import os
import re
import stat
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tito.errors import TitoError

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
SOLUTION_MARKERS = {BEGIN_SOLUTION, END_SOLUTION}
DIRECTIVES = {"default_exp", "export"}
COMPANION = "provided.py"
CACHE_FORMAT = 2  # bump when what `_parse_notebook` caches changes  # modules/NN_name/provided.py: the module's infrastructure, out of the reading path

# The same cell-start patterns jupytext's percent reader uses.
_CELL_START = re.compile(r"^\s*#\s*%%(%*)\s(.*)$")
_CELL_START_BARE = re.compile(r"^\s*#\s*(%%|<codecell>|In\[[0-9 ]*\]:?)\s*$")
_DIRECTIVE = re.compile(r"^#\|\s*(\S+)\s*(.*?)\s*$")
_MODULE_DIR = re.compile(r"^(\d+)_(\w+)$")
_METADATA_KEY = re.compile(r"([A-Za-z_][\w.-]*)=(?=[\[{\"])")


# ---------------------------------------------------------------- locating modules


def find_root(start: Path | None = None) -> Path:
    """The repo root: the nearest folder (from cwd up) holding `modules/` and `pyproject.toml`."""
    here = (start or Path.cwd()).resolve()
    for folder in [here, *here.parents]:
        if (folder / "modules").is_dir() and (folder / "pyproject.toml").is_file():
            return folder
    raise TitoError(f"no TinyTorch repo above {here}: expected a folder with modules/ and pyproject.toml")


@dataclass(frozen=True)
class ModuleFile:
    number: int  # 1
    folder: str  # "01_tensor"
    path: Path  # absolute path of modules/01_tensor/tensor.py
    rel: str  # "modules/01_tensor/tensor.py"


def list_modules(root: Path) -> list[ModuleFile]:
    """Every `modules/NN_name/name.py`, in module-number order."""
    found = []
    for folder in sorted((root / "modules").iterdir()):
        match = _MODULE_DIR.match(folder.name)
        notebook = folder / f"{match.group(2)}.py" if match else None
        if notebook and notebook.is_file():
            rel = notebook.relative_to(root).as_posix()
            found.append(ModuleFile(int(match.group(1)), folder.name, notebook, rel))
    return sorted(found, key=lambda m: (m.number, m.folder))


def companion(module: ModuleFile) -> ModuleFile | None:
    """The module's `provided.py`, if it has one: infrastructure the lesson imports, no exercises.

    It is a notebook like the lesson (with its own `#| default_exp`) and exports before it.
    """
    path = module.path.parent / COMPANION
    if not path.is_file():
        return None
    return ModuleFile(module.number, module.folder, path, f"modules/{module.folder}/{COMPANION}")


def read_companion(module: ModuleFile) -> Notebook | None:
    """The companion notebook, checked to hold no exercises and no graded cells."""
    provided = companion(module)
    if provided is None:
        return None
    notebook = read_notebook(provided)
    for cell in notebook.cells:
        if cell.nbgrader or any(line.strip() in SOLUTION_MARKERS for line in cell.source.splitlines()):
            raise TitoError(f"{provided.rel}:{cell.line}: {COMPANION} holds provided code only; "
                            f"exercises and graded cells belong in {module.rel}")
    return notebook


def list_assets(module: ModuleFile) -> list[tuple[str, Path]]:
    """(path relative to `modules/NN_name/assets/`, absolute path) of every asset file, sorted.

    Hidden files (a name starting with '.') and `__pycache__` folders are skipped.
    """
    folder = module.path.parent / "assets"
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            found.append((rel.as_posix(), path))
    return sorted(found)


def select_modules(root: Path, selectors: list[str] | None) -> list[ModuleFile]:
    """Modules named by number (`01`, `1`) or folder (`01_tensor`); none means all."""
    modules = list_modules(root)
    if not selectors:
        return modules
    chosen = []
    for selector in selectors:
        hits = [m for m in modules if selector == m.folder or (selector.isdigit() and int(selector) == m.number)]
        if not hits:
            known = ", ".join(m.folder for m in modules) or "none"
            raise TitoError(f"unknown module {selector!r}; known modules: {known}")
        chosen += [m for m in hits if m not in chosen]
    return sorted(chosen, key=modules.index)


# ---------------------------------------------------------------- reading one notebook


@dataclass(frozen=True)
class Directive:
    name: str  # "export"
    arg: str  # "core.backend" or ""
    line: int  # file line


@dataclass
class Cell:
    index: int  # 1-based among all the notebook's cells
    line: int  # file line of the `# %%` header (or first line of a header-less first cell)
    first_line: int  # file line of the cell's first source line
    cell_type: str
    source: str  # code cells: the Python text exactly as in the file
    metadata: dict
    directives: list[Directive] = field(default_factory=list)

    @property
    def nbgrader(self) -> dict:
        return self.metadata.get("nbgrader") or {}

    @property
    def is_graded(self) -> bool:
        return bool(self.nbgrader.get("grade"))

    def export_target(self, default_exp: str) -> str | None:
        """Dotted target under tinytorch/ this cell exports to, or None."""
        for d in self.directives:
            if d.name == "export":
                return d.arg or default_exp
        return None

    def export_code(self) -> str:
        """Source without directive lines and solution marker lines, trimmed of blank edges."""
        lines = [
            line
            for line in self.source.splitlines()
            if not _DIRECTIVE.match(line) and line.strip() not in SOLUTION_MARKERS
        ]
        return "\n".join(lines).strip("\n")


@dataclass
class Notebook:
    module: ModuleFile
    cells: list[Cell]
    default_exp: str

    def exported_cells(self) -> list[tuple[str, Cell]]:
        """(dotted target, cell) for every exported cell, in file order."""
        targets = [(c.export_target(self.default_exp), c) for c in self.cells]
        return [(t, c) for t, c in targets if t]


_PARSED: OrderedDict[tuple, Notebook] = OrderedDict()  # (rel, path, sha1 of the text) -> parsed notebook
_PARSED_MAX = 64


def read_notebook(module: ModuleFile) -> Notebook:
    """Read and validate a module; raise TitoError naming file:line on any problem.

    Parsed notebooks are kept by content (a grading worker reads the same reference
    modules for every submission); treat the result as read-only.
    """
    text = module.path.read_text(encoding="utf-8")
    key = (module.rel, str(module.path), _digest(text))
    if key in _PARSED:
        _PARSED.move_to_end(key)
        return _PARSED[key]
    notebook = _parse_notebook(module, text)
    _PARSED[key] = notebook
    if len(_PARSED) > _PARSED_MAX:
        _PARSED.popitem(last=False)
    return notebook


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tito" / "notebooks"


def _cache_file(text: str) -> Path:
    from importlib.metadata import version

    key = _digest(f"{version('jupytext')}/{CACHE_FORMAT}/{text}")
    return _cache_dir() / f"{key}.json"


def _load_cached(text: str) -> dict | None:
    try:
        return json.loads(_cache_file(text).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _store_cached(text: str, entry: dict) -> None:
    try:  # a cache that cannot be written (read-only home, sandbox) only costs time
        cached = _cache_file(text)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(partial, cached)
    except OSError:
        pass


def _jupytext_cells(text: str) -> list[tuple[str, str, dict]]:
    """(cell type, source, metadata) of each cell, as jupytext reads the percent format."""
    import jupytext  # here, not at import: it pulls in nbformat, too slow for `tito --help`
    from jupytext.magics import comment_magic

    cells = []
    for raw in jupytext.reads(text, fmt="py:percent").cells:
        source = raw.source
        if raw.cell_type == "code":  # jupytext uncomments magics; give back the file's Python text
            source = "\n".join(comment_magic(source.splitlines()))
        cells.append((raw.cell_type, source, dict(raw.metadata)))
    return cells


def _parse_notebook(module: ModuleFile, text: str) -> Notebook:
    """Cells, directives and checks of one notebook.

    jupytext's reader (~0.1 s per 1,000 lines) and `ast` on every exported cell would cost
    every `tito module list`, `test` or `export` a second or more; both results are kept on
    disk by the text's hash, written only once the notebook passed every check.
    """
    lines = text.splitlines()
    where = module.rel
    cached = _load_cached(text)
    if cached is None:
        body_start = _check_yaml_header(lines, where)
        raw_cells = _jupytext_cells(text)
    else:
        body_start, raw_cells = cached["body_start"], [tuple(cell) for cell in cached["cells"]]
        for key, data in cached["facts"].items():
            _FACTS.setdefault(key, CodeFacts.from_json(data))
    headers = _check_cell_headers(lines, body_start, where)

    cells = []
    starts = headers if len(raw_cells) == len(headers) else [_first_content_line(lines, body_start)] + headers
    for index, ((cell_type, source, metadata), header_line) in enumerate(zip(raw_cells, starts), start=1):
        first_line = header_line + 1 if header_line in headers else header_line
        cell = Cell(index, header_line, first_line, cell_type, source, metadata)
        if cell.cell_type == "code":
            cell.directives = _parse_directives(cell, where)
        cells.append(cell)

    default_exp = _check_default_exp(cells, where)
    _check_nbgrader(cells, where)
    notebook_ = Notebook(module, cells, default_exp)
    codes = [cell.export_code() for _, cell in notebook_.exported_cells()]
    for _, cell in notebook_.exported_cells():
        _check_exported_code(cell, where)
    if cached is None:
        facts = {_digest(code): code_facts(code).to_json() for code in codes}
        _store_cached(text, {"body_start": body_start, "cells": raw_cells, "facts": facts})
    return notebook_


def _first_content_line(lines: list[str], start: int) -> int:
    for number in range(start, len(lines) + 1):
        if lines[number - 1].strip():
            return number
    return start


def _check_yaml_header(lines: list[str], where: str) -> int:
    """Validate the optional `# ---` jupytext header; return the first file line after it."""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None or lines[first].rstrip() != "# ---":
        return 1
    # The header ends at the next '# ---'; a non-comment line first means it never closed.
    closers = (i for i in range(first + 1, len(lines)) if not lines[i].startswith("#") or lines[i].rstrip() == "# ---")
    end = next(closers, None)
    if end is None or lines[end].rstrip() != "# ---":
        raise TitoError(f"{where}:{first + 1}: unterminated jupytext header: no closing '# ---' line")
    yaml_text = "\n".join(re.sub(r"^# ?", "", line) for line in lines[first + 1 : end])
    try:
        yaml.safe_load(yaml_text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = first + 2 + (mark.line if mark else 0)
        problem = getattr(err, "problem", None) or str(err)
        raise TitoError(f"{where}:{line}: invalid YAML in the jupytext header: {problem}") from None
    return end + 2


def _check_cell_headers(lines: list[str], start: int, where: str) -> list[int]:
    """File lines of every `# %%` header; the JSON metadata on each must parse
    (jupytext silently drops metadata whose JSON is broken)."""
    headers = []
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        if _CELL_START_BARE.match(line):
            headers.append(number)
        elif match := _CELL_START.match(line):
            headers.append(number)
            _check_metadata_json(match.group(2), f"{where}:{number}")
    return headers


def _check_metadata_json(options: str, where: str) -> None:
    decoder = json.JSONDecoder()
    position = 0
    while match := _METADATA_KEY.search(options, position):
        try:
            _, position = decoder.raw_decode(options, match.end())
        except json.JSONDecodeError as err:
            raise TitoError(f"{where}: invalid JSON in cell metadata {match.group(1)}=...: {err}") from None


def _parse_directives(cell: Cell, where: str) -> list[Directive]:
    """`#| name arg` lines; they must sit at the top of the code cell."""
    directives, at_top = [], True
    for offset, line in enumerate(cell.source.splitlines()):
        number = cell.first_line + offset
        match = _DIRECTIVE.match(line)
        if not match:
            at_top = at_top and not line.strip()
            continue
        name, arg = match.groups()
        if name not in DIRECTIVES:
            raise TitoError(f"{where}:{number}: unknown directive '#| {name}'; known: '#| default_exp', '#| export'")
        if not at_top:
            raise TitoError(f"{where}:{number}: directive '#| {name}' must be at the top of its cell")
        if arg:
            _check_dotted_target(arg, f"{where}:{number}")
        elif name == "default_exp":
            raise TitoError(f"{where}:{number}: '#| default_exp' needs a target, e.g. '#| default_exp core.tensor'")
        directives.append(Directive(name, arg, number))
    return directives


def _check_dotted_target(target: str, where: str) -> None:
    parts = target.split(".")
    if parts[0] == "tinytorch":
        raise TitoError(f"{where}: write the target relative to tinytorch, e.g. '{'.'.join(parts[1:]) or 'core.x'}'")
    if not all(p.isidentifier() and not keyword.iskeyword(p) and not p.startswith("_") for p in parts):
        raise TitoError(f"{where}: {target!r} is not a dotted module path such as 'core.tensor'")


def _check_default_exp(cells: list[Cell], where: str) -> str:
    found = [d for c in cells for d in c.directives if d.name == "default_exp"]
    if not found:
        raise TitoError(
            f"{where}:1: no '#| default_exp' cell; add a code cell starting with "
            f"'#| default_exp <path>' (e.g. '#| default_exp core.tensor')"
        )
    if len(found) > 1:
        raise TitoError(f"{where}:{found[1].line}: second '#| default_exp' (first at line {found[0].line})")
    return found[0].arg


def _check_nbgrader(cells: list[Cell], where: str) -> None:
    """The metadata nbgrader needs to autograde (see DESIGN.md 'Facts already checked')."""
    grade_ids: dict[str, int] = {}
    # A released (stripped) or student notebook has no markers left; only a source
    # notebook, which has some, must mark every solution cell.
    is_source = any(line.strip() == BEGIN_SOLUTION for c in cells for line in c.source.splitlines())
    for cell in cells:
        meta = cell.nbgrader
        if not meta:
            continue
        at = f"{where}:{cell.line}"
        if meta.get("schema_version") != 3:
            raise TitoError(f"{at}: nbgrader metadata needs \"schema_version\": 3")
        if not (meta.get("grade") or meta.get("solution")):
            continue
        grade_id = meta.get("grade_id")
        if not isinstance(grade_id, str) or not grade_id:
            raise TitoError(f"{at}: nbgrader cell needs a \"grade_id\"")
        if grade_id in grade_ids:
            raise TitoError(f"{at}: duplicate grade_id {grade_id!r} (first used at line {grade_ids[grade_id]})")
        grade_ids[grade_id] = cell.line
        points = meta.get("points")
        if meta.get("grade") and (not isinstance(points, int) or isinstance(points, bool) or points < 0):
            raise TitoError(f"{at}: graded cell {grade_id!r} needs integer \"points\", got {points!r}")
        if cell.cell_type == "code":
            _check_markers(cell, at, grade_id, is_source)


def _check_markers(cell: Cell, at: str, grade_id: str, is_source: bool) -> None:
    stripped = [line.strip() for line in cell.source.splitlines()]
    if is_source and cell.nbgrader.get("solution") and BEGIN_SOLUTION not in stripped:
        raise TitoError(f"{at}: solution cell {grade_id!r} has no '{BEGIN_SOLUTION}' / '{END_SOLUTION}' block")
    for begin, end in [(BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)]:
        depth = 0
        for marker in stripped:
            depth += (marker == begin) - (marker == end)
            if depth not in (0, 1):
                break
        if depth != 0:
            raise TitoError(f"{at}: unbalanced '{begin}' / '{end}' in cell {grade_id!r}")


def _check_exported_code(cell: Cell, where: str) -> None:
    """Exported code must parse and must not edit sys.path (it imports through the package)."""
    facts = code_facts(cell.export_code())
    if facts.error:
        raise TitoError(f"{where}:{_syntax_error_line(cell)}: exported cell {cell.index} does not parse: {facts.error}")
    if facts.sys_path_line is not None:
        line = _source_line_of(cell, facts.sys_path_line, cell.first_line - 1)
        raise TitoError(
            f"{where}:{line}: exported code must not use sys.path; import through the package "
            f"(from tinytorch.core.tensor import Tensor)"
        )


def _syntax_error_line(cell: Cell) -> int:
    """File line of the syntax error in a cell. The cell's own source (directives and solution
    markers are comments) fails where export_code does, and its lines are the file's."""
    try:
        ast.parse(cell.source)
    except SyntaxError as err:
        lines = cell.source.splitlines()
        if err.lineno and err.lineno <= len(lines):
            return cell.first_line + err.lineno - 1
    return cell.line


def _touches_sys_path(node: ast.AST) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "path" and getattr(node.value, "id", None) == "sys"
    if isinstance(node, ast.ImportFrom):
        return node.module == "sys" and any(alias.name == "path" for alias in node.names)
    return False


def _source_line_of(cell: Cell, text: str, offset: int) -> int:
    """File line of `text` inside the cell (first match)."""
    for number, line in enumerate(cell.source.splitlines(), start=offset + 1):
        if line == text:
            return number
    return cell.line


# ---------------------------------------------------------------- converting and pairing


def to_notebook(text: str):
    """A percent-format module as an nbformat notebook, paired with its .py."""
    import jupytext

    notebook = jupytext.reads(text, fmt="py:percent")
    notebook.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    notebook.metadata.setdefault("kernelspec", {"display_name": "Python 3", "language": "python", "name": "python3"})
    return notebook


def to_percent(notebook) -> str:
    import jupytext

    return jupytext.writes(notebook, fmt="py:percent")


def notebook_path(module: ModuleFile) -> Path:
    return module.path.with_suffix(".ipynb")


def write_atomically(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` (str: UTF-8) so that a crash, a full disk or Ctrl-C leaves the old
    file or the new one, never half of one (a student's module is their work). The file keeps its mode."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
            out.flush()
            os.fsync(out.fileno())
        mode = path.stat().st_mode if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask: from /proc on Linux, elsewhere by setting it and putting it straight back.

    The same as tinytorch.core.serialization's (module 03), on purpose: tito writes a student's files
    while their tinytorch may not import at all."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def notebook_text(notebook) -> str:
    """The .ipynb file's text of `notebook`, ending in a newline as nbformat.write's does."""
    import nbformat

    text = nbformat.writes(notebook)
    return text if text.endswith("\n") else text + "\n"


def write_notebook(notebook, path: Path) -> None:
    """nbformat.write, atomically."""
    write_atomically(path, notebook_text(notebook))


def _read_pair_notebook(module: ModuleFile):
    """The .ipynb as a notebook; a TitoError (naming it, saying the .py is untouched) if it is not one."""
    import nbformat

    ipynb, py = notebook_path(module), module.path
    try:
        notebook = nbformat.read(ipynb, as_version=4)
        notebook_inputs(notebook)  # jupytext must be able to read it too
    except Exception as err:  # malformed JSON, not a notebook, half-saved: nbformat raises many kinds
        raise TitoError(
            f"{Path(module.rel).with_suffix('.ipynb').as_posix()}: not a readable notebook ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
            f"{py.name} was left as it is. If Jupyter is saving it, run again; otherwise fix the .ipynb, "
            f"or delete it to start again from {py.name}"
        ) from None
    return notebook


def notebook_inputs(notebook) -> str:
    """What a notebook says, outputs left out: its percent-format text."""
    import jupytext

    return jupytext.writes(notebook, fmt="py:percent")


def _course_root(module: ModuleFile) -> Path:
    """The folder `module.rel` is relative to (the course's, or the repo's, root)."""
    return module.path.parents[len(Path(module.rel).parts) - 1]


def _sync_record(module: ModuleFile) -> Path:
    """`.tito/sync/NN_name[.provided].json`: the hashes of the pair when tito last synced it."""
    return _course_root(module) / ".tito" / "sync" / f"{module.folder}.{module.path.stem}.json"


def _read_record(module: ModuleFile) -> dict | None:
    try:
        record = json.loads(_sync_record(module).read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def _relative(path: Path, module: ModuleFile) -> str:
    """`path` as the student would type it, from the course's root."""
    return path.relative_to(_course_root(module)).as_posix()


def record_synced(module: ModuleFile, py_text: str, ipynb_inputs: str) -> None:
    """Remember the pair as it is now in line, so a later sync can tell which side was edited."""
    path = _sync_record(module)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps({"py": _digest(py_text), "ipynb": _digest(ipynb_inputs)}) + "\n")
    except OSError:
        pass  # without the record the next sync keeps a backup of whatever it replaces


def _backup(path: Path) -> Path:
    """Copy `path` beside itself as `name.backup-<time>.ext` before it is replaced."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in itertools.count(1):
        backup = path.with_name(f"{path.stem}.backup-{stamp}{'' if n == 1 else f'-{n}'}{path.suffix}")
        if not backup.exists():
            break
    write_atomically(backup, path.read_bytes())
    return backup


def _replace_if_unchanged(path: Path, text: str, seen) -> None:
    """Write `text` to `path` unless `path` changed since it was read (an editor or Jupyter saved it)."""
    now = path.stat()
    if (now.st_mtime_ns, now.st_size) != (seen.st_mtime_ns, seen.st_size):
        raise TitoError(f"{path.name} changed while tito was syncing it (saved in Jupyter or an editor?); "
                        f"nothing was overwritten: run the command again")
    try:
        write_atomically(path, text)
    except OSError as err:  # a full disk, a read-only folder: the old file is still there, whole
        raise TitoError(f"could not write {path.name} ({err.strerror or err}); it was left as it was") from None


def sync(module: ModuleFile) -> str:
    """Bring the .ipynb / .py pair in line; return what happened (one or more lines, or "").

    The side edited since the last sync wins. If both were (or there is no record of the last
    sync), the newer file wins and the other is first copied to `name.backup-<time>.ext`, and the
    message says so: a student's edits are never dropped silently.
    """
    ipynb = notebook_path(module)
    if not ipynb.exists():
        return ""
    py_seen, ipynb_seen = module.path.stat(), ipynb.stat()
    py_text = module.path.read_text(encoding="utf-8")
    old = _read_pair_notebook(module)
    old_inputs = notebook_inputs(old)
    new = to_notebook(py_text)
    if old_inputs in (py_text, notebook_inputs(new)):
        record_synced(module, py_text, old_inputs)
        return ""
    record = _read_record(module)
    py_edited = record is None or record.get("py") != _digest(py_text)
    ipynb_edited = record is None or record.get("ipynb") != _digest(old_inputs)
    if py_edited and ipynb_edited:
        ipynb_wins = ipynb_seen.st_mtime_ns > py_seen.st_mtime_ns
    else:
        ipynb_wins = ipynb_edited
    loser = module.path if ipynb_wins else ipynb
    note = ""
    if py_edited and ipynb_edited:
        backup = _backup(loser)
        why = "both changed since the last sync" if record else "they differ and tito has no record of the last sync"
        note = (f"warning: {module.path.name} and {ipynb.name}: {why}; kept the newer "
                f"{(ipynb if ipynb_wins else module.path).name}, saved {loser.name} as {backup.name}\n")
    if ipynb_wins:
        kept = ""
        if not note:  # the .py is what gets graded: its last version stays at hand even when only the
            # notebook changed (e.g. Jupyter saved a copy it had open from before the .py's edit)
            previous = _sync_record(module).with_suffix(".previous.py")
            try:
                write_atomically(previous, py_text)
            except OSError as err:  # no copy, no replacing: the .py stays as it is
                raise TitoError(f"could not write {module.path.name}'s previous version to "
                                f"{_relative(previous, module)} ({err.strerror or err}); {module.path.name} "
                                f"was left as it was") from None
            kept = f" (the replaced {module.path.name} is kept as {_relative(previous, module)})"
        _replace_if_unchanged(module.path, old_inputs, py_seen)
        record_synced(module, old_inputs, old_inputs)
        return f"{note}updated {module.path.name} from {ipynb.name}{kept}"
    from jupytext.combine import combine_inputs_with_outputs

    new = combine_inputs_with_outputs(new, old, fmt="py:percent") or new  # keep the student's outputs (it returns a copy)
    _replace_if_unchanged(ipynb, notebook_text(new), ipynb_seen)
    record_synced(module, py_text, notebook_inputs(new))
    return f"{note}updated {ipynb.name} from {module.path.name}"


# ---------------------------------------------------------------- public names and stripping


@dataclass(frozen=True)
class CodeFacts:
    """What export and the checks need to know of one exported cell's code, found by `ast`
    once per distinct text and kept on disk with the notebook (see `_parse_notebook`)."""

    error: str | None = None  # SyntaxError message, if it does not parse
    public: tuple[str, ...] = ()  # top-level def/class/assignment names without a leading '_'
    reexports: tuple[str, ...] = ()  # tinytorch names a cell of imports only brings in
    imports: tuple[tuple, ...] = ()  # top-level imports: (first, last line index, kind, source, names)
    sys_path_line: str | None = None  # the first line that touches sys.path

    def to_json(self) -> list:
        return [self.error, list(self.public), list(self.reexports), [list(i) for i in self.imports],
                self.sys_path_line]

    @classmethod
    def from_json(cls, data: list) -> CodeFacts:
        error, public, reexports, imports, sys_path_line = data
        return cls(error, tuple(public), tuple(reexports),
                   tuple((a, b, kind, source, tuple(names)) for a, b, kind, source, names in imports), sys_path_line)


_FACTS: dict[str, CodeFacts] = {}  # sha1 of the code -> its facts


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def code_facts(code: str) -> CodeFacts:
    key = _digest(code)
    if key not in _FACTS:
        _FACTS[key] = _find_facts(code)
    return _FACTS[key]


def _find_facts(code: str) -> CodeFacts:
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        return CodeFacts(error=err.msg)
    imports = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = tuple(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            imports.append((node.lineno - 1, node.end_lineno - 1, "import", None, names))
        elif isinstance(node, ast.ImportFrom):
            names = tuple(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
            imports.append((node.lineno - 1, node.end_lineno - 1, "from", "." * node.level + (node.module or ""),
                            names))
    sys_path_line = None
    if "path" in code:  # the walk costs more than the parse; most cells cannot match
        lines = code.splitlines()
        sys_path_line = next((lines[n.lineno - 1] for n in ast.walk(tree) if _touches_sys_path(n)), None)
    return CodeFacts(None, tuple(_public_names(tree)), tuple(_reexported_names(tree)), tuple(imports),
                     sys_path_line)


def public_names(code: str) -> list[str]:
    """Top-level def/class/assignment names not starting with '_' (imports excluded)."""
    return list(code_facts(code).public)


def reexported_names(code: str) -> list[str]:
    """The public tinytorch names a cell made only of imports (and a docstring) brings in.

    A file whose cells define nothing public is a re-export file (`tinytorch/autograd.py`):
    its `__all__` lists these, so that `from tinytorch.autograd import *` gives them.
    """
    return list(code_facts(code).reexports)


def _public_names(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found = [node.name]
        elif isinstance(node, ast.Assign):
            found = [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            found = [node.target.id]
        else:
            found = []
        names += [n for n in found if not n.startswith("_") and n not in names]
    return names


def _reexported_names(tree: ast.Module) -> list[str]:
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if not body or not all(isinstance(node, (ast.Import, ast.ImportFrom)) for node in body):
        return []
    names = [alias.asname or alias.name for node in body if isinstance(node, ast.ImportFrom)
             and (node.level or (node.module or "").split(".")[0] == "tinytorch") for alias in node.names]
    return [n for n in names if not n.startswith("_") and n != "*"]


def strip_solutions(text: str) -> str:
    """Remove solutions and hidden tests the way nbgrader's release does.

    Each `### BEGIN SOLUTION` ... `### END SOLUTION` block becomes a
    `raise NotImplementedError("<exercise>: not written yet")` stub at the marker's
    indentation (see `stub_line`); each hidden-tests block is deleted, markers included.
    """
    out, until = [], None
    for line in text.splitlines(keepends=True):
        marker = line.strip()
        if until is not None:
            until = None if marker == until else until
        elif marker == BEGIN_SOLUTION:
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE\n", f"{indent}{stub_line(out, len(indent))}\n"]
            until = END_SOLUTION
        elif marker == BEGIN_HIDDEN:
            until = END_HIDDEN
        else:
            out.append(line)
    return "".join(out)


_DEF = re.compile(r"^(\s*)(?:async\s+)?(def|class)\s+(\w+)")
_CELL_HEADER = re.compile(r"^# %%")


def exercise_name(lines_before: list[str], indent: int) -> str:
    """The def/class enclosing a solution block at `indent`: `Tensor.sum`, `add`, or 'exercise'."""
    names: list[str] = []
    for line in reversed(lines_before):
        if _CELL_HEADER.match(line):
            break
        match = _DEF.match(line)
        if match and len(match.group(1)) < indent:
            names.insert(0, match.group(3))
            indent = len(match.group(1))
            if indent == 0:
                break
    return ".".join(names) or "exercise"


STUB_MESSAGE = "not written yet"  # in every stub's message: how tito tells a stub from a real error


def stub_line(lines_before: list[str], indent: int) -> str:
    """What a stripped solution block becomes: an error that names the exercise, kindly."""
    name = exercise_name(lines_before, indent)
    return f'raise NotImplementedError("{name}: {STUB_MESSAGE}; replace this line with your code")'


def name_stubs(text: str) -> str:
    """Give nbgrader's bare `raise NotImplementedError()` stubs the exercise's name."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.strip() == "raise NotImplementedError()" and out and out[-1].strip() == "# YOUR CODE HERE":
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}{stub_line(out, len(indent))}" + ("\n" if line.endswith("\n") else "")
        out.append(line)
    return "".join(out)
