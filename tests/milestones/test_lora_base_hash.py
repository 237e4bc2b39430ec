"""A LoRA run reads and hashes its base model file once (not once to record it, again to load it and a third time
to check its own link), and a base run rewritten meanwhile is still refused."""

import hashlib
import os
import sys
from pathlib import Path

import pytest

import tinytorch as tt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "milestones"))  # milestone scripts are plain files, not a package
import gpt_text  # noqa: E402

TINY = dict(preset="tiny", steps=2, sample_tokens=0, quiet=True)
MODEL = gpt_text.FILES["model"]


class CountingHashlib:
    """gpt_text's hashlib, with a record of every SHA-256 finished (hexdigest)."""

    def __init__(self):
        self.digests = []

    def sha256(self, data=b""):
        digest, record = hashlib.sha256(data), self.digests

        class Counted:
            def update(self, block):
                digest.update(block)

            def hexdigest(self):
                record.append(digest.hexdigest())
                return record[-1]
        return Counted()


@pytest.fixture
def base(tmp_path):
    """A finished tiny run to fine-tune."""
    gpt_text.train(data=tmp_path / "fox.txt", out=tmp_path / "base", **TINY)
    return tmp_path / "base"


@pytest.fixture(autouse=True)
def fox(tmp_path):
    (tmp_path / "fox.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")


def lora_run(base, out, **kwargs):
    return gpt_text.train(data=base.parent / "fox.txt", out=out, init_from=base, lora_rank=2, **TINY, **kwargs)


def no_links(monkeypatch):
    monkeypatch.setattr(gpt_text.os, "link", lambda *a: (_ for _ in ()).throw(OSError("no links here")))


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "no-links-copy"])
def test_a_new_lora_run_hashes_its_base_once(base, tmp_path, monkeypatch, links):
    sha = gpt_text.file_sha256(base / MODEL)
    hashes = CountingHashlib()
    monkeypatch.setattr(gpt_text, "hashlib", hashes)
    if not links:
        no_links(monkeypatch)
    lora_run(base, tmp_path / "lora")
    assert hashes.digests.count(sha) == 1, f"the base model was hashed {hashes.digests.count(sha)} times"
    assert (tmp_path / "lora" / gpt_text.BASE_COPY).read_bytes() == (base / MODEL).read_bytes()


def test_resuming_a_lora_run_without_its_link_hashes_the_base_once(base, tmp_path, monkeypatch):
    lora_run(base, tmp_path / "lora")
    (tmp_path / "lora" / gpt_text.BASE_COPY).unlink()  # as a LoRA run written by an earlier TinyTorch
    sha = gpt_text.file_sha256(base / MODEL)
    hashes = CountingHashlib()
    monkeypatch.setattr(gpt_text, "hashlib", hashes)
    gpt_text.train(out=tmp_path / "lora", resume=True, steps=3, sample_tokens=0, quiet=True)
    assert hashes.digests.count(sha) == 1, f"the base model was hashed {hashes.digests.count(sha)} times"
    assert os.path.samefile(tmp_path / "lora" / gpt_text.BASE_COPY, base / MODEL)


def rewrite(path, how):
    """The base run's model file changed on disk: rewritten atomically as tt.save does (other weights, or the same
    bytes), or written in place (the same size)."""
    data = path.read_bytes()
    if how == "in-place":
        with open(path, "r+b") as f:
            f.seek(len(data) - 4)
            f.write(bytes(b ^ 0xFF for b in data[-4:]))
    else:
        tt.atomic_write(path, data if how == "same-bytes" else data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))


@pytest.mark.parametrize("links", [True, False], ids=["hard-link", "no-links-copy"])
@pytest.mark.parametrize("how", ["atomic", "in-place", "same-bytes"])
def test_a_base_changed_after_it_was_read_is_refused(base, tmp_path, monkeypatch, how, links):
    """The base run rewritten between the read of its model (hashed, loaded) and the run's own link to it."""
    original = gpt_text.lora_model

    def then_rewrite(*args, **kwargs):
        model = original(*args, **kwargs)
        rewrite(base / MODEL, how)
        return model
    monkeypatch.setattr(gpt_text, "lora_model", then_rewrite)
    if not links:
        no_links(monkeypatch)
    if how == "same-bytes":  # a new file, but the bytes this run trained on: kept, as when it was hashed again
        lora_run(base, tmp_path / "lora")
        assert (tmp_path / "lora" / gpt_text.BASE_COPY).read_bytes() == (base / MODEL).read_bytes()
        return
    with pytest.raises(gpt_text.RunError, match="changed while this LoRA run started"):
        lora_run(base, tmp_path / "lora")
    assert not (tmp_path / "lora" / gpt_text.BASE_COPY).exists(), "no link to weights the run was not trained on"


def test_a_base_written_while_it_is_read_is_refused(base, tmp_path, monkeypatch):
    """A base model file written in place during the one read: its hash may mix old and new bytes."""
    real_open = open

    def open_then_append(path, *args, **kwargs):
        f = real_open(path, *args, **kwargs)
        if Path(path).name == MODEL:
            read, appended = f.read, []

            def read_and_append(*a):
                data = read(*a)
                if not appended:  # once: another writer adds to the file after the first block was read
                    appended.append(True)
                    with real_open(path, "ab") as other:
                        other.write(b"\0" * 8)
                return data
            f.read = read_and_append
        return f
    monkeypatch.setattr(gpt_text, "open", open_then_append, raising=False)
    with pytest.raises(gpt_text.RunError, match="changed while this LoRA run read it"):
        lora_run(base, tmp_path / "lora")
    assert not (tmp_path / "lora").exists(), "refused before the run wrote anything"
