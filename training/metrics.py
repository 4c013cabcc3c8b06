"""Scoring as the scheme defines it: strict and partial entity and relation
P/R/F1 (micro and per label), seqeval IOB2 over words, and a word-level
label confusion matrix. Pure Python: the export gate and the benchmark use
it on ONNX predictions too.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Optional, Sequence, Set, Tuple

from rasd.align import spans_to_word_tags
from rasd.scheme import Scheme, builtin_scheme
from rasd.schema import Document
from rasd.text import split_words


def prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "pred": n_pred,
            "gold": n_gold}


def _overlap(a: Tuple[int, int], b: Tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def match_entities(gold, pred, strict: bool) -> Dict[int, int]:
    """pred index -> gold index; each gold and each prediction used at most once.

    Strict: equal start, end and label. Partial: equal label and overlapping
    spans, pairing the largest overlaps first.
    """
    if strict:
        where = {(g.start, g.end, g.label): i for i, g in enumerate(gold)}
        return {j: where[(p.start, p.end, p.label)] for j, p in enumerate(pred) if (p.start, p.end, p.label) in where}
    cands = sorted(((_overlap((g.start, g.end), (p.start, p.end)), i, j) for i, g in enumerate(gold)
                    for j, p in enumerate(pred) if g.label == p.label
                    and _overlap((g.start, g.end), (p.start, p.end)) > 0), reverse=True)
    used_g, out = set(), {}
    for _, i, j in cands:
        if i not in used_g and j not in out:
            used_g.add(i)
            out[j] = i
    return out


def match_relations(gold: Document, pred: Document, entity_match: Dict[int, int]) -> Set[int]:
    """Indices of the gold relations that a predicted relation matches: same label, and its head and tail matched
    (entity_match: predicted entity index -> gold entity index) to the gold relation's. Each prediction matches at
    most one gold relation, each gold relation at most one prediction. Scoring and the error analysis share it."""
    gid = {e.id: i for i, e in enumerate(gold.entities)}
    pid = {e.id: j for j, e in enumerate(pred.entities)}
    unmatched: Dict[tuple, List[int]] = {}
    for k, r in enumerate(gold.relations):
        unmatched.setdefault((gid[r.head], gid[r.tail], r.label), []).append(k)
    found = set()
    for r in pred.relations:
        waiting = unmatched.get((entity_match.get(pid[r.head]), entity_match.get(pid[r.tail]), r.label))
        if waiting:
            found.add(waiting.pop(0))
    return found


def score(gold_docs: Sequence[Document], pred_docs: Sequence[Document],
          scheme: Optional[Scheme] = None) -> dict:
    """Strict and partial P/R/F1 per label of `scheme` (the built-in one by default), seqeval and confusion."""
    scheme = scheme or builtin_scheme()
    labels, relation_labels = scheme.entities, scheme.relation_labels
    if len(gold_docs) != len(pred_docs):
        raise ValueError(f"{len(gold_docs)} gold documents but {len(pred_docs)} predictions")
    out = {}
    for mode in ("strict", "partial"):
        ent_tp, ent_pred, ent_gold = Counter(), Counter(), Counter()
        rel_tp, rel_pred, rel_gold = Counter(), Counter(), Counter()
        for g, p in zip(gold_docs, pred_docs):
            if g.text != p.text:
                raise ValueError(f"prediction for {g.id} is for a different text")
            m = match_entities(g.entities, p.entities, strict=(mode == "strict"))
            for e in g.entities:
                ent_gold[e.label] += 1
            for j, e in enumerate(p.entities):
                ent_pred[e.label] += 1
                if j in m:
                    ent_tp[e.label] += 1
            rel_gold.update(r.label for r in g.relations)
            rel_pred.update(r.label for r in p.relations)
            rel_tp.update(g.relations[k].label for k in match_relations(g, p, m))
        out[mode] = {
            "entities": {"micro": prf(sum(ent_tp.values()), sum(ent_pred.values()), sum(ent_gold.values())),
                         **{lab: prf(ent_tp[lab], ent_pred[lab], ent_gold[lab]) for lab in labels}},
            "relations": {"micro": prf(sum(rel_tp.values()), sum(rel_pred.values()), sum(rel_gold.values())),
                          **{lab: prf(rel_tp[lab], rel_pred[lab], rel_gold[lab]) for lab in relation_labels}},
        }
    out["seqeval"] = seqeval_report(gold_docs, pred_docs)
    out["confusion"] = word_confusion(gold_docs, pred_docs, labels)
    out["documents"] = len(gold_docs)
    return out


def word_tags(doc: Document) -> List[str]:
    return spans_to_word_tags(split_words(doc.text), doc.entities)


def seqeval_report(gold_docs, pred_docs) -> dict:
    """seqeval strict IOB2 over word tokens (for comparison with published NER)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2
    y_true = [word_tags(d) for d in gold_docs]
    y_pred = [word_tags(d) for d in pred_docs]
    rep = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    return {k: {m: round(float(v), 4) for m, v in vals.items()} for k, vals in rep.items()}


def word_confusion(gold_docs, pred_docs, labels: Sequence[str]) -> dict:
    """Counts of (gold label, predicted label) per word, 'O' included."""
    names = list(labels) + ["O"]
    mat = {g: {p: 0 for p in names} for g in names}
    for g, p in zip(gold_docs, pred_docs):
        for tg, tp in zip(word_tags(g), word_tags(p)):
            mat[tg.split("-", 1)[-1]][tp.split("-", 1)[-1]] += 1
    return {"labels": names, "matrix": [[mat[g][p] for p in names] for g in names]}


def headline(metrics: dict) -> Dict[str, float]:
    """The few numbers people quote."""
    return {"entity_f1": metrics["strict"]["entities"]["micro"]["f1"],
            "entity_f1_partial": metrics["partial"]["entities"]["micro"]["f1"],
            "relation_f1": metrics["strict"]["relations"]["micro"]["f1"],
            "relation_f1_partial": metrics["partial"]["relations"]["micro"]["f1"]}


def plot_confusion(conf: dict, path: str, title: str = "entity labels per word") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names, mat = conf["labels"], conf["matrix"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow([[v ** 0.5 for v in row] for row in mat], cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i, row in enumerate(mat):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
