"""SmoothQuant-style channel scaling of the encoder graph before INT8 (issue 12).

INT8 activations share one range per tensor, and a BERT layer's inputs have
a few channels far larger than the rest, so most channels keep only a few
of their 256 levels. SmoothQuant (Xiao et al., 2023) moves that range into
the weights: for an input X and weight W of a quantised node,

    X @ W = (X / s) @ (s * W),   s_j = max|X_j| ** alpha / max|W_j| ** (1 - alpha)

per input channel j. In a post-LayerNorm BERT the scale cannot be folded
into the LayerNorm, because the same tensor also feeds the residual path;
so an explicit Mul by 1/s goes in front of each quantised node, on that
node's edge only. In FP32 the graph computes the same function (the export
gate compares it with FP32 anyway). max|X_j| comes from the calibration
batches (training texts).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

# How much of the range moves into the weights. Measured on the default model (mean |tag-logit error| of
# dynamic INT8 on dev windows): 0.190 unscaled; alpha 0.5 0.151, 0.7 0.069, 0.8 0.073, 0.9 0.087.
ALPHA = 0.75
# The values smooth_encoder(alpha="auto") chooses among, node by node.
ALPHA_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)

# op -> index of its weight input; input 0 is the activation
WEIGHT_INPUT = {"MatMul": 1, "Attention": 1}


def _targets(model, skip: Sequence[str]) -> List:
    inits = {t.name for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in WEIGHT_INPUT and n.name not in skip
            and n.input[WEIGHT_INPUT[n.op_type]] in inits]


def activation_stats(model_path: str, names: List[str], batches: Sequence[dict], sample_rows: int = 256,
                     seed: int = 0) -> Dict[str, dict]:
    """Per tensor: per-channel max |x| over the batches (real tokens only), and, when sample_rows > 0, per
    batch its per-channel min and max over the whole tensor (what onnxruntime's dynamic quantiser ranges
    over) plus a sample of real-token rows, from which a node's INT8 error can be simulated."""
    import onnx
    import onnxruntime as ort
    model = onnx.load(model_path)
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    out: Dict[str, dict] = {n: {"absmax": None, "batches": []} for n in names}
    for feed in batches:
        real = feed["attention_mask"].astype(bool)
        for name, value in zip(names, sess.run(names, feed)):
            rows = value[real].reshape(-1, value.shape[-1])  # [tokens (x widths for the span head), channels]
            st = out[name]
            m = np.abs(rows).max(axis=0)
            st["absmax"] = m if st["absmax"] is None else np.maximum(st["absmax"], m)
            if not sample_rows:
                continue
            flat = value.reshape(-1, value.shape[-1])
            pick = rng.choice(len(rows), size=min(sample_rows, len(rows)), replace=False)
            st["batches"].append({"min": flat.min(axis=0), "max": flat.max(axis=0), "rows": rows[pick]})
    return out


def activation_maxima(model_path: str, names: List[str], batches: Sequence[dict]) -> Dict[str, np.ndarray]:
    """Per-channel max |x| of the named tensors over the batches (real tokens only)."""
    return {n: st["absmax"] for n, st in activation_stats(model_path, names, batches, sample_rows=0).items()}


def smoothing_scale(x_max: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    x_max = np.maximum(x_max, 1e-5)
    w_max = np.maximum(np.abs(w).max(axis=1), 1e-5)
    return (x_max ** alpha / w_max ** (1 - alpha)).astype(np.float32)


def simulated_int8_error(stats: dict, w: np.ndarray, s: np.ndarray, exact: Sequence[np.ndarray]) -> float:
    """Mean squared error of X @ W computed as onnxruntime's dynamic INT8 would, after scaling by s.

    Activations: uint8, asymmetric, one range per tensor covering 0 (DynamicQuantizeLinear); weights:
    int8, symmetric, one scale per output column (per_channel=True). exact: X @ W of each batch's rows.
    This is exact integer arithmetic; onnxruntime's U8S8 kernel on AVX2 without VNNI can saturate int16
    partial sums beyond it (measured: the issue-12 note), so the ranking is that of exact kernels."""
    ws = w * s[:, None]
    w_scale = np.maximum(np.abs(ws).max(axis=0), 1e-12) / 127.0
    wq = np.clip(np.round(ws / w_scale), -127, 127) * w_scale
    err = 0.0
    for b, y in zip(stats["batches"], exact):
        x = b["rows"] / s
        lo, hi = min(0.0, float((b["min"] / s).min())), max(0.0, float((b["max"] / s).max()))
        scale = max(hi - lo, 1e-12) / 255.0
        zero = np.round(-lo / scale)
        xq = (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale
        err += float(((xq @ wq - y) ** 2).mean())
    return err / max(len(stats["batches"]), 1)


def _best_alpha(st: dict, w: np.ndarray) -> float:
    exact = [b["rows"] @ w for b in st["batches"]]
    return min(ALPHA_GRID, key=lambda g: simulated_int8_error(st, w, smoothing_scale(st["absmax"], w, g), exact))


def smooth_encoder(src: str, dst: str, batches: Sequence[dict], alpha=ALPHA,
                   skip: Sequence[str] = ()) -> Dict[str, object]:
    """Write the scaled graph to dst; returns how many nodes were scaled, the alphas and the largest scale.

    alpha: one value for every node, or "auto": each node takes the value of ALPHA_GRID under which its
    own output, quantised as onnxruntime's dynamic INT8 would, is closest to FP32 on the calibration
    batches (training texts)."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(src)
    nodes = _targets(model, skip)
    stats = activation_stats(src, sorted({n.input[0] for n in nodes}), batches,
                             sample_rows=128 if alpha == "auto" else 0)
    inits = {t.name: t for t in model.graph.initializer}
    largest, chosen = 0.0, {}
    for node in nodes:
        w_init = inits[node.input[WEIGHT_INPUT[node.op_type]]]
        w = numpy_helper.to_array(w_init)  # [in, out]
        st = stats[node.input[0]]
        a = alpha if alpha != "auto" else _best_alpha(st, w)
        s = smoothing_scale(st["absmax"], w, a)
        chosen[node.name] = a
        largest = max(largest, float(s.max()))
        w_init.CopyFrom(numpy_helper.from_array((w * s[:, None]).astype(w.dtype), w_init.name))
        inv = numpy_helper.from_array((1.0 / s).astype(np.float32), f"{node.name}/smooth_scale")
        model.graph.initializer.append(inv)
        scaled = f"{node.name}/smoothed_input"
        model.graph.node.append(onnx.helper.make_node("Mul", [node.input[0], inv.name], [scaled],
                                                      name=f"{node.name}/smooth"))
        node.input[0] = scaled
    onnx.save(_topological(model), dst)
    return {"nodes": len(nodes), "alpha": alpha, "alphas": chosen, "largest_scale": round(largest, 3)}


def _topological(model):
    """The graph's nodes reordered so that each comes after the producers of its inputs (ONNX requires it)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
    return model
