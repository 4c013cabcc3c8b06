"""The prediction pipeline shared by the service (ONNX) and training (torch).

    texts -> words/tokens -> windows -> backend.tag -> merge -> decode spans
          -> candidate pairs -> backend.relate -> decode relations -> Documents

A backend is anything with two methods working on numpy arrays:

    tag(input_ids[B,T] int64, attention_mask[B,T] int64)
        -> (tag_logits[B,T,n_tags] float32, hidden[B,T,H] float32)
    relate(hidden[B,T,H], pair_batch[P], head_span[P,2], tail_span[P,2],
           head_type[P], tail_type[P], distance_bucket[P]) -> logits[P, 1+n_rel]

so the torch model during evaluation and the ONNX graphs in service decode
through the very same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .align import SpecialTokens, TokenizedText, Window, make_windows, pair_features, tokenize_text, window_span
from .decode import candidate_pairs, decode_relation, decode_tags, merge_windows, softmax
from .schema import Document, Relation


@dataclass
class ModelSpec:
    """What decoding needs to know about a trained model (from its config)."""
    entity_labels: List[str]
    id2tag: List[str]
    relation_labels: List[str]
    max_length: int = 256
    stride: int = 64

    def to_dict(self) -> dict:
        return {"entity_labels": self.entity_labels, "id2tag": self.id2tag, "relation_labels": self.relation_labels,
                "max_length": self.max_length, "stride": self.stride}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        return cls(entity_labels=list(d["entity_labels"]), id2tag=list(d["id2tag"]),
                   relation_labels=list(d["relation_labels"]), max_length=int(d["max_length"]),
                   stride=int(d["stride"]))


@dataclass
class _Doc:
    index: int
    tt: TokenizedText
    windows: List[Window]
    window_probs: List[Dict[int, np.ndarray]] = field(default_factory=list)
    window_loc: List[Tuple[int, int]] = field(default_factory=list)  # (tag batch, row)
    warnings: List[str] = field(default_factory=list)


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int) -> Tuple[np.ndarray, np.ndarray]:
    T = max(len(r) for r in rows)
    ids = np.full((len(rows), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), T), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        mask[i, :len(r)] = 1
    return ids, mask


def predict(texts: Sequence[str], tokenizer, spec: ModelSpec, backend, batch_size: int = 16,
            doc_ids: Optional[Sequence[str]] = None) -> List[Document]:
    """Entities and relations for each text, in input order.

    Windows of all texts are sorted by length and batched, so padding is
    small whatever the mix of long and short texts.
    """
    specials = SpecialTokens.from_tokenizer(tokenizer)
    docs: List[_Doc] = []
    for i, text in enumerate(texts):
        tt = tokenize_text(text, tokenizer)
        wins = make_windows(tt, specials, spec.max_length, spec.stride)
        d = _Doc(i, tt, wins, [dict() for _ in wins], [(-1, -1)] * len(wins))
        for win in wins:
            for w in win.truncated_words:
                s, e = tt.words[w]
                d.warnings.append(f"word at {s}-{e} has more sub-tokens than a window holds; only its first "
                                  f"{spec.max_length - len(specials.prefix) - len(specials.suffix)} were read")
        docs.append(d)

    # 1) entity tags, window batches sorted by length
    order = sorted(((len(w.input_ids), di, wi) for di, d in enumerate(docs) for wi, w in enumerate(d.windows)))
    hidden_batches: List[np.ndarray] = []
    for b in range(0, len(order), batch_size):
        chunk = order[b:b + batch_size]
        ids, mask = pad_rows([docs[di].windows[wi].input_ids for _, di, wi in chunk], specials.pad_id)
        logits, hidden = backend.tag(ids, mask)
        probs = softmax(np.asarray(logits, dtype=np.float32))
        bi = len(hidden_batches)
        hidden_batches.append(np.asarray(hidden, dtype=np.float32))
        for row, (_, di, wi) in enumerate(chunk):
            win = docs[di].windows[wi]
            docs[di].window_probs[wi] = {w: probs[row, pos] for w, pos in win.word_token.items()}
            docs[di].window_loc[wi] = (bi, row)

    # 2) spans per document, then candidate pairs placed in a window
    results: List[Document] = []
    pair_jobs: Dict[int, List[Tuple[int, int, int, tuple]]] = {}  # batch -> (doc, head, tail, features)
    label_index = {lab: k for k, lab in enumerate(spec.entity_labels)}
    for d in docs:
        word_probs = merge_windows(len(d.tt.words), d.windows, d.window_probs)
        ents = decode_tags(d.tt, word_probs, spec.id2tag)
        doc = Document(id=doc_ids[d.index] if doc_ids else str(d.index), text=d.tt.text, entities=ents)
        results.append(doc)
        first_word = {s: i for i, (s, _) in enumerate(d.tt.words)}
        last_word = {e: i for i, (_, e) in enumerate(d.tt.words)}
        ranges = [(first_word[e.start], last_word[e.end] + 1) for e in ents]
        skipped = 0
        for h, t in candidate_pairs(d.tt.text, ents):
            placed = False
            for wi, win in enumerate(d.windows):
                hs, ts = window_span(win, ranges[h]), window_span(win, ranges[t])
                if hs is None or ts is None:
                    continue
                feats = pair_features(hs, ts, label_index[ents[h].label], label_index[ents[t].label])
                bi, row = d.window_loc[wi]
                pair_jobs.setdefault(bi, []).append((d.index, h, t, (row,) + feats))
                placed = True
                break
            skipped += not placed
        if skipped:
            d.warnings.append(f"{skipped} candidate pair(s) not scored: the two entities never share a window")

    # 3) relations, one call per tag batch whose windows hold candidate pairs
    for bi, jobs in pair_jobs.items():
        f = np.array([j[3] for j in jobs], dtype=np.int64)
        logits = np.asarray(backend.relate(hidden_batches[bi], f[:, 0], f[:, 1:3], f[:, 3:5], f[:, 5], f[:, 6],
                                           f[:, 7]), dtype=np.float32)
        for (di, h, t, _), lg in zip(jobs, logits):
            doc = results[di]
            label, score = decode_relation(lg, doc.entities[h].label, doc.entities[t].label, spec.relation_labels)
            if label != "NONE":
                doc.relations.append(Relation(head=doc.entities[h].id, tail=doc.entities[t].id, label=label,
                                              score=round(score, 4)))
    for d, doc in zip(docs, results):
        doc.relations.sort(key=lambda r: (int(r.head[1:]), int(r.tail[1:]), r.label))
        if d.warnings:
            doc.meta["warnings"] = d.warnings
    return results

