"""The span head (`model.span_max_tokens`; issue 11, item 1): scores every token span of a window up to a width,
so entity boundaries are chosen whole instead of word by word (rasd.spans decodes them).

A span [t, t + k] is represented as start(h_t) + end(h_{t+k}) + width_k, the factorised form of an MLP over the
concatenated endpoint states and a width embedding (as in span-based NER heads such as PURE's and SpanMarker's),
then GELU and a linear layer to 1 + entity labels. All starts and widths come out of one dense computation, so the
encoder graph exports it with no extra inputs: `span_logits` [batch, sequence, widths, classes]. Positions past
the window read zero end states; decoding only ever reads the candidate spans (rasd.spans.span_candidates).
"""
from __future__ import annotations

import torch
from torch import nn


class SpanHead(nn.Module):
    def __init__(self, hidden_size: int, size: int, max_tokens: int, n_classes: int, dropout: float):
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"model.span_max_tokens must be >= 1 for a span head, got {max_tokens}")
        self.max_tokens = max_tokens
        self.start = nn.Linear(hidden_size, size)
        self.end = nn.Linear(hidden_size, size, bias=False)
        self.width = nn.Embedding(max_tokens, size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(size, n_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, T, H] -> logits [B, T, max_tokens, n_classes]."""
        k = self.max_tokens
        starts = self.start(hidden)  # [B, T, D]
        ends = nn.functional.pad(self.end(hidden), (0, 0, 0, k - 1))  # [B, T + k - 1, D]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        index = positions[:, None] + torch.arange(k, device=hidden.device)[None, :]  # [T, k]: end of [t, t + w]
        x = starts.unsqueeze(2) + ends[:, index] + self.width.weight  # [B, T, k, D]
        return self.out(self.dropout(nn.functional.gelu(x)))


def span_loss(span_logits: torch.Tensor, spans: dict) -> torch.Tensor:
    """Cross-entropy over the labelled candidate spans of a batch (rasd_train.data: span_batch, span_start,
    span_width, span_label)."""
    picked = span_logits[spans["span_batch"], spans["span_start"], spans["span_width"]]  # [S, classes]
    return nn.functional.cross_entropy(picked.float(), spans["span_label"])
