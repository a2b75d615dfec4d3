"""The local test Hub (tests/hub_server.py) answers the real huggingface_hub client and timm like the Hub does.

huggingface_hub reads HF_ENDPOINT when it is imported, so every client call runs in a subprocess whose
environment points at the server; the pytest process never imports it with those settings.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import LFS_MAX_BYTES, TOKEN, Hub, hub_client_env

BAD_TOKEN = "hf_not_a_valid_token"
REPO = "tester/demo"

# Run first in every client snippet; the snippet reads its inputs from ARGS and reports with emit().
PRELUDE = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError
api = HfApi()
ARGS = json.loads(sys.argv[1])

def emit(obj):
    print("RESULT " + json.dumps(obj))

def catch(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as err:
        response = getattr(err, "response", None)
        return {"mro": [c.__name__ for c in type(err).__mro__], "status": getattr(response, "status_code", None)}
    return None
"""


def run_client(hub: Hub, code: str, args: dict | None = None, home: Path | None = None, timeout: int = 120,
               **env: str) -> dict:
    """Run a huggingface_hub snippet in a fresh interpreter pointed at `hub`; return what it emit()ted."""
    environ = hub_client_env(hub, home or hub.home, **env)
    script = PRELUDE + textwrap.dedent(code)
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(args or {})], env=environ,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"client failed:\n{proc.stderr[-4000:]}\nserver log tail:\n{hub.requests()[-20:]}"
    results = [line[len("RESULT "):] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert results, f"client emitted nothing:\n{proc.stdout}\n{proc.stderr[-2000:]}"
    return json.loads(results[-1])


def make_folder(folder: Path) -> dict[str, bytes]:
    """A small model folder: README with YAML front matter, a binary file, a JSON file and a nested text file."""
    files = {
        "README.md": b"---\nlicense: apache-2.0\ntags:\n- image-classification\n---\n# Demo\n\nA test model.\n",
        "weights.bin": random.Random(0).randbytes(150_000),
        "config.json": json.dumps({"architecture": "demo", "num_classes": 2}).encode(),
        "docs/notes.txt": b"nested file\n",
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


@pytest.fixture(scope="session")
def uploaded(hub_server, tmp_path_factory):
    """REPO created and filled with make_folder() through upload_folder; returns files, commit and model info."""
    folder = tmp_path_factory.mktemp("upload")
    files = make_folder(folder)
    result = run_client(hub_server, """
        api.create_repo(ARGS["repo"], exist_ok=True)
        commit = api.upload_folder(repo_id=ARGS["repo"], folder_path=ARGS["folder"], commit_message="first")
        info = api.model_info(ARGS["repo"])
        emit({"commit": commit.oid, "sha": info.sha, "private": info.private,
              "siblings": [s.rfilename for s in info.siblings]})
    """, {"repo": REPO, "folder": str(folder)})
    return {"files": files, **result}


def test_create_repo_with_exist_ok_twice(hub_server):
    """create_repo answers the repo URL; exist_ok=True tolerates an existing repo, without it the 409 raises."""
    result = run_client(hub_server, """
        first = api.create_repo("tester/created", exist_ok=True)
        second = api.create_repo("tester/created", exist_ok=True)
        emit({"first": str(first), "second": str(second), "repo_id": second.repo_id,
              "again": catch(api.create_repo, "tester/created")})
    """)
    assert result["first"] == result["second"] == f"{hub_server.url}/tester/created"
    assert result["repo_id"] == "tester/created"
    assert "HfHubHTTPError" in result["again"]["mro"] and result["again"]["status"] == 409


def test_upload_folder_lists_siblings(uploaded):
    """After upload_folder, model_info lists every file (plus the initial .gitattributes) at the new commit."""
    assert set(uploaded["siblings"]) == {".gitattributes", *uploaded["files"]}
    assert uploaded["sha"] == uploaded["commit"] and len(uploaded["commit"]) == 40
    assert uploaded["private"] is False


def test_downloads_return_the_uploaded_bytes(hub_server, uploaded, tmp_path):
    """hf_hub_download of each file and snapshot_download both give back the exact bytes."""
    result = run_client(hub_server, """
        paths = {name: hf_hub_download(ARGS["repo"], name) for name in ARGS["names"]}
        emit({"paths": paths, "snapshot": snapshot_download(ARGS["repo"])})
    """, {"repo": REPO, "names": sorted(uploaded["files"])}, home=tmp_path / "hf_home")
    snapshot = Path(result["snapshot"])
    assert snapshot.name == uploaded["commit"]
    for name, data in uploaded["files"].items():
        assert Path(result["paths"][name]).read_bytes() == data
        assert (snapshot / name).read_bytes() == data
    assert {p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()} == set(uploaded["siblings"])


def test_offline_mode_reads_the_cache(hub_server, uploaded, tmp_path):
    """With HF_HUB_OFFLINE=1 a warm cache serves hf_hub_download and snapshot_download without any request."""
    home = tmp_path / "hf_home"
    run_client(hub_server, "emit(snapshot_download(ARGS['repo']))", {"repo": REPO}, home=home)
    before = len(hub_server.requests())
    result = run_client(hub_server, """
        from huggingface_hub import constants
        paths = {name: hf_hub_download(ARGS["repo"], name) for name in ARGS["names"]}
        emit({"offline": constants.HF_HUB_OFFLINE, "paths": paths, "snapshot": snapshot_download(ARGS["repo"])})
    """, {"repo": REPO, "names": sorted(uploaded["files"])}, home=home, HF_HUB_OFFLINE="1")
    assert result["offline"] is True
    assert len(hub_server.requests()) == before, "offline mode must not reach the server"
    for name, data in uploaded["files"].items():
        assert Path(result["paths"][name]).read_bytes() == data
        assert (Path(result["snapshot"]) / name).read_bytes() == data


def test_older_revisions_and_branches(hub_server, tmp_path):
    """A second commit moves main; the first stays downloadable by sha; create_branch + upload to it works."""
    result = run_client(hub_server, """
        repo = "tester/history"
        api.create_repo(repo)
        v1 = api.upload_file(path_or_fileobj=b"version 1", path_in_repo="data.txt", repo_id=repo).oid
        v2 = api.upload_file(path_or_fileobj=b"version 2", path_in_repo="data.txt", repo_id=repo).oid
        api.create_branch(repo, branch="dev", revision=v1)
        dev = api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id=repo, revision="dev").oid
        read = lambda name, rev: Path(hf_hub_download(repo, name, revision=rev)).read_text()
        emit({"v1": v1, "v2": v2, "dev": dev, "main_sha": api.model_info(repo).sha,
              "old_sha": api.model_info(repo, revision=v1).sha, "at_v1": read("data.txt", v1),
              "at_main": read("data.txt", "main"), "at_dev": [read("data.txt", "dev"), read("dev.txt", "dev")],
              "old_snapshot": sorted(p.name for p in Path(snapshot_download(repo, revision=v1)).iterdir()),
              "dev_on_main": catch(hf_hub_download, repo, "dev.txt")})
    """, home=tmp_path / "hf_home")
    assert len({result["v1"], result["v2"], result["dev"]}) == 3
    assert result["main_sha"] == result["v2"] and result["old_sha"] == result["v1"]
    assert result["at_v1"] == "version 1" and result["at_main"] == "version 2"
    assert result["at_dev"] == ["version 1", "dev only"]
    assert result["old_snapshot"] == [".gitattributes", "data.txt"]
    assert "EntryNotFoundError" in result["dev_on_main"]["mro"]


def test_errors_map_to_hub_exceptions(hub_server, uploaded, tmp_path):
    """Missing repo, file and revision raise the client's specific errors; private repos hide without a token."""
    result = run_client(hub_server, """
        repo = ARGS["repo"]
        api.create_repo("tester/secret", private=True)
        api.upload_file(path_or_fileobj=b"hidden", path_in_repo="secret.txt", repo_id="tester/secret")
        emit({
            "missing_repo": catch(hf_hub_download, "tester/does-not-exist", "README.md"),
            "missing_repo_info": catch(api.model_info, "tester/does-not-exist"),
            "missing_file": catch(hf_hub_download, repo, "no/such/file.txt"),
            "missing_revision": catch(hf_hub_download, repo, "README.md", revision="no-such-branch"),
            "missing_revision_info": catch(api.model_info, repo, revision="no-such-branch"),
            "missing_snapshot_revision": catch(snapshot_download, repo, revision="no-such-branch"),
            "private_anonymous": catch(api.model_info, "tester/secret", token=False),
            "private_download_anonymous": catch(hf_hub_download, "tester/secret", "secret.txt", token=False),
            "private_with_token": api.model_info("tester/secret").private,
        })
    """, {"repo": REPO}, home=tmp_path / "hf_home")
    for key in ("missing_repo", "missing_repo_info", "private_anonymous", "private_download_anonymous"):
        assert "RepositoryNotFoundError" in result[key]["mro"] and result[key]["status"] == 404, key
    assert "EntryNotFoundError" in result["missing_file"]["mro"]  # RemoteEntryNotFoundError in 2.x
    for key in ("missing_revision", "missing_revision_info", "missing_snapshot_revision"):
        assert "RevisionNotFoundError" in result[key]["mro"], key
    assert result["private_with_token"] is True


def test_bad_token_is_rejected_with_401(hub_server, uploaded, tmp_path):
    """A token the server does not know gets 401 on uploads, repo creation and reads; tokens never reach the log."""
    folder = tmp_path / "folder"
    make_folder(folder)
    result = run_client(hub_server, """
        bad = ARGS["bad"]
        emit({
            "upload_file": catch(api.upload_file, path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=ARGS["repo"],
                                 token=bad),
            "upload_folder": catch(api.upload_folder, repo_id=ARGS["repo"], folder_path=ARGS["folder"], token=bad),
            "create_repo": catch(api.create_repo, "tester/never", token=bad),
            "download": catch(hf_hub_download, ARGS["repo"], "README.md", token=bad),
        })
    """, {"repo": REPO, "folder": str(folder), "bad": BAD_TOKEN}, home=tmp_path / "hf_home")
    for key, error in result.items():
        assert error is not None and "HfHubHTTPError" in error["mro"] and error["status"] == 401, key
    log = hub_server.log.read_text()
    assert BAD_TOKEN not in log and TOKEN not in log


def test_classic_lfs_upload_round_trip(lfs_hub_server, tmp_path):
    """With --lfs and HF_HUB_DISABLE_XET=1 files go through the git-lfs batch API and come back byte-equal."""
    folder = tmp_path / "folder"
    files = make_folder(folder)
    result = run_client(lfs_hub_server, """
        api.create_repo("tester/lfs")
        commit = api.upload_folder(repo_id="tester/lfs", folder_path=ARGS["folder"])
        tree = {f.path: f.lfs.sha256 if f.lfs else None for f in api.list_repo_tree("tester/lfs", recursive=True)
                if hasattr(f, "lfs")}
        paths = {name: hf_hub_download("tester/lfs", name) for name in ARGS["names"]}
        emit({"commit": commit.oid, "tree": tree, "paths": paths})
    """, {"folder": str(folder), "names": sorted(files)}, home=tmp_path / "hf_home", HF_HUB_DISABLE_XET="1")
    for name, data in files.items():
        sha256 = hashlib.sha256(data).hexdigest()
        assert result["tree"][name] == sha256, name
        assert (lfs_hub_server.root / "objects" / sha256).read_bytes() == data
        assert Path(result["paths"][name]).read_bytes() == data
    requests = lfs_hub_server.requests()
    assert "POST /tester/lfs.git/info/lfs/objects/batch 200" in requests
    weights = hashlib.sha256(files["weights.bin"]).hexdigest()
    assert f"PUT /lfs-upload/{weights} 200" in requests


def test_keep_alive_survives_errors_and_oversized_bodies(lfs_hub_server):
    """Error answers (401, 404, 413) read the whole body first, so the same connection keeps working."""
    conn = http.client.HTTPConnection(lfs_hub_server.url.removeprefix("http://"), timeout=30)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def ask(method, path, body=b"", headers=None):
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    status, _, body = ask("POST", "/api/repos/create", json.dumps({"name": "x", "organization": "tester"}).encode())
    assert status == 401 and "error" in json.loads(body)
    sock = conn.sock
    status, _, _ = ask("GET", "/api/models/tester/anything", headers={"Authorization": f"Bearer {BAD_TOKEN}"})
    assert status == 401
    status, _, body = ask("POST", "/api/repos/create", b"x" * (LFS_MAX_BYTES + 1), auth)
    assert status == 413 and "larger than" in json.loads(body)["error"]
    status, headers, _ = ask("GET", "/api/models/tester/does-not-exist")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
    status, headers, body = ask("HEAD", "/tester/does-not-exist/resolve/main/README.md")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound" and body == b""
    status, _, body = ask("DELETE", "/api/no/such/endpoint", b"{}")
    assert status == 404 and "No such endpoint" in json.loads(body)["error"]
    status, _, body = ask("POST", "/api/validate-yaml", json.dumps({"content": "---\n---\n"}).encode(), auth)
    assert status == 200 and json.loads(body) == {"errors": [], "warnings": []}
    assert conn.sock is sock, "the server closed the keep-alive connection"
    conn.close()


@pytest.mark.slow
def test_timm_create_model_from_hub(hub_server, tmp_path):
    """timm.create_model('hf-hub:...', pretrained=True) loads bit-identical weights saved with save_for_hf."""
    pytest.importorskip("timm")
    folder = tmp_path / "resnet"
    run_client(hub_server, """
        import timm
        model = timm.create_model("resnet10t", num_classes=2)
        timm.models.save_for_hf(model, ARGS["folder"], safe_serialization=True)
        api.create_repo("tester/resnet10t")
        emit(api.upload_folder(repo_id="tester/resnet10t", folder_path=ARGS["folder"]).oid)
    """, {"folder": str(folder)}, timeout=300)
    result = run_client(hub_server, """
        import hashlib, safetensors.torch, timm, torch
        from huggingface_hub import try_to_load_from_cache
        model = timm.create_model("hf-hub:tester/resnet10t", pretrained=True)
        saved = safetensors.torch.load_file(Path(ARGS["folder"]) / "model.safetensors")
        loaded = model.state_dict()
        cached = try_to_load_from_cache("tester/resnet10t", "model.safetensors")
        emit({"keys_equal": sorted(saved) == sorted(loaded), "num_classes": model.num_classes,
              "tensors_equal": all(saved[k].dtype == loaded[k].dtype and torch.equal(saved[k], loaded[k])
                                   for k in saved),
              "cached_sha256": hashlib.sha256(Path(cached).read_bytes()).hexdigest()})
    """, {"folder": str(folder)}, home=tmp_path / "empty_hf_home", timeout=300)
    assert result["keys_equal"] and result["tensors_equal"] and result["num_classes"] == 2
    assert result["cached_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert any("/resolve/main/model.safetensors 200" in line for line in hub_server.requests())
