"""INT8 recipes for the exported graphs, chosen by measurement (rasd_train.quant_compare).

Recipes of the encoder graph (the relation graph stays FP32, see
quantize_graphs):

- `dynamic`: dynamic INT8 of every MatMul and fused Attention: weights per
  channel, activation ranges computed per batch at run time.
- `dynamic-ffn-fp32`: the same, except the feed-forward output projections,
  whose post-GELU inputs have the widest range.
- `static`: QDQ with activation ranges calibrated once on training texts.
  Fixed ranges make a document's output independent of its batch mates,
  and save the per-batch range computation.
- `static-ffn-fp32`: `static`, feed-forward output projections kept FP32.
- `-u8` variants: weights as unsigned 8 bits (U8U8 kernels). onnxruntime's
  U8S8 kernels on x86 CPUs without VNNI (AVX2, like this machine) multiply
  pairs of bytes into 16-bit sums that can saturate; U8U8 kernels do not.
- `-rr` variants: 7-bit weights ("reduce_range"), the other way to avoid
  that saturation.
- `-smooth` variants: the graph's quantised inputs are first rescaled per
  channel (rasd_train.smooth, SmoothQuant), so that the few outlier
  channels of a BERT layer's inputs no longer set the whole range.

Any recipe takes `exclude`: node names kept FP32 (from the sensitivity scan).
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from rasd.onnx_spec import ENCODER, RELATION

# name -> (mode, keep feed-forward outputs FP32, weight type "s8"/"u8", reduce_range, smooth: False, True (the
# global rasd_train.smooth.ALPHA) or "auto" (alpha chosen node by node on the calibration texts))
RECIPE_OPTIONS = {
    "dynamic-smooth": ("dynamic", False, "s8", False, True),
    "dynamic-smooth-auto": ("dynamic", False, "s8", False, "auto"),
    "dynamic-smooth-ffn-fp32": ("dynamic", True, "s8", False, True),
    "static-smooth": ("static", False, "s8", False, True),
    "dynamic-ffn-fp32": ("dynamic", True, "s8", False, False),
    "dynamic": ("dynamic", False, "s8", False, False),
    "dynamic-u8": ("dynamic", False, "u8", False, False),
    "dynamic-u8-ffn-fp32": ("dynamic", True, "u8", False, False),
    "dynamic-rr": ("dynamic", False, "s8", True, False),
    "static": ("static", False, "s8", False, False),
    "static-ffn-fp32": ("static", True, "s8", False, False),
    "static-u8": ("static", False, "u8", False, False),
    "static-rr": ("static", False, "s8", True, False),
}
RECIPES = tuple(RECIPE_OPTIONS)


def is_static(recipe: str) -> bool:
    return RECIPE_OPTIONS[recipe][0] == "static"


def needs_calibration(recipe: str) -> bool:
    """Static ranges and smoothing scales are measured on training texts."""
    mode, _, _, _, smooth = RECIPE_OPTIONS[recipe]
    return mode == "static" or smooth


# Measured on the default model (dev+test, fused graph; the note of issue 12): the fastest recipe with the smallest
# loss. Plain dynamic INT8 is as fast but loses 1.5 entity points; static QDQ keeps accuracy but runs slower than
# the fused FP32 graph on this CPU.
DEFAULT_RECIPE = "dynamic-smooth"


def ffn_output_matmuls(model_path: str) -> List[str]:
    """Names of the feed-forward output projections (…/output/dense/MatMul outside attention)."""
    import onnx
    graph = onnx.load(model_path, load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.name.endswith("/output/dense/MatMul")
            and "/attention/" not in n.name]


def classifier_matmuls(model_path: str) -> List[str]:
    """The tagger's output projection: kept FP32 in every recipe. It is a sliver of the compute (hidden x tags),
    and its quantisation error lands directly in the tag logits."""
    import onnx
    graph = onnx.load(model_path, load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.name.startswith("/tagger/")]


def matmul_nodes(model_path: str) -> List[str]:
    import onnx
    graph = onnx.load(model_path, load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm", "Attention")]


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
    import onnx
    from onnx import TensorProto
    FLOAT = TensorProto.FLOAT  # ONNX shape inference cannot type the fused ops' outputs (rasd_train.fuse)
    if recipe not in RECIPES:
        raise ValueError(f"unknown INT8 recipe {recipe!r}; known: {', '.join(RECIPES)}")
    mode, ffn_fp32, weights, reduce_range, smooth = RECIPE_OPTIONS[recipe]
    if smooth:
        if not calibration:
            raise ValueError(f"recipe {recipe!r} needs calibration batches (training texts) for its scales")
        from .smooth import ALPHA, smooth_encoder
        smoothed = dst + ".smoothed.onnx"
        smooth_encoder(src, smoothed, calibration, alpha="auto" if smooth == "auto" else ALPHA, skip=exclude)
        try:
            base = recipe.replace("-smooth", "").replace("-auto", "")
            return quantize_encoder(smoothed, dst, base, exclude, calibration)
        finally:
            os.remove(smoothed)
    weight_type = QuantType.QUInt8 if weights == "u8" else QuantType.QInt8
    keep = list(exclude) + classifier_matmuls(src) + (ffn_output_matmuls(src) if ffn_fp32 else [])
    if mode == "dynamic":
        # "Attention": a fused graph's attention op (rasd_train.fuse), with the Q/K/V projections inside,
        # becomes QAttention; on an unfused graph those projections are plain MatMuls.
        quantize_dynamic(src, dst, weight_type=weight_type, per_channel=True, reduce_range=reduce_range,
                         op_types_to_quantize=["MatMul", "Gemm", "Attention"], nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": FLOAT})
        return
    if not calibration:
        raise ValueError(f"recipe {recipe!r} needs calibration batches (training texts)")
    if "Attention" in {n.op_type for n in onnx.load(src, load_external_data=False).graph.node}:
        # Measured: on a fused graph the QDQ quantiser types no activation behind the fused ops, so it
        # quantises weights only; the result runs slower than FP32 (0.78x) and its accuracy says nothing.
        raise ValueError(f"recipe {recipe!r} needs an unfused encoder graph (export_encoder(..., fuse=False)); "
                         f"{src} is fused")
    quantize_static(src, dst, WindowReader(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul", "Gemm"], per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=weight_type, nodes_to_exclude=keep,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": weights == "s8",
                                   "DefaultTensorType": FLOAT})


def quantize_graphs(out_dir: str, recipe: str = DEFAULT_RECIPE, exclude: Sequence[str] = (),
                    calibration: Optional[Sequence[dict]] = None, encoder_source: Optional[str] = None) -> str:
    """Write both graphs of the INT8 set next to the FP32 ones in out_dir; returns how the relation graph went.

    The relation graph stays FP32 in every recipe: pooling spans by prefix sums made it under 1% of the
    pipeline's time (rasd_train.profile_pipeline), so INT8 could gain at most that, and dynamic INT8 would
    make its outputs depend on the batch. encoder_source: the FP32 encoder to quantise, if not the
    published one (static recipes need an unfused trace)."""
    import shutil
    quantize_encoder(encoder_source or os.path.join(out_dir, ENCODER["file"]),
                     os.path.join(out_dir, ENCODER["int8_file"]), recipe, exclude, calibration)
    shutil.copyfile(os.path.join(out_dir, RELATION["file"]), os.path.join(out_dir, RELATION["int8_file"]))
    return "fp32"


def tag_logits(encoder_path: str, batches: Sequence[dict]) -> List[np.ndarray]:
    """The encoder graph's tag logits for each batch."""
    import onnxruntime as ort
    session = ort.InferenceSession(encoder_path, ort.SessionOptions(), providers=["CPUExecutionProvider"])
    return [session.run(["tag_logits"], feed)[0] for feed in batches]


def output_error(reference: Union[str, List[np.ndarray]], int8_path: str, batches: Sequence[dict]) -> float:
    """Mean absolute difference of the tag logits between two encoder graphs (the sensitivity scan's measure).
    reference: the FP32 graph's path, or its `tag_logits` on these batches, computed once for a whole scan."""
    ref = tag_logits(reference, batches) if isinstance(reference, str) else reference
    errs = []
    for feed, la, lb in zip(batches, ref, tag_logits(int8_path, batches)):
        m = feed["attention_mask"][..., None].astype(bool)
        errs.append(float(np.abs(la - lb)[np.broadcast_to(m, la.shape)].mean()))
    return float(np.mean(errs))


def sensitivity_scan(export_dir: str, batches: List[dict], scratch: str, smooth: bool = False) -> List[dict]:
    """Each MatMul/Attention quantised alone (dynamic INT8, the rest FP32), ranked by the tag-logit error it
    causes. smooth=True scans the SmoothQuant-scaled graph (rasd_train.smooth), as the -smooth recipes use it."""
    src = os.path.join(export_dir, ENCODER["file"])
    scanned = src
    if smooth:
        from .smooth import smooth_encoder
        scanned = os.path.join(scratch, "smoothed.onnx")
        smooth_encoder(src, scanned, batches)
    nodes = matmul_nodes(scanned)
    reference = tag_logits(src, batches)  # once: the FP32 run was half of a scan's time (measured, session 12)
    rows = []
    for name in nodes:
        dst = os.path.join(scratch, "one.onnx")
        quantize_encoder(scanned, dst, "dynamic", exclude=[n for n in nodes if n != name])
        rows.append({"node": name, "tag_logit_error": output_error(reference, dst, batches)})
    return sorted(rows, key=lambda r: -r["tag_logit_error"])
