"""Score a saved model on an annotated JSONL file.

    rasd evaluate runs/me5-small/model data/corpus/test.jsonl --out eval/test

Writes metrics.json (strict and partial entity and relation P/R/F1, micro and
per label, seqeval's IOB2 report, P/R/F1 at score thresholds and the
calibration of entity and relation scores), predictions.jsonl in the scheme's
prediction shape, and confusion.png (entity labels per word, O included).
"""
from __future__ import annotations

import argparse
import json
import os

from rasd.schema import read_documents, write_documents

from .calibration import report as calibration_report
from .metrics import headline, plot_confusion, score


def evaluate(model_dir: str, data_path: str, out_dir: str, batch_size: int = 32) -> dict:
    from transformers import AutoTokenizer
    from .modeling import RasdModel
    from .predict import torch_predict
    model = RasdModel.from_pretrained(model_dir).eval()
    scheme = model.config.scheme_obj()
    gold = read_documents(data_path, scheme)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    preds = torch_predict(model, tokenizer, gold, batch_size)
    metrics = score(gold, preds, scheme=scheme)
    metrics.update(calibration_report(gold, preds, scheme))  # precision/recall by threshold, ECE
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, ensure_ascii=False, indent=1)
    write_documents(os.path.join(out_dir, "predictions.jsonl"), preds)
    plot_confusion(metrics["confusion"], os.path.join(out_dir, "confusion.png"),
                   title=f"{os.path.basename(data_path)}: entity labels per word")
    return metrics


def format_table(metrics: dict) -> str:
    rows = ["| | precision | recall | F1 | gold |", "|---|---|---|---|---|"]
    for mode in ("strict", "partial"):
        for kind in ("entities", "relations"):
            for lab, m in metrics[mode][kind].items():
                rows.append(f"| {mode} {kind} {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                            f"{m['gold']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rasd evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("data", help="annotated JSONL (e.g. data/corpus/test.jsonl)")
    ap.add_argument("--out", default=None, help="output folder (default: MODEL_DIR/../eval-<file name>)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model_dir)),
                                   "eval-" + os.path.splitext(os.path.basename(args.data))[0])
    metrics = evaluate(args.model_dir, args.data, out, args.batch_size)
    print(format_table(metrics))
    print(json.dumps(headline(metrics)))
    print(f"written to {out}/metrics.json, predictions.jsonl, confusion.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
