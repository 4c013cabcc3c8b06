"""Relation pairs, in one place for training, evaluation, export and serving:
which entity pairs are candidates, which window scores each pair, the pair
features fed to the relation graph, and how its logits become a relation.

Window placement. A long text is cut into overlapping windows, so one pair
can lie in several. Each pair is scored in exactly one window: the one where
the pair sits most centrally (the largest distance, in words, from either
entity to the window's nearer edge; ties go to the earlier window). It is
the rule decode.merge_windows uses for tags, so a pair is read with the same
context as its entities' tags, and training uses the very same placement,
so the relation head learns from the views it is served (one example per
pair, not one per window it happens to fit in).

Features are dicts keyed by the relation graph's input names
(onnx_spec.RELATION), so a new feature is one entry here, one input in the
spec and one argument of the model's `relate`.
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .align import Window, window_span, word_margin
from .decode import softmax
from .onnx_spec import RELATION
from .scheme import NO_RELATION, Scheme
from .schema import Entity
from .text import paragraph_index

# Inputs of the relation graph that describe the pairs (the rest come from the encoder side), in order.
PAIR_INPUTS: Tuple[str, ...] = tuple(n for n in RELATION["inputs"] if n not in RELATION["context"])
DISTANCE_BUCKETS = (0, 1, 2, 3, 4, 5, 8, 16, 32, 64)  # lower bounds, in tokens
# Sentence ends between head and tail, capped: 0 = same sentence, 3 = three or more apart.
MAX_SENTENCE_GAP = 3
_SENTENCE_END = re.compile(r"[.!?؟]+(?=\s|$)|\n")

WordRange = Tuple[int, int]


def candidate_pairs(text: str, entities: Sequence[Entity], scheme: Scheme) -> List[Tuple[int, int]]:
    """Ordered (head, tail) index pairs in one paragraph that some relation label of the scheme allows."""
    paras = [paragraph_index(text, e.start) for e in entities]
    return [(i, j) for i, h in enumerate(entities) for j, t in enumerate(entities)
            if i != j and paras[i] == paras[j] and scheme.pair_is_candidate(h.label, t.label)]


def place_pair(windows: Sequence[Window], head: WordRange, tail: WordRange) -> Optional[int]:
    """Index of the window that scores this pair (see the module doc), or None if none holds both."""
    best, best_margin = None, -1
    for wi, win in enumerate(windows):
        if window_span(win, head) is None or window_span(win, tail) is None:
            continue
        margin = min(word_margin(win, head), word_margin(win, tail))
        if margin > best_margin:
            best, best_margin = wi, margin
    return best


def distance_bucket(gap_tokens: int) -> int:
    """Bucket of the token gap between two spans (0 = adjacent)."""
    b = 0
    for i, lo in enumerate(DISTANCE_BUCKETS):
        if gap_tokens >= lo:
            b = i
    return b


def sentence_gap(text: str, a: Entity, b: Entity) -> int:
    """Sentence ends (. ! ? ؟ or a line break) in the text between two entities, capped at MAX_SENTENCE_GAP.

    A point inside a word or number (3.5, U.S) is not an end: it must be followed by a space or the end."""
    lo, hi = min(a.end, b.end), max(a.start, b.start)
    return min(MAX_SENTENCE_GAP, len(_SENTENCE_END.findall(text, lo, hi))) if hi > lo else 0


def pair_row(win: Window, head: WordRange, tail: WordRange, head_type: int, tail_type: int,
             sentence_gap: int = 0) -> Dict[str, object]:
    """Features of one ordered pair inside its window (all inputs but pair_batch)."""
    hs, ts = window_span(win, head), window_span(win, tail)
    gap = max(ts[0] - hs[1], hs[0] - ts[1], 0)
    return {"head_span": hs, "tail_span": ts, "head_type": head_type, "tail_type": tail_type,
            "distance_bucket": distance_bucket(gap), "sentence_gap": sentence_gap}


def stack_pairs(rows: Sequence[Dict[str, object]], batch_rows: Sequence[int]) -> Dict[str, np.ndarray]:
    """Pair rows plus the batch row of each pair's window -> int64 arrays keyed by PAIR_INPUTS."""
    out = {"pair_batch": np.asarray(batch_rows, dtype=np.int64).reshape(-1)}
    for name in PAIR_INPUTS:
        if name == "pair_batch":
            continue
        shape = (len(rows), 2) if name.endswith("_span") else (len(rows),)
        out[name] = np.asarray([r[name] for r in rows], dtype=np.int64).reshape(shape)
    missing = set(PAIR_INPUTS) - set(out)
    if missing:  # a spec input nobody computes: fail here, not inside onnxruntime
        raise KeyError(f"pair features lack the relation graph inputs {sorted(missing)}")
    return out


def relation_label_mask(head_label: str, tail_label: str, scheme: Scheme) -> np.ndarray:
    """Which classes (index 0 = no relation) the scheme allows for a pair of these types."""
    return np.array([True] + [scheme.relation_allowed(r, head_label, tail_label) for r in scheme.relation_labels])


def decode_relation(logits: np.ndarray, head_label: str, tail_label: str, scheme: Scheme) -> Tuple[str, float]:
    """(label or NO_RELATION, probability) among the labels the pair's types allow."""
    mask = relation_label_mask(head_label, tail_label, scheme)
    probs = softmax(np.where(mask, logits, -np.inf))
    k = int(probs.argmax())
    return (NO_RELATION if k == 0 else scheme.relation_labels[k - 1]), float(probs[k])


def decode_relations(logits: np.ndarray, label_pairs: Sequence[Tuple[str, str]], scheme: Scheme
                     ) -> List[Tuple[str, float]]:
    """decode_relation for many pairs at once: one masked softmax over [pairs, classes]."""
    if not len(label_pairs):
        return []
    masks = {lp: relation_label_mask(*lp, scheme) for lp in set(label_pairs)}
    mask = np.stack([masks[lp] for lp in label_pairs])
    probs = softmax(np.where(mask, logits, -np.inf))
    best = probs.argmax(-1)
    names = [NO_RELATION] + list(scheme.relation_labels)
    return [(names[k], float(probs[i, k])) for i, k in enumerate(best.tolist())]
