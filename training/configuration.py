"""RasdConfig: everything needed to rebuild and decode a model (the scheme, the tag map, window/stride, head
settings, the encoder's own config, the rasd version that wrote it), so a saved directory is self-describing and
needs no Hub access to load. Decoding reads its settings from here (spec())."""
from __future__ import annotations

from typing import List, Optional

from transformers import AutoConfig, PretrainedConfig

import rasd
from rasd.backend import ModelSpec
from rasd.calibration import Calibration
from rasd.decode import LearnedTransitions
from rasd.scheme import Scheme, builtin_scheme

RELATION_FEATURES = ("sentence_gap", "context_attention")


class RasdConfig(PretrainedConfig):
    """Everything needed to rebuild and decode a model: its scheme (labels and
    relation constraints), tag map, windowing, head sizes and the encoder's
    own config. Saved as config.json with the rasd version that wrote it."""
    model_type = "rasd"

    def __init__(self, encoder_config: Optional[dict] = None, scheme: Optional[dict] = None,
                 window_length: int = 256, window_stride: int = 64, dropout: float = 0.1, type_embedding_dim: int = 32,
                 distance_embedding_dim: int = 16, relation_hidden_size: int = 256,
                 relation_loss_weight: float = 1.0, relation_left_context: int = 0,
                 relation_features: Optional[List[str]] = None, encoder_name: str = "",
                 rasd_version: str = "", decoding: str = "argmax", calibration: Optional[dict] = None,
                 crf: bool = False, crf_scores: Optional[dict] = None, relation_markers: int = 0,
                 span_max_tokens: int = 0, span_hidden_size: int = 128, **kwargs):
        self.encoder_config = encoder_config or {}
        self.scheme = scheme if scheme is not None else _legacy_scheme(kwargs)
        self.rasd_version = rasd_version or rasd.__version__
        # Not `max_length`: transformers reserves that name for generation.
        self.window_length = window_length
        self.window_stride = window_stride
        self.dropout = dropout
        self.type_embedding_dim = type_embedding_dim
        self.distance_embedding_dim = distance_embedding_dim
        self.relation_hidden_size = relation_hidden_size
        self.relation_loss_weight = relation_loss_weight
        # Tokens before the first entity of a pair pooled as one more feature:
        # the predicate often stands there (انسحبت القوات من قاعدة ...). 0 = off
        # (the default, so checkpoints saved without this field still load).
        self.relation_left_context = relation_left_context
        # Extra pair features (issue 11, relation variant c), [] by default so older
        # checkpoints load unchanged: "sentence_gap" embeds the sentence ends between
        # the pair (an optional relation-graph input); "context_attention" adds a
        # learned attention pooling of the tokens between head and tail, which can
        # single out the predicate (انسحب، سلّم) that a plain mean dilutes.
        self.relation_features = list(relation_features or [])
        unknown = set(self.relation_features) - set(RELATION_FEATURES)
        if unknown:
            raise ValueError(f"model.relation_features: unknown {sorted(unknown)} (known: {', '.join(RELATION_FEATURES)})")
        # Typed entity markers through the encoder's top N layers (rasd_train.markers; issue 11, relation
        # design b); 0 = off, the default, so older checkpoints load unchanged.
        self.relation_markers = int(relation_markers)
        if self.relation_markers < 0:
            raise ValueError(f"model.relation_markers must be >= 0 (a number of layers), got {relation_markers}")
        # A span head scoring every span up to this many tokens (rasd_train.span_head; issue 11, item 1); 0 = none,
        # the default, so older checkpoints load unchanged. decoding "spans" reads it; tag decodings still work.
        self.span_max_tokens = int(span_max_tokens)
        self.span_hidden_size = span_hidden_size
        self.encoder_name = encoder_name
        self.decoding = decoding  # entities from tags ("argmax", "viterbi": rasd.decode) or "spans" (rasd.spans)
        self.calibration = calibration or {}  # score maps fitted on dev (rasd.calibration); {} = raw scores
        # A CRF over the tagger (rasd_train.crf): trained jointly, its learned scores copied here on save
        # ({"start", "pair"}, rasd.decode.LearnedTransitions) so decoding reads them from the config.
        self.crf = crf
        self.crf_scores = crf_scores
        tags = self.scheme_obj().bio_tags()
        kwargs.setdefault("id2label", {i: t for i, t in enumerate(tags)})
        kwargs.setdefault("label2id", {t: i for i, t in enumerate(tags)})
        super().__init__(**kwargs)

    def scheme_obj(self) -> Scheme:
        return Scheme.from_dict(self.scheme, where="config.json scheme")

    @property
    def tags(self) -> List[str]:
        return [self.id2label[i] for i in range(len(self.id2label))]

    def spec(self) -> ModelSpec:
        learned = None
        if self.crf and self.crf_scores:
            learned = LearnedTransitions.from_dict(self.crf_scores, len(self.tags))
        return ModelSpec(scheme=self.scheme_obj(), id2tag=self.tags, window_length=self.window_length,
                         window_stride=self.window_stride, decoding=self.decoding,
                         span_max_tokens=self.span_max_tokens, calibration=Calibration.from_dict(self.calibration),
                         crf=learned)

    def encoder_hf_config(self):
        cfg = dict(self.encoder_config)
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def _legacy_scheme(kwargs: dict) -> dict:
    """The scheme of a config.json written by rasd 0.1 (label lists, no scheme), or the built-in one."""
    ents = kwargs.pop("entity_labels", None)
    rels = kwargs.pop("relation_labels", None)
    types = kwargs.pop("relation_types", None)
    if ents is None:
        return builtin_scheme().to_dict()
    return {"name": "military", "version": "1", "entities": list(ents),
            "relations": {r: {"head": list(types[r][0]), "tail": list(types[r][1])} for r in rels}}
