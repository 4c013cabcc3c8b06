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


def test_batches_follow_the_lengths_each_epoch_trains_on():
    """Joined reports are longer than the document they start from: batching by the plain lengths would pad
    whole batches to them. The sampler asks for each epoch's lengths, and epoch_lengths gives the augmented ones."""
    import os

    from rasd.schema import read_documents
    from rasd_train.augment import Augmenter
    from rasd_train.batching import epoch_lengths

    docs = read_documents(os.path.join(os.path.dirname(__file__), "..", "data", "corpus", "train.jsonl"))[:400]
    augment = Augmenter(["join"], 0.3, seed=5, docs=docs)
    for epoch in (0, 1):
        lengths = epoch_lengths(docs, augment, epoch)
        assert lengths == [len(augment(i, epoch).text) for i in range(len(docs))]
        assert sum(lengths) > 1.15 * sum(len(d.text) for d in docs)  # some documents were joined
    assert epoch_lengths(docs, None, 3) == [len(d.text) for d in docs]

    def mean_pad(order, ls):  # characters of padding per document, batches of 8 in this order
        batches = [order[b:b + 8] for b in range(0, len(order), 8)]
        return sum(max(ls[i] for i in b) * len(b) - sum(ls[i] for i in b) for b in batches) / len(order)

    s = LengthBucketSampler(lambda e: epoch_lengths(docs, augment, e), 8, seed=1)
    fixed = LengthBucketSampler([len(d.text) for d in docs], 8, seed=1)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        fixed.set_epoch(epoch)
        lengths, order = epoch_lengths(docs, augment, epoch), list(s)
        assert sorted(order) == list(range(len(docs)))
        assert mean_pad(order, lengths) < 0.5 * mean_pad(list(fixed), lengths)
