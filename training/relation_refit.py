"""Second training stage: refit the relation head on the entities it will be served.

    python -m rasd_train.relation_refit runs/me5-small/model --out runs/me5-small/refit.json

Jointly trained, the relation head only ever sees pairs of *gold* entities;
in service it gets the tagger's entities, with their boundary and label
mistakes. This stage freezes the trained encoder and tagger, predicts the
entities of every training document with the service's own pipeline, and
fits the head again on the pairs of gold and predicted entities together
(issue 11, relation variant a). A predicted entity that is not exactly a
gold one takes part in negative pairs only: under strict scoring any
relation it carries is wrong.

The encoder is frozen, so its hidden states are computed once and cached;
an epoch of the head costs seconds. The relation head starts from its
jointly trained weights (a fine-tuning, not a fresh start).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, replace
from typing import Dict, List, Sequence

import torch

from rasd.align import SpecialTokens, entity_word_ranges, make_windows, tokenize_text
from rasd.pairs import candidate_pairs, pair_row, place_pair, sentence_gap, stack_pairs
from rasd.schema import Document, Entity

from .modeling import RasdModel



@dataclass
class RefitArgs:
    epochs: int = 8
    learning_rate: float = 3e-4
    batch_windows: int = 16
    predicted: bool = True  # False: gold pairs only (the control that separates "more epochs" from "predicted")
    seed: int = 13


def with_predicted(gold: Document, pred: Document) -> Document:
    """Gold entities plus the predicted ones that are not exactly a gold entity (ids P1, P2, ...)."""
    have = {(e.start, e.end, e.label) for e in gold.entities}
    extra = [Entity(id=f"P{k}", start=e.start, end=e.end, label=e.label, text=e.text)
             for k, e in enumerate((e for e in pred.entities if (e.start, e.end, e.label) not in have), 1)]
    return replace(gold, entities=list(gold.entities) + extra)


def pair_windows(doc: Document, tokenizer, model: RasdModel, specials: SpecialTokens) -> List[dict]:
    """The windows of one document that hold candidate pairs: ids, pair rows and labels (0 = none)."""
    spec = model.spec()
    rel2id = {r: i + 1 for i, r in enumerate(spec.scheme.relation_labels)}
    tt = tokenize_text(doc.text, tokenizer)
    windows = make_windows(tt, specials, spec.window_length, spec.window_stride)
    ranges = entity_word_ranges(tt.words, doc.entities)
    gold = {(r.head, r.tail): rel2id[r.label] for r in doc.relations}
    out: Dict[int, dict] = {}
    for h, t in candidate_pairs(doc.text, doc.entities, spec.scheme):
        wi = place_pair(windows, ranges[h], ranges[t])
        if wi is None:
            continue
        he, te = doc.entities[h], doc.entities[t]
        f = out.setdefault(wi, {"input_ids": windows[wi].input_ids, "pairs": [], "labels": [], "predicted": []})
        f["pairs"].append(pair_row(windows[wi], ranges[h], ranges[t], spec.scheme.entity_index(he.label),
                                   spec.scheme.entity_index(te.label), sentence_gap(doc.text, he, te)))
        f["labels"].append(gold.get((he.id, te.id), 0))
        f["predicted"].append(he.id.startswith("P") or te.id.startswith("P"))
    return list(out.values())


@torch.no_grad()
def cache_hidden(model: RasdModel, windows: List[dict], pad_id: int, batch: int = 32) -> None:
    """Adds each window's encoder states (fp16, [tokens, hidden]) under 'hidden'."""
    model.eval()
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]["input_ids"]))
    for b in range(0, len(order), batch):
        idx = order[b:b + batch]
        T = max(len(windows[i]["input_ids"]) for i in idx)
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            n = len(windows[i]["input_ids"])
            ids[r, :n], mask[r, :n] = torch.tensor(windows[i]["input_ids"]), 1
        _, hidden = model.encode(ids, mask)[:2]
        for r, i in enumerate(idx):
            windows[i]["hidden"] = hidden[r, :len(windows[i]["input_ids"])].to(torch.float16)


def gold_only(windows: List[dict]) -> List[dict]:
    """The same windows without the pairs that involve a predicted entity."""
    out = []
    for w in windows:
        keep = [k for k, p in enumerate(w["predicted"]) if not p]
        if keep:
            out.append({**w, "pairs": [w["pairs"][k] for k in keep], "labels": [w["labels"][k] for k in keep],
                        "predicted": [False] * len(keep)})
    return out


def _batch(windows: Sequence[dict]):
    T = max(w["hidden"].shape[0] for w in windows)
    hidden = torch.zeros((len(windows), T, windows[0]["hidden"].shape[1]))
    rows, batch_rows, labels = [], [], []
    for i, w in enumerate(windows):
        hidden[i, :w["hidden"].shape[0]] = w["hidden"].float()
        rows += w["pairs"]
        batch_rows += [i] * len(w["pairs"])
        labels += w["labels"]
    pairs = {k: torch.from_numpy(v) for k, v in stack_pairs(rows, batch_rows).items()}
    return hidden, pairs, torch.tensor(labels, dtype=torch.long)


def fit_head(model: RasdModel, windows: List[dict], args: RefitArgs) -> List[float]:
    """AdamW on the relation head only, linear decay; returns the mean loss of each epoch."""
    head = dict(model.relation_parameters())
    params = list(head.values())
    for n, p in model.named_parameters():
        p.requires_grad_(n in head)
    opt = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=0.01)
    steps = args.epochs * math.ceil(len(windows) / args.batch_windows)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / max(1, steps)))
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    losses = []
    model.train()
    for _ in range(args.epochs):
        order = list(range(len(windows)))
        rng.shuffle(order)
        total = 0.0
        for b in range(0, len(order), args.batch_windows):
            hidden, pairs, labels = _batch([windows[i] for i in order[b:b + args.batch_windows]])
            loss = torch.nn.functional.cross_entropy(model.relate(hidden, **pairs), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        losses.append(total / math.ceil(len(order) / args.batch_windows))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses


def prepare(model: RasdModel, tokenizer, train: List[Document]) -> List[dict]:
    """Pair windows of the training documents with gold and predicted entities, hidden states cached."""
    from .predict import torch_predict
    tok = tokenizer.backend_tokenizer
    specials = SpecialTokens.from_tokenizer(tok)
    docs = [with_predicted(g, p) for g, p in zip(train, torch_predict(model, tokenizer, train))]
    windows = [w for d in docs for w in pair_windows(d, tok, model, specials)]
    cache_hidden(model, windows, specials.pad_id)
    return windows


def describe(windows: List[dict]) -> dict:
    flat = [(y, p) for w in windows for y, p in zip(w["labels"], w["predicted"])]
    return {"windows": len(windows), "pairs": len(flat), "positives": sum(1 for y, _ in flat if y),
            "pairs_with_predicted_entity": sum(1 for _, p in flat if p)}


def compare(model_dir: str, corpus: str, variants: List[RefitArgs]) -> dict:
    """Dev figures of the jointly trained head and of each refit variant, all from one cached encoder pass."""
    from transformers import AutoTokenizer

    from rasd.pipeline import predict_documents
    from rasd.schema import read_documents

    from .metrics import headline, score
    from .modeling import TorchBackend
    from .robustness import CachedBackend
    model = RasdModel.from_pretrained(model_dir).eval()
    if model.config.relation_markers:  # the refit caches last hidden states only; markers need every layer's
        raise ValueError(f"{model_dir}: the relation refit does not support models with typed markers "
                         f"(model.relation_markers = {model.config.relation_markers})")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    scheme, spec = model.config.scheme_obj(), model.spec()
    train = read_documents(f"{corpus}/train.jsonl", scheme)
    dev = read_documents(f"{corpus}/dev.jsonl", scheme)
    backend = CachedBackend(TorchBackend(model))

    def dev_figures():
        backend.rels.clear()  # the head changed: only the encoder outputs may be reused
        return headline(score(dev, predict_documents(dev, tokenizer.backend_tokenizer, spec, backend), scheme=scheme))

    t0 = time.time()
    windows = prepare(model, tokenizer, train)
    out = {"model": model_dir, **describe(windows), "prepare_s": round(time.time() - t0, 1),
           "joint": dev_figures(), "variants": []}
    print(json.dumps(out), flush=True)
    initial = {k: v.detach().clone() for k, v in model.relation_parameters()}
    for a in variants:
        model.load_state_dict(initial, strict=False)
        t0 = time.time()
        losses = fit_head(model, windows if a.predicted else gold_only(windows), a)
        row = {**a.__dict__, "fit_s": round(time.time() - t0, 1), "epoch_losses": losses, "dev": dev_figures()}
        out["variants"].append(row)
        print(json.dumps(row), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.relation_refit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--epochs", type=int, nargs="+", default=[RefitArgs.epochs])
    ap.add_argument("--learning-rate", type=float, nargs="+", default=[RefitArgs.learning_rate])
    ap.add_argument("--seed", type=int, default=RefitArgs.seed)
    ap.add_argument("--out", help="write the figures here as JSON")
    args = ap.parse_args(argv)
    variants = [RefitArgs(e, lr, predicted=p, seed=args.seed)
                for e in args.epochs for lr in args.learning_rate for p in (False, True)]
    result = compare(args.model_dir, args.corpus, variants)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
