"""A small Hugging Face Hub-compatible HTTP server for tests (standard library only).

Run: `python tests/hub_server.py --port 0 --root DIR [--tokens a,b] [--lfs] [--max-bytes N]`. Once listening it
prints one line `READY http://127.0.0.1:<port>` to stdout. It speaks enough of the Hub protocol for
`huggingface_hub` (create_repo, upload_folder/create_commit, create_branch, model_info, list_repo_tree,
hf_hub_download, snapshot_download, classic git-LFS uploads) and `timm.create_model("hf-hub:...")`.

On disk under --root: `objects/<sha256>` holds file contents (also the LFS object store) and
`repos/models/<org>/<name>.json` holds a repo: its branches and its commits, each a full snapshot
`path -> {oid, size, lfs, blobId}`. Only model repos; no pull requests, tags or Xet.
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
        (root / "repos" / "models").mkdir(parents=True, exist_ok=True)

    def _repo_path(self, repo_id: str) -> Path:
        """Where a repo's JSON lives; rejects names that are not plain `org/name`."""
        org, _, name = repo_id.partition("/")
        if not (NAME_RE.match(org) and NAME_RE.match(name)) or name.endswith(".git"):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.root / "repos" / "models" / org / f"{name}.json"

    def _write_atomic(self, path: Path, data: bytes) -> None:
        """Write a file through a temporary name so readers never see half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def load(self, repo_id: str) -> dict:
        """A repo's metadata, or RepoNotFound."""
        path = self._repo_path(repo_id)
        with self.lock:
            if not path.exists():
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            return json.loads(path.read_text())

    def save(self, repo_id: str, meta: dict) -> None:
        """Persist a repo's metadata."""
        self._write_atomic(self._repo_path(repo_id), json.dumps(meta, indent=1).encode())

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

    def create(self, repo_id: str, private: bool) -> bool:
        """Create a repo with one initial commit holding `.gitattributes`; False if it exists already."""
        with self.lock:
            if self._repo_path(repo_id).exists():
                return False
            meta = {"private": private, "createdAt": now_iso(), "branches": {}, "commits": {}}
            self.add_commit(meta, "main", {".gitattributes": self.file_entry(GITATTRIBUTES, False)}, "initial commit")
            self.save(repo_id, meta)
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


class Handler(BaseHTTPRequestHandler):
    """One handler method per endpoint; `_dispatch` reads the body, checks the route and answers."""

    protocol_version = "HTTP/1.1"
    server_version = "TestHub/1.0"
    timeout = 300
    server: HubServer

    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/models/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/models/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", rf"/api/models/{REPO}/branch/(?P<branch>[^/]+)", "create_branch"),
        ("GET", rf"/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?", "model_info"),
        ("GET", rf"/api/models/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+?))?/?", "tree"),
        ("GET HEAD", rf"/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("POST", rf"/{REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("POST", rf"/{REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
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

    def _repo(self, repo_id: str) -> dict:
        """A readable repo: private repos look missing without a valid token, like on the Hub."""
        meta = self.server.store.load(repo_id)
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

    def _commit_url(self, repo_id: str, sha: str) -> str:
        """The web address of a commit."""
        return f"{self.server.url}/{repo_id}/commit/{sha}"

    # ------------------------------------------------------------------ endpoints

    def handle_create_repo(self, body: bytes):
        """POST /api/repos/create: 200 with the url, or 409 (still with `url`) if the repo exists."""
        self._require_token()
        payload = self._body_json(body)
        if payload.get("type", "model") not in (None, "model"):
            raise HubError(400, "This test server only hosts model repos")
        name, org = payload.get("name") or "", payload.get("organization") or "user"
        repo_id = f"{org}/{name}"
        if not (NAME_RE.match(org) and NAME_RE.match(name)) or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {repo_id!r}")
        private = payload.get("visibility") == "private" or payload.get("private") is True
        url = f"{self.server.url}/{repo_id}"
        if not self.server.store.create(repo_id, private):
            return self._json({"error": "You already created this model repo", "url": url}, 409)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def handle_validate_yaml(self, body: bytes):
        """POST /api/validate-yaml: README metadata is always accepted."""
        self._body_json(body)
        self._json({"errors": [], "warnings": []})

    def handle_preupload(self, body: bytes, repo: str, rev: str):
        """POST /api/models/{repo}/preupload/{rev}: upload mode per file, with the current oid if it exists."""
        self._require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test server")
        meta = self._repo(repo)
        files = meta["commits"][self.server.store.resolve(meta, rev)]["files"]
        answer = []
        for item in self._body_json(body).get("files", []):
            mode = "lfs" if self.server.lfs else "regular"
            current = files.get(item["path"])
            oid = None if current is None else (current["oid"] if current["lfs"] else current["blobId"])
            answer.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._json({"files": answer, "commitOid": meta["branches"].get(rev, rev)})

    def handle_commit(self, body: bytes, repo: str, rev: str):
        """POST /api/models/{repo}/commit/{rev}: apply NDJSON operations as a new commit on branch `rev`."""
        self._require_token()
        if self.query.get("create_pr"):
            raise HubError(400, "Pull requests are not supported by this test server")
        store = self.server.store
        with store.lock:
            meta = self._repo(repo)
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
            store.save(repo, meta)
        self._json({"success": True, "commitUrl": self._commit_url(repo, sha), "commitOid": sha,
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

    def handle_create_branch(self, body: bytes, repo: str, branch: str):
        """POST /api/models/{repo}/branch/{branch}: new branch at `startingPoint` (default main); 409 if it exists."""
        self._require_token()
        start = self._body_json(body).get("startingPoint") or "main"
        store = self.server.store
        with store.lock:
            meta = self._repo(repo)
            if not NAME_RE.match(branch):
                raise HubError(400, f"Invalid branch name: {branch!r}")
            if branch in meta["branches"]:
                raise HubError(409, f"Branch {branch} already exists")
            meta["branches"][branch] = store.resolve(meta, start)
            store.save(repo, meta)
        self._json({})

    def handle_model_info(self, body: bytes, repo: str, rev: str = "main"):
        """GET /api/models/{repo}[/revision/{rev}]: repo info with the commit sha and the file list."""
        meta = self._repo(repo)
        sha = self.server.store.resolve(meta, rev)
        commit = meta["commits"][sha]
        siblings = []
        for path, entry in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if self.query.get("blobs", "").lower() in ("1", "true"):
                sibling.update(size=entry["size"], blobId=entry["blobId"])
                if entry["lfs"]:
                    pointer_size = len(lfs_pointer(entry["oid"], entry["size"]))
                    sibling["lfs"] = {"size": entry["size"], "sha256": entry["oid"], "pointerSize": pointer_size}
            siblings.append(sibling)
        self._json({"id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": sha,
                    "private": meta["private"], "disabled": False, "gated": False, "lastModified": commit["date"],
                    "createdAt": meta["createdAt"], "tags": [], "downloads": 0, "likes": 0, "cardData": {},
                    "siblings": siblings})

    def handle_tree(self, body: bytes, repo: str, rev: str, path: str = ""):
        """GET /api/models/{repo}/tree/{rev}[/{path}]: files and folders under `path` (`?recursive=true`)."""
        meta = self._repo(repo)
        sha = self.server.store.resolve(meta, rev)
        files = meta["commits"][sha]["files"]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        recursive = self.query.get("recursive", "").lower() in ("1", "true")
        under = {p[len(prefix):]: e for p, e in files.items() if p.startswith(prefix)}
        if prefix and not under:
            raise HubError(404, f"Folder {path} not found at {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        entries, folders = [], set()
        for rel, entry in sorted(under.items()):
            parts = rel.split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                item = {"type": "file", "oid": entry["blobId"], "size": entry["size"], "path": prefix + rel}
                if entry["lfs"]:
                    pointer_size = len(lfs_pointer(entry["oid"], entry["size"]))
                    item["lfs"] = {"oid": entry["oid"], "size": entry["size"], "pointerSize": pointer_size}
                entries.append(item)
        for folder in sorted(folders):
            entries.append({"type": "directory", "oid": hashlib.sha1(f"{sha}:{folder}".encode()).hexdigest(),
                            "size": 0, "path": folder})
        self._json(entries)

    def handle_resolve(self, body: bytes, repo: str, rev: str, path: str):
        """HEAD/GET /{repo}/resolve/{rev}/{path}: the file with X-Repo-Commit, ETag and (LFS) X-Linked-* headers."""
        meta = self._repo(repo)
        sha = self.server.store.resolve(meta, rev)
        entry = meta["commits"][sha]["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["oid"] if entry["lfs"] else entry["blobId"]}"'}
        if entry["lfs"]:
            headers.update({"X-Linked-Etag": f'"{entry["oid"]}"', "X-Linked-Size": str(entry["size"])})
        self._send(200, self.server.store.read_object(entry["oid"]), "application/octet-stream", headers)

    def handle_lfs_batch(self, body: bytes, repo: str):
        """POST /{repo}.git/info/lfs/objects/batch: basic-transfer upload actions for objects not stored yet."""
        self._require_token()
        self._repo(repo)
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
                    "verify": {"href": f"{self.server.url}/{repo}.git/info/lfs/objects/verify", "expires_in": 3600},
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

    def handle_lfs_verify(self, body: bytes, repo: str):
        """POST /{repo}.git/info/lfs/objects/verify: 200 if the object is stored with this size."""
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
