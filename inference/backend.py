"""The seam between the pipeline and whatever runs the model.

A `Backend` has two methods on numpy arrays, named like the graphs in
onnx_spec:

    tag(input_ids[B,T], attention_mask[B,T]) -> (tag_logits[B,T,n_tags], context)
    relate(context, pairs: {name: array} keyed by pairs.PAIR_INPUTS) -> relation_logits[P, 1+n_rel]

`context` is the relation graph's encoder-side inputs by name
(onnx_spec.RELATION["context"]): hidden_states[B,T,H] always, and for a
model with typed markers layer_states[N,B,T,H] and attention_mask[B,T].
The pipeline keeps it per batch and hands it back untouched.

The torch model (training, evaluation, export parity) and the ONNX graphs
(service, bench, export gate) both implement it, so they decode through the
very same code. `ModelSpec` is what decoding needs to know about a model, and
`load_exported` is the one loader of an exported model's files.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Protocol, Tuple

import numpy as np

from .calibration import Calibration
from .decode import DECODINGS, LearnedTransitions
from .onnx_spec import CONFIG_FILE, FORMAT_VERSION, TOKENIZER_FILE, graph_files
from .scheme import Scheme, SchemeError


class ModelFilesError(RuntimeError):
    """A model's files are missing, corrupt, unreachable or of another format."""


class Backend(Protocol):
    def tag(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
        ...

    def relate(self, context: Dict[str, np.ndarray], pairs: Dict[str, np.ndarray]) -> np.ndarray:
        ...


@dataclass
class ModelSpec:
    """What decoding needs to know about a trained model; read from its config."""
    scheme: Scheme
    id2tag: List[str]
    window_length: int = 256
    window_stride: int = 64
    decoding: str = "argmax"  # how entities are read: tags by "argmax" or "viterbi" (rasd.decode), or "spans"
    span_max_tokens: int = 0  # the span head's widest span in tokens (rasd.spans); 0 = the model has none
    calibration: Calibration = field(default_factory=Calibration)  # raw score -> probability (rasd.calibration)
    crf: Optional[LearnedTransitions] = None  # a CRF tagger's learned transition scores, read by Viterbi

    def __post_init__(self):
        if self.decoding not in DECODINGS:
            raise SchemeError(f"unknown decoding {self.decoding!r} (known: {', '.join(DECODINGS)})")
        if self.decoding == "spans" and self.span_max_tokens < 1:
            raise SchemeError("decoding 'spans' needs a span head: span_max_tokens is 0")
        if list(self.id2tag) != self.scheme.bio_tags():
            raise SchemeError(f"the model's tags {self.id2tag} are not the IOB2 tags of its scheme "
                              f"{self.scheme.name!r} {self.scheme.bio_tags()}")

    def to_dict(self) -> dict:
        return {"scheme": self.scheme.to_dict(), "id2tag": list(self.id2tag), "window_length": self.window_length,
                "window_stride": self.window_stride, "decoding": self.decoding,
                **({"span_max_tokens": self.span_max_tokens} if self.span_max_tokens else {}),
                "calibration": self.calibration.to_dict(), **({"crf": self.crf.to_dict()} if self.crf else {})}

    @classmethod
    def from_dict(cls, d: dict, where: str = "model config") -> "ModelSpec":
        missing = [k for k in ("scheme", "id2tag", "window_length", "window_stride") if k not in d]
        if missing:
            raise ModelFilesError(f"{where}: lacks {', '.join(missing)}")
        return cls(scheme=Scheme.from_dict(d["scheme"], where=f"{where}: scheme"), id2tag=list(d["id2tag"]),
                   window_length=int(d["window_length"]), window_stride=int(d["window_stride"]),
                   decoding=d.get("decoding", "argmax"), span_max_tokens=int(d.get("span_max_tokens", 0)),
                   calibration=_calibration(d.get("calibration"), where),
                   crf=_learned_transitions(d.get("crf"), len(d["id2tag"]), where))


def _learned_transitions(d, n_tags: int, where: str) -> Optional[LearnedTransitions]:
    if d is None:
        return None
    try:
        return LearnedTransitions.from_dict(d, n_tags)
    except ValueError as e:
        raise ModelFilesError(f"{where}: bad crf transition scores: {e}") from None


def _calibration(d, where: str) -> Calibration:
    try:
        return Calibration.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ModelFilesError(f"{where}: bad calibration {d!r}: {e}") from None


@dataclass
class LoadedModel:
    model_dir: str
    config: dict
    spec: ModelSpec
    tokenizer: object  # tokenizers.Tokenizer
    backend: Backend
    quantized: bool


def read_config(model_dir: str) -> dict:
    """rasd_config.json, refusing other format versions with a message that says what to do."""
    path = os.path.join(model_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except FileNotFoundError:
        raise ModelFilesError(f"{model_dir}: no {CONFIG_FILE}; is this a directory written by `rasd export`?") \
            from None
    except json.JSONDecodeError as e:
        raise ModelFilesError(f"{path}: unreadable ({e})") from None
    version = cfg.get("format_version")
    if version != FORMAT_VERSION:
        made_by = cfg.get("rasd_version", "rasd 0.1" if version == 1 else "an unknown rasd")
        raise ModelFilesError(f"{model_dir}: export format {version!r} (written by {made_by}); this rasd reads "
                              f"format {FORMAT_VERSION}. Re-export the model with this rasd, or install the rasd "
                              f"version that wrote it")
    return cfg


def load_exported(model_dir: str, quantized: bool = True, threads: Optional[int] = None,
                  verify: bool = True) -> LoadedModel:
    """Config, spec, tokenizer and ONNX backend of an exported model directory.

    verify=True checks every file it reads against manifest.json; without
    it (an export still being gated has no manifest yet) the graphs are
    chosen among the files present.
    """
    from tokenizers import Tokenizer

    from .hub import read_manifest, verify_files
    from .runtime import OnnxBackend
    available = read_manifest(model_dir) if verify else os.listdir(model_dir)
    graphs = graph_files(available, quantized)
    if verify:
        verify_files(model_dir, [CONFIG_FILE, TOKENIZER_FILE] + graphs)
    cfg = read_config(model_dir)
    try:
        spec = ModelSpec.from_dict(cfg, where=os.path.join(model_dir, CONFIG_FILE))
    except SchemeError as e:
        raise ModelFilesError(str(e)) from None
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, TOKENIZER_FILE))
    backend = OnnxBackend(*(os.path.join(model_dir, g) for g in graphs), threads=threads)
    return LoadedModel(model_dir, cfg, spec, tokenizer, backend, quantized=graphs[0].endswith(".int8.onnx"))
