"""Corpus authoring format -> scheme JSONL.

Documents are written by people (and helpers) in a light inline markup, so
nobody counts character offsets by hand; this module computes the offsets,
checks every rule that code can check, and builds the split files.

    ### id=mali-2021-kidal-01 theater=mali event=mali-2021-kidal date=2021-10-13 style=wire
    سلّمت [[قوة برخان|FORCE|f1]] الفرنسية [[قاعدة كيدال|BASE|b1]] إلى [[الجيش المالي|FORCE|f2]].
    @ b1 HANDED_TO f2
    @ f1 WITHDREW_FROM b1

Each text line is one paragraph (joined with '\\n'); blank lines and lines
starting with '//' are ignored. `[[surface|LABEL]]` marks an entity; a third
field names it for `@ head RELATION tail` lines. `{{surface|KIND}}` marks a
look-alike that is deliberately *not* an entity (a ranked person, a news
agency, a ministry that only comments, a bare القاعدة): it becomes plain
text, and its offsets go to `meta.lookalikes`, so the corpus can count them
and a model can be measured on them.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from rasd.scheme import Scheme, SchemeError, builtin_scheme, load_scheme
from rasd.schema import Document, Entity, Relation, validate_document, write_documents
from rasd.text import span_is_word_aligned
from rasd.texture import format_texture, texture

_MARK = re.compile(r"\[\[([^\[\]|]+)\|([A-Z_]+)(?:\|([^\[\]|]+))?\]\]"
                   r"|\{\{([^{}|]+)\|([A-Z_]+)\}\}")
SPLITS = ("train", "dev", "test")
LOOKALIKE_KINDS = ("PERSON", "AGENCY", "MINISTRY", "BARE", "OTHER")
SPELLINGS = ("standard", "nonstandard", "diacritized", "partial-diacritics")


class MarkupError(ValueError):
    pass


def _parse_header(line: str, where: str) -> dict:
    meta = {}
    for part in line[3:].split():
        if "=" not in part:
            raise MarkupError(f"{where}: header field {part!r} is not key=value")
        k, v = part.split("=", 1)
        meta[k] = v.replace("_", " ") if k == "source" else v
    if "id" not in meta:
        raise MarkupError(f"{where}: header without id=")
    if meta.get("spelling", "standard") not in SPELLINGS:
        raise MarkupError(f"{where}: spelling={meta['spelling']} is not one of {', '.join(SPELLINGS)}")
    return meta


def _convert_paragraph(line: str, offset: int, where: str, ents: List[Entity], keys: Dict[str, str],
                       lookalikes: List[dict], scheme: Scheme) -> str:
    out, pos = [], 0
    for m in _MARK.finditer(line):
        out.append(line[pos:m.start()])
        start = offset + sum(len(x) for x in out)
        if m.group(4) is not None:
            surface = _lookalike(m, where)
            lookalikes.append({"start": start, "end": start + len(surface), "kind": m.group(5)})
        else:
            surface = _entity(m, where, start, ents, keys, scheme)
        out.append(surface)
        pos = m.end()
    out.append(line[pos:])
    text = "".join(out)
    if "[[" in text or "]]" in text or "{{" in text or "}}" in text:
        raise MarkupError(f"{where}: unbalanced or malformed [[...]] or {{{{...}}}} markup: {text[:80]!r}")
    return text


def _entity(m: re.Match, where: str, start: int, ents: List[Entity], keys: Dict[str, str], scheme: Scheme) -> str:
    surface, label, key = m.group(1), m.group(2), m.group(3)
    if label not in scheme.entities:
        raise MarkupError(f"{where}: {scheme.unknown_entity(label)} in {m.group(0)!r}")
    if surface != surface.strip():
        raise MarkupError(f"{where}: space inside the brackets of {m.group(0)!r}")
    eid = f"T{len(ents) + 1}"
    ents.append(Entity(id=eid, start=start, end=start + len(surface), label=label))
    if key:
        if key in keys:
            raise MarkupError(f"{where}: entity key {key!r} used twice")
        keys[key] = eid
    return surface


def _lookalike(m: re.Match, where: str) -> str:
    surface, kind = m.group(4), m.group(5)
    if kind not in LOOKALIKE_KINDS:
        raise MarkupError(f"{where}: unknown look-alike kind {kind!r} in {m.group(0)!r} "
                          f"(known: {', '.join(LOOKALIKE_KINDS)})")
    if surface != surface.strip():
        raise MarkupError(f"{where}: space inside the braces of {m.group(0)!r}")
    return surface


@dataclass
class _Draft:
    """A document while its lines are being read."""
    meta: dict
    where: str
    scheme: Scheme
    paragraphs: List[str] = field(default_factory=list)
    entities: List[Entity] = field(default_factory=list)
    keys: Dict[str, str] = field(default_factory=dict)
    relation_lines: List[tuple] = field(default_factory=list)
    lookalikes: List[dict] = field(default_factory=list)

    def add_paragraph(self, line: str, where: str) -> None:
        offset = sum(len(p) + 1 for p in self.paragraphs)
        self.paragraphs.append(_convert_paragraph(line, offset, where, self.entities, self.keys, self.lookalikes,
                                                  self.scheme))

    def finish(self) -> Document:
        relations = []
        for rwhere, h, lab, t in self.relation_lines:
            if h not in self.keys or t not in self.keys:
                raise MarkupError(f"{rwhere}: relation names an unknown key ({h!r} or {t!r})")
            relations.append(Relation(head=self.keys[h], tail=self.keys[t], label=lab))
        meta = dict(self.meta)
        did = meta.pop("id")
        if self.lookalikes:
            meta["lookalikes"] = self.lookalikes
        doc = Document(id=did, text="\n".join(self.paragraphs), entities=self.entities, relations=relations,
                       meta=meta)
        problems = validate_document(doc.to_dict(), self.where, scheme=self.scheme)
        for la in self.lookalikes:
            if not span_is_word_aligned(doc.text, la["start"], la["end"]):
                raise MarkupError(f"{self.where}: look-alike {doc.text[la['start']:la['end']]!r} is not "
                                  f"word-aligned")
        if problems:
            raise MarkupError("\n".join(str(p) for p in problems))
        return doc


def parse_markup(path: str, scheme: Optional[Scheme] = None) -> List[Document]:
    """Parse one markup file into documents (labels of `scheme`, the built-in one by default),
    raising MarkupError on the first bad line."""
    scheme = scheme or builtin_scheme()
    docs: List[Document] = []
    draft = None
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n").strip()
            where = f"{path}:{n}"
            if not line or line.startswith("//"):
                continue
            if line.startswith("###"):
                if draft is not None:
                    docs.append(draft.finish())
                draft = _Draft(meta=_parse_header(line, where), where=where, scheme=scheme)
            elif draft is None:
                raise MarkupError(f"{where}: text before the first ### header")
            elif line.startswith("@"):
                parts = line[1:].split()
                if len(parts) != 3 or parts[1] not in scheme.relations:
                    raise MarkupError(f"{where}: relation line must be '@ head {'|'.join(scheme.relations)} tail'")
                draft.relation_lines.append((where, parts[0], parts[1], parts[2]))
            else:
                draft.add_paragraph(line, where)
    if draft is not None:
        docs.append(draft.finish())
    return docs


def read_split_map(path: str) -> Dict[str, str]:
    """`event split` or `theater=NAME split` per line; events not listed (nor their theatre) go to train."""
    mapping = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                event, split = line.split()
                if split not in SPLITS:
                    raise MarkupError(f"{path}:{n}: unknown split {split!r}")
                mapping[event] = split
    return mapping


def build(sources: List[str], split_map: Dict[str, str], out_dir: str, scheme: Optional[Scheme] = None
          ) -> Dict[str, List[Document]]:
    by_split: Dict[str, List[Document]] = {s: [] for s in SPLITS}
    seen: Dict[str, str] = {}
    for path in sources:
        for doc in parse_markup(path, scheme):
            if doc.id in seen:
                raise MarkupError(f"{path}: document id {doc.id} also in {seen[doc.id]}")
            seen[doc.id] = path
            event = doc.meta.get("event")
            if not event:
                raise MarkupError(f"{path}: document {doc.id} has no event= (needed to split by event)")
            theater_split = split_map.get(f"theater={doc.meta.get('theater')}")
            by_split[split_map.get(event, theater_split or "train")].append(doc)
    os.makedirs(out_dir, exist_ok=True)
    for split, docs in by_split.items():
        write_documents(os.path.join(out_dir, f"{split}.jsonl"), docs)
    return by_split


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="parse markup files and print counts")
    c.add_argument("files", nargs="+")
    b = sub.add_parser("build", help="build data/corpus/{train,dev,test}.jsonl from data/sources")
    b.add_argument("--sources", default="data/sources")
    b.add_argument("--out", default="data/corpus")
    for p in (c, b):
        p.add_argument("--scheme", default=None, help="scheme file or built-in name (default: military)")
    args = ap.parse_args(argv)
    try:
        scheme = load_scheme(args.scheme)
        if args.cmd == "check":
            for path in args.files:
                docs = parse_markup(path, scheme)
                c = Counter(e.label for d in docs for e in d.entities)
                r = Counter(x.label for d in docs for x in d.relations)
                words = sum(len(d.text.split()) for d in docs)
                print(f"{path}: docs={len(docs)} words={words} " +
                      " ".join(f"{k}={v}" for k, v in sorted((c + r).items())))
                print(f"  texture: {format_texture(texture(docs))}")
        else:
            files = sorted(glob.glob(os.path.join(args.sources, "*.txt")))
            split_map = read_split_map(os.path.join(args.sources, "splits.tsv"))
            out = build(files, split_map, args.out, scheme)
            for s, docs in out.items():
                print(f"{s}: {len(docs)} documents")
    except (MarkupError, SchemeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def build_main(argv=None) -> int:
    """`rasd build-corpus [--sources DIR] [--out DIR]`."""
    return main(["build", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main())
