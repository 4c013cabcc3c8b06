"""Corpus loading (datasets.DatasetDict) and training features.

Features come from rasd.align, the same code the service uses to cut text
into words, tokens and windows, so training and serving cannot drift apart.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import torch
from datasets import Dataset, DatasetDict

from rasd.align import (IGNORE_INDEX, SpecialTokens, entity_word_range, make_windows, pair_features,
                        spans_to_word_tags, tokenize_text, window_span)
from rasd.decode import candidate_pairs
from rasd.pipeline import ModelSpec
from rasd.schema import Document, read_documents

SPLITS = ("train", "dev", "test")


def load_corpus(data_dir: str, splits: Sequence[str] = SPLITS) -> DatasetDict:
    """The corpus splits as a DatasetDict, each document validated against the scheme."""
    out = {}
    for split in splits:
        path = os.path.join(data_dir, f"{split}.jsonl")
        if not os.path.exists(path):
            raise FileNotFoundError(f"corpus split {split!r} not found: {path}")
        docs = read_documents(path)
        out[split] = Dataset.from_list([_flat(d) for d in docs])
    return DatasetDict(out)


def _flat(d: Document) -> dict:
    # datasets needs one schema per column: meta values become strings.
    return {"id": d.id, "text": d.text,
            "entities": [{"id": e.id, "start": e.start, "end": e.end, "label": e.label} for e in d.entities],
            "relations": [{"head": r.head, "tail": r.tail, "label": r.label} for r in d.relations],
            "meta": {k: str(v) for k, v in (d.meta or {}).items()} or None}


def documents(ds: Dataset) -> List[Document]:
    """Rows of a corpus Dataset back into scheme Documents."""
    return [Document.from_dict({**row, "meta": {k: v for k, v in (row.get("meta") or {}).items() if v is not None}})
            for row in ds]


def featurize(doc: Document, tokenizer, spec: ModelSpec, specials: SpecialTokens) -> List[dict]:
    """One training example per window: token ids, token tags, candidate pairs.

    Tags go on each word's first sub-token (others -100). Pairs are every
    type-valid ordered pair in one paragraph whose two entities both lie in
    the window; pairs without a gold relation are the negatives (class 0).
    """
    tag2id = {t: i for i, t in enumerate(spec.id2tag)}
    rel2id = {r: i + 1 for i, r in enumerate(spec.relation_labels)}
    tt = tokenize_text(doc.text, tokenizer)
    word_tags = spans_to_word_tags(tt.words, doc.entities)
    ranges = [entity_word_range(tt.words, e) for e in doc.entities]
    gold = {(r.head, r.tail): rel2id[r.label] for r in doc.relations}
    pairs = candidate_pairs(doc.text, doc.entities)
    label_index = {lab: k for k, lab in enumerate(spec.entity_labels)}
    feats = []
    for win in make_windows(tt, specials, spec.max_length, spec.stride):
        labels = [IGNORE_INDEX] * len(win.input_ids)
        for w, pos in win.word_token.items():
            labels[pos] = tag2id[word_tags[w]]
        pf, pl = [], []
        for h, t in pairs:
            hs, ts = window_span(win, ranges[h]), window_span(win, ranges[t])
            if hs is None or ts is None:
                continue
            he, te = doc.entities[h], doc.entities[t]
            pf.append(pair_features(hs, ts, label_index[he.label], label_index[te.label]))
            pl.append(gold.get((he.id, te.id), 0))
        feats.append({"input_ids": win.input_ids, "labels": labels, "pairs": pf, "pair_labels": pl})
    return feats


def collate(batch: List[dict], pad_id: int) -> Dict[str, torch.Tensor]:
    T = max(len(f["input_ids"]) for f in batch)
    B = len(batch)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    pb, feats, plabels = [], [], []
    for i, f in enumerate(batch):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(f["labels"])
        for p, lab in zip(f["pairs"], f["pair_labels"]):
            pb.append(i)
            feats.append(p)
            plabels.append(lab)
    pf = torch.tensor(feats, dtype=torch.long).reshape(-1, 7)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels,
            "pair_batch": torch.tensor(pb, dtype=torch.long), "head_span": pf[:, 0:2], "tail_span": pf[:, 2:4],
            "head_type": pf[:, 4], "tail_type": pf[:, 5], "distance_bucket": pf[:, 6],
            "pair_labels": torch.tensor(plabels, dtype=torch.long)}
