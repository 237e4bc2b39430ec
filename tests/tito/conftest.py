"""A throwaway TinyTorch repo (modules/ + pyproject.toml) and a way to run tito in it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tito.main import app

SOLUTION = '{"grade": false, "grade_id": "%s", "locked": false, "schema_version": 3, "solution": true}'
GRADED = '{"grade": true, "grade_id": "%s", "locked": true, "points": %s, "schema_version": 3, "solution": false}'

TENSOR = f"""\
# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Tensor

# %%
#| default_exp core.tensor

# %%
#| export
import numpy as np

# %% nbgrader={SOLUTION % "tensor-add"}
#| export
def add(a, b):
    \"\"\"Elementwise sum.\"\"\"
    ### BEGIN SOLUTION
    return np.add(a, b)
    ### END SOLUTION

_CACHE = {{}}
SCALE: float = 2.0

# %% nbgrader={GRADED % ("test-add", 2)}
assert add(1, 2) == 3, "add(1, 2) should be 3"
### BEGIN HIDDEN TESTS
assert add(2, 2) == 4, "hidden: add(2, 2) should be 4"
### END HIDDEN TESTS
"""

AUTOGRAD = f"""\
# %%
#| default_exp autograd

# %%
#| export
from tinytorch.core.tensor import add


def gradcheck(f):
    ### BEGIN SOLUTION
    return f(1) == add(0, 1)
    ### END SOLUTION

# %%
#| export core.tensor
class Tensor:
    pass

# %% nbgrader={GRADED % ("test-gradcheck", 3)}
assert gradcheck(lambda x: x), "gradcheck of identity should pass"
"""


class Repo:
    def __init__(self, root: Path):
        self.root = root
        (root / "modules").mkdir()
        (root / "pyproject.toml").write_text('[project]\nname = "fake"\n')

    def module(self, folder: str, text: str) -> Path:
        name = folder.split("_", 1)[1]
        path = self.root / "modules" / folder / f"{name}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def snapshot(self) -> dict[str, bytes]:
        package = self.root / "tinytorch"
        return {p.relative_to(self.root).as_posix(): p.read_bytes() for p in sorted(package.rglob("*.py"))}

    def tito(self, *args: str):
        """Run the CLI in-process with cwd = the fake repo."""
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            return CliRunner().invoke(app, list(args))
        finally:
            os.chdir(cwd)

    def subprocess(self, *command: str) -> subprocess.CompletedProcess:
        """Run with this repo's tinytorch/ first on the path."""
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        return subprocess.run([sys.executable, *command], cwd=self.root, env=env, capture_output=True, text=True)


@pytest.fixture
def repo(tmp_path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture
def course(repo) -> Repo:
    """A repo holding the two small fixture modules above."""
    repo.module("01_tensor", TENSOR)
    repo.module("02_autograd", AUTOGRAD)
    return repo
