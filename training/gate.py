"""The gates an exported set must pass before it is published.

- Parity: like optimum's validate_model_outputs, ONNX FP32 must match torch on named outputs (np.allclose) and give
  identical decoded predictions.
- INT8: on dev and test together (enough relations that one flipped decision is not half a point), entity and
  relation F1 must each stay within the tolerance of FP32 at every batch size of INT8_GATE_BATCH_SIZES (dynamic
  quantisation makes INT8 results depend on batch composition); the share of identical decisions is reported.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from rasd import pipeline
from rasd.backend import load_exported
from rasd.schema import Document

from .metrics import headline, score
from .modeling import TorchBackend

INT8_TOLERANCE = 0.005  # F1, absolute (0.5 point)


class GateFailure(RuntimeError):
    pass


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
