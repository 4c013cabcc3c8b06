"""Corpus statistics and a consistency report.

Counts per split (documents, words, entities per label, relations per
label, theaters) and two lists a reviewer should read:
- surface strings labelled differently in different places;
- unlabelled occurrences (as whole words) of strings labelled elsewhere.
"""
from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

from .scheme import Scheme, builtin_scheme
from .schema import Document, read_documents
from .text import split_words
from .texture import format_texture, texture


def split_stats(docs: Sequence[Document]) -> dict:
    return {"documents": len(docs), "words": sum(len(split_words(d.text)) for d in docs),
            "entities": dict(Counter(e.label for d in docs for e in d.entities)),
            "relations": dict(Counter(r.label for d in docs for r in d.relations)),
            "theaters": dict(Counter((d.meta or {}).get("theater", "?") for d in docs)),
            "events": len({(d.meta or {}).get("event") for d in docs})}


def label_conflicts(docs: Sequence[Document]) -> Dict[str, Counter]:
    """Surface string -> Counter of labels, for strings with more than one label."""
    by_surface: Dict[str, Counter] = defaultdict(Counter)
    for d in docs:
        for e in d.entities:
            by_surface[d.text[e.start:e.end]][e.label] += 1
    return {s: c for s, c in by_surface.items() if len(c) > 1}


def unlabelled_occurrences(docs: Sequence[Document], min_len: int = 3) -> Dict[str, List[str]]:
    """Labelled surface strings found elsewhere as whole words without any entity over them."""
    surfaces = {d.text[e.start:e.end] for d in docs for e in d.entities if len(d.text[e.start:e.end]) >= min_len}
    out: Dict[str, List[str]] = defaultdict(list)
    for d in docs:
        covered = [False] * len(d.text)
        for e in d.entities:
            for i in range(e.start, e.end):
                covered[i] = True
        starts = {s for s, _ in split_words(d.text)}
        ends = {e for _, e in split_words(d.text)}
        for s in surfaces:
            for m in re.finditer(re.escape(s), d.text):
                a, b = m.start(), m.end()
                if a in starts and b in ends and not any(covered[a:b]):
                    out[s].append(f"{d.id}@{a}")
    return dict(out)


def corpus_files(paths: Sequence[str]) -> Dict[str, str]:
    """{split name: file} from a corpus folder or explicit files."""
    files = {}
    for p in paths:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                if name.endswith(".jsonl"):
                    files[name[:-6]] = os.path.join(p, name)
        else:
            files[os.path.basename(p).rsplit(".", 1)[0]] = p
    return files


def format_report(paths: Sequence[str], show: int = 40, scheme: Optional[Scheme] = None) -> str:
    scheme = scheme or builtin_scheme()
    entity_labels, relation_labels = scheme.entities, scheme.relation_labels
    files = corpus_files(paths)
    docs_by = {name: read_documents(path, scheme) for name, path in files.items()}
    lines = []
    head = ["split", "docs", "words", *entity_labels, *relation_labels, "events", "theaters"]
    lines.append(" | ".join(head))
    total: List[Document] = []
    for name, docs in docs_by.items():
        st = split_stats(docs)
        total += docs
        lines.append(" | ".join(str(x) for x in [name, st["documents"], st["words"],
                                                 *(st["entities"].get(l, 0) for l in entity_labels),
                                                 *(st["relations"].get(r, 0) for r in relation_labels),
                                                 st["events"], len(st["theaters"])]))
    st = split_stats(total)
    lines.append(" | ".join(str(x) for x in ["all", st["documents"], st["words"],
                                             *(st["entities"].get(l, 0) for l in entity_labels),
                                             *(st["relations"].get(r, 0) for r in relation_labels),
                                             st["events"], len(st["theaters"])]))
    lines.append(f"entities: {sum(st['entities'].values())}, relations: {sum(st['relations'].values())}")
    lines.append("theaters: " + ", ".join(f"{k}={v}" for k, v in sorted(st["theaters"].items())))
    lines.append("\ntexture (real reports: quotes 37 per 1,000 words, 4.2% of mentions with punctuation inside, "
                 "10.7% of LOCATIONs opening with a compass word, median 105 words)")
    for name, docs in [*docs_by.items(), ("all", total)]:
        lines.append(f"  {name}: {format_texture(texture(docs))}")
    conflicts = label_conflicts(total)
    lines.append(f"\nsame string, different labels: {len(conflicts)}")
    for s, c in sorted(conflicts.items(), key=lambda kv: -sum(kv[1].values()))[:show]:
        lines.append(f"  {s}: " + ", ".join(f"{k}={v}" for k, v in c.most_common()))
    unl = unlabelled_occurrences(total)
    lines.append(f"\nlabelled elsewhere, unlabelled here: {len(unl)} strings, {sum(map(len, unl.values()))} places")
    for s, where in sorted(unl.items(), key=lambda kv: -len(kv[1]))[:show]:
        lines.append(f"  {s}: {len(where)} × e.g. {', '.join(where[:3])}")
    return "\n".join(lines)
