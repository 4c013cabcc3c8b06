"""The CRF tagger option (rasd_train.crf): its likelihood, training, and the scores it hands to decoding."""
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rasd.align import IGNORE_INDEX
from rasd_train.crf import TagCRF

K = 3  # tags in the brute-force checks: 3**4 sequences at most


def _brute_force_nll(emissions, tags, start, pair):
    """-log p(tags) for one chain, by enumerating every tag sequence."""
    def score(seq):
        return start[seq[0]] + sum(emissions[i][t] for i, t in enumerate(seq)) + \
            sum(pair[a][b] for a, b in zip(seq, seq[1:]))
    log_z = np.logaddexp.reduce([score(s) for s in itertools.product(range(K), repeat=len(tags))])
    return log_z - score(tags)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.lists(st.floats(-4, 4), min_size=K, max_size=K), st.integers(0, K - 1),
                                   st.booleans()), min_size=1, max_size=6), min_size=1, max_size=3),
       st.lists(st.floats(-2, 2), min_size=K * (K + 1), max_size=K * (K + 1)))
def test_nll_matches_brute_force_over_the_labelled_words(rows, scores):
    """Each row mixes labelled words and ignored sub-tokens; only the labelled ones, in order, form the chain,
    and the loss is the summed -log p over rows divided by the labelled words."""
    crf = TagCRF(K)
    with torch.no_grad():
        crf.start.copy_(torch.tensor(scores[:K]))
        crf.pair.copy_(torch.tensor(scores[K:]).reshape(K, K))
    width = max(len(r) for r in rows)
    logits = torch.zeros(len(rows), width, K)
    labels = torch.full((len(rows), width), IGNORE_INDEX)
    expected, words = 0.0, 0
    for b, row in enumerate(rows):
        chain_e, chain_t = [], []
        for i, (em, tag, labelled) in enumerate(row):
            logits[b, i] = torch.tensor(em)
            if labelled:
                labels[b, i] = tag
                chain_e.append(em)
                chain_t.append(tag)
        if chain_t:
            expected += _brute_force_nll(chain_e, chain_t, scores[:K], np.reshape(scores[K:], (K, K)).tolist())
            words += len(chain_t)
    got = float(crf.nll(logits, labels).detach())
    assert got == pytest.approx(expected / words if words else 0.0, rel=1e-4, abs=1e-4)


def test_training_with_a_crf_learns_scores_that_decoding_reads(mini_docs, tmp_path):
    """A tiny model with crf=True: the loss falls, the learned scores move, and after save/load the config's
    spec hands exactly those scores to Viterbi."""
    from test_training import _tiny_model_and_batch
    from rasd_train.modeling import RasdConfig, RasdModel
    tok, model, batch = _tiny_model_and_batch(mini_docs, crf=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] * 0.7
    assert float(model.crf.pair.abs().max()) > 0.01  # the pair scores were trained
    assert "crf.pair" not in dict(model.relation_parameters())  # refit moves the relation head only
    model.save_pretrained(tmp_path)
    spec = RasdConfig.from_pretrained(tmp_path).spec()
    assert np.allclose(spec.crf.pair, model.crf.pair.detach().numpy())
    assert np.allclose(spec.crf.start, model.crf.start.detach().numpy())
    again = RasdModel.from_pretrained(tmp_path)
    assert torch.equal(again.crf.pair, model.crf.pair)


def test_a_crf_needs_viterbi_decoding():
    from rasd_train.config import config_from_dict
    from rasd_train.train import build_model
    cfg = config_from_dict({"model": {"crf": True, "decoding": "argmax"}})
    with pytest.raises(ValueError, match="model.crf: true needs model.decoding: viterbi"):
        build_model(cfg, None, None)


def test_a_crf_model_trains_exports_and_serves_with_its_learned_scores(tiny_config_path, mini_corpus, mini_docs,
                                                                       tmp_path):
    """The whole path with crf on: the training loop, the export (whose parity gate compares decoded
    predictions of torch and ONNX), and the torch-free Extractor, which must decode with the same scores."""
    from rasd import Extractor
    from rasd_train.config import load_config
    from rasd_train.export import export
    from rasd_train.modeling import RasdModel
    from rasd_train.train import train
    cfg = load_config(tiny_config_path, {"model.crf": True, "model.decoding": "viterbi", "train.epochs": 8,
                                         "train.output_dir": str(tmp_path / "run")})
    train(cfg)
    model_dir = str(tmp_path / "run" / "model")
    report = export(model_dir, str(tmp_path / "export"), data_dir=mini_corpus)
    assert report["parity"]["passed"]
    ex = Extractor.from_pretrained(str(tmp_path / "export"))
    trained = RasdModel.from_pretrained(model_dir).crf
    assert ex.spec.decoding == "viterbi"
    assert np.allclose(ex.spec.crf.pair, trained.pair.detach().numpy())
    assert np.allclose(ex.spec.crf.start, trained.start.detach().numpy())
    assert float(np.abs(ex.spec.crf.pair).max()) > 0.0
    assert ex.extract(mini_docs[0].text).entities is not None
