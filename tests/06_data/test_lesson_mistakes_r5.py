"""Round-5 mutation escapes of module 06: plausible wrong answers that the older tests let through."""

import numpy as np

import tinytorch as tt
from tinytorch.data import BPETokenizer, RandomSampler, TextDataset, random_split


def test_random_split_with_a_generator_object_partitions():
    # a fresh permutation per part overlaps when the generator is an object (or None)
    for generator in (np.random.default_rng(0), None):
        tt.manual_seed(1)
        parts = random_split(list(range(12)), [4, 4, 4], generator=generator)
        assert sorted(sum([list(p.indices) for p in parts], [])) == list(range(12))


def test_random_sampler_partial_lap_draws_from_all_indices():
    # permutation(rest) instead of permutation(n)[:rest] only ever yields indices < rest
    seen = {i for seed in range(10) for i in RandomSampler(range(10), num_samples=3, generator=seed)}
    assert seen == set(range(10))
    seen = {i for seed in range(10) for i in list(RandomSampler(range(6), num_samples=8, generator=seed))[6:]}
    assert max(seen) > 1


def test_random_sampler_laps_are_new_permutations():
    laps = np.array(list(RandomSampler(range(5), num_samples=50, generator=0))).reshape(10, 5)
    assert all(sorted(lap) == list(range(5)) for lap in laps.tolist())
    assert len({tuple(lap) for lap in laps.tolist()}) > 1


def test_bpe_trains_on_utf8_bytes():
    tok = BPETokenizer().train("ééé über", vocab_size=258)
    assert tok.merges[0] == (0xC3, 0xA9)
    assert all(a < tok.vocab_size and b < tok.vocab_size for a, b in tok.merges)
    assert tok.decode(tok.encode("ééé über")) == "ééé über"


class Digits:
    def encode(self, text):
        return [int(c) for c in text]


def test_text_dataset_val_split_rounds_down():
    text = "0123456789" * 2 + "012345678"  # 29 tokens: floor(2.9) = 2 for val
    assert TextDataset(text, Digits(), 1, split="val", val_fraction=0.1).ids.tolist() == [7, 8]
    assert len(TextDataset(text, Digits(), 1, split="train", val_fraction=0.1).ids) == 27


def test_shuffle_without_generator_follows_manual_seed():
    from tinytorch.data import DataLoader
    data = list(range(20))
    orders = []
    for seed in (1, 2, 1):
        tt.manual_seed(seed)
        orders.append(sum((b.tolist() for b in DataLoader(data, batch_size=5, shuffle=True)), []))
    assert orders[0] == orders[2] != orders[1]


def test_collate_keeps_the_samples_key_order():
    from tinytorch.data import default_collate
    batch = default_collate([{"y": 1, "x": 2.0, "a": np.float32(3)}, {"y": 4, "x": 5.0, "a": np.float32(6)}])
    assert list(batch) == ["y", "x", "a"]
