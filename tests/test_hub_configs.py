"""The shipped Hub configs (arabert-base, camelbert-msa, me5-small-hub) load their encoder by repo id.

The stand-in Hub serves tiny look-alike encoders under the real repo ids: BERT models with WordPiece
tokenizers for AraBERT and CAMeLBERT, and a BERT model with an XLM-R-style sentencepiece (Unigram)
tokenizer for multilingual-e5-small. Each config then trains a few steps with its sizes overridden,
through the same from_pretrained code a GPU box runs."""
import os

import pytest

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128)


def wordpiece_encoder(texts, folder):
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from rasd_train.tiny_encoder import train_wordpiece
    vocab = train_wordpiece(texts, 300).get_vocab()
    (folder / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=False)
    tok.save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **TINY)).save_pretrained(folder)


def sentencepiece_encoder(texts, folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, XLMRobertaTokenizerFast
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                           unk_token="<unk>", show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(folder)
    # 12 layers, as multilingual-e5-small has, so the config's keep_layers has layers to drop
    BertModel(BertConfig(vocab_size=len(fast), pad_token_id=fast.pad_token_id,
                         **{**TINY, "num_hidden_layers": 12})).save_pretrained(folder)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set; these configs ask
    for bf16 and other tests for none, so each test here starts from a clean state and leaves one."""
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("config,kind", [("arabert-base.yaml", "wordpiece"), ("camelbert-msa.yaml", "wordpiece"),
                                         ("me5-small-hub.yaml", "sentencepiece")])
def test_hub_config_trains_from_its_repo_id(config, kind, hub, mini_docs, mini_corpus, tmp_path,
                                            fresh_accelerate_state):
    from transformers import AutoTokenizer
    from rasd_train.config import load_config
    from rasd_train.modeling import RasdModel
    from rasd_train.train import train
    cfg = load_config(os.path.join(CONFIGS, config), {
        "data.corpus": mini_corpus, "train.output_dir": str(tmp_path / "run"), "train.max_steps": 3,
        "train.eval_every": 3, "train.batch_size": 4, "train.num_threads": 2,
        "model.window_length": 64, "model.window_stride": 16, "model.relation_hidden_size": 16})
    repo_id = cfg.encoder.name
    assert "/" in repo_id and not os.path.exists(repo_id)  # a Hub id, not a folder
    folder = tmp_path / "encoder"
    folder.mkdir()
    (wordpiece_encoder if kind == "wordpiece" else sentencepiece_encoder)([d.text for d in mini_docs], folder)
    hub.add_repo(repo_id, str(folder))

    summary = train(cfg)
    assert summary["steps"] == 3 and cfg.train.mixed_precision == ("no" if "me5" in config else "bf16")
    assert any(repo_id in request for request in hub.requests)  # it really came from the (stand-in) Hub
    model = RasdModel.from_pretrained(tmp_path / "run" / "model")
    assert model.config.encoder_name == repo_id and model.config.encoder_config["hidden_size"] == 32
    assert model.config.encoder_config["num_hidden_layers"] == (cfg.encoder.keep_layers or 1)
    saved = AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    assert len(saved) == len(AutoTokenizer.from_pretrained(folder))
    assert "dev" in summary and "test" in summary
