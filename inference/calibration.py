"""Score calibration: a monotone map from a raw score to the probability that the prediction is right.

Platt scaling, p' = sigmoid(a * logit(p) + b), one map for entity scores and
one for relation scores, fitted on dev after training (rasd_train.calibration)
and carried in the model's config. With a > 0 the map keeps the order of
scores, so it changes no decision and no F1, only what a score means: after
calibration a threshold of 0.8 keeps predictions that are right about 80% of
the time. The identity (a=1, b=0) is what a model without calibration uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

from .schema import Document

_EPS = 1e-6


@dataclass(frozen=True)
class Platt:
    a: float = 1.0
    b: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a <= 0:
            raise ValueError(f"calibration needs a finite a > 0 and a finite b, got a={self.a}, b={self.b}")

    def __call__(self, p: float) -> float:
        if self.a == 1.0 and self.b == 0.0:
            return p
        p = min(max(p, _EPS), 1 - _EPS)
        z = self.a * math.log(p / (1 - p)) + self.b
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b}


IDENTITY = Platt()


@dataclass(frozen=True)
class Calibration:
    entities: Platt = IDENTITY
    relations: Platt = IDENTITY

    def to_dict(self) -> Dict[str, dict]:
        return {"entities": self.entities.to_dict(), "relations": self.relations.to_dict()}

    def applied_to(self, docs: Sequence[Document]) -> List[Document]:
        """Copies of predicted documents with every score mapped, as the pipeline maps them: the same documents a
        model carrying these maps would predict, without predicting again."""
        def mapped(platt, x):
            return replace(x, score=platt(x.score)) if x.score is not None else x
        return [replace(d, entities=[mapped(self.entities, e) for e in d.entities],
                        relations=[mapped(self.relations, r) for r in d.relations], meta=dict(d.meta))
                for d in docs]

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "Calibration":
        d = d or {}
        unknown = set(d) - {"entities", "relations"}
        if unknown:
            raise ValueError(f"calibration: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**{k: Platt(**v) for k, v in d.items()})
