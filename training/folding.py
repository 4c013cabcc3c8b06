"""Spelling folds written into the tokenizer, so that a model reads variant spellings as one.

Much online Arabic writes the hamza-carrying alefs (أ إ آ ٱ) as a bare alef. A model that reads
them as different letters sees different sub-tokens for the same name («الأمريكية» / «الامريكية»)
and loses F1 on de-hamzated text. Folding them in the tokenizer's normalizer makes both spellings
one token sequence. The fold lives in `tokenizer.json`, which travels with the model and its
export, so training, evaluation and every serving path read the same thing without code of
their own; character offsets are untouched (alignment never uses the tokenizer's offsets).
"""
from __future__ import annotations

from rasd.text import ALEF_FOLD


def fold_alef(backend_tokenizer) -> None:
    """Put the alef fold in front of a `tokenizers.Tokenizer`'s normalizer (in place; idempotent)."""
    from tokenizers import normalizers
    current = backend_tokenizer.normalizer
    if current is not None and _has_fold(current):
        return
    folds = [normalizers.Replace(src, dst) for src, dst in ALEF_FOLD.items()]
    backend_tokenizer.normalizer = normalizers.Sequence(folds + ([current] if current is not None else []))


def _has_fold(normalizer) -> bool:
    # The fold reads back as a Sequence whose first member replaces «أ»; checked on its
    # behaviour, since tokenizers exposes no inspection of a Sequence's members.
    return normalizer.normalize_str("أ") == "ا"
