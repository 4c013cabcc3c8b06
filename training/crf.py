"""A linear-chain CRF over the tagger's word logits (issue 11, item 1: a CRF layer against plain Viterbi).

The tagger scores each word's first sub-token; the CRF adds a learned score
for the first tag of a window and for each pair of consecutive tags, and
trains on the log-likelihood of the gold sequence. In service nothing runs
in the graph: the learned scores are saved in the model's config
(`crf`: start and pair) and rasd.decode's Viterbi adds them to the words'
log probabilities, with the IOB2 constraints on top.

Why log probabilities and not raw logits in service: a word's log-softmax
differs from its logits by one constant per word, and every tag sequence
takes exactly one emission per word, so both give the same best sequence.

Training sees windows, not paragraphs: the labelled words of a window (the
first sub-token of each word, labels != -100) form one chain. A window may
open inside a name, so no constraint is imposed in training; the learned
start score and Viterbi's constraints take care of it in service.
"""
from __future__ import annotations

import torch
from torch import nn

from rasd.align import IGNORE_INDEX


class TagCRF(nn.Module):
    def __init__(self, n_tags: int):
        super().__init__()
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.pair = nn.Parameter(torch.zeros(n_tags, n_tags))  # pair[a, b]: tag b right after tag a

    def nll(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of the gold tags per labelled word (so its scale matches token cross-entropy).

        logits [B, T, k]; labels [B, T] with IGNORE_INDEX (rasd.align) on every position that is not a word's
        first sub-token."""
        emissions, tags, valid = _labelled_words(logits.float(), labels)
        if not valid.any():
            return logits.sum() * 0.0
        start, pair = self.start.float(), self.pair.float()
        gold = self._gold_score(emissions, tags, valid, start, pair)
        log_z = self._log_partition(emissions, valid, start, pair)
        rows = valid[:, 0]
        return (log_z - gold)[rows].sum() / valid.sum()

    @staticmethod
    def _gold_score(emissions, tags, valid, start, pair):
        emitted = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # [B, L]
        score = start[tags[:, 0]] + (emitted * valid).sum(1)
        steps = pair[tags[:, :-1], tags[:, 1:]] * valid[:, 1:]  # a step counts when its second word is real
        return score + steps.sum(1)

    @staticmethod
    def _log_partition(emissions, valid, start, pair):
        alpha = start.unsqueeze(0) + emissions[:, 0]  # [B, k]
        for t in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + pair.unsqueeze(0), dim=1) + emissions[:, t]
            alpha = torch.where(valid[:, t:t + 1], nxt, alpha)
        return torch.logsumexp(alpha, dim=1)


def _labelled_words(logits: torch.Tensor, labels: torch.Tensor):
    """The labelled positions of each row moved to the front, in order: (emissions [B, L, k], tags [B, L],
    valid [B, L]) where L is the most labelled words of any row; padding has valid False and tag 0."""
    labelled = labels != IGNORE_INDEX
    lengths = labelled.sum(1)
    width = max(int(lengths.max()), 1) if labels.numel() else 1
    # A stable sort of "is padding" keeps the labelled positions first, in their order.
    order = torch.argsort((~labelled).to(torch.int8), dim=1, stable=True)[:, :width]
    emissions = logits.gather(1, order.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
    valid = torch.arange(width, device=labels.device).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.where(valid, labels.gather(1, order), torch.zeros_like(labels[:, :width]))
    return emissions, tags, valid
