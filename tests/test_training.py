"""The model (features, loss, save/load, frozen layers, pooling), the training loop and its artifacts, resume, and
what evaluation frequency leaves unchanged."""
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rasd
from rasd_train.metrics import score


def _tiny_model_and_batch(mini_docs, left_context: int = 0, relation_features=(), crf: bool = False,
                          markers: int = 0, layers: int = 1, span_max_tokens: int = 0):
    from rasd.align import SpecialTokens
    from rasd_train.data import collate, featurize
    from rasd_train.modeling import RasdConfig, RasdModel
    from rasd_train.tiny_encoder import tiny_bert_config, train_wordpiece
    tok = train_wordpiece([d.text for d in mini_docs], 300)
    enc = tiny_bert_config(len(tok), 32, layers, 2, 64)
    torch.manual_seed(0)
    model = RasdModel(RasdConfig(encoder_config=enc.to_dict(), window_length=64, window_stride=16,
                                 relation_hidden_size=32, relation_left_context=left_context,
                                 relation_features=list(relation_features), crf=crf, relation_markers=markers,
                                 span_max_tokens=span_max_tokens, span_hidden_size=16,
                                 decoding="viterbi" if crf else "spans" if span_max_tokens else "argmax"))
    sp = SpecialTokens.from_tokenizer(tok.backend_tokenizer)
    feats = [f for d in mini_docs for f in featurize(d, tok.backend_tokenizer, model.config.spec(), sp)]
    return tok, model, collate(feats, sp.pad_id)


def test_features_hold_gold_pairs(mini_docs):
    _, _, batch = _tiny_model_and_batch(mini_docs)
    n_gold = sum(len(d.relations) for d in mini_docs)
    assert int((batch["pair_labels"] > 0).sum()) == n_gold  # every gold relation fits a window of 64
    assert int((batch["pair_labels"] == 0).sum()) > 0  # and there are negatives
    assert (batch["labels"] != -100).sum() == sum(len(__import__("rasd").text.split_words(d.text)) for d in mini_docs)


def train_on_batch(model, batch, steps: int, loss: str = "loss") -> list:
    """`steps` AdamW steps (lr 3e-3) on one batch; the value of out[loss] at each step."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(**batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out[loss]))
    return losses


def test_loss_goes_down_on_a_toy_batch(mini_docs):
    _, model, batch = _tiny_model_and_batch(mini_docs)
    losses = train_on_batch(model, batch, 30)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("left_context,features", [(0, ()), (8, ()), (0, ("sentence_gap", "context_attention"))])
def test_save_load_equality(mini_docs, tmp_path, left_context, features):
    from rasd_train.modeling import RasdModel
    tok, model, batch = _tiny_model_and_batch(mini_docs, left_context, features)
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    cfg = json.loads((tmp_path / "config.json").read_text())
    # transformers writes config.json with sorted keys: the class order survives as relation_order
    assert cfg["model_type"] == "rasd" and cfg["scheme"]["relation_order"] == ["WITHDREW_FROM", "HANDED_TO"]
    assert cfg["scheme"]["name"] == "military" and cfg["rasd_version"] == rasd.__version__
    assert cfg["id2label"]["1"] == "B-BASE"
    again = RasdModel.from_pretrained(tmp_path).eval()
    assert again.config.spec().scheme.relation_labels == ("WITHDREW_FROM", "HANDED_TO")
    with torch.no_grad():
        a, b = model(**batch), again(**batch)
    assert torch.allclose(a["tag_logits"], b["tag_logits"], atol=1e-6)
    assert torch.allclose(a["rel_logits"], b["rel_logits"], atol=1e-6)


def test_training_run_learns_and_writes_artifacts(trained_run):
    run_dir, summary = trained_run
    for name in ("metrics.jsonl", "curves.png", "train_summary.json", "model/config.json",
                 "model/model.safetensors", "model/tokenizer.json"):
        assert os.path.exists(os.path.join(run_dir, name)), name
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    # it memorises its 8 training documents; dev is a subset of train here
    assert summary["dev"]["strict"]["entities"]["micro"]["f1"] > 0.8
    # the error categories (for the card) count every gold name of dev once, most of them found exactly
    errors = summary["dev"]["errors"]
    n_gold = summary["dev"]["strict"]["entities"]["micro"]["gold"]
    assert sum(errors["gold_entities"].values()) == n_gold
    assert errors["gold_entities"]["exact"] == summary["dev"]["strict"]["entities"]["micro"]["tp"]


def test_summary_dev_figures_are_those_of_the_saved_calibrated_model(trained_run, mini_corpus, tmp_path,
                                                                    monkeypatch):
    """Training reuses the calibration's dev predictions (maps applied) instead of predicting dev again: they must
    be exactly what the saved, calibrated model predicts. The tiny model's own fit keeps raw scores (too little
    evidence), so a fit with real maps is forced here."""
    from transformers import AutoTokenizer

    import rasd_train.train as tr
    from rasd.calibration import Calibration, Platt
    from rasd.schema import read_documents
    from rasd_train.calibration import report as calibration_report
    from rasd_train.modeling import RasdModel
    from rasd_train.predict import torch_predict
    run_dir, summary = trained_run
    model_dir = os.path.join(run_dir, "model")
    dev = read_documents(os.path.join(mini_corpus, "dev.jsonl"))
    tok = AutoTokenizer.from_pretrained(model_dir)
    scheme = RasdModel.from_pretrained(model_dir).config.scheme_obj()
    saved = torch_predict(RasdModel.from_pretrained(model_dir).eval(), tok, dev)
    fresh = {**score(dev, saved, scheme=scheme), **calibration_report(dev, saved, scheme)}
    assert {k: summary["dev"][k] for k in fresh} == fresh

    maps = Calibration(Platt(0.5, -0.2), Platt(2.0, 0.1))
    monkeypatch.setattr(tr, "fit_calibration", lambda gold, pred: maps)
    model = RasdModel.from_pretrained(model_dir).eval()
    report, reused = tr.calibrate_best(model, tok, dev, str(tmp_path / "calibrated"))
    assert report["entities"] == {"a": 0.5, "b": -0.2}
    fresh = torch_predict(RasdModel.from_pretrained(str(tmp_path / "calibrated")).eval(), tok, dev)
    assert reused == fresh and any(e.score != r.score for d, r_d in zip(reused, saved)
                                   for e, r in zip(d.entities, r_d.entities))


def test_resume_continues_from_checkpoint(trained_run, tiny_config_path):
    from rasd_train.config import load_config
    from rasd_train.train import train
    run_dir, summary = trained_run
    cfg = load_config(tiny_config_path, {"train.epochs": 45})
    s2 = train(cfg, resume=True)
    assert s2["steps"] == 90 and summary["steps"] == 80
    recs = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]
    steps = [r["step"] for r in recs if "loss" in r]
    assert steps == list(range(1, 91))  # appended, not restarted


def test_each_candidate_pair_is_trained_once_in_its_serving_window(mini_docs):
    """Long documents span several windows; featurize places every candidate pair in exactly one,
    the window rasd.pairs.place_pair picks for serving."""
    from rasd.align import SpecialTokens, entity_word_ranges, make_windows, tokenize_text
    from rasd.pairs import candidate_pairs, place_pair
    from rasd_train.data import featurize
    tok, model, _ = _tiny_model_and_batch(mini_docs)
    spec = model.config.spec()
    spec.window_length, spec.window_stride = 24, 8  # force several windows per document
    sp = SpecialTokens.from_tokenizer(tok.backend_tokenizer)
    for doc in mini_docs:
        feats = featurize(doc, tok.backend_tokenizer, spec, sp)
        tt = tokenize_text(doc.text, tok.backend_tokenizer)
        wins = make_windows(tt, sp, 24, 8)
        ranges = entity_word_ranges(tt.words, doc.entities)
        placed = [place_pair(wins, ranges[h], ranges[t]) for h, t in candidate_pairs(doc.text, doc.entities,
                                                                                     spec.scheme)]
        assert sum(len(f["pairs"]) for f in feats) == sum(p is not None for p in placed)
        for wi, f in enumerate(feats):
            assert len(f["pairs"]) == placed.count(wi)
    assert any(len(featurize(d, tok.backend_tokenizer, spec, sp)) > 1 for d in mini_docs)


def test_evaluate_command_writes_metrics_calibration_and_predictions(trained_run, mini_corpus, tmp_path):
    from rasd.schema import read_documents
    from rasd_train.evaluate import main as evaluate_main
    run_dir, _ = trained_run
    out = tmp_path / "eval"
    assert evaluate_main([os.path.join(run_dir, "model"), os.path.join(mini_corpus, "test.jsonl"),
                          "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert m["strict"]["entities"]["micro"]["gold"] == sum(len(d.entities) for d in
                                                           read_documents(os.path.join(mini_corpus, "test.jsonl")))
    assert [r["threshold"] for r in m["thresholds"]][0] == 0.0
    assert 0.0 <= m["calibration"]["entities"]["ece"] <= 1.0
    assert (out / "predictions.jsonl").exists() and (out / "confusion.png").exists()


def test_frozen_embeddings_and_layers_do_not_move(mini_docs):
    from rasd_train.train import freeze
    _, model, batch = _tiny_model_and_batch(mini_docs)
    n = freeze(model, embeddings=True, layers=1)
    frozen = {k: v.clone() for k, v in model.named_parameters() if not v.requires_grad}
    assert n == sum(v.numel() for v in frozen.values()) and any(k.startswith("encoder.embeddings") for k in frozen)
    assert any(".layer.0." in k for k in frozen)
    trainable = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(**batch)["loss"].backward()
    opt.step()
    now = dict(model.named_parameters())
    assert all(torch.equal(now[k], v) for k, v in frozen.items())
    assert any(not torch.equal(now[k], v) for k, v in trainable.items())
    with pytest.raises(ValueError, match="exceeds the encoder's 1 layers"):
        freeze(model, embeddings=False, layers=2)


def test_keep_layers_keeps_the_lowest_pretrained_layers(tmp_path):
    from transformers import BertConfig, BertModel
    from rasd_train.modeling import RasdModel
    torch.manual_seed(0)
    src = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                               intermediate_size=32), add_pooling_layer=False)
    src.save_pretrained(tmp_path / "enc")
    model = RasdModel.from_encoder(str(tmp_path / "enc"), keep_layers=2)
    assert len(model.encoder.encoder.layer) == 2 and model.config.encoder_hf_config().num_hidden_layers == 2
    for name, p in model.encoder.encoder.layer.state_dict().items():
        assert torch.equal(p, src.encoder.layer.state_dict()[name])
    model.save_pretrained(tmp_path / "m")
    assert len(RasdModel.from_pretrained(tmp_path / "m").encoder.encoder.layer) == 2
    with pytest.raises(ValueError, match="has 3 layers"):
        RasdModel.from_encoder(str(tmp_path / "enc"), keep_layers=4)


def test_attention_dropout_reaches_the_encoder_and_only_there(tmp_path):
    """encoder.attention_dropout sets the attention-weight dropout; the hidden dropout keeps the encoder's own."""
    from transformers import BertConfig, BertModel
    from rasd_train.modeling import RasdModel, set_attention_dropout
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, attention_probs_dropout_prob=0.1, hidden_dropout_prob=0.1),
              add_pooling_layer=False).save_pretrained(tmp_path / "enc")
    kept = RasdModel.from_encoder(str(tmp_path / "enc")).encoder.config
    assert kept.attention_probs_dropout_prob == 0.1
    cfg = RasdModel.from_encoder(str(tmp_path / "enc"), attention_dropout=0.0).encoder.config
    assert cfg.attention_probs_dropout_prob == 0.0 and cfg.hidden_dropout_prob == 0.1
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\)"):
        set_attention_dropout({"attention_dropout": 0.1}, 1.5, "enc")
    with pytest.raises(ValueError, match="the config of some-encoder has none of"):
        set_attention_dropout({"hidden_size": 16}, 0.0, "some-encoder")


@pytest.mark.parametrize("features", [(), ("sentence_gap",), ("sentence_gap", "context_attention")])
def test_relation_graph_declares_the_inputs_its_features_read(mini_docs, tmp_path, features):
    """A model without the sentence feature exports a graph without that input (older exports look the same);
    with it, the graph reads it. Either way the runtime feeds what the graph declares and matches torch."""
    from rasd.runtime import OnnxBackend
    from rasd_train.onnx_graphs import export_graphs
    tok, model, batch = _tiny_model_and_batch(mini_docs, 0, features)
    with torch.no_grad():
        model(**batch)  # the head's features must all be used by a forward pass
    model.eval()
    export_graphs(model, tok, str(tmp_path))
    backend = OnnxBackend(str(tmp_path / "encoder.onnx"), str(tmp_path / "relation.onnx"), threads=1)
    assert ("sentence_gap" in backend.relation_spec["inputs"]) == ("sentence_gap" in features)
    pairs = {k: v.numpy() for k, v in batch["pairs"].items()}
    pairs["sentence_gap"] = np.arange(len(pairs["sentence_gap"])) % 4  # every gap value
    with torch.no_grad():
        _, hidden = model.encode(batch["input_ids"], batch["attention_mask"])
        ref = model.relate(hidden, **{k: torch.from_numpy(v) for k, v in pairs.items()}).numpy()
    context = {"hidden_states": hidden.numpy()}
    got = backend.relate(context, pairs)
    assert np.allclose(ref, got, atol=1e-4)
    if "sentence_gap" in features:  # and the feature matters: another gap gives other logits
        moved = dict(pairs, sentence_gap=(pairs["sentence_gap"] + 1) % 4)
        assert not np.allclose(backend.relate(context, moved), got, atol=1e-4)


def test_unknown_relation_feature_is_named():
    from rasd_train.modeling import RasdConfig
    with pytest.raises(ValueError, match="relation_features: unknown \\['same_paragraph'\\]"):
        RasdConfig(relation_features=["same_paragraph"])


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.data())
def test_span_pooling_by_prefix_sums_equals_the_direct_definition(batch, length, data):
    """Mean and attention pooling from prefix sums equal the plain per-span formulas, empty spans included."""
    from rasd_train.modeling import _prefix_sums, _span_attention, _span_mean
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    hidden, scores = torch.randn(batch, length, 4) * 5, torch.randn(batch, length) * 3
    rows, spans = [], []
    for _ in range(data.draw(st.integers(1, 6))):
        b, a = data.draw(st.integers(0, batch - 1)), data.draw(st.integers(0, length))
        rows.append(b)
        spans.append((a, data.draw(st.integers(a, length))))
    pb, se = torch.tensor(rows), torch.tensor(spans).reshape(-1, 2)
    row_start = pb * (length + 1)
    mean = _span_mean(_prefix_sums(hidden), row_start, se[:, 0], se[:, 1], hidden.dtype)
    att = _span_attention(hidden, scores, row_start, se[:, 0], se[:, 1])
    for p, (b, (a, e)) in enumerate(zip(rows, spans)):
        if e == a:
            assert torch.all(mean[p] == 0) and torch.all(att[p] == 0)
            continue
        assert torch.allclose(mean[p], hidden[b, a:e].mean(0), atol=1e-5)
        w = torch.softmax(scores[b, a:e], dim=0)
        assert torch.allclose(att[p], (w.unsqueeze(1) * hidden[b, a:e]).sum(0), atol=1e-5)


def test_export_of_a_model_with_relation_features_passes_parity(mini_docs, tmp_path):
    from rasd_train.export import export
    tok, model, _ = _tiny_model_and_batch(mini_docs, 0, ("sentence_gap", "context_attention"))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    report = export(str(tmp_path / "model"), str(tmp_path / "out"))
    assert report["parity"]["passed"], report["parity"]
    assert report["parity"]["outputs"]["relation_logits"]["allclose"]


def test_relation_refit_compares_variants_and_touches_only_the_head(trained_run, mini_corpus):
    """The (a) experiment of issue 11 runs end to end on the tiny model: predicted entities join the
    training pairs only as extra entities, the encoder and tagger stay fixed, each variant is scored."""
    from rasd.schema import read_documents
    from rasd_train.modeling import RasdModel
    from rasd_train.relation_refit import RefitArgs, compare, fit_head, gold_only, prepare, with_predicted
    from transformers import AutoTokenizer
    run_dir, _ = trained_run
    model_dir = os.path.join(run_dir, "model")
    out = compare(model_dir, mini_corpus, [RefitArgs(epochs=1, predicted=True), RefitArgs(epochs=1, predicted=False)])
    assert [v["predicted"] for v in out["variants"]] == [True, False]
    assert all(0.0 <= v["dev"]["relation_f1"] <= 1.0 and len(v["epoch_losses"]) == 1 for v in out["variants"])
    model = RasdModel.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = read_documents(os.path.join(mini_corpus, "train.jsonl"), model.config.scheme_obj())
    gold = train[0]
    merged = with_predicted(gold, gold)  # a prediction equal to gold adds nothing
    assert [(e.start, e.end, e.label) for e in merged.entities] == [(e.start, e.end, e.label) for e in gold.entities]
    windows = prepare(model, tokenizer, train)
    assert sum(len(w["labels"]) for w in gold_only(windows)) <= sum(len(w["labels"]) for w in windows)
    head = dict(model.relation_parameters())
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    fit_head(model, windows, RefitArgs(epochs=1))
    after = dict(model.named_parameters())
    assert head and set(head) < set(after)
    assert all(torch.equal(v, after[k]) for k, v in before.items() if k not in head)
    assert any(not torch.equal(v, after[k]) for k, v in before.items() if k in head)


def test_fused_adamw_makes_the_same_update(mini_docs):
    """make_optimizer picks the fused AdamW for speed; it must train the same weights as the plain one."""
    from accelerate import Accelerator
    from rasd_train.config import config_from_dict
    from rasd_train.train import make_optimizer, param_groups
    _, model, batch = _tiny_model_and_batch(mini_docs)
    twin = type(model)(model.config)
    twin.load_state_dict(model.state_dict())
    cfg = config_from_dict({})
    fused = make_optimizer(param_groups(model, cfg), Accelerator(cpu=True))
    plain = torch.optim.AdamW(param_groups(twin, cfg))
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    model.eval(), twin.eval()  # no dropout: the two runs see the same computation
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        for m, opt in ((model, fused), (twin, plain)):
            opt.zero_grad()
            m(**batch)["loss"].backward()
            opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert not torch.equal(model.tagger.weight, start["tagger.weight"])  # the steps did train


def test_evaluating_more_often_does_not_change_what_is_trained(tiny_config_path, tmp_path):
    """The default evaluates once, at the end, to save time: sound only because dev evaluation draws nothing from
    the training's random streams, so the last step's weights are the same however often dev was read."""
    import shutil
    from safetensors.torch import load_file
    from rasd_train.config import load_config
    from rasd_train.train import train
    weights = []
    for every in (2, -1):  # every 2 steps; only after the last (the 6th)
        out = tmp_path / f"every{every}"
        if weights:  # the same vocabulary: training a WordPiece vocabulary twice may order ties differently
            shutil.copytree(tmp_path / "every2" / "tokenizer", out / "tokenizer")
        train(load_config(tiny_config_path, {"train.output_dir": str(out), "train.max_steps": 6,
                                             "train.eval_every": every, "train.calibrate": False}),
              resume=bool(weights))  # resume reads the tokenizer there; there is no checkpoint to resume from
        weights.append(load_file(str(out / "checkpoint" / "model.safetensors")))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    evals = [json.loads(line)["step"] for line in open(tmp_path / "every-1" / "metrics.jsonl") if "objective" in line]
    assert evals == [6]
    with pytest.raises(ValueError, match="train.eval_every must be -1"):
        train(load_config(tiny_config_path, {"train.eval_every": -2}))
