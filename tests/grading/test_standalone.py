"""Each module stands alone, in order (`tito course standalone`), for every module of the repo:

- with the modules before NN solved and NN stripped, every graded cell of NN fails, each with a
  message of its own (the stub's "not written yet" or the test's assert message);
- with modules up to NN solved and every later module stripped, `tito module complete NN`
  passes: NN's graded cells and tests/NN_name/ need nothing a later module provides.

This supersedes stripping every module at once: a graded cell that passes on the stripped
release, or fails with the solutions in place, fails here too.
"""

import importlib.util
from pathlib import Path

import pytest

from tito.notebooks import list_modules
from tito.standalone import Copies, check_module, own_message

REPO = Path(__file__).resolve().parents[2]
MODULES = list_modules(REPO)
# The optional extras a module's graded cells need (import name: extra); .ci/run installs them. Without
# them the module cannot be graded here: it is skipped, saying what to install.
EXTRAS = {"10_cuda": {"numba": "kernels", "ml_dtypes": "bfloat16"}}


def missing_extras(folder):
    return [f"{name} (pip install 'tinytorch[{extra}]')" for name, extra in EXTRAS.get(folder, {}).items()
            if importlib.util.find_spec(name) is None]


def with_extras(module):
    missing = missing_extras(module.folder)
    reason = f"{module.folder} needs {', '.join(missing)}"
    return pytest.param(module, id=module.folder, marks=pytest.mark.skipif(bool(missing), reason=reason))


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Copies:
    return Copies(REPO, tmp_path_factory.mktemp("standalone"))


@pytest.mark.slow
@pytest.mark.parametrize("module", [with_extras(m) for m in MODULES])
def test_module_stands_alone(module, copies):
    problems = check_module(module, copies, progress=lambda line: None)
    assert not problems, "\n".join(problems)


def test_own_message_accepts_named_stubs_and_assert_messages_only():
    assert own_message({"type": "NotImplementedError", "message": "add: not written yet; replace this line"})
    assert own_message({"type": "AssertionError", "message": "add(1, 2) should be 3"})
    assert not own_message({"type": "NotImplementedError", "message": ""})
    assert not own_message({"type": "AssertionError", "message": ""})
    assert not own_message({"type": "ValueError", "message": "operands could not be broadcast together"})
