"""Loading models by Hub repo id, pinning revisions, offline reuse of the cache,
corruption detection and `rasd push`, all against the stand-in Hub of
tests/hub_server.py (huggingface_hub's real client code, no network)."""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest

from rasd import Extractor
from rasd.hub import ModelFilesError, push_model
from rasd.onnx_spec import graph_files

TEXT = "انسحبت القوات الأمريكية من قاعدة التنف وسلّمتها إلى الحكومة السورية بعد غارات جوية في محافظة دير الزور."
REPO = "org/rasd-tiny"


def manifest_files(model_dir):
    with open(os.path.join(model_dir, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)["files"]


def expected_snapshot(model_dir, *quantized):
    """The files a load with these `quantized` settings should have fetched."""
    files = manifest_files(model_dir)
    names = {"manifest.json", "rasd_config.json", "tokenizer.json"} | ({"README.md"} & set(files))
    for q in quantized:
        names |= set(graph_files(files, q))
    return names


def has_int8(model_dir):
    return graph_files(manifest_files(model_dir), True)[0].endswith(".int8.onnx")


def set_offline(monkeypatch, offline: bool):
    # huggingface_hub reads HF_HUB_OFFLINE once, at import, into constants.HF_HUB_OFFLINE
    # (constants.is_offline_mode() returns it), so the env var alone does not reach it.
    from huggingface_hub import constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


def test_download_by_repo_id_fetches_only_needed_files(hub, exported_model):
    sha = hub.add_repo(REPO, exported_model)
    ex = Extractor.from_pretrained(REPO)
    assert ex.extract(TEXT).entities
    snap = ex.model_dir
    assert os.path.basename(snap) == sha and snap.startswith(os.environ["HF_HUB_CACHE"])
    assert set(os.listdir(snap)) == expected_snapshot(exported_model, True)  # no export_report.json, one graph set
    assert ex.quantized and has_int8(exported_model)
    assert not any("export_report.json" in k for k in hub.requests)
    # LFS-style graphs: the cache blob is named by the SHA-256 the manifest lists
    graph = graph_files(manifest_files(exported_model), True)[0]
    sha256 = manifest_files(exported_model)[graph]["sha256"]
    assert os.path.basename(os.path.realpath(os.path.join(snap, graph))) == sha256
    assert any(k.startswith("GET /cdn-lfs/") for k in hub.requests) == bool(hub.cdn)  # fetched after the 302

    ex32 = Extractor.from_pretrained(REPO, quantized=False)
    assert not ex32.quantized and ex32.model_dir == snap
    assert set(os.listdir(snap)) == expected_snapshot(exported_model, True, False)
    assert ex32.extract(TEXT).entities


def test_pinned_revision(hub, exported_copy):
    first = hub.add_repo(REPO, exported_copy)
    # A second version pushed through the real client: a new stride, with its manifest entry updated.
    cfg_path = os.path.join(exported_copy, "rasd_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    old_stride, cfg["window_stride"] = cfg["window_stride"], cfg["window_stride"] + 1
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    man = json.load(open(os.path.join(exported_copy, "manifest.json"), encoding="utf-8"))
    data = open(cfg_path, "rb").read()
    man["files"]["rasd_config.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    with open(os.path.join(exported_copy, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(man, f)
    from huggingface_hub import CommitOperationAdd, HfApi
    ops = [CommitOperationAdd("rasd_config.json", cfg_path),
           CommitOperationAdd("manifest.json", os.path.join(exported_copy, "manifest.json"))]
    info = HfApi().create_commit(REPO, ops, commit_message="stride + 1")
    second = info.oid
    assert second != first and hub.repos[REPO].branches["main"] == second
    hub.add_tag(REPO, "v1", first)

    assert Extractor.from_pretrained(REPO).config["window_stride"] == old_stride + 1
    pinned = Extractor.from_pretrained(REPO, revision=first)
    assert pinned.config["window_stride"] == old_stride and os.path.basename(pinned.model_dir) == first
    assert Extractor.from_pretrained(REPO, revision="v1").config["window_stride"] == old_stride
    assert Extractor.from_pretrained(REPO, revision="main").config["window_stride"] == old_stride + 1

    for bad in ("no-such-branch", "0" * 40):
        with pytest.raises(ModelFilesError, match=re.escape(bad)):
            Extractor.from_pretrained(REPO, revision=bad)
    with pytest.raises(ModelFilesError, match="no model repository 'org/missing'"):
        Extractor.from_pretrained("org/missing")


def test_offline_reuses_cache_without_requests(hub, exported_model, monkeypatch):
    sha = hub.add_repo(REPO, exported_model)
    online = Extractor.from_pretrained(REPO)
    before = hub.total_requests()

    set_offline(monkeypatch, True)
    again = Extractor.from_pretrained(REPO)
    assert again.model_dir == online.model_dir
    assert again.extract(TEXT).to_dict() == online.extract(TEXT).to_dict()
    assert Extractor.from_pretrained(REPO, revision=sha).model_dir == online.model_dir
    assert hub.total_requests() == before  # HF_HUB_OFFLINE: not a single request
    assert has_int8(exported_model)
    with pytest.raises(ModelFilesError, match="not in the local cache"):  # the FP32 graphs were never fetched
        Extractor.from_pretrained(REPO, quantized=False)

    # Online again but the Hub is gone (connection refused): the cache still serves, as does local_files_only.
    set_offline(monkeypatch, False)
    hub.stop()
    assert Extractor.from_pretrained(REPO).model_dir == online.model_dir
    assert Extractor.from_pretrained(REPO, local_files_only=True).model_dir == online.model_dir
    assert hub.total_requests() == before


def test_corrupt_cache_blob_and_missing_local_file(hub, exported_model, exported_copy):
    hub.add_repo(REPO, exported_model)
    ex = Extractor.from_pretrained(REPO)
    graph = graph_files(manifest_files(exported_model), True)[0]
    blob = os.path.realpath(os.path.join(ex.model_dir, graph))
    os.chmod(blob, 0o644)
    with open(blob, "r+b") as f:
        f.seek(os.path.getsize(blob) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelFilesError, match=re.escape(graph) + ": corrupt"):
        Extractor.from_pretrained(REPO)

    os.remove(os.path.join(exported_copy, "tokenizer.json"))
    with pytest.raises(ModelFilesError, match="missing file tokenizer.json"):
        Extractor.from_pretrained(exported_copy)


def test_push_then_load(hub, exported_model, capsys):
    from rasd.cli import main
    url = push_model(exported_model, "me/pushed")
    head = hub.repos["me/pushed"].branches["main"]
    assert head in url
    pushed = hub.repos["me/pushed"].commits[head]["files"]
    assert set(pushed) == set(manifest_files(exported_model)) | {"manifest.json", ".gitattributes"}
    ex = Extractor.from_pretrained("me/pushed")
    assert ex.extract(TEXT).entities
    assert "README.md" in manifest_files(exported_model)  # the model card travels with the model
    with open(os.path.join(ex.model_dir, "README.md"), "rb") as a, \
            open(os.path.join(exported_model, "README.md"), "rb") as b:
        assert a.read() == b.read()
    # Pushing the same directory again changes nothing (the Hub reports the files' oids).
    push_model(exported_model, "me/pushed")
    assert hub.repos["me/pushed"].branches["main"] == head

    assert main(["push", exported_model, "me/cli-pushed"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert Extractor.from_pretrained("me/cli-pushed").extract(TEXT).entities
    assert main(["push", exported_model, "me/cli-branch", "--branch", "dev"]) == 0
    dev = Extractor.from_pretrained("me/cli-branch", revision="dev")
    assert os.path.basename(dev.model_dir) == hub.repos["me/cli-branch"].branches["dev"]


def test_fp32_only_export_downloads_and_serves_fp32(hub, exported_fp32_only):
    """The export gate refused INT8: the manifest lists no INT8 graph and a default load serves FP32."""
    assert not has_int8(exported_fp32_only)
    assert not any(name.endswith(".int8.onnx") for name in os.listdir(exported_fp32_only))
    hub.add_repo("org/rasd-fp32", exported_fp32_only)
    ex = Extractor.from_pretrained("org/rasd-fp32")
    assert not ex.quantized and ex.extract(TEXT).entities
    assert set(os.listdir(ex.model_dir)) == expected_snapshot(exported_fp32_only, True)


def test_other_export_format_is_refused_with_advice(exported_copy):
    path = os.path.join(exported_copy, "rasd_config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["format_version"] = 1
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    with pytest.raises(ModelFilesError, match="export format 1 .*this rasd reads format 2. Re-export"):
        Extractor(exported_copy, verify=False)
