"""Tokenizers and text datasets on edge inputs, as Hugging Face's GPT-2 tokenizers take them: empty and
whitespace-only text, non-ASCII text, special-token spellings, odd `decode` inputs, numpy sizes."""

import random

import numpy as np
import pytest

import tinytorch as tt
from tinytorch.data import BPETokenizer, CharTokenizer, TextDataset, TokenDataset, kjv_text

EDGE_TEXTS = ["", " ", "   ", "\n", "\n\n\n", " \n \n", "\t\t", "   \n\n   x", "a    b", "\r\n\r\n", "\u3000\u00a0x",
              "café", "日本語", "🎉🎉 👨\u200d👩\u200d👧", "e\u0301", "\u0301", "a\u0301\u0301 x", "x" * 3000, " " * 500,
              "ab" * 700, "\x00\x7f\x80", "\ufeffhi", "'s's I'M ''", "<|endoftext", "<|endoftext|", "a<|endoftext|>b",
              " <|endoftext|> ", "<|endoftext|><|endoftext|>>"]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, write_gpt2_files):
    trained = BPETokenizer().train(kjv_text()[:20_000] + " ".join(EDGE_TEXTS[:20]), vocab_size=380)
    return write_gpt2_files(tmp_path_factory.mktemp("gpt2"), trained)


@pytest.fixture(scope="module")
def ours(gpt2):
    return BPETokenizer.from_gpt2_files(*gpt2)


def hugging_face(gpt2):
    transformers = pytest.importorskip("transformers")
    folder = str(gpt2[0].parent)
    return (transformers.GPT2Tokenizer.from_pretrained(folder, local_files_only=True),
            transformers.GPT2TokenizerFast.from_pretrained(folder, local_files_only=True))


@pytest.mark.parity
def test_edge_texts_encode_and_decode_as_transformers(gpt2, ours):
    for theirs in hugging_face(gpt2):
        for text in EDGE_TEXTS:
            expected = theirs.encode(text)  # transformers reads <|endoftext|> as the special token
            assert ours.encode(text, allowed_special="all") == expected, f"{type(theirs).__name__}: {text[:30]!r}"
            assert ours.decode(expected) == theirs.decode(expected) == text


@pytest.mark.parity
def test_partial_utf8_decodes_with_replacement_as_transformers(gpt2, ours):
    byte_id = {b: i for i, b in enumerate(ours.vocab) if len(b) == 1}
    for data in [b"\xe6", b"\xe6\x97", b"a\xe6\x97\xa5", b"\xff", b"\xf0\x9f\x8e", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80a"]:
        ids = [byte_id[bytes([b])] for b in data]
        expected = data.decode("utf-8", errors="replace")
        assert ours.decode(ids) == expected
        for theirs in hugging_face(gpt2):
            assert theirs.decode(ids) == expected


def test_random_text_round_trips_and_stays_in_the_vocabulary(ours):
    rng = random.Random(0)
    for _ in range(150):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        text = data.decode("utf-8", errors="replace")
        ids = ours.encode(text, allowed_special="all")
        assert ours.decode(ids) == text and all(0 <= i < ours.vocab_size for i in ids)


def test_empty_and_whitespace_only_text(ours):
    for tok in (ours, BPETokenizer(), CharTokenizer(" \n\t")):
        assert tok.encode("") == [] and tok.decode([]) == ""
        assert tok.decode(tok.encode(" \n\n\t  ")) == " \n\n\t  "
    assert CharTokenizer("").vocab_size == 0 and CharTokenizer("").encode("") == []


def test_a_special_token_s_spelling_is_refused_unless_allowed_or_disallowed_off(ours):
    eot = ours.special_tokens["<|endoftext|>"]
    with pytest.raises(ValueError, match="special token"):
        ours.encode("a<|endoftext|>b")
    assert ours.encode("a<|endoftext|>b", allowed_special="all") == ours.encode("a") + [eot] + ours.encode("b")
    assert eot not in ours.encode("<|endoftext|>", disallowed_special=())


def test_decode_out_of_range_and_lone_surrogates_raise(ours):
    for bad in ([ours.vocab_size], [-1], [10**12]):
        with pytest.raises(ValueError, match="outside"):
            ours.decode(bad)
    with pytest.raises(UnicodeEncodeError):
        ours.encode("a\ud800b")  # transformers raises too: a lone surrogate is not text UTF-8 can spell


@pytest.mark.parametrize("bad", [[1.5], [97.0], ["97"], [97, 2.9]])
def test_decode_refuses_ids_that_are_not_integers(bad):
    for tok in (BPETokenizer(), CharTokenizer("".join(map(chr, range(128))))):
        with pytest.raises(TypeError, match="integer ids"):  # they were truncated or parsed: "97" read as 97
            tok.decode(bad)


def test_decode_takes_one_id_as_transformers_does(device):
    tok = BPETokenizer()
    for one in (97, np.int64(97), np.array(97), tt.tensor(np.array(97), device=device)):
        assert tok.decode(one) == "a", f"{type(one).__name__}"
    assert CharTokenizer("ab").decode(1) == "b"


def test_decode_of_an_empty_array_of_any_dtype():
    assert BPETokenizer().decode(np.array([])) == "" and CharTokenizer("a").decode(np.array([])) == ""
    with pytest.raises(ValueError, match="integer ids"):
        BPETokenizer().decode(np.array([97.0]))


@pytest.mark.parametrize("text", [b"abc", bytearray(b"ab"), ["a", "b"], None, 5])
def test_encode_takes_str_only(text):
    for tok in (CharTokenizer("abc", unk="?"), BPETokenizer(special_tokens=["<s>"])):  # unk mapped bytes to "?"
        with pytest.raises(TypeError, match="takes a str"):
            tok.encode(text)
    with pytest.raises(TypeError, match="takes a str"):
        BPETokenizer().encode_ordinary(text)


def test_numpy_integer_sizes_are_accepted():
    assert BPETokenizer().train("aaabdaaabac", vocab_size=np.int64(258)).merges == [(97, 97), (97, 98)]
    ds = TextDataset("abcdef", CharTokenizer("abcdef"), block_size=np.int64(2), val_fraction=0.0)
    assert type(ds.block_size) is int and len(ds) == 4 and ds.gather([0])[0].shape == (1, 2)
    tokens = TokenDataset(np.arange(6, dtype=np.uint16), block_size=np.int32(5))
    assert type(tokens.block_size) is int and len(tokens) == 1


def test_text_dataset_block_size_around_the_text_length():
    tok = CharTokenizer("abcdef")
    one = TextDataset("abcdef", tok, block_size=5, val_fraction=0.0)  # block_size = len - 1: one window
    assert len(one) == 1 and tok.decode(one[0][0]) == "abcde" and tok.decode(one[-1][1]) == "bcdef"
    assert [a.shape for a in one.gather([])] == [(0, 5), (0, 5)]
    for block_size in (6, 100):
        with pytest.raises(ValueError, match="fewer than block_size"):
            TextDataset("abcdef", tok, block_size=block_size, val_fraction=0.0)
    with pytest.raises(ValueError, match="fewer than block_size"):
        TextDataset("", tok, block_size=1)
