"""Open the built book in headless Chromium: the landing page and a module page render with
their title, headings and code cells. Screenshots land in the test's tmp dir.

Needs Debian's `chromium` (apt-get install -y chromium); skipped, with the reason, without it.
"""

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import jupytext
import pytest

from tito.notebooks import list_modules

from .conftest import ROOT

pytestmark = pytest.mark.book
bs4 = pytest.importorskip("bs4", reason="beautifulsoup4 comes with jupyter-book: pip install -e '.[book]'")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("chromium not on PATH (Debian: apt-get install -y chromium)", allow_module_level=True)

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
WINDOW = (1280, 1000)
MODULE = list_modules(ROOT)[0]  # 01_tensor


def chromium(page: Path, *args: str, stdout=subprocess.DEVNULL) -> None:
    # stdout goes to a file, never a pipe: Chromium's helper processes can hold a pipe open
    # after the browser exits, and a reader would wait for them forever.
    with tempfile.TemporaryDirectory() as profile:
        command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
        proc = subprocess.run(command, stdout=stdout, stderr=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, f"chromium exited with {proc.returncode} on {page}"


def dom(page: Path, tmp_path: Path) -> "bs4.BeautifulSoup":
    """The page's DOM after Chromium has loaded it and run its scripts."""
    out = tmp_path / f"{page.stem}.dom.html"
    with out.open("w") as handle:
        chromium(page, "--dump-dom", stdout=handle)
    return bs4.BeautifulSoup(out.read_text(encoding="utf-8"), "html.parser")


def screenshot(page: Path, tmp_path: Path) -> Path:
    png = tmp_path / f"{page.stem}.png"
    chromium(page, f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={png}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    assert struct.unpack(">II", data[16:24]) == WINDOW, f"{png} is not {WINDOW[0]}x{WINDOW[1]}"
    assert len(data) > 30_000, f"{png} is only {len(data)} bytes: a blank page?"
    print(f"\nscreenshot: {png}")
    return png


def text(tag) -> str:
    """A heading's visible text, without Sphinx's '#' permalink."""
    return re.sub(r"\s+", " ", tag.get_text()).replace("#", "").strip()


def plain(markdown: str) -> str:
    return re.sub(r"[`*_]", "", markdown).strip()


def test_landing_page(student_book, tmp_path):
    page = student_book / "intro.html"  # index.html only redirects here
    soup = dom(page, tmp_path)
    assert soup.title and soup.title.get_text().strip().startswith("TinyTorch"), f"title: {soup.title}"
    assert [text(h) for h in soup.select("article h1")] == ["TinyTorch"]
    headings = [text(h) for h in soup.select("article h2")]
    assert headings == ["Modules", "Start as a student", "Start as an instructor"], headings
    links = {a.get("href") for a in soup.select("article table a")}
    for module in list_modules(ROOT):
        assert f"modules/{module.folder}.html" in links, f"landing page table lacks {module.folder}"
    screenshot(page, tmp_path)


def test_module_page(student_book, tmp_path):
    page = student_book / "modules" / f"{MODULE.folder}.html"
    notebook = jupytext.read(MODULE.path, fmt="py:percent")
    markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown").splitlines()
    title = plain(next(line[2:] for line in markdown if line.startswith("# ")))
    sections = [plain(line[3:]) for line in markdown if line.startswith("## ")]
    code = [c.source for c in notebook.cells if c.cell_type == "code" and c.source.strip()]

    soup = dom(page, tmp_path)
    assert soup.title.get_text().strip().startswith(title), f"title {soup.title.get_text()!r}, expected {title!r}"
    assert [text(h) for h in soup.select("article h1")] == [title]
    assert [text(h) for h in soup.select("article h2")] == sections, "the page's sections differ from the module's"
    cells = soup.select("article div.cell div.cell_input pre")
    assert len(cells) == len(code), f"{len(cells)} code cells on the page, {len(code)} in {MODULE.rel}"
    for cell, source in zip(cells, code):
        first = source.strip().splitlines()[0].strip()
        assert first in cell.get_text(), f"code cell should start with {first!r}"
    screenshot(page, tmp_path)
