"""Vocabulary trimming: which pieces a trimmed encoder keeps, and from which texts.

One definition of the trim texts (the corpus's train split) serves both
`rasd prepare-encoder` and training, so the documented setup step and
command 1 produce the same encoder and it is converted once.
"""
from __future__ import annotations

import json
import os
from typing import List, Sequence

import numpy as np

from .samples import ARABIC_SAMPLE, VERIFY_TEXTS
from .tokenizer import SPECIALS


def _encodings(tok, texts: Sequence[str]) -> list:
    """Encodings of each whole text and of each text split into words.

    The project feeds the encoder word by word (rasd.align.tokenize_text),
    which gives every word (and punctuation mark) its own "▁", so trimming
    has to keep the pieces of both ways of tokenizing.
    """
    from rasd.text import split_words
    words = [w for w in ([t[s:e] for s, e in split_words(t)] for t in texts) if w]
    return (tok.encode_batch(list(texts), add_special_tokens=False)
            + tok.encode_batch(words, is_pretokenized=True, add_special_tokens=False))


def _arabic_piece(piece: str) -> bool:
    body = piece.lstrip("▁")
    return bool(body) and all(c.isdigit() or "\u0600" <= c <= "\u06ff" or "\u0750" <= c <= "\u077f"
                              or "\u08a0" <= c <= "\u08ff" or "\ufb50" <= c <= "\ufdff" or "\ufe70" <= c <= "\ufeff"
                              for c in body)


def trim_vocab(tok, pieces: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Old ids to keep, ascending (so <s> <pad> </s> <unk> stay 0-3, <mask> goes last).

    Kept: the specials, every single-character piece and every "▁"+character
    piece (unseen words still tokenize, just into smaller pieces), every
    piece made only of Arabic script and digits (so that any Arabic word, seen
    or not, tokenizes exactly as with the full vocabulary: its segmentation can
    only use such pieces), and every piece the texts (plus ARABIC_SAMPLE) use,
    whole or split into words.
    """
    texts = list(texts) + [ARABIC_SAMPLE] + VERIFY_TEXTS + ["query: " + t for t in VERIFY_TEXTS]
    keep = set(SPECIALS.values())
    keep.update(i for i, p in enumerate(pieces) if len(p) == 1 or (len(p) == 2 and p[0] == "▁"))
    keep.update(i for i, p in enumerate(pieces) if _arabic_piece(p))
    for enc in _encodings(tok, texts):
        keep.update(enc.ids)
    return np.array(sorted(keep), dtype=np.int64)


def trim_texts(corpus_dir: str) -> List[str]:
    """The texts a trimmed vocabulary is built from: the corpus's train split.

    Only train: dev and test must not shape the model. All Arabic-script
    pieces are kept anyway, so this only decides which other pieces stay.
    """
    path = os.path.join(corpus_dir, "train.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no train split to trim the vocabulary with: {path}")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh if line.strip()]
