"""The course's shape, read from `tito course stats`: in every lesson the student writes at
least a fifth of the code, meets an exercise within 200 lines, reads as much prose as half the
code, and no solution line is given away in the prose or provided code."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tito.stats import MAX_FIRST_EXERCISE_LINE, MIN_EXERCISE_SHARE, MIN_PROSE_RATIO

REPO = Path(__file__).resolve().parents[2]
TARGETED = ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13"]


@pytest.fixture(scope="module")
def stats() -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "tito", "course", "stats", "--json"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return {row["module"][:2]: row for row in rows}


@pytest.mark.parametrize("number", TARGETED)
def test_lesson_meets_the_course_targets(stats, number):
    row = stats.get(number)
    assert row is not None, f"no module {number} in `tito course stats`"
    assert row["exercise_share"] >= MIN_EXERCISE_SHARE, f"{row['module']}: {row['misses']}"
    assert row["first_exercise_line"] and row["first_exercise_line"] <= MAX_FIRST_EXERCISE_LINE, \
        f"{row['module']}: {row['misses']}"
    assert row["prose_ratio"] >= MIN_PROSE_RATIO, f"{row['module']}: {row['misses']}"


def test_no_solution_line_is_given_away(stats):
    giveaways = [line for row in stats.values() for line in row["giveaways"]]
    assert not giveaways, "solution lines that the prose or provided code shows:\n" + "\n".join(giveaways)
