"""Do scores mean something? Precision/recall at score thresholds, and calibration.

An analyst who keeps only predictions scoring at least t wants to know the
precision and recall that buys (the model card's threshold table), and that a
score of 0.8 is right about 80% of the time (expected calibration error over
equal-width score bins, and the bins themselves for a reliability diagram).
A prediction is correct when it matches a gold one strictly, as in scoring.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

from rasd.calibration import IDENTITY, Calibration, Platt
from rasd.pipeline import apply_thresholds
from rasd.schema import Document

from .metrics import match_entities, score

THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def threshold_table(gold: Sequence[Document], pred: Sequence[Document], scheme=None,
                    thresholds: Sequence[float] = THRESHOLDS) -> List[dict]:
    """Strict micro P/R/F1 of entities and relations when predictions under t are dropped
    (the same thresholds for entities and relations, applied as the Extractor applies them)."""
    rows = []
    for t in thresholds:
        m = score(gold, [apply_thresholds(d, t, t) for d in pred], scheme=scheme)["strict"]
        rows.append({"threshold": t, "entities": m["entities"]["micro"], "relations": m["relations"]["micro"]})
    return rows


def scored_outcomes(gold: Sequence[Document], pred: Sequence[Document]) -> Dict[str, List[Tuple[float, bool]]]:
    """(score, correct) of every predicted entity and relation."""
    out: Dict[str, List[Tuple[float, bool]]] = {"entities": [], "relations": []}
    for g, p in zip(gold, pred):
        m = match_entities(g.entities, p.entities, strict=True)
        for j, e in enumerate(p.entities):
            out["entities"].append((e.score, j in m))
        gid = {e.id: i for i, e in enumerate(g.entities)}
        pid = {e.id: j for j, e in enumerate(p.entities)}
        gold_rel = {(gid[r.head], gid[r.tail], r.label) for r in g.relations}
        for r in p.relations:
            key = (m.get(pid[r.head]), m.get(pid[r.tail]), r.label)
            out["relations"].append((r.score, key in gold_rel))
    return out


def calibration(outcomes: Sequence[Tuple[float, bool]], bins: int = 10) -> dict:
    """Expected calibration error and the reliability bins (mean score vs accuracy per score bin)."""
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(s, c) for s, c in outcomes if lo <= s < hi or (b == bins - 1 and s == 1.0)]
        if inside:
            table.append({"bin": [round(lo, 2), round(hi, 2)], "count": len(inside),
                          "mean_score": round(sum(s for s, _ in inside) / len(inside), 4),
                          "accuracy": round(sum(c for _, c in inside) / len(inside), 4)})
    n = len(outcomes)
    ece = sum(r["count"] / n * abs(r["mean_score"] - r["accuracy"]) for r in table) if n else 0.0
    return {"ece": round(ece, 4), "predictions": n, "bins": table}


def report(gold: Sequence[Document], pred: Sequence[Document], scheme=None) -> dict:
    outcomes = scored_outcomes(gold, pred)
    return {"thresholds": threshold_table(gold, pred, scheme),
            "calibration": {k: calibration(v) for k, v in outcomes.items()}}


def fit_platt(outcomes: Sequence[Tuple[float, bool]], min_count: int = 50, iterations: int = 50) -> Platt:
    """The Platt map (a, b) that maximises the likelihood of `outcomes` (score, correct); Newton's method.

    Too few predictions, or only right (or only wrong) ones, cannot say
    what a score means: the identity is kept then.
    """
    if len(outcomes) < min_count or len({c for _, c in outcomes}) < 2:
        return IDENTITY
    s = np.clip(np.array([o[0] for o in outcomes], dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.array([float(o[1]) for o in outcomes])
    x = np.stack([np.log(s / (1 - s)), np.ones_like(s)], axis=1)

    def nll(w):
        z = x @ w
        return float(np.sum(np.logaddexp(0.0, z) - y * z))  # stable log(1 + e^z) - y z

    w = np.array([1.0, 0.0])
    for _ in range(iterations):
        p = 0.5 * (1 + np.tanh(0.5 * (x @ w)))  # sigmoid without overflow
        grad = x.T @ (p - y)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-6 * np.eye(2)  # ridge keeps it invertible
        step = np.linalg.solve(hess, grad)
        t, before = 1.0, nll(w)
        while nll(w - t * step) > before and t > 1e-8:  # backtracking: Newton may overshoot far from the optimum
            t /= 2
        w = w - t * step
        if np.abs(t * step).max() < 1e-8:
            break
    a, b = float(w[0]), float(w[1])
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
        return IDENTITY  # a non-increasing map would reorder scores: keep the raw ones
    return Platt(a, b)


def fit_calibration(gold: Sequence[Document], pred: Sequence[Document]) -> Calibration:
    """Entity and relation maps fitted on predictions made with raw scores (dev)."""
    outcomes = scored_outcomes(gold, pred)
    return Calibration(entities=fit_platt(outcomes["entities"]), relations=fit_platt(outcomes["relations"]))


__all__ = ["THRESHOLDS", "calibration", "fit_calibration", "fit_platt", "report", "scored_outcomes",
           "threshold_table"]
