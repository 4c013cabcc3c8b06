"""Corpus loading (datasets.DatasetDict) and training features.

Features come from rasd.align, the same code the service uses to cut text
into words, tokens and windows, so training and serving cannot drift apart.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import torch
from datasets import Dataset, DatasetDict

from rasd.align import IGNORE_INDEX, SpecialTokens, entity_word_ranges, make_windows, spans_to_word_tags, tokenize_text
from rasd.backend import ModelSpec
from rasd.decode import paragraph_breaks
from rasd.pairs import candidate_pairs, pair_row, place_pair, sentence_gap, stack_pairs
from rasd.scheme import Scheme
from rasd.schema import Document, read_documents
from rasd.spans import span_candidates, word_chars

SPLITS = ("train", "dev", "test")


def load_corpus(data_dir: str, splits: Sequence[str] = SPLITS, scheme: Optional[Scheme] = None) -> DatasetDict:
    """The corpus splits as a DatasetDict, each document validated against the scheme (built-in by default)."""
    out = {}
    for split in splits:
        path = os.path.join(data_dir, f"{split}.jsonl")
        if not os.path.exists(path):
            raise FileNotFoundError(f"corpus split {split!r} not found: {path}")
        docs = read_documents(path, scheme)
        out[split] = Dataset.from_list([_flat(d) for d in docs])
    return DatasetDict(out)


def _flat(d: Document) -> dict:
    # datasets needs one schema per column, so each meta value travels as its JSON text (a list of look-alike
    # spans stays a list of dicts on the way back, where str() gave a Python repr nothing could read).
    return {"id": d.id, "text": d.text,
            "entities": [{"id": e.id, "start": e.start, "end": e.end, "label": e.label} for e in d.entities],
            "relations": [{"head": r.head, "tail": r.tail, "label": r.label} for r in d.relations],
            "meta": {k: json.dumps(v, ensure_ascii=False) for k, v in (d.meta or {}).items()} or None}


def documents(ds: Dataset) -> List[Document]:
    """Rows of a corpus Dataset back into scheme Documents."""
    # A document without some key another document has gets None for it from datasets: not its own meta.
    return [Document.from_dict({**row, "meta": {k: json.loads(v) for k, v in (row.get("meta") or {}).items()
                                                if v is not None}})
            for row in ds]


def featurize(doc: Document, tokenizer, spec: ModelSpec, specials: SpecialTokens) -> List[dict]:
    """One training example per window: token ids, token tags, and the candidate pairs placed in it.

    Tags go on each word's first sub-token (others -100). Candidate pairs
    are every type-valid ordered pair in one paragraph; each is placed in one
    window by rasd.pairs.place_pair, the service's rule. Pairs without a gold
    relation are the negatives (class 0).
    """
    tag2id = {t: i for i, t in enumerate(spec.id2tag)}
    rel2id = {r: i + 1 for i, r in enumerate(spec.scheme.relation_labels)}
    tt = tokenize_text(doc.text, tokenizer)
    word_tags = spans_to_word_tags(tt.words, doc.entities)
    ranges = entity_word_ranges(tt.words, doc.entities)
    gold = {(r.head, r.tail): rel2id[r.label] for r in doc.relations}
    windows = make_windows(tt, specials, spec.window_length, spec.window_stride)
    feats = []
    for win in windows:
        labels = [IGNORE_INDEX] * len(win.input_ids)
        for w, pos in win.word_token.items():
            labels[pos] = tag2id[word_tags[w]]
        feats.append({"input_ids": win.input_ids, "labels": labels, "pairs": [], "pair_labels": []})
    if spec.span_max_tokens:
        add_span_labels(feats, tt, windows, ranges, [spec.scheme.entity_index(e.label) + 1 for e in doc.entities],
                        spec.span_max_tokens)
    for h, t in candidate_pairs(doc.text, doc.entities, spec.scheme):
        wi = place_pair(windows, ranges[h], ranges[t])
        if wi is None:
            continue  # never in one window: the service cannot score it either
        he, te = doc.entities[h], doc.entities[t]
        feats[wi]["pairs"].append(pair_row(windows[wi], ranges[h], ranges[t], spec.scheme.entity_index(he.label),
                                           spec.scheme.entity_index(te.label), sentence_gap(doc.text, he, te)))
        feats[wi]["pair_labels"].append(gold.get((he.id, te.id), 0))
    return feats


def add_span_labels(feats: List[dict], tt, windows, ranges, classes: List[int], max_tokens: int) -> None:
    """Each window's candidate spans (rasd.spans, the very candidates decoding reads) with their class: the gold
    entity's label + 1 for a gold span, 0 for every other candidate."""
    breaks, wordish = paragraph_breaks(tt), word_chars(tt)
    gold = {tuple(r): c for r, c in zip(ranges, classes)}
    for f, win in zip(feats, windows):
        c = span_candidates(win, max_tokens, breaks, wordish)
        f["span_start"], f["span_width"] = c.start_token.tolist(), c.width.tolist()
        f["span_label"] = [gold.get((a, b), 0) for a, b in zip(c.first.tolist(), c.end.tolist())]


def collate(batch: List[dict], pad_id: int) -> Dict[str, object]:
    """Padded tensors; `pairs` is the dict of relation-graph inputs the model's relate() takes by name."""
    T = max(len(f["input_ids"]) for f in batch)
    B = len(batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    rows, batch_rows, plabels = [], [], []
    for i, f in enumerate(batch):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(f["labels"])
        rows += f["pairs"]
        batch_rows += [i] * len(f["pairs"])
        plabels += f["pair_labels"]
    pairs = {k: torch.from_numpy(v) for k, v in stack_pairs(rows, batch_rows).items()}
    out = {"input_ids": ids, "attention_mask": mask, "labels": labels, "pairs": pairs,
           "pair_labels": torch.tensor(plabels, dtype=torch.long)}
    if "span_start" in batch[0]:
        out["spans"] = {"span_batch": torch.tensor([i for i, f in enumerate(batch) for _ in f["span_start"]],
                                                   dtype=torch.long),
                        **{k: torch.tensor([x for f in batch for x in f[k]], dtype=torch.long)
                           for k in ("span_start", "span_width", "span_label")}}
    return out
