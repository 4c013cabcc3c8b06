"""Tagger outputs -> entities: window merging and tags -> spans. The
training evaluation and the service both call these functions, so what is
measured is what is served (relation pairs live in rasd.pairs).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from .align import TokenizedText, Window, word_margin
from .schema import Entity
from .text import is_word_char, normalize_for_linking


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def merge_windows(n_words: int, windows: Sequence[Window], window_word_probs: Sequence[Dict[int, np.ndarray]]
                  ) -> np.ndarray:
    """One tag distribution per word from overlapping windows.

    Each word takes the distribution of the window where it sits most
    centrally (largest distance, in words, to the window's nearer edge): the
    view with the most context on both sides. Ties go to the earlier window.
    Raises if a word was not covered, since a silent gap would drop text.
    """
    best = np.full(n_words, -1, dtype=np.int64)
    out = None
    for wi, (win, probs) in enumerate(zip(windows, window_word_probs)):
        for w, p in probs.items():
            if out is None:
                out = np.zeros((n_words, p.shape[-1]), dtype=np.float32)
            margin = word_margin(win, (w, w + 1))
            if best[w] < 0 or margin > best[w]:
                best[w] = margin
                out[w] = p
    if n_words and (best < 0).any():
        missing = int(np.flatnonzero(best < 0)[0])
        raise RuntimeError(f"word {missing} was not covered by any window")
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def decode_tags(tt: TokenizedText, word_probs: np.ndarray, id2tag: Sequence[str]) -> List[Entity]:
    """Per-word tag distributions -> entities with character offsets and scores.

    IOB2 is read leniently (an I- tag that does not continue a span of the
    same label opens one), spans never cross a paragraph, and leading or
    trailing punctuation tokens are trimmed so that every span starts and
    ends on a word, as the scheme requires. The score of a span is the mean
    probability of its words' chosen tags.
    """
    text, words = tt.text, tt.words
    if not words:
        return []
    tag_ids = word_probs.argmax(-1)
    tag_p = word_probs[np.arange(len(words)), tag_ids]
    spans: List[Tuple[int, int, str, List[float]]] = []  # word range + label + probs
    cur = None
    for i, t in enumerate(tag_ids):
        tag = id2tag[int(t)]
        if tag == "O":
            cur = None
            continue
        prefix, label = tag.split("-", 1)
        same_para = cur is not None and "\n" not in text[words[i - 1][1]:words[i][0]]
        if prefix == "I" and cur is not None and cur[2] == label and same_para:
            cur[1] = i + 1
            cur[3].append(float(tag_p[i]))
        else:
            cur = [i, i + 1, label, [float(tag_p[i])]]
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
                           score=float(np.mean(ps)), normalized=normalize_for_linking(mention)))
    return ents
