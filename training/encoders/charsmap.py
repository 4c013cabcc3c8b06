"""sentencepiece's precompiled charsmap (a darts-clone double-array trie) built from a character map."""
from __future__ import annotations

import struct
from typing import Dict

import numpy as np


def precompiled_charsmap(norm: Dict[str, str]) -> bytes:
    """sentencepiece's precompiled charsmap for a per-character map.

    tokenizers can only apply an arbitrary character map through its
    `Precompiled` normaliser, which reads sentencepiece's binary format:
    u32 trie size, a darts-clone double-array trie over the UTF-8 bytes of
    each source character, then NUL-terminated replacement strings (the
    trie's values are offsets into them). Unit bits: 0-7 label, 8 has-leaf,
    9 offset shift, 10-30 offset, 31 leaf flag (value in bits 0-30).
    """
    strings, where = bytearray(), {}
    trie: dict = {}
    for ch in sorted(norm):
        out = norm[ch]
        if out not in where:
            where[out] = len(strings)
            strings += out.encode("utf-8") + b"\0"
        node = trie
        for b in ch.encode("utf-8"):
            node = node.setdefault(b, {})
        node[None] = where[out]  # None = "a key ends here"
    units, used, bases, free_from, todo = [0] * 512, bytearray(b"\1" + bytes(511)), set(), 1, [(trie, 0)]
    while todo:
        node, pos = todo.pop()
        labels = sorted(0 if k is None else k for k in node)
        # First base whose slots base^label are all free (and unused as a base:
        # two nodes sharing a base could step into each other's children).
        while used[free_from]:
            free_from += 1
        f = free_from  # put the first label on a free slot, check the others
        while True:
            base = f ^ labels[0]
            if base not in bases and all(base ^ c >= len(used) or not used[base ^ c] for c in labels[1:]):
                break
            f += 1
            while f < len(used) and used[f]:
                f += 1
        if (base | 0xFF) >= len(units):  # lookups read base^byte for any byte: keep the block
            grow = (base | 0xFF) + 1 - len(units) + 256
            units, used = units + [0] * grow, used + bytearray(grow)
        bases.add(base)
        units[pos] |= (pos ^ base) << 10  # < 2**21 for any table this size
        for c in labels:
            used[base ^ c] = 1
        for k, child in node.items():
            if k is None:
                units[pos] |= 1 << 8
                units[base] = child | (1 << 31)
            else:
                units[base ^ k] = k
                todo.append((child, base ^ k))
    if len(units) >= 1 << 21:
        raise ValueError("character map too large for the simple double-array builder")
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(strings)
