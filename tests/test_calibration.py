"""Score calibration: fitted on dev, carried in the config, applied by the pipeline without changing decisions."""
import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd.backend import ModelFilesError, ModelSpec
from rasd.calibration import IDENTITY, Calibration, Platt
from rasd_train.calibration import calibration, fit_platt


@settings(max_examples=50, deadline=None)
@given(st.floats(0.05, 5), st.floats(-3, 3), st.lists(st.floats(0.0, 1.0), min_size=2, max_size=50))
def test_platt_keeps_the_order_of_scores(a, b, scores):
    f = Platt(a, b)
    mapped = [f(s) for s in sorted(scores)]
    assert all(0.0 <= m <= 1.0 for m in mapped)
    assert all(x <= y + 1e-12 for x, y in zip(mapped, mapped[1:]))


def test_fit_recovers_an_overconfident_model():
    # true probability = sigmoid(0.5 * logit(score) - 0.3): scores claim more than they deliver
    rng = random.Random(0)
    outcomes = []
    for _ in range(20000):
        s = rng.uniform(0.02, 0.99)
        z = 0.5 * math.log(s / (1 - s)) - 0.3
        outcomes.append((s, rng.random() < 1 / (1 + math.exp(-z))))
    f = fit_platt(outcomes)
    assert abs(f.a - 0.5) < 0.05 and abs(f.b + 0.3) < 0.05, f
    before = calibration(outcomes)["ece"]
    after = calibration([(f(s), c) for s, c in outcomes])["ece"]
    assert after < before / 3, (before, after)


def test_too_little_or_one_sided_evidence_keeps_raw_scores():
    assert fit_platt([(0.9, True)] * 10 + [(0.2, False)] * 10) is IDENTITY  # under 50 predictions
    assert fit_platt([(0.9, True)] * 500) is IDENTITY  # never wrong: nothing to fit


def test_calibration_round_trips_and_bad_values_are_named(exported_copy):
    c = Calibration(entities=Platt(0.8, -0.1), relations=Platt(0.5, 0.2))
    assert Calibration.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="a > 0"):
        Platt(-1.0, 0.0)
    path = f"{exported_copy}/rasd_config.json"
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["calibration"] = {"entities": {"a": 0, "b": 1}}
    spec_dict = {k: cfg[k] for k in ("scheme", "id2tag", "window_length", "window_stride")}
    with pytest.raises(ModelFilesError, match="bad calibration"):
        ModelSpec.from_dict({**spec_dict, "calibration": cfg["calibration"]}, where=path)


def test_the_pipeline_applies_the_config_maps_and_keeps_decisions(exported_copy):
    from rasd import Extractor
    text = "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية بعد غارات جوية في محافظة دير الزور."
    raw = Extractor(exported_copy).extract(text)
    path = f"{exported_copy}/rasd_config.json"
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["calibration"] = {"entities": {"a": 0.5, "b": -0.2}, "relations": {"a": 2.0, "b": 0.1}}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    cal = Extractor(exported_copy, verify=False).extract(text)
    assert [(e.start, e.end, e.label) for e in cal.entities] == [(e.start, e.end, e.label) for e in raw.entities]
    assert [(r.head, r.tail, r.label) for r in cal.relations] == [(r.head, r.tail, r.label) for r in raw.relations]
    for a, b in zip(raw.entities, cal.entities):
        assert b.score == pytest.approx(Platt(0.5, -0.2)(a.score), abs=1e-9)
    for a, b in zip(raw.relations, cal.relations):
        assert b.score == pytest.approx(Platt(2.0, 0.1)(a.score), abs=1e-9)
    # Training reuses its raw dev predictions this way instead of predicting dev again: the very same documents.
    assert Calibration(Platt(0.5, -0.2), Platt(2.0, 0.1)).applied_to([raw]) == [cal]
    assert Calibration().applied_to([raw]) == [raw]
