"""The `tito` command: one typer app, one file per command group."""

import typer

from tito.book import app as book_app
from tito.course import app as course_app
from tito.doctor import doctor_command
from tito.export import export_command
from tito.milestone import app as milestone_app
from tito.module import app as module_app
from tito.testing import run_tests
from tito.run import RUN_SETTINGS, run_command
from tito.train import app as train_app
from tito.train import sample_command

app = typer.Typer(
    name="tito",
    help="TinyTorch's course tool: export modules to tinytorch/, test them, check the machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("export")(export_command)
app.command("test")(run_tests)
app.command("doctor")(doctor_command)
app.add_typer(milestone_app, name="milestone")
app.add_typer(train_app, name="train")
app.command("sample")(sample_command)
app.add_typer(book_app, name="book")
app.add_typer(module_app, name="module")
app.add_typer(course_app, name="course")
app.command("run", context_settings=RUN_SETTINGS)(run_command)
