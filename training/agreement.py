"""Inter-annotator agreement: two annotations of the same documents, scored
with the scheme's strict metrics (F1 is symmetric, so which side is "gold"
does not matter), and the list of disagreements to adjudicate.

    python -m rasd_train.agreement --first data/corpus --second second.txt [--out data/agreement.json]
        [--disagreements disagreements.md]

--first and --second each take a corpus folder or JSONL file(s) or markup
file(s). Only documents present in both are compared, and their texts must
be identical (an edited text is reported, not silently scored).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Dict, List, Sequence, Tuple

from rasd.schema import Document, read_documents

from .markup import parse_markup
from .metrics import score


def load(paths: Sequence[str]) -> Dict[str, Document]:
    docs: List[Document] = []
    for p in paths:
        files = sorted(glob.glob(os.path.join(p, "*.jsonl"))) if os.path.isdir(p) else [p]
        for f in files:
            docs += read_documents(f) if f.endswith(".jsonl") else parse_markup(f)
    return {d.id: d for d in docs}


def paired(first: Dict[str, Document], second: Dict[str, Document]) -> Tuple[List[Document], List[Document], List[str]]:
    """Documents of `second` that `first` also has, in `second`'s order; ids whose texts differ are returned apart."""
    a, b, edited = [], [], []
    for did, doc in second.items():
        if did not in first:
            continue
        if first[did].text != doc.text:
            edited.append(did)
            continue
        a.append(first[did])
        b.append(doc)
    return a, b, edited


def agreement(a: List[Document], b: List[Document]) -> dict:
    m = score(a, b)
    strict, partial = m["strict"], m["partial"]
    return {"documents": len(a),
            "entity_f1": strict["entities"]["micro"]["f1"], "relation_f1": strict["relations"]["micro"]["f1"],
            "entity_f1_partial": partial["entities"]["micro"]["f1"],
            "relation_f1_partial": partial["relations"]["micro"]["f1"],
            "entities": {"first": strict["entities"]["micro"]["gold"], "second": strict["entities"]["micro"]["pred"]},
            "relations": {"first": strict["relations"]["micro"]["gold"],
                          "second": strict["relations"]["micro"]["pred"]},
            "per_label_f1": {k: v["f1"] for k, v in {**strict["entities"], **strict["relations"]}.items()
                             if k != "micro"}}


def _rels(doc: Document) -> set:
    ents = {e.id: (doc.text[e.start:e.end], e.label) for e in doc.entities}
    return {(ents[r.head], r.label, ents[r.tail]) for r in doc.relations}


def disagreements(a: List[Document], b: List[Document]) -> str:
    """A Markdown list, per document, of entities and relations only one side has."""
    out = []
    for x, y in zip(a, b):
        ea = {(e.start, e.end, e.label) for e in x.entities}
        eb = {(e.start, e.end, e.label) for e in y.entities}
        ra, rb = _rels(x), _rels(y)
        if ea == eb and ra == rb:
            continue
        out.append(f"## {x.id}\n")
        for s, e, lab in sorted(ea - eb):
            out.append(f"- first only: [{x.text[s:e]}] {lab} @{s}")
        for s, e, lab in sorted(eb - ea):
            out.append(f"- second only: [{y.text[s:e]}] {lab} @{s}")
        for h, lab, t in sorted(ra - rb):
            out.append(f"- first only: {h[0]} —{lab}→ {t[0]}")
        for h, lab, t in sorted(rb - ra):
            out.append(f"- second only: {h[0]} —{lab}→ {t[0]}")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.agreement", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--first", nargs="+", required=True)
    ap.add_argument("--second", nargs="+", required=True)
    ap.add_argument("--out", help="write the figures here (JSON)")
    ap.add_argument("--disagreements", help="write the list of disagreements here (Markdown)")
    args = ap.parse_args(argv)
    a, b, edited = paired(load(args.first), load(args.second))
    if edited:
        print(f"not compared, text differs between the two annotations: {', '.join(edited)}", file=sys.stderr)
    if not a:
        print("no document is in both annotations", file=sys.stderr)
        return 2
    fig = agreement(a, b)
    print(json.dumps(fig, ensure_ascii=False, indent=1))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(fig, f, ensure_ascii=False, indent=1)
            f.write("\n")
    if args.disagreements:
        with open(args.disagreements, "w", encoding="utf-8") as f:
            f.write(disagreements(a, b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
