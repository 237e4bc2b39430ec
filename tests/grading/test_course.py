"""End to end: build a course from real modules, release it, collect awkward submissions,
autograde, report, feedback — and assert every number and status.

Marker `grading`; needs the `grade` extra (nbgrader), skipped without it.
"""

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
import nbformat  # noqa: E402

from tito import sandbox  # noqa: E402
from tito.grading import student_id  # noqa: E402
from tito.notebooks import to_notebook  # noqa: E402
from tito.notebooks import list_modules, read_notebook  # noqa: E402

pytestmark = pytest.mark.grading
REPO = Path(__file__).resolve().parents[2]
MODULES = ["01", "02"]
TIMEOUT = 8  # seconds per cell
UNICODE_NAME = "José Núñez Ærø"
# Sandboxed where the machine can (test_hostile.py tests the sandbox and the refusal).
UNSAFE = ["--unsafe-no-sandbox"] if sandbox.why_unavailable() else []


def tito(*args: str, cwd: Path = REPO, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "tito", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800)
    if check:
        assert proc.returncode == 0, f"tito {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def modules():
    chosen = [m for m in list_modules(REPO) if f"{m.number:02d}" in MODULES]
    assert len(chosen) == len(MODULES), f"expected modules {MODULES} in {REPO / 'modules'}"
    return chosen


def points(module) -> int:
    return sum(c.nbgrader["points"] for c in read_notebook(module).cells if c.is_graded)


def solution_notebook(module):
    return to_notebook(module.path.read_text(encoding="utf-8"))


def change_cell(notebook, grade_id: str, edit) -> None:
    cells = [c for c in notebook.cells if (c.metadata.get("nbgrader") or {}).get("grade_id") == grade_id]
    assert cells, f"no cell {grade_id!r}"
    cells[0].source = edit(cells[0].source)


def first_id(module, graded: bool) -> str:
    cells = [c for c in read_notebook(module).cells if c.nbgrader.get("grade" if graded else "solution")]
    return cells[0].nbgrader["grade_id"]


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Generate, release, start the release's notebooks, collect the submissions, autograde."""
    base = tmp_path_factory.mktemp("course")
    course = base / "course"
    tito("course", "generate", *MODULES, "--course", str(course))
    release = base / "release"
    tito("course", "release", "--out", str(release), *MODULES)
    for number in MODULES:
        tito("module", "start", number, cwd=release)
    tensor, autograd = modules()
    untouched = {m.folder: nbformat.read(release / "modules" / m.folder / f"{m.path.stem}.ipynb", as_version=4)
                 for m in (tensor, autograd)}

    inbox = base / "inbox"
    write = lambda student, module, nb: _write(inbox / student / module.folder / f"{module.path.stem}.ipynb", nb)  # noqa: E731
    for m in (tensor, autograd):
        write("ada", m, solution_notebook(m))
        write("untouched", m, untouched[m.folder])
    cheat = nbformat.from_dict(json.loads(json.dumps(untouched[tensor.folder])))
    change_cell(cheat, first_id(tensor, graded=True), lambda _: "assert True")
    write("cheater", tensor, cheat)
    looper = solution_notebook(autograd)
    change_cell(looper, first_id(autograd, graded=False), lambda s: s + "\n\nwhile True:\n    pass\n")
    write("looper", autograd, looper)
    crasher = solution_notebook(tensor)
    change_cell(crasher, first_id(tensor, graded=False), lambda s: s + "\n\nimport os\nos._exit(1)\n")
    write("crasher", tensor, crasher)
    with zipfile.ZipFile(inbox / f"{UNICODE_NAME}.zip", "w") as archive:
        for m in (tensor, autograd):
            archive.writestr(f"work/{m.path.stem}.ipynb", nbformat.writes(solution_notebook(m)))
    collected = tito("course", "collect", str(inbox), "--course", str(course))

    start = time.perf_counter()
    graded = tito("course", "autograde", "--course", str(course), "--timeout", str(TIMEOUT), "-j", "2", *UNSAFE)
    seconds = time.perf_counter() - start
    return {"base": base, "course": course, "release": release, "collect": collected, "autograde": graded,
            "seconds": seconds, "inbox": inbox}


def _write(path: Path, notebook) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def results(course: Path) -> dict:
    path = course.parent / "scores.csv"
    tito("course", "report", "--course", str(course), "--csv", str(path))
    with open(path, encoding="utf-8") as handle:
        return {(row["student"], row["module"]): row for row in csv.DictReader(handle)}


def test_release_holds_no_solution_text(course):
    release = course["release"]
    assert (release / "tinytorch" / "core" / "tensor.py").is_file()
    assert (release / "README.md").is_file() and (release / "tito" / "main.py").is_file()
    assert not (release / "tests" / "grading").exists(), "grading tests need the solutions"
    for module in modules():
        text = module.path.read_text(encoding="utf-8")
        solutions = text.split("### BEGIN SOLUTION")[1:]
        body = [line.strip() for block in solutions for line in block.split("### END SOLUTION")[0].splitlines()]
        distinctive = [line for line in body if len(line) > 30 and not line.startswith("#") and line not in
                       (release / "modules" / module.folder / module.path.name).read_text()]
        assert distinctive, f"{module.rel}: found no solution lines to look for"
        for line in distinctive:
            grep = subprocess.run(["grep", "-rlF", "--", line, str(release)], capture_output=True, text=True)
            assert grep.stdout == "", f"solution text {line!r} of {module.rel} found in: {grep.stdout}"
        released = (release / "modules" / module.folder / module.path.name).read_text()
        assert ": not written yet; replace this line with your code\")" in released  # named stubs


def test_release_student_side(course):
    release = course["release"]
    listing = tito("module", "list", cwd=release).stdout
    assert "01_tensor" in listing and "in progress" in listing, listing  # started, stubs left
    refused = tito("module", "complete", "02", cwd=release, check=False)
    assert refused.returncode == 2
    assert "module 01 (tensor) is not complete: `tito module start 01`" in refused.stderr, refused.stderr
    failing = tito("module", "complete", "01", cwd=release, check=False)
    assert failing.returncode == 1 and "not complete yet" in failing.stdout, failing.stdout


def test_collect_rejects_bad_files_and_never_overwrites(course):
    assert "0 rejected" in course["collect"].stdout
    inbox = course["base"] / "inbox2"
    (inbox / "mallory").mkdir(parents=True)
    (inbox / "mallory" / "notes.txt").write_text("hello")
    (inbox / "mallory" / "tensor.ipynb").write_text("{not json")
    _write(inbox / "mallory" / "mystery.ipynb", nbformat.v4.new_notebook())
    changed = nbformat.read(course["course"] / "submitted" / "ada" / "01_tensor" / "tensor.ipynb", as_version=4)
    changed.cells[0].source += "\n\nresubmitted"
    _write(inbox / "ada" / "tensor.ipynb", changed)
    out = tito("course", "collect", str(inbox), "--course", str(course["course"]), check=False)
    assert out.returncode == 1
    text = " ".join(out.stdout.split())
    assert "notes.txt: not a notebook" in text
    assert "tensor.ipynb: not a valid notebook" in text
    assert "mystery.ipynb: belongs to no module of this course" in text
    assert "already holds a different submission; pass --replace" in text
    stored = course["course"] / "submitted" / "ada" / "01_tensor" / "tensor.ipynb"
    assert "resubmitted" not in stored.read_text()


def test_scores_and_statuses(course):
    tensor, autograd = modules()
    full = {tensor.folder: points(tensor), autograd.folder: points(autograd)}
    rows = results(course["course"])
    t, a = tensor.folder, autograd.folder

    def row(student, module):
        return rows[(student, module)]

    for student in ["ada", UNICODE_NAME]:
        for module in (t, a):
            assert row(student, module)["status"] == "graded", row(student, module)
            assert row(student, module)["score"] == str(full[module]), row(student, module)
            assert row(student, module)["max_score"] == str(full[module])
    assert row(UNICODE_NAME, t)["student_id"] == student_id(UNICODE_NAME) != UNICODE_NAME
    for module in (t, a):
        assert (row("untouched", module)["status"], row("untouched", module)["score"]) == ("graded", "0")
        assert row("untouched", module)["tests_edited"] == ""
    cheater = row("cheater", t)
    assert (cheater["status"], cheater["score"]) == ("graded", "0"), cheater  # the original test ran
    assert cheater["tests_edited"] == first_id(tensor, graded=True)
    assert row("cheater", a)["status"] == "not submitted"
    looper = row("looper", a)
    assert looper["status"] == "timed out" and f"past {TIMEOUT} s" in looper["reason"], looper
    assert first_id(autograd, graded=False) in looper["reason"], looper
    assert 0 <= float(looper["score"]) <= full[a], looper  # graded up to and past the cut
    crasher = row("crasher", t)
    assert crasher["status"] == "kernel died" and crasher["score"] == "", crasher
    assert "kernel died while running" in crasher["reason"], crasher

    report = tito("course", "report", "--course", str(course["course"])).stdout
    assert "kernel died" in report and "timed out" in report and "(tests edited)" in report
    assert UNICODE_NAME in report


def test_feedback_hides_hidden_tests(course):
    tito("course", "feedback", "--course", str(course["course"]))
    tensor = modules()[0]
    html = (course["course"] / "feedback" / "ada" / tensor.folder / f"{tensor.path.stem}.html").read_text()
    hidden = "row sums expected"  # an assertion message inside 01's hidden tests
    source = tensor.path.read_text()
    assert hidden in source.split("### BEGIN HIDDEN TESTS", 1)[1].split("### END HIDDEN TESTS", 1)[0]
    assert "test-unbroadcast" in html or "unbroadcast" in html
    assert hidden not in html, "feedback shows hidden tests"
    assert not (course["course"] / "feedback" / "crasher").exists()


def test_wall_time_per_submission(course):
    per = {}
    for path in (course["course"] / "tito" / "results").glob("*/*.json"):
        result = json.loads(path.read_text())
        per[(result["student"], result["module"])] = result["wall_seconds"]
    print(f"\nautograde: {len(per)} submissions in {course['seconds']:.1f} s (2 jobs)")
    for key, seconds in sorted(per.items()):
        print(f"  {key[0]:>30} {key[1]}: {seconds:.1f} s")
    assert len(per) == 9
    assert course["seconds"] < 240


def test_check_finds_a_graded_cell_that_tests_nothing(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "tito", repo / "tito", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "pyproject.toml").write_text('[project]\nname = "fixture"\n')
    folder = repo / "modules" / "01_fixture"
    folder.mkdir(parents=True)
    (folder / "fixture.py").write_text(FIXTURE)
    out = tito("course", "check", "--timeout", "20", *UNSAFE, cwd=repo, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "graded cells pass on the stripped release" in out.stdout and "test-weak" in out.stdout, out.stdout
    assert "test-scale" not in out.stdout.split("defect", 1)[1], out.stdout


@pytest.mark.slow
@pytest.mark.skipif(any(importlib.util.find_spec(name) is None for name in ("numba", "ml_dtypes")),
                    reason="module 10's graded cells need numba-cuda and ml_dtypes: pip install -e "
                           "'.[kernels,bfloat16]' (tests/grading/test_standalone.py checks the other modules)")
def test_check_every_real_module():
    """`tito course check --all`: no giveaways, solutions full marks, release 0, for the whole course."""
    out = tito("course", "check", "--all", "--timeout", "120", *UNSAFE)
    assert "every module checked" in out.stdout, out.stdout


FIXTURE = '''\
# %%
#| default_exp fixture

# %% nbgrader={"grade": false, "grade_id": "scale", "locked": false, "schema_version": 3, "solution": true}
#| export
def scale(x, k):
    ### BEGIN SOLUTION
    return x * k
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test-scale", "locked": true, "points": 2, "schema_version": 3, "solution": false}
from tinytorch.fixture import scale as exported
assert exported(1, 0) == 0 and scale(2, 3) == 6, "scale(2, 3) should be 6"

# %% nbgrader={"grade": true, "grade_id": "test-weak", "locked": true, "points": 1, "schema_version": 3, "solution": false}
assert callable(scale)
'''
