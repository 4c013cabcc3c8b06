"""Span decoding (`model.decoding: spans`): every word span up to a width in tokens is scored by the encoder
graph's span head, and the best non-overlapping spans become the entities.

The encoder graph's optional output `span_logits` [batch, sequence, widths, classes] scores the token span that
starts at window position t and ends at t + k (k < widths). Class 0 is "no entity", class i + 1 the scheme's
i-th entity label. The candidates are the word spans that start on a word's first token, end on a word's last
token, start and end on a word (never on punctuation) and stay inside one paragraph: the scheme's span rules, the
same ones tag decoding keeps. Training (rasd_train.data) labels exactly these candidates, so what is trained is
what is decoded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from .align import TokenizedText, Window
from .schema import Entity
from .text import is_word_char, normalize_for_linking

__all__ = ["SpanCandidates", "decode_spans", "span_candidates", "word_chars"]


@dataclass
class SpanCandidates:
    """The candidate spans of one window, as parallel arrays."""
    first: np.ndarray  # first word (index into the text's words)
    end: np.ndarray  # last word + 1
    start_token: np.ndarray  # window position of the first word's first token
    width: np.ndarray  # last token's position minus start_token (the span_logits width index)

    def __len__(self) -> int:
        return len(self.first)


def word_chars(tt: TokenizedText) -> np.ndarray:
    """True for each word that is a word (letters, digits, marks), False for a punctuation token."""
    return np.array([is_word_char(tt.text[s]) for s, _ in tt.words], dtype=bool)


def span_candidates(win: Window, max_tokens: int, breaks: np.ndarray, wordish: np.ndarray) -> SpanCandidates:
    """Every candidate span inside `win` at most `max_tokens` tokens long.

    breaks[i] is True when a paragraph break lies before word i (rasd.decode.paragraph_breaks); wordish is
    word_chars of the text. One vectorised pass per span length in words, and no span of d words can be shorter
    than d tokens, so at most max_tokens passes.
    """
    words = np.arange(win.word_start, win.word_end)
    first_tok = np.array([win.word_token[w] for w in words], dtype=np.int64)
    last_tok = np.array([win.word_last_token[w] - 1 for w in words], dtype=np.int64)
    paragraph = np.cumsum(breaks[win.word_start:win.word_end])
    ok = wordish[win.word_start:win.word_end]
    parts = []
    for d in range(min(max_tokens, len(words))):  # spans of d + 1 words
        a, b = np.arange(len(words) - d), np.arange(d, len(words))
        width = last_tok[b] - first_tok[a]
        fits = width < max_tokens
        if not fits.any():
            break
        keep = fits & ok[a] & ok[b] & (paragraph[a] == paragraph[b])
        parts.append((a[keep], b[keep], width[keep]))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return SpanCandidates(empty, empty, empty, empty)
    a, b, width = (np.concatenate(x) for x in zip(*parts))
    return SpanCandidates(words[a], words[b] + 1, first_tok[a], width)


def decode_spans(tt: TokenizedText, windows: Sequence[Window], candidates: Sequence[SpanCandidates],
                 probs: Sequence[np.ndarray], labels: Sequence[str]) -> List[Entity]:
    """Entities from the span probabilities of a text's windows (probs[i]: [len(candidates[i]), 1 + labels]).

    A span scored in several windows takes the view of the window where it sits most centrally (the largest
    distance in words to the window's nearer edge; ties go to the earlier window), as words do in tag decoding.
    Each span's label is its most probable class; spans whose best class is "no entity" are dropped; the rest are
    taken greedily by score, highest first, skipping any that overlaps one already taken (no nesting, as the
    scheme requires). The score of an entity is its label's probability.
    """
    if not tt.words or not any(len(c) for c in candidates):
        return []
    n = len(tt.words) + 1
    keys, margins, rows = [], [], []
    for win, c, p in zip(windows, candidates, probs):
        if p.shape != (len(c), 1 + len(labels)):
            raise ValueError(f"window over words {win.word_start}-{win.word_end}: {p.shape} span probabilities "
                             f"for {len(c)} candidates and {1 + len(labels)} classes")
        keys.append(c.first * n + c.end)
        margins.append(np.minimum(c.first - win.word_start, win.word_end - c.end))
        rows.append(p)
    key, margin, prob = np.concatenate(keys), np.concatenate(margins), np.concatenate(rows)
    order = np.lexsort((np.arange(len(key)), -margin, key))  # per span: most central view first, then earliest
    first_of_key = np.r_[True, key[order][1:] != key[order][:-1]]
    view = order[first_of_key]
    key, prob = key[view], prob[view]
    label = prob.argmax(-1)
    score = prob[np.arange(len(prob)), label]
    chosen = np.flatnonzero(label > 0)
    taken = np.zeros(n, dtype=bool)
    spans = []
    for i in chosen[np.lexsort((key[chosen], -score[chosen]))].tolist():  # best first; ties: leftmost
        a, b = divmod(int(key[i]), n)
        if not taken[a:b].any():
            taken[a:b] = True
            spans.append((a, b, labels[int(label[i]) - 1], float(score[i])))
    ents = []
    for a, b, lab, sc in sorted(spans):
        s, e = tt.words[a][0], tt.words[b - 1][1]
        mention = tt.text[s:e]
        ents.append(Entity(id=f"T{len(ents) + 1}", start=s, end=e, label=lab, text=mention, score=sc,
                           normalized=normalize_for_linking(mention)))
    return ents
