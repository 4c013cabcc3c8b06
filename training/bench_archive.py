"""Archive-scale figures: `rasd predict` throughput and peak memory by input size, and `rasd batch` engines.

    python -m rasd_train.bench_archive exports/me5-small --sizes 1000 10000 --batch-docs 1000 --out bench_archive.json

Inputs are the corpus's dev and test texts repeated under new ids up to each
size. Every run is a fresh subprocess, so its peak RSS (ru_maxrss) is its own;
runs are sequential, so they do not share the cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List

from rasd.schema import read_documents

RUNNER = ("import resource, sys, time; from rasd.cli import main; t = time.time(); rc = main(sys.argv[1:]); "
          "print('RESULT', time.time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
          "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, file=sys.stderr); sys.exit(rc)")


def make_input(texts: List[str], n: int, path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc-{i}", "text": texts[i % len(texts)]}, ensure_ascii=False) + "\n")
    return path


def run(args: List[str]) -> dict:
    t = time.time()
    r = subprocess.run([sys.executable, "-c", RUNNER, *args], capture_output=True, text=True)
    wall = time.time() - t
    if r.returncode != 0:
        raise SystemExit(f"rasd {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    line = next(ln for ln in r.stderr.splitlines() if ln.startswith("RESULT"))
    _, inner, rss, child_rss = line.split()
    return {"wall_s": round(wall, 1), "command_s": round(float(inner), 1), "peak_rss_mb": round(float(rss)),
            "children_peak_rss_mb": round(float(child_rss))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.bench_archive", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--batch-docs", type=int, default=1000, help="documents for the rasd batch comparison")
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    texts = [d.text for s in ("dev", "test") for d in read_documents(os.path.join(args.corpus, f"{s}.jsonl"))]
    results = {"model": args.model, "cpus": len(os.sched_getaffinity(0)), "predict": {}, "batch": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            inp = make_input(texts, n, os.path.join(tmp, f"in-{n}.jsonl"))
            r = run(["predict", "--model", args.model, "--input", inp, "--output", os.path.join(tmp, f"o{n}.jsonl")])
            r["docs_per_s"] = round(n / r["command_s"], 1)
            results["predict"][n] = r
            print(f"rasd predict {n:>6} docs: {r['docs_per_s']:.1f} docs/s, peak RSS {r['peak_rss_mb']} MB", flush=True)
        n = args.batch_docs
        inp = make_input(texts, n, os.path.join(tmp, "batch.jsonl"))
        engines = [("local", [])] + [(f"ray x{a}", ["--engine", "ray", "--num-actors", str(a)]) for a in args.actors]
        for name, extra in engines:
            out = os.path.join(tmp, "out-" + name.replace(" ", ""))
            r = run(["batch", "--model", args.model, "--input", inp, "--output", out, *extra])
            r["docs_per_s"] = round(n / r["command_s"], 1)
            results["batch"][name] = r
            print(f"rasd batch {name:>8} ({n} docs): {r['docs_per_s']:.1f} docs/s in {r['command_s']} s "
                  f"(Ray start and model loads included)", flush=True)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
