"""The lesson's test fixtures have a file of their own, out of the Trainer's code."""

import numpy as np

from tinytorch.training import fixtures, trainer


def test_fixtures_are_out_of_the_trainer_file():
    """_tiny_regression, _Recorder, _parts and _Positions were defined in tinytorch/training/trainer.py."""
    for name in ("_tiny_regression", "_tiny_classification", "_Recorder", "_Positions"):
        assert hasattr(fixtures, name), f"tinytorch.training.fixtures lacks {name}"
        assert not hasattr(trainer, name), f"tinytorch.training.trainer still defines the lesson's fixture {name}"
    assert not hasattr(trainer, "_parts") and not hasattr(fixtures, "_parts"), \
        "the classifier fixture is _tiny_classification: _parts is threads' unrelated (modules, params, buffers)"
    assert fixtures.__all__ == [], "the fixtures stay out of `from tinytorch.training import *`"


def test_the_classification_fixture_builds_the_same_parts_every_time():
    (m1, o1, loss, loader), (m2, _, _, _) = fixtures._tiny_classification(n=12), fixtures._tiny_classification(n=12)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(m1.parameters(), m2.parameters()))
    assert type(o1).__name__ == "AdamW" and loss.__name__ == "cross_entropy"
    assert [len(y) for _, y in loader] == [8, 4]
