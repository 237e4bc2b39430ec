"""Run a student's code in a bubblewrap sandbox (threat model: tito/templates/course_README.md).

Every sandbox is a command line for `bwrap` (Debian package `bubblewrap`). Inside it sees: the
Python interpreter and the venv's site-packages (read-only), the package built from the
submission (read-only, on PYTHONPATH), the folders passed in `binds` and a size-capped tmpfs
for /tmp (its home and working folder). Nothing else of the machine: no course folder, no
repository, no network, an explicit environment. Its processes live in a PID namespace of
their own, so when its first process ends the kernel ends every other one.

Two modes, chosen by who runs tito:

- **root** ("uid"): bwrap runs as root and the sandbox drops to a uid that no other process has
  (`setpriv`), so RLIMIT_NPROC counts exactly its processes, the memory watchdog sums exactly
  their resident memory and `kill()` ends exactly them (double forks and setsid included).
- **any other user** ("userns"): bwrap makes an unprivileged user namespace (`--unshare-user`,
  all capabilities dropped, no nested namespaces where bwrap can forbid them). Its processes
  keep the instructor's uid, so membership is the sandbox's PID namespace instead: the watchdog
  sums the resident memory and counts the tasks of the processes in that namespace, and
  `kill()` SIGKILLs the namespace's init (the kernel then kills every process in it). The
  process cap is RLIMIT_NPROC set inside the namespace: since Linux 5.14 the kernel counts it
  per user namespace, so it counts exactly the sandbox's tasks; on older kernels it counts the
  whole uid and is set to the uid's current count plus the cap, the watchdog enforcing the cap.
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
ROOT, USERNS = "uid", "userns"


@dataclass
class Limits:
    memory_mb: int = 4096        # resident memory of the whole process tree (watchdog) and per process (RLIMIT_AS)
    processes: int = 32          # RLIMIT_NPROC: every process and thread it runs
    file_mb: int = 64            # RLIMIT_FSIZE: the largest file it may write
    disk_mb: int = 256           # the tmpfs it may write to (home, /tmp)
    cpu_seconds: int = 900       # RLIMIT_CPU per process: the submission's CPU budget
    open_files: int = 256        # RLIMIT_NOFILE


@dataclass
class Outcome:
    killed_for: str = ""         # "" or why the watchdog ended the tree ("memory", "processes")
    peak_rss_mb: float = 0.0
    extra: dict = field(default_factory=dict)


def mode() -> str:
    """How sandboxes are made here: ROOT (a uid of their own) or USERNS (a user namespace)."""
    return ROOT if os.geteuid() == 0 else USERNS


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
    tool = "setpriv" if mode() == ROOT else "prlimit"
    return _probe(shutil.which("bwrap") or "", shutil.which(tool) or "", mode())


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str, tool: str, how: str) -> str:
    if not bwrap:
        return "bubblewrap is not installed (`bwrap` is not on PATH): apt-get install bubblewrap"
    if not tool:
        return f"`{'setpriv' if how == ROOT else 'prlimit'}` (util-linux) is not on PATH"
    box = Sandbox(Limits(), binds=[])
    try:
        proc = subprocess.run(box.command([sys.executable, "-c", "import os; print(os.getuid(), os.getpid())"]),
                              capture_output=True, text=True, timeout=60, preexec_fn=box.preexec)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap did not run: {err}"
    finally:
        box.kill()
    # its own uid (ROOT) or the instructor's (USERNS); a small pid: its own PID namespace
    words = proc.stdout.split()
    if proc.returncode == 0 and len(words) == 2 and words[0] == str(box.uid) and words[1] in ("1", "2", "3"):
        return ""
    error = proc.stderr.strip()[-300:]
    if how == ROOT:
        return f"bwrap cannot make a sandbox here (no mount/pid/net namespaces?): {error}"
    return f"bwrap cannot make an unprivileged sandbox here ({error}): {_userns_hint()}"


def _userns_hint() -> str:
    """Why unprivileged user namespaces may be off, from the sysctls that turn them off."""
    off = []
    for path, bad in [("/proc/sys/user/max_user_namespaces", "0"), ("/proc/sys/kernel/unprivileged_userns_clone", "0"),
                      ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1")]:
        try:
            if Path(path).read_text().strip() == bad:
                off.append(f"{path.removeprefix('/proc/sys/').replace('/', '.')} = {bad}")
        except OSError:
            pass
    if off:
        return (f"unprivileged user namespaces are disabled ({', '.join(off)}): enable them (sysctl), "
                f"or grade as root, which gives each sandbox a uid of its own")
    return ("unprivileged user namespaces are probably disabled (by a container's seccomp policy, say): "
            "enable them, or grade as root, which gives each sandbox a uid of its own")


def require(unsafe: bool) -> bool:
    """True when grading is sandboxed; raise when it cannot be and the instructor did not opt out."""
    why = why_unavailable()
    if not why:
        return True
    if unsafe:
        return False
    raise TitoError(f"cannot sandbox student code on this machine: {why}. Student notebooks would run with "
                    f"your privileges, files and environment; fix that, or pass {UNSAFE_FLAG} to grade anyway")


@functools.lru_cache(maxsize=None)
def _bwrap_can(option: str) -> bool:
    try:
        return option in subprocess.run([shutil.which("bwrap") or "bwrap", "--help"], capture_output=True,
                                        text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


def _nproc_per_namespace() -> bool:
    """Whether RLIMIT_NPROC counts per user namespace (Linux >= 5.14), not per uid machine-wide."""
    try:
        major, minor = (int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 14)


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


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state first, then ppid); [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _zombie(pid: int) -> bool:
    fields = _stat(pid)
    return not fields or fields[0] in ("Z", "X")


def _ppid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else -1


def _pid_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


def _tasks(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def _tasks_of_uid(uid: int) -> int:
    return sum(_tasks(pid) for pid in _pids() if _uid_of(pid) == uid)


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Sandbox:
    """One sandbox: `command(argv)` to run in it (with `preexec` as Popen's preexec_fn, in the
    process that calls `command`), `watch()` while it runs, `kill()` when done (always)."""

    def __init__(self, limits: Limits, binds: list[tuple[str, str]], writable: list[tuple[str, str]] = (),
                 env: dict[str, str] | None = None):
        self.limits = limits
        self.binds = list(binds)          # (host path, sandbox path), read-only
        self.writable = list(writable)    # (host path, sandbox path), read-write (see own())
        self.env = env or {}
        self.sockets = ""                 # a writable folder bound at the same path (a kernel's unix sockets)
        self.mode = mode()
        self.uid = _free_uid() if self.mode == ROOT else os.getuid()
        self.token = secrets.token_hex(8)  # names this sandbox's bwrap among the launcher's children
        self.launcher = os.getpid()
        self.outcome = Outcome()
        self._stop = threading.Event()
        self._namespace = ""              # USERNS: the PID namespace, once its init is found
        self._init = 0
        self._ended = False               # USERNS: its namespace is gone (its number may be another's now)
        for host, _ in self.writable:
            self.own(host)

    def own(self, path: str) -> None:
        """Make a host file or folder the sandbox must write to its own: chown to its uid as root;
        as any other user the sandbox runs as that user, and the path must already be theirs."""
        if self.mode == ROOT:
            os.chown(path, self.uid, self.uid)
        elif os.stat(path).st_uid != self.uid:
            raise TitoError(f"{path} must belong to you (uid {self.uid}) for the sandbox to write to it")

    def command(self, argv: list[str]) -> list[str]:
        made: set[str] = set()
        cmd = [shutil.which("bwrap") or "bwrap"]
        if self.mode == USERNS:
            cmd += ["--unshare-user", "--cap-drop", "ALL"] + (["--disable-userns"] if _bwrap_can("--disable-userns")
                                                               else [])
        cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--hostname", f"box-{self.token}",
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
        cmd += ["--chdir", "/tmp"]
        if self.mode == ROOT:
            # bwrap cannot mkdir in the tmpfs as the sandbox uid: start in /tmp, the payload makes HOME
            cmd += [shutil.which("setpriv") or "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}",
                    "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        else:
            # set inside the namespace, where the kernel counts the sandbox's own tasks (see the top)
            nproc = self.limits.processes
            if not _nproc_per_namespace():
                nproc += _tasks_of_uid(self.uid)
            cmd += [shutil.which("prlimit") or "prlimit", f"--nproc={nproc}:{nproc}", "--"]
        cmd += ["/bin/sh", "-c", f'mkdir -p {HOME} && cd {HOME} && exec "$@"', "sandbox", *argv]
        return cmd

    def preexec(self) -> None:
        """Limits inherited by every process in the sandbox (runs between fork and exec of bwrap)."""
        limit = self.limits
        pairs = [(resource.RLIMIT_FSIZE, limit.file_mb * 2**20), (resource.RLIMIT_CPU, limit.cpu_seconds),
                 (resource.RLIMIT_NOFILE, limit.open_files), (resource.RLIMIT_CORE, 0)]
        if self.mode == ROOT:  # the sandbox's own uid: exact; as a user it is set inside the namespace
            pairs.append((resource.RLIMIT_NPROC, limit.processes))
        if limit.memory_mb > 0:
            pairs.append((resource.RLIMIT_AS, limit.memory_mb * 2**20))
        for which, value in pairs:
            resource.setrlimit(which, (value, value))

    def _find_namespace(self) -> None:
        """USERNS: find this sandbox's bwrap (a child of the launcher, named by the token) and the
        namespace of its child, the namespace's init. A student's process cannot be the
        launcher's child, so this cannot be spoofed from inside."""
        pids = _pids()
        for pid in pids:
            if _ppid(pid) != self.launcher:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    if f"box-{self.token}".encode() not in handle.read().split(b"\0"):
                        continue
            except OSError:
                continue
            for child in pids:
                if _ppid(child) == pid and _pid_namespace(child) not in ("", _pid_namespace(pid)):
                    self._init, self._namespace = child, _pid_namespace(child)
                    return

    def _namespace_alive(self) -> bool:
        """USERNS: whether the sandbox's PID namespace still exists. The kernel reuses a namespace's
        number as soon as it ends (the next sandbox may get it), so the namespace is known by its
        init: once init has left it, the kernel has ended every process in it, and it is over for good."""
        if not self._namespace and not self._ended:
            self._find_namespace()
        if self._namespace and _pid_namespace(self._init) != self._namespace:
            self._namespace, self._ended = "", True
        return bool(self._namespace)

    def processes(self) -> list[int]:
        """Its live processes (zombies are dead already; their parent or the kernel reaps them)."""
        if self.mode == ROOT:
            return [pid for pid in _pids() if _uid_of(pid) == self.uid and not _zombie(pid)]
        if not self._namespace_alive():
            return []
        found = [pid for pid in _pids() if _pid_namespace(pid) == self._namespace and not _zombie(pid)]
        return found if self._namespace_alive() else []  # ended during the scan: those may be another's

    def watch(self, poll: float = 0.2) -> threading.Thread:
        """Start the watchdog: the whole tree's resident memory over the cap kills the tree (as a
        user also: more tasks in its namespace than the process cap)."""
        cap = self.limits.memory_mb * 2**20

        def run() -> None:
            while not self._stop.wait(poll):
                alive = self.processes()
                rss = sum(_rss_bytes(pid) for pid in alive)
                self.outcome.peak_rss_mb = max(self.outcome.peak_rss_mb, rss / 2**20)
                if cap > 0 and rss > cap:
                    self.outcome.killed_for = "memory"
                    self._kill_all()
                elif self.mode == USERNS and sum(_tasks(p) for p in alive if p != self._init) > self.limits.processes:
                    self.outcome.killed_for = "processes"
                    self._kill_all()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def _kill_all(self) -> None:
        if self.mode == USERNS:
            self._kill_namespace()
            return
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

    def _kill_namespace(self, seconds: float = 10.0) -> None:
        """SIGKILL the namespace's init (the kernel kills every process in it, then init ends) and
        wait until init has left it (the kernel reaps every other member of the namespace before that)."""
        end = time.monotonic() + seconds
        while self._namespace_alive() and time.monotonic() < end:
            try:
                os.kill(self._init, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.02)

    def kill(self) -> None:
        """End every process the sandbox started, and the watchdog."""
        self._stop.set()
        self._kill_all()
