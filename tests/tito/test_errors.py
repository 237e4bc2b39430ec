"""Every broken module is a clean `file:line: message` error with exit code 2."""

import pytest

OK_HEADER = "# %%\n#| default_exp core.x\n"
SOLUTION = '{"grade": false, "grade_id": "ex", "locked": false, "schema_version": 3, "solution": true}'

CASES = {
    "no default_exp": (
        "# %%\n#| export\ndef f(): pass\n",
        "modules/03_x/x.py:1: no '#| default_exp' cell",
    ),
    "two default_exp": (
        OK_HEADER + "\n# %%\nx = 1\n\n# %%\n#| default_exp core.y\n",
        "modules/03_x/x.py:8: second '#| default_exp' (first at line 2)",
    ),
    "unterminated yaml header": (
        "# ---\n# jupyter:\n#   kernelspec: {}\n\n" + OK_HEADER,
        "modules/03_x/x.py:1: unterminated jupytext header",
    ),
    "invalid yaml header": (
        "# ---\n# jupyter:\n#   a: [1, 2\n#   b: c\n# ---\n\n" + OK_HEADER,
        "modules/03_x/x.py:4: invalid YAML in the jupytext header",
    ),
    "bad json in cell metadata": (
        OK_HEADER + '\n# %% nbgrader={"grade": true, "grade_id": "t",}\nassert True\n',
        "modules/03_x/x.py:4: invalid JSON in cell metadata nbgrader=...: Expecting property name",
    ),
    "missing schema_version": (
        OK_HEADER + '\n# %% nbgrader={"grade": true, "grade_id": "t", "points": 1}\nassert 1\n',
        'modules/03_x/x.py:4: nbgrader metadata needs "schema_version": 3',
    ),
    "non-int points": (
        OK_HEADER + '\n# %% nbgrader={"grade": true, "grade_id": "t", "points": 1.5, "schema_version": 3}\nx = 1\n',
        "modules/03_x/x.py:4: graded cell 't' needs integer \"points\", got 1.5",
    ),
    "solution without markers": (
        OK_HEADER + f"\n# %% nbgrader={SOLUTION}\ndef f():\n    return 1\n"
        f"\n# %% nbgrader={SOLUTION.replace('ex', 'ex2')}\n### BEGIN SOLUTION\n### END SOLUTION\n",
        "modules/03_x/x.py:4: solution cell 'ex' has no '### BEGIN SOLUTION'",
    ),
    "unbalanced markers": (
        OK_HEADER + f"\n# %% nbgrader={SOLUTION}\ndef f():\n    ### BEGIN SOLUTION\n    return 1\n",
        "modules/03_x/x.py:4: unbalanced '### BEGIN SOLUTION' / '### END SOLUTION'",
    ),
    "duplicate grade_id": (
        OK_HEADER + f"\n# %% nbgrader={SOLUTION}\n### BEGIN SOLUTION\n### END SOLUTION\n"
        f"\n# %% nbgrader={SOLUTION}\n### BEGIN SOLUTION\n### END SOLUTION\n",
        "modules/03_x/x.py:8: duplicate grade_id 'ex' (first used at line 4)",
    ),
    "sys.path in exported code": (
        OK_HEADER + "\n# %%\n#| export\nimport sys\n\nsys.path.insert(0, '..')\n",
        "modules/03_x/x.py:8: exported code must not use sys.path",
    ),
    "unknown directive": (
        OK_HEADER + "\n# %%\n#| exports\nx = 1\n",
        "modules/03_x/x.py:5: unknown directive '#| exports'",
    ),
    "directive below code": (
        OK_HEADER + "\n# %%\nx = 1\n#| export\n",
        "modules/03_x/x.py:6: directive '#| export' must be at the top of its cell",
    ),
    "exported syntax error": (
        OK_HEADER + "\n# %%\n#| export\ndef f(:\n",
        "modules/03_x/x.py:6: exported cell 2 does not parse",  # the line of the error itself
    ),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", [["export"], ["export", "--check"], ["test"]])
def test_broken_module_is_a_clean_error(repo, case, command):
    text, expected = CASES[case]
    repo.module("03_x", text)
    result = repo.tito(*command)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (repo.root / "tinytorch").exists()


def test_released_module_without_any_markers_is_fine(repo):
    """Students export stripped notebooks; their solution cells have no markers left."""
    repo.module("03_x", OK_HEADER + f"\n# %% nbgrader={SOLUTION}\n#| export\ndef f():\n    return 1\n")
    assert repo.tito("export").exit_code == 0


def test_sys_path_is_fine_outside_exported_cells(repo):
    repo.module("03_x", OK_HEADER + "\n# %%\nimport sys\nprint(sys.path[0])\n")
    assert repo.tito("export").exit_code == 0
