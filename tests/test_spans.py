"""The span head and span decoding (rasd_train.span_head, rasd.spans): candidates follow the scheme's span rules,
training labels exactly the candidates decoding reads, decoding never nests, and the head exports and serves
through ONNX like the tagger."""
from functools import lru_cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from rasd.align import SpecialTokens, make_windows, tokenize_text
from rasd.decode import paragraph_breaks
from rasd.spans import SpanCandidates, decode_spans, span_candidates, word_chars
from test_training import _tiny_model_and_batch, train_on_batch


@lru_cache(maxsize=1)
def _tokenizer():
    from conftest import MINI
    from rasd_train.tiny_encoder import train_wordpiece
    return train_wordpiece([MINI], 200).backend_tokenizer


WORDS = ["قاعدة", "التنف", "القوات", "الأمريكية", "انسحبت", "من", "«", "»", "،", ".", "\n", "2024", "شمال"]


def _brute_force(tt, win, max_tokens, breaks, wordish):
    out = set()
    for a in range(win.word_start, win.word_end):
        for b in range(a + 1, win.word_end + 1):
            width = win.word_last_token[b - 1] - 1 - win.word_token[a]
            if width < max_tokens and wordish[a] and wordish[b - 1] and not breaks[a + 1:b].any():
                out.add((a, b, win.word_token[a], width))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(WORDS), min_size=0, max_size=40), st.integers(1, 8), st.integers(8, 24))
def test_candidates_are_exactly_the_spans_the_scheme_allows(words, max_tokens, window_length):
    """Every word span that starts and ends on a word, stays in one paragraph and fits max_tokens, in every
    window, and nothing else; widths are token distances inside the window."""
    text = " ".join(words)
    tok = _tokenizer()
    tt = tokenize_text(text, tok)
    sp = SpecialTokens.from_tokenizer(tok)
    breaks, wordish = paragraph_breaks(tt), word_chars(tt)
    for win in make_windows(tt, sp, window_length, 2):
        c = span_candidates(win, max_tokens, breaks, wordish)
        got = set(zip(c.first.tolist(), c.end.tolist(), c.start_token.tolist(), c.width.tolist()))
        assert len(got) == len(c)  # no duplicates
        assert got == _brute_force(tt, win, max_tokens, breaks, wordish)


def _cands(rows):
    a, b, s, w = (np.array(x, dtype=np.int64) for x in zip(*rows))
    return SpanCandidates(a, b, s, w)


def test_decoding_takes_the_best_spans_without_overlap_and_the_most_central_view():
    from rasd.align import Window
    text = "انسحبت القوات الأمريكية من قاعدة التنف"
    tt = tokenize_text(text, _tokenizer())
    labels = ["BASE", "FORCE", "OPERATION", "LOCATION"]
    # Window 0 sees words 0-3, window 1 words 2-5 (positions are not read by decoding).
    w0, w1 = Window(0, 4, []), Window(2, 6, [])

    def probs(*rows):  # rows of (class, p): the rest of the mass on class 0
        out = np.zeros((len(rows), 5))
        for i, (k, p) in enumerate(rows):
            out[i, k], out[i, 0] = p, 1 - p
        return out
    # Window 0: "القوات الأمريكية" FORCE .9; "الأمريكية من" LOCATION .6 overlaps it with a lower score: dropped;
    # "من" LOCATION .2 (a losing class here).
    c0 = _cands([(1, 3, 0, 0), (2, 4, 0, 0), (3, 4, 0, 0)])
    p0 = probs((2, 0.9), (4, 0.6), (4, 0.2))
    # Window 1: "قاعدة التنف" BASE .8; "من" LOCATION .7. Word 3 ("من") sits 0 words from window 0's edge and
    # 1 word from window 1's, so window 1's view of it is the one read.
    c1 = _cands([(4, 6, 0, 0), (3, 4, 0, 0)])
    p1 = probs((1, 0.8), (4, 0.7))
    ents = decode_spans(tt, [w0, w1], [c0, c1], [p0, p1], labels)
    got = [(e.text, e.label, round(e.score, 3)) for e in ents]
    assert got == [("القوات الأمريكية", "FORCE", 0.9), ("من", "LOCATION", 0.7), ("قاعدة التنف", "BASE", 0.8)]
    assert [e.id for e in ents] == ["T1", "T2", "T3"]
    with pytest.raises(ValueError, match="span probabilities for 3 candidates and 5 classes"):
        decode_spans(tt, [w0], [c0], [p0[:, :4]], labels)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_decoded_spans_never_overlap_and_are_each_a_best_class(data):
    from rasd.align import Window
    n = data.draw(st.integers(1, 12))
    tt = tokenize_text(" ".join(["كلمة"] * n), _tokenizer())
    spans = [(a, b) for a in range(n) for b in range(a + 1, min(n, a + 4) + 1)]
    p = np.array(data.draw(st.lists(st.lists(st.floats(0.01, 1.0), min_size=3, max_size=3),
                                    min_size=len(spans), max_size=len(spans))))
    p = p / p.sum(1, keepdims=True)
    c = _cands([(a, b, 0, 0) for a, b in spans])
    ents = decode_spans(tt, [Window(0, n, [])], [c], [p], ["A", "B"])
    covered = np.zeros(len(tt.text) + 1, dtype=int)
    for e in ents:
        covered[e.start:e.end] += 1
        i = spans.index(next((a, b) for a, b in spans if tt.words[a][0] == e.start and tt.words[b - 1][1] == e.end))
        assert p[i].argmax() > 0 and e.label == "AB"[p[i].argmax() - 1] and e.score == pytest.approx(p[i].max())
    assert covered.max(initial=0) <= 1
    # Greedy: any dropped positive span overlaps a kept span scoring at least as high.
    kept = [(e.start, e.end, e.score) for e in ents]
    for (a, b), row in zip(spans, p):
        s, e = tt.words[a][0], tt.words[b - 1][1]
        if row.argmax() > 0 and (s, e) not in {(k[0], k[1]) for k in kept}:
            assert any(k[0] < e and s < k[1] and k[2] >= row.max() - 1e-12 for k in kept)


def test_training_labels_mark_each_gold_entity_once_per_window_that_holds_it(mini_docs):
    from rasd.align import entity_word_ranges
    from rasd_train.data import featurize
    tok, model, _ = _tiny_model_and_batch(mini_docs, span_max_tokens=16)
    spec, tk = model.config.spec(), tok.backend_tokenizer
    sp = SpecialTokens.from_tokenizer(tk)
    for doc in mini_docs:
        feats = featurize(doc, tk, spec, sp)
        tt = tokenize_text(doc.text, tk)
        wins = make_windows(tt, sp, spec.window_length, spec.window_stride)
        ranges = entity_word_ranges(tt.words, doc.entities)
        for f, win in zip(feats, wins):
            want = sorted((win.word_token[a], win.word_last_token[b - 1] - 1 - win.word_token[a],
                           spec.scheme.entity_index(e.label) + 1)
                          for e, (a, b) in zip(doc.entities, ranges) if win.word_start <= a and b <= win.word_end)
            got = sorted((s, w, k) for s, w, k in zip(f["span_start"], f["span_width"], f["span_label"]) if k)
            assert got == want
            assert len(f["span_label"]) > len(got)  # and the negatives


def test_span_model_trains_and_its_span_loss_falls(mini_docs):
    _, model, batch = _tiny_model_and_batch(mini_docs, span_max_tokens=16)
    losses = train_on_batch(model, batch, 30, loss="span_loss")
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_span_model_exports_and_decodes_alike_through_torch_and_onnx(mini_docs, tmp_path):
    """span_logits match on every real (start, width) cell; the whole pipeline decodes the same entities."""
    from rasd import pipeline
    from rasd.runtime import OnnxBackend
    from rasd_train.gate import decoded_differences
    from rasd_train.onnx_graphs import export_graphs
    from rasd_train.modeling import TorchBackend
    tok, model, batch = _tiny_model_and_batch(mini_docs, span_max_tokens=16, layers=2)
    train_on_batch(model, batch, 40)  # so that relations are scored
    with torch.no_grad():  # 40 toy steps may still leave every span "none"; parity must not rest on that luck
        model.span_head.out.bias[0] -= 4.0
    model.eval()
    export_graphs(model, tok, str(tmp_path))
    onnx = OnnxBackend(str(tmp_path / "encoder.onnx"), str(tmp_path / "relation.onnx"), threads=1)
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    (_, ct), (_, co) = TorchBackend(model).tag(ids, mask), onnx.tag(ids, mask)
    assert set(ct) == set(co) == {"hidden_states", "span_logits"}
    assert co["span_logits"].shape == ids.shape + (16, 5)
    s = batch["spans"]
    cells = (s["span_batch"].numpy(), s["span_start"].numpy(), s["span_width"].numpy())
    assert np.allclose(ct["span_logits"][cells], co["span_logits"][cells], atol=1e-4)
    texts, spec = [d.text for d in mini_docs], model.spec()
    ref = pipeline.predict(texts, tok.backend_tokenizer, spec, TorchBackend(model), batch_size=3)
    got = pipeline.predict(texts, tok.backend_tokenizer, spec, onnx, batch_size=3)
    assert sum(len(d.entities) for d in ref) > 0
    assert decoded_differences(ref, got) == []
    # The same encoder graph still decodes by tags.
    import dataclasses
    by_tags = pipeline.predict(texts, tok.backend_tokenizer, dataclasses.replace(spec, decoding="viterbi"), onnx)
    assert len(by_tags) == len(texts)


def test_span_settings_are_checked(mini_docs):
    import dataclasses
    from rasd import pipeline
    from rasd.scheme import SchemeError
    from rasd_train.modeling import TorchBackend
    from rasd_train.span_head import SpanHead
    tok, plain, _ = _tiny_model_and_batch(mini_docs)
    with pytest.raises(SchemeError, match="decoding 'spans' needs a span head"):
        dataclasses.replace(plain.spec(), decoding="spans")
    spec = dataclasses.replace(plain.spec(), decoding="spans", span_max_tokens=16)  # a spec lying about its model
    with pytest.raises(ValueError, match="the backend's encoder gives no span_logits"):
        pipeline.predict([mini_docs[0].text], tok.backend_tokenizer, spec, TorchBackend(plain.eval()))
    with pytest.raises(ValueError, match="span_max_tokens must be >= 1"):
        SpanHead(8, 8, 0, 3, 0.1)
    from rasd.backend import ModelSpec
    assert ModelSpec.from_dict(spec.to_dict()).span_max_tokens == 16
    assert "span_max_tokens" not in plain.spec().to_dict()  # older readers see the same keys as before
