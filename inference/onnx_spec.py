"""One spec of the exported graphs: file names, input/output names, dtypes
and dynamic axes. The exporter and the runtime both read it, so a renamed
input cannot silently break serving.
"""
from __future__ import annotations

ENCODER = {
    "file": "encoder.onnx",
    "int8_file": "encoder.int8.onnx",
    "inputs": {"input_ids": ("int64", ("batch", "sequence")),
               "attention_mask": ("int64", ("batch", "sequence"))},
    "outputs": {"tag_logits": ("float32", ("batch", "sequence", "tags")),
                "hidden_states": ("float32", ("batch", "sequence", "hidden")),
                # The input states of the top N layers, for the typed-marker relation pass (rasd_train.markers);
                # only a graph whose relation graph reads them has this output.
                "layer_states": ("float32", ("layers", "batch", "sequence", "hidden")),
                # Scores of the token span starting at each position, per width, per class (rasd.spans); only a
                # model with a span head (model.span_max_tokens) has this output.
                "span_logits": ("float32", ("batch", "sequence", "widths", "classes"))},
    "optional_outputs": ("layer_states", "span_logits"),
}
RELATION = {
    "file": "relation.onnx",
    "int8_file": "relation.int8.onnx",
    "inputs": {"hidden_states": ("float32", ("batch", "sequence", "hidden")),
               "pair_batch": ("int64", ("pairs",)),
               "head_span": ("int64", ("pairs", 2)),
               "tail_span": ("int64", ("pairs", 2)),
               "head_type": ("int64", ("pairs",)),
               "tail_type": ("int64", ("pairs",)),
               "distance_bucket": ("int64", ("pairs",)),
               "sentence_gap": ("int64", ("pairs",)),
               "layer_states": ("float32", ("layers", "batch", "sequence", "hidden")),
               "attention_mask": ("int64", ("batch", "sequence"))},
    "outputs": {"relation_logits": ("float32", ("pairs", "classes"))},
    # Inputs of features a model may be trained without (config.relation_features):
    # its graph then lacks them, and the runtime feeds only what a graph declares.
    "optional": ("sentence_gap", "layer_states", "attention_mask"),
    # Inputs that come from the encoder side (its outputs, and its attention mask), not from the pairs.
    "context": ("hidden_states", "layer_states", "attention_mask"),
}
GRAPHS = {"encoder": ENCODER, "relation": RELATION}

CONFIG_FILE = "rasd_config.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
# 2: rasd_config.json carries the whole scheme and rasd's version; window_length/window_stride.
FORMAT_VERSION = 2


def graph_files(available, quantized: bool) -> list:
    """The two graph files to load from those `available`: INT8 when asked for and published, else FP32.

    The one place that chooses between INT8 and FP32 (Hub download, Extractor, export gate, bench).
    """
    int8 = [ENCODER["int8_file"], RELATION["int8_file"]]
    if quantized and all(f in available for f in int8):
        return int8
    return [ENCODER["file"], RELATION["file"]]


def with_inputs(graph: dict, names) -> dict:
    """A copy of a graph spec declaring only the inputs `names` (in the spec's order)."""
    keep = set(names)
    unknown = keep - set(graph["inputs"])
    if unknown:
        raise KeyError(f"not inputs of this graph: {sorted(unknown)}")
    return {**graph, "inputs": {k: v for k, v in graph["inputs"].items() if k in keep}}


def dynamic_axes(graph: dict) -> dict:
    """{name: {axis index: axis name}} for the symbolic (string) axes."""
    out = {}
    for name, (_, axes) in {**graph["inputs"], **graph["outputs"]}.items():
        dyn = {i: a for i, a in enumerate(axes) if isinstance(a, str)}
        if dyn:
            out[name] = dyn
    return out
