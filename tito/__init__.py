"""tito: the TinyTorch command-line tool (export, test, course, book, train...)."""
import sys

if "jsonschema" not in sys.modules:
    # jsonschema imports rfc3987_syntax when it is installed (the `grade` extra pulls it in
    # through jupyter_events), and that builds a parser grammar at import: about 1.4 s for
    # every tito command that reads a notebook (jupytext -> nbformat -> jsonschema). It only
    # checks the "iri" string format, which no notebook schema uses; without it jsonschema
    # skips that format.
    sys.modules.setdefault("rfc3987_syntax", None)
