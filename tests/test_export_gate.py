"""The INT8 gate: dev and test together, both metrics within the tolerance, decision agreement reported."""
import json
import os

from rasd.schema import Document, Entity, Relation
from rasd_train.export import INT8_GATE_BATCH_SIZES, agreement


def _report(export_dir):
    with open(os.path.join(export_dir, "export_report.json"), encoding="utf-8") as f:
        return json.load(f)


def test_gate_reads_dev_and_test_and_reports_agreement(exported_model, exported_fp32_only):
    for path, tolerance in ((exported_model, 1.0), (exported_fp32_only, -1.0)):
        r = _report(path)
        assert r["gate_documents"]["splits"] == ["dev", "test"] and r["gate_documents"]["documents"] == 8
        assert sorted(map(int, r["int8_by_batch_size"])) == list(INT8_GATE_BATCH_SIZES)
        for kind in ("entities", "relations"):
            assert 0.0 <= r["int8_agreement"][kind] <= 1.0
        drops = [r["fp32_gate"][k] - r["int8_gate"][k] for k in ("entity_f1", "relation_f1")]
        assert r["int8_published"] == all(d <= tolerance for d in drops)
    assert _report(exported_model)["int8_published"] and not _report(exported_fp32_only)["int8_published"]


def test_agreement_counts_identical_decisions():
    ents = [Entity("T1", 0, 5, "FORCE"), Entity("T2", 9, 14, "BASE")]
    a = [Document("a", "x" * 20, ents, [Relation("T1", "T2", "WITHDREW_FROM")])]
    assert agreement(a, a) == {"entities": 1.0, "relations": 1.0}
    moved = [Document("a", "x" * 20, [ents[0], Entity("T2", 9, 13, "BASE")], [Relation("T1", "T2", "WITHDREW_FROM")])]
    # one of three distinct entities is shared twice; the relation's tail moved, so no relation is shared
    assert agreement(a, moved) == {"entities": round(1 / 3, 4), "relations": 0.0}
    assert agreement([Document("e", "x")], [Document("e", "x")]) == {"entities": 1.0, "relations": 1.0}
