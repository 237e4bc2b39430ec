"""gpt_text's checks of weight files, without a run: what differs from the model, and the newest-first scan
that `tito sample` and `--resume` share (damaged files skipped and named, any other error stops it)."""

import sys
from pathlib import Path

import pytest

import tinytorch as tt
from tinytorch.training.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "milestones"))  # milestone scripts are plain files, not a package
import gpt_text  # noqa: E402

MODEL = {"wte.weight": tt.zeros(5, 4), "lm_head.weight": tt.zeros(5, 4)}


@pytest.mark.parametrize("theirs, expected", [
    (MODEL, None),
    ({"wte.weight": MODEL["wte.weight"]}, "it lacks 1 of the model's tensors, e.g. lm_head.weight"),
    ({**MODEL, "extra.bias": tt.zeros(4)}, "it has 1 tensors the model lacks, e.g. extra.bias"),
    ({**MODEL, "lm_head.weight": tt.zeros(2, 2)}, "parameter lm_head.weight has shape (2, 2) in the file, (5, 4) "
                                                  "in the model"),
])
def test_weights_mismatch_names_the_first_difference(theirs, expected):
    assert gpt_text.weights_mismatch(theirs, MODEL) == expected


def read_unless(damaged, foreign=()):
    def read(path):
        if path.name in foreign:
            raise gpt_text.RunError(f"{path} is not a run's")
        if path.name in damaged:
            raise CheckpointError(f"{path} is truncated")
        return path.name.upper()
    return read


def test_first_readable_skips_damaged_files_and_names_them(capsys):
    paths = [Path("c"), Path("b"), Path("a")]
    assert gpt_text.first_readable(paths, read_unless({"c", "b"}), "sampling") == (Path("a"), "A")
    assert capsys.readouterr().err == "warning: skipped truncated or corrupt c, b; sampling from a\n"
    assert gpt_text.first_readable(paths, read_unless(set()), "resuming") == (Path("c"), "C")
    assert capsys.readouterr().err == "", "nothing skipped, nothing to warn about"


def test_first_readable_of_only_damaged_files_is_none_and_other_errors_stop_it(capsys):
    paths = [Path("c"), Path("b")]
    assert gpt_text.first_readable(paths, read_unless({"c", "b"}), "sampling") is None
    with pytest.raises(gpt_text.RunError, match="b is not a run's"):
        gpt_text.first_readable(paths, read_unless({"c"}, foreign={"b"}), "resuming")
    assert capsys.readouterr().err == "", "no warning before an error: the run resumes from no file"
    with pytest.raises(KeyError):  # not damage unless the caller says so
        gpt_text.first_readable(paths, lambda path: {}[path], "sampling")
    assert gpt_text.first_readable(paths, lambda path: {}[path], "sampling", damage=KeyError) is None


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "no-links-copy"])
def test_keep_base_gives_a_lora_run_its_own_base_weights(tmp_path, monkeypatch, links):
    base, run = tmp_path / "base", tmp_path / "lora"
    base.mkdir(), run.mkdir()
    (base / gpt_text.FILES["model"]).write_bytes(b"weights")
    lora = {"base": str(base), "base_sha256": gpt_text.file_sha256(base / gpt_text.FILES["model"])}
    if not links:  # a file system without hard links: an atomic copy instead
        monkeypatch.setattr(gpt_text.os, "link", lambda *a: (_ for _ in ()).throw(OSError("no links here")))
    gpt_text.keep_base(lora, run)
    tt.atomic_write(base / gpt_text.FILES["model"], b"other")  # the base run rewritten, as tt.save does
    assert gpt_text.base_weights(lora, run).path == run / gpt_text.BASE_COPY
    assert (run / gpt_text.BASE_COPY).read_bytes() == b"weights"
