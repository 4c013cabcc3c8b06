"""An independent Python port of e5.c `tok_content`, to check the rebuilt tokenizer (short texts only)."""
from __future__ import annotations

import re
from typing import Dict, List

import numpy as np


def reference_pieces(text: str, src: dict, index: Dict[str, int]) -> List[str]:
    """Independent Python port of e5.c `tok_content` (for checks, short texts only)."""
    s = re.sub(" {2,}", " ", "".join(src["norm"].get(ch, ch) for ch in text))
    s = ("" if s.startswith(" ") else "▁") + s.replace(" ", "▁")
    scores, unk_score = src["scores"], float(np.min(src["scores"])) - 10.0
    maxlen = max(map(len, index))
    best, back = [0.0] + [-1e30] * len(s), [None] * (len(s) + 1)
    for i in range(len(s)):
        for e in range(i + 1, min(len(s), i + maxlen) + 1):
            idx = index.get(s[i:e])
            if idx is not None and idx != 3 and best[i] + scores[idx] > best[e]:
                best[e], back[e] = best[i] + scores[idx], (i, s[i:e])
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, "<unk>")
    out, e = [], len(s)
    while e > 0:
        e, piece = back[e]
        out.append(piece)
    return out[::-1]
