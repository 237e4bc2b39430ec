"""Shared by the tokenizer tests: GPT-2 tokenizer files written from a BPE trained here (no network)."""

import json

import pytest

from tinytorch.data.tokenizers import _gpt2_bytes_to_unicode


def _write_gpt2_files(folder, tokenizer):
    """vocab.json + merges.txt as GPT-2 writes them: byte tokens in GPT-2's printable alphabet, ids in
    GPT-2's order (the bytes in the alphabet's order, then the merges), <|endoftext|> last."""
    spell = _gpt2_bytes_to_unicode()
    as_text = {i: "".join(spell[b] for b in tokenizer.vocab[i]) for i in range(256 + len(tokenizer.merges))}
    order = list(spell)  # GPT-2's byte order: the printable bytes first
    vocab = {as_text[b]: n for n, b in enumerate(order)}
    vocab.update({as_text[256 + k]: 256 + k for k in range(len(tokenizer.merges))})
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{as_text[a]} {as_text[b]}" for a, b in tokenizer.merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


@pytest.fixture(scope="session")
def write_gpt2_files():
    """write_gpt2_files(folder, tokenizer) -> (vocab.json, merges.txt) paths."""
    return _write_gpt2_files
