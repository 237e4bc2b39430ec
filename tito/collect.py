"""`tito course collect`: submissions (per-student folders or zips) -> submitted/<student>/<module>/.

Submissions are untrusted input: links are judged by lstat and never followed, member names that
would leave the folder are refused, and entries and bytes are capped before anything is read.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

import typer
from rich.console import Console
from rich.markup import escape

from tito import grading
from tito.errors import TitoError, user_errors
from tito.notebooks import ModuleFile, find_root

console = Console(soft_wrap=True, highlight=False)


# Caps on one submission (a student folder or zip): generous for notebooks, small enough that a
# hostile archive (a zip bomb, a folder of a million files) cannot exhaust collect's memory or time.
MAX_ENTRIES = 200  # files and folders in one submission
MAX_FILE_BYTES = 20 * 2**20  # one notebook, uncompressed
MAX_TOTAL_BYTES = 100 * 2**20  # all of one submission, uncompressed
# zipfile reads the whole central directory (the member list) into memory before we can count it:
# bound its size first, at an average of 1 KiB per member (name, extra fields, comment).
MAX_ZIP_DIRECTORY_BYTES = MAX_ENTRIES * 1024
_ZIP_END = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"  # precedes the end record when a ZIP64 end record holds the real sizes


@dataclass
class Submission:
    """What one entry of the inbox holds: the files to collect and the lines saying what was refused."""

    student: str  # "" when the entry is not a student folder or zip
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (name inside, bytes)
    rejected: list[str] = field(default_factory=list)


class _Refused(Exception):
    """The whole submission is refused; the message says why and what to do."""


def _list_inbox(path: Path) -> list[tuple[Path, int]]:
    """(entry, lstat mode) of each visible entry of the inbox, listed once: the duplicate check and the
    reading must see the same entries, though submissions may land or leave while collect runs."""
    listed = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        try:
            listed.append((entry, entry.lstat().st_mode))  # lstat: a link is judged as a link, never followed
        except FileNotFoundError:  # gone between the listing and lstat: left for the next run, as one arriving now
            continue
    return listed


def _is_zip(entry: Path, mode: int) -> bool:
    return stat.S_ISREG(mode) and entry.suffix.lower() == ".zip"


def _entries(path: Path, inbox: list[tuple[Path, int]]) -> Iterator[Submission]:
    """One Submission per student folder or zip, read one at a time so memory holds one student's caps."""
    for entry, mode in inbox:
        try:
            yield _read_entry(path, entry, mode)
        except FileNotFoundError:  # listed, then moved or deleted before (or while) it was read
            yield Submission("", rejected=[f"{entry.name}: left the inbox while collect ran; nothing of it was "
                                           "collected: run collect again once it is back"])


def _read_entry(path: Path, entry: Path, mode: int) -> Submission:
    if stat.S_ISLNK(mode):
        return Submission("", rejected=[f"{entry.name}: a symbolic link; collect never follows links: "
                                        f"copy the submission itself into {path}"])
    if stat.S_ISDIR(mode):
        return _read_folder(entry)
    if _is_zip(entry, mode):
        return _read_zip(entry)
    return Submission("", rejected=[f"{entry.name}: not a student folder or .zip; "
                                    "expected PATH/<student>/ or PATH/<student>.zip"])


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in ("__MACOSX", "__pycache__") for p in parts)


def _too_many() -> str:
    return f"holds more than {MAX_ENTRIES} files and folders, the cap for one submission: submit the notebooks only"


def _too_big(name: str, size: int) -> str:
    return (f"{name}: {size / 2**20:.1f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB cap for one notebook: "
            "clear its outputs (Kernel > Restart & Clear Output) and submit it again")


def _too_much(size: int) -> str:
    return (f"{size / 2**20:.1f} MiB uncompressed, over the {MAX_TOTAL_BYTES // 2**20} MiB cap for one "
            "submission: submit the notebooks only, with their outputs cleared")


def _walk(folder: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(name inside, path, lstat) of each visible entry under `folder`, links not followed.

    Streams each directory (os.scandir) and stops past the cap, so a folder of a million files costs
    no more than one of MAX_ENTRIES.
    """
    count = 0
    pending = [folder]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for entry in listing:
                path = Path(entry.path)
                inside = path.relative_to(folder)
                if _hidden(inside.parts):
                    continue
                count += 1
                if count > MAX_ENTRIES:
                    raise _Refused(_too_many())
                info = path.lstat()
                if stat.S_ISDIR(info.st_mode):
                    pending.append(path)
                yield inside.as_posix(), path, info


def _read_folder(folder: Path) -> Submission:
    found = Submission(folder.name)
    try:
        entries = sorted(_walk(folder))
        total = sum(info.st_size for _, _, info in entries if stat.S_ISREG(info.st_mode))
        if total > MAX_TOTAL_BYTES:
            raise _Refused(_too_much(total))
        for name, path, info in entries:
            where = f"{folder.name}/{name}"
            if stat.S_ISLNK(info.st_mode):
                found.rejected.append(f"{where}: a symbolic link (to {os.readlink(path)}); collect never follows "
                                      "links: submit the notebook itself")
            elif stat.S_ISDIR(info.st_mode):
                continue
            elif not stat.S_ISREG(info.st_mode):
                found.rejected.append(f"{where}: not a regular file; submit the notebook itself")
            elif info.st_size > MAX_FILE_BYTES:
                found.rejected.append(_too_big(where, info.st_size))
            else:
                # O_NOFOLLOW: should the file have become a link since lstat, refuse it rather than follow it.
                with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
                    data = handle.read(info.st_size + 1)  # never more than lstat said, so the caps hold
                if len(data) > info.st_size:
                    raise _Refused(f"{name} grew while it was read; run collect again once it is complete")
                found.files.append((name, data))
    except _Refused as why:
        return Submission(folder.name, rejected=[f"{folder.name}/: {why}"])
    return found


def _read_zip(archive: Path) -> Submission:
    found = Submission(archive.stem)
    try:
        with archive.open("rb") as handle:
            _check_zip_directory(handle)
            with zipfile.ZipFile(handle) as opened:
                members = opened.infolist()
                if len(members) > MAX_ENTRIES:
                    raise _Refused(_too_many())
                total = sum(member.file_size for member in members)
                if total > MAX_TOTAL_BYTES:
                    raise _Refused(_too_much(total))
                for member in members:
                    _read_member(opened, member, found, archive.name)
    except _Refused as why:
        return Submission(archive.stem, rejected=[f"{archive.name}: {why}"])
    except FileNotFoundError:  # gone, not corrupt: _entries says so
        raise
    except Exception as err:  # zipfile raises many types (BadZipFile, zlib.error, EOFError, ...): all mean corrupt
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        return Submission(archive.stem, rejected=[f"{archive.name}: not a readable zip ({reason}); "
                                                  "ask for the notebooks zipped again"])
    return found


def _read_member(opened: zipfile.ZipFile, member: zipfile.ZipInfo, found: Submission, archive: str) -> None:
    name = member.filename
    where = f"{found.student}/{name}"
    if _escapes(name):
        found.rejected.append(f"{archive}: member {name!r} leaves the submission folder (an absolute "
                              "path, '..', a drive letter or a backslash): zip the notebooks again with relative, "
                              "forward-slash names")
    elif member.is_dir() or _hidden(tuple(name.split("/"))):
        return
    elif stat.S_ISLNK(member.external_attr >> 16):
        found.rejected.append(f"{where}: a symbolic link; collect never follows links: zip the notebook itself")
    elif member.file_size > MAX_FILE_BYTES:
        found.rejected.append(_too_big(where, member.file_size))
    else:
        with opened.open(member) as stream:
            data = stream.read(member.file_size + 1)  # never more than the member list declared (and capped)
        if len(data) > member.file_size:
            raise _Refused(f"{name} inflates past its declared size: a corrupt or forged zip; "
                           "ask for the notebooks zipped again")
        found.files.append((name, data))


_DRIVE = re.compile(r"^[A-Za-z]:")


def _escapes(name: str) -> bool:
    """A member name that unpacking would place outside the submission folder."""
    return name.startswith("/") or "\\" in name or bool(_DRIVE.match(name)) or ".." in name.split("/")


def _check_zip_directory(handle: BinaryIO) -> None:
    """Refuse a zip whose member list is too large, before zipfile reads all of it into memory.

    Finds the end record as zipfile does: at the very end, else the last one in the final 64 KiB
    (a comment may follow it). ZIP64 moves the sizes elsewhere; notebooks never need it.
    """
    size = handle.seek(0, os.SEEK_END)
    tail_start = handle.seek(max(size - _ZIP_END.size - 0xFFFF, 0))
    tail = handle.read()
    at = len(tail) - _ZIP_END.size
    if not (at >= 0 and tail.startswith(_ZIP_END_SIGNATURE, at) and tail.endswith(b"\0\0")):
        at = tail.rfind(_ZIP_END_SIGNATURE)
    if at < 0 or len(tail) - at < _ZIP_END.size:
        return  # no end record: zipfile reports the zip as unreadable
    locator = tail_start + at - 20
    if locator >= 0 and handle.seek(locator) == locator and handle.read(4) == _ZIP64_LOCATOR:
        raise _Refused("uses ZIP64 (for archives over 4 GiB or 65535 members), which a submission never needs: "
                       "ask for the notebooks zipped again")
    directory_bytes = _ZIP_END.unpack_from(tail, at)[5]
    if directory_bytes > MAX_ZIP_DIRECTORY_BYTES:
        raise _Refused(f"its member list is {directory_bytes // 1024} KiB, over the cap of "
                       f"{MAX_ZIP_DIRECTORY_BYTES // 1024} KiB ({MAX_ENTRIES} members): submit the notebooks only")


def _which_module(name: str, modules: list[ModuleFile]) -> ModuleFile | None:
    parts = Path(name).parts
    for module in modules:
        if module.folder in parts or Path(name).stem == grading.notebook_name(module):
            return module
    return None


def _duplicates(inbox: list[tuple[Path, int]]) -> dict[str, str]:
    """student id -> the refusal, for each student with two entries in the inbox (alice/ and alice.zip):
    which one is meant is the instructor's call, so neither is collected."""
    entries: dict[str, list[str]] = {}
    for entry, mode in inbox:
        if stat.S_ISDIR(mode):  # lstat's mode: a link is neither a folder nor a zip
            entries.setdefault(grading.student_id(entry.name), []).append(f"{entry.name}/")
        elif _is_zip(entry, mode):
            entries.setdefault(grading.student_id(entry.stem), []).append(entry.name)
    return {sid: f"two submissions for {sid} in this inbox: {' and '.join(names)}; keep one"
            for sid, names in entries.items() if len(names) > 1}


def collect_submissions(course: Path, path: Path, replace: bool) -> tuple[list[str], list[str]]:
    """Import submissions; return (accepted lines, rejected lines)."""
    import nbformat

    modules = [m for m in grading.reference_modules(course, find_root())
               if (course / "release" / m.folder).is_dir()]
    if not modules:
        raise TitoError(f"no generated modules in {course}: run `tito course generate` first")
    expected = ", ".join(f"{grading.notebook_name(m)}.ipynb" for m in modules)
    accepted, rejected = [], []
    inbox = _list_inbox(path)
    duplicates = _duplicates(inbox)
    rejected.extend(duplicates.values())
    for submission in _entries(path, inbox):
        student = submission.student
        sid = grading.student_id(student) if student else ""
        if sid in duplicates:
            continue
        rejected.extend(submission.rejected)
        if not student:
            continue
        seen: set[str] = set()
        for name, data in submission.files:
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
        if (target.parent / "timestamp.txt").is_file():  # when the old one came in, for the record
            shutil.copy2(target.parent / "timestamp.txt", backup.with_name(f"{stamp}-timestamp.txt"))
        target.write_bytes(data)
        _stamp(target)
        _outdate_grade(course, target.parent.parent.name, target.parent.name)
        return f"{rel} (replaced; previous kept in {backup.relative_to(course).as_posix()})"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    _stamp(target)
    return rel


def _stamp(target: Path) -> None:
    """nbgrader's submission time (lateness): when this notebook was collected."""
    (target.parent / "timestamp.txt").write_text(datetime.now(timezone.utc).isoformat(), encoding="utf-8")


def _outdate_grade(course: Path, sid: str, module: str) -> None:
    """The old submission's grade is not the new one's: the report says so (and what it was) until
    autograde runs again, and feedback has no autograded notebook of the old one to render."""
    job = grading.Job(course, course, sid, module, 0, 0)
    old = grading.read_result(job.result_path())
    if old is not None:
        score, most = old.get("score"), old.get("max_score")
        was = f" ({score:g}/{most:g})" if isinstance(score, (int, float)) and isinstance(most, (int, float)) else ""
        grading.write_result(job, {"student": sid, "module": module, "status": "not graded", "score": None,
                                   "max_score": None, "tests_edited": [], "cells": [],
                                   "reason": f"resubmitted after it was {old.get('status')}{was}: autograde it again"})
    autograded = course / "autograded" / sid / module
    if autograded.is_dir():
        shutil.rmtree(autograded)


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
