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
from dataclasses import dataclass
from typing import Dict, Optional

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

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> "Calibration":
        d = d or {}
        unknown = set(d) - {"entities", "relations"}
        if unknown:
            raise ValueError(f"calibration: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**{k: Platt(**v) for k, v in d.items()})
