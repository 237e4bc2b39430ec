"""CharTokenizer and byte-level BPETokenizer: round trips, training, save/load, errors."""

import json
import regex
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinytorch as tt
from tinytorch.data import BPETokenizer, CharTokenizer, count_pairs, kjv_text, merge_pair
from tinytorch.data.tokenizers import SPLIT_PATTERN, train_merges

FAST = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer().train(kjv_text()[:60_000], vocab_size=400)


# ---------------------------------------------------------------- char

def test_char_vocabulary_is_sorted_unique():
    tok = CharTokenizer("banana!")
    assert tok.itos == ["!", "a", "b", "n"] and tok.vocab_size == 4
    assert tok.encode("nab") == [3, 1, 2]


@FAST
@given(st.text())
def test_char_round_trip(text):
    tok = CharTokenizer(text)
    assert tok.decode(tok.encode(text)) == text


def test_unknown_char_error_names_them():
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=r"'\\n', 'z', 'é'"):
        tok.encode("abzé\n")


def test_unk_token():
    tok = CharTokenizer("abc", unk="<unk>")
    assert tok.vocab_size == 4 and tok.unk_id == 3
    assert tok.encode("axb") == [0, 3, 1] and tok.decode([0, 3, 1]) == "a<unk>b"
    reuse = CharTokenizer("abc", unk="a")
    assert reuse.vocab_size == 3 and reuse.encode("za") == [0, 0]
    with pytest.raises(ValueError, match="unk"):
        CharTokenizer("abc", unk="")


def test_char_decode_accepts_tensors_and_rejects_bad_ids():
    tok = CharTokenizer("abc")
    assert tok.decode(tt.tensor([2, 0])) == "ca"
    with pytest.raises(ValueError, match=r"\[3, -1\]"):
        tok.decode([0, 3, -1])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.zeros((2, 2), dtype=np.int64))


@pytest.mark.parametrize("text, unk", [("hello", "?"), ("hello", "<unk>"), ("hello", "l"), ("hello", None), ("", "?")])
def test_char_save_load(tmp_path, text, unk):
    tok = CharTokenizer(text, unk=unk)
    tok.save(tmp_path / "c.json")
    back = CharTokenizer.load(tmp_path / "c.json")
    assert back.itos == tok.itos and back.unk == tok.unk and back.unk_id == tok.unk_id
    if unk is not None:
        assert back.encode("hex") == tok.encode("hex")


def test_save_goes_through_the_one_atomic_write(tmp_path, monkeypatch):
    import tinytorch.data.tokenizers as tokenizers
    written = []
    real = tokenizers.atomic_write
    monkeypatch.setattr(tokenizers, "atomic_write", lambda path, data: (written.append(path), real(path, data)))
    CharTokenizer("ab").save(tmp_path / "c.json")
    BPETokenizer().save(tmp_path / "b.json")
    assert written == [tmp_path / "c.json", tmp_path / "b.json"]


# ---------------------------------------------------------------- BPE pieces

def test_split_pattern_keeps_gpt2_word_boundaries():
    pieces = regex.findall(SPLIT_PATTERN, "Hello, world! It's 2024...  ok\tnew_line\n\n  x")
    assert pieces == ["Hello", ",", " world", "!", " It", "'s", " 2024", "...", " ", " ok", "\t", "new", "_",
                      "line", "\n\n ", " x"]


@FAST
@given(st.text())
def test_split_pattern_covers_every_character(text):
    assert "".join(regex.findall(SPLIT_PATTERN, text)) == text


GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def test_split_pattern_is_gpt2s_regex():
    assert SPLIT_PATTERN == GPT2_PATTERN, "the pre-tokenizer must be GPT-2's pattern (encoder.py), as tiktoken's gpt2"


def test_split_pattern_reads_every_unicode_number_as_a_number():
    assert regex.findall(SPLIT_PATTERN, "x² 2³ Ⅻ1") == ["x", "²", " 2³", " Ⅻ1"]


def test_count_pairs_and_merge_pair():
    assert count_pairs({(1, 2, 1, 2): 3, (2, 1): 1}) == {(1, 2): 6, (2, 1): 4}
    assert merge_pair((1, 1, 1), (1, 1), 5) == (5, 1)
    assert merge_pair((1, 2, 3, 1, 2), (1, 2), 9) == (9, 3, 9)


def test_worked_example_two_merges():
    tok = BPETokenizer().train("aaabdaaabac", vocab_size=258)
    assert tok.merges == [(97, 97), (97, 98)]
    assert tok.encode("aaabdaaabac") == [256, 257, 100, 256, 257, 97, 99]
    assert tok.token_bytes(256) == b"aa" and tok.token_bytes(257) == b"ab"


def naive_merges(words, num_merges):
    """Reference: recount every pair after every merge (slow, obviously right)."""
    words, merges = dict(words), []
    for k in range(num_merges):
        counts = count_pairs(words)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges.append(pair)
        merged = Counter()
        for word, freq in words.items():
            merged[merge_pair(word, pair, 256 + k)] += freq
        words = dict(merged)
    return merges


@pytest.mark.parametrize("text", [kjv_text()[:20_000], "aaaa aaaa aaa a b bb bbb", "ééé ñ 日本語 日本 x_x__x"])
def test_incremental_training_equals_naive_recount(text):
    words = Counter(tuple(w.encode()) for w in regex.findall(SPLIT_PATTERN, text))
    assert train_merges(words, 150) == naive_merges(words, 150)


def test_training_stops_when_no_pairs_remain():
    tok = BPETokenizer().train("ab ab", vocab_size=1000)
    assert tok.vocab_size == 256 + len(tok.merges) < 1000
    assert tok.encode("ab ab") == [tok.vocab.index(b"ab"), tok.vocab.index(b" ab")]


def test_training_counts_each_word_with_its_frequency():
    # " ab" x4 gives (32, 97) and (97, 98) a count of 4 each; xy occurs 3 times, all in one word
    assert BPETokenizer().train("xyxyxy ab ab ab ab", vocab_size=257).merges == [(32, 97)]


def test_merges_never_cross_words(bpe):
    for token in bpe.vocab[256:]:
        text = token.decode("utf-8", errors="replace")
        assert len(regex.findall(SPLIT_PATTERN, text)) <= 1 or "\ufffd" in text, f"token {token!r} spans two words"


@pytest.mark.parametrize("size", [255, 0, 300.0, True])
def test_vocab_size_must_cover_bytes(size):
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer().train("abc", vocab_size=size)


# ---------------------------------------------------------------- BPE encode/decode

@FAST
@given(st.text())
def test_bpe_round_trip_any_text(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_untrained_bpe_is_plain_utf8_bytes():
    tok = BPETokenizer()
    assert tok.vocab_size == 256
    assert tok.encode("hé") == list("hé".encode())
    assert tok.decode(list("日本".encode())) == "日本"


def test_encode_ordinary_merges_inside_words_only():
    # "a    b" splits into "a", "   ", " b": the run of spaces leaves one space to the next word
    assert BPETokenizer([(32, 32)]).encode_ordinary("a    b") == [97, 256, 32, 32, 98]


def test_encode_ordinary_uses_a_vocabulary_s_own_ids():
    tok = BPETokenizer.from_vocab_and_merges({0: b"ab", **{b + 1: bytes([b]) for b in range(256)}}, [(b"a", b"b")])
    assert tok.encode_ordinary("abc") == [0, 100] and tok.decode([0, 100]) == "abc"


def test_decode_joins_bytes_across_tokens():
    tok = BPETokenizer([(97, 0xC3)])  # "aé" as tokens [a+C3, A9]: é is split between two tokens
    assert tok.encode("aé") == [256, 0xA9] and tok.decode([256, 0xA9]) == "aé"


def test_bpe_compresses_training_text(bpe):
    text = kjv_text()[:60_000]
    ids = bpe.encode(text)
    assert len(ids) < 0.5 * len(text.encode()), f"{len(ids)} tokens for {len(text)} bytes"
    assert bpe.decode(ids) == text


def test_bpe_decode_replaces_only_invalid_sequences(bpe):
    assert bpe.decode([0xE6]) == "\ufffd", "half a UTF-8 character from arbitrary ids decodes as U+FFFD"
    assert bpe.decode(list("ok".encode()) + [0xFF]) == "ok\ufffd"
    with pytest.raises(ValueError, match=r"\[400, -2\]"):
        bpe.decode([1, 400, -2])


def test_encode_is_deterministic_and_cache_free_of_effects(bpe):
    text = "And the LORD spake unto Moses, saying, Speak unto the children of Israel."
    first = bpe.encode(text)
    bpe._cache.clear()
    assert bpe.encode(text) == first


# ---------------------------------------------------------------- save/load

def test_bpe_save_load_round_trip(bpe, tmp_path):
    path = tmp_path / "tok.json"
    bpe.save(path)
    state = json.loads(path.read_text(encoding="utf-8"))
    assert state["type"] == "byte-bpe" and len(state["merges"]) == bpe.vocab_size - 256
    back = BPETokenizer.load(path)
    assert back.merges == bpe.merges and back.vocab == bpe.vocab
    text = "In the beginning, naïve 日本 text."
    assert back.encode(text) == bpe.encode(text)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"], "no temporary file left behind"


def test_save_is_atomic_when_writing_fails(bpe, tmp_path, monkeypatch):
    path = tmp_path / "tok.json"
    path.write_text("old")

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(json, "dump", broken_dump)
    with pytest.raises(OSError, match="disk full"):
        bpe.save(path)
    assert path.read_text() == "old", "a failed save must leave the old file intact"
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a saved tokenizer"):
        BPETokenizer.load(tmp_path / "bad.json")
    CharTokenizer("ab").save(tmp_path / "char.json")
    with pytest.raises(ValueError, match="not a saved byte-bpe tokenizer"):
        BPETokenizer.load(tmp_path / "char.json")
    (tmp_path / "forward.json").write_text(json.dumps({"type": "byte-bpe", "pattern": SPLIT_PATTERN,
                                                       "merges": [[97, 300]]}))
    with pytest.raises(ValueError, match="refers to a token not defined"):
        BPETokenizer.load(tmp_path / "forward.json")
