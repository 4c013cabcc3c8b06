"""The trained model's two ONNX graphs, written from torch: the encoder with its tagger (fused for onnxruntime
unless asked not to) and the relation head. One wrapper module per graph; input and output names and dynamic axes
come from rasd.onnx_spec, so the service binds them by name."""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from rasd import pipeline
from rasd.onnx_spec import ENCODER, RELATION, dynamic_axes, with_inputs

from .fuse import eager_attention, fuse_encoder
from .modeling import RasdModel

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
