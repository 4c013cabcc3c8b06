"""The annotation scheme as data: entity labels, relation labels with the
entity types they may join, and display colours.

A scheme is a small JSON (or YAML) file:

    {"name": "military", "version": "1.1",
     "entities": ["BASE", "FORCE", "OPERATION", "LOCATION"],
     "relations": {"WITHDREW_FROM": {"head": ["FORCE"], "tail": ["BASE", "LOCATION"]}, ...},
     "colors": {"BASE": "#f4a261", ...}}

Relations are numbered in the order they are written (class 0 is "no
relation"); a saved scheme also states that order as "relation_order".

The built-in military scheme (shared/ANNOTATION.md) ships as
`rasd/schemes/military.json`. A trained model carries its scheme in its
config, so validation, candidate pairs, decoding, the HTML view, the card
and the Extractor all read the labels from the scheme they are given; a
model trained on another scheme (say, one adding WEAPON and USED_IN) needs
no code change.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, FrozenSet, List, Optional, Tuple

SCHEMES_DIR = os.path.join(os.path.dirname(__file__), "schemes")
BUILTIN = "military"
NO_RELATION = "NONE"
_LABEL = re.compile(r"^[A-Z][A-Z0-9_]*$")
_FALLBACK_COLORS = ("#f4a261", "#8ecae6", "#e76f51", "#90be6d", "#cdb4db", "#ffd166", "#bde0fe", "#adb5bd")


class SchemeError(ValueError):
    """A scheme file that is malformed, or a label a scheme does not know."""


@dataclass(frozen=True)
class Scheme:
    name: str
    version: str
    entities: Tuple[str, ...]
    relations: Dict[str, Tuple[FrozenSet[str], FrozenSet[str]]]  # label -> (head types, tail types)
    colors: Dict[str, str] = field(default_factory=dict)
    description: str = ""

    # -- labels ---------------------------------------------------------------
    @property
    def relation_labels(self) -> Tuple[str, ...]:
        return tuple(self.relations)

    def bio_tags(self) -> List[str]:
        """IOB2 tag inventory: O first, then B-/I- per entity label (stable ids)."""
        tags = ["O"]
        for lab in self.entities:
            tags += [f"B-{lab}", f"I-{lab}"]
        return tags

    def entity_index(self, label: str) -> int:
        try:
            return self.entities.index(label)
        except ValueError:
            raise SchemeError(self.unknown_entity(label)) from None

    def unknown_entity(self, label: object) -> str:
        return f"unknown entity label {label!r} for scheme {self.name!r} (known: {', '.join(self.entities)})"

    def unknown_relation(self, label: object) -> str:
        return f"unknown relation {label!r} for scheme {self.name!r} (known: {', '.join(self.relation_labels)})"

    def relation_allowed(self, label: str, head_label: str, tail_label: str) -> bool:
        heads, tails = self.relations[label]
        return head_label in heads and tail_label in tails

    def pair_is_candidate(self, head_label: str, tail_label: str) -> bool:
        """Could any relation label hold from an entity of head_label to tail_label?"""
        return any(self.relation_allowed(r, head_label, tail_label) for r in self.relations)

    def color(self, label: str) -> str:
        if label in self.colors:
            return self.colors[label]
        k = self.entities.index(label) if label in self.entities else 0
        return _FALLBACK_COLORS[k % len(_FALLBACK_COLORS)]

    # -- (de)serialisation ----------------------------------------------------
    def to_dict(self) -> dict:
        # relation_order: a relation's class id is its position, and some JSON writers sort object keys
        # (transformers' config.json does), so the order is stated as a list.
        out = {"name": self.name, "version": self.version, "entities": list(self.entities),
               "relations": {k: {"head": sorted(h), "tail": sorted(t)} for k, (h, t) in self.relations.items()},
               "relation_order": list(self.relations)}
        if self.colors:
            out["colors"] = dict(self.colors)
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_dict(cls, d: object, where: str = "scheme") -> "Scheme":
        """Build and check a scheme; every problem is a SchemeError naming `where` and the field."""
        if not isinstance(d, dict):
            raise SchemeError(f"{where}: expected an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"name", "version", "entities", "relations", "relation_order", "colors",
                                   "description"})
        if unknown:
            raise SchemeError(f"{where}: unknown field(s) {', '.join(unknown)}")
        name, version = d.get("name"), d.get("version")
        if not isinstance(name, str) or not name:
            raise SchemeError(f"{where}: 'name' must be a non-empty string")
        if not isinstance(version, (str, int, float)) or isinstance(version, bool):
            raise SchemeError(f"{where}: 'version' must be a string")
        entities = _labels(d.get("entities"), f"{where}: entities")
        relations = {}
        rels = d.get("relations", {})
        if not isinstance(rels, dict):
            raise SchemeError(f"{where}: 'relations' must be an object of LABEL: {{head: [...], tail: [...]}}")
        for lab, ht in rels.items():
            here = f"{where}: relation {lab!r}"
            if not isinstance(lab, str) or not _LABEL.match(lab) or lab == NO_RELATION or lab in entities:
                raise SchemeError(f"{here}: a label is UPPER_CASE, not {NO_RELATION!r} and not an entity label")
            if not isinstance(ht, dict) or set(ht) != {"head", "tail"}:
                raise SchemeError(f"{here}: expected {{\"head\": [...], \"tail\": [...]}}")
            types = []
            for side in ("head", "tail"):
                allowed = _labels(ht[side], f"{here} {side}")
                missing = [x for x in allowed if x not in entities]
                if missing:
                    raise SchemeError(f"{here} {side}: {', '.join(missing)} not among the entities "
                                      f"{', '.join(entities)}")
                types.append(frozenset(allowed))
            relations[lab] = (types[0], types[1])
        order = d.get("relation_order")
        if order is not None:
            if not isinstance(order, list) or sorted(order) != sorted(relations):
                raise SchemeError(f"{where}: 'relation_order' must list each relation label once")
            relations = {lab: relations[lab] for lab in order}
        colors = d.get("colors", {})
        if not isinstance(colors, dict) or any(k not in entities or not isinstance(v, str) for k, v in colors.items()):
            raise SchemeError(f"{where}: 'colors' maps entity labels to CSS colours")
        return cls(name=name, version=str(version), entities=tuple(entities), relations=relations,
                   colors=dict(colors), description=str(d.get("description", "")))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1)


def _labels(values: object, where: str) -> List[str]:
    if not isinstance(values, list) or not values:
        raise SchemeError(f"{where}: expected a non-empty list of labels")
    for v in values:
        if not isinstance(v, str) or not _LABEL.match(v):
            raise SchemeError(f"{where}: label {v!r} must be UPPER_CASE letters, digits and _")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise SchemeError(f"{where}: duplicate label(s) {', '.join(dup)}")
    return list(values)


def load_scheme(path_or_name: Optional[str] = None) -> Scheme:
    """A scheme from a .json/.yaml file, or a built-in one by name (default: military)."""
    if path_or_name is None or path_or_name == BUILTIN:
        return builtin_scheme()
    if not os.path.isfile(path_or_name):
        builtin = os.path.join(SCHEMES_DIR, f"{path_or_name}.json")
        if os.path.isfile(builtin):
            return _read(builtin)
        raise SchemeError(f"scheme file not found: {path_or_name} (built-in schemes: "
                          f"{', '.join(sorted(n[:-5] for n in os.listdir(SCHEMES_DIR)))})")
    return _read(path_or_name)


def _read(path: str) -> Scheme:
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise SchemeError(f"{path}: reading a YAML scheme needs PyYAML (pip install pyyaml), "
                              f"or write the scheme as JSON") from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise SchemeError(f"{path}: not valid YAML: {e}") from None
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise SchemeError(f"{path}: not valid JSON: {e.msg} at line {e.lineno}") from None
    return Scheme.from_dict(data, where=path)


@lru_cache(maxsize=1)
def builtin_scheme() -> Scheme:
    """The military scheme of shared/ANNOTATION.md, from the packaged JSON file."""
    return _read(os.path.join(SCHEMES_DIR, f"{BUILTIN}.json"))
