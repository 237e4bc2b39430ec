"""`tito book build`: the student and instructor editions build, offline, with every module."""

import re
import shutil
from pathlib import Path

import pytest

from tito.book import build
from tito.errors import TitoError
from tito.notebooks import list_modules

from .conftest import CLI, ROOT, hidden_lines

pytestmark = pytest.mark.book
bs4 = pytest.importorskip("bs4", reason="beautifulsoup4 comes with jupyter-book: pip install -e '.[book]'")

MODULES = list_modules(ROOT)
REMOTE = re.compile(r"""<(?:script|link)\b[^>]*(?:src|href)=["'](https?:)?//""")


def code_lines(page: Path) -> set[str]:
    """Every stripped line of every code block of a built page."""
    soup = bs4.BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
    return {line.strip() for pre in soup.find_all("pre") for line in pre.get_text().splitlines()}


def test_every_module_has_a_page(student_book):
    landing = (student_book / "intro.html").read_text(encoding="utf-8")
    assert 'url=intro.html' in (student_book / "index.html").read_text(encoding="utf-8")
    for module in MODULES:
        page = student_book / "modules" / f"{module.folder}.html"
        assert page.is_file(), f"no page for {module.rel}: expected {page}"
        assert f'href="modules/{module.folder}.html"' in landing, f"the landing page does not link {module.folder}"


@pytest.mark.parametrize("module", MODULES, ids=[m.folder for m in MODULES])
def test_student_pages_hold_no_solution_lines(student_book, instructor_book, module):
    secret = hidden_lines(module.path.read_text(encoding="utf-8"))
    if not secret:
        pytest.skip(f"{module.rel} has no solution lines that its release lacks")
    leaked = secret & code_lines(student_book / "modules" / f"{module.folder}.html")
    assert not leaked, f"the student page of {module.folder} shows solution lines: {sorted(leaked)[:5]}"
    # The same search finds them in the instructor edition, so it can fail.
    shown = secret & code_lines(instructor_book / "modules" / f"{module.folder}.html")
    assert shown == secret, f"instructor page of {module.folder} lacks solution lines: {sorted(secret - shown)[:5]}"


def test_references_are_built(student_book):
    cli = bs4.BeautifulSoup((student_book / "reference" / "cli.html").read_text(encoding="utf-8"), "html.parser").get_text()
    for command in ["export", "test", "book build"]:
        assert f"tito {command}" in cli, f"CLI reference lacks `tito {command}`"
    api = (student_book / "reference" / "api" / "tinytorch.nn.html").read_text(encoding="utf-8")
    assert "class Linear" in bs4.BeautifulSoup(api, "html.parser").get_text(), "API reference lacks nn.Linear"


def test_pages_load_nothing_remote_but_mathjax_for_math(student_book):
    """Offline reading: the only asset fetched at view time is MathJax (from a CDN), and only
    when some page has LaTeX math (Sphinx adds it to that page and to the pages whose table of
    contents includes it, such as the landing page). See book/README.md."""
    pages = sorted(student_book.rglob("*.html"))
    book_has_math = any('class="math' in page.read_text(encoding="utf-8") for page in pages)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for tag in REMOTE.finditer(text):
            line = text[tag.start() : text.index(">", tag.start()) + 1]
            assert "mathjax" in line.lower(), f"{page.name} loads a remote asset: {line}"
            assert book_has_math, f"{page.name} loads MathJax but no page of the book has math"


def test_build_leaves_book_folder_untouched(student_book):
    tracked = {p for p in (ROOT / "book").rglob("*") if "_build" not in p.parts}
    assert {p.name for p in tracked if p.is_file()} <= {"_config.yml", "intro.md", "README.md"}, (
        f"generated files in book/: {sorted(p.name for p in tracked)}"
    )


def test_a_broken_cross_reference_fails_the_build(tmp_path):
    pytest.importorskip("jupyter_book", reason="jupyter-book not installed: pip install -e '.[book]'")
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "book", repo / "book", ignore=shutil.ignore_patterns("_build"))
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    shutil.copytree(ROOT / "modules" / "02_autograd", repo / "modules" / "02_autograd")
    (repo / "tinytorch").mkdir()
    (repo / "tinytorch" / "tiny.py").write_text('__all__ = ["f"]\n\n\ndef f(x):\n    """Doubles x."""\n')
    intro = repo / "book" / "intro.md"
    intro.write_text(intro.read_text(encoding="utf-8") + "\nSee {doc}`the missing page <modules/99_nothing>`.\n")
    with pytest.raises(TitoError, match="99_nothing"):
        build(repo, tmp_path / "out", CLI)
