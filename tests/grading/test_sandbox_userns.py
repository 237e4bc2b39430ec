"""The sandbox as an ordinary user: bubblewrap in a user namespace, for real (marker `grading`).

As root tito gives each sandbox a uid of its own; an instructor's normal account gets a
user-namespace sandbox instead (tito/sandbox.py). CI runs as root, so these tests drop to an
unprivileged uid (65534) with setpriv and drive tito.sandbox from there, in one process that
runs every scenario below (`python test_sandbox_userns.py DIR` writes DIR/results.json):
what the sandbox can see, network, a double-forked daemon after kill(), the memory of a whole
tree, fork bombs, a too-big file and a full disk. Then one `tito course autograde` with
hostile submissions, run by that uid. Skipped, with the reason, where the machine cannot make
unprivileged sandboxes; in CI as root with bubblewrap installed they must run.
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
SECRET_ENV = "tito-userns-env-secret-3e1d"
MARK = "tito-userns-daemon-8c2a"


# ---------------------------------------------------------------- the driver (runs as the unprivileged uid)


def _run(box, code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(box.command([sys.executable, "-c", code]), preexec_fn=box.preexec, capture_output=True,
                          text=True, timeout=60, **kw)


def _marked(mark: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and mark.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def _wait(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


SEE = """
import json, os, socket, subprocess
out = {"uid": os.getuid(), "pid": os.getpid(), "env": sorted(os.environ), "exists": {}}
for path in PATHS:
    out["exists"][path] = os.path.exists(path)
try:
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()
    out["connected"] = True
except OSError as err:
    out["connected"] = str(err)
out["nested"] = subprocess.run(["unshare", "--user", "true"], capture_output=True).returncode
open("/sandbox/out/written", "w").write("from inside")
try:
    open(VENV_FILE, "w")
    out["venv_writable"] = True
except OSError:
    out["venv_writable"] = False
print(json.dumps(out))
"""

DAEMON = """
import os, subprocess, sys, time
code = "open('/tmp/up', 'w')\\nimport time\\ntime.sleep(120)\\n# " + "KRAM"[::-1]  # the mark only in its cmdline
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        time.sleep(120)
    os._exit(0)
while not os.path.exists("/tmp/up"):
    time.sleep(0.05)
time.sleep(WAIT)
"""

HOG = """
import subprocess, sys
code = "b = bytearray(EACH * 2**20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\nimport time; time.sleep(HOLD)"
kids = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(KIDS)]
print([k.wait() for k in kids])
"""

BOMB = """
import os, sys, time
made = 0
try:
    for _ in range(100):
        if os.fork() == 0:
            for _ in range(3 if EXPLODE else 0):  # its children fork too: 8 each (bounded, if the cap is broken)
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
            time.sleep(60)
            os._exit(0)
        made += 1
except OSError:
    pass
print(made, flush=True)
time.sleep(60)
"""

FILES = """
import errno
out = []
for name, mib in [("big", 3), ("a", 1.9), ("b", 1.9), ("c", 1.9)]:
    try:
        with open(name, "wb") as f:
            for _ in range(int(mib * 16)):
                f.write(b"x" * 2**16)
        out.append("ok")
    except OSError as err:
        out.append(errno.errorcode[err.errno])
print(" ".join(out))
"""


def _scenario_see(sandbox, work: Path) -> dict:
    secret = work / "course" / "secret.txt"
    home = Path(os.environ["HOME"]) / ".netrc"  # the invoking user's home (a folder of the test's here)
    paths = [str(secret), str(home), str(REPO / "README.md"), str(REPO / "tito" / "sandbox.py"), str(work)]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    out = work / "out"
    out.mkdir()
    box = sandbox.Sandbox(sandbox.Limits(), binds=[], writable=[(str(out), "/sandbox/out")])
    code = SEE.replace("PATHS", repr(paths)).replace("PORT", str(listener.getsockname()[1]))
    code = code.replace("VENV_FILE", repr(str(Path(sys.prefix) / "tito-userns-probe")))
    try:
        proc = _run(box, code, env={**os.environ, "TITO_TEST_SECRET": SECRET_ENV})
    finally:
        box.kill()
        listener.close()
    return {"rc": proc.returncode, "stderr": proc.stderr[-2000:], "seen": json.loads(proc.stdout or "{}"),
            "host_sees": {p: os.path.exists(p) for p in paths}, "uid": os.getuid(),
            "written": (out / "written").read_text() if (out / "written").is_file() else "",
            "disable_userns": sandbox._bwrap_can("--disable-userns")}


def _scenario_daemon(sandbox, work: Path) -> dict:
    """kill() ends a double-forked, setsid daemon; so does the sandbox's first process ending."""
    found = {}
    for how, wait in [("kill", 120), ("exit", 0.5)]:
        mark = f"{MARK}-{how}"
        box = sandbox.Sandbox(sandbox.Limits(), binds=[])
        code = DAEMON.replace("KRAM", mark[::-1]).replace("WAIT", str(wait))
        proc = subprocess.Popen(box.command([sys.executable, "-c", code]), preexec_fn=box.preexec)
        seen = _wait(lambda: bool(_marked(mark)), 20)  # noqa: B023 -- used at once
        if how == "kill":
            box.kill()
        proc.wait(timeout=30)
        _wait(lambda: not _marked(mark), 5)  # noqa: B023
        found[how] = {"seen": seen, "alive_after": _marked(mark)}
        box.kill()
    return found


def _scenario_memory(sandbox, work: Path) -> dict:
    """Two children each under the cap, together over it: the watchdog ends the tree; one alone lives."""
    found = {}
    for kids, hold in [(1, 0.5), (2, 30)]:
        box = sandbox.Sandbox(sandbox.Limits(memory_mb=320), binds=[])
        box.watch(poll=0.1)
        start = time.monotonic()
        try:
            proc = _run(box, HOG.replace("EACH", "190").replace("KIDS", str(kids)).replace("HOLD", str(hold)))
        finally:
            box.kill()
        found[kids] = {"rc": proc.returncode, "out": proc.stdout.strip(), "killed_for": box.outcome.killed_for,
                       "peak_mb": box.outcome.peak_rss_mb, "seconds": time.monotonic() - start}
    return found


def _scenario_bomb(sandbox, work: Path) -> dict:
    """A fork bomb is held to the process cap, with 20 other processes of the same uid running
    (they must not count), and kill() ends all of it."""
    found = {}
    others = [subprocess.Popen(["sleep", "120"]) for _ in range(20)]
    try:
        for explode in (False, True):
            box = sandbox.Sandbox(sandbox.Limits(processes=16), binds=[])
            box.watch(poll=0.1)
            proc = subprocess.Popen(box.command([sys.executable, "-c", BOMB.replace("EXPLODE", str(explode))]),
                                    preexec_fn=box.preexec, stdout=subprocess.PIPE, text=True)
            made = proc.stdout.readline().strip()
            time.sleep(1)
            tasks = sum(sandbox._tasks(p) for p in box.processes() if p != box._init)
            box.kill()
            proc.wait(timeout=30)
            found[str(explode)] = {"made": made, "tasks": tasks, "left": box.processes(),
                                   "killed_for": box.outcome.killed_for}
        # kernels before 5.14 count RLIMIT_NPROC per uid: the cap is then the uid's count plus the
        # limit, and the watchdog enforces the limit once the uid's other processes are gone
        sandbox._nproc_per_namespace = lambda: False
        box = sandbox.Sandbox(sandbox.Limits(processes=16), binds=[])
        box.watch(poll=0.1)
        proc = subprocess.Popen(box.command([sys.executable, "-c", BOMB.replace("EXPLODE", "True")]),
                                preexec_fn=box.preexec, stdout=subprocess.DEVNULL)
        for other in others:
            other.kill()
        try:
            proc.wait(timeout=30)
        finally:
            box.kill()
        found["old kernel"] = {"killed_for": box.outcome.killed_for, "left": box.processes()}
    finally:
        for other in others:
            other.kill()
            other.wait()
    return found


def _scenario_files(sandbox, work: Path) -> dict:
    box = sandbox.Sandbox(sandbox.Limits(file_mb=2, disk_mb=6), binds=[])
    try:
        proc = _run(box, FILES)
    finally:
        box.kill()
    return {"rc": proc.returncode, "out": proc.stdout.strip(), "stderr": proc.stderr[-1000:]}


def _scenario_reuse(sandbox, work: Path) -> dict:
    """A namespace's number is reused by the next sandbox: an ended sandbox must not see or kill it."""
    def start():
        box = sandbox.Sandbox(sandbox.Limits(), binds=[])
        proc = subprocess.Popen(box.command([sys.executable, "-c", "import time; time.sleep(60)"]),
                                preexec_fn=box.preexec)
        for _ in range(500):
            if box.processes():
                break
            time.sleep(0.02)
        return box, proc
    first, first_proc = start()
    number = first._namespace
    first.kill()
    first_proc.wait()
    second, second_proc = start()
    try:
        seen = first.processes()
        first.kill()
        time.sleep(0.2)
        return {"reused": second._namespace == number, "seen": seen, "alive": second_proc.poll() is None}
    finally:
        second.kill()
        second_proc.wait()


def driver(work: Path) -> None:
    sys.path.insert(0, str(REPO))
    from tito import sandbox

    results = {"mode": sandbox.mode(), "why": sandbox.why_unavailable()}
    if not results["why"]:
        for name in ["see", "daemon", "memory", "bomb", "files", "reuse"]:
            start = time.monotonic()
            try:
                results[name] = globals()[f"_scenario_{name}"](sandbox, work)
            except Exception:  # noqa: BLE001 -- the scenario's test fails with it; the others still run
                results[name] = {"error": traceback.format_exc()[-3000:]}
            results[f"{name}_seconds"] = round(time.monotonic() - start, 2)
    (work / "results.json").write_text(json.dumps(results))


# ---------------------------------------------------------------- running as the unprivileged uid


def _blocked(path: Path) -> Path | None:
    """The first ancestor of `path` that uid NOBODY cannot enter (o-x), if any."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def as_nobody(argv: list[str]) -> list[str]:
    """argv run as uid NOBODY. Where the interpreter or the checkout lies under a folder only root
    may enter (pyenv in /root), that folder is replaced, in a private mount namespace, by one
    that holds only them."""
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if os.geteuid() != 0:
        return argv
    needed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, REPO)}
    needed.add(Path(sys.executable).resolve().parent.parent)
    blocked = {path: _blocked(path) for path in needed}
    if not any(blocked.values()):
        return setpriv + argv
    lines = []
    for top in sorted({b for b in blocked.values() if b}):
        keep = sorted(p for p, b in blocked.items() if b == top)
        holds = [f"/tmp/.tito-hold-{os.getpid()}-{i}" for i in range(len(keep))]
        lines += [f"mkdir -p {h} && mount --bind {p} {h}" for p, h in zip(keep, holds, strict=True)]
        lines += [f"mount -t tmpfs -o mode=0755,size=1m tmpfs {top}"]
        lines += [f"mkdir -p {p} && mount --bind {h} {p} && umount {h} && rmdir {h}"
                  for p, h in zip(keep, holds, strict=True)]
    script = " && ".join(lines) + ' && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *setpriv, *argv]


def _must_run() -> bool:
    return os.environ.get("CI") == "true" and os.geteuid() == 0 and bool(shutil.which("bwrap"))


def _skip_or_fail(why: str):
    if _must_run():
        pytest.fail(f"CI as root with bubblewrap: the unprivileged sandbox must work here, but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def workdir():
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    if os.geteuid() == 0 and not shutil.which("unshare"):
        pytest.skip("util-linux's `unshare` is not installed")
    work = Path(tempfile.mkdtemp(prefix="tito-userns-"))
    (work / "course").mkdir()
    (work / "course" / "secret.txt").write_text("solutions")
    (work / "home").mkdir()
    (work / "home" / ".netrc").write_text("machine example.com password hunter2")
    if os.geteuid() == 0:
        for path in [work, *work.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
    yield work
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def results(workdir):
    proc = subprocess.run(as_nobody([sys.executable, str(Path(__file__).resolve()), str(workdir)]),
                          capture_output=True, text=True, timeout=300, cwd=str(workdir),
                          env={**os.environ, "HOME": str(workdir / "home")})
    if not (workdir / "results.json").is_file():  # it could not start: the checkout is not readable to that uid?
        _skip_or_fail(f"the unprivileged driver failed (exit {proc.returncode}): {proc.stderr[-1500:]}")
    found = json.loads((workdir / "results.json").read_text())
    if found["why"]:
        _skip_or_fail(f"no unprivileged sandbox here: {found['why']}")
    assert found["mode"] == "userns", found
    return found


pytestmark = pytest.mark.grading


def scenario(results: dict, name: str) -> dict:
    found = results[name]
    assert "error" not in found, f"the {name} scenario failed:\n{found.get('error')}"
    return found


def test_sees_nothing_but_itself(results):
    see = scenario(results, "see")
    assert see["rc"] == 0, see["stderr"]
    inside = see["seen"]
    assert all(see["host_sees"].values()), f"the test's paths must exist outside: {see['host_sees']}"
    shown = [path for path, there in inside["exists"].items() if there]
    assert not shown, f"the sandbox sees {shown}"
    assert "TITO_TEST_SECRET" not in inside["env"], inside["env"]
    assert inside["uid"] == see["uid"] and inside["pid"] < 10, inside  # the user's uid, its own PID namespace
    assert inside["connected"] is not True, "the sandbox reached a port on the host's loopback"
    assert see["written"] == "from inside", "a writable bind owned by the user did not work"
    assert inside["venv_writable"] is False, "the venv is writable from the sandbox"
    if see["disable_userns"]:
        assert inside["nested"] != 0, "the sandbox could make a nested user namespace"


def test_kill_ends_double_forked_daemons(results):
    for how, found in scenario(results, "daemon").items():
        assert found["seen"], f"{how}: the daemon never started"
        assert found["alive_after"] == [], f"{how}: a daemon outlived the sandbox: {found}"


def test_memory_of_the_whole_tree_is_capped(results):
    memory = scenario(results, "memory")
    one, two = memory["1"], memory["2"]
    assert one["rc"] == 0 and one["killed_for"] == "", f"one child under the cap was killed: {one}"
    assert two["killed_for"] == "memory" and two["rc"] != 0, f"two children over the cap together lived: {two}"
    assert two["seconds"] < 25, two
    assert 320 < two["peak_mb"] < 640, two


def test_fork_bombs_are_held_to_the_cap_and_killed(results):
    bomb = scenario(results, "bomb")
    flat, explode = bomb["False"], bomb["True"]
    assert 8 <= int(flat["made"]) < 16, f"the cap is per sandbox, not the uid's other processes: {flat}"
    for found in (flat, explode):
        assert found["tasks"] <= 16 and found["left"] == [], found
    assert bomb["old kernel"]["killed_for"] == "processes" and bomb["old kernel"]["left"] == [], bomb["old kernel"]


def test_files_are_capped(results):
    files = scenario(results, "files")
    assert files["rc"] == 0, files["stderr"]
    assert files["out"] == "EFBIG ok ok ENOSPC", files  # the 3 MiB file; 2 + 3 x 1.9 MiB on a 6 MiB disk


def test_an_ended_sandbox_leaves_the_next_one_alone(results):
    reuse = scenario(results, "reuse")
    assert reuse["seen"] == [] and reuse["alive"], (
        f"an ended sandbox took the next sandbox's processes for its own (namespace number reused: "
        f"{reuse['reused']}): {reuse}")


def test_refusal_says_user_namespaces_are_off(tmp_path, monkeypatch):
    """Where bwrap cannot make a namespace, the reason names the sysctls and the way out."""
    from tito import sandbox

    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ.get('PATH', '')}")
    why = sandbox._probe(str(fake), shutil.which("prlimit") or "prlimit", sandbox.USERNS)
    assert "No permissions to create new namespace" in why, why
    assert "unprivileged user namespaces are" in why and "grade as root" in why, why


def _hostile():
    spec = importlib.util.spec_from_file_location("tito_hostile_suite", Path(__file__).with_name("test_hostile.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_autograde_as_a_user_grades_hostile_submissions(results, workdir):
    """`tito course autograde` run by an unprivileged user, beside hostile submissions."""
    pytest.importorskip("nbgrader", reason="the grade extra is not installed: pip install -e '.[grade]'")
    import nbformat

    hostile = _hostile()
    base = workdir / "grade"
    base.mkdir()
    repo, course = hostile.make_course(base)
    attacks = hostile._attacks(course, repo)
    students = {"full": hostile.submission("return x * k", f"# {hostile.PEER_SECRET}")}
    for name in ["spy", "vandal", "daemon", "forkbomb", "memhog"]:
        students[name] = hostile.submission(hostile.WRONG, attacks[name])
    for name, notebook in students.items():
        (base / "inbox" / name).mkdir(parents=True)
        nbformat.write(notebook, base / "inbox" / name / "fixture.ipynb")
    hostile.tito(repo, "course", "collect", str(base / "inbox"), "--course", str(course))
    (base / "home").mkdir()
    if os.geteuid() == 0:
        for path in [base, *base.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    before = hostile.tree_digest(repo, course / "source", course / "submitted", course / "release")
    env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "200", "HOME": str(base / "home"),
           "TITO_TEST_SECRET": hostile.ENV_SECRET}
    proc = subprocess.run(as_nobody([sys.executable, "-m", "tito", "course", "autograde", "--course", str(course),
                                     "--timeout", "10", "--submission-timeout", "60", "--memory-mb",
                                     str(hostile.MEMORY_MB), "-j", "2"]),
                          cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "unsandboxed" not in proc.stdout, proc.stdout
    assert hostile.alive(hostile.DAEMON_MARK) == [], "a process a submission started outlived autograde"
    mine = os.readlink("/proc/self/ns/pid")
    left = [(p.name, _state(p)) for p in Path("/proc").iterdir() if p.name.isdigit() and hostile._uid(p) == NOBODY
            and _namespace(p) not in ("", mine)]
    assert left == [], f"sandboxed processes (pid, state) outlived autograde: {left}"
    assert hostile.tree_digest(repo, course / "source", course / "submitted", course / "release") == before
    results_of = {n: json.loads((course / "tito" / "results" / n / "01_fixture.json").read_text()) for n in students}
    summary = {n: (r["status"], r["score"], r["reason"][:300]) for n, r in results_of.items()}
    assert (results_of["full"]["status"], results_of["full"]["score"]) == ("graded", hostile.FULL), summary
    assert all(r["sandboxed"] for r in results_of.values()), summary
    for name in students:
        if name != "full":
            assert (results_of[name]["score"] or 0) == 0, f"{name} scored: {summary}"
    assert results_of["memhog"]["status"] == "out of memory", summary
    spied = hostile.printed(course, "spy")
    for secret in (hostile.SOLUTION_SECRET, hostile.HIDDEN_SECRET, hostile.ENV_SECRET, hostile.PEER_SECRET):
        assert secret not in spied, f"the spy read {secret}"
    assert "DENIED" in spied, spied[:2000]
    count = int(hostile.printed(course, "forkbomb").split("SPAWNED", 1)[1].split()[0])
    assert count < 32, f"{count} processes allowed"


def _state(path: Path) -> str:
    try:
        return (path / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _namespace(path: Path) -> str:
    try:
        return os.readlink(path / "ns" / "pid")
    except OSError:
        return ""


if __name__ == "__main__":
    driver(Path(sys.argv[1]))
