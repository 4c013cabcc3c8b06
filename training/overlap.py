"""Copy check: runs of N words (default 8) that corpus documents share with real reports.

    python -m rasd_train.overlap --real DIR_OR_FILE [...] data/corpus/*.jsonl [--n 8]

The corpus is written for the project; real reports may be read for style,
never copied. Words are compared after linking normalisation (diacritics,
hamza forms, proclitics and quotes removed) and without punctuation, so a
copied sentence with a changed quote style or a dropped و still shows.
Documents whose `meta.style` is `seed` are real text by design and skipped.
Exit status 1 when any run is shared.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from typing import Dict, Iterable, List, Set, Tuple

from rasd.schema import read_documents
from rasd.text import is_word_char, normalize_for_linking, split_words


def words(text: str) -> List[str]:
    out = []
    for s, e in split_words(text):
        if is_word_char(text[s]):
            w = normalize_for_linking(text[s:e])
            if w:
                out.append(w)
    return out


def shingles(tokens: List[str], n: int) -> Set[Tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def real_texts(paths: Iterable[str]) -> List[str]:
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "**", "*.txt"), recursive=True)) if os.path.isdir(p) else [p]
    texts = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            texts.append(fh.read())
    return texts


def shared_runs(corpus_files: Iterable[str], real: List[str], n: int = 8) -> Dict[str, List[str]]:
    """{document id: the shared runs} for every corpus document that shares a run with the real texts."""
    reference: Set[Tuple[str, ...]] = set()
    for t in real:
        reference |= shingles(words(t), n)
    hits: Dict[str, List[str]] = {}
    for path in corpus_files:
        for d in read_documents(path):
            if (d.meta or {}).get("style") == "seed":
                continue
            common = shingles(words(d.text), n) & reference
            if common:
                hits[d.id] = sorted(" ".join(c) for c in common)
    return hits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.overlap", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="+", help="corpus JSONL files")
    ap.add_argument("--real", action="append", required=True, help="a file or folder of real reports (*.txt)")
    ap.add_argument("--n", type=int, default=8, help="run length in words")
    args = ap.parse_args(argv)
    real = real_texts(args.real)
    hits = shared_runs(args.corpus, real, args.n)
    for did, runs in sorted(hits.items()):
        print(f"{did}: {len(runs)} shared {args.n}-word run(s), e.g. {runs[0]}")
    print(f"real texts {len(real)}, documents sharing a {args.n}-word run: {len(hits)}")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
