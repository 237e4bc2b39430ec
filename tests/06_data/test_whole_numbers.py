"""Module 06's counts follow the backend's one rule (`_check_whole`): a Python int or a NumPy integer, never
a bool or a float (2.0 neither, as PyTorch's DataLoader), and at least the argument's minimum."""

import pytest

from tinytorch.data import (BatchSampler, BPETokenizer, CharTokenizer, DataLoader, RandomSampler, SequentialSampler,
                            TextDataset, random_split)

TEXT = "abcdefghijklmnopqrstuvwxyz" * 4

# name: (call(value), a good value, the minimum, the error it raises)
SITES = {
    "RandomSampler.num_samples": (lambda v: RandomSampler(range(4), num_samples=v), 2, 1,
                                  "num_samples should be a positive integer value"),
    "BatchSampler.batch_size": (lambda v: BatchSampler(SequentialSampler(range(4)), v, False), 2, 1,
                                "batch_size should be a positive integer value"),
    "DataLoader.batch_size": (lambda v: DataLoader(list(range(4)), batch_size=v), 2, 1,
                              "batch_size should be a positive integer value"),
    "TextDataset.block_size": (lambda v: TextDataset(TEXT, CharTokenizer(TEXT), block_size=v), 2, 1,
                               "block_size must be a whole number >= 1"),
    "BPETokenizer.train.vocab_size": (lambda v: BPETokenizer().train("aaabdaaabac", vocab_size=v), 258, 256,
                                      "vocab_size must be a whole number >= 256"),
    # a count of 0 is allowed; True counted as 1 before
    "random_split.lengths": (lambda v: random_split(list(range(4)), [v, 4 - int(v)], generator=0), 2, 0,
                             r"lengths must be counts \(whole numbers >= 0\)"),
}


@pytest.mark.parametrize("site", list(SITES))
def test_counts_follow_one_whole_number_rule(site, whole_number_rule):
    whole_number_rule(*SITES[site])
