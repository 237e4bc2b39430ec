"""A pytest plugin (`pytest -p tito.running_test`) that keeps the id of the test in progress in the
file named by $TITO_RUNNING_TEST, so that `tito test` can say which test hung when it times out."""

import os
from pathlib import Path

RUNNING_TEST = "TITO_RUNNING_TEST"


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    if os.environ.get(RUNNING_TEST):
        Path(os.environ[RUNNING_TEST]).write_text(nodeid, encoding="utf-8")


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    if os.environ.get(RUNNING_TEST):
        Path(os.environ[RUNNING_TEST]).write_text("", encoding="utf-8")
