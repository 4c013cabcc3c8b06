"""Documents of the annotation scheme: the Entity/Relation/Document
dataclasses, JSONL reading and validation against a Scheme.

Everything that reads or writes documents goes through this module, so the
corpus, the training features, the evaluation and the service agree on one
definition. Labels come from a `Scheme` (rasd.scheme), never from globals:
validation checks a document against the scheme it is given, the built-in
military scheme by default.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from .scheme import Scheme, builtin_scheme
from .text import paragraph_index, span_is_word_aligned

SCORE_DECIMALS = 4  # scores are rounded when serialised, never before


def _serialise(obj) -> dict:
    out = {k: v for k, v in asdict(obj).items() if v is not None}
    if "score" in out:
        out["score"] = round(float(out["score"]), SCORE_DECIMALS)
    return out


@dataclass
class Entity:
    id: str
    start: int
    end: int
    label: str
    text: Optional[str] = None
    score: Optional[float] = None
    normalized: Optional[str] = None

    def to_dict(self) -> dict:
        return _serialise(self)


@dataclass
class Relation:
    head: str
    tail: str
    label: str
    score: Optional[float] = None

    def to_dict(self) -> dict:
        return _serialise(self)


@dataclass
class Document:
    id: str
    text: str
    entities: List[Entity] = field(default_factory=list)
    relations: List[Relation] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {"id": self.id, "text": self.text,
               "entities": [e.to_dict() for e in self.entities],
               "relations": [r.to_dict() for r in self.relations]}
        if self.meta:
            out["meta"] = self.meta
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict) -> "Document":
        """Build from a dict already checked by validate_document."""
        ents = [Entity(id=e["id"], start=e["start"], end=e["end"], label=e["label"],
                       text=e.get("text"), score=e.get("score"), normalized=e.get("normalized"))
                for e in d.get("entities", [])]
        rels = [Relation(head=r["head"], tail=r["tail"], label=r["label"], score=r.get("score"))
                for r in d.get("relations", [])]
        return cls(id=d["id"], text=d["text"], entities=ents, relations=rels, meta=d.get("meta") or {})


class SchemaError(ValueError):
    """A document that breaks the scheme; the message names file:line and ids."""


@dataclass
class Violation:
    where: str  # "file:line" or a document id
    doc_id: Optional[str]
    item: Optional[str]  # entity id or "head->tail"
    message: str

    def __str__(self) -> str:
        ids = "/".join(x for x in (self.doc_id, self.item) if x)
        return f"{self.where}{' ' + ids if ids else ''}: {self.message}"


def validate_document(d: object, where: str = "<doc>", prediction: bool = False,
                      scheme: Optional[Scheme] = None) -> List[Violation]:
    """Every way `d` breaks the scheme (empty list if none).

    prediction=True also requires `score` in 0..1 on entities and relations
    and `text` on entities, as the scheme asks of model outputs.
    """
    scheme = scheme or builtin_scheme()
    out: List[Violation] = []

    def bad(msg: str, item: Optional[str] = None) -> None:
        out.append(Violation(where, did if isinstance(did, str) else None, item, msg))

    did = d.get("id") if isinstance(d, dict) else None
    if not isinstance(d, dict):
        bad(f"expected a JSON object, got {type(d).__name__}")
        return out
    text = d.get("text")
    if not isinstance(did, str) or not did:
        bad("missing or non-string 'id'")
    if not isinstance(text, str):
        bad("missing or non-string 'text'")
        return out
    ents = d.get("entities", [])
    rels = d.get("relations", [])
    if not isinstance(ents, list):
        bad("'entities' must be a list")
        ents = []
    if not isinstance(rels, list):
        bad("'relations' must be a list")
        rels = []
    known: Dict[str, Tuple[int, int, str]] = {}
    spans = []
    for k, e in enumerate(ents):
        eid = e.get("id") if isinstance(e, dict) else None
        item = eid if isinstance(eid, str) else f"entities[{k}]"
        if not isinstance(e, dict):
            bad("entity is not an object", item)
            continue
        if not isinstance(eid, str) or not eid:
            bad("entity without a string 'id'", item)
        elif eid in known:
            bad("duplicate entity id", item)
        s, t, lab = e.get("start"), e.get("end"), e.get("label")
        if lab not in scheme.entities:
            bad(scheme.unknown_entity(lab), item)
            continue
        if not (type(s) is int and type(t) is int and 0 <= s < t <= len(text)):
            bad(f"bad offsets {s}-{t} (text has {len(text)} characters)", item)
            continue
        if "text" in e and e["text"] != text[s:t]:
            bad(f"text field {e['text']!r} != text[{s}:{t}] {text[s:t]!r}", item)
        if not span_is_word_aligned(text, s, t):
            bad(f"span {text[s:t]!r} is not word-aligned (starts/ends on punctuation or space, or cuts a word: "
                f"{text[max(0, s - 3):t + 3]!r})", item)
        if "\n" in text[s:t]:
            bad("span crosses a paragraph", item)
        if prediction:
            _check_score(e, bad, item)
            if "text" not in e:
                bad("prediction entity without 'text'", item)
        if isinstance(eid, str):
            known[eid] = (s, t, lab)
        spans.append((s, t, item))
    spans.sort()
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            bad(f"overlapping entities {a[2]} and {b[2]}")
    seen = set()
    for k, r in enumerate(rels):
        if not isinstance(r, dict):
            bad("relation is not an object", f"relations[{k}]")
            continue
        h, tl, lab = r.get("head"), r.get("tail"), r.get("label")
        item = f"{h}->{tl}"
        if lab not in scheme.relations:
            bad(scheme.unknown_relation(lab), item)
            continue
        if h not in known or tl not in known:
            bad("relation names a missing entity", item)
            continue
        if not scheme.relation_allowed(lab, known[h][2], known[tl][2]):
            bad(f"{lab} between {known[h][2]} and {known[tl][2]}", item)
        if paragraph_index(text, known[h][0]) != paragraph_index(text, known[tl][0]):
            bad("relation crosses paragraphs", item)
        if (h, tl, lab) in seen:
            bad("duplicate relation", item)
        seen.add((h, tl, lab))
        if prediction:
            _check_score(r, bad, item)
    return out


def _check_score(obj: dict, bad, item: str) -> None:
    sc = obj.get("score")
    if not isinstance(sc, (int, float)) or isinstance(sc, bool) or not 0.0 <= sc <= 1.0:
        bad(f"score {sc!r} is not a number in 0..1", item)


def iter_jsonl(path: str) -> Iterator[Tuple[int, object, Optional[str]]]:
    """Yield (line number, parsed object or None, error message or None).

    Blank lines are skipped (they are not documents); a BOM or invalid JSON
    is reported with its line number instead of stopping the read.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        yield 1, None, "file starts with a UTF-8 BOM (the scheme says no BOM)"
        raw = raw[3:]
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        yield line, None, f"not UTF-8 ({e.reason} at byte {e.start})"
        return
    for n, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), None
        except json.JSONDecodeError as e:
            yield n, None, f"bad JSON: {e.msg} at column {e.colno}"


def validate_files(paths: Iterable[str], prediction: bool = False, scheme: Optional[Scheme] = None
                   ) -> Tuple[List[Violation], int]:
    """Validate JSONL files; also duplicate document ids and texts across them.

    Returns (violations, number of documents read).
    """
    out: List[Violation] = []
    ids: Dict[str, str] = {}
    texts: Dict[str, str] = {}
    n_docs = 0
    for path in paths:
        for n, d, err in iter_jsonl(path):
            where = f"{path}:{n}"
            if err:
                out.append(Violation(where, None, None, err))
                continue
            n_docs += 1
            out += validate_document(d, where, prediction=prediction, scheme=scheme)
            if not isinstance(d, dict):
                continue
            did, text = d.get("id"), d.get("text")
            if isinstance(did, str):
                if did in ids:
                    out.append(Violation(where, did, None, f"duplicate document id (also {ids[did]})"))
                ids.setdefault(did, where)
            if isinstance(text, str):
                key = text.strip()
                if key in texts:
                    out.append(Violation(where, did if isinstance(did, str) else None, None,
                                         f"same text as {texts[key]}"))
                texts.setdefault(key, where)
    return out, n_docs


def read_documents(path: str, scheme: Optional[Scheme] = None) -> List[Document]:
    """Read a JSONL corpus file; raise SchemaError listing every violation."""
    docs, problems = [], []
    for n, d, err in iter_jsonl(path):
        where = f"{path}:{n}"
        if err:
            problems.append(Violation(where, None, None, err))
            continue
        v = validate_document(d, where, scheme=scheme)
        if v:
            problems += v
        else:
            docs.append(Document.from_dict(d))
    if problems:
        shown = "\n".join(str(p) for p in problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise SchemaError(f"{len(problems)} scheme violation(s) in {path}:\n{shown}{more}")
    return docs


def write_documents(path: str, docs: Iterable[Document]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(d.to_json() + "\n")
