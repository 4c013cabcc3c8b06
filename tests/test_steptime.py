"""The step-cost benchmark's variant parsing and one tiny measured run (its figures are not checked: a benchmark)."""
import pytest

from rasd_train.steptime import measure, parse_variant


def test_variants_parse_with_typed_values_and_errors_name_the_variant():
    assert parse_variant("mk=model.relation_markers=3;encoder.attention_dropout=0.0") == \
        ("mk", {"model.relation_markers": 3, "encoder.attention_dropout": 0.0})
    with pytest.raises(ValueError, match="'nokey': expected name=key=value"):
        parse_variant("nokey")
    with pytest.raises(ValueError, match="'x=a=1;b': 'b' is not key=value"):
        parse_variant("x=a=1;b")


def test_measure_times_every_variant_every_round(tiny_config_path):
    variants = {"default": {}, "markers": {"model.relation_markers": 1},
                "spans": {"model.span_max_tokens": 8, "model.decoding": "spans"},
                "frozen": {"train.freeze_embeddings": True, "train.freeze_layers": 1}}
    times = measure(tiny_config_path, variants, rounds=2, block=1)
    assert set(times) == set(variants)
    assert all(len(t) == 2 and all(x > 0 for x in t) for t in times.values())
