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
field names it for `@ head RELATION tail` lines.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
from collections import Counter
from typing import Dict, List

from rasd.schema import (ENTITY_LABELS, RELATION_TYPES, Document, Entity, Relation, validate_document,
                         write_documents)

_MARK = re.compile(r"\[\[([^\[\]|]+)\|([A-Z_]+)(?:\|([^\[\]|]+))?\]\]")
SPLITS = ("train", "dev", "test")


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
    return meta


def _convert_paragraph(line: str, offset: int, where: str, ents: List[Entity], keys: Dict[str, str]) -> str:
    out, pos = [], 0
    for m in _MARK.finditer(line):
        out.append(line[pos:m.start()])
        surface, label, key = m.group(1), m.group(2), m.group(3)
        if label not in ENTITY_LABELS:
            raise MarkupError(f"{where}: unknown label {label!r} in {m.group(0)!r}")
        if surface != surface.strip():
            raise MarkupError(f"{where}: space inside the brackets of {m.group(0)!r}")
        start = offset + sum(len(x) for x in out)
        eid = f"T{len(ents) + 1}"
        ents.append(Entity(id=eid, start=start, end=start + len(surface), label=label))
        if key:
            if key in keys:
                raise MarkupError(f"{where}: entity key {key!r} used twice")
            keys[key] = eid
        out.append(surface)
        pos = m.end()
    out.append(line[pos:])
    text = "".join(out)
    if "[[" in text or "]]" in text:
        raise MarkupError(f"{where}: unbalanced or malformed [[...]] markup: {text[:80]!r}")
    return text


def parse_markup(path: str) -> List[Document]:
    """Parse one markup file into documents, raising MarkupError on the first bad line."""
    docs: List[Document] = []
    cur = None  # (meta, paragraphs, ents, keys, rel lines)

    def finish():
        if cur is None:
            return
        meta, paras, ents, keys, rels, where = cur
        text = "\n".join(paras)
        relations = []
        for rwhere, h, lab, t in rels:
            if h not in keys or t not in keys:
                raise MarkupError(f"{rwhere}: relation names an unknown key ({h!r} or {t!r})")
            relations.append(Relation(head=keys[h], tail=keys[t], label=lab))
        did = meta.pop("id")
        doc = Document(id=did, text=text, entities=ents, relations=relations, meta=meta)
        problems = validate_document(doc.to_dict(), where)
        if problems:
            raise MarkupError("\n".join(str(p) for p in problems))
        docs.append(doc)

    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n").strip()
            where = f"{path}:{n}"
            if not line or line.startswith("//"):
                continue
            if line.startswith("###"):
                finish()
                cur = (_parse_header(line, where), [], [], {}, [], where)
            elif cur is None:
                raise MarkupError(f"{where}: text before the first ### header")
            elif line.startswith("@"):
                parts = line[1:].split()
                if len(parts) != 3 or parts[1] not in RELATION_TYPES:
                    raise MarkupError(f"{where}: relation line must be '@ head {'|'.join(RELATION_TYPES)} tail'")
                cur[4].append((where, parts[0], parts[1], parts[2]))
            else:
                offset = sum(len(p) + 1 for p in cur[1])
                cur[1].append(_convert_paragraph(line, offset, where, cur[2], cur[3]))
    finish()
    return docs


def read_split_map(path: str) -> Dict[str, str]:
    """`event split` per line; events not listed go to train."""
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


def build(sources: List[str], split_map: Dict[str, str], out_dir: str) -> Dict[str, List[Document]]:
    by_split: Dict[str, List[Document]] = {s: [] for s in SPLITS}
    seen: Dict[str, str] = {}
    for path in sources:
        for doc in parse_markup(path):
            if doc.id in seen:
                raise MarkupError(f"{path}: document id {doc.id} also in {seen[doc.id]}")
            seen[doc.id] = path
            event = doc.meta.get("event")
            if not event:
                raise MarkupError(f"{path}: document {doc.id} has no event= (needed to split by event)")
            by_split[split_map.get(event, "train")].append(doc)
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
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            for path in args.files:
                docs = parse_markup(path)
                c = Counter(e.label for d in docs for e in d.entities)
                r = Counter(x.label for d in docs for x in d.relations)
                words = sum(len(d.text.split()) for d in docs)
                print(f"{path}: docs={len(docs)} words={words} " +
                      " ".join(f"{k}={v}" for k, v in sorted((c + r).items())))
        else:
            files = sorted(glob.glob(os.path.join(args.sources, "*.txt")))
            split_map = read_split_map(os.path.join(args.sources, "splits.tsv"))
            out = build(files, split_map, args.out)
            for s, docs in out.items():
                print(f"{s}: {len(docs)} documents")
    except MarkupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def build_main(argv=None) -> int:
    """`rasd build-corpus [--sources DIR] [--out DIR]`."""
    return main(["build", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main())
