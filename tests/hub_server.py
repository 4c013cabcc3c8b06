"""A stand-in for the Hugging Face Hub HTTP API, for tests without network.

It answers the requests huggingface_hub 2.4 really sends (see file_download.py,
_snapshot_download.py, hf_api.py, _commit_api.py, _upload_pipeline.py):

  HEAD/GET /{repo}/resolve/{rev}/{path}        file metadata + content
  GET  /api/models/{repo}[/revision/{rev}]     repo_info / model_info
  GET  /api/models/{repo}/tree/{rev}          list_repo_tree (recursive, as snapshot_download asks)
  POST /api/repos/create                       create_repo
  POST /api/validate-yaml                      README check made by create_commit
  POST /api/models/{repo}/preupload/{rev}      upload modes: always "regular"
  POST /api/models/{repo}/commit/{rev}         NDJSON commit, base64 contents
  POST /api/models/{repo}/branch/{branch}      create_branch

Repos are git-like: immutable commits (40-hex sha, full file map each),
branches and tags pointing at them. Files matching LFS_PATTERNS are served
the way the Hub serves LFS files: HEAD /resolve answers 302 to a CDN host
(here "localhost" instead of "127.0.0.1", so the client treats it as another
host) with X-Linked-Etag = sha256 and X-Linked-Size, so the client's cache
blob is named by the SHA-256. Other files answer 200 with ETag = git blob sha1.
Errors carry the X-Error-Code values hf_raise_for_status maps to
RepositoryNotFoundError / RevisionNotFoundError / RemoteEntryNotFoundError.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, Optional
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

LFS_PATTERNS = ("*.onnx", "*.bin", "*.safetensors")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
REPO = r"(?P<repo>[^/]+(?:/[^/]+)?)"  # "name" or "org/name"
RESOLVE_RE = re.compile(rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
API_RE = re.compile(rf"^/api/models/{REPO}(?:/(?P<op>revision|tree|preupload|commit|branch)(?:/(?P<rest>.*))?)?$")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return any(fnmatch.fnmatch(os.path.basename(path), p) for p in LFS_PATTERNS)


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


class HubError(Exception):
    """An HTTP error answer: status, X-Error-Code (may be None), message."""

    def __init__(self, status: int, code: Optional[str], message: str, commit: Optional[str] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class Repo:
    def __init__(self, repo_id: str, private: bool = False):
        self.id, self.private = repo_id, private
        self.commits: Dict[str, dict] = {}   # sha -> {"files": {path: bytes}, "parent", "message", "date"}
        self.branches: Dict[str, str] = {}   # name -> sha
        self.tags: Dict[str, str] = {}       # name -> sha

    def resolve(self, rev: str) -> str:
        """A branch, tag or full commit sha -> commit sha (404 RevisionNotFound otherwise)."""
        sha = self.branches.get(rev) or self.tags.get(rev) or (rev if rev in self.commits else None)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    def commit(self, branch: str, changes: Dict[str, Optional[bytes]], message: str,
               deleted_folders=()) -> str:
        """New commit on `branch` (created from nothing if absent): path -> bytes, or None to delete."""
        parent = self.branches.get(branch)
        files = dict(self.commits[parent]["files"]) if parent else {}
        for folder in deleted_folders:
            files = {p: d for p, d in files.items() if not p.startswith(folder.rstrip("/") + "/")}
        for path, data in changes.items():
            if data is None:
                files.pop(path, None)
            else:
                files[path] = data
        seed = json.dumps([parent, message, time.time_ns(), sorted((p, git_blob_sha1(d)) for p, d in files.items())])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        self.commits[sha] = {"files": files, "parent": parent, "message": message,
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}
        self.branches[branch] = sha
        return sha


class HubServer:
    """The server: start() in a background thread, stop(), plus in-process seeding helpers."""

    def __init__(self):
        self.repos: Dict[str, Repo] = {}
        self.lfs_blobs: Dict[str, bytes] = {}  # sha256 -> content, what the CDN serves
        self.requests = Counter()               # "METHOD /path" -> count
        self.lock = threading.RLock()           # one request mutates the store at a time
        self.httpd: Optional[ThreadingHTTPServer] = None

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self
        self.port = self.httpd.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # The CDN must look like another host, so huggingface_hub stops at the 302 like on the real Hub.
        try:
            cdn_host = "localhost" if socket.gethostbyname("localhost") == "127.0.0.1" else None
        except OSError:
            cdn_host = None
        self.cdn = f"http://{cdn_host}:{self.port}" if cdn_host else None  # None: serve LFS files directly
        threading.Thread(target=self.httpd.serve_forever, name="hub-stand-in", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.stopped = True  # keep-alive handler threads refuse further requests
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
        from huggingface_hub.utils import _http
        _http.close_session()  # drop the client's pooled keep-alive connections to this server

    def total_requests(self) -> int:
        return sum(self.requests.values())

    # -- seeding helpers (no HTTP) ---------------------------------------------------------------------
    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self.lock:
            if repo_id not in self.repos:
                repo = self.repos[repo_id] = Repo(repo_id, private)
                repo.commit("main", {".gitattributes": GITATTRIBUTES}, "initial commit")  # as the Hub does
            return self.repos[repo_id]

    def commit_files(self, repo_id: str, files: Dict[str, Optional[bytes]], branch: str = "main",
                     message: str = "update") -> str:
        """Commit path -> bytes (None deletes) on a branch; a new branch starts from main's head."""
        with self.lock:
            repo = self.create_repo(repo_id)
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            return self.commit(repo, branch, files, message)

    def commit(self, repo: Repo, branch: str, changes: dict, message: str, deleted_folders=()) -> str:
        for path, data in changes.items():  # what the CDN will serve
            if data is not None and is_lfs(path):
                self.lfs_blobs[hashlib.sha256(data).hexdigest()] = data
        return repo.commit(branch, changes, message, deleted_folders)

    def add_repo(self, repo_id: str, folder: str, branch: str = "main", message: str = "add model") -> str:
        """Seed a repo from a local directory (recursively); returns the new commit sha."""
        files = {}
        for root, _, names in os.walk(folder):
            for name in names:
                full = os.path.join(root, name)
                with open(full, "rb") as f:
                    files[os.path.relpath(full, folder).replace(os.sep, "/")] = f.read()
        return self.commit_files(repo_id, files, branch=branch, message=message)

    def add_tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        with self.lock:
            repo = self.repos[repo_id]
            repo.tags[tag] = repo.resolve(revision)
            return repo.tags[tag]

    # -- request handling (called by _Handler) ------------------------------------------------------------
    def repo(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    def resolve_file(self, handler, repo_id: str, rev: str, path: str, send_body: bool) -> None:
        with self.lock:
            repo = self.repo(repo_id)
            sha = repo.resolve(rev)
            data = repo.commits[sha]["files"].get(path)
        if data is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on \"{rev}\"", commit=sha)
        headers = {"X-Repo-Commit": sha}
        if is_lfs(path):
            digest = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{git_blob_sha1(lfs_pointer(data))}"', "X-Linked-Etag": f'"{digest}"',
                            "X-Linked-Size": str(len(data))})
            if self.cdn:  # like cdn-lfs.hf.co: a signed URL on another host, content-addressed
                headers["Location"] = f"{self.cdn}/cdn-lfs/{digest}?name={os.path.basename(path)}"
                return handler.answer(302, b"", headers, send_body)
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        handler.answer(200, data, {"Content-Type": "application/octet-stream", **headers}, send_body)

    def model_info(self, repo: Repo, rev: str) -> dict:
        sha = repo.resolve(rev)
        commit = repo.commits[sha]
        siblings = [{"rfilename": path} for path in sorted(commit["files"])]  # no ?blobs=True details
        return {"_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
                "author": repo.id.split("/")[0], "sha": sha, "lastModified": commit["date"],
                "createdAt": repo.commits[repo.branches["main"]]["date"], "private": repo.private,
                "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                "siblings": siblings}

    def tree(self, repo: Repo, rev: str) -> list:
        """The recursive listing of a commit: folders, then files (LFS ones with their sha256)."""
        files = repo.commits[repo.resolve(rev)]["files"]
        dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        out = [{"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
               for d in sorted(dirs)]
        for path, data in sorted(files.items()):
            entry = {"type": "file", "oid": git_blob_sha1(lfs_pointer(data) if is_lfs(path) else data),
                     "size": len(data), "path": path}
            if is_lfs(path):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": len(lfs_pointer(data))}
            out.append(entry)
        return out

    def commit_ndjson(self, repo: Repo, branch: str, body: bytes, query: dict) -> dict:
        if query.get("create_pr"):
            raise HubError(400, None, "create_pr is not supported by the test stand-in")
        if branch not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        header, changes, deleted_folders = {}, {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, None, f"unsupported encoding for {value['path']}")
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                changes[value["path"]] = None
            elif key == "deletedFolder":
                deleted_folders.append(value["path"])
            else:  # "lfsFile" cannot come: preupload never answers "lfs"
                raise HubError(400, None, f"unknown commit operation {key!r}")
        parent = header.get("parentCommit")
        if parent and parent != repo.branches[branch]:
            raise HubError(412, None, f"parent commit {parent} is not the head of {branch}")
        message = header.get("summary") or "commit"
        if header.get("description"):
            message += "\n\n" + header["description"]
        sha = self.commit(repo, branch, changes, message, deleted_folders)
        return {"success": True, "commitOid": sha, "commitUrl": f"{self.endpoint}/{repo.id}/commit/{sha}",
                "hookOutput": "", "pullRequestUrl": None}

    def api(self, handler, method: str, m, query: dict, body: bytes):
        """The /api/models/{repo}/... routes; returns the JSON answer or raises HubError."""
        op, rest = m.group("op"), unquote(m.group("rest") or "")
        with self.lock:
            repo = self.repo(m.group("repo"))
            if method == "GET" and op in (None, "revision"):
                return self.model_info(repo, rest if op else "main")
            if method == "GET" and op == "tree" and "/" not in (m.group("rest") or "/"):
                return self.tree(repo, rest)
            handler.require_token()
            payload = json.loads(body or b"{}") if op != "commit" else None
            if method == "POST" and op == "preupload":
                files = repo.commits[repo.resolve(rest)]["files"] if rest in repo.branches else {}
                return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                   "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
                                  for f in payload["files"]]}
            if method == "POST" and op == "commit":
                return self.commit_ndjson(repo, rest, body, query)
            if method == "POST" and op == "branch":
                if rest in repo.branches:
                    raise HubError(409, None, f"Reference already exists: refs/heads/{rest}")
                repo.branches[rest] = repo.resolve(payload.get("startingPoint") or "main")
                return {}
        raise HubError(404, None, f"{method} {handler.path}: not implemented by the test stand-in")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections; every answer sets Content-Length

    def log_message(self, *args):  # quiet
        pass

    def answer(self, status: int, body: bytes, headers: dict, send_body: bool = True) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def answer_json(self, obj, status: int = 200) -> None:
        self.answer(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def require_token(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, None, "Invalid credentials in Authorization header")

    def handle_any(self, method: str) -> None:
        hub: HubServer = self.server.hub
        if getattr(self.server, "stopped", False):
            self.close_connection = True
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with hub.lock:
            hub.requests[f"{method} {url.path}"] += 1
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            if url.path.startswith("/cdn-lfs/") and method in ("GET", "HEAD"):
                data = hub.lfs_blobs.get(url.path.rsplit("/", 1)[1])
                if data is None:
                    raise HubError(404, None, "no such object")
                return self.answer(200, data, {"Content-Type": "application/octet-stream"}, method == "GET")
            m = RESOLVE_RE.match(url.path)
            if m and method in ("GET", "HEAD"):
                return hub.resolve_file(self, m.group("repo"), unquote(m.group("rev")), unquote(m.group("path")),
                                        method == "GET")
            if url.path == "/api/repos/create" and method == "POST":
                self.require_token()
                payload = json.loads(body)
                repo_id = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
                if repo_id in hub.repos:  # the Hub's 409 body carries the url; create_repo(exist_ok=True) reads it
                    body = {"error": "You already created this model repo", "url": f"{hub.endpoint}/{repo_id}"}
                    return self.answer(409, json.dumps(body).encode(), {"Content-Type": "application/json"})
                hub.create_repo(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
                return self.answer_json({"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})
            if url.path == "/api/validate-yaml" and method == "POST":
                return self.answer_json({"errors": [], "warnings": []})
            m = API_RE.match(url.path)
            if m:
                return self.answer_json(hub.api(self, method, m, query, body))
            raise HubError(404, None, f"{method} {url.path}: not implemented by the test stand-in")
        except HubError as e:
            headers = {"Content-Type": "application/json", "X-Error-Message": e.message}
            if e.code:
                headers["X-Error-Code"] = e.code
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self.answer(e.status, json.dumps({"error": e.message}).encode(), headers, method != "HEAD")

    def do_GET(self): self.handle_any("GET")  # noqa: E704
    def do_HEAD(self): self.handle_any("HEAD")  # noqa: E704
    def do_POST(self): self.handle_any("POST")  # noqa: E704


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A running stand-in Hub; huggingface_hub pointed at it, with a private cache and a dummy token.

    huggingface_hub.constants reads HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE ... once at import,
    so both the environment (for subprocesses / later imports) and the constants are patched.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    server = HubServer().start()
    home, cache = tmp_path / "hf_home", tmp_path / "hf_home" / "hub"
    env = {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_TOKEN": "hf_test_dummy_token"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(k, raising=False)
    for name, value in {"ENDPOINT": server.endpoint,
                        "HUGGINGFACE_CO_URL_TEMPLATE": server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                        "HF_HOME": str(home), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": False,
                        "HF_HUB_DISABLE_TELEMETRY": True, "HF_TOKEN_PATH": str(home / "token"),
                        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_XET_CACHE": str(home / "xet"),
                        }.items():
        monkeypatch.setattr(constants, name, value)
    _http.close_session()  # no pooled connection to an earlier server
    yield server
    server.stop()
