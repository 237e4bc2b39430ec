"""The grader's verdict on one submission, in a fresh plain-Python process of its own.

    python verdict.py < spec.json      (run inside the submission's sandbox; stdlib only)

The student's notebook already ran in its IPython kernel (for the feedback they see); that
kernel's outputs and scores count for nothing. Here the same code cells run again, in order,
in one namespace, with no IPython (no custom exception handler, input transformer or event
hook exists to install), and each graded cell runs with the grader's helpers bound first:
builtins, and the modules the release notebook imports (numpy, math, ...), rebound to the
objects this process loaded before any student code ran. Around every graded cell the
grader's invariants are checked: no attribute of builtins or of those modules replaced, no
trace/profile function, no extra thread, no excepthook. Tampering fails every graded cell
from there on and is reported; it never scores.

The answer goes to a copy of stdout taken before student code runs, tagged with a nonce the
grader chose; stdout and stderr themselves go nowhere (hidden tests never reach the student).
Spec: {"nonce": str, "timeout": seconds per cell, "trusted": [module names], "cells": [{"source": str,
"grade_id": str | null, "grader": bool (the release's own cell, not the student's)}]}.
Answer: {"nonce", "cells": {grade_id: {"passed": bool, "error": str}}, "tampered": str}.
"""

import ast
import builtins
import importlib
import json
import os
import signal
import sys
import threading

_BUILTIN_NAMES = frozenset(dir(builtins))


def _snapshot(modules):
    """name -> (module, a copy of its namespace): what the invariants compare against."""
    return {name: (module, dict(vars(module))) for name, module in modules.items()}


def _changed(snapshot, excepthook):
    """"" if the grader's world is as it was, else what changed."""
    if sys.gettrace() is not None or sys.getprofile() is not None:
        return "a trace or profile function was installed"
    if threading.active_count() != 1:
        return "a thread was left running"
    if sys.excepthook is not excepthook:
        return "sys.excepthook was replaced"
    for name, (module, before) in snapshot.items():
        if sys.modules.get(name) is not module:
            return f"sys.modules[{name!r}] was replaced"
        now = vars(module)
        for attr, value in before.items():
            if attr.startswith("__") and attr not in ("__import__", "__build_class__"):
                continue
            if now.get(attr, _MISSING) is not value:
                return f"{name}.{attr} was replaced or deleted"
    return ""


_MISSING = object()


def _grader_names(sources, trusted):
    """(alias -> module for top-level imports of trusted modules, every top-level name) in the grader's cells."""
    imports, names = {}, set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top in trusted:
                        imports[alias.asname or top] = alias.name if alias.asname else top
            for target in ast.walk(node) if isinstance(node, (ast.Assign, ast.FunctionDef, ast.ClassDef,
                                                              ast.ImportFrom, ast.Import)) else ():
                name = getattr(target, "id", None) or getattr(target, "name", None)
                if isinstance(target, ast.alias):
                    name = target.asname or target.name.split(".")[0]
                if isinstance(name, str):
                    names.add(name)
    return imports, names


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


def _timed(timeout, source, filename, namespace):
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        exec(compile(source, filename, "exec"), namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def run(spec, answer):
    trusted = {}
    for name in spec.get("trusted", []):
        try:
            trusted[name] = importlib.import_module(name)
        except ImportError:
            pass
    # Everything loaded so far is the grader's (numpy's submodules included).
    snapshot = _snapshot({n: m for n, m in sys.modules.items() if m is not None and (
        n in ("builtins", "math", "operator") or n.split(".")[0] in trusted)})
    excepthook = sys.excepthook
    imports, grader_names = _grader_names([c["source"] for c in spec["cells"] if c.get("grader")], set(trusted))
    helpers = {alias: sys.modules[name] for alias, name in imports.items() if name in sys.modules}
    timeout = spec.get("timeout", 0)
    signal.signal(signal.SIGALRM, _on_alarm)
    # IPython's names, inert: magics (already rewritten into get_ipython() calls by the grader),
    # display() and any hook a student installs do nothing here.
    namespace = {"__name__": "__main__", "__builtins__": builtins, "get_ipython": _Inert, "display": _Inert()}
    cells, tampered = {}, ""
    for index, cell in enumerate(spec["cells"]):
        gid = cell.get("grade_id")
        filename = f"<cell {index}>"
        if gid is None:
            try:
                _timed(timeout, cell["source"], filename, namespace)
            except BaseException:  # noqa: BLE001 -- a student cell failing is theirs; go on
                pass
            continue
        tampered = tampered or _changed(snapshot, excepthook)
        if tampered:
            cells[gid] = {"passed": False, "error": "not run: " + tampered}
            continue
        # The grader's helpers bound first: builtins and trusted modules are the grader's, whatever
        # the student's cells bound to those names (put back afterwards, for the student's later cells).
        shadows = {name: namespace.pop(name) for name in (_BUILTIN_NAMES & namespace.keys()) - grader_names}
        namespace.update(helpers)
        namespace["__builtins__"] = builtins
        passed, error = True, ""
        try:
            _timed(timeout, cell["source"], filename, namespace)
        except BaseException as err:  # noqa: BLE001 -- SystemExit, KeyboardInterrupt: a failure too
            passed, error = False, f"{type(err).__name__}: {str(err)[:300]}"
        for name, value in shadows.items():
            namespace.setdefault(name, value)
        tampered = tampered or _changed(snapshot, excepthook)
        if tampered:
            passed, error = False, "tampering: " + tampered
        cells[gid] = {"passed": passed, "error": error}
    answer({"nonce": spec["nonce"], "cells": cells, "tampered": tampered})


def main():
    spec = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)

    def answer(result):
        out.write(json.dumps(result) + "\n")
        out.flush()

    run(spec, answer)
    os._exit(0)  # no atexit hook of the student's runs after the answer


if __name__ == "__main__":
    main()
