"""BPETokenizer from GPT-2's vocab.json + merges.txt encodes exactly as transformers' GPT2Tokenizer."""

import json

import pytest

from tinytorch.data import BPETokenizer, kjv_text
from tinytorch.data.tokenizers import _gpt2_bytes_to_unicode

HARD = ["Hello world", "x² 2³ Ⅻ1", "don't  stop\n\n  now", "   leading", "trailing   ", "tab\tand\r\nCRLF\n",
        "émoji 🎉 日本語 ½", "'s 'S 'LL they'll", "a_b__c", "1234567 89", "e\u0301 \u0301x", "In the beginning God",
        "end<|endoftext|>start", "<|endoftext|><|endoftext|>", "  \n\n \t x  y"]


def write_gpt2_files(folder, tokenizer):
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


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    trained = BPETokenizer().train(kjv_text()[:30_000] + " ".join(HARD), vocab_size=420)
    return write_gpt2_files(tmp_path_factory.mktemp("gpt2"), trained)


def test_gpt2_files_encode_like_transformers(files):
    transformers = pytest.importorskip("transformers")
    theirs = transformers.GPT2Tokenizer.from_pretrained(str(files[0].parent), local_files_only=True)
    ours = BPETokenizer.from_gpt2_files(*files)
    assert ours.vocab_size == len(theirs) == 421
    assert ours.special_tokens == {"<|endoftext|>": 420}
    texts = HARD + [kjv_text()[50_000:52_000]]
    for text in texts:
        expected = theirs.encode(text)
        assert ours.encode(text, allowed_special="all") == expected, f"encoding {text!r}"
        assert ours.decode(expected) == theirs.decode(expected)
    assert ours.token_bytes(0) == b"!", "GPT-2's id 0 is the byte '!'"


def test_gpt2_files_round_trip_through_save(files, tmp_path):
    ours = BPETokenizer.from_gpt2_files(*files)
    ours.save(tmp_path / "tok.json")
    back = BPETokenizer.load(tmp_path / "tok.json")
    text = "In the beginning<|endoftext|> x² 2³"
    assert back.encode(text, allowed_special="all") == ours.encode(text, allowed_special="all")
    assert back.special_tokens == ours.special_tokens


def test_vocab_and_merges_errors_say_what_is_wrong():
    with pytest.raises(TypeError, match="pairs of token ids"):
        BPETokenizer([(b" ", b"t")])
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="lacks"):
        BPETokenizer.from_vocab_and_merges(vocab, [(b" ", b"t")])
    with pytest.raises(ValueError, match="no earlier merge made"):
        BPETokenizer.from_vocab_and_merges(vocab, [(b" t", b"h")])
