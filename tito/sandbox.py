"""Run a student's code in a bubblewrap sandbox (threat model: tito/templates/course_README.md).

Every sandbox is a command line for `bwrap` (Debian package `bubblewrap`) and a uid of its
own. Inside it sees: the Python interpreter and the venv's site-packages (read-only), the
package built from the submission (read-only, on PYTHONPATH), the folders passed in `binds`
and a size-capped tmpfs for /tmp (its home and working folder). Nothing else of the machine:
no course folder, no repository, no network, an explicit environment.

The uid is what makes "everything it started" exact: bwrap runs as root, and the sandbox drops
to a uid that no other process has (`setpriv`), so RLIMIT_NPROC counts exactly its processes,
the memory watchdog sums exactly their resident memory, and `kill()` ends exactly them —
daemons that double-forked or called setsid included.
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tito.errors import TitoError

HOME = "/tmp/home"          # the sandbox's home and working folder, on its tmpfs
PACKAGE = "/sandbox/pkg"    # the submission's tinytorch/, read-only
UNSAFE_FLAG = "--unsafe-no-sandbox"


@dataclass
class Limits:
    memory_mb: int = 4096        # resident memory of the whole process tree (watchdog) and per process (RLIMIT_AS)
    processes: int = 32          # RLIMIT_NPROC for the sandbox's uid: every process and thread it runs
    file_mb: int = 64            # RLIMIT_FSIZE: the largest file it may write
    disk_mb: int = 256           # the tmpfs it may write to (home, /tmp)
    cpu_seconds: int = 900       # RLIMIT_CPU per process: the submission's CPU budget
    open_files: int = 256        # RLIMIT_NOFILE


@dataclass
class Outcome:
    killed_for: str = ""         # "" or why the watchdog ended the tree ("memory")
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))]


def _python_binds() -> list[str]:
    """Read-only folders the interpreter and the venv need (found, not assumed)."""
    seen: list[str] = []
    for folder in {sys.base_prefix, sys.prefix, str(Path(sys.executable).resolve().parent.parent)}:
        if folder and not folder.startswith("/usr") and Path(folder).is_dir() and folder not in seen:
            seen.append(folder)
    return sorted(seen)


def why_unavailable() -> str:
    """"" when sandboxes can run here, else why not (shown with the refusal)."""
    return _probe(shutil.which("bwrap") or "", shutil.which("setpriv") or "")


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str, setpriv: str) -> str:
    if not bwrap:
        return "bubblewrap is not installed (`bwrap` is not on PATH): apt-get install bubblewrap"
    if not setpriv:
        return "`setpriv` (util-linux) is not on PATH"
    if os.geteuid() != 0:
        return ("grading must run as root to give each sandbox a uid of its own (bwrap runs as root, "
                "then drops to that uid)")
    box = Sandbox(Limits(), binds=[])
    try:
        proc = subprocess.run(box.command([sys.executable, "-c", "import os; print(os.getuid())"]),
                              capture_output=True, text=True, timeout=60, preexec_fn=box.preexec)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap did not run: {err}"
    finally:
        box.kill()
    if proc.returncode != 0 or proc.stdout.strip() != str(box.uid):
        return f"bwrap cannot make a sandbox here (no mount/pid/net namespaces?): {proc.stderr.strip()[-300:]}"
    return ""


def require(unsafe: bool) -> bool:
    """True when grading is sandboxed; raise when it cannot be and the instructor did not opt out."""
    why = why_unavailable()
    if not why:
        return True
    if unsafe:
        return False
    raise TitoError(f"cannot sandbox student code on this machine: {why}. Student notebooks would run with "
                    f"your privileges, files and environment; fix that, or pass {UNSAFE_FLAG} to grade anyway")


def _free_uid() -> int:
    taken = {_uid_of(pid) for pid in _pids()}
    while True:
        uid = 200_000 + secrets.randbelow(800_000)
        if uid not in taken:
            return uid


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Sandbox:
    """One sandbox: `command(argv)` to run in it (with `preexec` as Popen's preexec_fn),
    `watch()` while it runs, `kill()` when done (always)."""

    def __init__(self, limits: Limits, binds: list[tuple[str, str]], writable: list[tuple[str, str]] = (),
                 env: dict[str, str] | None = None):
        self.limits = limits
        self.binds = list(binds)          # (host path, sandbox path), read-only
        self.writable = list(writable)    # (host path, sandbox path), read-write (owned by the sandbox uid)
        self.env = env or {}
        self.sockets = ""                 # a writable folder bound at the same path (a kernel's unix sockets)
        self.uid = _free_uid()
        self.outcome = Outcome()
        self._stop = threading.Event()
        for host, _ in self.writable:
            os.chown(host, self.uid, self.uid)

    def command(self, argv: list[str]) -> list[str]:
        made: set[str] = set()
        cmd = [shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
               "--unshare-cgroup-try", "--die-with-parent", "--new-session",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
               "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev"]
        if Path("/etc/ld.so.cache").is_file():
            cmd += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
        cmd += ["--perms", "1777", "--size", str(self.limits.disk_mb * 2**20), "--tmpfs", "/tmp",
                # MPI (module 11) needs POSIX shared memory and the CPU topology
                "--perms", "1777", "--size", str(self.limits.disk_mb * 2**20), "--tmpfs", "/dev/shm"]
        if Path("/sys/devices/system/cpu").is_dir():
            cmd += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]
        mounts = [(p, p, "--ro-bind") for p in _python_binds()]
        mounts += [(h, s, "--ro-bind") for h, s in self.binds] + [(h, s, "--bind") for h, s in self.writable]
        for host, inside, how in mounts:
            # bwrap would make the parents 0700 like their host originals; a venv under /tmp (a CI
            # checkout) needs its parents made inside the sandbox's own /tmp, which stays 1777
            for parent in _ancestors(inside):
                if parent not in made and parent != "/tmp" and not parent.startswith(("/usr", "/proc", "/dev")):
                    cmd += ["--perms", "0755", "--dir", parent]
                    made.add(parent)
            cmd += [how, host, inside]
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": HOME, "LANG": "C.UTF-8",
               "PYTHONPATH": PACKAGE, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **self.env}
        cmd += ["--clearenv"] + [a for k, v in sorted(env.items()) for a in ("--setenv", k, v)]
        # bwrap cannot mkdir in the tmpfs as the sandbox uid: start in /tmp, the payload makes HOME
        cmd += ["--chdir", "/tmp", shutil.which("setpriv") or "setpriv", f"--reuid={self.uid}",
                f"--regid={self.uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
                "--", "/bin/sh", "-c", f'mkdir -p {HOME} && cd {HOME} && exec "$@"', "sandbox", *argv]
        return cmd

    def preexec(self) -> None:
        """Limits inherited by every process in the sandbox (runs between fork and exec of bwrap)."""
        limit = self.limits
        pairs = [(resource.RLIMIT_NPROC, limit.processes), (resource.RLIMIT_FSIZE, limit.file_mb * 2**20),
                 (resource.RLIMIT_CPU, limit.cpu_seconds), (resource.RLIMIT_NOFILE, limit.open_files),
                 (resource.RLIMIT_CORE, 0)]
        if limit.memory_mb > 0:
            pairs.append((resource.RLIMIT_AS, limit.memory_mb * 2**20))
        for which, value in pairs:
            resource.setrlimit(which, (value, value))

    def processes(self) -> list[int]:
        """Its live processes (zombies are dead already; their parent or the kernel reaps them)."""
        return [pid for pid in _pids() if _uid_of(pid) == self.uid and not _zombie(pid)]

    def watch(self, poll: float = 0.2) -> threading.Thread:
        """Start the watchdog: the whole tree's resident memory over the cap kills the tree."""
        cap = self.limits.memory_mb * 2**20

        def run() -> None:
            while not self._stop.wait(poll):
                rss = sum(_rss_bytes(pid) for pid in self.processes())
                self.outcome.peak_rss_mb = max(self.outcome.peak_rss_mb, rss / 2**20)
                if cap > 0 and rss > cap:
                    self.outcome.killed_for = "memory"
                    self._kill_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def _kill_all(self) -> None:
        for _ in range(50):  # a fork racing the kill is caught by the next pass
            alive = self.processes()
            if not alive:
                return
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)

    def kill(self) -> None:
        """End every process the sandbox started, and the watchdog."""
        self._stop.set()
        self._kill_all()
