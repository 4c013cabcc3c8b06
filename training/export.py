"""Export a trained model to ONNX, gate it on parity, and publish it.

    rasd export runs/me5-small/model exports/me5-small [--quantize] [--data data/corpus]

One wrapper module per graph (encoder+tagger, relation head), names and
dynamic axes from rasd.onnx_spec. Everything is written to a temporary
directory first; the gate then checks, like optimum's
validate_model_outputs, that ONNX FP32 matches torch on named outputs
(np.allclose) and that decoded predictions are identical; INT8, when asked
for, must stay within 0.5 F1 point of FP32 on dev entities and relations at
every batch size of INT8_GATE_BATCH_SIZES (dynamic quantisation makes INT8
results depend on batch composition).
Only a model that passes is moved to OUT_DIR, with a manifest of SHA-256s.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

import rasd
from rasd import pipeline
from rasd.backend import load_exported
from rasd.hub import sha256_file
from rasd.onnx_spec import (CONFIG_FILE, ENCODER, FORMAT_VERSION, MANIFEST_FILE, RELATION, TOKENIZER_FILE,
                            dynamic_axes, with_inputs)
from rasd.schema import Document, read_documents

from .metrics import headline, score
from .fuse import eager_attention, fuse_encoder
from .modeling import RasdModel, TorchBackend
from .quantize import (DEFAULT_RECIPE, RECIPE_OPTIONS, RECIPES, calibration_batches, is_static, needs_calibration,
                       quantize_graphs, sensitivity_scan)

INT8_TOLERANCE = 0.005  # F1, absolute (0.5 point)
SAMPLE_TEXTS = [
    "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية بعد غارات جوية في محافظة دير الزور.",
    "سلّمت قوة برخان الفرنسية قاعدة كيدال إلى الجيش المالي، فيما نفذ الجيش عمليات تمشيط قرب مدينة تمبكتو.",
]


class EncoderGraph(nn.Module):
    def __init__(self, model: RasdModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.encode(input_ids, attention_mask)


class RelationGraph(nn.Module):
    """The relation head with positional inputs in onnx_spec.RELATION's order, passed on by name."""

    def __init__(self, model: RasdModel):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return self.model.relate(**dict(zip(self.model.relation_inputs(), inputs)))


class GateFailure(RuntimeError):
    pass


def _export(module: nn.Module, args: tuple, graph: dict, path: str) -> None:
    # The TorchScript exporter (dynamo=False) handles dynamic_axes directly
    # and gives graphs that onnxruntime's dynamic quantiser accepts.
    torch.onnx.export(module, args, path, input_names=list(graph["inputs"]), output_names=list(graph["outputs"]),
                      dynamic_axes=dynamic_axes(graph), opset_version=17, do_constant_folding=True, dynamo=False)


def _sample_batch(model: RasdModel, tokenizer):
    spec = model.spec()
    batch = pipeline.pad_rows([tokenizer.backend_tokenizer.encode(t).ids[:spec.window_length] for t in SAMPLE_TEXTS],
                              0)
    return tuple(torch.as_tensor(a) for a in batch)


def export_encoder(model: RasdModel, tokenizer, path: str, fuse: bool = True) -> dict:
    """Write the FP32 encoder graph; traced with eager attention and fused (rasd_train.fuse) unless fuse=False.
    Returns the fusion report."""
    model.eval()
    ids, mask = _sample_batch(model, tokenizer)
    # The wrappers are put in eval mode too: the exporter restores each wrapper's own mode afterwards,
    # and a fresh module is in training mode, which would switch the model's dropout back on.
    with eager_attention(model) if fuse else contextlib.nullcontext():
        outputs = {k: ENCODER["outputs"][k] for k in model.encoder_outputs()}  # layer_states for markers only
        _export(EncoderGraph(model).eval(), (ids, mask), {**ENCODER, "outputs": outputs}, path)
    if not fuse:
        return {"applied": False, "reason": "fuse=False"}
    return fuse_encoder(path, model.config.encoder_hf_config())


def export_graphs(model: RasdModel, tokenizer, out_dir: str, fuse: bool = True) -> dict:
    """Write both FP32 graphs (the encoder fused unless fuse=False); returns the fusion report."""
    fusion = export_encoder(model, tokenizer, os.path.join(out_dir, ENCODER["file"]), fuse)
    ids, mask = _sample_batch(model, tokenizer)
    with torch.no_grad():
        _, context = model.context(ids, mask)
    n_types = len(model.spec().scheme.entities)
    example = {"pair_batch": [0, 1, 1], "head_span": [[1, 3], [2, 4], [1, 2]], "tail_span": [[4, 6], [1, 2], [5, 7]],
               "head_type": [1 % n_types, 0, 2 % n_types], "tail_type": [0, 1 % n_types, 3 % n_types],
               "distance_bucket": [2, 0, 5], "sentence_gap": [0, 1, 3]}
    names = model.relation_inputs()  # a model's graph declares only the optional inputs it reads
    args = tuple(context[n] if n in context else torch.tensor(example[n]) for n in names)
    _export(RelationGraph(model).eval(), args, with_inputs(RELATION, names), os.path.join(out_dir, RELATION["file"]))
    return fusion


def _outputs(backend, tokenizer, spec, texts):
    """Raw logits on the texts' first windows plus all decoded predictions."""
    from rasd.align import SpecialTokens, make_windows, tokenize_text
    sp = SpecialTokens.from_tokenizer(tokenizer)
    rows = [make_windows(tokenize_text(t, tokenizer), sp, spec.window_length, spec.window_stride)[0].input_ids
            for t in texts]
    ids, mask = pipeline.pad_rows(rows, sp.pad_id)
    logits, context = backend.tag(ids, mask)
    n = min(len(texts), 3)
    pairs = {"pair_batch": np.arange(n), "head_span": np.tile([[1, 2]], (n, 1)), "tail_span": np.tile([[3, 5]], (n, 1)),
             "head_type": np.zeros(n, np.int64), "tail_type": np.ones(n, np.int64) % len(spec.scheme.entities),
             "distance_bucket": np.full(n, 2), "sentence_gap": np.arange(n) % 4}
    rel = backend.relate(context, pairs)
    preds = pipeline.predict(texts, tokenizer, spec, backend)
    outputs = {"tag_logits": np.asarray(logits) * mask[..., None], "relation_logits": np.asarray(rel)}
    if "span_logits" in context:  # a span head's scores, at real start positions
        outputs["span_logits"] = np.asarray(context["span_logits"]) * mask[..., None, None]
    return outputs, preds


SCORE_ATOL = 1e-3  # decoded scores are unrounded floats; ONNX and torch agree far closer than this


def decoded_differences(ref: List[Document], got: List[Document], score_atol: float = SCORE_ATOL) -> List[dict]:
    """Documents whose spans, labels or relations differ, or whose scores differ by more than score_atol."""
    out = []
    for i, (a, b) in enumerate(zip(ref, got)):
        ea, eb = [(e.start, e.end, e.label) for e in a.entities], [(e.start, e.end, e.label) for e in b.entities]
        ra, rb = [(r.head, r.tail, r.label) for r in a.relations], [(r.head, r.tail, r.label) for r in b.relations]
        if ea != eb or ra != rb:
            out.append({"text": i, "torch_entities": ea, "onnx_entities": eb, "torch_relations": ra,
                        "onnx_relations": rb})
            continue
        sa = [x.score or 0.0 for x in a.entities + a.relations]
        sb = [x.score or 0.0 for x in b.entities + b.relations]
        worst = max((abs(x - y) for x, y in zip(sa, sb)), default=0.0)
        if worst > score_atol:
            out.append({"text": i, "max_score_diff": worst})
    return out


def parity_report(model, tokenizer, out_dir: str, texts: List[str], atol: float = 1e-4, rtol: float = 1e-3) -> dict:
    """FP32 ONNX vs torch on named outputs and on decoded predictions."""
    spec = model.spec()
    tok = tokenizer.backend_tokenizer
    ref, ref_preds = _outputs(TorchBackend(model), tok, spec, texts)
    onnx = load_exported(out_dir, quantized=False, verify=False).backend
    got, got_preds = _outputs(onnx, tok, spec, texts)
    report = {"texts": len(texts), "outputs": {}, "decoded_identical": True, "differences": []}
    for name in ref:
        diff = float(np.max(np.abs(ref[name] - got[name]))) if ref[name].size else 0.0
        ok = bool(np.allclose(ref[name], got[name], atol=atol, rtol=rtol))
        report["outputs"][name] = {"max_abs_diff": diff, "allclose": ok}
    report["differences"] = decoded_differences(ref_preds, got_preds)
    report["decoded_identical"] = not report["differences"]
    report["passed"] = all(o["allclose"] for o in report["outputs"].values()) and report["decoded_identical"]
    return report


INT8_GATE_BATCH_SIZES = (1, 16, 32)
GATE_SPLITS = ("dev", "test")  # together: enough relations that one flipped decision is not half a point


def onnx_predictions(out_dir: str, docs: List[Document], int8: bool, batch_size: int = 16) -> List[Document]:
    """Predictions of the ONNX graphs in out_dir, loaded the way the service loads them."""
    m = load_exported(out_dir, quantized=int8, verify=False)
    if m.quantized != int8:
        raise GateFailure(f"{out_dir}: no {'INT8' if int8 else 'FP32'} graphs to gate")
    return pipeline.predict_documents(docs, m.tokenizer, m.spec, m.backend, batch_size=batch_size)


def onnx_f1(out_dir: str, docs: List[Document], int8: bool, batch_size: int = 16) -> dict:
    """F1 of the ONNX graphs in out_dir on gold documents."""
    m = load_exported(out_dir, quantized=int8, verify=False)
    return headline(score(docs, onnx_predictions(out_dir, docs, int8, batch_size), scheme=m.spec.scheme))


def agreement(a: List[Document], b: List[Document]) -> dict:
    """Share of identical decisions (entity span+label; relation head span, tail span, label): |A∩B| / |A∪B|."""
    def keys(docs):
        ents, rels = set(), set()
        for i, d in enumerate(docs):
            span = {e.id: (e.start, e.end, e.label) for e in d.entities}
            ents |= {(i, *span[e.id]) for e in d.entities}
            rels |= {(i, span[r.head], span[r.tail], r.label) for r in d.relations}
        return ents, rels
    (ea, ra), (eb, rb) = keys(a), keys(b)
    share = lambda x, y: round(len(x & y) / len(x | y), 4) if x | y else 1.0  # noqa: E731
    return {"entities": share(ea, eb), "relations": share(ra, rb)}


def int8_gate(out_dir: str, docs: List[Document], fp32: List[Document], floor: Optional[dict] = None) -> dict:
    """INT8 F1 and agreement with FP32 at several batch sizes, and the worst of each.

    Dynamic quantisation picks activation ranges per batch, so INT8 results
    depend on which windows share a batch; the gate must hold for all the
    batch sizes a service is likely to use, not just one. floor: the lowest
    F1 of each metric that passes; once one batch size falls below it the
    try is refused whatever the others give, so they are not run
    ("stopped_after" names that batch size).
    """
    scheme = load_exported(out_dir, quantized=True, verify=False).spec.scheme
    per, stopped = {}, None
    for b in INT8_GATE_BATCH_SIZES:
        preds = onnx_predictions(out_dir, docs, int8=True, batch_size=b)
        per[b] = {**headline(score(docs, preds, scheme=scheme)), "agreement": agreement(fp32, preds)}
        if floor and any(per[b][k] < v for k, v in floor.items()):
            stopped = b
            break
    worst = {k: min(m[k] for m in per.values()) for k in ("entity_f1", "relation_f1")}
    worst_agreement = {k: min(m["agreement"][k] for m in per.values()) for k in ("entities", "relations")}
    return {"worst": worst, "agreement": worst_agreement, "by_batch_size": per,
            **({"stopped_after": stopped} if stopped else {})}


def write_manifest(out_dir: str) -> None:
    files = {}
    for name in sorted(os.listdir(out_dir)):
        if name == MANIFEST_FILE:
            continue
        path = os.path.join(out_dir, name)
        files[name] = {"sha256": sha256_file(path), "bytes": os.path.getsize(path)}
    with open(os.path.join(out_dir, MANIFEST_FILE), "w", encoding="utf-8") as f:
        json.dump({"format_version": FORMAT_VERSION, "files": files}, f, indent=1)


# When the gate refuses INT8, one more try keeps this many of the encoder's most sensitive MatMuls (a per-node scan)
# in FP32. Measured on session 11's default: dynamic-smooth lost 0.85 relation point; with its 6 most sensitive
# nodes (the six feed-forward output MatMuls) in FP32, 0.23, at 5,205 against 6,232 encoder tokens/s (FP32 4,083).
INT8_FALLBACK_NODES = 6


def _int8_calibration(spec, tokenizer, data_dir: Optional[str]):
    train_path = os.path.join(data_dir or "", "train.jsonl")
    if not (data_dir and os.path.exists(train_path)):
        return None
    return calibration_batches([d.text for d in read_documents(train_path, spec.scheme)],
                               tokenizer.backend_tokenizer, spec)


@dataclass
class Int8Job:
    """What every INT8 try shares: the model, the scratch folder, calibration batches, and the FP32 reference."""
    model: RasdModel
    tokenizer: object
    tmp: str
    calibration: Optional[list]
    gate_docs: List[Document]
    fp32_preds: Optional[list]
    fp32_gate: Optional[dict]
    tolerance: float


def _int8_attempt(job: Int8Job, recipe: str, exclude: Sequence[str]) -> dict:
    """Quantise into job.tmp with one recipe and exclusion list, and gate it against FP32."""
    source = None
    if is_static(recipe):  # static QDQ needs an unfused trace (rasd_train.quantize)
        source = os.path.join(job.tmp, "encoder.unfused.onnx")
        export_encoder(job.model, job.tokenizer, source, fuse=False)
    relation = quantize_graphs(job.tmp, recipe, exclude, job.calibration if needs_calibration(recipe) else None,
                               encoder_source=source)
    if source:
        os.remove(source)
    out = {"int8_recipe": {"recipe": recipe, "exclude": list(exclude), "relation_graph": relation}}
    if not job.gate_docs:
        return {**out, "int8_published": False, "int8_note": "no dev/test split given, so INT8 could not be gated"}
    metrics = ("entity_f1", "relation_f1")
    int8 = int8_gate(job.tmp, job.gate_docs, job.fp32_preds, {k: job.fp32_gate[k] - job.tolerance for k in metrics})
    drops = {k: job.fp32_gate[k] - int8["worst"][k] for k in metrics}
    return {**out, "int8_gate": int8["worst"], "int8_agreement": int8["agreement"],
            "int8_by_batch_size": int8["by_batch_size"], "int8_drop": drops,
            **({"int8_stopped_after_batch_size": int8["stopped_after"]} if "stopped_after" in int8 else {}),
            "int8_published": "stopped_after" not in int8 and all(v <= job.tolerance for v in drops.values())}


def _publish_int8(job: Int8Job, recipe: str, exclude: Sequence[str], fallback_nodes: int) -> dict:
    """The INT8 set through the gate: the recipe as asked, then, if refused, the same recipe with the most
    sensitive encoder nodes also kept FP32. Every try is recorded (int8_attempts); the INT8 files stay only if one
    passed."""
    attempts = [_int8_attempt(job, recipe, exclude)]
    if not attempts[-1]["int8_published"] and job.gate_docs and fallback_nodes and job.calibration is not None:
        with tempfile.TemporaryDirectory(dir=job.tmp) as scratch:
            scan = sensitivity_scan(job.tmp, job.calibration[:4], scratch, smooth=bool(RECIPE_OPTIONS[recipe][4]))
        worst = [r["node"] for r in scan if r["node"] not in exclude][:fallback_nodes]
        attempts.append({**_int8_attempt(job, recipe, list(exclude) + worst), "int8_scan": scan[:2 * fallback_nodes]})
    result = attempts[-1]
    result["int8_attempts"] = [{**a["int8_recipe"], "drop": a.get("int8_drop"), "published": a["int8_published"],
                                "batch_sizes": [int(b) for b in a.get("int8_by_batch_size", {})]} for a in attempts]
    if not result["int8_published"]:
        for g in (ENCODER, RELATION):
            os.remove(os.path.join(job.tmp, g["int8_file"]))
    return result


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
            calibration = _int8_calibration(spec, tokenizer, data_dir)
            if needs_calibration(int8_recipe) and calibration is None:
                raise GateFailure(f"INT8 recipe {int8_recipe!r} calibrates on training texts: "
                                  f"{os.path.join(data_dir or '', 'train.jsonl')} not found")
            job = Int8Job(model, tokenizer, tmp, calibration, gate_docs, fp32_preds if gate_docs else None,
                          report.get("fp32_gate"), int8_tolerance)
            report.update(_publish_int8(job, int8_recipe, int8_exclude, int8_fallback_nodes))
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
