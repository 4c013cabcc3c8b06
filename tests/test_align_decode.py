"""Alignment and decoding: spans <-> tags <-> offsets, windows and merging."""
import json
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from rasd.align import SpecialTokens, make_windows, spans_to_word_tags, tokenize_text
from rasd.decode import decode_tags, merge_windows
from rasd.scheme import builtin_scheme
from rasd.schema import Entity
from rasd.text import split_words

SCHEME = builtin_scheme()
TAGS = SCHEME.bio_tags()
ENTITY_LABELS = SCHEME.entities
WORDS_FOR_VOCAB = ["قاعدة التنف بقاعدة “قسرك” القوات الأمريكية سلّمَت ، (قسد) 15 ٢٠٢١ و الجيش المالي في مدينة الحسكة ."]


def char_tokenizer() -> Tokenizer:
    """A WordPiece tokenizer whose vocabulary is single characters: one sub-token per character."""
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    for c in sorted(set("".join(WORDS_FOR_VOCAB))):
        for piece in (c, "##" + c):
            vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=1000))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    return tok


def wordpiece_tokenizer(texts):
    from rasd_train.tiny_encoder import train_wordpiece
    return train_wordpiece(texts, 300).backend_tokenizer


def one_hot(tags):
    p = np.full((len(tags), len(TAGS)), 0.01, dtype=np.float32)
    for i, t in enumerate(tags):
        p[i, TAGS.index(t)] = 0.96
    return p


def test_gold_spans_round_trip_on_mini_corpus(mini_docs):
    tok = wordpiece_tokenizer([d.text for d in mini_docs])
    for doc in mini_docs:
        tt = tokenize_text(doc.text, tok)
        tags = spans_to_word_tags(tt.words, doc.entities)
        ents = decode_tags(tt, one_hot(tags), TAGS)
        assert [(e.start, e.end, e.label) for e in ents] == [(e.start, e.end, e.label) for e in doc.entities]
        for e in ents:
            assert doc.text[e.start:e.end] == e.text


WORDS = ["قاعدة", "التنف", "بقاعدة", "“قسرك”", "القوات", "الأمريكية", "سلّمَت", "،", "(قسد)", "15", "٢٠٢١", "و",
         "الجيش", "المالي", "في", "مدينة", "الحسكة", "."]


@st.composite
def annotated_text(draw):
    """Random text from real words (with clitics, quotes, digits, diacritics) and random word-aligned spans."""
    n = draw(st.integers(1, 30))
    parts = draw(st.lists(st.sampled_from(WORDS), min_size=n, max_size=n))
    seps = draw(st.lists(st.sampled_from([" ", " ", " ", "\n"]), min_size=n, max_size=n))
    text = "".join(p + s for p, s in zip(parts, seps)).strip()
    words = split_words(text)
    ents, i = [], 0
    while i < len(words):
        if draw(st.booleans()):
            j = min(len(words), i + draw(st.integers(1, 3)))
            a, b = words[i][0], words[j - 1][1]
            seg = text[a:b]
            if "\n" not in seg and text[a].isalnum() and text[b - 1].isalnum():
                ents.append(Entity(f"T{len(ents) + 1}", a, b, draw(st.sampled_from(ENTITY_LABELS))))
                i = j + 1  # leave a gap so adjacent spans stay separate
                continue
        i += 1
    return text, ents


@given(annotated_text(), st.integers(8, 20), st.integers(0, 5))
@settings(max_examples=150, deadline=None)
def test_spans_tags_offsets_round_trip_through_windows(sample, max_length, stride):
    """gold spans -> word tags -> per-window probabilities -> merged -> decoded spans == gold."""
    text, ents = sample
    tok = char_tokenizer()
    sp = SpecialTokens.from_tokenizer(tok)
    tt = tokenize_text(text, tok)
    tags = spans_to_word_tags(tt.words, ents)
    probs = one_hot(tags)
    wins = make_windows(tt, sp, max_length, min(stride, max_length - 3))
    # windows cover every word, in order, and respect the length limit
    assert wins[0].word_start == 0 and wins[-1].word_end == len(tt.words)
    for a, b in zip(wins, wins[1:]):
        assert b.word_start <= a.word_end and b.word_start > a.word_start
    for w in wins:
        assert len(w.input_ids) <= max_length
    merged = merge_windows(len(tt.words), wins, [probs[win.word_start:win.word_end] for win in wins])
    got = decode_tags(tt, merged, TAGS)
    assert [(e.start, e.end, e.label) for e in got] == [(e.start, e.end, e.label) for e in ents]


def test_merge_prefers_the_most_central_window():
    from rasd.align import Window
    w1 = Window(0, 6, [])
    w2 = Window(3, 9, [])
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    merged = merge_windows(9, [w1, w2], [np.tile(a, (6, 1)), np.tile(b, (6, 1))])
    # word 3: margin 2 in w1 (6-1-3) vs 0 in w2 -> w1; word 5: margin 0 in w1 vs 2 in w2 -> w2
    assert merged[3].tolist() == a.tolist()
    assert merged[5].tolist() == b.tolist()
    with pytest.raises(RuntimeError, match="not covered"):
        merge_windows(10, [w1, w2], [np.tile(a, (6, 1)), np.tile(b, (6, 1))])


def test_giant_word_is_truncated_and_reported():
    tok = char_tokenizer()
    sp = SpecialTokens.from_tokenizer(tok)
    text = "قاعدة " + "ت" * 200 + " التنف"
    tt = tokenize_text(text, tok)
    wins = make_windows(tt, sp, 16, 4)
    assert any(w.truncated_words == [1] for w in wins)
    assert all(len(w.input_ids) <= 16 for w in wins)
    assert wins[-1].word_end == 3


def test_decode_trims_punctuation_and_breaks_paragraphs():
    tok = char_tokenizer()
    text = "“قسرك” القوات\nالأمريكية"
    tt = tokenize_text(text, tok)
    tags = ["B-BASE", "I-BASE", "I-BASE", "B-FORCE", "I-FORCE"]
    ents = decode_tags(tt, one_hot(tags), TAGS)
    assert [(e.text, e.label) for e in ents] == [("قسرك", "BASE"), ("القوات", "FORCE"), ("الأمريكية", "FORCE")]


def test_lenient_iob_and_scores():
    tok = char_tokenizer()
    text = "القوات الأمريكية قاعدة"
    tt = tokenize_text(text, tok)
    ents = decode_tags(tt, one_hot(["I-FORCE", "I-FORCE", "I-BASE"]), TAGS)
    assert [(e.text, e.label) for e in ents] == [("القوات الأمريكية", "FORCE"), ("قاعدة", "BASE")]
    assert all(0 < e.score <= 1 for e in ents)


# --- constrained (Viterbi) decoding ---

def _valid_iob2(tag_ids, breaks):
    for i, t in enumerate(tag_ids):
        tag = TAGS[int(t)]
        if tag.startswith("I-"):
            if i == 0 or breaks[i]:
                return False
            prev = TAGS[int(tag_ids[i - 1])]
            if prev not in (f"B-{tag[2:]}", f"I-{tag[2:]}"):
                return False
    return True


def _distributions_and_breaks(rows, flags):
    """Hypothesis rows as per-word tag distributions, and paragraph breaks (always one before word 0)."""
    probs = np.array(rows, dtype=np.float64)
    probs /= probs.sum(1, keepdims=True)
    return probs, np.array([True] + flags[1:len(rows)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.floats(0.001, 1.0), min_size=len(TAGS), max_size=len(TAGS)), min_size=1, max_size=12),
       st.lists(st.booleans(), min_size=12, max_size=12))
def test_viterbi_is_valid_iob2_and_never_worse_than_any_valid_sequence(rows, flags):
    from rasd.decode import viterbi_tags
    probs, breaks = _distributions_and_breaks(rows, flags)
    tags = viterbi_tags(probs, TAGS, breaks)
    assert _valid_iob2(tags, breaks)  # never an I- without its B- (or I-) of the same label
    score = lambda seq: float(np.log(probs[np.arange(len(seq)), seq]).sum())
    argmax = probs.argmax(1)
    if _valid_iob2(argmax, breaks):  # when the argmax is valid, it is the answer
        assert score(tags) == pytest.approx(score(argmax))
    # and no valid sequence made by repairing the argmax scores higher
    repaired = [t if not TAGS[t].startswith("I-") or _valid_iob2(np.r_[argmax[:i], t], breaks[:i + 1])
                else TAGS.index("B-" + TAGS[t][2:]) for i, t in enumerate(argmax)]
    if _valid_iob2(np.array(repaired), breaks):
        assert score(tags) >= score(np.array(repaired)) - 1e-9


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.floats(0.001, 1.0), min_size=len(TAGS), max_size=len(TAGS)), min_size=1, max_size=4),
       st.lists(st.booleans(), min_size=4, max_size=4))
def test_viterbi_finds_the_best_valid_sequence_by_brute_force(rows, flags):
    """Against every tag sequence of up to 4 words: the decoded one is valid and scores the maximum."""
    import itertools
    from rasd.decode import viterbi_tags
    probs, breaks = _distributions_and_breaks(rows, flags)
    score = lambda seq: float(np.log(probs[np.arange(len(seq)), list(seq)]).sum())
    best = max(score(seq) for seq in itertools.product(range(len(TAGS)), repeat=len(rows))
               if _valid_iob2(np.array(seq), breaks))
    tags = viterbi_tags(probs, TAGS, breaks)
    assert _valid_iob2(tags, breaks)
    assert score(tags) == pytest.approx(best)


def test_viterbi_fixes_a_span_cut_by_a_lone_inside_tag():
    tok = char_tokenizer()
    text = "قاعدة “قسرك” الجوية"  # words: قاعدة “ قسرك ” الجوية
    tt = tokenize_text(text, tok)
    p = one_hot(["B-BASE", "O", "I-BASE", "I-BASE", "I-BASE"])
    p[1] = 0.01
    p[1, TAGS.index("O")], p[1, TAGS.index("I-BASE")] = 0.5, 0.45  # the quote: O by a hair
    lenient = [(e.text, e.label) for e in decode_tags(tt, p, TAGS, "argmax")]
    assert lenient == [("قاعدة", "BASE"), ("قسرك” الجوية", "BASE")]  # cut at the quote mark
    assert [(e.text, e.label) for e in decode_tags(tt, p, TAGS, "viterbi")] == [("قاعدة “قسرك” الجوية", "BASE")]
    with pytest.raises(ValueError, match="decoding 'beam' is not a tag decoding"):
        decode_tags(tt, p, TAGS, "beam")
    with pytest.raises(ValueError, match="decoding 'spans' is not a tag decoding"):  # rasd.spans decodes those
        decode_tags(tt, p, TAGS, "spans")


def test_model_spec_carries_its_decoding():
    from rasd.backend import ModelSpec
    from rasd.scheme import SchemeError
    spec = ModelSpec(SCHEME, TAGS, 64, 16, decoding="viterbi")
    assert ModelSpec.from_dict(spec.to_dict()).decoding == "viterbi"
    old = spec.to_dict()
    del old["decoding"]  # exports written before the field existed decode as they always did
    assert ModelSpec.from_dict(old).decoding == "argmax"
    with pytest.raises(SchemeError, match="unknown decoding 'beam'"):
        ModelSpec(SCHEME, TAGS, 64, 16, decoding="beam")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["قاعدة", "التنف", "القوات", "الأمريكية", "سلمت", "الجيش", "«", "،", "15"]),
                min_size=1, max_size=12),
       st.lists(st.sampled_from(["\u064E", "\u064F", "\u0650", "\u0651", "\u0652", "\u064B", "\u0640"]),
                min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_marks_and_tatweel_change_no_token_and_no_offset(words, marks, rnd):
    """The encoder reads words without diacritics and tatweel, while words keep their offsets in the
    text as written: a fully vowelled text gets the plain text's tokens."""
    from rasd.text import model_form
    plain = " ".join(words)
    chars = []
    for c in plain:
        chars.append(c)
        if "\u0621" <= c <= "\u064A" and rnd.random() < 0.7:
            chars.append(rnd.choice(marks))
    marked = "".join(chars)
    tok = wordpiece_tokenizer(WORDS_FOR_VOCAB)
    a, b = tokenize_text(plain, tok), tokenize_text(marked, tok)
    assert a.token_ids == b.token_ids and a.token_word == b.token_word
    assert [model_form(marked[s:e]) for s, e in b.words] == [plain[s:e] for s, e in a.words]
    assert b.words == split_words(marked)  # offsets are those of the text as written


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(TAGS) - 1), min_size=1, max_size=12), st.lists(st.booleans(), min_size=12,
                                                                                  max_size=12))
def test_fast_validity_check_agrees_with_the_rule(tags, flags):
    """Viterbi returns the argmax when it is valid; the vectorised check must say exactly what the rule says."""
    from rasd.decode import _transitions, is_valid_sequence
    tags = np.array(tags)
    breaks = np.array([True] + flags[1:len(tags)])
    allowed, can_start = _transitions(tuple(TAGS))
    assert is_valid_sequence(tags, allowed, can_start, breaks) == _valid_iob2(tags, breaks)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["قاعدة", "التنف", " ", "\n", "،", "\n\n", " \n "]), min_size=0, max_size=20))
def test_paragraph_breaks_match_the_newlines_between_words(pieces):
    from rasd.decode import paragraph_breaks
    text = "".join(pieces)
    tt = tokenize_text(text, char_tokenizer())
    words = tt.words
    expected = [True] + ["\n" in text[words[i - 1][1]:words[i][0]] for i in range(1, len(words))]
    assert paragraph_breaks(tt).tolist() == expected[:len(words)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["الأمريكية", "إسرائيل", "آلاف", "قاعدة", "التنف", "أعلنت", "«", "،", "15"]),
                min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_alef_fold_gives_dehamzated_text_the_same_tokens_and_its_own_offsets(words, rnd):
    """With encoder.fold_alef the tokenizer reads أ إ آ as ا: a text with some hamzas dropped gets the
    same tokens as the text as written, while each word keeps its offsets (the fold changes no length)."""
    from rasd.text import ALEF_FOLD
    from rasd_train.folding import fold_alef
    written = " ".join(words)
    bare = "".join(ALEF_FOLD.get(c, c) if rnd.random() < 0.6 else c for c in written)
    tok = wordpiece_tokenizer(WORDS_FOR_VOCAB + ["الأمريكية إسرائيل آلاف أعلنت الامريكية اسرائيل الاف اعلنت"])
    fold_alef(tok)
    a, b = tokenize_text(written, tok), tokenize_text(bare, tok)
    assert a.token_ids == b.token_ids and a.token_word == b.token_word
    assert a.words == b.words == split_words(bare)


def test_alef_fold_is_saved_with_the_tokenizer_and_changes_tokens(tmp_path):
    """The fold travels in tokenizer.json (what export ships), and without it the spellings differ."""
    from rasd_train.config import RunConfig
    from rasd_train.train import build_tokenizer
    texts = ["القوات الأمريكية انسحبت من قاعدة الأسد", "القوات الامريكية انسحبت من قاعدة الاسد"] * 20
    cfg = RunConfig()
    cfg.encoder.vocab_size = 200
    plain = build_tokenizer(cfg, texts).backend_tokenizer
    cfg.encoder.fold_alef = True
    folded = build_tokenizer(cfg, texts)
    folded.save_pretrained(str(tmp_path))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ids = lambda tok, w: tok.encode([w], is_pretokenized=True, add_special_tokens=False).ids
    assert ids(plain, "الأمريكية") != ids(plain, "الامريكية")
    assert ids(loaded, "الأمريكية") == ids(loaded, "الامريكية") == ids(folded.backend_tokenizer, "الامريكية")


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.floats(0.001, 1.0), min_size=len(TAGS), max_size=len(TAGS)), min_size=1, max_size=4),
       st.lists(st.booleans(), min_size=4, max_size=4),
       st.lists(st.floats(-3.0, 3.0), min_size=len(TAGS) * (len(TAGS) + 1), max_size=len(TAGS) * (len(TAGS) + 1)))
def test_viterbi_with_learned_crf_scores_finds_the_best_valid_sequence(rows, flags, scores):
    """With a CRF's start and pair scores added, by brute force over every sequence of up to 4 words: the
    decoded one is valid IOB2 (the learned scores never lift the constraints) and scores the maximum."""
    import itertools
    from rasd.decode import LearnedTransitions, viterbi_tags
    probs, breaks = _distributions_and_breaks(rows, flags)
    k = len(TAGS)
    learned = LearnedTransitions(np.array(scores[:k]), np.array(scores[k:]).reshape(k, k))

    def score(seq):
        total = float(np.log(probs[np.arange(len(seq)), list(seq)]).sum())
        for i, t in enumerate(seq):  # a paragraph's first tag takes the start score, later ones the pair score
            total += learned.start[t] if breaks[i] else learned.pair[seq[i - 1], t]
        return total
    best = max(score(seq) for seq in itertools.product(range(k), repeat=len(rows))
               if _valid_iob2(np.array(seq), breaks))
    tags = viterbi_tags(probs, TAGS, breaks, learned)
    assert _valid_iob2(tags, breaks)
    assert score(tags) == pytest.approx(best)


def test_learned_crf_scores_change_the_decoded_spans():
    """A word that is B-BASE by a hair joins the span before it when the CRF learned that I-BASE follows
    B-BASE far more often than B-BASE does."""
    from rasd.decode import LearnedTransitions
    tok = char_tokenizer()
    tt = tokenize_text("قاعدة التنف", tok)
    p = one_hot(["B-BASE", "B-BASE"])
    p[1] = 0.01
    p[1, TAGS.index("B-BASE")], p[1, TAGS.index("I-BASE")] = 0.5, 0.45
    k = len(TAGS)
    pair = np.zeros((k, k))
    pair[TAGS.index("B-BASE"), TAGS.index("I-BASE")] = 1.0
    plain = [e.text for e in decode_tags(tt, p, TAGS, "viterbi")]
    learned = [e.text for e in decode_tags(tt, p, TAGS, "viterbi", LearnedTransitions(np.zeros(k), pair))]
    assert plain == ["قاعدة", "التنف"] and learned == ["قاعدة التنف"]


def test_model_spec_carries_crf_scores_and_names_bad_ones():
    from rasd.backend import ModelFilesError, ModelSpec
    from rasd.decode import LearnedTransitions
    k = len(TAGS)
    learned = LearnedTransitions(np.arange(k, dtype=float), np.arange(k * k, dtype=float).reshape(k, k) / 7)
    spec = ModelSpec(SCHEME, TAGS, 64, 16, decoding="viterbi", crf=learned)
    back = ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert np.array_equal(back.crf.start, learned.start) and np.array_equal(back.crf.pair, learned.pair)
    assert "crf" not in ModelSpec(SCHEME, TAGS, 64, 16).to_dict()  # models without a CRF write nothing new
    bad = spec.to_dict()
    bad["crf"]["pair"] = bad["crf"]["pair"][:-1]
    with pytest.raises(ModelFilesError, match=r"model config: bad crf transition scores: .*'pair' \(9, 9\)"):
        ModelSpec.from_dict(bad)
    bad["crf"] = {"start": [0.0] * k}
    with pytest.raises(ModelFilesError, match="exactly the keys 'start' and 'pair'"):
        ModelSpec.from_dict(bad)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.lists(st.floats(0.001, 1.0), min_size=len(TAGS), max_size=len(TAGS)),
                                   min_size=0, max_size=9),
                          st.lists(st.booleans(), min_size=9, max_size=9)), min_size=1, max_size=6),
       st.booleans(), st.integers(0, 2**16))
def test_viterbi_over_many_texts_equals_each_text_alone(texts, crf, seed):
    """One dynamic programme over the paragraphs of all texts gives each text exactly its own answer (with and
    without a CRF's learned scores); texts without words give no tags."""
    from rasd.decode import LearnedTransitions, viterbi_tags_many
    items = [_distributions_and_breaks(rows, flags) if rows else (np.zeros((0, len(TAGS))), np.zeros(0, bool))
             for rows, flags in texts]
    rng = np.random.default_rng(seed)
    learned = LearnedTransitions(rng.normal(size=len(TAGS)), rng.normal(size=(len(TAGS), len(TAGS)))) if crf else None
    together = viterbi_tags_many(items, TAGS, learned)
    for item, tags in zip(items, together):
        assert np.array_equal(tags, viterbi_tags_many([item], TAGS, learned)[0])
        assert len(tags) == len(item[0])
