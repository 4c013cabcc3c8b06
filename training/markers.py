"""Typed entity markers for the relation head (issue 11, relation design b).

PURE's approximation (Zhong & Chen 2021), done so that the text is encoded
once: each candidate pair gets four typed markers (head start, head end,
tail start, tail end; one learned vector per role x boundary x entity label).
A marker shares the position of the token it marks. Markers attend to every
text token of their window and to the other three markers of their own pair;
text tokens never attend to markers. So the text's states are exactly those
of the tagger's pass, and only the markers need computing: through each of
the encoder's top layers, their queries meet that layer's own keys and values
of the text (recomputed from the layer's input states, which the encoder
pass returns) and of their pair's markers. All pairs of a batch go through
in one pass, packed in rows of up to PAIRS_PER_ROW pairs of one window (so
one window with many pairs does not pad all the others to its count).

A marker starts as the layer input state of the token it marks plus its
typed vector (PURE adds a marker word embedding to the position embedding;
starting from the token's own state lets the markers enter at any layer).
The pair's four final marker states feed the pair classifier next to the
pooled span features. The encoder's layer weights are used as they are
(BERT-family layer layout: query/key/value, attention.output, intermediate,
output), so the markers train the same weights the tagger does.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

MARKERS_PER_PAIR = 4  # head start, head end, tail start, tail end


def check_layers(layers: Sequence[nn.Module], n: int, where: str) -> None:
    """A clear error if the encoder's layers are not the BERT layout the marker pass reads, or too few."""
    if not 0 < n <= len(layers):
        raise ValueError(f"model.relation_markers {n}: {where} has {len(layers)} layers")
    layer = layers[-1]
    for path in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output",
                 "intermediate", "output"):
        obj = layer
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"model.relation_markers: the layers of {where} ({type(layer).__name__}) lack "
                             f"{path}; the marker pass reads BERT-family layers only")


PAIRS_PER_ROW = 8  # pairs packed in one row of markers; a window with more pairs gets several rows


def pack_rows(pair_batch: torch.Tensor, n_windows: int):
    """Where each pair's markers sit in a packed [rows, slots] layout, and each row's window.

    A row holds up to PAIRS_PER_ROW pairs of one window, so a window with many pairs does not pad every other
    window to its count. Returns (row of each pair, slot of each pair in its row, window of each row, slots)."""
    onehot = (pair_batch.unsqueeze(1) == torch.arange(n_windows, device=pair_batch.device).unsqueeze(0)).long()
    rank = onehot.cumsum(0).gather(1, pair_batch.unsqueeze(1)).squeeze(1) - 1  # rank among its window's pairs
    counts = onehot.sum(0)
    rows_per = torch.div(counts + PAIRS_PER_ROW - 1, PAIRS_PER_ROW, rounding_mode="floor")
    first_row = rows_per.cumsum(0) - rows_per
    row = first_row.index_select(0, pair_batch) + torch.div(rank, PAIRS_PER_ROW, rounding_mode="floor")
    n_rows = rows_per.sum()
    row_window = torch.zeros_like(rows_per[:1]).expand(n_rows).clone().index_put((row,), pair_batch)
    slots = torch.clamp(rank.max() + 1, max=PAIRS_PER_ROW) * MARKERS_PER_PAIR
    return row, torch.remainder(rank, PAIRS_PER_ROW), row_window, slots


class MarkerPass(nn.Module):
    def __init__(self, n_entity_labels: int, hidden_size: int):
        super().__init__()
        self.n_labels = n_entity_labels
        # Row (role * 2 + boundary) * n_labels + label; role 0 = head, 1 = tail; boundary 0 = start, 1 = end.
        self.marker_embedding = nn.Embedding(MARKERS_PER_PAIR * n_entity_labels, hidden_size)

    def forward(self, layers: Sequence[nn.Module], layer_states: torch.Tensor, attention_mask: torch.Tensor,
                pair_batch, head_span, tail_span, head_type, tail_type) -> torch.Tensor:
        """[P, 4 * H]: the final states of each pair's four markers.

        layers: the encoder layers the markers pass (the top N); layer_states [N, B, T, H]: the input states of
        those layers; attention_mask [B, T]: 1 on real tokens."""
        _, B, T, H = layer_states.shape
        positions = torch.stack([head_span[:, 0], head_span[:, 1] - 1, tail_span[:, 0], tail_span[:, 1] - 1], 1)
        kinds = torch.stack([head_type, head_type + self.n_labels, tail_type + 2 * self.n_labels,
                             tail_type + 3 * self.n_labels], 1)  # [P, 4]
        first = layer_states[0].reshape(B * T, H).index_select(0, (pair_batch.unsqueeze(1) * T + positions)
                                                                 .reshape(-1))
        markers = first + self.marker_embedding(kinds.reshape(-1))  # [P*4, H]

        # Pack: row r holds its pairs' markers in slots slot*4 .. slot*4+3 of a [R, S, H] block.
        row, slot, row_window, S = pack_rows(pair_batch, B)
        R = row_window.shape[0]
        flat = (row.unsqueeze(1) * S + slot.unsqueeze(1) * MARKERS_PER_PAIR
                + torch.arange(MARKERS_PER_PAIR, device=row.device)).reshape(-1)  # [P*4] rows of [R*S, H]
        same_pair = torch.div(torch.arange(S, device=row.device), MARKERS_PER_PAIR, rounding_mode="floor")
        sees_marker = (same_pair.unsqueeze(0) == same_pair.unsqueeze(1)).unsqueeze(0).expand(R, -1, -1)
        sees_text = attention_mask.bool().index_select(0, row_window).unsqueeze(1).expand(-1, S, -1)
        mask = torch.cat([sees_text, sees_marker], dim=2).unsqueeze(1)  # [R, 1, S, T+S]

        for layer, text in zip(layers, layer_states):
            packed = markers.new_zeros((R * S, H)).index_put((flat,), markers).reshape(R, S, H)
            packed = _marker_layer(layer, text, row_window, packed, mask)
            markers = packed.reshape(R * S, H).index_select(0, flat)
        return markers.reshape(-1, MARKERS_PER_PAIR * H)


def _heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, L, H = x.shape
    return x.reshape(B, L, n_heads, H // n_heads).transpose(1, 2)


def _marker_layer(layer: nn.Module, text: torch.Tensor, row_window: torch.Tensor, markers: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """One BERT layer for the markers only: their queries over [text; markers] keys and values of this layer.
    The text's keys and values are computed once per window and shared by the window's rows."""
    sa = layer.attention.self
    n = sa.num_attention_heads
    k = torch.cat([sa.key(text).index_select(0, row_window), sa.key(markers)], dim=1)
    v = torch.cat([sa.value(text).index_select(0, row_window), sa.value(markers)], dim=1)
    q, k, v = _heads(sa.query(markers), n), _heads(k, n), _heads(v, n)
    p = sa.dropout.p if layer.training else 0.0
    ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    ctx = ctx.transpose(1, 2).reshape(markers.shape)
    att = layer.attention.output(ctx, markers)
    return layer.output(layer.intermediate(att), att)
