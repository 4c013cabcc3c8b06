"""The joint model: one encoder pass feeds an IOB2 tagger and a span-pair
relation classifier (in the spirit of PURE's pooled span states).

Its config, RasdConfig (rasd_train.configuration), carries everything needed
to rebuild and decode the model, so a saved directory is self-describing and
needs no Hub access to load.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel

from rasd.backend import ModelSpec
from rasd.decode import LearnedTransitions
from rasd.onnx_spec import ENCODER, RELATION
from rasd.pairs import DISTANCE_BUCKETS, MAX_SENTENCE_GAP

from .configuration import RasdConfig
from .crf import TagCRF
from .markers import MARKERS_PER_PAIR, MarkerPass, check_layers
from .span_head import SpanHead, span_loss


def _prefix_sums(hidden_states: torch.Tensor) -> torch.Tensor:
    """[B*(T+1), H] running sums of each row's hidden states, a zero row first, in float64.

    The sum of tokens s <= t < e of row b is then prefix[b*(T+1) + e] - prefix[b*(T+1) + s]: every pooled
    span costs two gathered rows, whatever its length or the batch size (the relation graph used to build a
    [pairs, B*T] mask and multiply it by all hidden states). float64 keeps the differences of long running
    sums exact to float32 precision."""
    B, T, H = hidden_states.shape
    sums = hidden_states.to(torch.float64).cumsum(dim=1)
    return torch.cat([sums.new_zeros((B, 1, H)), sums], dim=1).reshape(-1, H)


def _span_mean(prefix: torch.Tensor, row_start: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
               dtype: torch.dtype) -> torch.Tensor:
    """Mean hidden state of tokens start <= t < end of each pair's row; row_start[p] = pair_batch[p] * (T+1).
    Empty spans (adjacent entities' context) pool to zeros."""
    ends = torch.maximum(ends, starts)
    total = prefix.index_select(0, row_start + ends) - prefix.index_select(0, row_start + starts)
    return (total / (ends - starts).clamp(min=1).unsqueeze(1).to(torch.float64)).to(dtype)


def _span_attention(hidden_states: torch.Tensor, scores: torch.Tensor, row_start: torch.Tensor,
                    starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Attention pooling of tokens start <= t < end of each pair's row: softmax(scores) inside the span times
    the hidden states, where scores [B, T] are one learned logit per token; row_start = pair_batch * (T+1).

    Softmax inside a span is sum(e^s_t h_t) / sum(e^s_t) over the span, so prefix sums of e^s_t h_t and e^s_t
    give every pair from two gathered rows each, like _span_mean (e^s is taken relative to each row's
    maximum, in float64). Empty spans pool to zeros."""
    w = torch.exp((scores - scores.max(dim=1, keepdim=True).values).to(torch.float64)).unsqueeze(-1)
    weighted, norm = _prefix_sums(hidden_states.to(torch.float64) * w), _prefix_sums(w)
    ends = torch.maximum(ends, starts)
    lo, hi = row_start + starts, row_start + ends
    total = weighted.index_select(0, hi) - weighted.index_select(0, lo)
    mass = norm.index_select(0, hi) - norm.index_select(0, lo)
    return (total / mass.clamp(min=1e-300)).to(hidden_states.dtype)


def _layer_index(name: str) -> int:
    """The transformer layer a weight belongs to (encoder.layer.N.…), or -1 for embeddings and the like."""
    parts = name.split(".")
    for a, b in zip(parts, parts[1:]):
        if a == "layer" and b.isdigit():
            return int(b)
    return -1


ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


def set_attention_dropout(enc_cfg: dict, value: float, where: str) -> None:
    """Set the encoder config's attention dropout, whichever name its family gives it."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"encoder.attention_dropout must be in [0, 1), got {value}")
    keys = [k for k in ATTENTION_DROPOUT_KEYS if k in enc_cfg]
    if not keys:
        raise ValueError(f"encoder.attention_dropout: the config of {where} has none of "
                         f"{', '.join(ATTENTION_DROPOUT_KEYS)}, so its attention dropout cannot be set")
    for k in keys:
        enc_cfg[k] = value


class RasdModel(PreTrainedModel):
    config_class = RasdConfig
    base_model_prefix = "rasd"
    supports_gradient_checkpointing = False

    def __init__(self, config: RasdConfig):
        super().__init__(config)
        enc_cfg = config.encoder_hf_config()
        try:  # BERT-like encoders: the pooler is unused and would get no gradient
            self.encoder = AutoModel.from_config(enc_cfg, add_pooling_layer=False)
        except TypeError:
            self.encoder = AutoModel.from_config(enc_cfg)
        h = enc_cfg.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        self.tagger = nn.Linear(h, len(config.id2label))
        if config.crf:
            self.crf = TagCRF(len(config.id2label))
        scheme = config.scheme_obj()
        self.type_embedding = nn.Embedding(len(scheme.entities), config.type_embedding_dim)
        self.distance_embedding = nn.Embedding(len(DISTANCE_BUCKETS), config.distance_embedding_dim)
        feats = set(config.relation_features)
        n_pooled = 3 + (config.relation_left_context > 0) + ("context_attention" in feats)
        pair_in = n_pooled * h + 2 * config.type_embedding_dim + config.distance_embedding_dim
        if "context_attention" in feats:
            self.context_scorer = nn.Linear(h, 1)
        if "sentence_gap" in feats:
            self.sentence_embedding = nn.Embedding(MAX_SENTENCE_GAP + 1, config.distance_embedding_dim)
            pair_in += config.distance_embedding_dim
        if config.relation_markers:
            check_layers(self.encoder_layers(), config.relation_markers, config.encoder_name or "the encoder")
            self.markers = MarkerPass(len(scheme.entities), h)
            pair_in += MARKERS_PER_PAIR * h
        if config.span_max_tokens:
            self.span_head = SpanHead(h, config.span_hidden_size, config.span_max_tokens, 1 + len(scheme.entities),
                                      config.dropout)
        self.pair_mlp = nn.Sequential(nn.Linear(pair_in, config.relation_hidden_size), nn.GELU(),
                                      nn.Dropout(config.dropout),
                                      nn.Linear(config.relation_hidden_size, 1 + len(scheme.relation_labels)))
        self.post_init()

    def _init_weights(self, module):
        # Only the heads are ours; the encoder's own init (or pretrained
        # weights loaded afterwards) is left to it.
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, 0.02)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    @classmethod
    def from_encoder(cls, encoder_name_or_path: str, keep_layers: int = 0, attention_dropout: Optional[float] = None,
                     **config_kwargs) -> "RasdModel":
        """A fresh model around a pretrained encoder (Hub id or local dir).

        keep_layers > 0 keeps only the encoder's lowest N transformer layers
        (the rest are dropped before training): half the layers is half the
        compute in training and in service."""
        enc = AutoModel.from_pretrained(encoder_name_or_path)
        enc_cfg = enc.config.to_dict()
        n_layers = enc_cfg.get("num_hidden_layers", 0)
        if keep_layers:
            if not 0 < keep_layers <= n_layers:
                raise ValueError(f"encoder.keep_layers {keep_layers}: {encoder_name_or_path} has {n_layers} layers")
            enc_cfg["num_hidden_layers"] = keep_layers
        if attention_dropout is not None:
            set_attention_dropout(enc_cfg, attention_dropout, encoder_name_or_path)
        config = RasdConfig(encoder_config=enc_cfg, encoder_name=encoder_name_or_path, **config_kwargs)
        model = cls(config)
        state = {k: v for k, v in enc.state_dict().items() if _layer_index(k) < (keep_layers or n_layers)}
        missing, unexpected = model.encoder.load_state_dict(state, strict=False)
        bad = [k for k in missing if "pooler" not in k]
        if bad:
            raise RuntimeError(f"encoder weights missing after loading {encoder_name_or_path}: {bad[:5]}")
        return model

    def relation_parameters(self):
        """(name, parameter) of the relation head: everything but the encoder and the tagger."""
        return [(n, p) for n, p in self.named_parameters()
                if not n.startswith(("encoder.", "tagger.", "crf.", "span_head."))]

    def spec(self) -> ModelSpec:
        """The decoding spec with this model's current CRF scores (the config's copy is refreshed on save)."""
        self._copy_crf_scores()
        return self.config.spec()

    def _copy_crf_scores(self) -> None:
        if self.config.crf:
            self.config.crf_scores = LearnedTransitions(self.crf.start.detach().double().cpu().numpy(),
                                                        self.crf.pair.detach().double().cpu().numpy()).to_dict()

    def save_pretrained(self, *args, **kwargs):
        self._copy_crf_scores()
        return super().save_pretrained(*args, **kwargs)

    # -- the two exported computations --------------------------------------

    def encoder_layers(self):
        """The encoder's transformer layers (BERT family: encoder.layer)."""
        return getattr(getattr(self.encoder, "encoder", None), "layer", [])

    def encoder_outputs(self) -> List[str]:
        """The encoder graph's outputs this model gives (layer_states for the marker pass, span_logits for the
        span head)."""
        has = {"layer_states": self.config.relation_markers, "span_logits": self.config.span_max_tokens}
        return [n for n in ENCODER["outputs"] if has.get(n, True)]

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(tag logits [B,T,n_tags], hidden states [B,T,H]), then, for the marker pass, the input states of the
        top relation_markers layers [N,B,T,H] and, for the span head, span logits [B,T,widths,classes]."""
        n = self.config.relation_markers
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=bool(n))
        hidden = out.last_hidden_state
        outputs = [self.tagger(self.dropout(hidden)), hidden]
        if n:  # hidden_states[i] is the input of layer i (0 = the embeddings); the top n layers' inputs.
            outputs.append(torch.stack(out.hidden_states[-n - 1:-1]))
        if self.config.span_max_tokens:
            outputs.append(self.span_head(self.dropout(hidden)))
        return tuple(outputs)

    def context(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """(tag logits, the relation graph's encoder-side inputs by name): what a backend's tag() returns."""
        logits, *states = self.encode(input_ids, attention_mask)
        ctx = dict(zip(self.encoder_outputs()[1:], states))
        if self.config.relation_markers:
            ctx["attention_mask"] = attention_mask
        return logits, ctx

    def relation_inputs(self) -> List[str]:
        """The relation graph's inputs this model reads (its optional ones only when a feature needs them)."""
        used = set(self.config.relation_features)
        if self.config.relation_markers:
            used |= {"layer_states", "attention_mask"}
        return [n for n in RELATION["inputs"] if n not in RELATION["optional"] or n in used]

    def relate(self, hidden_states, pair_batch, head_span, tail_span, head_type, tail_type, distance_bucket,
               sentence_gap=None, layer_states=None, attention_mask=None):
        """Logits [P, 1 + n_relations] (class 0 = no relation) for candidate pairs.

        The arguments are the relation graph's inputs (onnx_spec.RELATION), by name."""
        feats_on = self.config.relation_features
        prefix = _prefix_sums(hidden_states)
        row_start = pair_batch * (hidden_states.shape[1] + 1)
        dtype = hidden_states.dtype

        def mean(starts, ends):
            return _span_mean(prefix, row_start, starts, ends, dtype)

        # Context between the two spans, whichever comes first; empty when adjacent.
        ctx_start = torch.minimum(head_span[:, 1], tail_span[:, 1])
        ctx_end = torch.maximum(head_span[:, 0], tail_span[:, 0])
        pooled = [mean(head_span[:, 0], head_span[:, 1]), mean(tail_span[:, 0], tail_span[:, 1]),
                  mean(ctx_start, ctx_end)]
        if self.config.relation_left_context > 0:
            first = torch.minimum(head_span[:, 0], tail_span[:, 0])
            pooled.append(mean((first - self.config.relation_left_context).clamp(min=0), first))
        if "context_attention" in feats_on:
            scores = self.context_scorer(hidden_states).squeeze(-1)  # [B, T]
            pooled.append(_span_attention(hidden_states, scores, row_start, ctx_start, ctx_end))
        extra = [self.type_embedding(head_type), self.type_embedding(tail_type),
                 self.distance_embedding(distance_bucket)]
        if "sentence_gap" in feats_on:
            extra.append(self.sentence_embedding(sentence_gap))
        if self.config.relation_markers:
            layers = list(self.encoder_layers())[-self.config.relation_markers:]
            pooled.append(self.markers(layers, layer_states, attention_mask, pair_batch, head_span, tail_span,
                                       head_type, tail_type).to(dtype))
        feats = torch.cat(pooled + extra, dim=-1)
        return self.pair_mlp(self.dropout(feats))

    def forward(self, input_ids, attention_mask, labels=None, pairs=None, pair_labels=None, spans=None, **_):
        """Training step: `pairs` is the dict of relation-graph inputs (rasd.pairs.PAIR_INPUTS), `spans` the
        labelled candidate spans of the span head (rasd_train.span_head.span_loss)."""
        tag_logits, ctx = self.context(input_ids, attention_mask)
        span_logits = ctx.pop("span_logits", None)
        hidden = ctx["hidden_states"]
        out = {"tag_logits": tag_logits, "hidden": hidden}
        loss = None
        if labels is not None:
            if self.config.crf:
                loss = self.crf.nll(tag_logits, labels)
            else:
                loss = nn.functional.cross_entropy(tag_logits.reshape(-1, tag_logits.shape[-1]).float(),
                                                   labels.reshape(-1), ignore_index=-100)
            out["tag_loss"] = loss.detach()
        if span_logits is not None and spans is not None and spans["span_batch"].numel() > 0:
            spans_loss = span_loss(span_logits, spans)
            out["span_loss"] = spans_loss.detach()
            loss = spans_loss if loss is None else loss + spans_loss
        if pairs is not None and pairs["pair_batch"].numel() > 0:
            rel_logits = self.relate(**ctx, **pairs)
            out["rel_logits"] = rel_logits
            if pair_labels is not None:
                rel_loss = nn.functional.cross_entropy(rel_logits.float(), pair_labels)
                out["rel_loss"] = rel_loss.detach()
                loss = rel_loss * self.config.relation_loss_weight if loss is None else \
                    loss + rel_loss * self.config.relation_loss_weight
        elif loss is not None:
            # Keep the relation head in the graph so DDP sees every parameter
            # used in each step even when a batch holds no candidate pair.
            loss = loss + 0.0 * sum(p.sum() for _, p in self.relation_parameters())
        out["loss"] = loss
        return out


# Let AutoConfig/AutoTokenizer/AutoModel read a saved rasd directory (they
# look at config.json's model_type) instead of falling back to a bare config.
AutoConfig.register("rasd", RasdConfig)
AutoModel.register(RasdConfig, RasdModel)


class TorchBackend:
    """The pipeline backend for a torch RasdModel (evaluation, parity checks)."""

    def __init__(self, model: RasdModel, device=None):
        self.model = model
        self.device = device or next(model.parameters()).device

    @torch.no_grad()
    def tag(self, input_ids, attention_mask):
        self.model.eval()
        logits, ctx = self.model.context(torch.as_tensor(input_ids, device=self.device),
                                         torch.as_tensor(attention_mask, device=self.device))
        return logits.float().cpu().numpy(), {k: (v.float() if v.is_floating_point() else v).cpu().numpy()
                                              for k, v in ctx.items()}

    @torch.no_grad()
    def relate(self, context, pairs):
        self.model.eval()
        dtype = next(self.model.parameters()).dtype
        reads = set(self.model.relation_inputs())
        ctx = {k: torch.as_tensor(v, device=self.device) for k, v in context.items() if k in reads}
        ctx = {k: v.to(dtype) if v.is_floating_point() else v for k, v in ctx.items()}  # fp16/bf16 models
        feats = {k: torch.as_tensor(v, device=self.device) for k, v in pairs.items()}
        return self.model.relate(**ctx, **feats).float().cpu().numpy()
