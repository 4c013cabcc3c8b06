"""How much a corpus looks like real reporting: the texture figures.

Real Arabic news differs from clean written documents in measurable ways
(quote marks, punctuation inside names, compass-word regions, long names,
length, look-alikes that are not entities). These figures are printed by
`rasd stats` and by `python -m rasd_train.markup check`, so a corpus writer
sees them while writing and a reviewer can compare corpora.

Words here are whitespace-separated, as in the figures measured on real
reports; mention length counts the word rule's words, not punctuation.
"""
from __future__ import annotations

import statistics
from typing import Dict, Sequence

from .text import is_word_char, split_words

QUOTE_MARKS = frozenset("“”«»\"„‟")
COMPASS_WORDS = frozenset({
    "شمال", "جنوب", "شرق", "غرب", "وسط", "شمالي", "جنوبي", "شرقي", "غربي",
    "شمالى", "جنوبى", "شرقى", "غربى", "الشمال", "الجنوب", "الشرق", "الغرب", "الوسط",
})
# One-letter proclitics written together with a compass word (وشمال, بجنوب).
_CLITICS = ("و", "ف", "ب", "ل")


def _strip_diacritics(word: str) -> str:
    return "".join(c for c in word if not (0x064B <= ord(c) <= 0x065F or ord(c) in (0x0670, 0x0640)))


def opens_with_compass_word(mention: str) -> bool:
    words = mention.split()
    if not words:
        return False
    first = _strip_diacritics(words[0])
    if first in COMPASS_WORDS:
        return True
    return first[:1] in _CLITICS and first[1:] in COMPASS_WORDS


def mention_words(mention: str) -> int:
    """Words of a mention by the word rule, punctuation tokens not counted."""
    return sum(1 for s, e in split_words(mention) if is_word_char(mention[s]))


def has_inner_punctuation(mention: str) -> bool:
    return any(not c.isspace() and not is_word_char(c) for c in mention)


def _share(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def texture(docs: Sequence) -> Dict[str, float]:
    """Texture figures of `docs` (objects with .text, .entities, .meta)."""
    words = [len(d.text.split()) for d in docs]
    mentions = [(d.text[e.start:e.end], e.label) for d in docs for e in d.entities]
    locations = [m for m, lab in mentions if lab == "LOCATION"]
    quotes = sum(1 for d in docs for c in d.text if c in QUOTE_MARKS)
    spelling = [(d.meta or {}).get("spelling", "standard") for d in docs]
    lookalikes = sum(len((d.meta or {}).get("lookalikes", [])) for d in docs)
    return {
        "documents": len(docs),
        "median_words": statistics.median(words) if words else 0,
        "min_words": min(words, default=0),
        "max_words": max(words, default=0),
        "multi_paragraph_pct": _share(sum(1 for d in docs if "\n" in d.text.strip()), len(docs)),
        "quotes_per_1000_words": round(1000.0 * quotes / sum(words), 1) if sum(words) else 0.0,
        "mentions_3plus_words_pct": _share(sum(1 for m, _ in mentions if mention_words(m) >= 3), len(mentions)),
        "mentions_inner_punct_pct": _share(sum(1 for m, _ in mentions if has_inner_punctuation(m)), len(mentions)),
        "locations_compass_pct": _share(sum(1 for m in locations if opens_with_compass_word(m)), len(locations)),
        "nonstandard_spelling_docs_pct": _share(sum(1 for s in spelling if s != "standard"), len(docs)),
        "lookalike_mentions": lookalikes,
        "events": len({(d.meta or {}).get("event") for d in docs}),
        "theaters": len({(d.meta or {}).get("theater") for d in docs}),
    }


def format_texture(fig: Dict[str, float]) -> str:
    return " ".join(f"{k}={v}" for k, v in fig.items())
