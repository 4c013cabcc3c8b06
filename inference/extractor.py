"""The service API: load an exported model and extract entities and relations.

    from rasd import Extractor
    ex = Extractor.from_pretrained("org/rasd-me5-small")      # or a local directory
    doc = ex.extract("انسحبت القوات الأمريكية من قاعدة التنف")
    doc.to_dict()   # the JSONL shape of the annotation scheme
"""
from __future__ import annotations

import re
from typing import List, Optional, Sequence

from .backend import load_exported
from .hub import resolve_model_dir
from .pipeline import apply_thresholds, check_thresholds, predict
from .schema import Document

DEFAULT_MAX_CHARS = 1_000_000
_SURROGATE = re.compile("[\ud800-\udfff]")


class Extractor:
    def __init__(self, model_dir: str, quantized: bool = True, threads: Optional[int] = None,
                 max_chars: int = DEFAULT_MAX_CHARS, verify: bool = True, min_entity_score: float = 0.0,
                 min_relation_score: float = 0.0):
        """min_entity_score / min_relation_score: drop predictions scoring below them (precision control;
        the model card has a precision/recall table at several thresholds). A relation goes with its entities."""
        loaded = load_exported(model_dir, quantized=quantized, threads=threads, verify=verify)
        self.model_dir = model_dir
        self.config = loaded.config
        self.spec = loaded.spec
        self.scheme = loaded.spec.scheme
        self.quantized = loaded.quantized
        self.tokenizer = loaded.tokenizer
        self.backend = loaded.backend
        self.max_chars = max_chars
        check_thresholds(min_entity_score, min_relation_score)  # a bad value fails here, not at the first text
        self.min_entity_score, self.min_relation_score = min_entity_score, min_relation_score

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str, revision: Optional[str] = None, quantized: bool = True,
                        cache_dir: Optional[str] = None, local_files_only: bool = False, threads: Optional[int] = None,
                        max_chars: int = DEFAULT_MAX_CHARS, token=None, min_entity_score: float = 0.0,
                        min_relation_score: float = 0.0) -> "Extractor":
        """Load from a local export directory or a Hub repo id (revision pinnable).

        quantized=True uses the INT8 graphs when the model publishes them
        (they passed the export's F1 gate) and FP32 otherwise.
        """
        model_dir = resolve_model_dir(path_or_repo_id, revision=revision, cache_dir=cache_dir, quantized=quantized,
                                      local_files_only=local_files_only, token=token)
        return cls(model_dir, quantized=quantized, threads=threads, max_chars=max_chars,
                   min_entity_score=min_entity_score, min_relation_score=min_relation_score)

    def _check(self, texts: Sequence[str]) -> None:
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"text #{i} is {type(t).__name__}, not str")
            if not t.strip():
                raise ValueError(f"text #{i} is empty")
            bad = _SURROGATE.search(t)  # C-speed scan: this runs on every text served
            if bad:
                raise ValueError(f"text #{i} has a lone surrogate at character {bad.start()}: it was decoded from "
                                 f"invalid UTF-8 (decode with errors='strict' or 'replace')")
            if len(t) > self.max_chars:
                raise ValueError(f"text #{i} has {len(t):,} characters, over the limit of {self.max_chars:,}; "
                                 f"split it or raise max_chars")

    def extract(self, text: str, doc_id: str = "0", min_entity_score: Optional[float] = None,
                min_relation_score: Optional[float] = None) -> Document:
        return self.extract_batch([text], doc_ids=[doc_id], min_entity_score=min_entity_score,
                                  min_relation_score=min_relation_score)[0]

    def extract_batch(self, texts: Sequence[str], batch_size: int = 16, doc_ids: Optional[Sequence[str]] = None,
                      min_entity_score: Optional[float] = None,
                      min_relation_score: Optional[float] = None) -> List[Document]:
        """Documents in input order; windows of all texts are batched by length. The score thresholds
        default to the extractor's own."""
        texts = list(texts)
        self._check(texts)
        if doc_ids is not None and len(doc_ids) != len(texts):
            raise ValueError(f"{len(doc_ids)} ids for {len(texts)} texts")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        ent_min = self.min_entity_score if min_entity_score is None else min_entity_score
        rel_min = self.min_relation_score if min_relation_score is None else min_relation_score
        docs = predict(texts, self.tokenizer, self.spec, self.backend, batch_size=batch_size,
                       doc_ids=[str(i) for i in doc_ids] if doc_ids is not None else None)
        return [apply_thresholds(d, ent_min, rel_min) for d in docs]
