"""A model trained on a custom scheme (the military labels plus WEAPON and USED_IN, WEAPON -> OPERATION)
trains, exports, is served from the stand-in Hub and predicts its new labels, with no code change:
every part reads the labels from the scheme file or the model, never from globals."""
import json
import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
SCHEME = os.path.join(FIXTURES, "weapons_scheme.yaml")
YAML = """
encoder: {{name: tiny, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, vocab_size: 400}}
data: {{corpus: {data}, scheme: {scheme}}}
model: {{window_length: 64, window_stride: 16, relation_hidden_size: 32}}
train: {{output_dir: {out}, epochs: 60, batch_size: 3, learning_rate: 3e-3, head_learning_rate: 3e-3,
        eval_every: 30, early_stopping_patience: 0, num_threads: 2}}
"""


@pytest.fixture(scope="module")
def weapons_docs():
    from rasd.scheme import load_scheme
    from rasd_train.markup import parse_markup
    return parse_markup(os.path.join(FIXTURES, "weapons.txt"), load_scheme(SCHEME))


@pytest.fixture(scope="module")
def weapons_export(weapons_docs, tmp_path_factory):
    import copy
    from rasd.schema import write_documents
    from rasd_train.config import load_config
    from rasd_train.export import export
    from rasd_train.train import train
    root = tmp_path_factory.mktemp("weapons")
    corpus = root / "corpus"
    corpus.mkdir()
    for split in ("train", "dev", "test"):
        docs = copy.deepcopy(weapons_docs)
        for d in docs:
            d.id = f"{split}-{d.id}"
        write_documents(str(corpus / f"{split}.jsonl"), docs)
    cfg_path = root / "weapons.yaml"
    cfg_path.write_text(YAML.format(data=corpus, scheme=SCHEME, out=root / "run"), encoding="utf-8")
    cfg = load_config(str(cfg_path))
    summary = train(cfg)
    out = root / "export"
    export(os.path.join(cfg.train.output_dir, "model"), str(out), data_dir=str(corpus))
    return str(out), summary, str(corpus)


def test_the_scheme_travels_with_the_model(weapons_export):
    out, summary, _ = weapons_export
    with open(os.path.join(out, "rasd_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    assert cfg["scheme"]["name"] == "military-weapons" and "WEAPON" in cfg["scheme"]["entities"]
    assert cfg["scheme"]["relations"]["USED_IN"] == {"head": ["WEAPON"], "tail": ["OPERATION"]}
    assert "B-WEAPON" in cfg["id2tag"] and cfg["rasd_version"]
    assert "WEAPON" in summary["dev"]["strict"]["entities"]  # per-label metrics follow the scheme
    assert "USED_IN" in summary["dev"]["strict"]["relations"]
    with open(os.path.join(out, "README.md"), encoding="utf-8") as f:
        card = f.read()
    assert "military-weapons" in card and "USED_IN (WEAPON → OPERATION)" in card


def test_served_from_the_hub_it_predicts_the_new_labels(weapons_export, weapons_docs, hub):
    from rasd import Extractor
    from rasd.render import render_html
    from rasd.schema import validate_document
    out, _, _ = weapons_export
    sha = hub.add_repo("org/rasd-weapons", out)
    ex = Extractor.from_pretrained("org/rasd-weapons", revision=sha)
    assert ex.scheme.name == "military-weapons" and ex.scheme.relation_labels[-1] == "USED_IN"
    gold = weapons_docs[0]
    doc = ex.extract(gold.text)
    assert [(e.start, e.end, e.label) for e in doc.entities] == [(e.start, e.end, e.label) for e in gold.entities]
    by_id = {e.id: e for e in doc.entities}
    assert [(by_id[r.head].label, r.label, by_id[r.tail].label) for r in doc.relations] == \
        [("WEAPON", "USED_IN", "OPERATION")]
    assert validate_document(doc.to_dict(), prediction=True, scheme=ex.scheme) == []
    page = render_html([doc], scheme=ex.scheme)
    assert 'data-label="WEAPON"' in page and "#b5179e" in page


def test_unknown_label_against_the_builtin_scheme_is_named(weapons_export):
    from rasd.schema import SchemaError, read_documents
    _, _, corpus = weapons_export
    with pytest.raises(SchemaError, match="unknown entity label 'WEAPON' for scheme 'military'"):
        read_documents(os.path.join(corpus, "train.jsonl"))
