"""The word rule, the scheme validator and JSONL reading."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd.schema import Document, Entity, Relation, iter_jsonl, validate_document, validate_files
from rasd.text import is_word_char, normalize_for_linking, split_words, span_is_word_aligned

ARABIC = "ابتثجحخدذرزسشصضطظعغفقكلمنهويءأإآةى"
ALPHABET = ARABIC + "abc019٠١٢" + "\u064B\u0650\u0651\u0670\u0640" + " \n،.:؛-/()«»“”\"'"


def test_split_words_examples():
    text = "بقاعدة “قسرك” (قسد)، 15 عملية"
    toks = [text[s:e] for s, e in split_words(text)]
    assert toks == ["بقاعدة", "“", "قسرك", "”", "(", "قسد", ")", "،", "15", "عملية"]


def test_diacritics_and_tatweel_stay_in_words():
    text = "سلّمَت القـوات"
    assert [text[s:e] for s, e in split_words(text)] == ["سلّمَت", "القـوات"]


@given(st.text(alphabet=ALPHABET, max_size=80))
def test_split_words_covers_every_non_space_char_once(text):
    spans = split_words(text)
    covered = [0] * len(text)
    for s, e in spans:
        assert s < e
        for i in range(s, e):
            covered[i] += 1
        # punctuation tokens are single characters; words are maximal runs
        if not is_word_char(text[s]):
            assert e == s + 1
        else:
            assert all(is_word_char(c) for c in text[s:e])
            assert s == 0 or not is_word_char(text[s - 1])
            assert e == len(text) or not is_word_char(text[e])
    for i, c in enumerate(text):
        assert covered[i] == (0 if c.isspace() else 1)


def _split_words_by_the_rule(text):
    """The word rule read character by character (what split_words' regex must equal)."""
    spans, i = [], 0
    while i < len(text):
        if is_word_char(text[i]):
            j = i + 1
            while j < len(text) and is_word_char(text[j]):
                j += 1
            spans.append((i, j))
            i = j
        else:
            if not text[i].isspace():
                spans.append((i, i + 1))
            i += 1
    return spans


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=60), st.text(alphabet=ALPHABET + "_\u0301\u093f\u200c\u00a0\u2003\u0300", max_size=60)))
def test_split_words_equals_the_rule_on_any_text(text):
    """Any script, marks of other scripts, underscores and exotic spaces: the regex is the rule."""
    assert split_words(text) == _split_words_by_the_rule(text)


@given(st.text(alphabet=ALPHABET, max_size=60))
def test_word_spans_are_word_aligned(text):
    for s, e in split_words(text):
        assert span_is_word_aligned(text, s, e) == is_word_char(text[s])


def test_normalize_for_linking():
    assert normalize_for_linking("بقاعدة “التنف") == normalize_for_linking("قاعدة التنف")
    assert normalize_for_linking("للتحالف") == "التحالف"
    assert normalize_for_linking("والتحالف الدولي") == "التحالف الدولي"
    assert normalize_for_linking("القوات الأمريكيّة") == normalize_for_linking("القوات الامريكية")
    # real first letters are not mistaken for clitics
    assert normalize_for_linking("بغداد") == "بغداد"
    assert normalize_for_linking("كيدال") == "كيدال"
    assert normalize_for_linking("فرنسا") == "فرنسا"


GOOD = {"id": "d1", "text": "انسحبت القوات الأمريكية من قاعدة التنف.",
        "entities": [{"id": "T1", "start": 7, "end": 23, "label": "FORCE"},
                     {"id": "T2", "start": 27, "end": 38, "label": "BASE"}],
        "relations": [{"head": "T1", "tail": "T2", "label": "WITHDREW_FROM"}]}


def _bad(**changes):
    d = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        kind, idx, key = path.split("__")
        d[kind][int(idx)][key] = value
    return d


def test_valid_document_has_no_violations():
    assert validate_document(GOOD) == []


@pytest.mark.parametrize("doc,needle", [
    (_bad(entities__0__label="ARMY"), "unknown entity label 'ARMY' for scheme 'military'"),
    (_bad(entities__0__end=99), "bad offsets"),
    (_bad(entities__0__start=8), "not word-aligned"),
    (_bad(entities__1__end=39), "not word-aligned"),  # ends on the full stop
    (_bad(entities__1__start=20), "overlapping"),
    (_bad(relations__0__label="HANDED_TO"), "HANDED_TO between FORCE and BASE"),
    (_bad(relations__0__tail="T9"), "missing entity"),
    (_bad(entities__1__id="T1"), "duplicate entity id"),
    (_bad(relations__0__label="LEFT"), "unknown relation"),
])
def test_violations_are_named(doc, needle):
    problems = [str(v) for v in validate_document(doc, "f.jsonl:3")]
    assert any(needle in p for p in problems), problems
    assert all(p.startswith("f.jsonl:3 d1") for p in problems)


def test_text_field_mismatch_and_cross_paragraph():
    d = json.loads(json.dumps(GOOD))
    d["entities"][0]["text"] = "القوات"
    assert any("text field" in str(v) for v in validate_document(d))
    d = {"id": "p", "text": "القوات الأمريكية\nقاعدة التنف",
         "entities": [{"id": "a", "start": 0, "end": 16, "label": "FORCE"},
                      {"id": "b", "start": 17, "end": 28, "label": "BASE"}],
         "relations": [{"head": "a", "tail": "b", "label": "WITHDREW_FROM"}]}
    assert any("crosses paragraphs" in str(v) for v in validate_document(d))


def test_prediction_needs_scores():
    assert any("score" in str(v) for v in validate_document(GOOD, prediction=True))


@given(st.lists(st.one_of(st.just(json.dumps(GOOD, ensure_ascii=False)), st.just(""), st.just("{oops"),
                          st.just("   "), st.just('{"id": 5}')), max_size=8))
@settings(max_examples=60, deadline=None)
def test_iter_jsonl_reports_every_bad_line_with_its_number(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("j") / "x.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    got = list(iter_jsonl(str(path)))
    expected = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    assert [n for n, _, _ in got] == [n for n, _ in expected]
    for (n, obj, err), (_, line) in zip(got, expected):
        assert (err is not None) == (line == "{oops")


def test_bom_and_duplicates_across_files(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    b.write_text(json.dumps(GOOD) + "\n", encoding="utf-8")
    msgs = [str(v) for v in validate_files([str(a), str(b)])[0]]
    assert any("BOM" in m for m in msgs)
    assert any("duplicate document id" in m for m in msgs)
    assert any("same text" in m for m in msgs)


def test_document_round_trip():
    doc = Document.from_dict(GOOD)
    assert doc.to_dict() == GOOD
    doc.entities.append(Entity("T3", 0, 6, "OPERATION", score=0.5))
    doc.relations.append(Relation("T1", "T2", "WITHDREW_FROM", score=0.9))
    assert Document.from_dict(json.loads(doc.to_json())).to_dict() == doc.to_dict()


def test_validate_agrees_with_shared_checker(tmp_path):
    """Our validator and shared/tools/check_corpus.py flag the same broken documents."""
    from conftest import shared_path
    checker = shared_path("tools", "check_corpus.py")
    docs = [GOOD, _bad(entities__0__start=8), _bad(relations__0__label="HANDED_TO"), _bad(entities__1__start=20)]
    for i, d in enumerate(docs):
        d["id"] = f"d{i}"
        d["text"] = d["text"] + " نص" * i  # distinct texts
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps(d, ensure_ascii=False) for d in docs) + "\n", encoding="utf-8")
    ours = validate_files([str(path)])[0]
    theirs = subprocess.run([sys.executable, checker, str(path)], capture_output=True, text=True)
    assert theirs.returncode == 1
    their_lines = {ln.split(" ")[0] for ln in theirs.stdout.splitlines() if ln.startswith(str(path))}
    assert {v.where for v in ours} == their_lines
