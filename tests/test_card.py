"""The model card states what the model is and how it was trained, read from the config it was trained with."""
from rasd_train.card import _augmentation, render_card


def test_augmentation_is_named_with_its_rate():
    assert _augmentation({"augment": "spelling,quotes", "augment_rate": 0.3}) == (
        "spelling, quotes (each applied to a training document with probability 0.3)")
    assert _augmentation({"augment": ""}) == "none"
    assert _augmentation({}) == "none"


def test_card_carries_the_augmentation():
    summary = {"config": {"encoder": {"name": "tiny"}, "train": {"augment": "spelling", "augment_rate": 0.3}}}
    card = render_card(summary, None)
    expected = "Training-time augmentation (on the fly, training only; `rasd_train.augment`): spelling (each applied"
    assert expected in card


def test_card_shows_where_the_errors_are():
    from rasd.schema import Document, Entity, Relation
    from rasd_train.errors import analyse
    from rasd_train.metrics import score

    text = "انسحبت القوات الأمريكية من قاعدة التنف"
    gold = Document("d", text, [Entity("a", 7, 23, "FORCE"), Entity("b", 27, 38, "BASE")],
                    [Relation("a", "b", "WITHDREW_FROM")])
    pred = Document("d", text, [Entity("p", 7, 23, "FORCE"), Entity("q", 33, 38, "BASE")], [])
    summary = {"config": {"encoder": {"name": "tiny"}}, "dev": {**score([gold], [pred]),
                                                                 "errors": analyse([gold], [pred])}}
    card = render_card(summary, None)
    assert "| | dev |" in card
    assert "| gold names found exactly | 1 (50.0%) |" in card
    assert "| wrong boundaries, right label | 1 (50.0%) |" in card
    assert "| not found exactly, names of 1 / 2 / 3 / 4+ words | n/a / 50% / n/a / n/a |" in card
    assert "| relations missed: head or tail not found exactly | 1 |" in card
    assert "Not recorded in this run" in render_card({"config": {"encoder": {"name": "tiny"}}}, None)


def test_card_names_the_decoding_and_what_was_kept_fixed():
    card = lambda model, train: render_card({"config": {"encoder": {"name": "tiny"}, "model": model,
                                                         "train": train}}, None)
    spans = card({"decoding": "spans", "span_max_tokens": 16}, {"freeze_embeddings": True, "freeze_layers": 2})
    assert "- Heads: a span head scoring every span of up to 16 tokens" in spans
    assert "Kept fixed in training: the embeddings and the lowest 2 encoder layers." in spans
    plain = card({"decoding": "viterbi"}, {})
    assert "- Heads: an IOB2 tagger on the first sub-token of each word, decoded by Viterbi" in plain
    assert "Kept fixed" not in plain and "moving average" not in plain
    averaged = card({"decoding": "viterbi"}, {"ema_decay": 0.995})
    assert "Evaluated and saved: a moving average of the weights (decay 0.995 per step)." in averaged
