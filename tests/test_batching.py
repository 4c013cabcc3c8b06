"""Length bucketing: every document once per epoch, batches of similar length, seeded per epoch."""
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd_train.batching import LengthBucketSampler


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 2000), min_size=1, max_size=400), st.integers(1, 16), st.integers(0, 99))
def test_each_index_once_per_epoch_and_deterministic(lengths, batch_size, seed):
    s = LengthBucketSampler(lengths, batch_size, seed, pool_batches=4)
    s.set_epoch(2)
    order = list(s)
    assert sorted(order) == list(range(len(lengths)))
    assert order == list(s)
    # only the final batch may be short, so DDP shards and accumulation stay even
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    assert all(len(b) == batch_size for b in batches[:-1])


def test_batches_are_homogeneous_and_epochs_differ():
    lengths = [(i * 7919) % 1000 for i in range(800)]
    s = LengthBucketSampler(lengths, 8, seed=1)
    order = list(s)
    spread = [max(lengths[i] for i in order[b:b + 8]) - min(lengths[i] for i in order[b:b + 8])
              for b in range(0, 800, 8)]
    assert sum(spread) / len(spread) < 60  # random batches of 8 spread ~780 on this range
    s.set_epoch(1)
    assert list(s) != order
