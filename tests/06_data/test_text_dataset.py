"""TextDataset: next-token windows, the positional train/val split, gather."""

import gzip

import numpy as np
import pytest

from tinytorch.data import BPETokenizer, CharTokenizer, DataLoader, TextDataset, TokenDataset, default_collate

TEXT = "abcdefghijklmnopqrstuvwxyz" * 4  # 104 characters


@pytest.fixture
def tok():
    return CharTokenizer(TEXT)


def test_windows_are_shifted_by_one(tok):
    ds = TextDataset(TEXT, tok, block_size=5, val_fraction=0.0)
    assert len(ds) == len(TEXT) - 5
    for i in (0, 7, len(ds) - 1, -1):
        x, y = ds[i]
        start = i % len(ds)
        assert tok.decode(x) == TEXT[start:start + 5]
        assert tok.decode(y) == TEXT[start + 1:start + 6]
        assert x.dtype == np.int64 and x.shape == (5,)
    with pytest.raises(IndexError, match="out of range"):
        ds[len(ds)]


def test_split_by_position(tok):
    train = TextDataset(TEXT, tok, block_size=4, split="train", val_fraction=0.25)
    val = TextDataset(TEXT, tok, block_size=4, split="val", val_fraction=0.25)
    assert len(train.ids) == 78 and len(val.ids) == 26, "104 tokens: the last int(104 * 0.25) = 26 are val"
    assert tok.decode(np.concatenate([train.ids, val.ids])) == TEXT
    assert tok.decode(val[0][0]) == TEXT[78:82]
    assert train.ids.dtype == np.int64


def test_encoded_once(tok):
    calls = []

    class Counting(CharTokenizer):
        def encode(self, text):
            calls.append(len(text))
            return super().encode(text)
    ds = TextDataset(TEXT, Counting(TEXT), block_size=3)
    for _ in DataLoader(ds, batch_size=8):
        pass
    list(DataLoader(ds, batch_size=8, collate_fn=default_collate))
    assert calls == [len(TEXT)]


def test_gather_matches_items(tok):
    ds = TextDataset(TEXT, tok, block_size=6)
    x, y = ds.gather([3, 0, 50])
    assert x.shape == (3, 6) and y.shape == (3, 6)
    for row, i in enumerate((3, 0, 50)):
        assert x.data[row].tolist() == ds[i][0].data.tolist() and y.data[row].tolist() == ds[i][1].data.tolist()
    fast = list(DataLoader(ds, batch_size=7, shuffle=True, generator=0))
    slow = list(DataLoader(ds, batch_size=7, shuffle=True, generator=0, collate_fn=default_collate))
    assert all(np.array_equal(a.data, b.data) for fb, sb in zip(fast, slow) for a, b in zip(fb, sb))
    assert all(type(fb) is type(sb) is list for fb, sb in zip(fast, slow)), "gather's batches are lists, as collated ones"


def test_gather_returns_separate_contiguous_arrays(tok):
    x, y = TextDataset(TEXT, tok, block_size=6).gather([3, 0, 50])
    assert x.data.flags.c_contiguous and y.data.flags.c_contiguous, "contiguous, as torch's collated batches"
    assert not np.shares_memory(x.data, y.data), "x and y are copies: writing into x must not change y"


def test_reads_paths_and_gzip(tmp_path, tok):
    plain, packed = tmp_path / "t.txt", tmp_path / "t.txt.gz"
    plain.write_text(TEXT, encoding="utf-8")
    packed.write_bytes(gzip.compress(TEXT.encode()))
    for source in (plain, str(plain), packed):
        assert TextDataset(source, tok, block_size=4).ids.tolist() == tok.encode(TEXT)[:94]


def test_works_with_bpe():
    bpe = BPETokenizer().train(TEXT, vocab_size=270)
    ds = TextDataset(TEXT, bpe, block_size=2, val_fraction=0.0)
    x, y = ds[0]
    assert bpe.decode(np.concatenate([x.data, y.data[-1:]])) == bpe.decode(ds.ids[:3])


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "test"}, "split"), ({"val_fraction": 1.0}, "val_fraction"), ({"val_fraction": -0.1}, "val_fraction"),
    ({"block_size": 0}, "block_size"), ({"block_size": 2.0}, "block_size"),
    ({"block_size": 200}, "fewer than block_size"), ({"block_size": 30, "split": "val"}, "val split has 10 tokens"),
])
def test_errors(tok, kwargs, message):
    args = {"block_size": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        TextDataset(TEXT, tok, **args)


def test_unknown_characters_surface_from_the_tokenizer(tok):
    with pytest.raises(ValueError, match="'!'"):
        TextDataset(TEXT + "!", tok, block_size=4)


def test_a_subclass_that_changes_items_is_loaded_through_its_own_getitem(tok):
    """gather is the parent's fast path for the parent's items: a subclass that changes __getitem__ (new
    labels, augmentation) gets its own items in every batch, as PyTorch's DataLoader calls __getitem__."""
    class MaskedTargets(TextDataset):
        def __getitem__(self, index):
            x, y = super().__getitem__(index)
            return x, y * 0 - 1
    ds = MaskedTargets(TEXT, tok, block_size=4, val_fraction=0.0)
    _, y = next(iter(DataLoader(ds, batch_size=3)))
    assert y.data.tolist() == [[-1] * 4] * 3


def test_a_missing_file_is_not_taken_for_the_text(tok):
    """A str naming a file is read and any other str is the text: a mistyped path must not train on its name."""
    with pytest.raises(FileNotFoundError, match="no file 'data/shakespeare/inptu.txt'"):
        TextDataset("data/shakespeare/inptu.txt", tok, block_size=2)
    assert TextDataset("abc.txt def", CharTokenizer("abc.txt def"), block_size=2).ids.size > 0  # text that ends so


def test_gather_counts_negative_indices_from_the_end_as_indexing_does():
    ds = TextDataset("0123456789", CharTokenizer("0123456789"), block_size=3, val_fraction=0.0)  # id = the digit
    x, y = ds.gather([-1, 0, -7])
    assert x.data.tolist() == [[6, 7, 8], [0, 1, 2], [0, 1, 2]] and y.data.tolist()[0] == [7, 8, 9]
    for bad in ([7], [0, -8]):
        with pytest.raises(IndexError, match=r"index -?\d+ is out of range for a TextDataset of length 7"):
            ds.gather(bad)


def test_allowed_special_goes_to_the_tokenizer(tmp_path, write_gpt2_files):
    """A corpus with <|endoftext|> between documents and GPT-2's tokenizer: the default refuses the special
    token's spelling as tiktoken does; allowed_special (tiktoken's argument) makes it its one id."""
    gpt2 = BPETokenizer.from_gpt2_files(*write_gpt2_files(tmp_path, BPETokenizer().train(TEXT, vocab_size=270)))
    eot = gpt2.special_tokens["<|endoftext|>"]
    corpus = TEXT + "<|endoftext|>" + TEXT
    with pytest.raises(ValueError, match="allowed_special"):
        TextDataset(corpus, gpt2, block_size=4)
    for allowed in ("all", {"<|endoftext|>"}):
        ds = TextDataset(corpus, gpt2, block_size=4, val_fraction=0.0, allowed_special=allowed)
        assert ds.ids.tolist() == gpt2.encode(corpus, allowed_special="all") and ds.ids.tolist().count(eot) == 1
    seen = []

    class Recording(CharTokenizer):
        def encode(self, text, **kwargs):
            seen.append(kwargs)
            return super().encode(text)
    TextDataset(TEXT, Recording(TEXT), block_size=4)
    TextDataset(TEXT, Recording(TEXT), block_size=4, allowed_special="all")
    assert seen == [{}, {"allowed_special": "all"}], "nothing is passed unless asked: any tokenizer keeps working"


@pytest.mark.parametrize("index", [True, False, np.True_])
def test_a_bool_is_not_a_window_index(tok, index):
    """Python counts True as 1: ds[True] silently read window 1."""
    for ds in (TextDataset(TEXT, tok, block_size=4), TokenDataset(np.arange(20, dtype=np.uint16), block_size=4)):
        with pytest.raises(TypeError, match=f"{type(ds).__name__} indices must be integers, got bool"):
            ds[index]
