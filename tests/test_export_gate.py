"""The INT8 gate: dev and test together, both metrics within the tolerance, decision agreement reported."""
import json
import os

import pytest

from rasd.schema import Document, Entity, Relation
from rasd_train.export import INT8_GATE_BATCH_SIZES, agreement


def _report(export_dir):
    with open(os.path.join(export_dir, "export_report.json"), encoding="utf-8") as f:
        return json.load(f)


def test_gate_reads_dev_and_test_and_reports_agreement(exported_model, exported_fp32_only):
    for path, tolerance in ((exported_model, 1.0), (exported_fp32_only, -1.0)):
        r = _report(path)
        assert r["gate_documents"]["splits"] == ["dev", "test"] and r["gate_documents"]["documents"] == 8
        assert sorted(map(int, r["int8_by_batch_size"])) == list(INT8_GATE_BATCH_SIZES)
        for kind in ("entities", "relations"):
            assert 0.0 <= r["int8_agreement"][kind] <= 1.0
        drops = [r["fp32_gate"][k] - r["int8_gate"][k] for k in ("entity_f1", "relation_f1")]
        assert r["int8_published"] == all(d <= tolerance for d in drops)
    assert _report(exported_model)["int8_published"] and not _report(exported_fp32_only)["int8_published"]


def test_agreement_counts_identical_decisions():
    ents = [Entity("T1", 0, 5, "FORCE"), Entity("T2", 9, 14, "BASE")]
    a = [Document("a", "x" * 20, ents, [Relation("T1", "T2", "WITHDREW_FROM")])]
    assert agreement(a, a) == {"entities": 1.0, "relations": 1.0}
    moved = [Document("a", "x" * 20, [ents[0], Entity("T2", 9, 13, "BASE")], [Relation("T1", "T2", "WITHDREW_FROM")])]
    # one of three distinct entities is shared twice; the relation's tail moved, so no relation is shared
    assert agreement(a, moved) == {"entities": round(1 / 3, 4), "relations": 0.0}
    assert agreement([Document("e", "x")], [Document("e", "x")]) == {"entities": 1.0, "relations": 1.0}


def test_static_int8_is_calibrated_on_train_and_independent_of_batch_mates(trained_run, mini_corpus, tmp_path):
    import onnx

    from rasd import Extractor
    from rasd_train.export import export
    run_dir, _ = trained_run
    out = str(tmp_path / "static")
    r = export(os.path.join(run_dir, "model"), out, quantize=True, data_dir=mini_corpus, int8_tolerance=1.0,
               int8_recipe="static")
    assert r["int8_published"] and r["int8_recipe"]["recipe"] == "static"
    ops = {n.op_type for n in onnx.load(os.path.join(out, "encoder.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops
    ex = Extractor(out)
    text = "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية."
    other = "أعلن الجيش العراقي بدء عملية «قادمون يا نينوى» شمال الموصل في محافظة نينوى بعد أسابيع من التحضير " * 3
    alone = ex.extract_batch([text], doc_ids=["x"])[0].to_dict()
    with_mates = ex.extract_batch([other, text, other], batch_size=3, doc_ids=["a", "x", "b"])[1].to_dict()
    assert alone == with_mates and alone["entities"]
    assert r["int8_recipe"]["relation_graph"] == "fp32"


def test_encoder_graph_is_fused_and_still_matches_torch(exported_model):
    """Eager tracing lets onnxruntime fuse every layer's attention; the parity check ran on the fused graph."""
    import onnx
    report = _report(exported_model)
    fusion = report["fusion"]
    assert fusion["applied"] and fusion["fused"]["Attention"] == fusion["layers"]
    assert fusion["fused"]["SkipLayerNormalization"] == 2 * fusion["layers"]
    ops = {n.op_type for n in onnx.load(os.path.join(exported_model, "encoder.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops and "Softmax" not in ops
    assert report["parity"]["passed"]


def test_unknown_encoder_families_are_left_unfused(tmp_path):
    from types import SimpleNamespace

    from rasd_train.fuse import fuse_encoder
    out = fuse_encoder(str(tmp_path / "missing.onnx"), SimpleNamespace(model_type="gpt2"))
    assert out == {"applied": False, "reason": "encoder type 'gpt2' is not one the optimizer fuses"}


def test_bench_runs_every_variant_and_relates_pipelines_to_their_encoders(trained_run, exported_model,
                                                                         mini_corpus, tmp_path):
    """The benchmark script end to end on the tiny model (figures are printed, never asserted on)."""
    from rasd_train import bench
    run_dir, _ = trained_run
    assert bench.main(["--model-dir", os.path.join(run_dir, "model"), "--export-dir", exported_model,
                       "--data", mini_corpus, "--threads", "1", "--max-docs", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    rows = {r["variant"].split(" ")[0]: r for r in result["rows"]}
    assert set(rows) == set(bench.VARIANTS)
    assert all("error" not in r and r["tokens_per_s_b32"] > 0 for r in rows.values()), result["rows"]
    assert set(result["meta"]["pipeline_vs_encoder_b32"]) == {"onnx-fp32-unfused", "onnx-fp32", "onnx-int8"}
    assert rows["onnx-fp32"]["entity_f1"] == rows["onnx-fp32-unfused"]["entity_f1"]  # fusion changes no decision


def test_smoothing_keeps_the_fp32_function_and_shrinks_int8_error(exported_model, mini_corpus, tmp_path):
    """SmoothQuant scaling is exact in FP32 (X/s @ s*W), puts a Mul in front of every quantised node, and the
    measured INT8 error of the smoothed graph is reported, not assumed."""
    import onnx

    from rasd.backend import ModelSpec, read_config
    from rasd.schema import read_documents
    from rasd_train.quantize import calibration_batches, output_error, quantize_encoder
    from rasd_train.smooth import smooth_encoder
    from tokenizers import Tokenizer
    spec = ModelSpec.from_dict(read_config(exported_model))
    tok = Tokenizer.from_file(os.path.join(exported_model, "tokenizer.json"))
    texts = [d.text for d in read_documents(os.path.join(mini_corpus, "train.jsonl"), spec.scheme)]
    batches = calibration_batches(texts, tok, spec, batch_size=4, max_windows=16)
    src, smoothed = os.path.join(exported_model, "encoder.onnx"), str(tmp_path / "smoothed.onnx")
    info = smooth_encoder(src, smoothed, batches)
    graph = onnx.load(smoothed).graph
    quantisable = [n for n in graph.node if n.op_type in ("MatMul", "Attention") and n.input[1] in
                   {t.name for t in graph.initializer}]
    assert info["nodes"] == len(quantisable) > 0
    assert all(n.input[0].endswith("/smoothed_input") for n in quantisable)
    assert output_error(src, smoothed, batches) < 1e-5  # the same function in FP32
    quantize_encoder(src, str(tmp_path / "q.onnx"), "dynamic-smooth", calibration=batches)
    assert output_error(src, str(tmp_path / "q.onnx"), batches) > 0  # INT8 really ran
    with pytest.raises(ValueError, match="needs calibration batches"):
        quantize_encoder(src, str(tmp_path / "q2.onnx"), "dynamic-smooth")
