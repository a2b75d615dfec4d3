"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

Run: `python tests/hub_server.py --port 0 --root DIR [--tokens a,b] [--lfs] [--max-bytes N]`. Once listening it
prints one line `READY http://127.0.0.1:<port>` to stdout. It speaks enough of the Hub protocol for
`huggingface_hub` (create_repo, upload_folder/create_commit, create_branch, model_info/dataset_info,
list_repo_tree, get_paths_info, hf_hub_download, snapshot_download, HfFileSystem, classic git-LFS uploads),
`timm.create_model("hf-hub:...")` and `datasets.load_dataset("org/name")` of a repo of data files.

Model and dataset repos share every endpoint; a dataset's URLs carry `datasets` where a model's carry
`models` (API) or nothing (`/{repo}/resolve/...`). On disk under --root: `objects/<sha256>` holds file
contents (also the LFS object store) and `repos/{models,datasets}/<org>/<name>.json` holds a repo: its
branches and its commits, each a full snapshot `path -> {oid, size, lfs, blobId}`. No spaces, pull
requests, tags, Xet or dataset viewer (a dataset has no parquet conversion, as on the Hub before it runs).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
REPO = r"(?P<repo>[^/?]+/[^/?]+)"
KIND = r"(?P<kind>models|datasets)"  # in /api/ URLs
DATASET_PREFIX = r"(?:(?P<kind>datasets)/)?"  # before the repo id in file and git URLs; none for models
KINDS = {"model": "models", "dataset": "datasets"}  # repo type -> plural used in URLs and on disk


class HubError(Exception):
    """An error answered as JSON `{"error": message}` with an optional `X-Error-Code` header."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        """Remember the HTTP status, message, Hub error code and extra headers."""
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    """The git-lfs pointer file that git would store instead of the content."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def now_iso() -> str:
    """The current UTC time in the Hub's date format."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class Store:
    """Repos, commits and content-addressed objects on disk; one lock serialises all changes."""

    def __init__(self, root: Path):
        """Create the store folders under `root`."""
        self.root = root
        self.lock = threading.RLock()
        (root / "objects").mkdir(parents=True, exist_ok=True)
        for kind in KINDS.values():
            (root / "repos" / kind).mkdir(parents=True, exist_ok=True)

    def _repo_path(self, kind: str, repo_id: str) -> Path:
        """Where a repo's JSON lives (`kind` is models or datasets); rejects names that are not plain `org/name`."""
        org, _, name = repo_id.partition("/")
        if kind not in KINDS.values() or not (NAME_RE.match(org) and NAME_RE.match(name)) or name.endswith(".git"):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.root / "repos" / kind / org / f"{name}.json"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        """Write a file through a temporary name so readers never see half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def load(self, kind: str, repo_id: str) -> dict:
        """A repo's metadata, or RepoNotFound."""
        path = self._repo_path(kind, repo_id)
        with self.lock:
            if not path.exists():
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            return json.loads(path.read_text())

    def save(self, kind: str, repo_id: str, meta: dict) -> None:
        """Persist a repo's metadata."""
        self._write_atomic(self._repo_path(kind, repo_id), json.dumps(meta, indent=1).encode())

    def put_object(self, data: bytes) -> str:
        """Store content by its sha256 and return the sha256."""
        oid = hashlib.sha256(data).hexdigest()
        path = self.root / "objects" / oid
        if not path.exists():
            self._write_atomic(path, data)
        return oid

    def object_size(self, oid: str) -> int | None:
        """The size of a stored object, or None if it is not stored."""
        path = self.root / "objects" / oid
        return path.stat().st_size if SHA256_RE.match(oid) and path.exists() else None

    def read_object(self, oid: str) -> bytes:
        """The content of a stored object."""
        return (self.root / "objects" / oid).read_bytes()

    def file_entry(self, data: bytes, lfs: bool) -> dict:
        """Store content and describe it as a file of a commit snapshot."""
        oid = self.put_object(data)
        return self.lfs_entry(oid, len(data)) if lfs else {"oid": oid, "size": len(data), "lfs": False,
                                                            "blobId": git_blob_sha1(data)}

    @staticmethod
    def lfs_entry(oid: str, size: int) -> dict:
        """Describe an already stored LFS object as a file of a commit snapshot."""
        return {"oid": oid, "size": size, "lfs": True, "blobId": git_blob_sha1(lfs_pointer(oid, size))}

    def create(self, kind: str, repo_id: str, private: bool) -> bool:
        """Create a repo with one initial commit holding `.gitattributes`; False if it exists already."""
        with self.lock:
            if self._repo_path(kind, repo_id).exists():
                return False
            meta = {"private": private, "createdAt": now_iso(), "branches": {}, "commits": {}}
            self.add_commit(meta, "main", {".gitattributes": self.file_entry(GITATTRIBUTES, False)}, "initial commit")
            self.save(kind, repo_id, meta)
            return True

    @staticmethod
    def resolve(meta: dict, revision: str) -> str:
        """The commit sha of a branch name or full commit sha, or RevisionNotFound."""
        if revision in meta["branches"]:
            return meta["branches"][revision]
        if SHA1_RE.match(revision) and revision in meta["commits"]:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @staticmethod
    def add_commit(meta: dict, branch: str, files: dict, message: str) -> str:
        """Record a snapshot as a new commit on `branch` (created if missing) and return its sha."""
        parent = meta["branches"].get(branch)
        date = now_iso()
        seed = json.dumps([parent, files, message, date, time.time_ns(), secrets.token_hex(8)], sort_keys=True)
        sha = hashlib.sha1(seed.encode()).hexdigest()
        meta["commits"][sha] = {"parents": [parent] if parent else [], "message": message, "date": date,
                                "files": files}
        meta["branches"][branch] = sha
        return sha

    @staticmethod
    def last_commit(meta: dict, sha: str, path: str) -> str:
        """The oldest commit, going back from `sha` along first parents, since which `path` (a file or a
        folder) has not changed: the commit that last touched it."""
        def state(commit: str):
            files = meta["commits"][commit]["files"]
            return files.get(path) or {p: e for p, e in files.items() if p.startswith(path + "/")}

        current = state(sha)
        while (parents := meta["commits"][sha]["parents"]) and state(parents[0]) == current:
            sha = parents[0]
        return sha


class Handler(BaseHTTPRequestHandler):
    """One handler method per endpoint; `_dispatch` reads the body, checks the route and answers."""

    protocol_version = "HTTP/1.1"
    server_version = "TestHub/1.0"
    timeout = 300
    server: HubServer

    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/{KIND}/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{KIND}/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"/api/{KIND}/{REPO}/branch/(?P<branch>[^/]+)", "create_branch"),
        ("GET", rf"/api/{KIND}/{REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", rf"/api/{KIND}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+?))?/?", "tree"),
        ("POST", rf"/api/{KIND}/{REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET HEAD", rf"/{DATASET_PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("POST", rf"/{DATASET_PREFIX}{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", rf"/{DATASET_PREFIX}{REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
    ]
    COMPILED = [(methods.split(), re.compile(pattern + r"\Z"), name) for methods, pattern, name in ROUTES]

    # ------------------------------------------------------------------ plumbing

    def log_request(self, code="-", size="-"):
        """Log method, path (no query string, no headers) and status to stderr."""
        code = getattr(code, "value", code)
        sys.stderr.write(f"{self.command} {urlsplit(self.path).path} {code}\n")

    def log_message(self, format, *args):
        """Send the base class's other log lines to stderr too."""
        sys.stderr.write((format % args) + "\n")

    def _read_body(self) -> bytes:
        """Read the whole request body (Content-Length or chunked); drain it and answer 413 if too large."""
        limit, data, size = self.server.max_bytes, bytearray(), 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while chunk_size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunk = self.rfile.read(chunk_size)
                self.rfile.readline()  # the CRLF after each chunk
                size += len(chunk)
                if size <= limit:
                    data += chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    raise ValueError("connection closed before the end of the body")
                remaining -= len(chunk)
                size += len(chunk)
                if size <= limit:
                    data += chunk
        if size > limit:
            raise HubError(413, f"Request body larger than {limit} bytes")
        return bytes(data)

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None):
        """Answer with a body and a correct Content-Length (headers only for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload, status: int = 200, headers: dict | None = None, content_type="application/json"):
        """Answer with a JSON document."""
        self._send(status, json.dumps(payload).encode(), content_type, headers)

    def _dispatch(self):
        """Read the body, authenticate, find the route and call its handler method; errors become JSON."""
        try:
            try:
                body = self._read_body()
            except (ValueError, OSError) as err:
                self.close_connection = True
                raise HubError(400, f"Malformed request body: {err}") from err
            self.token = self._check_token()
            url = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            for methods, pattern, name in self.COMPILED:
                match = pattern.match(url.path)
                if match and self.command in methods:
                    groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if "repo" in groups:
                        groups["kind"] = groups.get("kind", "models")
                    return getattr(self, f"handle_{name}")(body=body, **groups)
            raise HubError(404, f"No such endpoint: {self.command} {url.path}")
        except HubError as err:
            headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode(), **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._json({"error": err.message}, err.status, headers)
        except Exception as err:  # a bug in this server: say so, and do not reuse the connection
            self.close_connection = True
            traceback.print_exc()
            self._json({"error": f"Internal error in the test Hub server: {err!r}"}, 500)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _check_token(self) -> str | None:
        """The bearer token if valid, None if absent; an invalid token is a 401."""
        header = self.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.server.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return token.strip()

    def _require_token(self) -> None:
        """Write endpoints need a valid token."""
        if self.token is None:
            raise HubError(401, "Authentication required: pass a valid token")

    def _repo(self, kind: str, repo_id: str) -> dict:
        """A readable repo: private repos look missing without a valid token, like on the Hub."""
        meta = self.server.store.load(kind, repo_id)
        if meta["private"] and self.token is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return meta

    def _body_json(self, body: bytes) -> dict:
        """Parse a JSON request body or answer 400."""
        try:
            payload = json.loads(body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(payload, dict):
            raise HubError(400, "JSON body must be an object")
        return payload

    def _web_url(self, kind: str, repo_id: str) -> str:
        """The web address of a repo: `/{repo}` for a model, `/datasets/{repo}` for a dataset."""
        return f"{self.server.url}/{'' if kind == 'models' else kind + '/'}{repo_id}"

    def _flag(self, name: str, values: dict | None = None) -> bool:
        """A boolean query (or form) parameter."""
        return str((self.query if values is None else values).get(name, "")).lower() in ("1", "true")

    def _describe(self, meta: dict, sha: str, path: str, expand: bool) -> dict | None:
        """A tree / paths-info entry for the file or folder `path` at commit `sha`; None if neither."""
        files = meta["commits"][sha]["files"]
        entry = files.get(path)
        if entry is not None:
            item = {"type": "file", "oid": entry["blobId"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                pointer_size = len(lfs_pointer(entry["oid"], entry["size"]))
                item["lfs"] = {"oid": entry["oid"], "size": entry["size"], "pointerSize": pointer_size}
        else:
            inside = {p: e["blobId"] for p, e in sorted(files.items()) if p.startswith(path + "/")}
            if not inside or not path:
                return None
            item = {"type": "directory", "oid": git_blob_sha1(json.dumps(inside).encode()), "size": 0, "path": path}
        if expand:
            last = Store.last_commit(meta, sha, path)
            commit = meta["commits"][last]
            item["lastCommit"] = {"id": last, "title": commit["message"].splitlines()[0], "date": commit["date"]}
        return item

    # ------------------------------------------------------------------ endpoints

    def handle_create_repo(self, body: bytes):
        """POST /api/repos/create: 200 with the url, or 409 (still with `url`) if the repo exists."""
        self._require_token()
        payload = self._body_json(body)
        kind = KINDS.get(payload.get("type") or "model")
        if kind is None:
            raise HubError(400, "This test server only hosts model and dataset repos")
        name, org = payload.get("name") or "", payload.get("organization") or "user"
        repo_id = f"{org}/{name}"
        if not (NAME_RE.match(org) and NAME_RE.match(name)) or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {repo_id!r}")
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = self._web_url(kind, repo_id)
        if not self.server.store.create(kind, repo_id, private):
            return self._json({"error": f"You already created this {kind[:-1]} repo", "url": url}, 409)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def handle_validate_yaml(self, body: bytes):
        """POST /api/validate-yaml: README metadata is always accepted."""
        self._body_json(body)
        self._json({"errors": [], "warnings": []})

    def handle_preupload(self, body: bytes, kind: str, repo: str, rev: str):
        """POST /api/{kind}/{repo}/preupload/{rev}: upload mode per file, with the current oid if it exists."""
        self._require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test server")
        meta = self._repo(kind, repo)
        files = meta["commits"][self.server.store.resolve(meta, rev)]["files"]
        answer = []
        for item in self._body_json(body).get("files", []):
            mode = "lfs" if self.server.lfs else "regular"
            current = files.get(item["path"])
            oid = None if current is None else (current["oid"] if current["lfs"] else current["blobId"])
            answer.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": answer, "commitOid": meta["branches"].get(rev, rev)})

    def handle_commit(self, body: bytes, kind: str, repo: str, rev: str):
        """POST /api/{kind}/{repo}/commit/{rev}: apply NDJSON operations as a new commit on branch `rev`."""
        self._require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test server")
        store = self.server.store
        with store.lock:
            meta = self._repo(kind, repo)
            if rev not in meta["branches"]:
                raise HubError(404, f"Branch {rev} not found; create it first", "RevisionNotFound")
            files = dict(meta["commits"][meta["branches"][rev]]["files"])
            header = {}
            for line in body.splitlines():
                if line.strip():
                    header = self._apply_operation(files, line) or header
            parent = header.get("parentCommit")
            if parent and parent != meta["branches"][rev]:
                raise HubError(412, f"Parent commit {parent} is not the head of {rev}")
            message = header.get("summary") or "Commit"
            sha = store.add_commit(meta, rev, files, message)
            store.save(kind, repo, meta)
        self._json({"success": True, "commitUrl": f"{self._web_url(kind, repo)}/commit/{sha}", "commitOid": sha,
                    "commitMessage": message, "hookOutput": "", "pullRequestUrl": None})

    def _apply_operation(self, files: dict, line: bytes) -> dict | None:
        """Apply one NDJSON commit line to `files`; return the header's value for a header line."""
        try:
            item = json.loads(line)
            key, value = item["key"], item["value"]
        except (ValueError, KeyError, TypeError) as err:
            raise HubError(400, f"Invalid commit line: {err}") from err
        if key == "header":
            return value
        path = str(value.get("path", "")).strip("/")
        if not path or any(part in ("", ".", "..") for part in path.split("/")):
            raise HubError(400, f"Invalid path in repo: {path!r}")
        if key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            files[path] = self.server.store.file_entry(data, lfs=False)
        elif key == "lfsFile":
            oid, size = value.get("oid", ""), self.server.store.object_size(value.get("oid", ""))
            if value.get("algo", "sha256") != "sha256" or size is None or value.get("size", size) != size:
                raise HubError(422, f"LFS object {oid} of {path} was not uploaded (or has another size)")
            files[path] = Store.lfs_entry(oid, size)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif key == "deletedFolder":
            prefix = path + "/"
            doomed = [p for p in files if p.startswith(prefix)]
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del files[p]
        else:
            raise HubError(400, f"Unsupported commit operation: {key}")
        return None

    def handle_create_branch(self, body: bytes, kind: str, repo: str, branch: str):
        """POST /api/{kind}/{repo}/branch/{branch}: new branch at `startingPoint` (default main); 409 if it exists."""
        self._require_token()
        start = self._body_json(body).get("startingPoint") or "main"
        store = self.server.store
        with store.lock:
            meta = self._repo(kind, repo)
            if not NAME_RE.match(branch):
                raise HubError(400, f"Invalid branch name: {branch!r}")
            if branch in meta["branches"]:
                raise HubError(409, f"Branch {branch} already exists")
            meta["branches"][branch] = store.resolve(meta, start)
            store.save(kind, repo, meta)
        self._json({})

    def handle_repo_info(self, body: bytes, kind: str, repo: str, rev: str = "main"):
        """GET /api/{kind}/{repo}[/revision/{rev}]: repo info with the commit sha and the file list."""
        meta = self._repo(kind, repo)
        sha = self.server.store.resolve(meta, rev)
        commit = meta["commits"][sha]
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if self._flag("blobs"):
                sibling.update(size=entry["size"], blobId=entry["blobId"])
                if entry["lfs"]:
                    pointer_size = len(lfs_pointer(entry["oid"], entry["size"]))
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["oid"], "pointerSize": pointer_size}
            siblings.append(sibling)
        info = {"id": repo, "author": repo.split("/")[0], "sha": sha, "private": meta["private"], "disabled": False,
                "gated": False, "lastModified": commit["date"], "createdAt": meta["createdAt"], "tags": [],
                "downloads": 0, "likes": 0, "cardData": {}, "siblings": siblings}
        self._json({"modelId": repo, **info} if kind == "models" else info)

    def handle_tree(self, body: bytes, kind: str, repo: str, rev: str, path: str = ""):
        """GET /api/{kind}/{repo}/tree/{rev}[/{path}]: files and folders under `path` (`?recursive=true`,
        `?expand=true` adds each entry's last commit). One page: no `Link` header, however many entries."""
        meta = self._repo(kind, repo)
        sha = self.server.store.resolve(meta, rev)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self._flag("recursive")
        under = [p[len(prefix):] for p in meta["commits"][sha]["files"] if p.startswith(prefix)]
        if prefix and not under:
            raise HubError(404, f"Folder {path} not found at {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        files, folders = set(), set()
        for rel in under:
            parts = rel.split("/")
            depths = range(1, len(parts) if recursive else min(2, len(parts)))
            folders.update("/".join(parts[:depth]) for depth in depths)
            if recursive or len(parts) == 1:
                files.add(rel)
        expand = self._flag("expand")
        self._json([self._describe(meta, sha, prefix + rel, expand) for rel in [*sorted(files), *sorted(folders)]])

    def handle_paths_info(self, body: bytes, kind: str, repo: str, rev: str):
        """POST /api/{kind}/{repo}/paths-info/{rev} (form `paths=...&expand=...`): entries of the paths that exist."""
        meta = self._repo(kind, repo)
        sha = self.server.store.resolve(meta, rev)
        form = parse_qs(body.decode("utf-8", "replace"))
        expand = self._flag("expand", {k: v[-1] for k, v in form.items()})
        entries = [self._describe(meta, sha, p.strip("/"), expand) for p in dict.fromkeys(form.get("paths", []))]
        self._json([e for e in entries if e is not None], headers={"X-Repo-Commit": sha})

    def handle_resolve(self, body: bytes, kind: str, repo: str, rev: str, path: str):
        """HEAD/GET /[datasets/]{repo}/resolve/{rev}/{path}: the file (or the `Range: bytes=a-b` part asked for)
        with X-Repo-Commit, ETag and (LFS) X-Linked-* headers."""
        meta = self._repo(kind, repo)
        sha = self.server.store.resolve(meta, rev)
        entry = meta["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"] if entry["lfs"] else entry["blobId"]}"',
                   "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["oid"]}"', "X-Linked-Size": str(entry["size"])})
        data, size = self.server.store.read_object(entry["oid"]), entry["size"]
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if not match or match.groups() == ("", ""):
            return self._send(200, data, "application/octet-stream", headers)
        first, last = match.groups()
        if first:
            start, end = int(first), min(int(last or size - 1), size - 1)
        else:  # `bytes=-n`: the last n bytes
            start, end = max(size - int(last), 0), size - 1
        if start > end:
            raise HubError(416, f"Range not satisfiable: {self.headers['Range']}",
                           headers={"Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(206, data[start:end + 1], "application/octet-stream", headers)

    def handle_lfs_batch(self, body: bytes, kind: str, repo: str):
        """POST /[datasets/]{repo}.git/info/lfs/objects/batch: basic-transfer upload actions for new objects."""
        self._require_token()
        self._repo(kind, repo)
        payload = self._body_json(body)
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid", "")), obj.get("size")
            answer = {"oid": oid, "size": size if isinstance(size, int) else 0}
            if not SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                answer["error"] = {"code": 422, "message": "Invalid oid or size"}
            elif size > self.server.max_bytes:
                answer["error"] = {"code": 413, "message": f"Object larger than {self.server.max_bytes} bytes"}
            elif self.server.store.object_size(oid) != size:
                ticket = secrets.token_urlsafe(16)
                self.server.tickets[ticket] = (oid, size)
                answer["authenticated"] = True
                answer["actions"] = {
                    "upload": {"href": f"{self.server.url}/lfs-upload/{oid}?ticket={ticket}", "expires_in": 3600},
                    "verify": {"href": f"{self._web_url(kind, repo)}.git/info/lfs/objects/verify", "expires_in": 3600},
                }
            objects.append(answer)
        self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   content_type="application/vnd.git-lfs+json")

    def handle_lfs_upload(self, body: bytes, oid: str):
        """PUT /lfs-upload/{oid}?ticket=...: store an object (like a signed storage URL: no Authorization sent)."""
        expected = self.server.tickets.pop(self.query.get("ticket", ""), None)
        if expected is None or expected[0] != oid:
            raise HubError(403, "Unknown or used upload ticket")
        if len(body) != expected[1] or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match its oid and size")
        self.server.store.put_object(body)
        self._send(200, b"", "text/plain")

    def handle_lfs_verify(self, body: bytes, kind: str, repo: str):
        """POST /[datasets/]{repo}.git/info/lfs/objects/verify: 200 if the object is stored with this size."""
        self._require_token()
        payload = self._body_json(body)
        if self.server.store.object_size(str(payload.get("oid", ""))) != payload.get("size"):
            raise HubError(404, f"LFS object {payload.get('oid')} not found")
        self._json({"success": True}, content_type="application/vnd.git-lfs+json")


class HubServer(ThreadingHTTPServer):
    """The HTTP server with the settings and state the handlers share."""

    daemon_threads = True

    def __init__(self, port: int, root: Path, tokens: set[str], lfs: bool, max_bytes: int):
        """Bind 127.0.0.1:port and set up the store."""
        super().__init__(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.store = Store(root)
        self.tokens, self.lfs, self.max_bytes = tokens, lfs, max_bytes
        self.tickets: dict[str, tuple[str, int]] = {}


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, start serving and print the READY line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--root", type=Path, required=True, help="folder that holds the repos")
    parser.add_argument("--tokens", default="hf_test_token", help="comma-separated accepted tokens")
    parser.add_argument("--lfs", action="store_true", help="ask clients to upload every file through git-lfs")
    parser.add_argument("--max-bytes", type=int, default=200 * 1024 * 1024, help="largest accepted request body")
    args = parser.parse_args(argv)
    tokens = {t.strip() for t in args.tokens.split(",") if t.strip()}
    server = HubServer(args.port, args.root, tokens, args.lfs, args.max_bytes)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"READY {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
