"""Tagger outputs -> entities: window merging and tags -> spans. The
training evaluation and the service both call these functions, so what is
measured is what is served (relation pairs live in rasd.pairs).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .align import TokenizedText, Window
from .schema import Entity
from .text import is_word_char, normalize_for_linking


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def merge_windows(n_words: int, windows: Sequence[Window], window_word_probs: Sequence[np.ndarray]) -> np.ndarray:
    """One tag distribution per word from overlapping windows.

    window_word_probs[i] holds window i's distributions of its words, in word
    order (one row per word from word_start to word_end). Each word takes the
    distribution of the window where it sits most centrally (largest
    distance, in words, to the window's nearer edge): the view with the most
    context on both sides. Ties go to the earlier window. Raises if a word
    was not covered, since a silent gap would drop text.
    """
    best = np.full(n_words, -1, dtype=np.int64)
    out = None
    for win, probs in zip(windows, window_word_probs):
        a, b = win.word_start, win.word_end
        if probs.shape[0] != b - a:
            raise ValueError(f"window over words {a}-{b} came with {probs.shape[0]} distributions")
        if out is None:
            out = np.zeros((n_words, probs.shape[-1]), dtype=np.float32)
        k = np.arange(b - a)
        margin = np.minimum(k, b - a - 1 - k)  # word_margin of each word, vectorised
        better = margin > best[a:b]
        best[a:b][better] = margin[better]
        out[a:b][better] = probs[better]
    if n_words and (best < 0).any():
        missing = int(np.flatnonzero(best < 0)[0])
        raise RuntimeError(f"word {missing} was not covered by any window")
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


TAG_DECODINGS = ("argmax", "viterbi")  # from the tagger's word tags (this module)
DECODINGS = TAG_DECODINGS + ("spans",)  # "spans": from the span head's scores (rasd.spans)


@dataclass(frozen=True, eq=False)
class LearnedTransitions:
    """A CRF tagger's learned scores (rasd_train.crf): start[b] for a paragraph's first tag and pair[a, b] for
    tag b right after tag a. Viterbi adds them to the words' log probabilities; the IOB2 constraints still hold
    on top, so spans stay well formed whatever was learned."""
    start: np.ndarray  # [n_tags]
    pair: np.ndarray   # [n_tags, n_tags]

    def to_dict(self) -> dict:
        return {"start": [float(x) for x in self.start], "pair": [[float(x) for x in row] for row in self.pair]}

    @classmethod
    def from_dict(cls, d: dict, n_tags: int) -> "LearnedTransitions":
        """Raises ValueError naming what is wrong (missing key, wrong shape, not finite)."""
        if not isinstance(d, dict) or set(d) != {"start", "pair"}:
            raise ValueError("expected an object with exactly the keys 'start' and 'pair'")
        start, pair = np.asarray(d["start"], dtype=np.float64), np.asarray(d["pair"], dtype=np.float64)
        if start.shape != (n_tags,) or pair.shape != (n_tags, n_tags):
            raise ValueError(f"for {n_tags} tags, 'start' must have shape ({n_tags},) and 'pair' ({n_tags}, "
                             f"{n_tags}); got {start.shape} and {pair.shape}")
        if not (np.isfinite(start).all() and np.isfinite(pair).all()):
            raise ValueError("scores must be finite numbers")
        return cls(start=start, pair=pair)


def paragraph_breaks(tt: TokenizedText) -> np.ndarray:
    """breaks[i] is True when a paragraph break lies between word i-1 and word i (and for word 0)."""
    text, words = tt.text, tt.words
    out = np.ones(len(words), dtype=bool)
    newlines = np.array([m.start() for m in re.finditer("\n", text)], dtype=np.int64)
    if len(words) > 1:
        gaps = np.array(words, dtype=np.int64)
        # a newline at a position p with end(word i-1) <= p < start(word i)
        out[1:] = np.searchsorted(newlines, gaps[1:, 0]) > np.searchsorted(newlines, gaps[:-1, 1])
    return out


@lru_cache(maxsize=32)
def _transitions(id2tag: Tuple[str, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """(allowed[a, b], can_start[b]) for a tag set, computed once per model."""
    return allowed_transitions(id2tag), np.array([not t.startswith("I-") for t in id2tag])


def allowed_transitions(id2tag: Sequence[str]) -> np.ndarray:
    """allowed[a, b]: may tag b follow tag a inside a paragraph under IOB2 (I-X only after B-X or I-X)."""
    n = len(id2tag)
    allowed = np.ones((n, n), dtype=bool)
    for b, tag in enumerate(id2tag):
        if tag.startswith("I-"):
            label = tag[2:]
            allowed[:, b] = [t in (f"B-{label}", f"I-{label}") for t in id2tag]
    return allowed


def is_valid_sequence(tags: np.ndarray, allowed: np.ndarray, can_start: np.ndarray, breaks: np.ndarray) -> bool:
    """Whether a tag sequence is valid IOB2: each tag may start (first word, after a break) or follow."""
    if not len(tags):
        return True
    starts_ok = can_start[tags] | ~breaks
    follows_ok = np.ones(len(tags), dtype=bool)
    follows_ok[1:] = allowed[tags[:-1], tags[1:]] | breaks[1:]
    return bool(can_start[tags[0]] and starts_ok.all() and follows_ok.all())


def viterbi_tags(word_probs: np.ndarray, id2tag: Sequence[str], breaks: np.ndarray,
                 learned: Optional[LearnedTransitions] = None) -> np.ndarray:
    """The best tag sequence that is valid IOB2, paragraph by paragraph.

    Maximises the sum of log probabilities of the words' tags (plus a CRF's
    learned start and transition scores, when the model has them) under the
    transition constraints: no I-X after O, after another label, at the
    start of a text or after a paragraph break. Paragraphs are independent.
    Without learned scores, a paragraph whose argmax tags are already valid
    has them as its answer (the unconstrained maximum satisfies the
    constraints), so the dynamic programme runs only where argmax is invalid.
    """
    return viterbi_tags_many([(word_probs, breaks)], id2tag, learned)[0]


def viterbi_tags_many(texts: Sequence[Tuple[np.ndarray, np.ndarray]], id2tag: Sequence[str],
                      learned: Optional[LearnedTransitions] = None) -> List[np.ndarray]:
    """viterbi_tags for many texts, each given as (word_probs, breaks): the paragraphs of all texts that need the
    dynamic programme run in one call, so its Python loop runs once per batch rather than once per text."""
    allowed, can_start = _transitions(tuple(id2tag))
    bests, parts, todo, offset = [], [], [], 0  # todo: (text, first word, end word, text's offset in parts)
    for word_probs, breaks in texts:
        best = word_probs.argmax(-1)
        bests.append(best)
        if not len(best) or (learned is None and is_valid_sequence(best, allowed, can_start, breaks)):
            continue
        bounds = sorted({0, len(best)} | set(np.flatnonzero(breaks).tolist()))
        todo += [(len(bests) - 1, a, b, offset) for a, b in zip(bounds[:-1], bounds[1:])
                 if learned is not None or not is_valid_sequence(best[a:b], allowed, can_start, breaks[a:b])]
        parts.append(word_probs)
        offset += len(word_probs)
    if todo:
        spans = [(o + a, o + b) for _, a, b, o in todo]
        for (i, a, b, _), tags in zip(todo, _viterbi_paragraphs(np.concatenate(parts), spans, allowed, can_start,
                                                                 learned)):
            bests[i][a:b] = tags
    return bests


def _viterbi_paragraphs(word_probs: np.ndarray, spans: Sequence[Tuple[int, int]], allowed: np.ndarray,
                        can_start: np.ndarray, learned: Optional[LearnedTransitions] = None) -> List[np.ndarray]:
    """The best valid tag sequence of each paragraph (words a..b-1 for each (a, b) in spans).

    All paragraphs run at once, padded to the longest, so the Python loop runs over the positions of the
    longest paragraph rather than over every word (a CRF decodes every paragraph). A padded position keeps
    its row's scores and points back to the same tag, so backtracking from the end is uniform."""
    if not spans:
        return []
    lengths = np.array([b - a for a, b in spans], dtype=np.int64)
    n_par, width, k = len(spans), int(lengths.max()), word_probs.shape[1]
    rows = np.repeat(np.arange(n_par), lengths)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    logp = np.zeros((n_par, width, k))
    logp[rows, cols] = np.log(np.clip(word_probs[np.concatenate([np.arange(a, b) for a, b in spans])], 1e-12, None))
    start = learned.start if learned is not None else 0.0
    trans = np.where(allowed, learned.pair if learned is not None else 0.0, -np.inf)
    score = np.where(can_start, logp[:, 0] + start, -np.inf)  # [paragraphs, tags]
    back = np.empty((n_par, width, k), dtype=np.int64)
    same = np.broadcast_to(np.arange(k), (n_par, k))
    for i in range(1, width):
        cand = score[:, :, None] + trans  # [paragraph, previous, current]
        arg = cand.argmax(1)
        live = (i < lengths)[:, None]
        back[:, i] = np.where(live, arg, same)
        score = np.where(live, np.take_along_axis(cand, arg[:, None, :], 1)[:, 0] + logp[:, i], score)
    tags = np.empty((n_par, width), dtype=np.int64)
    tags[:, -1] = score.argmax(1)
    for i in range(width - 1, 0, -1):
        tags[:, i - 1] = back[np.arange(n_par), i, tags[:, i]]
    return [tags[r, :lengths[r]] for r in range(n_par)]


def decode_tags(tt: TokenizedText, word_probs: np.ndarray, id2tag: Sequence[str],
                decoding: str = "argmax", learned: Optional[LearnedTransitions] = None,
                tag_ids: Optional[np.ndarray] = None) -> List[Entity]:
    """Per-word tag distributions -> entities with character offsets and scores.

    decoding="argmax" takes each word's most probable tag and reads IOB2
    leniently (an I- tag that does not continue a span of the same label
    opens one); "viterbi" takes the most probable valid IOB2 sequence
    (viterbi_tags, with a CRF's learned scores when given), so spans are
    well formed by construction (tag_ids, when given, are the Viterbi tags already computed for many texts at
    once by viterbi_tags_many). Either way
    spans never cross a paragraph, and leading or trailing punctuation
    tokens are trimmed so that every span starts and ends on a word, as the
    scheme requires. The score of a span is the mean probability of its
    words' chosen tags.
    """
    text, words = tt.text, tt.words
    if not words:
        return []
    if decoding not in TAG_DECODINGS:
        raise ValueError(f"decode_tags: decoding {decoding!r} is not a tag decoding (those are "
                         f"{', '.join(TAG_DECODINGS)})")
    if tag_ids is None:
        tag_ids = viterbi_tags(word_probs, id2tag, paragraph_breaks(tt), learned) if decoding == "viterbi" \
            else word_probs.argmax(-1)
    tag_p = word_probs[np.arange(len(words)), tag_ids].tolist()
    tag_ids = np.asarray(tag_ids)
    spans: List[list] = []  # [first word, last word + 1, label, probs]
    cur = None
    outside = [k for k, t in enumerate(id2tag) if t == "O"]
    for i in np.flatnonzero(tag_ids != (outside[0] if outside else -1)).tolist():  # O words only end spans
        prefix, label = id2tag[int(tag_ids[i])].split("-", 1)
        continues = cur is not None and cur[1] == i and "\n" not in text[words[i - 1][1]:words[i][0]]
        if prefix == "I" and continues and cur[2] == label:
            cur[1] = i + 1
            cur[3].append(tag_p[i])
        else:
            cur = [i, i + 1, label, [tag_p[i]]]
            spans.append(cur)
    ents: List[Entity] = []
    for a, b, label, ps in spans:
        keep = [k for k in range(a, b) if is_word_char(text[words[k][0]])]
        if not keep:
            continue  # a span of punctuation only is not a mention
        a2, b2 = keep[0], keep[-1] + 1
        ps = ps[a2 - a:b2 - a]
        s, e = words[a2][0], words[b2 - 1][1]
        mention = text[s:e]
        ents.append(Entity(id=f"T{len(ents) + 1}", start=s, end=e, label=label, text=mention,
                           score=sum(ps) / len(ps), normalized=normalize_for_linking(mention)))
    return ents
