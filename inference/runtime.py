"""onnxruntime sessions for the two graphs, as a pipeline backend.

One InferenceSession per graph, created once and shared: onnxruntime's
Run() is thread-safe, so an Extractor can serve many threads at once.
Inputs are checked against the graph's declared names before running so
that a mismatched model gives an error naming the input, not a crash deep
inside onnxruntime.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np
import onnxruntime as ort

from .backend import ModelFilesError
from .onnx_spec import ENCODER, RELATION, with_inputs


class ModelFormatError(ModelFilesError):
    """The graphs of a model do not match what this version of rasd expects."""


def default_threads() -> int:
    """The cores this process may run on (respects taskset and container CPU sets), not every core of the host."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _session(path: str, threads: Optional[int]) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or default_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelFormatError(f"{path}: onnxruntime cannot load this graph: {e}") from e


def _check_io(sess: ort.InferenceSession, graph: dict, path: str) -> dict:
    """The graph spec narrowed to the inputs this graph declares; an error if they are not what rasd knows."""
    have = {i.name for i in sess.get_inputs()}
    want = set(graph["inputs"])
    required = want - set(graph.get("optional", ()))
    if not required <= have <= want:
        raise ModelFormatError(f"{os.path.basename(path)}: graph inputs {sorted(have)} differ from the expected "
                               f"{sorted(want)}; was it exported by a different rasd version?")
    outs = {o.name for o in sess.get_outputs()}
    needed = set(graph["outputs"]) - set(graph.get("optional_outputs", ()))
    if not needed <= outs:
        raise ModelFormatError(f"{os.path.basename(path)}: graph outputs {sorted(outs)} lack "
                               f"{sorted(needed - outs)}")
    narrowed = with_inputs(graph, have)
    return {**narrowed, "outputs": {k: v for k, v in graph["outputs"].items() if k in outs}}


class OnnxBackend:
    def __init__(self, encoder_path: str, relation_path: str, threads: Optional[int] = None):
        self.encoder = _session(encoder_path, threads)
        self.encoder_spec = _check_io(self.encoder, ENCODER, encoder_path)
        self.relation = _session(relation_path, threads)
        self.relation_spec = _check_io(self.relation, RELATION, relation_path)
        self.hidden_size = self.encoder.get_outputs()[1].shape[-1]
        # What the relation graph reads from the encoder side, and whether it needs the attention mask.
        self.context_outputs = [n for n in self.encoder_spec["outputs"] if n != "tag_logits"]
        wanted = set(self.relation_spec["inputs"]) & set(RELATION["context"])
        missing = wanted - set(self.context_outputs) - {"attention_mask"}
        if missing:
            raise ModelFormatError(f"{os.path.basename(relation_path)} reads {sorted(missing)}, which "
                                   f"{os.path.basename(encoder_path)} does not output")
        self.relation_reads_mask = "attention_mask" in wanted

    @staticmethod
    def _feed(graph: dict, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        feed = {}
        for name, (dtype, axes) in graph["inputs"].items():
            if name not in arrays:
                raise ValueError(f"no value for the graph input {name!r}")
            a = np.ascontiguousarray(arrays[name])
            if a.dtype != np.dtype(dtype):
                a = a.astype(dtype)
            if a.ndim != len(axes):
                raise ValueError(f"input {name!r} must have {len(axes)} dimensions {axes}, got shape {a.shape}")
            feed[name] = a
        return feed

    def tag(self, input_ids, attention_mask):
        logits, *states = self.encoder.run(["tag_logits"] + self.context_outputs, self._feed(
            self.encoder_spec, {"input_ids": input_ids, "attention_mask": attention_mask}))
        context = dict(zip(self.context_outputs, states))
        if self.relation_reads_mask:
            context["attention_mask"] = np.asarray(attention_mask, dtype=np.int64)
        return logits, context

    def relate(self, context: Dict[str, np.ndarray], pairs: Dict[str, np.ndarray]):
        (logits,) = self.relation.run(list(RELATION["outputs"]), self._feed(self.relation_spec, {**context, **pairs}))
        return logits
