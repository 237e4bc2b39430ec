"""`tito course collect`: submissions (per-student folders or zips) -> submitted/<student>/<module>/."""

from __future__ import annotations

import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from tito import grading
from tito.errors import TitoError, user_errors
from tito.notebooks import ModuleFile, find_root

console = Console(soft_wrap=True, highlight=False)


def _entries(path: Path) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """(student name, [(file name inside, bytes)]) per student folder or zip."""
    found = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            files = [(p.relative_to(entry).as_posix(), p.read_bytes()) for p in sorted(entry.rglob("*"))
                     if p.is_file() and not _hidden(p.relative_to(entry).parts)]
            found.append((entry.name, files))
        elif entry.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(entry) as archive:
                    files = [(i.filename, archive.read(i)) for i in archive.infolist()
                             if not i.is_dir() and not _hidden(Path(i.filename).parts)]
            except zipfile.BadZipFile:
                found.append((entry.stem, [(entry.name, b"")]))
                continue
            found.append((entry.stem, files))
        else:
            found.append(("", [(entry.name, b"")]))
    return found


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in ("__MACOSX", "__pycache__") for p in parts)


def _which_module(name: str, modules: list[ModuleFile]) -> ModuleFile | None:
    parts = Path(name).parts
    for module in modules:
        if module.folder in parts or Path(name).stem == grading.notebook_name(module):
            return module
    return None


def collect_submissions(course: Path, path: Path, replace: bool) -> tuple[list[str], list[str]]:
    """Import submissions; return (accepted lines, rejected lines)."""
    import nbformat

    modules = [m for m in grading.reference_modules(course, find_root())
               if (course / "release" / m.folder).is_dir()]
    if not modules:
        raise TitoError(f"no generated modules in {course}: run `tito course generate` first")
    expected = ", ".join(f"{grading.notebook_name(m)}.ipynb" for m in modules)
    accepted, rejected = [], []
    for student, files in _entries(path):
        if not student:
            rejected.append(f"{files[0][0]}: not a student folder or .zip; expected PATH/<student>/ or PATH/<student>.zip")
            continue
        sid = grading.student_id(student)
        seen: set[str] = set()
        for name, data in files:
            where = f"{student}/{name}"
            if not name.lower().endswith(".ipynb"):
                rejected.append(f"{where}: not a notebook (.ipynb); submit the notebooks, not other files")
                continue
            try:
                notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
                nbformat.validate(notebook)
            except Exception as err:  # nbformat raises several types; all mean "not a notebook"
                rejected.append(f"{where}: not a valid notebook: {str(err).splitlines()[0][:200]}")
                continue
            module = _which_module(name, modules)
            if module is None:
                rejected.append(f"{where}: belongs to no module of this course (expected one of {expected})")
                continue
            if module.folder in seen:
                rejected.append(f"{where}: a second notebook for {module.folder} in the same submission")
                continue
            seen.add(module.folder)
            target = course / "submitted" / sid / module.folder / f"{grading.notebook_name(module)}.ipynb"
            line = _store(course, target, data, replace)
            (accepted if not line.startswith("!") else rejected).append(f"{where} -> {line.lstrip('!')}")
        if seen:
            with grading.gradebook(course) as gb:
                gb.update_or_create_student(sid, first_name=student, last_name="")
    return accepted, rejected


def _store(course: Path, target: Path, data: bytes, replace: bool) -> str:
    rel = target.relative_to(course).as_posix()
    if target.exists():
        if target.read_bytes() == data:
            return f"{rel} (unchanged)"
        if not replace:
            return f"!{rel} already holds a different submission; pass --replace to replace it (the old one is kept)"
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        backup = course / "tito" / "replaced" / target.relative_to(course / "submitted").parent / f"{stamp}-{target.name}"
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, backup)
        target.write_bytes(data)
        return f"{rel} (replaced; previous kept in {backup.relative_to(course).as_posix()})"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    (target.parent / "timestamp.txt").write_text(datetime.now(timezone.utc).isoformat(), encoding="utf-8")
    return rel


def collect_command(
    path: Path = typer.Argument(..., help="Folder of per-student folders or <student>.zip files."),
    course: Path = typer.Option(Path("course"), "--course", help="The course folder (created by `generate`)."),
    replace: bool = typer.Option(False, "--replace", help="Replace earlier submissions (keeping a copy)."),
) -> None:
    """Import submissions into nbgrader's submitted/<student>/<module>/ layout."""
    with user_errors():
        if not path.is_dir():
            raise TitoError(f"{path} is not a folder")
        accepted, rejected = collect_submissions(course.absolute(), path, replace)
    for line in accepted:
        console.print(f"[green]collected[/] {escape(line)}")
    for line in rejected:
        console.print(f"[red]rejected[/] {escape(line)}")
    console.print(f"{len(accepted)} collected, {len(rejected)} rejected")
    if rejected:
        raise typer.Exit(1)
