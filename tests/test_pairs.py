"""Relation pairs: candidates from the scheme, the one window-placement policy
(shared by training and serving), features keyed by the relation graph's
input names, and decoding under the scheme's type constraints."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd.align import Window
from rasd.onnx_spec import RELATION
from rasd.pairs import PAIR_INPUTS, candidate_pairs, decode_relation, pair_row, place_pair, stack_pairs
from rasd.scheme import Scheme, builtin_scheme
from rasd.schema import Entity

SCHEME = builtin_scheme()


def window(ws, we):
    """A window over words ws..we-1 whose word w sits at token w - ws + 1 (one token per word, [CLS] first)."""
    win = Window(ws, we, list(range(we - ws + 2)))
    win.word_token = {w: w - ws + 1 for w in range(ws, we)}
    win.word_last_token = {w: w - ws + 2 for w in range(ws, we)}
    return win


def test_candidate_pairs_follow_the_scheme_and_paragraphs():
    text = "القوات قاعدة\nالجيش مدينة"
    ents = [Entity("T1", 0, 6, "FORCE"), Entity("T2", 7, 12, "BASE"), Entity("T3", 13, 18, "FORCE"),
            Entity("T4", 19, 24, "LOCATION")]
    assert sorted(candidate_pairs(text, ents, SCHEME)) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    only_withdrawal = Scheme.from_dict({"name": "w", "version": "1", "entities": ["FORCE", "BASE", "LOCATION"],
                                        "relations": {"WITHDREW_FROM": {"head": ["FORCE"], "tail": ["BASE"]}}})
    assert sorted(candidate_pairs(text, ents, only_withdrawal)) == [(0, 1)]


def test_relation_decoding_masks_labels_the_types_do_not_allow():
    # FORCE -> BASE cannot be HANDED_TO even if that logit is highest
    label, p = decode_relation(np.array([0.0, 1.0, 5.0]), "FORCE", "BASE", SCHEME)
    assert label == "WITHDREW_FROM" and 0.5 < p < 1
    label, p = decode_relation(np.array([3.0, 1.0, 5.0]), "FORCE", "BASE", SCHEME)
    assert label == "NONE" and p > 0.5


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(st.floats(-20, 20), min_size=3, max_size=3),
                          st.sampled_from(["FORCE", "BASE", "LOCATION", "OPERATION"]),
                          st.sampled_from(["FORCE", "BASE", "LOCATION", "OPERATION"])), max_size=12))
def test_batched_relation_decoding_equals_one_pair_at_a_time(rows):
    """The pipeline decides all pairs of a batch in one masked softmax; each must equal decode_relation."""
    from rasd.pairs import decode_relations
    logits = np.array([r[0] for r in rows], dtype=np.float32).reshape(len(rows), 3)
    got = decode_relations(logits, [(h, t) for _, h, t in rows], SCHEME)
    want = [decode_relation(logits[i], h, t, SCHEME) for i, (_, h, t) in enumerate(rows)]
    assert [g[0] for g in got] == [w[0] for w in want]
    assert [g[1] for g in got] == pytest.approx([w[1] for w in want])


def test_pair_is_placed_in_the_most_central_window():
    wins = [window(0, 10), window(6, 16), window(12, 22)]
    # words 7 and 9: in windows 0 and 1; margins min(7-0, 10-8, 9-0, 10-10)=0 vs min(1, 8, 3, 6)=1 -> window 1
    assert place_pair(wins, (7, 8), (9, 10)) == 1
    assert place_pair(wins, (1, 2), (3, 4)) == 0  # only window 0 holds both
    assert place_pair(wins, (1, 2), (20, 21)) is None  # never together
    # a tie goes to the earlier window
    assert place_pair([window(0, 10), window(0, 10)], (4, 5), (5, 6)) == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 3), st.data())
def test_placement_is_central_and_holds_both(n_words, size, width, data):
    step = max(1, size // 2)
    wins = [window(s, min(s + size, n_words)) for s in range(0, n_words, step)]
    a = data.draw(st.integers(0, n_words - 1))
    b = data.draw(st.integers(0, n_words - 1))
    head, tail = (a, min(a + width, n_words)), (b, min(b + width, n_words))
    wi = place_pair(wins, head, tail)
    holding = [i for i, w in enumerate(wins) if w.word_start <= min(head[0], tail[0]) and
               max(head[1], tail[1]) <= w.word_end]
    if not holding:
        assert wi is None
        return
    assert wi in holding
    margin = lambda w: min(head[0] - w.word_start, tail[0] - w.word_start, w.word_end - head[1], w.word_end - tail[1])
    assert margin(wins[wi]) == max(margin(wins[i]) for i in holding)


def test_features_are_keyed_by_the_relation_graph_inputs():
    win = window(0, 10)
    rows = [pair_row(win, (1, 3), (5, 6), 1, 0), pair_row(win, (5, 6), (1, 3), 0, 1)]
    feats = stack_pairs(rows, [0, 2])
    assert set(feats) == set(PAIR_INPUTS) == set(RELATION["inputs"]) - set(RELATION["context"])
    assert feats["head_span"].tolist() == [[2, 4], [6, 7]] and feats["tail_span"].tolist() == [[6, 7], [2, 4]]
    assert feats["pair_batch"].tolist() == [0, 2]
    assert feats["distance_bucket"].tolist() == [2, 2]  # two tokens between the spans, either way round
    for name, (dtype, axes) in RELATION["inputs"].items():
        if name in feats:
            assert feats[name].dtype == np.dtype(dtype) and feats[name].ndim == len(axes)
    empty = stack_pairs([], [])
    assert empty["head_span"].shape == (0, 2) and empty["pair_batch"].shape == (0,)


def test_sentence_gap_counts_sentence_ends_between_the_pair():
    from rasd.pairs import MAX_SENTENCE_GAP, sentence_gap
    text = "انسحبت القوات من قاعدة التنف. وسلمتها إلى الجيش؟ ثم غادرت 3.5 كم نحو حمص.\nوفي اليوم التالي دخلت الفرقة"
    ent = {w: Entity(w, text.index(w), text.index(w) + len(w), "LOCATION") for w in ("القوات", "التنف", "الجيش",
                                                                                   "حمص", "الفرقة")}
    assert sentence_gap(text, ent["القوات"], ent["التنف"]) == 0  # same sentence
    assert sentence_gap(text, ent["التنف"], ent["القوات"]) == 0  # order does not matter
    assert sentence_gap(text, ent["التنف"], ent["الجيش"]) == 1
    assert sentence_gap(text, ent["الجيش"], ent["حمص"]) == 1  # the point in 3.5 is no sentence end
    assert sentence_gap(text, ent["القوات"], ent["الفرقة"]) == MAX_SENTENCE_GAP  # 4 ends, capped


@given(st.lists(st.sampled_from(["قوات", "قاعدة", "،", "و", "3.5"]), min_size=2, max_size=12))
def test_no_sentence_end_means_gap_zero(words):
    from rasd.pairs import sentence_gap
    text = " ".join(words)
    a, b = Entity("a", 0, len(words[0]), "FORCE"), Entity("b", len(text) - len(words[-1]), len(text), "BASE")
    assert sentence_gap(text, a, b) == 0
