"""Where an encoder graph's own time goes, by operator type (issue 12).

    python -m rasd_train.profile_ops exports/me5-small --corpus data/corpus [--threads 2] [--out ops.json]

Runs the FP32 and the INT8 encoder graph of an export over the same batches
of dev+test windows (batch 32) with onnxruntime's profiler on, and sums each
node's kernel time by operator type (each session's first run, a warm-up,
left out). The session is built as the service builds it (all graph
optimizations), so the operators are the ones that run after onnxruntime's
own fusions, e.g. QAttention and DynamicQuantizeMatMul for dynamic INT8.
The shares say what a faster recipe would have to shrink: if the quantised
MatMuls are most of the INT8 time, only fewer or cheaper MatMuls help; if the
FP32 operators around them are, fusing or dropping those does.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from typing import Dict, List

from rasd.backend import ModelSpec, read_config
from rasd.onnx_spec import ENCODER
from rasd.schema import read_documents

from .gate import GATE_SPLITS
from .quantize import calibration_batches


def op_times(profile_events: List[dict], skip_runs: int = 0) -> Dict[str, float]:
    """Microseconds of kernel time per operator type, from onnxruntime's profile events.

    skip_runs: leave out the nodes of the session's first N runs (its warm-up: first-run allocations), found by
    the time span of the session's `model_run` events."""
    runs = sorted((ev for ev in profile_events if ev.get("cat") == "Session" and ev.get("name") == "model_run"),
                  key=lambda ev: ev.get("ts", 0))
    last_skipped = runs[min(skip_runs, len(runs)) - 1] if skip_runs and runs else None
    start = float(last_skipped.get("ts", 0) + last_skipped.get("dur", 0)) if last_skipped else float("-inf")
    totals: Dict[str, float] = defaultdict(float)
    for ev in profile_events:
        # Each node logs fence_before / kernel_time / fence_after; only kernel_time is the op's work.
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time") and ev.get("ts", 0) >= start:
            totals[ev.get("args", {}).get("op_name", "?")] += float(ev.get("dur", 0))
    return dict(totals)


def profile_graph(model_path: str, batches: List[dict], threads: int, scratch: str) -> Dict[str, float]:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(scratch, os.path.basename(model_path))
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    sess.run(None, batches[0])  # warm-up, left out of the sums below
    for feed in batches:
        sess.run(None, feed)
    with open(sess.end_profiling(), encoding="utf-8") as f:
        return op_times(json.load(f), skip_runs=1)


def shares(times: Dict[str, float]) -> List[dict]:
    total = sum(times.values()) or 1.0
    rows = [{"op": op, "ms": round(us / 1000, 1), "share": round(us / total, 4)} for op, us in times.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.profile_ops", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=256, help="dev+test windows to run (batch 32)")
    ap.add_argument("--out", default=None, help="write the tables here as JSON")
    args = ap.parse_args(argv)
    spec = ModelSpec.from_dict(read_config(args.export_dir))
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.export_dir, "tokenizer.json"))
    texts = [d.text for s in GATE_SPLITS for d in read_documents(os.path.join(args.corpus, f"{s}.jsonl"), spec.scheme)]
    batches = calibration_batches(texts, tok, spec, batch_size=32, max_windows=args.max_windows)
    result = {"export": args.export_dir, "threads": args.threads, "windows": sum(len(b["input_ids"]) for b in batches)}
    with tempfile.TemporaryDirectory() as scratch:
        for name, key in (("fp32", "file"), ("int8", "int8_file")):
            path = os.path.join(args.export_dir, ENCODER[key])
            if not os.path.exists(path):
                print(f"{name}: no {ENCODER[key]} in {args.export_dir}; skipped")
                continue
            rows = shares(profile_graph(path, batches, args.threads, scratch))
            result[name] = rows
            print(f"\n{name} encoder ({ENCODER[key]}), {sum(r['ms'] for r in rows):.0f} ms of kernel time:")
            for r in rows:
                print(f"  {r['op']:32s} {r['ms']:9.1f} ms  {100 * r['share']:5.1f}%")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
