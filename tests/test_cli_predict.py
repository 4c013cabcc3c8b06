"""`rasd predict`, `validate`, `stats` and the Extractor's input checks."""
import json

import pytest

from rasd import Extractor
from rasd.cli import main
from rasd.hub import ModelFilesError

SENT = "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية بعد غارات جوية في محافظة دير الزور."


def test_predict_jsonl_round_trip(exported_model, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a1", "text": SENT}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    html = tmp_path / "view.html"
    assert main(["predict", "--model", exported_model, "--input", str(inp), "--output", str(out),
                 "--html", str(html)]) == 0
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["id"] == "a1" and rec["entities"]
    # the output is a valid prediction in the scheme's shape
    assert main(["validate", "--prediction", str(out)]) == 0
    page = html.read_text(encoding="utf-8")
    assert "dir='rtl'" in page and "ent-BASE" in page


def test_predict_reports_bad_lines(exported_model, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "ok", "text": SENT}, ensure_ascii=False) + "\n\n{bad\n" +
                   json.dumps({"id": "x"}) + "\n" + json.dumps({"id": "e", "text": "  "}) + "\n", encoding="utf-8")
    assert main(["predict", "--model", exported_model, "--input", str(inp)]) == 2
    err = capsys.readouterr().err
    assert f"{inp}:2: empty line" in err and f"{inp}:3: invalid JSON" in err and f"{inp}:4: no 'text'" in err
    assert f"{inp}:5: empty 'text'" in err
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", exported_model, "--input", str(inp), "--output", str(out),
                 "--skip-errors"]) == 0
    recs = [json.loads(l) for l in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in recs] == ["ok", "line-2", "line-3", "x", "e"]
    assert "entities" in recs[0] and all("error" in r for r in recs[1:])


def test_predict_plain_text(exported_model, tmp_path, capsys):
    inp = tmp_path / "article.txt"
    inp.write_text(SENT + "\n" + SENT + "\n", encoding="utf-8")
    assert main(["predict", "--model", exported_model, "--input", str(inp), "--fp32"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["id"] == "article" and rec["text"].count("\n") == 1
    # relations never cross the paragraph break
    para = {e["id"]: rec["text"].count("\n", 0, e["start"]) for e in rec["entities"]}
    assert all(para[r["head"]] == para[r["tail"]] for r in rec["relations"])


def test_extractor_input_errors(exported_model):
    ex = Extractor.from_pretrained(exported_model, max_chars=500)
    with pytest.raises(ValueError, match="text #1 is empty"):
        ex.extract_batch([SENT, "   "])
    with pytest.raises(TypeError, match="text #0 is bytes"):
        ex.extract_batch([SENT.encode()])
    with pytest.raises(ValueError, match="over the limit of 500"):
        ex.extract(SENT * 10)


def test_long_text_is_read_to_the_end(exported_model):
    """A text many windows long: every window reaches the model, entities are found
    from the first to the last copy of the sentence, offsets stay exact."""
    ex = Extractor.from_pretrained(exported_model)
    rows = []
    tag = ex.backend.tag
    ex.backend.tag = lambda ids, mask: (rows.extend(mask.sum(1).tolist()), tag(ids, mask))[1]
    text = " ".join([SENT] * 30)
    doc = ex.extract(text)
    assert len(rows) >= 4 and max(rows) <= ex.spec.window_length
    assert sum(rows) > len(ex.tokenizer.encode(text).ids)  # overlapping windows re-read some tokens
    copy = len(SENT) + 1
    found = {e.start // copy for e in doc.entities}
    assert {0, 10, 20, 29} <= found
    for e in doc.entities:
        assert text[e.start:e.end] == e.text


def test_missing_and_wrong_model_files(exported_copy, tmp_path):
    import os
    os.remove(os.path.join(exported_copy, "relation.onnx"))
    with pytest.raises(ModelFilesError, match=r"missing file relation.onnx"):
        Extractor.from_pretrained(exported_copy, quantized=False)
    with pytest.raises(ModelFilesError, match="not found"):
        Extractor.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(ModelFilesError, match="manifest"):
        Extractor.from_pretrained(str(tmp_path))


def test_wrong_onnx_inputs_are_named(exported_copy):
    """A graph whose inputs differ from the spec is refused with the names."""
    import os
    from rasd.runtime import ModelFormatError, OnnxBackend
    enc = os.path.join(exported_copy, "encoder.onnx")
    rel = os.path.join(exported_copy, "relation.onnx")
    with pytest.raises(ModelFormatError, match="graph inputs"):
        OnnxBackend(rel, rel)
    backend = OnnxBackend(enc, rel)
    import numpy as np
    with pytest.raises(ValueError, match="input 'input_ids' must have 2 dimensions"):
        backend.tag(np.zeros(5, dtype=np.int64), np.ones(5, dtype=np.int64))


def test_validate_and_stats_commands(mini_corpus, capsys):
    assert main(["validate", f"{mini_corpus}/train.jsonl"]) == 0
    assert "violations=0 documents=8" in capsys.readouterr().out
    assert main(["stats", mini_corpus]) == 0
    out = capsys.readouterr().out
    assert "train | 8 |" in out and "same string, different labels" in out
    assert "quotes_per_1000_words=" in out and "locations_compass_pct=" in out


def test_validate_with_a_custom_scheme_file(mini_corpus, tmp_path, capsys):
    import json
    scheme = {"name": "bases-only", "version": "1", "entities": ["BASE"], "relations": {}}
    path = tmp_path / "scheme.json"
    path.write_text(json.dumps(scheme), encoding="utf-8")
    assert main(["validate", "--scheme", str(path), f"{mini_corpus}/train.jsonl"]) == 1
    out = capsys.readouterr().out
    assert "unknown entity label 'FORCE' for scheme 'bases-only' (known: BASE)" in out
    with pytest.raises(SystemExit, match="scheme file not found"):
        main(["validate", "--scheme", str(tmp_path / "none.json"), f"{mini_corpus}/train.jsonl"])


def test_invalid_utf8_and_lone_surrogates_are_named(exported_model, tmp_path, capsys):
    inp = tmp_path / "cut.txt"
    inp.write_bytes(SENT.encode("utf-8")[:-1] + b"\n" + "ب".encode("utf-8")[:1])  # a character cut in two
    assert main(["predict", "--model", exported_model, "--input", str(inp), "--format", "text"]) == 2
    assert f"{inp}:2: not UTF-8" in capsys.readouterr().err
    ex = Extractor.from_pretrained(exported_model)
    with pytest.raises(ValueError, match="lone surrogate at character 3"):
        ex.extract("abc\udcd8def")


def test_score_thresholds_drop_low_scores_and_keep_ids_consistent(exported_model, capsys):
    from rasd.schema import validate_document
    ex = Extractor.from_pretrained(exported_model)
    full = ex.extract(SENT)
    assert full.entities and full.relations
    cut = sorted(e.score for e in full.entities)[len(full.entities) // 2]  # keep about the upper half
    part = ex.extract(SENT, min_entity_score=cut)
    assert [e.text for e in part.entities] == [e.text for e in full.entities if e.score >= cut]
    assert [e.id for e in part.entities] == [f"T{k}" for k in range(1, len(part.entities) + 1)]
    assert validate_document(part.to_dict(), prediction=True) == []  # relations point at kept entities
    assert ex.extract(SENT, min_relation_score=1.0).relations == []
    strict = Extractor.from_pretrained(exported_model, min_entity_score=1.0)
    assert strict.extract(SENT).entities == [] and strict.extract(SENT).relations == []
    with pytest.raises(ValueError, match="min_entity_score must be in 0..1"):
        ex.extract(SENT, min_entity_score=1.5)


def test_predict_command_takes_score_thresholds(exported_model, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a1", "text": SENT}, ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", exported_model, "--input", str(inp), "--output", str(out),
                 "--min-relation-score", "1.0"]) == 0
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["entities"] and rec["relations"] == []
    assert main(["predict", "--model", exported_model, "--input", str(inp), "--min-entity-score", "2"]) == 2
    assert "min_entity_score must be in 0..1, got 2.0" in capsys.readouterr().err



def test_onnxruntime_threads_default_to_this_process_cpus(exported_model, monkeypatch):
    """By default sessions use the cores this process may run on (its CPU affinity), not every core of the
    host; threads= still wins."""
    import os
    from rasd import runtime
    assert runtime.default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0})
    seen = []
    real = runtime.ort.InferenceSession
    monkeypatch.setattr(runtime.ort, "InferenceSession",
                        lambda path, sess_options, providers: (seen.append(sess_options.intra_op_num_threads),
                                                               real(path, sess_options=sess_options,
                                                                    providers=providers))[1])
    Extractor.from_pretrained(exported_model)
    Extractor.from_pretrained(exported_model, threads=3)
    assert seen == [1, 1, 3, 3]  # encoder and relation graph, each load
