"""Export a trained model to ONNX, gate it, and publish it.

    rasd export runs/me5-small/model exports/me5-small [--quantize] [--data data/corpus]

Everything is written to a temporary directory first: the FP32 graphs (rasd_train.onnx_graphs), then the parity
gate against torch and the FP32 scores on dev and test (rasd_train.gate), then, when asked for, INT8 graphs through
their gate (rasd_train.int8_publish). Only a model that passes is moved to OUT_DIR, with a manifest of SHA-256s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import List, Optional, Sequence

import rasd
from rasd.hub import sha256_file
from rasd.onnx_spec import CONFIG_FILE, FORMAT_VERSION, MANIFEST_FILE, TOKENIZER_FILE
from rasd.schema import Document, read_documents

from .gate import GATE_SPLITS, INT8_TOLERANCE, GateFailure, onnx_predictions, parity_report
from .int8_publish import INT8_FALLBACK_NODES, Int8Job, int8_calibration, publish_int8
from .metrics import headline, score
from .modeling import RasdModel
from .onnx_graphs import SAMPLE_TEXTS, export_graphs
from .quantize import DEFAULT_RECIPE, RECIPES, needs_calibration


def write_manifest(out_dir: str) -> None:
    files = {}
    for name in sorted(os.listdir(out_dir)):
        if name == MANIFEST_FILE:
            continue
        path = os.path.join(out_dir, name)
        files[name] = {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}
    with open(os.path.join(out_dir, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump({"format_version": FORMAT_VERSION, "files": files}, f, indent=1)


def export(model_dir: str, out_dir: str, quantize: bool = False, data_dir: Optional[str] = None,
           max_eval_docs: int = 0, card_metrics: Optional[dict] = None,
           int8_tolerance: float = INT8_TOLERANCE, int8_recipe: str = DEFAULT_RECIPE,
           int8_exclude: Sequence[str] = (), int8_fallback_nodes: int = INT8_FALLBACK_NODES) -> dict:
    """Export, gate, publish. Returns the gate report; raises GateFailure.

    int8_tolerance: the largest F1 drop (absolute) INT8 may show and still be published.
    int8_recipe / int8_exclude: how to quantise (rasd_train.quantize); static recipes calibrate on the
    training split's texts. int8_fallback_nodes: if the gate refuses, try once more with this many of the
    encoder's most sensitive MatMuls kept FP32 (0 = no second try).
    """
    from transformers import AutoTokenizer
    t0 = time.time()
    model = RasdModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = model.spec()
    gate_docs: List[Document] = []
    for split in GATE_SPLITS:
        path = os.path.join(data_dir or "", f"{split}.jsonl")
        if data_dir and os.path.exists(path):
            docs = read_documents(path, spec.scheme)
            gate_docs += docs[:max_eval_docs] if max_eval_docs else docs
    sample = [d.text for d in gate_docs[:32]] or SAMPLE_TEXTS
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    report = {"model_dir": model_dir}
    with tempfile.TemporaryDirectory(dir=parent, prefix=".export-") as tmp:
        report["fusion"] = export_graphs(model, tokenizer, tmp)
        tokenizer.backend_tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
        cfg = {"format_version": FORMAT_VERSION, "rasd_version": rasd.__version__, **spec.to_dict(),
               "encoder_name": model.config.encoder_name, "hidden_size": model.config.encoder_hf_config().hidden_size}
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
        report["parity"] = parity_report(model, tokenizer, tmp, sample)
        if not report["parity"]["passed"]:
            raise GateFailure("ONNX FP32 differs from torch: " + json.dumps(report["parity"], ensure_ascii=False))
        if gate_docs:
            report["gate_documents"] = {"splits": [s for s in GATE_SPLITS], "documents": len(gate_docs),
                                        "relations": sum(len(d.relations) for d in gate_docs)}
            fp32_preds = onnx_predictions(tmp, gate_docs, int8=False)
            report["fp32_gate"] = headline(score(gate_docs, fp32_preds, scheme=spec.scheme))
        if quantize:
            calibration = int8_calibration(spec, tokenizer, data_dir)
            if needs_calibration(int8_recipe) and calibration is None:
                raise GateFailure(f"INT8 recipe {int8_recipe!r} calibrates on training texts: "
                                  f"{os.path.join(data_dir or '', 'train.jsonl')} not found")
            job = Int8Job(model, tokenizer, tmp, calibration, gate_docs, fp32_preds if gate_docs else None,
                          report.get("fp32_gate"), int8_tolerance)
            report.update(publish_int8(job, int8_recipe, int8_exclude, int8_fallback_nodes))
        if card_metrics is not None or os.path.exists(os.path.join(os.path.dirname(model_dir.rstrip("/")),
                                                                   "train_summary.json")):
            from .card import write_card
            write_card(os.path.join(tmp, "README.md"), model_dir, report)
        report["export_wall_s"] = round(time.time() - t0, 1)
        with open(os.path.join(tmp, "export_report.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, ensure_ascii=False, indent=1)
        write_manifest(tmp)
        # Publish: replace OUT_DIR only now that everything passed.
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
        os.chmod(out_dir, 0o755)  # mkdtemp made it private
        os.makedirs(tmp)  # TemporaryDirectory wants to remove something
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rasd export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="a trained model directory (rasd train's OUTPUT_DIR/model)")
    ap.add_argument("out_dir", help="where the exported model goes (replaced only if the gate passes)")
    ap.add_argument("--quantize", action="store_true", help="also publish INT8 graphs if they pass the F1 gate")
    ap.add_argument("--data", default="data/corpus", help="corpus folder whose dev and test splits gate INT8")
    ap.add_argument("--int8-recipe", choices=RECIPES, default=DEFAULT_RECIPE, help="how to quantise "
                    "(rasd_train.quantize); static recipes calibrate on the training split")
    ap.add_argument("--int8-fallback-nodes", type=int, default=INT8_FALLBACK_NODES,
                    help="if the gate refuses INT8, try once more with this many of the encoder's most sensitive "
                         "MatMuls kept FP32 (a per-node scan; 0 = no second try)")
    ap.add_argument("--max-eval-docs", type=int, default=0, help="gate on the first N documents of each split only")
    args = ap.parse_args(argv)
    try:
        report = export(args.model_dir, args.out_dir, quantize=args.quantize, data_dir=args.data,
                        max_eval_docs=args.max_eval_docs, int8_recipe=args.int8_recipe,
                        int8_fallback_nodes=args.int8_fallback_nodes)
    except GateFailure as e:
        print(f"export refused, nothing published: {e}", file=sys.stderr)
        return 1
    p = report["parity"]
    print("parity FP32 vs torch: " + ", ".join(f"{k} max|diff| {v['max_abs_diff']:.2e}"
                                               for k, v in p["outputs"].items()) +
          f"; decoded identical on {p['texts']} texts")
    if "fp32_gate" in report:
        print(f"dev+test FP32: {report['fp32_gate']}")
    if "int8_gate" in report:
        print(f"dev+test INT8 (worst over batch sizes): {report['int8_gate']}, agreement with FP32 "
              f"{report['int8_agreement']} -> {'published' if report['int8_published'] else 'NOT published'}"
              f" (drop {report['int8_drop']})")
    print(f"exported to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
