"""INT8 graphs through the gate: quantise with a recipe, gate against FP32, and if refused try once more with the
encoder's most sensitive MatMuls kept in FP32 (a per-node scan). Every try is recorded; the INT8 files stay only if
one passed."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

from rasd.onnx_spec import ENCODER, RELATION
from rasd.schema import Document, read_documents

from .gate import int8_gate
from .modeling import RasdModel
from .onnx_graphs import export_encoder
from .quantize import (RECIPE_OPTIONS, calibration_batches, is_static, needs_calibration, quantize_graphs,
                       sensitivity_scan)

# When the gate refuses INT8, one more try keeps this many of the encoder's most sensitive MatMuls (a per-node scan)
# in FP32. Measured on session 11's default: dynamic-smooth lost 0.85 relation point; with its 6 most sensitive
# nodes (the six feed-forward output MatMuls) in FP32, 0.23, at 5,205 against 6,232 encoder tokens/s (FP32 4,083).
INT8_FALLBACK_NODES = 6


def int8_calibration(spec, tokenizer, data_dir: Optional[str]):
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


def int8_attempt(job: Int8Job, recipe: str, exclude: Sequence[str]) -> dict:
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


def publish_int8(job: Int8Job, recipe: str, exclude: Sequence[str], fallback_nodes: int) -> dict:
    """The INT8 set through the gate: the recipe as asked, then, if refused, the same recipe with the most
    sensitive encoder nodes also kept FP32. Every try is recorded (int8_attempts); the INT8 files stay only if one
    passed."""
    attempts = [int8_attempt(job, recipe, exclude)]
    if not attempts[-1]["int8_published"] and job.gate_docs and fallback_nodes and job.calibration is not None:
        with tempfile.TemporaryDirectory(dir=job.tmp) as scratch:
            scan = sensitivity_scan(job.tmp, job.calibration[:4], scratch, smooth=bool(RECIPE_OPTIONS[recipe][4]))
        worst = [r["node"] for r in scan if r["node"] not in exclude][:fallback_nodes]
        attempts.append({**int8_attempt(job, recipe, list(exclude) + worst), "int8_scan": scan[:2 * fallback_nodes]})
    result = attempts[-1]
    result["int8_attempts"] = [{**a["int8_recipe"], "drop": a.get("int8_drop"), "published": a["int8_published"],
                                "batch_sizes": [int(b) for b in a.get("int8_by_batch_size", {})]} for a in attempts]
    if not result["int8_published"]:
        for g in (ENCODER, RELATION):
            os.remove(os.path.join(job.tmp, g["int8_file"]))
    return result
