"""Shared fixtures: a tiny corpus from tests/fixtures/mini.txt, and one tiny
model trained and exported once per test session (hidden size 32)."""
from __future__ import annotations

import os
import shutil

import pytest

from hub_server import hub  # noqa: F401  (the stand-in Hub fixture, for every test module)

HERE = os.path.dirname(__file__)
MINI = os.path.join(HERE, "fixtures", "mini.txt")
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared"))


def shared_path(*parts: str) -> str:
    """A file of ../shared (the scheme's checker, the seeds). CI always has it beside the clone, so there
    a missing file fails the test; elsewhere (a clone on its own) the test is skipped, saying why."""
    path = os.path.join(SHARED, *parts)
    if not os.path.exists(path):
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have shared/ beside the repository")
        pytest.skip(f"{path} not found: shared/ is not beside this clone")
    return path


@pytest.fixture(scope="session")
def mini_docs():
    from rasd_train.markup import parse_markup
    return parse_markup(MINI)


@pytest.fixture(scope="session")
def mini_corpus(tmp_path_factory, mini_docs):
    """train = all 8 documents, dev = first 4, test = last 4 (ids made unique)."""
    from rasd.schema import write_documents
    import copy
    d = tmp_path_factory.mktemp("mini_corpus")
    write_documents(str(d / "train.jsonl"), mini_docs)
    for split, part in (("dev", mini_docs[:4]), ("test", mini_docs[4:])):
        docs = copy.deepcopy(part)
        for doc in docs:
            doc.id = f"{split}-{doc.id}"
        _mark_a_lookalike(docs[0])
        write_documents(str(d / f"{split}.jsonl"), docs)
    return str(d)


def _mark_a_lookalike(doc) -> None:
    """Give the document meta as the real corpus has it (a look-alike span list), so the training run reads it
    through the datasets round trip and the error analysis, as it does on data/corpus."""
    import re
    word = next(m for m in re.finditer(r"\w+", doc.text)
                if not any(e.start < m.end() and m.start() < e.end for e in doc.entities))
    doc.meta = {**(doc.meta or {}), "event": "mini", "lookalikes": [{"start": word.start(), "end": word.end(),
                                                                     "kind": "PERSON"}]}


TINY_YAML = """
encoder: {{name: tiny, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 64, vocab_size: 400}}
data: {{corpus: {data}}}
model: {{window_length: 64, window_stride: 16, relation_hidden_size: 32}}
train: {{output_dir: {out}, epochs: 40, batch_size: 4, learning_rate: 3e-3,
        head_learning_rate: 3e-3, eval_every: 20, early_stopping_patience: 0, num_threads: 2}}
"""


@pytest.fixture(scope="session")
def tiny_config_path(tmp_path_factory, mini_corpus):
    d = tmp_path_factory.mktemp("tiny_cfg")
    path = d / "tiny.yaml"
    path.write_text(TINY_YAML.format(data=mini_corpus, out=d / "run"), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def trained_run(tiny_config_path):
    """(run dir, summary) of a tiny model trained on the mini corpus."""
    from rasd_train.config import load_config
    from rasd_train.train import train
    cfg = load_config(tiny_config_path)
    summary = train(cfg)
    return cfg.train.output_dir, summary


@pytest.fixture(scope="session")
def exported_model(trained_run, mini_corpus, tmp_path_factory):
    """The tiny model exported to ONNX with INT8 published: its gate is opened wide (tolerance 1.0), so
    both graph sets exist whatever INT8 does to a 32-wide model."""
    from rasd_train.export import export
    run_dir, _ = trained_run
    out = tmp_path_factory.mktemp("export") / "model"
    report = export(os.path.join(run_dir, "model"), str(out), quantize=True, data_dir=mini_corpus,
                    int8_tolerance=1.0)
    assert report["parity"]["passed"] and report["int8_published"], report
    return str(out)


@pytest.fixture(scope="session")
def exported_fp32_only(trained_run, mini_corpus, tmp_path_factory):
    """The same model exported with a gate no INT8 can pass (tolerance below zero): FP32 graphs only."""
    from rasd_train.export import export
    run_dir, _ = trained_run
    out = tmp_path_factory.mktemp("export_fp32") / "model"
    report = export(os.path.join(run_dir, "model"), str(out), quantize=True, data_dir=mini_corpus,
                    int8_tolerance=-1.0)
    assert report["parity"]["passed"] and not report["int8_published"], report
    return str(out)


@pytest.fixture
def exported_copy(exported_model, tmp_path):
    """A private copy a test may damage."""
    dst = tmp_path / "model"
    shutil.copytree(exported_model, dst)
    return str(dst)
