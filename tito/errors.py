"""The one error type tito reports to users: a clean message, exit code 2, no traceback."""

from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape


class TitoError(Exception):
    """A problem the user can fix; the message names the file/line and, when it can, the fix."""


@contextmanager
def user_errors():
    """Turn a TitoError into `error: ...` on stderr and exit code 2."""
    try:
        yield
    except TitoError as err:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None
