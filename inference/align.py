"""Words <-> sub-word tokens <-> character offsets, IOB2 tags, and windows.

Alignment is exact by construction: the text is split into words by the
scheme's word rule (text.split_words), each word is tokenized on its own
(`is_pretokenized=True`), and every token therefore belongs to exactly one
word. Character offsets of a span are the offsets of its first and last
word, never the tokenizer's offset mapping (which, for sentencepiece
vocabularies, includes the leading space of a word-initial piece).
Labels sit on the first sub-token of each word; the other sub-tokens and
the special tokens are ignored (-100 in training, skipped in decoding).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .schema import Entity
from .text import has_marks, model_form, split_words

IGNORE_INDEX = -100


@dataclass
class SpecialTokens:
    """Ids the tokenizer's post-processor puts around a single sequence."""
    prefix: List[int]
    suffix: List[int]
    pad_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "SpecialTokens":
        # Diff an encoding with and without specials: works for [CLS]/[SEP]
        # (BERT) and <s>/</s> (XLM-R) alike without naming them.
        bare = tokenizer.encode(["x"], is_pretokenized=True, add_special_tokens=False).ids
        full = tokenizer.encode(["x"], is_pretokenized=True, add_special_tokens=True).ids
        for i in range(len(full) - len(bare) + 1):
            if full[i:i + len(bare)] == bare:
                prefix, suffix = full[:i], full[i + len(bare):]
                break
        else:  # pragma: no cover - a post-processor that rewrites content
            raise ValueError("tokenizer post-processor changes the tokens of its input")
        pad = tokenizer.token_to_id("[PAD]")
        if pad is None:
            pad = tokenizer.token_to_id("<pad>")
        if pad is None:
            pad = 0
        return cls(prefix=list(prefix), suffix=list(suffix), pad_id=int(pad))


@dataclass
class TokenizedText:
    """A whole text as words and the sub-tokens of every word."""
    text: str
    words: List[Tuple[int, int]]  # char (start, end) of each word
    token_ids: List[int]  # sub-tokens of all words, no specials
    token_word: List[int]  # word index of each token
    word_first_token: List[int]  # index into token_ids of each word's first token
    word_n_tokens: List[int]


def tokenize_text(text: str, tokenizer) -> TokenizedText:
    return tokenize_texts([text], tokenizer)[0]


def tokenize_texts(texts: Sequence[str], tokenizer) -> List[TokenizedText]:
    """Words and sub-tokens of many texts, with one batched call into the tokenizer (its Rust side
    tokenizes the texts in parallel)."""
    words = [split_words(t) for t in texts]
    # Words are cut from the text as written; the encoder reads each word's model form (no diacritics or
    # tatweel), and everything downstream works in words, so offsets stay those of the original text.
    forms = [[model_form(t[s:e]) for s, e in ws] if has_marks(t) else [t[s:e] for s, e in ws]
             for t, ws in zip(texts, words)]
    todo = [i for i, ws in enumerate(words) if ws]
    encs = tokenizer.encode_batch([forms[i] for i in todo], is_pretokenized=True, add_special_tokens=False) \
        if todo else []
    out = [TokenizedText(t, [], [], [], [], []) for t in texts]
    for i, enc in zip(todo, encs):
        out[i] = _assemble(texts[i], words[i], list(enc.ids), list(enc.word_ids), tokenizer)
    return out


def _assemble(text: str, words: List[Tuple[int, int]], ids: List[int], wids: List[int], tokenizer) -> TokenizedText:
    counts = np.bincount(np.asarray(wids, dtype=np.int64), minlength=len(words)) if wids else \
        np.zeros(len(words), dtype=np.int64)
    # A word the tokenizer turned into nothing (e.g. a lone control char
    # normalised away) still needs a slot to carry its label: give it unk.
    if (counts == 0).any():
        unk = tokenizer.token_to_id("[UNK]")
        if unk is None:
            unk = tokenizer.token_to_id("<unk>") or 0
        new_ids, new_w = [], []
        for w in range(len(words)):
            toks = [ids[t] for t in range(len(ids)) if wids[t] == w] or [unk]
            new_ids += toks
            new_w += [w] * len(toks)
        ids, wids = new_ids, new_w
        counts = np.bincount(np.asarray(wids, dtype=np.int64), minlength=len(words))
    # word_ids come in word order, so each word's tokens are contiguous and its first one is the running sum.
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return TokenizedText(text, words, ids, wids, first.tolist(), counts.tolist())


@dataclass
class Window:
    """A slice of whole words that fits the encoder, with specials added."""
    word_start: int
    word_end: int  # exclusive
    input_ids: List[int]
    word_token: Dict[int, int] = field(default_factory=dict)  # word index -> position of its first token
    word_last_token: Dict[int, int] = field(default_factory=dict)  # word index -> position after its last token
    truncated_words: List[int] = field(default_factory=list)  # words whose sub-tokens did not all fit

    def first_token_positions(self) -> List[int]:
        """Position of each word's first token, in word order (where the word's tag is read)."""
        return [self.word_token[w] for w in range(self.word_start, self.word_end)]


def make_windows(tt: TokenizedText, specials: SpecialTokens, max_length: int, stride: int) -> List[Window]:
    """Cover every word with windows of at most `max_length` tokens.

    Windows end on word boundaries; consecutive windows overlap by about
    `stride` tokens so that each word is seen once with context on both
    sides (decode.merge_windows keeps the most central view of a word).
    A single word longer than a whole window keeps only its first tokens
    (its label sits on the first one) and is listed in truncated_words.
    """
    budget = max_length - len(specials.prefix) - len(specials.suffix)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room beside the special tokens")
    if not 0 <= stride < budget:
        raise ValueError(f"stride {stride} must be >= 0 and smaller than the window's {budget} content tokens")
    n = len(tt.words)
    windows: List[Window] = []
    start = 0
    while start < n:
        end, used = start, 0
        while end < n and used + tt.word_n_tokens[end] <= budget:
            used += tt.word_n_tokens[end]
            end += 1
        if end == start:  # one word bigger than the window: keep its head
            end = start + 1
        windows.append(_build_window(tt, specials, start, end, budget))
        if end >= n:
            break
        # Next window starts so that it re-reads about `stride` tokens.
        nxt, back = end, 0
        while nxt - 1 > start and back + tt.word_n_tokens[nxt - 1] <= stride:
            nxt -= 1
            back += tt.word_n_tokens[nxt]
        start = max(nxt, start + 1)
    return windows


def _build_window(tt: TokenizedText, specials: SpecialTokens, ws: int, we: int, budget: int) -> Window:
    ids = list(specials.prefix)
    win = Window(word_start=ws, word_end=we, input_ids=ids)
    for w in range(ws, we):
        f, k = tt.word_first_token[w], tt.word_n_tokens[w]
        room = budget - (len(ids) - len(specials.prefix))
        if k > room:
            win.truncated_words.append(w)
            k = room
        win.word_token[w] = len(ids)
        ids.extend(tt.token_ids[f:f + k])
        win.word_last_token[w] = len(ids)
    ids.extend(specials.suffix)
    return win


# --- IOB2 tags over words ---

def entity_word_ranges(words: Sequence[Tuple[int, int]], entities: Sequence[Entity]) -> List[Tuple[int, int]]:
    """(first word, last word + 1) of each word-aligned entity: the one place this is computed."""
    start_index = {s: i for i, (s, _) in enumerate(words)}
    end_index = {e: i for i, (_, e) in enumerate(words)}
    out = []
    for ent in entities:
        if ent.start not in start_index or ent.end not in end_index:
            raise ValueError(f"entity {ent.id} {ent.start}-{ent.end} is not aligned to word boundaries")
        out.append((start_index[ent.start], end_index[ent.end] + 1))
    return out


def spans_to_word_tags(words: Sequence[Tuple[int, int]], entities: Sequence[Entity]) -> List[str]:
    """Gold entities (word-aligned) -> one IOB2 tag per word."""
    tags = ["O"] * len(words)
    for ent, (a, b) in zip(entities, entity_word_ranges(words, entities)):
        tags[a] = f"B-{ent.label}"
        for i in range(a + 1, b):
            tags[i] = f"I-{ent.label}"
    return tags


def window_span(win: Window, word_range: Tuple[int, int]) -> Optional[Tuple[int, int]]:
    """Token span [start, end) of a word range inside a window, or None if not fully inside."""
    a, b = word_range
    if a < win.word_start or b > win.word_end:
        return None
    return win.word_token[a], win.word_last_token[b - 1]


def word_margin(win: Window, word_range: Tuple[int, int]) -> int:
    """Words between a range and the window's nearer edge: how central the range sits."""
    return min(word_range[0] - win.word_start, win.word_end - word_range[1])
