"""Predictions and scores of a torch model through the service's pipeline
(rasd.pipeline), for training's dev evaluation, `rasd evaluate`, export
parity and the benchmark."""
from __future__ import annotations

from typing import List, Sequence

from rasd.pipeline import predict_documents
from rasd.schema import Document

from .metrics import score
from .modeling import RasdModel, TorchBackend


def torch_predict(model: RasdModel, tokenizer, docs: Sequence[Document], batch_size: int = 32) -> List[Document]:
    """`tokenizer` is a transformers fast tokenizer (its backend tokenizer is what the service uses)."""
    return predict_documents(docs, tokenizer.backend_tokenizer, model.spec(), TorchBackend(model), batch_size)


def evaluate_docs(model: RasdModel, tokenizer, docs: Sequence[Document], batch_size: int = 32) -> dict:
    return score(docs, torch_predict(model, tokenizer, docs, batch_size), scheme=model.config.scheme_obj())
