"""harness.seeds.seed_for: one stream per (trial seed, purpose, index), written out, and no two purposes alike."""

import itertools

from harness.seeds import seed_for
from harness.training import BatchStream


def _by_hand(seed: int, *purpose: int) -> int:
    """The docstring's recurrence: start at the seed's low 31 bits; per purpose x 0x9E3779B1, + purpose, + 0x7F4A7C15,
    modulo the prime 2**63 - 25."""
    out = seed % 2**31
    for p in purpose:
        out = (out * 0x9E3779B1 + p % 2**32 + 0x7F4A7C15) % (2**63 - 25)
    return out


def test_seed_for_is_the_documented_recurrence():
    for seed, purpose in [(0, (0,)), (7, (5,)), (123456, (1, 9)), (2**40 + 3, (6, 2))]:
        assert seed_for(seed, *purpose) == _by_hand(seed, *purpose)


def test_every_purpose_and_index_of_a_trial_seed_gets_its_own_stream():
    seeds = [seed_for(s, p) for s in range(5) for p in range(9)]
    seeds += [seed_for(s, 1, epoch) for s in range(5) for epoch in range(20)]
    assert len(set(seeds)) == len(seeds)


def test_two_epochs_of_a_batch_stream_are_shuffled_differently():
    stream = BatchStream(64, 8, seed=3)
    first, second = (list(itertools.chain(*itertools.islice(iter(BatchStream(64, 8, seed=3, epoch=e)), 8)))
                     for e in (0, 1))
    assert sorted(first) == sorted(second) == list(range(64)) and first != second
    assert stream.per_epoch == 8
