"""Archive scale: streaming `rasd predict` (flat memory, resume, progress), Parquet, `rasd batch` local and Ray."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rasd.cli import main

SENTS = ["انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية.",
         "أعلن الجيش العراقي بدء عملية «قادمون يا نينوى» شمال الموصل.",
         "تسلمت قوات سوريا الديمقراطية قاعدة صرين من القوات الفرنسية بعد انسحابها.",
         "قال المتحدث باسم وكالة الأنباء إن اللواء الثامن انسحب من مدينة تلعفر."]


def write_jsonl(path, n, start=0):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"d{i}", "text": f"{SENTS[i % 4]} ({i})"}, ensure_ascii=False) + "\n")
    return str(path)


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def shard_records(out_dir):
    from rasd.sinks import read_parquet_records
    recs = []
    for p in sorted(glob.glob(os.path.join(out_dir, "part-*"))):
        recs += read_parquet_records(p) if p.endswith(".parquet") else records(p)
    return recs


def run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "rasd.cli", *args], capture_output=True, text=True, **kw)


def peak_rss_mb(model, inp, out):
    code = ("import resource, sys; from rasd.cli import main; "
            f"rc = main(['predict', '--model', {model!r}, '--input', {inp!r}, '--output', {out!r}]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return float(r.stdout.strip().splitlines()[-1])


def test_streaming_memory_stays_flat(exported_model, tmp_path):
    small = peak_rss_mb(exported_model, write_jsonl(tmp_path / "200.jsonl", 200), str(tmp_path / "o1.jsonl"))
    large = peak_rss_mb(exported_model, write_jsonl(tmp_path / "2000.jsonl", 2000), str(tmp_path / "o2.jsonl"))
    assert len(records(tmp_path / "o2.jsonl")) == 2000
    print(f"peak RSS: 200 docs {small:.0f} MB, 2000 docs {large:.0f} MB")
    assert large - small < 60, (small, large)


def test_resume_after_a_killed_run_gives_one_record_per_input(exported_model, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", 3000)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "rasd.cli", "predict", "--model", exported_model, "--input", inp,
                             "--output", str(out), "--chunk-size", "50"], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text(encoding="utf-8").count("\n") < 100):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = out.read_text(encoding="utf-8").count("\n")
    assert 100 <= written < 3000, written
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "d999", "text": "cut off mid-wr')  # a record the kill interrupted
    r = run_cli(["predict", "--model", exported_model, "--input", inp, "--output", str(out), "--resume"])
    assert r.returncode == 0, r.stderr
    assert "incomplete last record" in r.stderr and f"{written} document(s) already" in r.stderr
    assert [x["id"] for x in records(out)] == [f"d{i}" for i in range(3000)]


def test_progress_goes_to_stderr_only(exported_model, tmp_path):
    r = run_cli(["predict", "--model", exported_model, "--input", write_jsonl(tmp_path / "in.jsonl", 30),
                 "--progress", "--chunk-size", "7"])
    assert r.returncode == 0, r.stderr
    assert len([json.loads(line) for line in r.stdout.splitlines()]) == 30
    assert "30/30 documents" in r.stderr and "docs/s" in r.stderr


def test_inputs_from_directories_and_globs(exported_model, tmp_path, capsys):
    d = tmp_path / "archive"
    (d / "2024").mkdir(parents=True)
    write_jsonl(d / "2024" / "a.jsonl", 3)
    write_jsonl(d / "b.jsonl", 2, start=3)
    (d / "c.txt").write_text(SENTS[0], encoding="utf-8")
    (d / "notes.md").write_text("not an input", encoding="utf-8")
    assert main(["predict", "--model", exported_model, "--input", str(d)]) == 0
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["d0", "d1", "d2", "d3", "d4", "c"]
    assert main(["predict", "--model", exported_model, "--input", str(d / "*" / "*.jsonl")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["predict", "--model", exported_model, "--input", str(d / "*.csv")]) == 2
    assert "no file matches" in capsys.readouterr().err


def test_duplicate_ids_name_both_lines(exported_model, tmp_path, capsys):
    a, b = write_jsonl(tmp_path / "a.jsonl", 3), write_jsonl(tmp_path / "b.jsonl", 3, start=2)
    assert main(["predict", "--model", exported_model, "--input", a, "--input", b]) == 2
    err = capsys.readouterr().err
    assert f"{b}:1: duplicate id 'd2' (first at {a}:3)" in err
    # without the checking pass (--skip-errors streams straight away) the error still names both
    assert main(["predict", "--model", exported_model, "--input", a, "--input", b, "--skip-errors"]) == 2
    assert f"{b}:1: duplicate id 'd2' (first at {a}:3)" in capsys.readouterr().err


def parquet_input(path, rows, **types):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    pq.write_table(pa.table({k: pa.array(v, type=types.get(k)) for k, v in cols.items()}), str(path))
    return str(path)


def test_parquet_in_and_out_match_jsonl(exported_model, tmp_path, capsys):
    rows = [{"doc_id": f"d{i}", "body": f"{SENTS[i % 4]} ({i})"} for i in range(40)]
    pq_in = parquet_input(tmp_path / "in.parquet", rows)
    jl_in = write_jsonl(tmp_path / "in.jsonl", 40)
    # Dynamic INT8 scales depend on the batch, so the runs compared read the same chunks of 15 documents.
    assert main(["predict", "--model", exported_model, "--input", jl_in, "--output", str(tmp_path / "a.jsonl"),
                 "--chunk-size", "15"]) == 0
    expected = records(tmp_path / "a.jsonl")
    assert main(["predict", "--model", exported_model, "--input", pq_in, "--text-column", "body", "--id-column",
                 "doc_id", "--output", str(tmp_path / "b.jsonl"), "--chunk-size", "15"]) == 0
    assert records(tmp_path / "b.jsonl") == expected
    out = tmp_path / "shards"
    assert main(["batch", "--model", exported_model, "--input", jl_in, "--output", str(out), "--output-format",
                 "parquet", "--shard-size", "15"]) == 0
    assert sorted(os.listdir(out)) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert shard_records(out) == expected
    assert main(["batch", "--model", exported_model, "--input", jl_in, "--output", str(out)]) == 2
    assert "already holds shards" in capsys.readouterr().err


def test_bad_parquet_inputs_are_named(exported_model, tmp_path, capsys):
    p = parquet_input(tmp_path / "p.parquet", [{"id": "a", "body": SENTS[0]}, {"id": "b", "body": None}])
    assert main(["predict", "--model", exported_model, "--input", p]) == 2
    assert f"{p}: no column 'text' (columns: id, body); choose one with --text-column" in capsys.readouterr().err
    assert main(["predict", "--model", exported_model, "--input", p, "--text-column", "body"]) == 2
    assert f"{p}:row 2: text is null" in capsys.readouterr().err
    n = parquet_input(tmp_path / "n.parquet", [{"id": "a", "text": 5}])
    assert main(["predict", "--model", exported_model, "--input", n]) == 2
    assert f"{n}: column 'text' holds int64, not strings" in capsys.readouterr().err


def test_parquet_without_pyarrow_says_what_to_install(exported_model, tmp_path, capsys, monkeypatch):
    p = parquet_input(tmp_path / "p.parquet", [{"id": "a", "text": SENTS[0]}])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["predict", "--model", exported_model, "--input", p]) == 2
    assert "pip install 'rasd[parquet]'" in capsys.readouterr().err


def test_batch_on_ray_reproduces_predict(exported_fp32_only, tmp_path):
    """FP32 graphs give each document the same output whatever shares its batch (dynamic INT8 does not:
    its activation scales are computed per batch), so Ray's batches must reproduce `rasd predict`."""
    exported_model = exported_fp32_only
    pytest.importorskip("ray")
    inp = write_jsonl(tmp_path / "in.jsonl", 60)
    with open(inp, "a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "empty", "text": " "}) + "\n")
    assert main(["predict", "--model", exported_model, "--input", inp, "--skip-errors",
                 "--output", str(tmp_path / "p.jsonl")]) == 0
    out = tmp_path / "ray"
    r = run_cli(["batch", "--engine", "ray", "--num-actors", "2", "--model", exported_model, "--input", inp,
                 "--output", str(out), "--shard-size", "25", "--skip-errors"], timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    assert shard_records(out) == records(tmp_path / "p.jsonl")
