"""Finding a model's files: a local directory, or a Hub repo downloaded with
huggingface_hub.snapshot_download, then checked against the manifest.

Only JSON, tokenizer.json and ONNX graphs are ever read (no pickles, no
remote code). The manifest lists the SHA-256 of every file the exporter
wrote; a missing or altered file is an error naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Iterable, Optional

from .backend import ModelFilesError
from .onnx_spec import CONFIG_FILE, MANIFEST_FILE, TOKENIZER_FILE, graph_files

METADATA_FILES = [MANIFEST_FILE, CONFIG_FILE, "README.md"]


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(model_dir: str) -> Dict[str, dict]:
    path = os.path.join(model_dir, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise ModelFilesError(f"{model_dir}: no {MANIFEST_FILE}; is this a directory written by `rasd export`?")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        return manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelFilesError(f"{path}: unreadable manifest ({e})") from e


def verify_files(model_dir: str, names: Iterable[str]) -> None:
    """Check that each named file exists and has the manifest's SHA-256."""
    files = read_manifest(model_dir)
    for name in names:
        if name not in files:
            raise ModelFilesError(f"{model_dir}: {name} is not listed in {MANIFEST_FILE}")
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            raise ModelFilesError(f"{model_dir}: missing file {name}")
        got = sha256_file(path)
        if got != files[name]["sha256"]:
            raise ModelFilesError(f"{path}: corrupt file (sha256 {got[:12]}… but the manifest says "
                                  f"{files[name]['sha256'][:12]}…); delete it or download again with "
                                  f"force_download=True")


def resolve_model_dir(path_or_repo_id: str, revision: Optional[str] = None, cache_dir: Optional[str] = None,
                      quantized: bool = True, local_files_only: bool = False, token=None) -> str:
    """A local directory holding the model, downloading from the Hub if needed.

    Two steps on the Hub: first the small metadata files, to learn from the
    manifest which graphs exist; then only the graphs this load will use,
    pinned to the commit the first step resolved (so a push in between
    cannot mix two versions).
    """
    if os.path.isdir(path_or_repo_id):
        return path_or_repo_id
    # A Hub id is "name" or "org/name"; anything else was meant as a path.
    if path_or_repo_id.startswith((".", "/", "~")) or path_or_repo_id.count("/") > 1:
        raise ModelFilesError(f"model directory not found: {path_or_repo_id}")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, \
            RevisionNotFoundError
    except ImportError as e:  # pragma: no cover - a hard dependency
        raise ModelFilesError("huggingface_hub is required to download models") from e
    kw = dict(repo_id=path_or_repo_id, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    try:
        meta_dir = snapshot_download(revision=revision, allow_patterns=METADATA_FILES, **kw)
        commit = os.path.basename(os.path.normpath(meta_dir))
        files = read_manifest(meta_dir)
        wanted = graph_files(files, quantized) + [TOKENIZER_FILE]
        return snapshot_download(revision=commit if len(commit) == 40 else revision, allow_patterns=wanted, **kw)
    except RepositoryNotFoundError as e:
        raise ModelFilesError(f"no model repository {path_or_repo_id!r} on the Hub (or no access)") from e
    except RevisionNotFoundError as e:
        raise ModelFilesError(f"{path_or_repo_id}: revision {revision!r} not found") from e
    except LocalEntryNotFoundError as e:
        raise ModelFilesError(f"{path_or_repo_id}: not in the local cache and the Hub cannot be reached "
                              f"(offline mode or no network): {e}") from e
    except HfHubHTTPError as e:
        raise ModelFilesError(f"{path_or_repo_id}: download failed: {e}") from e


def push_model(model_dir: str, repo_id: str, revision: Optional[str] = None, private: bool = False,
               commit_message: str = "Upload rasd model", token=None) -> str:
    """Upload an exported model directory (graphs, tokenizer, config, card, manifest)."""
    from huggingface_hub import HfApi
    files = read_manifest(model_dir)
    verify_files(model_dir, files)  # never publish a directory that fails its own manifest
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:  # the Hub refuses commits to a branch that does not exist yet (404 RevisionNotFound)
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    info = api.upload_folder(folder_path=model_dir, repo_id=repo_id, revision=revision,
                             commit_message=commit_message, allow_patterns=list(files) + [MANIFEST_FILE])
    return getattr(info, "commit_url", None) or str(info)
