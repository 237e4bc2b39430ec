"""`tito course collect` against hostile submissions: links, zip bombs, forged and corrupt zips.

Each case is rejected with one line an instructor can act on, nothing of it is stored, and
nothing outside the submission is read. Marker `grading`; needs the `grade` extra (nbgrader).
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
import nbformat  # noqa: E402

from tito.collect import MAX_ENTRIES, collect_submissions  # noqa: E402
from tito.grading import init_course  # noqa: E402

pytestmark = pytest.mark.grading
REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = nbformat.writes(nbformat.v4.new_notebook()).encode()  # a valid notebook, matched by its name
MIB = 2**20


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course with modules 01 and 02 released; each test collects its own students into it."""
    course = tmp_path_factory.mktemp("collect") / "course"
    init_course(course)
    for folder in ("01_tensor", "02_autograd"):
        (course / "release" / folder).mkdir(parents=True)
    return course


@pytest.fixture
def collect(course, monkeypatch):
    monkeypatch.chdir(REPO)  # collect finds the reference modules from the repo

    def run(inbox: Path) -> tuple[list[str], list[str]]:
        return collect_submissions(course, inbox, replace=False)
    return run


def stored(course: Path, student: str) -> list[str]:
    return sorted(p.relative_to(course).as_posix() for p in (course / "submitted" / student).rglob("*.ipynb"))


def zeros_deflated(mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of `mib` MiB of zeros (about 1 KiB per MiB) and its CRC-32, built in a second."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every MiB
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(bytes(MIB), crc)
    return block * mib + compressor.flush(), crc


def raw_zip(path: Path, members: list[tuple[str, bytes, int, int]]) -> None:
    """Write (name, deflate stream, crc, declared size) members; zipfile cannot store a stream it did not make."""
    local, central = b"", b""
    for name, stream, crc, size in members:
        encoded = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(stream), size,
                               len(encoded), 0, 0, 0, 0, 0, len(local)) + encoded
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(stream), size,
                             len(encoded), 0) + encoded + stream
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0)
    path.write_bytes(local + central + end)


def test_links_in_a_submission_are_rejected_never_followed(tmp_path, course, collect):
    peer = tmp_path / "peer"
    (peer / "02_autograd").mkdir(parents=True)
    (peer / "tensor.ipynb").write_bytes(NOTEBOOK)  # a peer's notebook, or source/'s solution
    (peer / "02_autograd" / "autograd.ipynb").write_bytes(NOTEBOOK)
    inbox = tmp_path / "inbox"
    (inbox / "eve").mkdir(parents=True)
    (inbox / "eve" / "tensor.ipynb").symlink_to(peer / "tensor.ipynb")
    (inbox / "eve" / "02_autograd").symlink_to(peer / "02_autograd", target_is_directory=True)
    (inbox / "eve" / "secrets.ipynb").symlink_to("/etc/passwd")
    os.mkfifo(inbox / "eve" / "pipe.ipynb")  # reading it would hang collect
    (inbox / "mallet").symlink_to(peer, target_is_directory=True)

    accepted, rejected = collect(inbox)
    assert accepted == []
    text = "\n".join(rejected)
    assert f"eve/tensor.ipynb: a symbolic link (to {peer / 'tensor.ipynb'}); collect never follows links" in text
    assert "eve/02_autograd: a symbolic link" in text
    assert "eve/secrets.ipynb: a symbolic link (to /etc/passwd)" in text
    assert "eve/pipe.ipynb: not a regular file" in text
    assert "mallet: a symbolic link; collect never follows links" in text
    assert len(rejected) == 5, text
    assert stored(course, "eve") == stored(course, "mallet") == []


def test_zip_bomb_is_rejected_quickly_in_bounded_memory(tmp_path, course):
    """A 1.6 MiB zip that inflates to 1.6 GiB, collected in a process whose address space cannot hold it."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stream, crc = zeros_deflated(1600)
    raw_zip(inbox / "bomber.zip", [("work/tensor.ipynb", stream, crc, 1600 * MIB)])
    assert (inbox / "bomber.zip").stat().st_size < 2 * MIB
    probe = f"""
import json, resource, sys, time
from pathlib import Path
from tito.collect import collect_submissions
pages = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
cap = pages + 512 * {MIB} if hard == resource.RLIM_INFINITY else min(pages + 512 * {MIB}, hard)
resource.setrlimit(resource.RLIMIT_AS, (cap, hard))  # room for 512 MiB more, not for 1.6 GiB
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
accepted, rejected = collect_submissions(Path(sys.argv[1]), Path(sys.argv[2]), replace=False)
print(json.dumps({{"accepted": accepted, "rejected": rejected, "seconds": time.perf_counter() - start,
                  "grew_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}}))
"""
    proc = subprocess.run([sys.executable, "-c", probe, str(course), str(inbox)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["accepted"] == []
    assert result["rejected"] == ["bomber.zip: 1600.0 MiB uncompressed, over the 100 MiB cap for one submission: "
                                  "submit the notebooks only, with their outputs cleared"]
    assert result["seconds"] < 5, result
    assert result["grew_mib"] < 64, result
    assert stored(course, "bomber") == []


def test_oversized_member_is_rejected_before_reading_and_the_rest_collected(tmp_path, course, collect):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stream, crc = zeros_deflated(21)
    raw_zip(inbox / "hoarder.zip", [("tensor.ipynb", stream, crc, 21 * MIB),
                                    ("autograd.ipynb", zlib.compress(NOTEBOOK)[2:-4], zlib.crc32(NOTEBOOK),
                                     len(NOTEBOOK))])
    accepted, rejected = collect(inbox)
    assert rejected == ["hoarder/tensor.ipynb: 21.0 MiB, over the 20 MiB cap for one notebook: clear its outputs "
                        "(Kernel > Restart & Clear Output) and submit it again"]
    assert accepted == ["hoarder/autograd.ipynb -> submitted/hoarder/02_autograd/autograd.ipynb"]


def test_zip_with_too_many_members_is_one_rejected_line(tmp_path, course, collect):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with zipfile.ZipFile(inbox / "many.zip", "w") as archive:
        archive.writestr("tensor.ipynb", NOTEBOOK)
        for i in range(MAX_ENTRIES):
            archive.writestr(f"junk/{i}.txt", "x")
    accepted, rejected = collect(inbox)
    assert (accepted, rejected) == ([], [f"many.zip: holds more than {MAX_ENTRIES} files and folders, the cap for "
                                          "one submission: submit the notebooks only"])
    assert stored(course, "many") == []


def test_huge_member_list_is_refused_before_zipfile_reads_it(tmp_path, course, collect):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with zipfile.ZipFile(inbox / "lister.zip", "w") as archive:
        archive.writestr("tensor.ipynb", NOTEBOOK)
        for i in range(4000):
            archive.writestr(f"junk/{i:020d}", "")
    accepted, rejected = collect(inbox)
    assert accepted == [] and len(rejected) == 1, rejected
    assert rejected[0].startswith("lister.zip: its member list is 2") and "over the cap of 200 KiB" in rejected[0]


def test_zip64_is_refused(tmp_path, course, collect, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 0)  # makes zipfile write a ZIP64 end record
    with zipfile.ZipFile(inbox / "big.zip", "w") as archive:
        archive.writestr("tensor.ipynb", NOTEBOOK)
    accepted, rejected = collect(inbox)
    assert (accepted, rejected) == ([], ["big.zip: uses ZIP64 (for archives over 4 GiB or 65535 members), which a "
                                         "submission never needs: ask for the notebooks zipped again"])


def test_member_names_that_escape_the_folder_are_rejected(tmp_path, course, collect):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = ["/etc/tensor.ipynb", "../tensor.ipynb", "work/../../tensor.ipynb", "C:/work/tensor.ipynb",
             "work\\autograd.ipynb"]
    link = zipfile.ZipInfo("autograd.ipynb")
    link.external_attr = 0o120777 << 16  # a Unix symbolic link, as `zip -y` stores one
    with zipfile.ZipFile(inbox / "escaper.zip", "w") as archive:
        for name in names:
            archive.writestr(name, NOTEBOOK)
        archive.writestr(link, "/etc/passwd")
    accepted, rejected = collect(inbox)
    assert accepted == []
    assert rejected == [f"escaper.zip: member {name!r} leaves the submission folder (an absolute path, '..', a "
                        "drive letter or a backslash): zip the notebooks again with relative, forward-slash names"
                        for name in names] + [
        "escaper/autograd.ipynb: a symbolic link; collect never follows links: zip the notebook itself"]
    assert stored(course, "escaper") == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad crc", "lying size"])
def test_corrupt_zip_is_one_rejected_line(tmp_path, course, collect, damage):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    archive = inbox / "broken.zip"
    stream = zlib.compress(NOTEBOOK)[2:-4]
    if damage == "garbage":
        archive.write_bytes(b"PK\x03\x04 this is not a zip" * 10)
    elif damage == "truncated":
        raw_zip(archive, [("tensor.ipynb", stream, zlib.crc32(NOTEBOOK), len(NOTEBOOK))])
        archive.write_bytes(archive.read_bytes()[:60])
    elif damage == "bad crc":
        raw_zip(archive, [("tensor.ipynb", stream, zlib.crc32(NOTEBOOK) ^ 1, len(NOTEBOOK))])
    else:  # the member list declares 100 bytes; the stream inflates to 64 MiB
        bomb, crc = zeros_deflated(64)
        raw_zip(archive, [("tensor.ipynb", bomb, crc, 100)])
    accepted, rejected = collect(inbox)
    assert accepted == [] and len(rejected) == 1, rejected
    assert rejected[0].startswith("broken.zip: not a readable zip (") and rejected[0].endswith(
        "); ask for the notebooks zipped again"), rejected
    assert stored(course, "broken") == []


def test_folder_caps_are_checked_before_reading(tmp_path, course, collect):
    inbox = tmp_path / "inbox"
    (inbox / "crowd" / "junk").mkdir(parents=True)
    (inbox / "crowd" / "tensor.ipynb").write_bytes(NOTEBOOK)
    for i in range(MAX_ENTRIES):
        (inbox / "crowd" / "junk" / f"{i}.txt").write_text("x")
    (inbox / "heavy").mkdir()
    for name in ("tensor", "autograd", "a", "b", "c", "d"):
        with open(inbox / "heavy" / f"{name}.ipynb", "wb") as sparse:  # 19 MiB each, no disk or time spent
            sparse.truncate(19 * MIB)
    (inbox / "fat").mkdir()
    with open(inbox / "fat" / "tensor.ipynb", "wb") as sparse:
        sparse.truncate(30 * MIB)
    (inbox / "fat" / "autograd.ipynb").write_bytes(NOTEBOOK)

    accepted, rejected = collect(inbox)
    assert rejected == [
        f"crowd/: holds more than {MAX_ENTRIES} files and folders, the cap for one submission: "
        "submit the notebooks only",
        "fat/tensor.ipynb: 30.0 MiB, over the 20 MiB cap for one notebook: clear its outputs "
        "(Kernel > Restart & Clear Output) and submit it again",
        "heavy/: 114.0 MiB uncompressed, over the 100 MiB cap for one submission: submit the notebooks only, "
        "with their outputs cleared",
    ]
    assert accepted == ["fat/autograd.ipynb -> submitted/fat/02_autograd/autograd.ipynb"]
    assert stored(course, "crowd") == stored(course, "heavy") == []



def test_two_submissions_for_one_student_in_an_inbox_are_both_refused(tmp_path, course, collect):
    inbox = tmp_path / "inbox"
    (inbox / "twice").mkdir(parents=True)
    (inbox / "twice" / "tensor.ipynb").write_bytes(NOTEBOOK)
    with zipfile.ZipFile(inbox / "twice.zip", "w") as archive:
        archive.writestr("tensor.ipynb", nbformat.writes(nbformat.v4.new_notebook(cells=[
            nbformat.v4.new_code_cell("x = 1")])))
    accepted, rejected = collect(inbox)
    assert rejected == ["two submissions for twice in this inbox: twice/ and twice.zip; keep one"]
    assert accepted == [] and stored(course, "twice") == []


def test_replacing_a_graded_submission_marks_its_grade_out_of_date(tmp_path, course, monkeypatch):
    monkeypatch.chdir(REPO)
    inbox = tmp_path / "inbox"
    (inbox / "redo").mkdir(parents=True)
    (inbox / "redo" / "tensor.ipynb").write_bytes(NOTEBOOK)
    collect_submissions(course, inbox, replace=False)
    folder = course / "submitted" / "redo" / "01_tensor"
    (folder / "timestamp.txt").write_text("2026-01-01T00:00:00+00:00", encoding="utf-8")
    result = course / "tito" / "results" / "redo" / "01_tensor.json"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"student": "redo", "module": "01_tensor", "status": "graded", "score": 0,
                                  "max_score": 25, "reason": "", "tests_edited": [], "cells": []}))
    (course / "autograded" / "redo" / "01_tensor").mkdir(parents=True)

    (inbox / "redo" / "tensor.ipynb").write_bytes(nbformat.writes(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1")])).encode())
    accepted, rejected = collect_submissions(course, inbox, replace=True)
    assert rejected == [] and "(replaced;" in accepted[0]
    stale = json.loads(result.read_text())
    assert stale["status"] == "not graded" and stale["score"] is None
    assert stale["reason"].startswith("resubmitted after it was graded (0/25): autograde it again")
    assert not (course / "autograded" / "redo" / "01_tensor").exists()  # feedback must not show the old run
    assert (folder / "timestamp.txt").read_text() > "2026-01-01T00:00:00+00:00"
    kept = list((course / "tito" / "replaced" / "redo" / "01_tensor").glob("*-timestamp.txt"))
    assert [p.read_text() for p in kept] == ["2026-01-01T00:00:00+00:00"]  # the first one's time, on record


def test_a_submission_arriving_while_collect_runs_waits_for_the_next_run(tmp_path, course, collect, monkeypatch):
    """collect lists the inbox once: a student's second submission that lands after the listing is left for
    the next run, never collected on top of the first one that the duplicate check had passed alone."""
    inbox = tmp_path / "inbox"
    (inbox / "late").mkdir(parents=True)
    (inbox / "late" / "tensor.ipynb").write_bytes(NOTEBOOK)
    listed, arrived = Path.iterdir, []

    def iterdir(self):
        entries = list(listed(self))
        if self == inbox and not arrived:  # late.zip lands just after the inbox was first listed
            with zipfile.ZipFile(inbox / "late.zip", "w") as archive:
                archive.writestr("tensor.ipynb", nbformat.writes(nbformat.v4.new_notebook(cells=[
                    nbformat.v4.new_code_cell("x = 2")])))
            arrived.append(self)
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    accepted, rejected = collect(inbox)
    assert arrived, "the inbox was not listed with Path.iterdir: this test no longer simulates the race"
    assert rejected == [], rejected
    assert accepted == ["late/tensor.ipynb -> submitted/late/01_tensor/tensor.ipynb"]


@pytest.mark.parametrize("gone", ["late", "late.zip"])
def test_a_submission_leaving_while_collect_runs_is_named_not_a_traceback(tmp_path, course, collect, monkeypatch,
                                                                           gone):
    """An entry listed, then moved away before it is read: a clear line, and the others are still collected."""
    import tito.collect

    inbox = tmp_path / "inbox"
    for student in ("early", "late"):
        (inbox / student).mkdir(parents=True)
        (inbox / student / "tensor.ipynb").write_bytes(NOTEBOOK)
    if gone.endswith(".zip"):
        shutil.make_archive(str(inbox / "late"), "zip", inbox / "late")
        shutil.rmtree(inbox / "late")
    listed = tito.collect._list_inbox

    def list_then_remove(path):
        entries = listed(path)
        target = inbox / gone
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return entries

    monkeypatch.setattr(tito.collect, "_list_inbox", list_then_remove)
    accepted, rejected = collect(inbox)
    assert len(accepted) == 1 and accepted[0].startswith("early/tensor.ipynb -> submitted/early/"), accepted
    assert len(rejected) == 1 and rejected[0].startswith(f"{gone}: left the inbox while collect ran"), rejected


def test_an_entry_gone_before_it_is_looked_at_is_skipped(tmp_path, course, collect, monkeypatch):
    """Listed by iterdir, gone by the time collect lstat's it: left alone, as one arriving after the listing."""
    inbox = tmp_path / "inbox"
    for student in ("stays", "gone"):
        (inbox / student).mkdir(parents=True)
        (inbox / student / "tensor.ipynb").write_bytes(NOTEBOOK)
    lstat = Path.lstat

    def vanishing(self, *args, **kwargs):
        if self == inbox / "gone":
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return lstat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "lstat", vanishing)
    accepted, rejected = collect(inbox)
    assert len(accepted) == 1 and accepted[0].startswith("stays/tensor.ipynb -> submitted/stays/"), accepted
    assert rejected == [], rejected
