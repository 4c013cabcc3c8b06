"""Training augmentation keeps offsets exact: every augmented document is valid and its names are the same names."""
import os
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd.schema import Document, Entity, Relation, read_documents, validate_document
from rasd_train.augment import (AUGMENTATIONS, RENAMING, TATWEEL, Augmenter, Insertion, _insert,
                                arabic_indic_digits, attach_clitics, diacritics, fuse_prepositions, join_documents,
                                name_pool, parse_names, quote_names, replace_mentions, spelling_variants)

HERE = os.path.dirname(__file__)
TRAIN = os.path.join(HERE, "..", "data", "corpus", "train.jsonl")
DOCS = read_documents(TRAIN)[:300]
MARKS = re.compile("[\u064B-\u065F\u0670\u0640]")
SPELLING = str.maketrans({"ى": "ي", "أ": "ا", "إ": "ا", "آ": "ا", "ة": "ه"})
INDIC = str.maketrans({chr(0x0660 + d): str(d) for d in range(10)})


def plain(s: str) -> str:
    """What an augmentation may change, undone: marks, spelling variants, digits."""
    return MARKS.sub("", s).translate(SPELLING).translate(INDIC)


def assert_same_names(before: Document, after: Document) -> None:
    assert validate_document(after.to_dict(), "augmented") == []
    assert [e.id for e in before.entities] == [e.id for e in after.entities]
    assert [(r.head, r.tail, r.label) for r in before.relations] == [(r.head, r.tail, r.label) for r in after.relations]
    for b, a in zip(before.entities, after.entities):
        assert a.label == b.label
        assert plain(after.text[a.start:a.end]) == plain(before.text[b.start:b.end])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(DOCS) - 1), st.integers(0, 10**6), st.sampled_from(sorted(set(AUGMENTATIONS) - {*RENAMING})))
def test_each_augmentation_keeps_every_name(i, seed, name):
    doc = DOCS[i]
    assert_same_names(doc, AUGMENTATIONS[name](doc, random.Random(seed)))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(DOCS) - 1), st.integers(0, 10**6))
def test_all_augmentations_stacked_with_joining(i, seed):
    aug = Augmenter(["join", "quotes", "spelling", "diacritics", "digits", "clitics", "prepositions", "mentions"], 1.0,
                    seed, DOCS)
    out = aug(i, epoch=seed % 7)
    assert validate_document(out.to_dict(), "augmented") == []
    assert len(out.entities) >= len(DOCS[i].entities)
    assert out == aug(i, epoch=seed % 7), "the same (seed, epoch, index) must give the same document"


POOL = name_pool(DOCS)


def renamed_pairs(doc, out):
    """(gold entity before, entity after) in text order, once the renamed document is checked to be valid, with
    the same relations and the same entity ids and labels."""
    assert validate_document(out.to_dict(), "augmented") == []
    assert [(r.head, r.tail, r.label) for r in doc.relations] == [(r.head, r.tail, r.label) for r in out.relations]
    pairs = sorted(zip(doc.entities, out.entities), key=lambda p: p[1].start)
    for b, a in pairs:
        assert (a.id, a.label) == (b.id, b.label)
    return pairs


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(DOCS) - 1), st.integers(0, 10**6), st.floats(0.0, 1.0))
def test_mention_replacement_puts_a_pool_name_of_the_same_label_at_every_offset(i, seed, rate):
    doc = DOCS[i]
    out = replace_mentions(doc, random.Random(seed), POOL, rate)
    swapped = {}
    for b, a in renamed_pairs(doc, out):
        old, new = doc.text[b.start:b.end], out.text[a.start:a.end]
        assert new == old or new in POOL[b.label]
        assert swapped.setdefault((old, b.label), new) == new, "every mention of a name is swapped alike"
    # what lies between the names is untouched
    between = lambda d: [d.text[x.end:y.start] for x, y in zip(sorted(d.entities, key=lambda e: e.start),
                                                                   sorted(d.entities, key=lambda e: e.start)[1:])]
    assert between(out) == between(doc)


def test_mention_replacement_swaps_at_rate_one_and_keeps_at_zero():
    doc = Document("d", "انسحبت القوات الفرنسية من قاعدة تيساليت ثم سلمت قاعدة تيساليت.",
                   [Entity("e1", 7, 22, "FORCE"), Entity("e2", 26, 39, "BASE"), Entity("e3", 48, 61, "BASE")])
    pool = {"FORCE": ["القوات الفرنسية", "الجيش المالي"], "BASE": ["قاعدة تيساليت", "معسكر أغيلهوك"]}
    assert replace_mentions(doc, random.Random(1), pool, 0.0) == doc
    out = replace_mentions(doc, random.Random(1), pool, 1.0)
    assert out.text == "انسحبت الجيش المالي من معسكر أغيلهوك ثم سلمت معسكر أغيلهوك."
    assert [out.text[e.start:e.end] for e in out.entities] == ["الجيش المالي", "معسكر أغيلهوك", "معسكر أغيلهوك"]


def _clitic_forms(name):
    if name.startswith("ال"):
        return {"و" + name, "ب" + name, "ل" + name[1:], "ول" + name[1:]}
    return {"و" + name, "ب" + name, "ل" + name}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(DOCS) - 1), st.integers(0, 10**6), st.floats(0.0, 1.0))
def test_clitics_join_the_first_word_and_the_span_takes_them_in(i, seed, rate):
    doc = DOCS[i]
    out = attach_clitics(doc, random.Random(seed), rate)
    for b, a in renamed_pairs(doc, out):
        old, new = doc.text[b.start:b.end], out.text[a.start:a.end]
        assert new == old or new in _clitic_forms(old)
        # the clitic is part of the word: no letter right before the new span, so the span starts a word
        assert a.start == 0 or not out.text[a.start - 1].isalpha()
    # nothing else in the text changes: removing each new clitic gives the old document back
    assert plain_of_clitics(out, doc) == doc.text


def plain_of_clitics(out, doc):
    parts, last = [], 0
    for b, a in sorted(zip(doc.entities, out.entities), key=lambda p: p[1].start):
        parts += [out.text[last:a.start], doc.text[b.start:b.end]]
        last = a.end
    return "".join(parts) + out.text[last:]


def test_clitics_at_rate_one_change_every_name_but_those_already_carrying_one():
    doc = Document("d", "انسحبت القوات الفرنسية من قاعدة تيساليت وسلمتها للجيش المالي.",
                   [Entity("e1", 7, 22, "FORCE"), Entity("e2", 26, 39, "BASE"), Entity("e3", 48, 60, "FORCE")],
                   [Relation("e1", "e2", "WITHDREW_FROM"), Relation("e2", "e3", "HANDED_TO")])
    assert attach_clitics(doc, random.Random(3), 0.0) == doc
    seen = set()
    for seed in range(40):
        out = attach_clitics(doc, random.Random(seed), 1.0)
        names = [out.text[e.start:e.end] for e in out.entities]
        assert names[0] in _clitic_forms("القوات الفرنسية") and names[1] in _clitic_forms("قاعدة تيساليت")
        assert names[2] == "للجيش المالي", "a name that opens with a clitic before the article gets no second one"
        seen.add(names[0])
    assert seen == _clitic_forms("القوات الفرنسية"), "every form is drawn"


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(DOCS) - 1), st.integers(0, 10**6), st.floats(0.0, 1.0))
def test_prepositions_become_clitics_of_the_name_after_them(i, seed, rate):
    doc = DOCS[i]
    out = fuse_prepositions(doc, random.Random(seed), rate)
    parts, last = [], 0
    for b, a in renamed_pairs(doc, out):
        old, new = doc.text[b.start:b.end], out.text[a.start:a.end]
        assert a.start == 0 or not out.text[a.start - 1].isalpha()
        if new == old:
            parts += [out.text[last:a.start], old]
        else:  # في NAME -> بNAME, إلى NAME -> لNAME (ل + ال -> لل): put the word back, the rest is unchanged
            word = {"ب": "في ", "ل": "إلى "}[new[0]]
            assert new in ("ب" + old, "ل" + old, "ل" + old[1:]) and doc.text[:b.start].endswith(word)
            parts += [out.text[last:a.start], word, old]
        last = a.end
    assert "".join(parts) + out.text[last:] == doc.text


def test_prepositions_fuse_only_whole_words_before_a_name():
    text = "انسحبت القوات الفرنسية إلى قاعدة في العراق وسلمت كافي العراق إلى القوات العراقية."
    names = ["القوات الفرنسية", "قاعدة", "العراق", "العراق", "القوات العراقية"]
    starts, pos = [], 0
    for n in names:
        pos = text.index(n, pos)
        starts.append(pos)
        pos += len(n)
    doc = Document("d", text, [Entity(f"e{k}", s, s + len(n), "LOCATION")
                               for k, (s, n) in enumerate(zip(starts, names))])
    out = fuse_prepositions(doc, random.Random(0), 1.0)
    assert out.text == "انسحبت القوات الفرنسية لقاعدة بالعراق وسلمت كافي العراق للقوات العراقية."
    assert [out.text[e.start:e.end] for e in out.entities] == \
        ["القوات الفرنسية", "لقاعدة", "بالعراق", "العراق", "للقوات العراقية"]
    assert fuse_prepositions(doc, random.Random(0), 0.0) == doc


def test_insertions_attach_as_the_word_rule_says():
    doc = Document("d", "من قاعدة التنف.", [Entity("e1", 3, 14, "BASE")])
    # a quote before the name and after it stand alone; a mark after its last letter joins it
    out = _insert(doc, [Insertion(3, "«", False), Insertion(14, "ِ", True), Insertion(14, "»", False)])
    assert out.text == "من «قاعدة التنفِ»."
    e = out.entities[0]
    assert out.text[e.start:e.end] == "قاعدة التنفِ"


def test_quotes_are_outside_spans_and_sometimes_unbalanced():
    rng = random.Random(0)
    quoted = [quote_names(d, rng, rate=1.0) for d in DOCS[:50]]
    opened = closed = 0
    for d in quoted:
        for e in d.entities:
            before, after = d.text[e.start - 1:e.start], d.text[e.end:e.end + 1]
            opened += before in "«\"“'„‹"
            closed += after in "»\"”'“›"
    assert opened and closed and opened != closed  # both sides, not always balanced


def test_diacritics_make_fully_vowelled_text_and_tatweel():
    doc = DOCS[0]
    out = diacritics(doc, random.Random(1), rate=1.0, tatweel_rate=0.2)
    letters = sum("\u0621" <= c <= "\u064A" for c in doc.text)
    assert len(MARKS.findall(out.text)) >= letters
    assert TATWEEL in out.text


def test_spelling_and_digits_keep_length_and_change_text():
    doc = next(d for d in DOCS if re.search(r"\d", d.text))
    sp = spelling_variants(doc, random.Random(3), rate=1.0)
    dg = arabic_indic_digits(doc, random.Random(3))
    assert len(sp.text) == len(doc.text) and sp.text != doc.text
    assert len(dg.text) == len(doc.text) and not re.search(r"[0-9]", dg.text)


def test_join_keeps_both_documents_and_renames_clashing_ids():
    a, b = DOCS[0], DOCS[1]
    j = join_documents(a, b)
    assert j.text.startswith(a.text) and j.text.endswith(b.text) and "\n\n" in j.text
    assert len({e.id for e in j.entities}) == len(a.entities) + len(b.entities)
    assert len(j.relations) == len(a.relations) + len(b.relations)
    assert validate_document(j.to_dict(), "joined") == []


def test_joining_only_pairs_documents_of_the_same_event():
    aug = Augmenter(["join"], 1.0, 5, DOCS)
    for i in list(aug.same_event)[:30]:
        assert all(DOCS[j].meta["event"] == DOCS[i].meta["event"] and j != i for j in aug.same_event[i])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown augmentation.*'?emoji"):
        Augmenter(["emoji"], 0.3, 1, DOCS)
    with pytest.raises(ValueError, match="rate must be in"):
        Augmenter(["quotes"], 1.5, 1, DOCS)
    assert parse_names(" quotes, diacritics ,") == ["quotes", "diacritics"]


def test_robustness_comparison_scores_every_variant_and_decoding(trained_run, mini_corpus):
    from rasd_train.robustness import compare, surface_variants
    variants = surface_variants(DOCS[:20])
    for name, docs in variants.items():
        for before, after in zip(DOCS[:20], docs):
            assert_same_names(before, after)
    assert any("\u064E" in d.text or "\u064F" in d.text for d in variants["diacritised"])
    assert all(not re.search("[أإآ]", d.text) for d in variants["dehamzated"])
    quotes = re.compile("[«»\"“”'„‹›]")
    assert all(len(quotes.findall(after.text)) >= len(quotes.findall(before.text)) + len(before.entities)
               for before, after in zip(DOCS[:20], variants["quoted"]))
    assert all(not re.search("[0-9]", d.text) for d in variants["indic_digits"])
    run_dir, _ = trained_run
    out = compare(os.path.join(run_dir, "model"), mini_corpus)
    names = ("plain", "diacritised", "dehamzated", "quoted", "indic_digits")
    assert {f"dev_{v}/{d}" for v in names for d in ("argmax", "viterbi")} <= set(out)
