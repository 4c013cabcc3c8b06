"""Error analysis (rasd_train.errors): every gold name, look-alike and relation lands in the category it should."""
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd.schema import Document, Entity, Relation, read_documents, write_documents
from rasd_train.errors import analyse, main, word_count

HERE = os.path.dirname(__file__)
DOCS = read_documents(os.path.join(HERE, "..", "data", "corpus", "dev.jsonl"))[:100]

TEXT = "انسحبت القوات الأمريكية من قاعدة التنف\nوسلمت مطار القامشلي إلى الجيش السوري، قال العقيد أحمد"


def span(text: str, mention: str, eid: str, label: str) -> Entity:
    start = text.index(mention)
    return Entity(eid, start, start + len(mention), label)


def gold_doc() -> Document:
    ents = [span(TEXT, "القوات الأمريكية", "e1", "FORCE"), span(TEXT, "قاعدة التنف", "e2", "BASE"),
            span(TEXT, "مطار القامشلي", "e3", "BASE"), span(TEXT, "الجيش السوري", "e4", "FORCE")]
    rels = [Relation("e1", "e2", "WITHDREW_FROM"), Relation("e3", "e4", "HANDED_TO")]
    person = TEXT.index("العقيد أحمد")
    meta = {"lookalikes": [{"start": person, "end": person + len("العقيد أحمد"), "kind": "PERSON"}]}
    return Document("d1", TEXT, ents, rels, meta)


def test_each_category_is_counted():
    pred = Document("d1", TEXT, [span(TEXT, "القوات الأمريكية", "p1", "FORCE"),  # exact
                                 span(TEXT, "التنف", "p2", "BASE"),  # boundary
                                 span(TEXT, "مطار القامشلي", "p3", "LOCATION"),  # label
                                 span(TEXT, "العقيد أحمد", "p5", "FORCE"),  # on the look-alike
                                 span(TEXT, "انسحبت", "p6", "LOCATION")],  # elsewhere
                    [Relation("p1", "p2", "WITHDREW_FROM")])
    r = analyse([gold_doc()], [pred])
    assert r["gold_entities"] == {"exact": 1, "boundary": 1, "label": 1, "missed": 1}
    assert r["spurious_predictions"] == {"look-alike PERSON": 1, "elsewhere": 1}
    assert r["lookalikes"] == {"PERSON": {"marked": 1, "tagged": 1, "share": 1.0}}
    assert r["lookalikes_tagged_as"] == {"PERSON as FORCE": 1}
    assert r["gold_relations"] == {"missed: head or tail not found exactly": 2}
    assert r["not_exact_by_words"]["2"] == {"gold": 4, "not_exact": 3, "share": 0.75}
    assert r["outcomes_by_words"]["2"] == {"exact": 1, "boundary": 1, "label": 1, "missed": 1}


def test_classifier_misses_and_found_relations():
    g = gold_doc()
    pred = Document("d1", TEXT, [Entity(f"p{e.id}", e.start, e.end, e.label) for e in g.entities],
                    [Relation("pe1", "pe2", "WITHDREW_FROM"), Relation("pe4", "pe3", "HANDED_TO")])
    r = analyse([g], [pred])
    assert r["gold_entities"] == {"exact": 4}
    assert r["gold_relations"] == {"found": 1, "missed: classifier": 1}
    assert r["lookalikes"]["PERSON"]["tagged"] == 0


def test_word_count_skips_punctuation_inside_a_name():
    text = "عملية «نبع السلام» بدأت"
    assert word_count(text, Entity("e", 0, text.index("»"), "OPERATION")) == 3


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(DOCS) - 1), st.randoms(use_true_random=False))
def test_kept_gold_names_are_exact_and_the_rest_missed(i, rnd):
    g = DOCS[i]
    kept = [e for e in g.entities if rnd.random() < 0.6]
    ids = {e.id for e in kept}
    rels = [r for r in g.relations if r.head in ids and r.tail in ids and rnd.random() < 0.7]
    r = analyse([g], [Document(g.id, g.text, kept, rels)])
    assert r["gold_entities"].get("exact", 0) == len(kept)
    assert sum(r["gold_entities"].values()) == len(g.entities)
    assert r["gold_relations"].get("found", 0) == len(rels)
    assert sum(r["gold_relations"].values()) == len(g.relations)
    assert sum(v["gold"] for v in r["not_exact_by_words"].values()) == len(g.entities)
    assert sum(sum(c.values()) for c in r["outcomes_by_words"].values()) == len(g.entities)


def test_unpaired_or_changed_predictions_are_refused():
    g = gold_doc()
    with pytest.raises(ValueError, match="no prediction for gold document 'd1'"):
        analyse([g], [Document("other", TEXT)])
    with pytest.raises(ValueError, match="'d1' is for a different text"):
        analyse([g], [Document("d1", TEXT + " ")])


def test_cli_reads_predictions_and_writes_counts(tmp_path, capsys):
    g = gold_doc()
    write_documents(tmp_path / "gold.jsonl", [g])
    write_documents(tmp_path / "pred.jsonl", [Document("d1", TEXT, g.entities[:2], g.relations[:1])])
    assert main(["--gold", str(tmp_path / "gold.jsonl"), "--pred", str(tmp_path / "pred.jsonl"),
                 "--out", str(tmp_path / "e.json")]) == 0
    saved = json.loads((tmp_path / "e.json").read_text(encoding="utf-8"))
    assert saved["gold_entities"] == {"exact": 2, "missed": 2}
    assert "gold relations: found 1" in capsys.readouterr().out
