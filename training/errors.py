"""Where a model's errors come from: the error categories of issue 11, counted on gold and predicted documents.

    python -m rasd_train.errors --gold data/corpus/dev.jsonl --pred predictions.jsonl [--out errors.json]
    python -m rasd_train.errors --gold data/corpus/dev.jsonl --model runs/me5-small/model

F1 says how much is wrong; this says what, so a change can be aimed and its effect checked:

- every gold name is found exactly, found with the wrong boundaries (a prediction of its label overlaps it), with
  the wrong label (same span), with both wrong, or missed; and these outcomes by the name's length in words;
- every prediction that overlaps no gold name is spurious; those that fall on a marked look-alike
  (`meta.lookalikes`: persons with ranks, news agencies, ministries...) are counted by the look-alike's kind;
- every gold relation missed is lost to its entities (head or tail not found exactly) or to the classifier (both
  found exactly; ANNOTATION.md keeps a relation inside one paragraph, so none is out of reach by design).

`--pred` takes what `rasd predict` writes, so ONNX and INT8 output can be analysed without torch. Documents are
paired by id; a prediction file that lacks a gold document, or is for a different text, is an error.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Dict, List, Sequence

from rasd.scheme import load_scheme
from rasd.schema import Document, Entity, read_documents
from rasd.text import is_word_char, split_words

from .metrics import _overlap, match_entities, match_relations

LENGTH_BINS = ("1", "2", "3", "4+")


def _overlaps(a: Entity, b: Entity) -> bool:
    return _overlap((a.start, a.end), (b.start, b.end)) > 0


def word_count(text: str, e: Entity) -> int:
    """Words of the name (punctuation inside a name is not a word)."""
    return sum(1 for s, t in split_words(text[e.start:e.end]) if is_word_char(text[e.start + s]))


def _length_bin(n: int) -> str:
    return LENGTH_BINS[max(1, min(n, 4)) - 1]


def gold_entity_outcome(g: Entity, preds: Sequence[Entity]) -> str:
    """exact, label (same span, other label), boundary (overlapped by its label), boundary+label, or missed."""
    same_span = [p for p in preds if (p.start, p.end) == (g.start, g.end)]
    if any(p.label == g.label for p in same_span):
        return "exact"
    if same_span:
        return "label"
    overlapping = [p for p in preds if _overlaps(p, g)]
    if any(p.label == g.label for p in overlapping):
        return "boundary"
    return "boundary+label" if overlapping else "missed"


def analyse(gold_docs: Sequence[Document], pred_docs: Sequence[Document]) -> dict:
    """The counts of every category (see the module docstring); predictions are paired with gold by document id."""
    gold_out, by_len, by_len_total = Counter(), Counter(), Counter()
    outcome_by_len = {b: Counter() for b in LENGTH_BINS}
    spurious, looks, looks_tagged, looks_label = Counter(), Counter(), Counter(), Counter()
    rel_out = Counter()
    for g, p in zip(gold_docs, _paired(gold_docs, pred_docs)):
        for e in g.entities:
            outcome = gold_entity_outcome(e, p.entities)
            gold_out[outcome] += 1
            b = _length_bin(word_count(g.text, e))
            by_len_total[b] += 1
            by_len[b] += outcome != "exact"
            outcome_by_len[b][outcome] += 1
        lookalikes = [Entity("", x["start"], x["end"], x["kind"]) for x in (g.meta or {}).get("lookalikes", [])]
        strict = match_entities(g.entities, p.entities, strict=True)
        for e in p.entities:
            if any(_overlaps(e, x) for x in g.entities):
                continue
            on = [x.label for x in lookalikes if _overlaps(e, x)]
            spurious[f"look-alike {on[0]}" if on else "elsewhere"] += 1
        for x in lookalikes:
            looks[x.label] += 1
            hits = [e.label for j, e in enumerate(p.entities) if j not in strict and _overlaps(e, x)]
            if hits:
                looks_tagged[x.label] += 1
                looks_label[f"{x.label} as {hits[0]}"] += 1
        rel_out.update(_relation_outcomes(g, p, strict))
    return {
        "documents": len(gold_docs),
        "gold_entities": dict(gold_out),
        "not_exact_by_words": {b: {"gold": by_len_total[b], "not_exact": by_len[b],
                                   "share": round(by_len[b] / by_len_total[b], 4) if by_len_total[b] else None}
                               for b in LENGTH_BINS},
        "outcomes_by_words": {b: dict(c) for b, c in outcome_by_len.items()},
        "spurious_predictions": dict(spurious),
        "lookalikes": {k: {"marked": looks[k], "tagged": looks_tagged[k], "share": round(looks_tagged[k] / looks[k], 4)}
                       for k in sorted(looks)},
        "lookalikes_tagged_as": dict(looks_label),
        "gold_relations": dict(rel_out),
    }


def _relation_outcomes(g: Document, p: Document, strict: Dict[int, int]) -> Counter:
    """Each gold relation: found, lost to its entities, or lost to the classifier."""
    found_gold = set(strict.values())  # gold entity indices with an exact prediction
    gid = {e.id: i for i, e in enumerate(g.entities)}
    matched = match_relations(g, p, strict)
    out = Counter()
    for k, r in enumerate(g.relations):
        if k in matched:
            out["found"] += 1
        elif gid[r.head] not in found_gold or gid[r.tail] not in found_gold:
            out["missed: head or tail not found exactly"] += 1
        else:
            out["missed: classifier"] += 1
    return out


def _paired(gold_docs: Sequence[Document], pred_docs: Sequence[Document]) -> List[Document]:
    by_id = {d.id: d for d in pred_docs}
    out = []
    for g in gold_docs:
        if g.id not in by_id:
            raise ValueError(f"no prediction for gold document {g.id!r}")
        if by_id[g.id].text != g.text:
            raise ValueError(f"the prediction for {g.id!r} is for a different text")
        out.append(by_id[g.id])
    return out


def _predict(model_dir: str, docs: List[Document]) -> List[Document]:
    from transformers import AutoTokenizer

    from .modeling import RasdModel
    from .predict import torch_predict
    return torch_predict(RasdModel.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir), docs)


def format_report(r: dict) -> str:
    lines = [f"{r['documents']} documents"]
    n = sum(r["gold_entities"].values())
    lines.append("gold names: " + ", ".join(f"{k} {v} ({v / n:.1%})" for k, v in sorted(r["gold_entities"].items())))
    lines.append("not found exactly, by words: " + ", ".join(
        f"{b}: {v['not_exact']}/{v['gold']}" + (f" ({v['share']:.1%})" if v["gold"] else "")
        for b, v in r["not_exact_by_words"].items()))
    lines.append("predictions on no gold name: " +
                 ", ".join(f"{k} {v}" for k, v in sorted(r["spurious_predictions"].items())))
    lines.append("look-alikes tagged: " +
                 ", ".join(f"{k} {v['tagged']}/{v['marked']}" for k, v in r["lookalikes"].items()))
    lines.append("gold relations: " + ", ".join(f"{k} {v}" for k, v in sorted(r["gold_relations"].items())))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.errors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gold", required=True, help="gold JSONL (with meta.lookalikes where the corpus marks them)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pred", help="predictions JSONL, as `rasd predict` writes it")
    src.add_argument("--model", help="a trained model folder: predict the gold texts with it (needs torch)")
    ap.add_argument("--scheme", default=None, help="scheme JSON/YAML file or built-in name (default: military)")
    ap.add_argument("--out", help="write the counts here as JSON")
    args = ap.parse_args(argv)
    scheme = load_scheme(args.scheme)
    gold = read_documents(args.gold, scheme)
    pred = read_documents(args.pred, scheme) if args.pred else _predict(args.model, gold)
    report = analyse(gold, pred)
    print(format_report(report))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
