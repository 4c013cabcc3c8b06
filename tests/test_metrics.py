"""Scoring on hand-made cases: strict and partial matching, each gold used once, relation outcomes, the threshold
table and calibration, and the parity comparison of decoded documents."""
import pytest

from rasd.schema import Document, Entity, Relation
from rasd_train.metrics import score


def _doc(ents, rels=()):
    text = "القوات الأمريكية انسحبت من قاعدة التنف في محافظة حمص"
    return Document("d", text, [Entity(f"T{i + 1}", s, e, lab) for i, (s, e, lab) in enumerate(ents)],
                    [Relation(h, t, lab) for h, t, lab in rels])


def test_metrics_on_hand_made_cases():
    gold = _doc([(0, 16, "FORCE"), (27, 38, "BASE"), (42, 52, "LOCATION")], [("T1", "T2", "WITHDREW_FROM")])
    # T1 exact, T2 boundary error (partial only), T3 wrong label, one spurious OPERATION
    pred = _doc([(0, 16, "FORCE"), (33, 38, "BASE"), (42, 52, "BASE"), (17, 23, "OPERATION")],
                [("T1", "T2", "WITHDREW_FROM")])
    m = score([gold], [pred])
    s, p = m["strict"], m["partial"]
    assert s["entities"]["micro"]["tp"] == 1 and s["entities"]["micro"]["pred"] == 4
    assert s["entities"]["micro"]["gold"] == 3
    assert p["entities"]["micro"]["tp"] == 2
    assert s["entities"]["FORCE"]["f1"] == 1.0 and s["entities"]["LOCATION"]["recall"] == 0.0
    # relation: tail is only a partial match
    assert s["relations"]["micro"]["tp"] == 0 and p["relations"]["micro"]["tp"] == 1
    assert m["seqeval"]["FORCE"]["f1-score"] == 1.0
    conf = m["confusion"]
    loc, base = conf["labels"].index("LOCATION"), conf["labels"].index("BASE")
    assert conf["matrix"][loc][base] == 2  # محافظة حمص: two words tagged BASE


def test_partial_matching_uses_each_gold_once():
    gold = _doc([(0, 16, "FORCE")])
    pred = _doc([(0, 6, "FORCE"), (7, 16, "FORCE")])
    m = score([gold], [pred])
    assert m["partial"]["entities"]["micro"]["tp"] == 1


def test_parity_compares_decisions_and_unrounded_scores():
    from rasd_train.gate import decoded_differences
    a = _doc([(0, 16, "FORCE"), (27, 38, "BASE")], [("T1", "T2", "WITHDREW_FROM")])
    b = _doc([(0, 16, "FORCE"), (27, 38, "BASE")], [("T1", "T2", "WITHDREW_FROM")])
    a.entities[0].score, b.entities[0].score = 0.62345, 0.623451  # crosses a 4-decimal rounding boundary
    assert decoded_differences([a], [b]) == []
    b.entities[0].score = 0.7  # the same decision with a different confidence is a parity failure
    assert decoded_differences([a], [b])[0]["max_score_diff"] > 0.07
    c = _doc([(0, 16, "FORCE"), (27, 38, "LOCATION")], [("T1", "T2", "WITHDREW_FROM")])
    diff = decoded_differences([a], [c])
    assert len(diff) == 1 and diff[0]["onnx_entities"][1] == (27, 38, "LOCATION")


def test_threshold_table_and_calibration_on_a_hand_made_case():
    from rasd_train.calibration import calibration, report
    gold = _doc([(0, 16, "FORCE"), (27, 38, "BASE"), (42, 52, "LOCATION")], [("T1", "T2", "WITHDREW_FROM")])
    pred = _doc([(0, 16, "FORCE"), (27, 38, "BASE"), (17, 23, "OPERATION")], [("T1", "T2", "WITHDREW_FROM")])
    for e, s in zip(pred.entities, (0.9, 0.6, 0.4)):  # two right, the OPERATION wrong
        e.score = s
    pred.relations[0].score = 0.8
    rep = report([gold], [pred])
    rows = {r["threshold"]: r for r in rep["thresholds"]}
    assert (rows[0.0]["entities"]["tp"], rows[0.0]["entities"]["pred"]) == (2, 3)
    assert (rows[0.5]["entities"]["tp"], rows[0.5]["entities"]["pred"], rows[0.5]["entities"]["recall"]) == \
        (2, 2, round(2 / 3, 4))
    assert rows[0.7]["entities"]["tp"] == 1 and rows[0.7]["relations"]["tp"] == 0  # its tail went under 0.7
    assert rows[0.0]["relations"]["tp"] == 1
    ent = rep["calibration"]["entities"]
    # bins: 0.4 wrong, 0.6 right, 0.9 right -> |0.4-0| + |0.6-1| + |0.9-1| over 3
    assert ent["ece"] == pytest.approx((0.4 + 0.4 + 0.1) / 3, abs=1e-4) and ent["predictions"] == 3
    assert calibration([(1.0, True)])["bins"][0]["bin"] == [0.9, 1.0]


def test_relation_matching_is_shared_and_uses_each_gold_once():
    from rasd_train.errors import _relation_outcomes
    from rasd_train.metrics import match_entities, match_relations
    gold = _doc([(0, 16, "FORCE"), (27, 38, "BASE"), (42, 52, "LOCATION")],
                [("T1", "T2", "WITHDREW_FROM"), ("T1", "T3", "WITHDREW_FROM")])
    # the first relation predicted twice (matches once); the second lost: its tail is not found exactly
    pred = _doc([(0, 16, "FORCE"), (27, 38, "BASE"), (42, 48, "LOCATION")],
                [("T1", "T2", "WITHDREW_FROM"), ("T1", "T2", "WITHDREW_FROM"), ("T1", "T3", "WITHDREW_FROM")])
    strict = match_entities(gold.entities, pred.entities, strict=True)
    assert match_relations(gold, pred, strict) == {0}
    assert score([gold], [pred])["strict"]["relations"]["micro"]["tp"] == 1
    assert _relation_outcomes(gold, pred, strict) == {"found": 1, "missed: head or tail not found exactly": 1}
    # with the tail exact but the label wrong, the classifier is to blame
    pred2 = _doc([(0, 16, "FORCE"), (27, 38, "BASE"), (42, 52, "LOCATION")],
                 [("T1", "T2", "WITHDREW_FROM"), ("T3", "T1", "HANDED_TO")])
    strict2 = match_entities(gold.entities, pred2.entities, strict=True)
    assert _relation_outcomes(gold, pred2, strict2) == {"found": 1, "missed: classifier": 1}
