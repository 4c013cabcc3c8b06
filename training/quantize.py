"""INT8 recipes for the exported graphs, chosen by measurement (rasd_train.quant_compare).

Recipes (the encoder graph; the relation graph, a small MLP over pair
features, is dynamic INT8 with the dynamic recipes and stays FP32 with the
static ones, so that a static export's outputs never depend on the batch):

- `dynamic-ffn-fp32`: dynamic INT8 (weights per channel, activation ranges
  computed per batch at run time) of every MatMul except the feed-forward
  output projections, whose post-GELU inputs have the widest range.
- `dynamic`: dynamic INT8 of every MatMul.
- `static`: QDQ with activation ranges calibrated once on training texts.
  Fixed ranges make a document's output independent of its batch mates,
  and save the per-batch range computation.
- `static-ffn-fp32`: `static`, feed-forward output projections kept FP32.

Any recipe takes `exclude`: node names kept FP32 (from the sensitivity scan).
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence

import numpy as np

from rasd.onnx_spec import ENCODER, RELATION

RECIPES = ("dynamic-ffn-fp32", "dynamic", "static", "static-ffn-fp32")
DEFAULT_RECIPE = "dynamic-ffn-fp32"


def ffn_output_matmuls(model_path: str) -> List[str]:
    """Names of the feed-forward output projections (…/output/dense/MatMul outside attention)."""
    import onnx
    graph = onnx.load(model_path, load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul")
            and "/attention/" not in n.name]


def matmul_nodes(model_path: str) -> List[str]:
    import onnx
    graph = onnx.load(model_path, load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]


class WindowReader:
    """onnxruntime CalibrationDataReader over encoder inputs: padded batches of token windows."""

    def __init__(self, batches: Sequence[dict]):
        self._it = iter(batches)

    def get_next(self) -> Optional[dict]:
        return next(self._it, None)


def calibration_batches(texts: Iterable[str], tokenizer, spec, batch_size: int = 8, max_windows: int = 128):
    """Encoder input batches from `texts` cut into the service's windows (training texts, never dev/test)."""
    from rasd.align import SpecialTokens, make_windows, tokenize_text
    from rasd.pipeline import pad_rows
    sp = SpecialTokens.from_tokenizer(tokenizer)
    rows: List[List[int]] = []
    for t in texts:
        rows += [w.input_ids for w in make_windows(tokenize_text(t, tokenizer), sp, spec.window_length,
                                                   spec.window_stride)]
        if len(rows) >= max_windows:
            break
    rows = rows[:max_windows]
    out = []
    for b in range(0, len(rows), batch_size):
        ids, mask = pad_rows(rows[b:b + batch_size], sp.pad_id)
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def quantize_encoder(src: str, dst: str, recipe: str, exclude: Sequence[str] = (),
                     calibration: Optional[Sequence[dict]] = None) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnx import TensorProto
    FLOAT = TensorProto.FLOAT  # ONNX shape inference cannot type the fused ops' outputs (rasd_train.fuse)
    if recipe not in RECIPES:
        raise ValueError(f"unknown INT8 recipe {recipe!r}; known: {', '.join(RECIPES)}")
    keep = list(exclude) + (ffn_output_matmuls(src) if recipe.endswith("ffn-fp32") else [])
    if recipe.startswith("dynamic"):
        # "Attention": a fused graph's attention op (rasd_train.fuse), with the Q/K/V projections inside,
        # becomes QAttention; on an unfused graph those projections are plain MatMuls.
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gemm", "Attention"], nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": FLOAT})
        return
    if not calibration:
        raise ValueError(f"recipe {recipe!r} needs calibration batches (training texts)")
    # U8 activations and S8 per-channel weights: the pair onnxruntime's x86 kernels run fastest.
    quantize_static(src, dst, WindowReader(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                   "DefaultTensorType": FLOAT})


def quantize_graphs(out_dir: str, recipe: str = DEFAULT_RECIPE, exclude: Sequence[str] = (),
                    calibration: Optional[Sequence[dict]] = None) -> str:
    """Write both graphs of the INT8 set next to the FP32 ones in out_dir; returns how the relation graph went."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_encoder(os.path.join(out_dir, ENCODER["file"]), os.path.join(out_dir, ENCODER["int8_file"]), recipe,
                     exclude, calibration)
    src, dst = os.path.join(out_dir, RELATION["file"]), os.path.join(out_dir, RELATION["int8_file"])
    if recipe.startswith("static"):
        shutil.copyfile(src, dst)  # the INT8 set's relation graph is the FP32 one: batch-independent
        return "fp32"
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
    return "dynamic"


def output_error(fp32_path: str, int8_path: str, batches: Sequence[dict]) -> float:
    """Mean absolute difference of the tag logits between two encoder graphs (the sensitivity scan's measure)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    a = ort.InferenceSession(fp32_path, opts, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(int8_path, opts, providers=["CPUExecutionProvider"])
    errs = []
    for feed in batches:
        la, lb = a.run(["tag_logits"], feed)[0], b.run(["tag_logits"], feed)[0]
        m = feed["attention_mask"][..., None].astype(bool)
        errs.append(float(np.abs(la - lb)[np.broadcast_to(m, la.shape)].mean()))
    return float(np.mean(errs))
