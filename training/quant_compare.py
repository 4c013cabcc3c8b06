"""Compare INT8 recipes on an export: F1 on dev+test, agreement with FP32, encoder speed; and a sensitivity scan.

    python -m rasd_train.quant_compare exports/me5-small --corpus data/corpus --scan 6 --out quant.json

For each recipe of rasd_train.quantize, a scratch copy of the export is
quantised and measured the way the export gate measures (dev and test
together, worst F1 over the gate's batch sizes, share of decisions identical
to FP32) plus the encoder graph's tokens/s at batch 32 on dev windows.

The sensitivity scan quantises one MatMul at a time (dynamic INT8, the rest
FP32) and ranks the nodes by the tag-logit error each causes alone; with
--scan K the recipes are also measured with the K worst nodes kept FP32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import List

from rasd.backend import ModelSpec, read_config
from rasd.onnx_spec import ENCODER
from rasd.schema import read_documents

from .gate import GATE_SPLITS, int8_gate, onnx_predictions
from .metrics import headline, score
from .quantize import RECIPES, calibration_batches, needs_calibration, quantize_graphs, sensitivity_scan


def encoder_tokens_per_s(model_path: str, batches: List[dict], threads: int = 2, repeats: int = 2) -> float:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    sess.run(None, batches[0])  # warm-up
    tokens, t = 0, time.perf_counter()
    for _ in range(repeats):
        for feed in batches:
            sess.run(None, feed)
            tokens += int(feed["attention_mask"].sum())
    return tokens / (time.perf_counter() - t)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rasd_train.quant_compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--corpus", default="data/corpus")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    ap.add_argument("--scan", type=int, default=0, help="also measure each recipe with the K most sensitive "
                                                        "MatMuls kept FP32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    spec = ModelSpec.from_dict(read_config(args.export_dir))
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(args.export_dir, "tokenizer.json"))
    docs = [d for s in GATE_SPLITS for d in read_documents(os.path.join(args.corpus, f"{s}.jsonl"), spec.scheme)]
    train_texts = [d.text for d in read_documents(os.path.join(args.corpus, "train.jsonl"), spec.scheme)]
    calib = calibration_batches(train_texts, tok, spec)
    speed = calibration_batches([d.text for d in docs], tok, spec, batch_size=32, max_windows=256)
    fp32 = onnx_predictions(args.export_dir, docs, int8=False)
    result = {"export": args.export_dir, "documents": len(docs), "fp32": headline(score(docs, fp32, spec.scheme)),
              "fp32_encoder_tokens_per_s": round(encoder_tokens_per_s(
                  os.path.join(args.export_dir, ENCODER["file"]), speed, args.threads)), "recipes": {}}
    print(f"FP32: {result['fp32']}, encoder {result['fp32_encoder_tokens_per_s']} tokens/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        variants = [(r, []) for r in args.recipes]
        if args.scan:
            scan = sensitivity_scan(args.export_dir, calib[:4], tmp, smooth=any("smooth" in r for r in args.recipes))
            result["scan"] = scan
            worst = [r["node"] for r in scan[:args.scan]]
            print("most sensitive: " + ", ".join(f"{r['node']} {r['tag_logit_error']:.4f}" for r in scan[:10]))
            variants += [(r, worst) for r in args.recipes]
        for recipe, exclude in variants:
            name = recipe + (f"+{len(exclude)} fp32" if exclude else "")
            scratch = os.path.join(tmp, "x")
            shutil.copytree(args.export_dir, scratch)
            t = time.time()
            relation = quantize_graphs(scratch, recipe, exclude, calib if needs_calibration(recipe) else None)
            gate = int8_gate(scratch, docs, fp32)
            row = {"quantize_s": round(time.time() - t, 1), "relation_graph": relation, "exclude": exclude,
                   "worst_f1": gate["worst"], "agreement": gate["agreement"],
                   "drop": {k: round(result["fp32"][k] - gate["worst"][k], 4) for k in gate["worst"]},
                   "encoder_tokens_per_s": round(encoder_tokens_per_s(os.path.join(scratch, ENCODER["int8_file"]),
                                                                      speed, args.threads))}
            result["recipes"][name] = row
            print(f"{name:28s} drop {row['drop']}, agreement {row['agreement']}, encoder "
                  f"{row['encoder_tokens_per_s']} tokens/s", flush=True)
            shutil.rmtree(scratch)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
