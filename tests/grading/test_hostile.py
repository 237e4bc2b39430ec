"""Hostile submissions, graded end to end in one run beside honest students (marker `grading`).

One small fixture module (an exercise, a graded cell with a hidden test, a graded cell using
NumPy). Every attacker writes the wrong answer and then tries to score anyway, to read or show
a secret, to change something outside its sandbox, to outlive grading, or to break the run.
Asserted: nobody scores above their honest score, no secret reaches a notebook, feedback or
report, no file outside the sandbox changes, nothing started is alive after `autograde`
returns, and the honest students are graded exactly. Needs bubblewrap (skipped where the
machine cannot sandbox); the refusal without a sandbox is tested everywhere.
"""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
import nbformat  # noqa: E402

from tito import sandbox  # noqa: E402
from tito.grading import HIDDEN_FAILED, student_id  # noqa: E402
from tito.notebooks import to_notebook  # noqa: E402

pytestmark = pytest.mark.grading
REPO = Path(__file__).resolve().parents[2]
HIDDEN_SECRET = "hidden-secret-7f3a"          # in a hidden test's message
SOLUTION_SECRET = "solution-secret-91c2"      # in the solution: source/ only
PEER_SECRET = "peer-secret-5d0e"              # in the honest student's own notebook
ENV_SECRET = "env-secret-c4b8"                # in the instructor's environment
DAEMON_MARK = "tito-hostile-daemon-2b6f"
CELL_TIMEOUT = 6
BUDGET = 40
MEMORY_MB = 768

MODULE = '''\
# %%
#| default_exp fixture
import numpy as np

# %% nbgrader={"grade": false, "grade_id": "scale", "locked": false, "schema_version": 3, "solution": true}
#| export
def scale(x, k):
    ### BEGIN SOLUTION
    # SOLUTION_SECRET
    return x * k
    ### END SOLUTION

# %% nbgrader={"grade": true, "grade_id": "test-scale", "locked": true, "points": 2, "schema_version": 3, "solution": false}
assert scale(2, 3) == 6, "scale(2, 3) should be 6"
### BEGIN HIDDEN TESTS
assert scale(0, 5) == 0, "HIDDEN_SECRET: scale(0, 5) should be 0"
### END HIDDEN TESTS
print("scale: ok")

# %% nbgrader={"grade": true, "grade_id": "test-array", "locked": true, "points": 1, "schema_version": 3, "solution": false}
assert isinstance(scale(np.ones(2), 3), np.ndarray), "scale of an array is an array"
assert np.allclose(scale(np.ones(2), 3), 3), "scale(ones, 3) should be all 3"
print("array: ok")
'''.replace("SOLUTION_SECRET", SOLUTION_SECRET).replace("HIDDEN_SECRET", HIDDEN_SECRET)
FULL = 3
WRONG = "return x + k"   # the attackers' answer: scores 0 honestly


def _attacks(course: Path, repo: Path) -> dict[str, str]:
    """student -> code appended to a wrong solution (the strongest attacker knows every path)."""
    site = sysconfig.get_paths()["purelib"]
    peer = course / "submitted" / "full" / "01_fixture" / "fixture.ipynb"
    spy_paths = [course / "source" / "01_fixture" / "fixture.ipynb", course / "gradebook.db", peer,
                 repo / "modules" / "01_fixture" / "fixture.py", Path("..") / "source"]
    return {
        "excepthook": "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)",
        "transformer": "get_ipython().input_transformers_post.append(\n"
                       "    lambda lines: ['pass\\n'] if any('assert' in l for l in lines) else lines)",
        "hook": "get_ipython().events.register('pre_run_cell', lambda info: print('LEAK', info.raw_cell))",
        "numpy": "import numpy\nnumpy.allclose = lambda *a, **k: True\nnumpy.ndarray = object",
        "builtins": "import builtins\nbuiltins.isinstance = lambda *a: True",
        "shadow": "def isinstance(*a):\n    return True\nclass np:\n    ndarray = object\n"
                  "    allclose = staticmethod(lambda *a, **k: True)",
        # an ndarray whose class answers np.allclose itself (its __array_function__)
        "overrides": "import numpy as np\nclass _Yes(np.ndarray):\n"
                     "    def __array_function__(self, func, types, args, kwargs):\n        return True\n"
                     "_wrong = scale\ndef scale(x, k):\n    y = _wrong(x, k)\n"
                     "    return np.asarray(y).view(_Yes) if isinstance(x, np.ndarray) else y",
        "thread": "import threading, time, numpy\n"
                  "def _patch():\n    while True:\n        numpy.allclose = lambda *a, **k: True\n        time.sleep(0.01)\n"
                  "threading.Thread(target=_patch, daemon=True).start()",
        "forger": "import json, os\nfor fd in range(1, 10):\n    try:\n"
                  "        os.write(fd, (json.dumps({'nonce': 'x', 'cells': {'test-scale': {'passed': True}, "
                  "'test-array': {'passed': True}}, 'tampered': ''}) + '\\n').encode())\n"
                  "    except OSError:\n        pass",
        "spy": "import os\nprint('ENV', dict(os.environ))\n"
               f"for p in {[str(p) for p in spy_paths]!r}:\n"
               "    try:\n        print('READ', p, open(p, 'rb').read()[:100000])\n"
               "    except OSError as e:\n        print('DENIED', p, e)\n"
               "for top in ['/', '/root', '/home', '/work', '/tmp']:\n"
               "    try:\n        print('LIST', top, os.listdir(top))\n    except OSError:\n        pass",
        "copier": "import shutil\n"
                  f"for i, p in enumerate({[str(p) for p in spy_paths[:3]]!r}):\n"
                  "    try:\n        shutil.copy(p, f'stolen-{i}')\n    except OSError:\n        pass\n"
                  "open('dropped.txt', 'w').write('from the student')",
        "vandal": "import os, shutil, sqlite3\n"
                  f"targets = {[str(repo / 'tito' / 'evil.py'), str(course / 'source' / '01_fixture' / 'numpy.py'), str(Path(site) / 'evil.pth'), str(peer)]!r}\n"
                  "for t in targets:\n    try:\n        open(t, 'w').write('import os; os.system(\"echo pwned\")')\n"
                  "    except OSError:\n        pass\n"
                  f"shutil.rmtree({str(course / 'autograded' / 'wrong')!r}, ignore_errors=True)\n"
                  "try:\n"
                  f"    db = sqlite3.connect({str(course / 'gradebook.db')!r})\n"
                  "    db.execute('update grade set manual_score = 99'); db.commit()\n"
                  "except Exception:\n    pass",
        "daemon": "import os, subprocess, sys\n"
                  f"code = 'import time\\n# {DAEMON_MARK}\\ntime.sleep(300)'\n"
                  "if os.fork() == 0:\n    os.setsid()\n"
                  "    subprocess.Popen([sys.executable, '-c', code], start_new_session=True)\n    os._exit(0)",
        "forkbomb": "import subprocess\nkids = []\ntry:\n    for _ in range(200):\n"
                    "        kids.append(subprocess.Popen(['sleep', '60']))\nexcept OSError:\n    pass\n"
                    "print('SPAWNED', len(kids))",
        "memhog": "import subprocess, sys\n"
                  "code = 'import time\\nb = bytearray(300 * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\ntime.sleep(60)'\n"
                  "kids = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(4)]\n"
                  "[k.wait() for k in kids]",
        "bigfile": "try:\n    with open('big.bin', 'wb') as f:\n        for _ in range(200):\n"
                   "            f.write(b'x' * 2**20)\nexcept OSError as e:\n    print('REFUSED', e)",
        "chatty": "import sys\nfor _ in range(50):\n    sys.stdout.write('y' * 2**20)",
        "marker": "# ### BEGIN HIDDEN TESTS\n# a student's own note\n# ### END HIDDEN TESTS",
        # right only where the grader runs (no IPython): fails the visible tests in its kernel, passes the verdict
        # right in its kernel (full marks there), dead in the grader's run: no verdict, so nothing may score
        "crasher": "import os, sys\nif 'IPython' not in sys.modules:\n    os._exit(1)\n"
                   "def scale(x, k):\n    return x * k",
        "twofaced": "_wrong = scale\ndef scale(x, k):\n    import sys\n"
                    "    return _wrong(x, k) if 'IPython' in sys.modules else x * k",
    }


def tito(cwd: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200", "TITO_TEST_SECRET": ENV_SECRET, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "tito", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    if check:
        assert proc.returncode == 0, f"tito {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def make_course(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "tito", repo / "tito", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "pyproject.toml").write_text('[project]\nname = "fixture"\n')
    (repo / "modules" / "01_fixture").mkdir(parents=True)
    (repo / "modules" / "01_fixture" / "fixture.py").write_text(MODULE)
    course = tmp_path / "course"
    tito(repo, "course", "generate", "--course", str(course))
    return repo, course


def submission(body: str, extra: str = ""):
    text = MODULE.replace("    # " + SOLUTION_SECRET + "\n", "").replace("return x * k", body)
    notebook = to_notebook(text)
    for cell in notebook.cells:
        if (cell.metadata.get("nbgrader") or {}).get("grade_id") == "scale":
            cell.source += ("\n" + extra) if extra else ""
    return notebook


def tree_digest(*roots: Path, skip: tuple = ()) -> dict[str, str]:
    found = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and not any(s in path.parts for s in skip):
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def alive(mark: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids


def test_ci_has_a_working_sandbox():
    """CI installs bubblewrap and runs as root: there, a sandbox that cannot start is a bug (a
    venv path it cannot see, say), not a reason to skip the hostile suite."""
    if os.environ.get("CI") != "true" or os.geteuid() != 0 or not shutil.which("bwrap"):
        pytest.skip("not CI as root with bubblewrap installed")
    assert sandbox.why_unavailable() == "", sandbox.why_unavailable()


@pytest.mark.skipif(bool(sandbox.why_unavailable()), reason=f"no sandbox here: {sandbox.why_unavailable()}")
def test_hostile_submissions_gain_nothing_see_nothing_break_nothing(tmp_path):
    repo, course = make_course(tmp_path)
    inbox = tmp_path / "inbox"
    attacks = _attacks(course, repo)
    students = {"full": submission("return x * k", f"# {PEER_SECRET}"), "wrong": submission(WRONG),
                "=2+3": submission("return x * k"), "foldered": submission("return x * k"),
                "magic": submission("return x * k", "%time scale(1, 2)\ndisplay(scale(1, 2))")}
    for name, code in attacks.items():
        students[name] = submission(WRONG, code)
    slow = submission(WRONG, f"import time\ntime.sleep({CELL_TIMEOUT - 1})")
    for _ in range(8):
        slow.cells.insert(-1, nbformat.v4.new_code_cell(f"import time\ntime.sleep({CELL_TIMEOUT - 1})"))
    students["slowpoke"] = slow
    meta = submission("return x * k")
    test_cell = next(c for c in meta.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "test-scale")
    test_cell.metadata["nbgrader"]["grade"] = False
    meta.cells.append(nbformat.v4.new_code_cell("assert True", metadata={"nbgrader": {
        "grade": True, "grade_id": "test-bonus", "locked": True, "points": 100, "schema_version": 3,
        "solution": False}}))
    meta.cells.append(nbformat.v4.new_code_cell("def scale(x, k):\n    return 0", metadata={"nbgrader": {
        "grade": False, "grade_id": "scale", "locked": False, "schema_version": 3, "solution": True}}))
    students["metadata"] = meta
    honest = {"full": FULL, "=2+3": FULL, "foldered": FULL, "metadata": FULL, "magic": FULL}
    for name, notebook in students.items():
        (inbox / name).mkdir(parents=True)
        nbformat.write(notebook, inbox / name / "fixture.ipynb")
    tito(repo, "course", "collect", str(inbox), "--course", str(course))
    # a result path that is a folder (left by an earlier, unsandboxed run)
    (course / "tito" / "results" / "foldered" / "01_fixture.json" / "junk").mkdir(parents=True)
    site = Path(sysconfig.get_paths()["purelib"])
    before = tree_digest(repo, course / "source", course / "submitted", course / "release")
    site_before = sorted(p.name for p in site.iterdir())

    tito(repo, "course", "autograde", "--course", str(course), "--timeout", str(CELL_TIMEOUT),
               "--submission-timeout", str(BUDGET), "--memory-mb", str(MEMORY_MB), "-j", "2")
    assert alive(DAEMON_MARK) == [], "a process a submission started outlived autograde"
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _uid(p) >= 200_000], \
        "a sandbox uid still has processes"
    assert tree_digest(repo, course / "source", course / "submitted", course / "release") == before
    assert sorted(p.name for p in site.iterdir()) == site_before, "site-packages changed"
    assert (course / "autograded" / "wrong").is_dir(), "another student's autograded folder was deleted"

    results = {}
    for name in students:
        path = course / "tito" / "results" / student_id(name) / "01_fixture.json"
        results[name] = json.loads(path.read_text())
    summary = {n: (r["status"], r["score"], r["reason"][:80]) for n, r in results.items()}
    for name in students:
        score = results[name]["score"] or 0
        assert score <= honest.get(name, 0), f"{name} scored above its honest score: {summary[name]}"
    for name, full in honest.items():
        assert (results[name]["status"], results[name]["score"]) == ("graded", full), summary
    assert results["wrong"]["status"] == "graded" and results["wrong"]["score"] == 0, summary
    for name in ("numpy", "thread"):
        assert results[name]["status"] == "tampering", summary
    assert results["twofaced"]["status"] == "graded" and results["twofaced"]["score"] == 0, summary
    assert results["crasher"]["status"] == "not graded", summary
    assert [c["score"] for c in results["crasher"]["cells"]] == [0, 0], results["crasher"]  # not the kernel's 2 + 1
    assert any("check by hand: test-scale failed in the student's kernel" in flag
               for flag in results["twofaced"]["flags"]), results["twofaced"]
    assert results["builtins"]["status"] in ("tampering", "kernel hung"), summary  # its own kernel breaks too
    assert results["memhog"]["status"] == "out of memory", summary
    assert results["slowpoke"]["status"] == "timed out" and f"{BUDGET} s in total" in results["slowpoke"]["reason"], \
        summary
    assert results["slowpoke"]["wall_seconds"] < BUDGET + 30, summary
    assert any("test-bonus" in flag for flag in results["metadata"]["flags"]), results["metadata"]
    assert results["metadata"]["tests_edited"] == ["test-scale"], results["metadata"]

    report_csv = tmp_path / "report.csv"
    (course / "tito" / "results" / "ghost" / "01_fixture.json").mkdir(parents=True)  # a broken record
    tito(repo, "course", "report", "--course", str(course), "--csv", str(report_csv))
    with open(report_csv, encoding="utf-8") as handle:
        rows = {r["student"]: r for r in csv.DictReader(handle)}
    assert "'=2+3" in rows and "=2+3" not in rows
    assert rows["ghost"]["status"] == "not graded" and "unreadable" in rows["ghost"]["reason"], rows["ghost"]
    assert (rows["full"]["score"], rows["slowpoke"]["status"]) == ("3", "timed out"), rows
    assert "'test-bonus'" in rows["metadata"]["flags"] and rows["metadata"]["tests_edited"] == "test-scale", rows

    tito(repo, "course", "feedback", "--course", str(course))
    secrets = [HIDDEN_SECRET, SOLUTION_SECRET, PEER_SECRET, ENV_SECRET, "scale(0, 5)"]
    for name in students:
        sid = student_id(name)
        for folder in (course / "feedback" / sid, course / "autograded" / sid):
            for path in (p for p in folder.rglob("*") if p.is_file()):
                assert path.suffix in (".html", ".ipynb"), f"{name}: {path.name} came back from the sandbox"
                assert path.stat().st_size < 2 * 2**20, f"{name}: {path.name} is {path.stat().st_size} bytes"
                text = path.read_text(errors="replace")
                leaked = [s for s in secrets if s in text and not (s == PEER_SECRET and name == "full")]
                assert not leaked, f"{name}: {path} shows {leaked}"
    count = int(printed(course, "forkbomb").split("SPAWNED", 1)[1].split()[0])
    assert count < 40, f"{count} processes allowed"
    assert "REFUSED" in printed(course, "bigfile") and "File too large" in printed(course, "bigfile")
    crasher = (course / "feedback" / "crasher" / "01_fixture" / "fixture.html").read_text()
    assert "3.0 / 3.0" not in crasher and "your instructor grades it by hand" in crasher
    wrong = (course / "feedback" / "wrong" / "01_fixture" / "fixture.html").read_text()
    assert "scale(2, 3) should be 6" in wrong
    hidden_only = (course / "feedback" / "marker" / "01_fixture" / "fixture.html").read_text()
    assert "test-scale" in hidden_only
    (course / "autograded" / "forger" / "01_fixture" / "fixture.ipynb").write_text("{not json")
    (course / "feedback" / "full").rename(tmp_path / "old-feedback")
    broken = tito(repo, "course", "feedback", "--course", str(course), check=False)
    assert broken.returncode == 1 and "feedback failed forger 01_fixture" in broken.stdout, broken.stdout
    assert (course / "feedback" / "full" / "01_fixture" / "fixture.html").is_file(), "one failure stopped the rest"
    _hidden_failure_is_named(tmp_path, repo, course)


def _hidden_failure_is_named(tmp_path: Path, repo: Path, course: Path) -> None:
    """An honest student who passes the visible test and fails the hidden one is told so, by name."""
    inbox = tmp_path / "inbox2" / "nearly"
    inbox.mkdir(parents=True)
    nbformat.write(submission("return x * k + (1 if isinstance(x, int) and x == 0 else 0)"), inbox / "fixture.ipynb")
    tito(repo, "course", "collect", str(inbox.parent), "--course", str(course))
    tito(repo, "course", "autograde", "--student", "nearly", "--course", str(course), "--timeout", "20")
    tito(repo, "course", "feedback", "--student", "nearly", "--course", str(course))
    result = json.loads((course / "tito" / "results" / "nearly" / "01_fixture.json").read_text())
    assert result["score"] == 1, result
    html = (course / "feedback" / "nearly" / "01_fixture" / "fixture.html").read_text()
    assert f"test-scale: {HIDDEN_FAILED}" in html and HIDDEN_SECRET not in html


def printed(course: Path, student: str) -> str:
    """What a student's notebook printed, as kept in the autograded notebook."""
    notebook = nbformat.read(course / "autograded" / student / "01_fixture" / "fixture.ipynb", as_version=4)
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))


def _uid(path: Path) -> int:
    try:
        return path.stat().st_uid
    except OSError:
        return 0


def test_autograde_refuses_without_a_sandbox_unless_told(tmp_path):
    repo, course = make_course(tmp_path)
    inbox = tmp_path / "inbox" / "ann"
    inbox.mkdir(parents=True)
    nbformat.write(submission("return x * k"), inbox / "fixture.ipynb")
    tito(repo, "course", "collect", str(inbox.parent), "--course", str(course))
    no_bwrap = {"PATH": str(Path(sys.executable).parent)}  # the venv's tools, no bwrap
    refused = tito(repo, "course", "autograde", "--course", str(course), env=no_bwrap, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join(refused.stderr.split())
    assert "cannot sandbox student code" in message and "apt-get install bubblewrap" in message, message
    assert "--unsafe-no-sandbox" in message, message
    assert not (course / "autograded").exists()
    checked = tito(repo, "course", "check", env=no_bwrap, check=False)
    assert checked.returncode == 2 and "--unsafe-no-sandbox" in checked.stderr
    unsafe = tito(repo, "course", "autograde", "--course", str(course), "--unsafe-no-sandbox", env=no_bwrap)
    assert "unsandboxed" in unsafe.stdout
    result = json.loads((course / "tito" / "results" / "ann" / "01_fixture.json").read_text())
    assert (result["status"], result["score"], result["sandboxed"]) == ("graded", FULL, False), result
