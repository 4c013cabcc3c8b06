"""The word rule of ANNOTATION.md and text normalisation for entity linking.

A word is a maximal run of letters (any script), digits, Arabic diacritics
(U+064B-U+065F, U+0670) and tatweel (U+0640). Every other non-space character
is a one-character token of its own. Spans start and end on word characters.
This module is the single definition of that rule: the validator, the
tokenizer alignment and the decoder all call it.
"""
from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from typing import List, Tuple

Span = Tuple[int, int]


def is_word_char(ch: str) -> bool:
    """True for characters that belong inside a word."""
    if ch.isalnum():
        return True
    o = ord(ch)
    # Diacritics and tatweel are not alphanumeric for str.isalnum(), but they
    # sit inside Arabic words; combining marks of other scripts likewise.
    return 0x064B <= o <= 0x065F or o == 0x0670 or o == 0x0640 or unicodedata.category(ch).startswith("M")


_MARKS = re.compile("[\u064B-\u065F\u0670\u0640]")


def has_marks(text: str) -> bool:
    """Whether any word of `text` has a model form other than itself (most texts have none)."""
    return _MARKS.search(text) is not None


def model_form(word: str) -> str:
    """What the encoder reads for a word: the word without Arabic diacritics and tatweel.

    Marks and tatweel never change which name a word is part of, but they
    change its sub-tokens completely (a fully vowelled sentence shares almost
    no tokens with the plain one), so the model reads words without them, in
    training and in service alike. Offsets are untouched: the word's span in
    the original text is what decoding reports. A word made only of marks is
    kept as it is, so that it still has tokens.
    """
    bare = _MARKS.sub("", word)
    return bare or word


@lru_cache(maxsize=1)
def _token_pattern() -> "re.Pattern":
    """The word rule as one regular expression: runs of word characters, or any other non-space character.

    `[^\\W_]` is exactly str.isalnum() (re's \\w is isalnum plus the underscore); the marks of every
    script (Unicode category M, the Arabic diacritics among them) and tatweel are added as a class
    enumerated once from this Python's unicodedata, so the regex and is_word_char agree by
    construction (a property test checks them on arbitrary text). Built on first use: ~0.2 s.
    """
    marks = [c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("M")]
    ranges: List[List[int]] = []
    for c in marks + [0x0640]:
        if ranges and ranges[-1][1] == c - 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    marks_class = "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges)
    return re.compile(f"(?:[^\\W_]|[{marks_class}])+|\\S")


def split_words(text: str) -> List[Span]:
    """Split `text` into word tokens as (start, end) character offsets.

    Words are maximal runs of word characters; every other non-space
    character is a token of one character; whitespace separates tokens and
    belongs to none. The tokens cover every non-space character exactly once.
    """
    return [m.span() for m in _token_pattern().finditer(text)]


def span_is_word_aligned(text: str, start: int, end: int) -> bool:
    """A span must start at a word's first char and end at a word's last char."""
    if not (0 <= start < end <= len(text)):
        return False
    if not is_word_char(text[start]) or not is_word_char(text[end - 1]):
        return False
    if start > 0 and is_word_char(text[start - 1]):
        return False
    if end < len(text) and is_word_char(text[end]):
        return False
    return True


def paragraph_index(text: str, pos: int) -> int:
    """Paragraphs are separated by '\\n'; the index of the one holding `pos`."""
    return text.count("\n", 0, pos)


# --- normalisation for linking (not annotation: spans keep their clitics) ---

_DIACRITICS = re.compile("[\u064B-\u065F\u0670\u0640]")
# The hamza-carrying alefs as a bare alef: the fold a model can carry in its tokenizer
# (encoder.fold_alef), and part of the linking key below.
ALEF_FOLD = {"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا"}
_ALEF = str.maketrans({**ALEF_FOLD, "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي"})
# Attached proclitics: a conjunction (و ف), then a preposition (ب ل ك).
# Stripping them blindly would eat real first letters (بغداد, كيدال, فرنسا,
# وزارة), so they are only stripped before the article or before one of the
# designator nouns that open entity names.
_DESIGNATORS = {
    "قاعدة", "قاعده", "قاعدتي", "قواعد", "مطار", "معسكر", "نقطة", "نقطه", "محافظة", "محافظه", "ريف",
    "مدينة", "مدينه", "بلدة", "بلده", "قرية", "قريه", "منطقة", "منطقه", "ولاية", "ولايه", "حقل",
    "قوات", "قوة", "قوه", "جيش", "وزارة", "وزاره", "عملية", "عمليه", "غارات", "إقليم", "اقليم", "قسد",
}
_PREFIXES = sorted({c + p for c in ("", "و", "ف") for p in ("", "ب", "ل", "ك")} - {""}, key=len, reverse=True)
_QUOTES = "\"'“”«»‘’„"


def _strip_proclitics(word: str) -> str:
    for prefix in _PREFIXES:
        if not word.startswith(prefix):
            continue
        rest = word[len(prefix):]
        if rest.startswith("ال") and len(rest) >= 4:
            return rest
        if rest in _DESIGNATORS:
            return rest
        # ل + ال is written لل: للتحالف = ل + التحالف.
        if prefix.endswith("ل") and rest.startswith("ل") and len(rest) >= 4:
            return "ا" + rest
    return word


def normalize_for_linking(mention: str) -> str:
    """A key for linking mentions of the same thing across spellings.

    Removes diacritics and tatweel, unifies alef/hamza forms, alef maqsura
    and ta marbuta, strips attached proclitics (و ف ب ل ك) and quotes, and
    collapses spaces. قاعدة "التنف" and بقاعدة التنف map to the same key.
    """
    s = unicodedata.normalize("NFKC", mention)
    s = _DIACRITICS.sub("", s)
    s = s.translate(_ALEF)
    s = "".join(ch for ch in s if ch not in _QUOTES)
    return " ".join(_strip_proclitics(w) for w in s.split())
