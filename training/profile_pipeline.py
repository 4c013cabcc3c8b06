"""Where the serving pipeline's time goes: tokenize, windows, encoder, decode, pairs, relation graph.

    python -m rasd_train.profile_pipeline exports/me5-small --corpus data/corpus --batch-size 32

Runs rasd.pipeline.predict on dev+test texts with every stage timed (a
timing wrapper around the backend and the stage functions the pipeline
calls), then prints each stage's share and the pipeline's tokens/s against
the encoder graph's own time.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from contextlib import contextmanager

from rasd import pipeline
from rasd.backend import load_exported
from rasd.schema import read_documents

STAGES = {"tokenize_texts": "tokenize", "make_windows": "windows", "merge_windows": "merge",
          "decode_tags": "decode", "viterbi_tags_many": "decode", "_pair_jobs": "pairs", "stack_pairs": "pairs", "decode_relations": "pairs"}


class TimedBackend:
    def __init__(self, backend, clock):
        self.backend, self.clock = backend, clock

    def tag(self, ids, mask):
        with self.clock("encoder graph"):
            return self.backend.tag(ids, mask)

    def relate(self, hidden, pairs):
        with self.clock("relation graph"):
            return self.backend.relate(hidden, pairs)


def profile(export_dir: str, texts, batch_size: int, threads: int) -> dict:
    loaded = load_exported(export_dir, threads=threads, verify=False)
    spent = defaultdict(float)

    @contextmanager
    def clock(name):
        t = time.perf_counter()
        yield
        spent[name] += time.perf_counter() - t

    originals = {name: getattr(pipeline, name) for name in STAGES}

    def timed(name, fn):
        def wrapper(*a, **k):
            with clock(STAGES[name]):
                return fn(*a, **k)
        return wrapper

    for name, fn in originals.items():
        setattr(pipeline, name, timed(name, fn))
    try:
        backend = TimedBackend(loaded.backend, clock)
        pipeline.predict(texts[:8], loaded.tokenizer, loaded.spec, backend, batch_size=batch_size)  # warm-up
        spent.clear()
        t = time.perf_counter()
        pipeline.predict(texts, loaded.tokenizer, loaded.spec, backend, batch_size=batch_size)
        total = time.perf_counter() - t
    finally:
        for name, fn in originals.items():
            setattr(pipeline, name, fn)
    tokens = sum(len(loaded.tokenizer.encode(t, add_special_tokens=False).ids) for t in texts)
    # decode_relations runs inside the pairs loop; stages may nest (pairs inside nothing else), so "other" is the rest
    other = total - sum(spent.values())
    return {"int8": loaded.quantized, "texts": len(texts), "tokens": tokens, "total_s": round(total, 3),
            "tokens_per_s": round(tokens / total), "encoder_only_tokens_per_s": round(tokens / spent["encoder graph"]),
            "pipeline_vs_encoder": round(spent["encoder graph"] / total, 3),
            "stages_s": {k: round(v, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])},
            "other_s": round(other, 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.profile_pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    texts = [d.text for s in ("dev", "test") for d in read_documents(os.path.join(args.corpus, f"{s}.jsonl"))]
    r = profile(args.export_dir, texts, args.batch_size, args.threads)
    for k, v in r["stages_s"].items():
        print(f"{k:16s} {v:8.3f} s  {100 * v / r['total_s']:5.1f}%")
    print(f"{'other':16s} {r['other_s']:8.3f} s  {100 * r['other_s'] / r['total_s']:5.1f}%")
    print(f"pipeline {r['tokens_per_s']} tokens/s; encoder graph alone {r['encoder_only_tokens_per_s']} tokens/s; "
          f"ratio {r['pipeline_vs_encoder']}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
