"""Design comparisons on dev for one trained model: decodings, and robustness to surface variants.

    python -m rasd_train.robustness runs/me5-small/model --corpus data/corpus --out runs/me5-small/robustness.json

For each decoding (argmax, viterbi, and spans for a model with a span head) it scores dev as written, a fully
diacritised copy, a de-hamzated copy, a copy with every entity name in
quote marks (one in five unbalanced, as in real copy) and a copy with
Arabic-Indic digits (all built by rasd_train.augment, so offsets stay
exact), and the seed-article documents of test (the only real news;
reported, never used to choose). The encoder runs once per text
variant; decodings reuse its outputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
from typing import Dict, List

from rasd.schema import Document, read_documents

from .augment import arabic_indic_digits, dehamzate, diacritics, quote_names
from .metrics import headline, score


def surface_variants(docs: List[Document], seed: int = 0) -> Dict[str, List[Document]]:
    rng = random.Random(seed)
    return {"plain": docs,
            "diacritised": [diacritics(d, rng, rate=1.0, tatweel_rate=0.0) for d in docs],
            "dehamzated": [dehamzate(d) for d in docs],
            "quoted": [quote_names(d, rng, rate=1.0) for d in docs],
            "indic_digits": [arabic_indic_digits(d, rng) for d in docs]}


class CachedBackend:
    """Remembers a backend's outputs, so several decodings cost one encoder pass."""

    def __init__(self, backend):
        self.backend, self.tags, self.rels = backend, {}, {}

    def tag(self, ids, mask):
        key = (ids.tobytes(), ids.shape)
        if key not in self.tags:
            self.tags[key] = self.backend.tag(ids, mask)
        return self.tags[key]

    def relate(self, context, pairs):
        key = (tuple(hashlib.sha1(v.tobytes()).hexdigest() for v in context.values()),
               tuple(v.tobytes() for v in pairs.values()))
        if key not in self.rels:
            self.rels[key] = self.backend.relate(context, pairs)
        return self.rels[key]


def compare(model_dir: str, corpus: str) -> dict:
    from transformers import AutoTokenizer

    from rasd.pipeline import predict_documents

    from .modeling import RasdModel, TorchBackend
    model = RasdModel.from_pretrained(model_dir).eval()
    scheme, tok = model.config.scheme_obj(), AutoTokenizer.from_pretrained(model_dir).backend_tokenizer
    dev = read_documents(f"{corpus}/dev.jsonl", scheme)
    seeds = [d for d in read_documents(f"{corpus}/test.jsonl", scheme) if d.id.startswith("seed-")]
    sets = {**{f"dev_{k}": v for k, v in surface_variants(dev).items()}, "seed_articles": seeds}
    out: dict = {"model": model_dir}
    for name, docs in sets.items():
        if not docs:
            continue  # e.g. a corpus without seed articles
        backend = CachedBackend(TorchBackend(model))
        for decoding in ("argmax", "viterbi") + (("spans",) if model.config.span_max_tokens else ()):
            spec = dataclasses.replace(model.spec(), decoding=decoding)
            m = headline(score(docs, predict_documents(docs, tok, spec, backend), scheme=scheme))
            out[f"{name}/{decoding}"] = m
            print(f"{name:18s} {decoding:8s} entity F1 {m['entity_f1']:.4f}  relation F1 {m['relation_f1']:.4f}",
                  flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.robustness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--out", default=None, help="write the figures here as JSON")
    args = ap.parse_args(argv)
    result = compare(args.model_dir, args.corpus)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
