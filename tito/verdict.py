"""The grader's verdict on one submission, in a fresh plain-Python process of its own.

    python verdict.py < spec.json      (run inside the submission's sandbox; stdlib only)

The student's notebook already ran in its IPython kernel (for the feedback they see); that
kernel's outputs and scores count for nothing. Here the same code cells run again, in order,
in one namespace, with no IPython (no custom exception handler, input transformer or event
hook exists to install). Each graded cell runs in a copy of that namespace (a student's
function writing to its globals() cannot reach the test), with the grader's names bound
first: builtins, the modules the release notebook imports (numpy, math, ...) as this process
loaded them before any student code ran, and every name the grader's own cells bound (their
imports, helpers and fixtures), whatever the student's cells rebound since. Around every
graded cell the grader's invariants are checked: no attribute of builtins or of those
modules replaced, the test's names not rebound while it ran, no trace/profile function, no
other thread with the submission's code on its stack (after a short grace to end), no
excepthook. An audit hook refuses, as it happens, any change to a class or function of those
modules or of this script and any swap of a function's code (types.coroutine's flag aside). Tampering
fails every graded cell from there on and is reported; it never scores.

Every cell runs in one worker thread the grader starts before any student code (_cell_worker): a
frame of student code has only that loop and threading's bootstrap below it, never the grader's
bookkeeping (plan, results, nonce, the answer's stdout), which stays in the main thread. The worker
writes each outcome as one record to a pipe after the cell's code has returned; the main thread reads
it once the worker waits again, checking the count of cells it ran and the code and namespace it ran
(a forged or extra record is tampering). Frames stay out of reach: the hook refuses sys._getframe and
a traceback's, generator's or coroutine's frame (or a frame's code) in the main thread, where a
student's finalizer may run (refused without blame: logging in a __del__ is honest), and refuses and
reports in any thread sys._current_frames and _current_exceptions, gc's lists of objects, referrers
and referents, a trace or profile function and opening this process's /proc mem (the grader's own
stray-thread check is granted its frames once per call). A cell past its time gets an exception raised
in the worker (PyThreadState_SetAsyncExc); one that does not stop within a grace (blocked in C) fails
and is left behind, and a new worker runs the cells after it.

A graded cell's ==, !=, in and not in go through the grader's referee (the cell is rewritten
so): the comparison runs as written, then an operand whose == or != ignores its argument (a
student's object that equals anything, or differs from everything) fails the test. NumPy's
comparisons (np.allclose, isclose, array_equal, array_equiv, numpy.testing's asserts) are replaced,
before any student code runs, by ones that ask them with honest values only: a value whose class
answers NumPy's functions or ufuncs itself (__array_function__, __array_ufunc__) fails the test, as
it does as an operand of a graded cell's ==, !=, in, not in or `-`. CuPy's arrays, imported first
where installed, are trusted by identity.

Everything this script calls once student code has run was bound before (defaults, locals),
so rebinding a name of this script or of the modules it uses changes nothing here.

The answer goes to a copy of stdout taken before student code runs, tagged with a nonce the
grader chose; stdout and stderr themselves go nowhere (hidden tests never reach the student).
Spec: {"nonce": str, "timeout": seconds per cell, "trusted": [module names], "cells": [{"source": str,
"grade_id": str | null, "grader": bool (the release's own cell, not the student's),
"theirs": [names the instructor's answer binds: the student's to rebind] (answer cells)}]}.
Answer: {"nonce", "cells": {grade_id: {"passed": bool, "error": str}}, "tampered": str}.
"""

import _thread
import ast
import builtins
import dis
import gc
import importlib
import importlib.util
import itertools
import json
import operator
import os
import signal
import sys
import threading
import time
import types
from json.encoder import encode_basestring_ascii as _quote  # C: nothing a student can patch

_BUILTIN_NAMES = frozenset(n for n in dir(builtins) if not n.startswith("__"))  # not __name__: the cells' is __main__
_MISSING = object()
_INTERPRETER = tuple({os.path.join(os.path.realpath(p), "") for p in (sys.prefix, sys.base_prefix)})
# The modules this script itself relies on: protected like the grader's.
_OWN = ("builtins", "math", "operator", "itertools", "json", "json.encoder", "os", "posix", "signal", "sys",
        "threading", "_thread", "importlib", "ast", "types")
_SYS_DATA = frozenset({"stdout", "stderr", "stdin", "path", "argv", "ps1", "ps2", "last_type", "last_value",
                       "last_traceback", "last_exc", "tracebacklimit", "dont_write_bytecode", "path_importer_cache"})
# Hooks a student may set (a distributed lesson reports a rank's failure with threading.excepthook): they
# run for a thread's or a finalizer's exception, never for a failed assert of a test. sys.excepthook and
# sys.displayhook stay guarded.
_THEIR_HOOKS = {"threading": frozenset({"excepthook"}), "sys": frozenset({"unraisablehook"})}
# Imported before the audit hook: importing asyncio (unittest.mock and tqdm.auto import it) runs
# types.coroutine, which sets a function's __code__.
_PRELOADED = ("asyncio", "unittest.mock")
# NumPy's own array subclasses that `import numpy` does not load: imported first, so that _honest_values
# counts them as NumPy's (a masked array keeps its mask) and not as a student's subclass
_NUMPYS_OWN = ("numpy.ma",)


def _snapshot(modules, loose=()):
    """(name -> (module, a copy of its namespace), [(class, a copy of its namespace)]): what the
    invariants compare against. For `loose` modules (stdlib the tests import, sys) only functions,
    classes and modules count: their plain data (tempfile.tempdir, sys.stdout) may change by itself."""
    found, classes, seen = {}, [], set()
    for name, module in modules.items():
        space = dict(vars(module))
        if name in loose:
            theirs = _THEIR_HOOKS.get(name, ())
            space = {k: v for k, v in space.items() if k not in _SYS_DATA and k not in theirs and
                     isinstance(v, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType))}
        found[name] = (module, space)
        for value in space.values():
            if isinstance(value, type) and id(value) not in seen:
                seen.add(id(value))
                classes.append((value, dict(vars(value))))
    return found, classes


def _protected_ids(snapshot):
    """ids of the functions and modules the audit hook guards: the snapshot's modules, their
    functions, their classes' functions, and what numpy's dispatchers wrap."""
    modules, classes = snapshot
    ids = set()
    for module, space in modules.values():
        ids.add(id(module))
        for value in space.values():
            if callable(value) and not isinstance(value, type):
                ids.add(id(value))
                for inner in ("_implementation", "__wrapped__", "__func__"):
                    wrapped = getattr(value, inner, None)
                    if isinstance(wrapped, types.FunctionType):
                        ids.add(id(wrapped))
    for _, members in classes:
        ids.update(id(member) for member in members.values() if isinstance(member, types.FunctionType))
    return ids


_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code"})
# Refused in any thread once student code may run: each hands out frames or objects (the grader's among
# them), or a way to rewrite a running frame's locals.
_NEVER = frozenset({"sys._current_frames", "sys._current_exceptions", "gc.get_objects", "gc.get_referrers",
                    "gc.get_referents", "sys.settrace", "sys.setprofile"})


def _guard(ids, alarms, gate, main):
    """An audit hook (it cannot be removed): changing a protected function or module, or any
    function's code, is refused and remembered. One code change is not: types.coroutine's (asyncio's
    import runs it), which sets only the CO_ITERABLE_COROUTINE flag of a function that is not the
    grader's. Once `gate[0]` is set (student code may run) it also refuses, and remembers: in `main`,
    the grader's thread, any way to a frame (sys._getframe, a traceback's, generator's or coroutine's
    frame, a frame's code), which a student's finalizer or weakref callback running there would
    follow (f_back) to the grader's own; in any thread, the calls that list threads' frames or every
    object (the grader's own sys._current_frames aside, granted once by `gate[1]`; its f_code reads by
    `gate[2]`), a trace or profile function (it could rewrite the cell worker's locals), and opening
    this process's memory. Only locals and C calls: nothing to patch."""
    try:
        procfs = os.stat("/proc/self").st_dev
    except OSError:
        procfs = None

    def hook(event, args, _ids=ids, _alarms=alarms, _events=frozenset({"object.__setattr__", "object.__delattr__"}),
             _id=id, _type=type, _function=types.FunctionType, _code=types.CodeType, _coroutine=0x100,
             _refuse=PermissionError, _gate=gate, _main=main, _me=_thread.get_ident, _never=_NEVER,
             _watched=_NEVER | {"sys._getframe", "object.__getattr__", "open"}, _frame_attrs=_FRAME_ATTRS,
             _str=str, _bytes=bytes, _stat=os.stat, _procfs=procfs, _private=0o100600, _error=Exception):
        if event in _events:
            if event == "object.__setattr__" and args[1] == "__code__" and _id(args[0]) not in _ids \
                    and _type(args[0]) is _function and _type(args[2]) is _code:
                old, new = args[0].__code__, args[2]
                # code == compares the bytecode, constants (by identity, beyond Python's own types), names
                # and tables: not a student's __eq__
                if new.co_flags & ~_coroutine == old.co_flags & ~_coroutine and \
                        new.replace(co_flags=old.co_flags) == old:
                    return
            if args[1] == "__code__" or _id(args[0]) in _ids:
                _alarms.append(f"{event[7:]}({args[1]!r}) on a grader's object")
                raise _refuse("the grader's objects are read-only here")
            return
        if event not in _watched or not _gate[0]:
            return
        if event == "open":
            path = args[0]
            if _type(path) is _bytes:
                path = path.decode("utf-8", "surrogateescape")
            if _type(path) is not _str:
                return
            mem = path.rstrip("/").rsplit("/", 1)[-1] == "mem"
            try:  # a link to it, say
                found = _stat(path)
                mem = mem or found.st_dev == _procfs and found.st_mode == _private
            except _error:
                pass
            if not mem:
                return
            why = f"open({path!r}): the process's memory"
        elif event == "object.__getattr__":
            if args[1] not in _frame_attrs or _me() != _main or args[1] == "f_code" and _gate[2]:
                return
            # a student's finalizer freed here (logging in __del__, say): refused, not held against them
            raise _refuse(f"{args[1]} is not readable in the grader's thread")
        elif event == "sys._getframe":
            if _me() != _main:
                return  # the cells' own thread: namedtuple, typing, logging and the lessons need it
            raise _refuse("sys._getframe is refused in the grader's thread")
        elif event == "sys._current_frames" and _gate[1] and _me() == _main:
            _gate[1] = False  # the grader's own call, once
            return
        else:
            why = "a trace or profile function was installed" if event in ("sys.settrace", "sys.setprofile") \
                else f"{event} was called"
        _alarms.append(why)
        raise _refuse("refused while grading: " + why)

    return hook


def _threads_frames(gate, _current=sys._current_frames, _enabled=gc.isenabled, _disable=gc.disable,
                    _enable=gc.enable, _refused=PermissionError):
    """sys._current_frames() for the grader's thread, {} if refused: granted for this one call, with
    the collector off (no finalizer of the student's runs here before the hook sees the call)."""
    was = _enabled()
    _disable()
    gate[1] = True
    try:
        return _current()
    except _refused:  # remembered by the hook
        return {}
    finally:
        gate[1] = False
        if was:
            _enable()


def _trusted_code(grader_cells):
    """(file name prefixes, file names) of the code that is not the submission's: the interpreter's
    and its site-packages' (frozen modules included), and the grader's own cells."""
    places = {sys.prefix, sys.base_prefix}
    prefixes = {os.path.join(p, "") for p in places | {os.path.realpath(p) for p in places}} | {"<frozen "}
    return tuple(sorted(prefixes)), frozenset(grader_cells)


def _stray_thread(trusted, workers, gate, _frames=_threads_frames, _me=threading.get_ident, _sleep=time.sleep,
                  _clock=time.monotonic, _grace=1.5, _parked=threading.Condition.wait.__code__, _type=type,
                  _str=str, _startswith=str.startswith):
    """Whether a thread besides this one and the grader's cell `workers` (threading's, or a raw _thread's:
    all that have a Python frame) has the submission's code on its stack, once such threads had `_grace`
    seconds to end. A thread running only the library's code (an idle pool worker, tqdm's monitor) does
    not count, nor one parked in Condition.wait without a timeout (a producer on a full queue): only
    another thread wakes it. Only locals and C calls; a code object's file name is read as a str of
    Python's own. The frames' f_code is read under `gate[2]` (the hook refuses it in this thread else)."""
    prefixes, cells = trusted
    deadline = _clock() + _grace
    while True:
        me, suspect = _me(), False
        gate[2] = True
        try:
            for ident, frame in _frames(gate).items():
                if ident == me or ident in workers or \
                        frame.f_code is _parked and frame.f_locals.get("timeout", 0) is None:
                    continue
                while frame is not None and not suspect:
                    name = frame.f_code.co_filename
                    suspect = not (_type(name) is _str and (name in cells or _startswith(name, prefixes)))
                    frame = frame.f_back
                if suspect:
                    break
        finally:
            gate[2] = False
        if not suspect or _clock() > deadline:
            return suspect
        _sleep(0.01)


def _changed(snapshot, excepthook, alarms, trusted, workers, gate, _sys=sys, _gettrace=sys.gettrace,
             _getprofile=sys.getprofile, _stray=_stray_thread, _modules=sys.modules, _missing=_MISSING, _callable=callable,
             _isinstance=isinstance, _kinds=(classmethod, staticmethod, property)):
    """"" if the grader's world is as it was, else what changed (only locals and C calls)."""
    if alarms:
        return alarms[0]
    if _gettrace() is not None or _getprofile() is not None:
        return "a trace or profile function was installed"
    if _stray(trusted, workers, gate):
        return "a thread running the submission's code was left running"
    if _sys.excepthook is not excepthook:
        return "sys.excepthook was replaced"
    modules, classes = snapshot
    for name, (module, before) in modules.items():
        if _modules.get(name) is not module:
            return f"sys.modules[{name!r}] was replaced"
        now = module.__dict__
        for attr, value in before.items():
            if attr.startswith("__") and attr not in ("__import__", "__build_class__"):
                continue
            if now.get(attr, _missing) is not value:
                return f"{name}.{attr} was replaced or deleted"
    for cls, before in classes:  # a method replaced, added (an __eq__ that says yes) or deleted
        now = cls.__dict__
        for attr, value in now.items():
            if before.get(attr, _missing) is not value and (_callable(value) or _isinstance(value, _kinds)):
                return f"{cls.__module__}.{cls.__qualname__}.{attr} was replaced or added"
        for attr in before:
            if attr not in now:
                return f"{cls.__module__}.{cls.__qualname__}.{attr} was deleted"
    return ""


def bound_names(source):
    """The names a cell binds at its top level (not inside its functions or classes)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names, todo = set(), list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            todo.extend(node.decorator_list)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            continue
        if isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _sets_globals(source):
    """Whether a cell declares `global` names (a test that instruments the student's namespace)."""
    try:
        return any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(source)))
    except SyntaxError:
        return False


def _grader_imports(sources):
    """alias -> module for the grader's top-level `import X [as Y]`, and every module it imports."""
    aliases, modules = {}, set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    modules.add(alias.name)
                    if node in tree.body:
                        aliases[alias.asname or alias.name.split(".")[0]] = \
                            alias.name if alias.asname else alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
    return aliases, modules


def _interpreters(name):
    """Whether module `name` comes with the interpreter or its site-packages, found without running
    any of it (the submission's package is never imported before its cells run)."""
    top = name.split(".")[0]
    if top == "tinytorch":
        return False
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = spec.origin if spec.has_location else None
    if not origin:
        return True  # builtin or frozen
    return _inside_interpreter(origin)


def _installed(module):
    """A module of the interpreter or its site-packages (the grader's), not the submission's package."""
    where = getattr(module, "__file__", None)
    if not where:
        return True
    return _inside_interpreter(where)


def _inside_interpreter(path):
    """Whether `path` is a file of the interpreter or its site-packages."""
    return os.path.realpath(path).startswith(_INTERPRETER)


class _Inert:
    """Accepts any call or attribute and does nothing (IPython's API, absent here)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _Inert()

    def __getattr__(self, name):
        return _Inert()


class CellTimeout(BaseException):
    pass


_TIMED_OUT = "CellTimeout: the cell ran past its time"
_GRACE = 2.0  # seconds a cell has to stop once interrupted


def _on_alarm(signum, frame):
    """SIGALRM and SIGINT do nothing here (a cell's timeout is the grader's thread waiting on the worker)."""


def _cell_worker(slot, go, done, ready, outbox, _exec=exec, _type=type, _str=str, _base=BaseException,
                 _timeout=CellTimeout, _timed_out=_TIMED_OUT, _getframe=sys._getframe, _write=os.write, _id=id):
    """The grader's cell worker, a thread of its own: every cell runs here, one at a time, so a frame
    of student code has only this function and threading's bootstrap below it, never the grader's
    bookkeeping. Each `go` hands it slot[0], (code, namespace); it runs it, then writes one record,
    "count id(code) id(namespace) passed error-as-hex", to the pipe `outbox` as its last act before it
    waits again, and releases `done`. The grader's thread reads the pipe once this frame (published in
    `ready`) waits again: a student's code has ended before its cell's record is written, and a record it
    forges makes two."""
    n = 0
    ready.append(_getframe())
    while True:
        try:  # an interruption meant for a cell that lands in this loop's own code
            while True:
                go.acquire()  # parked: the grader's thread knows this line
                passed, error = False, _timed_out
                code, space = slot[0]
                n, ran = n + 1, b"%d %d" % (_id(code), _id(space))  # what it was handed, for the grader to check
                try:
                    _exec(code, space)
                    passed, error = True, ""
                except _base as err:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt: a failure too
                    if _type(err) is _timeout:
                        error = _timed_out
                    else:
                        try:
                            error = f"{_type(err).__name__}: {_str(err)[:300]}"
                        except _base:  # noqa: BLE001 -- an exception whose str() raises
                            error = "an exception whose message could not be read"
                code = space = None  # the student's objects go here, in this thread, before the record
                _write(outbox, b"%d %s %d %s\n" % (n, ran, passed, error.encode("utf-8", "replace").hex().encode()))
                try:
                    done.release()
                except _base:  # noqa: BLE001 -- released by someone else: the pipe says what happened
                    pass
        except _base:  # noqa: BLE001 -- the cell's outcome is its timeout: no record, the grader says so
            pass


def _parked_line(code, _method="acquire"):
    """The line on which the cell worker waits for its next cell."""
    line = None
    for instruction in dis.get_instructions(code):
        if isinstance(getattr(instruction, "starts_line", None), int) and instruction.starts_line is not True:
            line = instruction.starts_line
        if instruction.argval == _method:
            return getattr(instruction, "line_number", None) or line
    raise RuntimeError("the cell worker has no wait")


def _start_worker(timeout, alarms, _grace=_GRACE):
    """(perform(code, namespace) -> (passed, error), or None when the cell could not be stopped; the
    worker's thread id). Everything perform calls is bound here, before student code runs (a worker that
    could not be stopped is left behind, and a new one started the same way)."""
    slot, ready, go, done = [None], [], _thread.allocate_lock(), _thread.allocate_lock()
    inbox, outbox = os.pipe()
    os.set_blocking(inbox, False)
    go.acquire()
    done.acquire()
    worker = threading.Thread(target=_cell_worker, args=(slot, go, done, ready, outbox), name="grader-cells",
                              daemon=True)
    worker.start()
    wait_line = _parked_line(_cell_worker.__code__)
    while not ready or ready[0].f_lineno != wait_line:
        time.sleep(0.001)
    frame, ident = ready[0], worker.ident
    try:
        import ctypes

        raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
            ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
        # the same call with NULL takes back an interruption that has not landed yet
        take_back = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
            ("PyThreadState_SetAsyncExc", ctypes.pythonapi))
    except BaseException:  # noqa: BLE001 -- no ctypes here: a cell past its time cannot be interrupted
        raise_in = take_back = None
    sequence = [0]

    def perform(code, space, _slot=slot, _go=go, _done=done, _frame=frame, _line=wait_line, _ident=ident,
                _raise_in=raise_in, _timeout=CellTimeout, _alarms=alarms, _sequence=sequence, _clock=time.monotonic,
                _limit=timeout, _grace=_grace, _min=min, _max=max, _base=BaseException, _inbox=inbox,
                _read=os.read, _bytes=bytes, _timed_out=_TIMED_OUT, _take_back=take_back, _id=id):
        _sequence[0] += 1
        seq = _sequence[0]
        _slot[0] = (code, space)
        try:
            _go.release()
        except _base:  # noqa: BLE001 -- released by someone else: the worker ran what it should not have
            _alarms.append("the grader's cell worker was started by someone else")
        deadline = _clock() + _limit if _limit else None
        woken = interrupted = False
        received = b""
        while True:
            try:
                received += _read(_inbox, 65536)
            except _base:  # noqa: BLE001 -- nothing written yet
                pass
            if received.endswith(b"\n") and _frame.f_lineno == _line:  # a record, and the worker waits again
                if interrupted:  # it finished as it was interrupted: the interruption must not hit the next cell
                    _take_back(_ident, None)
                try:
                    received += _read(_inbox, 65536)
                except _base:  # noqa: BLE001 -- nothing more: the one record
                    pass
                records = received.split(b"\n")[:-1]
                fields = records[0].split(b" ") if len(records) == 1 else ()
                if len(fields) != 5 or fields[:3] != [b"%d" % seq, b"%d" % _id(code), b"%d" % _id(space)] \
                        or fields[3] not in (b"0", b"1"):
                    _alarms.append("the grader's cell worker reported a cell it was not given, or someone else "
                                   "wrote its report")
                    return False, "tampering"
                return fields[3] == b"1", _bytes.fromhex(fields[4].decode("ascii")).decode("utf-8", "replace")
            if interrupted and not received and _frame.f_lineno == _line:
                return False, _timed_out  # stopped by the interruption: the worker waits again, with no record
            now = _clock()
            if deadline is not None and now >= deadline:
                if interrupted or _raise_in is None:
                    return None
                _raise_in(_ident, _timeout)
                interrupted, deadline = True, now + _grace
            wait = 0.0005 if woken else 0.05 if deadline is None else _min(0.05, _max(deadline - now, 0.0005))
            woken = _done.acquire(True, wait) or woken

    return perform, ident


# ---------------------------------------------------------------- the referee of a graded cell's comparisons

_EQUALS_ANYTHING = "the value compared in this test claims to equal anything (its __eq__ ignores its argument)"
_EQUALS_NOTHING = ("the value compared in this test claims to differ from everything, itself included "
                   "(its __eq__ or __ne__ ignores its argument)")
_CONTAINS_ANYTHING = "the container in this test claims to contain anything (its __contains__ ignores its argument)"
_CONTAINERS = (tuple, list, set, frozenset, dict)


def _subclasses(base):
    """base and every class derived from it so far."""
    found, todo = set(), [base]
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.add(cls)
            todo.extend(cls.__subclasses__())
    return found


def _referee(numpy, numeric_check, _limit=1000):
    """(Operand, what the invariants must guard): the grader's stand-in for each operand of a graded
    cell's ==, !=, in and not in (see _Wrap). The comparison runs as written; then an operand, or an
    element of a tuple, list, set, dict or object array among them (the first `_limit`), whose == or !=
    answers without looking at its argument fails the test: one that equals a fresh object of the
    grader's, or differs from itself. Python's and numpy's own values are not asked (NaN is honest).
    `numeric_check` (see _honest_values) checks each operand, and (Operand.numeric) each of the cell's `a - b`.
    Made before student code runs; everything it calls is bound here (defaults). Types are known by
    their id: `kind in {int}` would ask a student's metaclass for its __eq__."""
    plain = frozenset(map(id, {int, float, complex, bool, str, bytes, type(None), type,
                               *(_subclasses(numpy.generic) if numpy is not None else ())}))
    arrays = frozenset(map(id, _subclasses(numpy.ndarray) if numpy is not None else ()))
    containers = frozenset(map(id, _CONTAINERS))

    class Nothing:
        """A fresh one per question: nothing honest equals it."""
        __slots__ = ()

    def says(op, a, b, _type=type, _id=id, _arrays=arrays, _bool=bool, _error=Exception):
        """What `op(a, b)` answers: True, False, or None (it raised, or an array of mixed answers)."""
        try:
            answer = op(a, b)
            if _id(_type(answer)) in _arrays:
                return None if answer.size == 0 else True if answer.all() else False if not answer.any() else None
            return _bool(answer)
        except _error:  # a value that refuses the comparison claims nothing
            return None

    def lie(value, _says=says, _nothing=Nothing, _eq=operator.eq, _ne=operator.ne):
        """Why value's == or != ignores its argument, or "" (four questions: its answers must vary)."""
        nothing = _nothing()
        if _says(_eq, value, nothing) is True or _says(_ne, value, nothing) is False:
            return _EQUALS_ANYTHING
        if _says(_eq, value, value) is False or _says(_ne, value, value) is True:
            return _EQUALS_NOTHING
        return ""

    def hostile(value, _lie=lie, _type=type, _id=id, _plain=plain, _arrays=arrays, _issubclass=issubclass,
                _bases=_CONTAINERS, _containers=containers, _dict=dict, _islice=itertools.islice, _limit=_limit,
                _numeric=numeric_check):
        """Why value, or an element of it, is no honest operand; "" if none is. Containers are read with
        their base type's own methods: a subclass cannot hide its elements (it is asked itself too). One
        whose class answers NumPy's ufuncs itself (its == would) is refused by `numeric_check`."""
        todo, budget = [value], _limit
        while todo and budget > 0:
            value = todo.pop()
            budget -= 1
            kind = _id(_type(value))
            if kind in _plain:
                continue
            if kind in _arrays:
                if value.dtype.hasobject:  # its elements compare with their own __eq__
                    todo.extend(value.flat[:budget].tolist())
                continue
            for base in _bases:  # (evil, 72) == (36, 72) asks evil
                if _issubclass(_type(value), base):
                    todo.extend(_islice(_dict.items(value) if base is _dict else base.__iter__(value), budget))
                    break
            if kind in _containers:
                continue
            _numeric(value)
            why = _lie(value)
            if why:
                return why
        return ""

    def compared(op, left, right, _hostile=hostile, _error=AssertionError):
        """left == right (or !=), refused if an operand ignores the other."""
        answer = op(left, right)
        why = _hostile(left) or _hostile(right)
        if why:
            raise _error(why)
        return answer

    def contained(item, container, _hostile=hostile, _says=says, _nothing=Nothing, _type=type, _id=id,
                  _arrays=arrays, _issubclass=issubclass, _bases=_CONTAINERS,
                  _known=plain | arrays | containers, _hasattr=hasattr, _contains=operator.contains,
                  _error=AssertionError, _numeric=numeric_check):
        """item in container, refused if item ignores what it is compared with (`x in (1, 2)` asks x),
        or so does an element, or the container claims to hold anything, or answers NumPy's ufuncs itself."""
        answer = item in container
        _numeric(container)
        kind = _type(container)
        why = _hostile(item)
        if not why and (_id(kind) in _arrays or _issubclass(kind, _bases)):
            why = _hostile(container)
        mine = _id(kind) not in _known and _hasattr(kind, "__contains__")  # (an iterator has none: asking consumes it)
        if not why and mine and _says(_contains, container, _nothing()) is True:
            why = _CONTAINS_ANYTHING
        if why:
            raise _error(why)
        return answer

    class Operand:
        """One operand of a graded cell's comparison, in the grader's hands."""
        __slots__ = ("value",)
        __hash__ = None
        numeric = staticmethod(numeric_check)  # `a - b`'s operands: see _Wrap

        def __init__(self, value):
            self.value = value

        def __eq__(self, other, _compared=compared, _op=operator.eq):
            return _compared(_op, self.value, other.value)

        def __ne__(self, other, _compared=compared, _op=operator.ne):
            return _compared(_op, self.value, other.value)

        def __contains__(self, item, _contained=contained):
            return _contained(item.value, self.value)

        # the order comparisons of a chain (0 < x == y) run as written
        def __lt__(self, other, _op=operator.lt):
            return _op(self.value, other.value)

        def __le__(self, other, _op=operator.le):
            return _op(self.value, other.value)

        def __gt__(self, other, _op=operator.gt):
            return _op(self.value, other.value)

        def __ge__(self, other, _op=operator.ge):
            return _op(self.value, other.value)

    return Operand, [Nothing, Operand, says, lie, hostile, compared, contained]


class _Wrap(ast.NodeTransformer):
    """Every operand of a comparison that asks ==, !=, in or not in becomes `name(operand)` (the
    referee's Operand), and every operand of `-`, and argument of a NumPy function called through one
    of `numpys` (the grader's names for numpy: np.abs(got), np.isfinite(got)), becomes
    `name.numeric(operand)`. A chain keeps its meaning: each operand is still evaluated once, each pair
    compared in order until one is false. A chain with `is` is left as written (the identity of a
    wrapped operand is not the operand's); no graded test has one."""

    def __init__(self, name, numpys=frozenset()):
        self.name, self.numpys = name, numpys

    def visit_Compare(self, node):
        self.generic_visit(node)
        ops = tuple(type(op) for op in node.ops)
        if any(op in (ast.Eq, ast.NotEq, ast.In, ast.NotIn) for op in ops) and ast.Is not in ops \
                and ast.IsNot not in ops:
            node.left = self._wrap(node.left)
            node.comparators = [self._wrap(c) for c in node.comparators]
        return node

    def visit_BinOp(self, node):
        """`a - b` becomes `name.numeric(a) - name.numeric(b)` (np.abs(got - want).max() < tol)."""
        self.generic_visit(node)
        if isinstance(node.op, ast.Sub):
            node.left, node.right = self._wrap(node.left, "numeric"), self._wrap(node.right, "numeric")
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        root = node.func
        while isinstance(root, ast.Attribute):
            root = root.value
        if node.func is not root and isinstance(root, ast.Name) and root.id in self.numpys:
            node.args = [arg if isinstance(arg, ast.Starred) else self._wrap(arg, "numeric") for arg in node.args]
            for keyword in node.keywords:
                keyword.value = self._wrap(keyword.value, "numeric")
        return node

    def _wrap(self, node, method=""):
        called = ast.copy_location(ast.Name(self.name, ast.Load()), node)
        if method:
            called = ast.copy_location(ast.Attribute(called, method, ast.Load()), node)
        return ast.copy_location(ast.Call(called, [node], []), node)


def _compiled(source, filename, referee="", numpys=frozenset()):
    """(code, None), or (None, why it does not compile); a graded cell's comparisons go through `referee`
    (same file name and line numbers: its tracebacks read as written; `numpys`: see _Wrap)."""
    try:
        tree = source
        if referee:
            try:
                tree = ast.fix_missing_locations(_Wrap(referee, numpys).visit(ast.parse(source, filename)))
            except (SyntaxError, ValueError):  # compiled as written below, it fails the same way
                pass
        return compile(tree, filename, "exec"), None
    except BaseException as err:  # noqa: BLE001 -- a cell that does not compile fails when run
        return None, err


# ---------------------------------------------------------------- NumPy's comparisons, asked with honest values

_OVERRIDES_NUMPY = ("the value compared in this test overrides NumPy's functions ({}): it would answer NumPy's "
                    "comparison itself")
_TOO_DEEP = "the value compared in this test is nested too deeply to be read"
# The comparisons graded tests make, by module: each replaced, before student code runs, by one that asks
# the real function with honest arguments only (_ask_honestly); guarded as that module's own.
_COMPARISONS = {"numpy": ("allclose", "isclose", "array_equal", "array_equiv"),
                "numpy.testing": ("assert_allclose", "assert_array_equal", "assert_array_almost_equal",
                                  "assert_equal", "assert_almost_equal", "assert_approx_equal", "assert_array_less",
                                  "assert_array_almost_equal_nulp", "assert_array_max_ulp")}
# Other libraries' arrays that answer NumPy's functions themselves, and honestly: CuPy's on a GPU (np.allclose
# of cupy arrays is cupy.allclose). Imported before student code where installed, then known by identity.
_FOREIGN_ARRAYS = (("cupy", "ndarray"),)
_PROTOCOLS = ("__array_function__", "__array_ufunc__")  # a class's answers to NumPy's functions, ufuncs
_READ_BY_NUMPY = ("__array__", "__array_interface__", "__array_struct__")  # what NumPy reads an array from


def _foreign_arrays(names=_FOREIGN_ARRAYS):
    """ids of the foreign array types installed here, and of their subclasses so far (imported now)."""
    ids = set()
    for module, attr in names:
        if not _interpreters(module):
            continue
        try:
            ids.update(map(id, _subclasses(getattr(importlib.import_module(module), attr))))
        except BaseException:  # noqa: BLE001 -- installed but unusable here (no CUDA libraries): none to trust
            pass
    return frozenset(ids)


def _honest_values(numpy, foreign, _limit=64):
    """(honest(value), numeric(value), what the invariants must guard), for NumPy's comparisons.

    honest(value) is what a comparison is asked with instead of `value`. Python's and numpy's own
    values, and `foreign` arrays, are themselves. A value whose class answers NumPy's functions or
    ufuncs itself (__array_function__, __array_ufunc__: a student's ndarray subclass, say) is refused:
    np.allclose would return its answer, or `got - want` its zeros. A student's other ndarray subclass
    is viewed as a plain ndarray (its data, none of its methods: an overridden __sub__ answers nothing).
    A value NumPy reads an array from (__array__: a Tensor) is read as NumPy would, and what it gives is
    made honest in turn. Lists, tuples and dicts are rebuilt from their base type's own iteration, their
    elements made honest; an object array's elements are checked. numeric(value), for a graded cell's
    operands (see _Wrap), only refuses such a value (or element of a list or tuple), and returns it.
    Made before student code runs; everything they call is bound here (defaults, no closures). A class's
    attributes are read from its own dicts along its MRO: no metaclass of the student's is asked."""
    plain = frozenset(map(id, {int, float, complex, bool, str, bytes, type(None), *_subclasses(numpy.generic)}))
    arrays = frozenset(map(id, _subclasses(numpy.ndarray)))
    ndarrays = tuple(vars(numpy.ndarray).get(name) for name in _PROTOCOLS)

    def own(kind, name, _mro=type.__dict__["__mro__"].__get__, _vars=type.__dict__["__dict__"].__get__,
            _missing=_MISSING):
        """Class `kind`'s attribute `name` as its classes' own dicts hold it, or _MISSING."""
        for cls in _mro(kind):
            found = _vars(cls).get(name, _missing)
            if found is not _missing:
                return found
        return _missing

    def overrides(kind, _own=own, _protocols=_PROTOCOLS, _ndarrays=ndarrays, _missing=_MISSING, _zip=zip):
        """The first of NumPy's protocols class `kind` answers otherwise than ndarray does, or "" (None
        declines: a Tensor's __array_ufunc__)."""
        for name, numpys in _zip(_protocols, _ndarrays):
            found = _own(kind, name)
            if found is not _missing and found is not None and found is not numpys:
                return name
        return ""

    def inner(value, depth, me, _type=type, _id=id, _known=plain | foreign, _arrays=arrays,
              _issubclass=issubclass, _ndarray=numpy.ndarray, _view=numpy.ndarray.view, _flat=numpy.ndarray.flat,
              _asanyarray=numpy.asanyarray, _overrides=overrides, _own=own, _read=_READ_BY_NUMPY,
              _missing=_MISSING, _sequences=(tuple, list), _dict=dict, _limit=_limit, _error=AssertionError,
              _message=_OVERRIDES_NUMPY, _too_deep=_TOO_DEEP):
        """honest(value) at `depth` (me: this function, for its elements)."""
        kind = _type(value)
        if _id(kind) in _known:
            return value
        if depth > _limit:
            raise _error(_too_deep)
        if _id(kind) not in _arrays:
            for base in _sequences:
                if _issubclass(kind, base):
                    return base([me(item, depth + 1, me) for item in base.__iter__(value)])
            if _issubclass(kind, _dict):
                return {key: me(item, depth + 1, me) for key, item in _dict.items(value)}
            why = _overrides(kind)
            if why:
                raise _error(_message.format(why))
            if not _issubclass(kind, _ndarray):
                for name in _read:
                    if _own(kind, name) is not _missing:
                        return me(_asanyarray(value), depth + 1, me)
                return value  # a number of another kind (Fraction), an iterator: as NumPy reads it
            value = _view(value, _ndarray)
        if value.dtype.hasobject:  # its elements are asked in NumPy's ufuncs
            for item in _flat.__get__(value):
                me(item, depth + 1, me)
        return value

    def honest(value, _inner=inner):
        return _inner(value, 0, _inner)

    def numeric(value, _type=type, _id=id, _known=plain | foreign | arrays, _overrides=overrides,
                _sequences=(tuple, list), _issubclass=issubclass, _error=AssertionError, _message=_OVERRIDES_NUMPY):
        """value, refused if its class answers NumPy's functions or ufuncs itself, or so does an element
        of it as a list or tuple (np.concatenate(steps)); checked by type only: no call of its methods."""
        kind = _type(value)
        if _id(kind) in _known:
            return value
        items = ()
        for base in _sequences:
            if _issubclass(kind, base):
                items = base.__iter__(value)
        for item in (value, *items):
            why = "" if _id(_type(item)) in _known else _overrides(_type(item))
            if why:
                raise _error(_message.format(why))
        return value

    return honest, numeric, [own, overrides, inner, honest, numeric]


def _as_is(value):
    """numeric() where NumPy is not installed: nothing answers NumPy's ufuncs."""
    return value


def _ask_honestly(bound, *args, **kwargs):
    """A NumPy comparison asked with honest arguments (keywords too): bound is (the real function,
    honest()). Installed as a method bound to that tuple (neither is settable); only locals."""
    real, honest = bound
    return real(*[honest(value) for value in args], **{name: honest(value) for name, value in kwargs.items()})


def _ask_comparisons_honestly(modules, honest):
    """Replace each of _COMPARISONS in `modules` (name -> module) with _ask_honestly bound to it."""
    for module_name, names in _COMPARISONS.items():
        module = modules.get(module_name)
        for name in names if module is not None else ():
            real = getattr(module, name, None)
            if callable(real):
                setattr(module, name, types.MethodType(_ask_honestly, (real, honest)))


def run(spec):
    """Run the cells; return ({grade_id: {"passed", "error"}}, what tampering was seen or "")."""
    cells_spec = spec["cells"]
    grader_sources = [c["source"] for c in cells_spec if c.get("grader")]
    aliases, imported = _grader_imports(grader_sources)
    trusted = set(spec.get("trusted", []))
    graders_code = _trusted_code(f"<cell {i}>" for i, c in enumerate(cells_spec) if c.get("grader"))
    for name in sorted(trusted | imported) + list(_PRELOADED) + list(_COMPARISONS) + list(_NUMPYS_OWN):
        if not _interpreters(name):  # the submission's package: its code runs in the cells, timed
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 -- absent here: nothing to pin
            pass
    # NumPy's comparisons ask honest values only (see _honest_values), from before the snapshot on
    numpy = sys.modules.get("numpy")
    numeric, honest_made = _as_is, []
    if numpy is not None and _installed(numpy):
        honest, numeric, honest_made = _honest_values(numpy, _foreign_arrays())
        _ask_comparisons_honestly(sys.modules, honest)
    tops = trusted | {n.split(".")[0] for n in imported} - {"tinytorch"}
    # Everything loaded so far is the grader's (numpy's submodules included); the listed modules
    # wholly, the other modules the tests import (and this script's own) by their functions and classes.
    loaded = {n: m for n, m in list(sys.modules.items()) if isinstance(m, types.ModuleType) and (
        n in _OWN or n.split(".")[0] in tops) and _installed(m)}
    loose = {n for n in loaded if n.split(".")[0] not in trusted}
    loaded[__name__] = sys.modules[__name__]  # this script: "__main__"
    snapshot = _snapshot(loaded, loose | {__name__})
    # The graded cells' comparisons go through the referee, under a name no cell can guess: guarded
    # like the grader's own classes and functions.
    referee, operand, made = "_grader_referee_" + os.urandom(8).hex(), *_referee(loaded.get("numpy"), numeric)
    made += honest_made
    snapshot[1].extend((cls, dict(vars(cls))) for cls in made if isinstance(cls, type))
    alarms, gate, main_thread = [], [False, False, False], threading.get_ident()
    sys.addaudithook(_guard(_protected_ids(snapshot) | {id(thing) for thing in made}, alarms, gate, main_thread))
    excepthook = sys.excepthook
    helpers = {alias: sys.modules[name] for alias, name in aliases.items() if name in sys.modules}
    grader_names = set().union(*(bound_names(s) for s in grader_sources))
    theirs = set().union(*(c.get("theirs", []) for c in cells_spec))
    numpys = frozenset(alias for alias, name in aliases.items() if name == "numpy")
    plan = tuple((c.get("grade_id"), bool(c.get("grader")), frozenset(bound_names(c["source"]) - theirs),
                  _sets_globals(c["source"]),
                  *_compiled(c["source"], f"<cell {i}>", referee if c.get("grade_id") is not None else "", numpys))
                 for i, c in enumerate(cells_spec))
    signal.signal(signal.SIGALRM, _on_alarm)  # a student's alarm or Ctrl-C signal does nothing here
    signal.signal(signal.SIGINT, _on_alarm)
    restart = _start_worker
    timeout = spec.get("timeout", 0)
    perform, worker = restart(timeout, alarms)
    workers = [worker]  # the grader's workers: the one running cells, and any left stuck in a cell
    changed, dict_, str_, type_ = _changed, dict, str, type
    shadowable = _BUILTIN_NAMES - grader_names - theirs  # a lesson may define its own sum() or max()
    # IPython's names, inert: magics (already rewritten into get_ipython() calls by the grader),
    # display() and any hook a student installs do nothing here.
    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": _Inert, "display": _Inert()}
    pinned = {}  # name -> what the grader's own cells bound it to
    cells, tampered = {}, ""
    # From here on student code runs (in the worker): only locals bound above are used, and this thread
    # reaches no frame (the hook refuses it).
    gate[0] = True
    for gid, grader, binds, shared, code, broken in plan:
        if gid is None:
            if code is not None and perform(code, namespace) is None:  # stuck past its time (in C): left
                perform, worker = restart(timeout, alarms)  # behind, a new worker runs the next cells
                workers.append(worker)
            if grader:
                pinned.update({n: namespace[n] for n in binds if n in namespace})
            continue
        tampered = tampered or changed(snapshot, excepthook, alarms, graders_code, workers, gate)
        if tampered:
            cells[gid] = {"passed": False, "error": "not run: " + tampered}
            continue
        # The test reads the grader's names (whatever a student's cell rebound since) from a copy of
        # the namespace, which a function it calls cannot reach through its globals(). A test that
        # sets names in the student's globals itself (`global x`) needs the namespace: it runs there.
        view = namespace if shared else dict_(namespace)
        view.update(pinned)
        view.update(helpers)
        view[referee] = operand
        shadows = {name: view.pop(name) for name in shadowable & view.keys()}
        view["__builtins__"] = builtins
        before = dict_(view)
        if code is None:
            outcome = False, f"{type_(broken).__name__}: {str_(broken)[:300]}"
        else:
            outcome = perform(code, view)
        if outcome is None:  # past its time and not stopped: it fails, a new worker runs the next cells
            perform, worker = restart(timeout, alarms)
            workers.append(worker)
            outcome = False, _TIMED_OUT
        passed, error = outcome
        tampered = tampered or changed(snapshot, excepthook, alarms, graders_code, workers, gate) or (
            view.get(referee) is not operand and "the grader's referee of comparisons was rebound")
        if not shared:  # what the test cell bound stays bound, as in the notebook
            for name, value in view.items():
                if name != "__builtins__" and name != referee and before.get(name, _MISSING) is not value:
                    namespace[name] = value
        for name, value in shadows.items():  # the student's own sum() etc., for their later cells
            namespace.setdefault(name, value)
        pinned.update({n: view[n] for n in binds if n in view})
        if tampered:
            passed, error = False, "tampering: " + tampered
        cells[gid] = {"passed": passed, "error": error}
    tampered = tampered or changed(snapshot, excepthook, alarms, graders_code, workers, gate)
    return cells, tampered


def main():
    spec = json.loads(sys.stdin.read())
    nonce = spec["nonce"]
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    write, flush, quit_, quote = out.write, out.flush, os._exit, _quote
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    cells, tampered = run(spec)
    # Written with C calls only (no json.dumps, which student code could have replaced).
    body = ",".join(quote(gid) + ':{"passed":' + ("true" if cell["passed"] else "false") + ',"error":' +
                    quote(cell["error"]) + "}" for gid, cell in cells.items())
    write('{"nonce":' + quote(nonce) + ',"cells":{' + body + '},"tampered":' + quote(tampered) + "}\n")
    flush()
    quit_(0)  # no atexit hook of the student's runs after the answer


if __name__ == "__main__":
    main()
