"""The model card states the training-time augmentation read from the config the model was trained with."""
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
