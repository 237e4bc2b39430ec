"""BPETokenizer from GPT-2's vocab.json + merges.txt encodes exactly as transformers' GPT2Tokenizer."""


import pytest

from tinytorch.data import BPETokenizer, kjv_text

HARD = ["Hello world", "x² 2³ Ⅻ1", "don't  stop\n\n  now", "   leading", "trailing   ", "tab\tand\r\nCRLF\n",
        "émoji 🎉 日本語 ½", "'s 'S 'LL they'll", "a_b__c", "1234567 89", "e\u0301 \u0301x", "In the beginning God",
        "end<|endoftext|>start", "<|endoftext|><|endoftext|>", "  \n\n \t x  y"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, write_gpt2_files):
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
