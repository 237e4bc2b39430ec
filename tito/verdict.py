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
extra thread, no excepthook. An audit hook refuses, as it happens, any change to a class or
function of those modules or of this script and any swap of a function's code. Tampering
fails every graded cell from there on and is reported; it never scores.

Everything this script calls once student code has run was bound before (defaults, locals),
so rebinding a name of this script or of the modules it uses changes nothing here.

The answer goes to a copy of stdout taken before student code runs, tagged with a nonce the
grader chose; stdout and stderr themselves go nowhere (hidden tests never reach the student).
Spec: {"nonce": str, "timeout": seconds per cell, "trusted": [module names], "cells": [{"source": str,
"grade_id": str | null, "grader": bool (the release's own cell, not the student's),
"theirs": [names the instructor's answer binds: the student's to rebind] (answer cells)}]}.
Answer: {"nonce", "cells": {grade_id: {"passed": bool, "error": str}}, "tampered": str}.
"""

import ast
import builtins
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import types
from json.encoder import encode_basestring_ascii as _quote  # C: nothing a student can patch

_BUILTIN_NAMES = frozenset(dir(builtins))
_MISSING = object()
# The modules this script itself relies on: protected like the grader's.
_OWN = ("builtins", "math", "operator", "json", "json.encoder", "os", "posix", "signal", "sys", "threading",
        "_thread", "importlib", "ast", "types")
_SYS_DATA = frozenset({"stdout", "stderr", "stdin", "path", "argv", "ps1", "ps2", "last_type", "last_value",
                       "last_traceback", "last_exc", "tracebacklimit", "dont_write_bytecode", "path_importer_cache"})


def _snapshot(modules, loose=()):
    """(name -> (module, a copy of its namespace), [(class, a copy of its namespace)]): what the
    invariants compare against. For `loose` modules (stdlib the tests import, sys) only functions,
    classes and modules count: their plain data (tempfile.tempdir, sys.stdout) may change by itself."""
    found, classes, seen = {}, [], set()
    for name, module in modules.items():
        space = dict(vars(module))
        if name in loose:
            space = {k: v for k, v in space.items() if k not in _SYS_DATA and
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


def _guard(ids, alarms, _events=frozenset({"object.__setattr__", "object.__delattr__"}), _id=id,
           _refuse=PermissionError):
    """An audit hook (it cannot be removed): changing a protected function or module, or any
    function's code, is refused and remembered. Only locals and C calls: nothing to patch."""

    def hook(event, args, _ids=ids, _alarms=alarms, _events=_events, _id=_id, _refuse=_refuse):
        if event in _events and (args[1] == "__code__" or _id(args[0]) in _ids):
            _alarms.append(f"{event[7:]}({args[1]!r}) on a grader's object")
            raise _refuse("the grader's objects are read-only here")

    return hook


def _thread_count(_active=threading.active_count, _frames=sys._current_frames, _len=len, _max=max):
    """Python threads running: those started with _thread too, which threading does not count."""
    return _max(_active(), _len(_frames()))


def _changed(snapshot, excepthook, alarms, _sys=sys, _gettrace=sys.gettrace, _getprofile=sys.getprofile,
             _threads=_thread_count, _modules=sys.modules, _missing=_MISSING, _callable=callable,
             _isinstance=isinstance, _kinds=(classmethod, staticmethod, property)):
    """"" if the grader's world is as it was, else what changed (only locals and C calls)."""
    if alarms:
        return alarms[0]
    if _gettrace() is not None or _getprofile() is not None:
        return "a trace or profile function was installed"
    if _threads() != 1:
        return "a thread was left running"
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
    origin = os.path.realpath(origin)
    return any(origin.startswith(os.path.realpath(p) + os.sep) for p in {sys.prefix, sys.base_prefix})


def _installed(module):
    """A module of the interpreter or its site-packages (the grader's), not the submission's package."""
    where = getattr(module, "__file__", None)
    if not where:
        return True
    where = os.path.realpath(where)
    return any(where.startswith(os.path.realpath(p) + os.sep) for p in {sys.prefix, sys.base_prefix})


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


def _on_alarm(signum, frame):
    raise CellTimeout("the cell ran past its time")


def _compiled(source, filename):
    try:
        return compile(source, filename, "exec"), None
    except BaseException as err:  # noqa: BLE001 -- a cell that does not compile fails when run
        return None, err


def run(spec):
    """Run the cells; return ({grade_id: {"passed", "error"}}, what tampering was seen or "")."""
    cells_spec = spec["cells"]
    grader_sources = [c["source"] for c in cells_spec if c.get("grader")]
    aliases, imported = _grader_imports(grader_sources)
    trusted = set(spec.get("trusted", []))
    for name in sorted(trusted | imported):
        if not _interpreters(name):  # the submission's package: its code runs in the cells, timed
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 -- absent here: nothing to pin
            pass
    tops = trusted | {n.split(".")[0] for n in imported} - {"tinytorch"}
    # Everything loaded so far is the grader's (numpy's submodules included); the listed modules
    # wholly, the other modules the tests import (and this script's own) by their functions and classes.
    loaded = {n: m for n, m in list(sys.modules.items()) if isinstance(m, types.ModuleType) and (
        n in _OWN or n.split(".")[0] in tops) and _installed(m)}
    loose = {n for n in loaded if n.split(".")[0] not in trusted}
    loaded[__name__] = sys.modules[__name__]  # this script: "__main__"
    snapshot = _snapshot(loaded, loose | {__name__})
    alarms = []
    sys.addaudithook(_guard(_protected_ids(snapshot), alarms))
    excepthook = sys.excepthook
    helpers = {alias: sys.modules[name] for alias, name in aliases.items() if name in sys.modules}
    grader_names = set().union(*(bound_names(s) for s in grader_sources)) if grader_sources else set()
    theirs = set().union(*(c.get("theirs", []) for c in cells_spec)) if cells_spec else set()
    plan = [(c.get("grade_id"), bool(c.get("grader")), bound_names(c["source"]) - theirs, _sets_globals(c["source"]),
             *_compiled(c["source"], f"<cell {i}>")) for i, c in enumerate(cells_spec)]
    timeout = spec.get("timeout", 0)
    signal.signal(signal.SIGALRM, _on_alarm)
    # From here on student code runs: only locals bound above are used.
    changed, setitimer, timer, exec_, dict_, str_, type_ = _changed, signal.setitimer, signal.ITIMER_REAL, exec, dict, \
        str, type
    shadowable = _BUILTIN_NAMES - grader_names - theirs  # a lesson may define its own sum() or max()
    # IPython's names, inert: magics (already rewritten into get_ipython() calls by the grader),
    # display() and any hook a student installs do nothing here.
    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": _Inert, "display": _Inert()}
    pinned = {}  # name -> what the grader's own cells bound it to
    cells, tampered = {}, ""
    for gid, grader, binds, shared, code, broken in plan:
        if gid is None:
            if code is not None:
                setitimer(timer, timeout)
                try:
                    exec_(code, namespace)
                except BaseException:  # noqa: BLE001 -- a student cell failing is theirs; go on
                    pass
                finally:
                    setitimer(timer, 0)
            if grader:
                pinned.update({n: namespace[n] for n in binds if n in namespace})
            continue
        tampered = tampered or changed(snapshot, excepthook, alarms)
        if tampered:
            cells[gid] = {"passed": False, "error": "not run: " + tampered}
            continue
        # The test reads the grader's names (whatever a student's cell rebound since) from a copy of
        # the namespace, which a function it calls cannot reach through its globals(). A test that
        # sets names in the student's globals itself (`global x`) needs the namespace: it runs there.
        guarded = {**pinned, **helpers}
        view = namespace if shared else dict_(namespace)
        view.update(guarded)
        shadows = {name: view.pop(name) for name in shadowable & view.keys()}
        view["__builtins__"] = builtins
        before = dict_(view)
        passed, error = True, ""
        setitimer(timer, timeout)
        try:
            if code is None:
                raise broken
            exec_(code, view)
        except BaseException as err:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt: a failure too
            passed = False
            try:
                error = f"{type_(err).__name__}: {str_(err)[:300]}"
            except BaseException:  # noqa: BLE001 -- an exception whose str() raises
                error = type_(err).__name__
        finally:
            setitimer(timer, 0)
        tampered = tampered or changed(snapshot, excepthook, alarms)
        if not shared:  # what the test cell bound stays bound, as in the notebook
            for name, value in view.items():
                if name != "__builtins__" and before.get(name, _MISSING) is not value:
                    namespace[name] = value
        for name, value in shadows.items():  # the student's own sum() etc., for their later cells
            namespace.setdefault(name, value)
        pinned.update({n: view[n] for n in binds if n in view})
        if tampered:
            passed, error = False, "tampering: " + tampered
        cells[gid] = {"passed": passed, "error": error}
    tampered = tampered or changed(snapshot, excepthook, alarms)
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
