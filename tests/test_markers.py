"""The typed-marker relation pass (rasd_train.markers): the packed computation equals PURE's approximation written
out as one sequence per window with a structured attention mask; it trains, exports and serves like any head."""
import numpy as np
import pytest
import torch

from test_training import _tiny_model_and_batch, train_on_batch


def _reference_markers(model, ctx, pairs):
    """Each window run through the top layers as [text; its pairs' markers], markers sharing their token's position
    state, with an additive mask: text sees text, a marker sees the text and its own pair's four markers."""
    n = model.config.relation_markers
    layers = list(model.encoder_layers())[-n:]
    states, mask = ctx["layer_states"], ctx["attention_mask"]
    out = {}
    for b in range(mask.shape[0]):
        idx = [p for p in range(len(pairs["pair_batch"])) if int(pairs["pair_batch"][p]) == b]
        if not idx:
            continue
        T, M = mask.shape[1], 4 * len(idx)
        kinds, rows = [], []
        for p in idx:
            (hs, he), (ts, te) = pairs["head_span"][p].tolist(), pairs["tail_span"][p].tolist()
            ht, tt = int(pairs["head_type"][p]), int(pairs["tail_type"][p])
            L = model.markers.n_labels
            rows += [hs, he - 1, ts, te - 1]
            kinds += [ht, ht + L, tt + 2 * L, tt + 3 * L]
        x = torch.cat([states[0, b], states[0, b, rows] + model.markers.marker_embedding(torch.tensor(kinds))])
        allowed = torch.zeros(T + M, T + M, dtype=torch.bool)
        allowed[:, :T] = mask[b].bool()
        for k in range(len(idx)):
            allowed[T + 4 * k:T + 4 * k + 4, T + 4 * k:T + 4 * k + 4] = True
        add = torch.zeros(T + M, T + M).masked_fill(~allowed, float("-inf"))[None, None]
        for i, layer in enumerate(layers):
            if i:  # the text part must be exactly the tagger pass's own states
                assert torch.allclose(x[:T][mask[b].bool()], states[i, b][mask[b].bool()], atol=1e-5)
            x = layer(x[None], add)[0]
        for k, p in enumerate(idx):
            out[p] = x[T + 4 * k:T + 4 * k + 4].reshape(-1)
    return torch.stack([out[p] for p in range(len(pairs["pair_batch"]))])


@pytest.mark.parametrize("markers,layers,per_row", [(2, 2, 8), (1, 2, 8), (2, 2, 2), (1, 1, 1)])
def test_packed_marker_pass_equals_the_structured_mask_sequence(mini_docs, monkeypatch, markers, layers, per_row):
    """Rows of up to per_row pairs: with 1 or 2 a window's pairs spread over several rows."""
    monkeypatch.setattr("rasd_train.markers.PAIRS_PER_ROW", per_row)
    _, model, batch = _tiny_model_and_batch(mini_docs, markers=markers, layers=layers)
    model.eval()
    with torch.no_grad():
        _, ctx = model.context(batch["input_ids"], batch["attention_mask"])
        pairs = batch["pairs"]
        counts = np.bincount(pairs["pair_batch"].numpy())
        assert (counts > 0).sum() > 1 and counts.max() > 2  # several windows, and windows of several pairs
        got = model.markers(list(model.encoder_layers())[-markers:], ctx["layer_states"], ctx["attention_mask"],
                            pairs["pair_batch"], pairs["head_span"], pairs["tail_span"], pairs["head_type"],
                            pairs["tail_type"])
        ref = _reference_markers(model, ctx, pairs)
    assert got.shape == (len(pairs["pair_batch"]), 4 * 32)
    assert torch.allclose(got, ref, atol=1e-4), (got - ref).abs().max()


def test_markers_are_typed_and_pair_specific(mini_docs):
    """Another head type changes that pair's marker states; a pair's states do not depend on the other pairs."""
    _, model, batch = _tiny_model_and_batch(mini_docs, markers=1)
    model.eval()
    p = batch["pairs"]
    with torch.no_grad():
        _, ctx = model.context(batch["input_ids"], batch["attention_mask"])
        run = lambda q: model.markers(list(model.encoder_layers()), ctx["layer_states"], ctx["attention_mask"],
                                      q["pair_batch"], q["head_span"], q["tail_span"], q["head_type"], q["tail_type"])
        full = run(p)
        retyped = run(dict(p, head_type=(p["head_type"] + 1) % model.markers.n_labels))
        alone = run({k: v[:1] for k, v in p.items()})
    assert not torch.allclose(full, retyped, atol=1e-4)
    assert torch.allclose(full[:1], alone, atol=1e-5)


def test_marker_model_trains_and_its_relation_loss_falls(mini_docs):
    _, model, batch = _tiny_model_and_batch(mini_docs, markers=1)
    losses = train_on_batch(model, batch, 25, loss="rel_loss")
    assert model.markers.marker_embedding.weight.grad.abs().sum() > 0
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_marker_model_exports_and_the_onnx_backend_matches_torch(mini_docs, tmp_path):
    from rasd.runtime import OnnxBackend
    from rasd_train.onnx_graphs import export_graphs
    from rasd_train.modeling import TorchBackend
    tok, model, batch = _tiny_model_and_batch(mini_docs, markers=2, layers=2)
    model.eval()
    export_graphs(model, tok, str(tmp_path))
    onnx = OnnxBackend(str(tmp_path / "encoder.onnx"), str(tmp_path / "relation.onnx"), threads=1)
    assert {"layer_states", "attention_mask"} <= set(onnx.relation_spec["inputs"])
    torch_backend = TorchBackend(model)
    ids, mask = batch["input_ids"].numpy(), batch["attention_mask"].numpy()
    (lt, ct), (lo, co) = torch_backend.tag(ids, mask), onnx.tag(ids, mask)
    assert set(ct) == set(co) == {"hidden_states", "layer_states", "attention_mask"}
    assert co["layer_states"].shape == (2,) + ids.shape + (32,)
    valid = mask.astype(bool)
    assert np.allclose(lt[valid], lo[valid], atol=1e-4)
    pairs = {k: v.numpy() for k, v in batch["pairs"].items()}
    assert np.allclose(torch_backend.relate(ct, pairs), onnx.relate(co, pairs), atol=1e-4)
    # A marker relation graph beside an encoder graph without layer_states is refused by name.
    _, plain, _ = _tiny_model_and_batch(mini_docs, layers=2)
    (tmp_path / "plain").mkdir()
    export_graphs(plain.eval(), tok, str(tmp_path / "plain"))
    from rasd.runtime import ModelFormatError
    with pytest.raises(ModelFormatError, match=r"relation.onnx reads \['layer_states'\], which encoder.onnx does"):
        OnnxBackend(str(tmp_path / "plain" / "encoder.onnx"), str(tmp_path / "relation.onnx"), threads=1)


def test_marker_settings_are_checked():
    from rasd_train.markers import check_layers
    from rasd_train.modeling import RasdConfig
    with pytest.raises(ValueError, match="relation_markers must be >= 0"):
        RasdConfig(relation_markers=-1)
    with pytest.raises(ValueError, match="relation_markers 3: enc has 2 layers"):
        check_layers([torch.nn.Linear(1, 1)] * 2, 3, "enc")
    with pytest.raises(ValueError, match="lack attention.self.query; the marker pass reads BERT-family layers"):
        check_layers([torch.nn.Linear(1, 1)], 1, "enc")


def test_marker_model_decodes_alike_through_torch_and_onnx(mini_docs, tmp_path):
    """The whole pipeline (windows, pairs placed per batch, relation contexts kept per batch) on both backends."""
    from rasd import pipeline
    from rasd.runtime import OnnxBackend
    from rasd_train.gate import decoded_differences
    from rasd_train.onnx_graphs import export_graphs
    from rasd_train.modeling import TorchBackend
    tok, model, batch = _tiny_model_and_batch(mini_docs, markers=1, layers=2)
    torch.nn.init.normal_(model.tagger.weight, std=2.0)  # an untrained tagger still tags some words as names
    model.eval()
    export_graphs(model, tok, str(tmp_path))
    onnx = OnnxBackend(str(tmp_path / "encoder.onnx"), str(tmp_path / "relation.onnx"), threads=1)
    texts = [d.text for d in mini_docs]
    spec = model.spec()
    ref = pipeline.predict(texts, tok.backend_tokenizer, spec, TorchBackend(model), batch_size=3)
    got = pipeline.predict(texts, tok.backend_tokenizer, spec, onnx, batch_size=3)
    assert sum(len(d.relations) for d in ref) > 0  # relations were scored and kept
    assert decoded_differences(ref, got) == []


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=60), st.integers(1, 9))
def test_pack_rows_gives_every_pair_its_own_slot_in_a_row_of_its_window(windows, per_row):
    import rasd_train.markers as mk
    old, mk.PAIRS_PER_ROW = mk.PAIRS_PER_ROW, per_row
    try:
        pair_batch = torch.tensor(windows)
        row, slot, row_window, slots = mk.pack_rows(pair_batch, 6)
    finally:
        mk.PAIRS_PER_ROW = old
    places = list(zip(row.tolist(), slot.tolist()))
    assert len(set(places)) == len(places)  # no two pairs share a slot
    assert all(row_window[r] == w for (r, _), w in zip(places, windows))  # a row holds one window's pairs
    assert int(slots) == 4 * min(per_row, max(windows.count(w) for w in set(windows)))
    assert all(0 <= s < int(slots) // 4 for s in slot.tolist())
    assert set(row.tolist()) == set(range(len(row_window)))  # no empty rows
    assert len(row_window) == sum(-(-windows.count(w) // per_row) for w in set(windows))
