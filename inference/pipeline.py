"""The prediction pipeline shared by the service (ONNX) and training (torch).

    texts -> words/tokens -> windows -> backend.tag -> merge -> decode entities
          (from the word tags, or from the span head's scores: rasd.spans)
          -> candidate pairs, each placed in one window -> backend.relate
          -> decode relations -> Documents

Any `rasd.backend.Backend` runs it, so the torch model during evaluation
and the ONNX graphs in service decode through the very same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .align import SpecialTokens, TokenizedText, Window, entity_word_ranges, make_windows, tokenize_texts
from .backend import Backend, ModelSpec
from .decode import decode_tags, merge_windows, paragraph_breaks, softmax, viterbi_tags_many
from .pairs import candidate_pairs, decode_relations, pair_row, place_pair, sentence_gap, stack_pairs
from .scheme import NO_RELATION
from .schema import Document, Relation
from .spans import SpanCandidates, decode_spans, span_candidates, word_chars

__all__ = ["ModelSpec", "apply_thresholds", "check_thresholds", "pad_rows", "predict", "predict_documents"]


@dataclass
class _Doc:
    index: int
    tt: TokenizedText
    windows: List[Window]
    window_probs: List[np.ndarray] = field(default_factory=list)  # per window: [its words, n_tags]
    window_loc: List[Tuple[int, int]] = field(default_factory=list)  # (tag batch, row)
    window_spans: List[Tuple[SpanCandidates, np.ndarray]] = field(default_factory=list)  # decoding "spans" only
    warnings: List[str] = field(default_factory=list)


@dataclass
class _PairJob:
    doc: int
    head: int
    tail: int
    row: int  # row of the pair's window in its tag batch
    features: dict


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> Tuple[np.ndarray, np.ndarray]:
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


def _prepare(texts: Sequence[str], tokenizer, spec: ModelSpec, specials: SpecialTokens) -> List[_Doc]:
    docs = []
    budget = spec.window_length - len(specials.prefix) - len(specials.suffix)
    for i, tt in enumerate(tokenize_texts(texts, tokenizer)):
        wins = make_windows(tt, specials, spec.window_length, spec.window_stride)
        d = _Doc(i, tt, wins, [np.zeros(0)] * len(wins), [(-1, -1)] * len(wins))
        for win in wins:
            for w in win.truncated_words:
                s, e = tt.words[w]
                d.warnings.append(f"word at {s}-{e} has more sub-tokens than a window holds; only its first "
                                  f"{budget} were read")
        docs.append(d)
    return docs


def _tag(docs: List[_Doc], backend: Backend, spec: ModelSpec, pad_id: int,
         batch_size: int) -> List[Dict[str, np.ndarray]]:
    """Run the tagger over all windows, sorted by length; returns each batch's relation context."""
    order = sorted((len(w.input_ids), di, wi) for di, d in enumerate(docs) for wi, w in enumerate(d.windows))
    contexts: List[Dict[str, np.ndarray]] = []
    spans = _SpanReader(docs, spec.span_max_tokens) if spec.decoding == "spans" else None
    for b in range(0, len(order), batch_size):
        chunk = order[b:b + batch_size]
        ids, mask = pad_rows([docs[di].windows[wi].input_ids for _, di, wi in chunk], pad_id)
        logits, context = backend.tag(ids, mask)
        context = dict(context)  # a copy: a caching backend may hand out the same dict again
        span_logits = context.pop("span_logits", None)  # read here; the relation graph never needs it
        probs = softmax(np.asarray(logits, dtype=np.float32))
        bi = len(contexts)
        contexts.append(context)
        for row, (_, di, wi) in enumerate(chunk):
            win = docs[di].windows[wi]
            docs[di].window_probs[wi] = probs[row, win.first_token_positions()]
            docs[di].window_loc[wi] = (bi, row)
            if spans:
                spans.read(di, wi, span_logits, row)
    return contexts


class _SpanReader:
    """Keeps, per window, the span head's class probabilities of the window's candidate spans."""

    def __init__(self, docs: List[_Doc], max_tokens: int):
        self.docs, self.max_tokens = docs, max_tokens
        self.text_words = {}  # doc -> (paragraph breaks, word chars), computed once per text

    def read(self, di: int, wi: int, span_logits: Optional[np.ndarray], row: int) -> None:
        if span_logits is None:
            raise ValueError("decoding 'spans': the backend's encoder gives no span_logits (a model without a "
                             "span head, or an encoder graph exported without that output)")
        d = self.docs[di]
        if di not in self.text_words:
            self.text_words[di] = (paragraph_breaks(d.tt), word_chars(d.tt))
            d.window_spans = [None] * len(d.windows)
        c = span_candidates(d.windows[wi], self.max_tokens, *self.text_words[di])
        logits = np.asarray(span_logits[row, c.start_token, c.width], dtype=np.float32)
        d.window_spans[wi] = (c, softmax(logits))


def _pair_jobs(d: _Doc, doc: Document, spec: ModelSpec) -> Dict[int, List[_PairJob]]:
    """Candidate pairs of one document, each placed in one window, grouped by tag batch."""
    jobs: Dict[int, List[_PairJob]] = {}
    ents = doc.entities
    ranges = entity_word_ranges(d.tt.words, ents)
    skipped = 0
    for h, t in candidate_pairs(d.tt.text, ents, spec.scheme):
        wi = place_pair(d.windows, ranges[h], ranges[t])
        if wi is None:
            skipped += 1
            continue
        feats = pair_row(d.windows[wi], ranges[h], ranges[t], spec.scheme.entity_index(ents[h].label),
                         spec.scheme.entity_index(ents[t].label), sentence_gap(d.tt.text, ents[h], ents[t]))
        bi, row = d.window_loc[wi]
        jobs.setdefault(bi, []).append(_PairJob(d.index, h, t, row, feats))
    if skipped:
        d.warnings.append(f"{skipped} candidate pair(s) not scored: the two entities never share a window")
    return jobs


def _word_tags(docs: List[_Doc], spec: ModelSpec) -> List[Tuple[Optional[np.ndarray], Optional[np.ndarray]]]:
    """Each document's word tag probabilities and, under Viterbi, its tags: one dynamic programme for all."""
    if spec.decoding == "spans":  # the span head's scores decode the entities; word tags are not read
        return [(None, None) for _ in docs]
    probs = [merge_windows(len(d.tt.words), d.windows, d.window_probs) for d in docs]
    if spec.decoding != "viterbi":  # argmax decodes each text alone
        return [(p, None) for p in probs]
    tags = viterbi_tags_many([(p, paragraph_breaks(d.tt)) for d, p in zip(docs, probs)], spec.id2tag, spec.crf)
    return list(zip(probs, tags))


def _entities(d: _Doc, word_probs: Optional[np.ndarray], tags: Optional[np.ndarray], spec: ModelSpec):
    if spec.decoding == "spans":
        cands, probs = zip(*d.window_spans) if d.window_spans else ((), ())
        return decode_spans(d.tt, d.windows, cands, probs, spec.scheme.entities)
    return decode_tags(d.tt, word_probs, spec.id2tag, spec.decoding, spec.crf, tags)


def predict(texts: Sequence[str], tokenizer, spec: ModelSpec, backend: Backend, batch_size: int = 16,
            doc_ids: Optional[Sequence[str]] = None) -> List[Document]:
    """Entities and relations for each text, in input order.

    Windows of all texts are sorted by length and batched, so padding is
    small whatever the mix of long and short texts. Scores are full floats;
    they are rounded only when a Document is serialised.
    """
    specials = SpecialTokens.from_tokenizer(tokenizer)
    docs = _prepare(texts, tokenizer, spec, specials)
    contexts = _tag(docs, backend, spec, specials.pad_id, batch_size)

    results: List[Document] = []
    jobs: Dict[int, List[_PairJob]] = {}
    for d, (word_probs, tags) in zip(docs, _word_tags(docs, spec)):
        entities = _entities(d, word_probs, tags, spec)
        for e in entities:
            e.score = spec.calibration.entities(e.score)
        doc = Document(id=doc_ids[d.index] if doc_ids else str(d.index), text=d.tt.text, entities=entities)
        results.append(doc)
        for bi, js in _pair_jobs(d, doc, spec).items():
            jobs.setdefault(bi, []).extend(js)

    # One relation call per tag batch whose windows hold candidate pairs.
    for bi, js in jobs.items():
        pairs = stack_pairs([j.features for j in js], [j.row for j in js])
        logits = np.asarray(backend.relate(contexts[bi], pairs), dtype=np.float32)
        ends = [(results[j.doc].entities[j.head], results[j.doc].entities[j.tail]) for j in js]
        decided = decode_relations(logits, [(h.label, t.label) for h, t in ends], spec.scheme)
        for j, (head, tail), (label, score) in zip(js, ends, decided):
            if label != NO_RELATION:
                results[j.doc].relations.append(Relation(head=head.id, tail=tail.id, label=label,
                                                         score=spec.calibration.relations(score)))
    for d, doc in zip(docs, results):
        doc.relations.sort(key=lambda r: (int(r.head[1:]), int(r.tail[1:]), r.label))
        if d.warnings:
            doc.meta["warnings"] = d.warnings
    return results


def predict_documents(docs: Sequence[Document], tokenizer, spec: ModelSpec, backend: Backend,
                      batch_size: int = 32) -> List[Document]:
    """Predictions for (gold) documents, keeping their ids: evaluation, export gate and bench use it."""
    return predict([d.text for d in docs], tokenizer, spec, backend, batch_size=batch_size,
                   doc_ids=[d.id for d in docs])


def check_thresholds(min_entity_score: float, min_relation_score: float) -> None:
    for name, value in (("min_entity_score", min_entity_score), ("min_relation_score", min_relation_score)):
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in 0..1, got {value!r}")


def apply_thresholds(doc: Document, min_entity_score: float = 0.0, min_relation_score: float = 0.0) -> Document:
    """The document without entities scoring under min_entity_score, and without relations scoring under
    min_relation_score or touching a dropped entity. Kept entities are renumbered T1, T2, ... in order."""
    check_thresholds(min_entity_score, min_relation_score)
    if min_entity_score == 0.0 and min_relation_score == 0.0:
        return doc  # nothing can fall under 0: skip the copy on the serving path
    kept = [e for e in doc.entities if e.score is None or e.score >= min_entity_score]
    new_id = {e.id: f"T{k}" for k, e in enumerate(kept, 1)}
    entities = [replace(e, id=new_id[e.id]) for e in kept]
    relations = [replace(r, head=new_id[r.head], tail=new_id[r.tail]) for r in doc.relations
                 if r.head in new_id and r.tail in new_id and (r.score is None or r.score >= min_relation_score)]
    return replace(doc, entities=entities, relations=relations)
