"""Train from a Hub dataset id: an imagefolder pushed as a dataset repo to the suite's local Hub server,
read back over HTTP by `datasets.load_dataset` inside `train.py --data ORG/NAME`."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys

import pytest
import yaml
from conftest import hub_client_env, make_imagefolder, train_cmd

pytestmark = pytest.mark.slow

DATASET = "team/tiny-xrays"
PER_CLASS = {"train": 8, "val": 3, "test": 3}  # images per class and shipped split, all distinct

PUSH = r"""
import json, sys
from huggingface_hub import HfApi
api = HfApi()
url = api.create_repo(sys.argv[1], repo_type="dataset")
commit = api.upload_folder(repo_id=sys.argv[1], repo_type="dataset", folder_path=sys.argv[2])
print(json.dumps({"url": str(url), "repo_type": url.repo_type, "commit": commit.oid}))
"""

# What else a dataset client may ask for, beyond what load_dataset asked for in this version.
PROTOCOL = r"""
import json, sys
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.errors import RevisionNotFoundError
api, repo = HfApi(), sys.argv[1]
tree = {f.path: getattr(f, "size", None) for f in api.list_repo_tree(repo, repo_type="dataset", recursive=True)}
top = sorted(f.path for f in api.list_repo_tree(repo, repo_type="dataset"))
expanded = list(api.list_repo_tree(repo, "train", repo_type="dataset", expand=True))
info = api.get_paths_info(repo, ["train/fractured", "test/fractured/img000.png", "no/such"], repo_type="dataset")
try:
    api.dataset_info(repo, revision="refs/convert/parquet")
    parquet = "found"
except RevisionNotFoundError:
    parquet = "RevisionNotFound"
with HfFileSystem().open(f"datasets/{repo}/test/fractured/img000.png", "rb", block_size=64) as f:
    f.seek(100)
    part = f.read(32).hex()
whole = open(hf_hub_download(repo, "test/fractured/img000.png", repo_type="dataset"), "rb").read()
print(json.dumps({
    "sha": api.dataset_info(repo).sha, "tree": tree, "top": top,
    "expanded": sorted((f.path, bool(f.last_commit)) for f in expanded),
    "paths_info": sorted(type(f).__name__ + ":" + f.path for f in info), "parquet": parquet,
    "part": part, "whole_part": whole[100:132].hex(), "model_exists": api.repo_exists(repo),
}))
"""


def run(cmd, env):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def last_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pushed_dataset(hub_server, tmp_path_factory):
    """DATASET on the test Hub, pushed over HTTP with upload_folder; returns the local folder and the push answer."""
    folder = make_imagefolder(tmp_path_factory.mktemp("tiny_xrays"), PER_CLASS, seed=3)
    env = hub_client_env(hub_server, tmp_path_factory.mktemp("push_home"))
    return folder, last_json(run([sys.executable, "-c", PUSH, DATASET, str(folder)], env))


def test_dataset_repo_protocol(hub_server, pushed_dataset, tmp_path):
    folder, push = pushed_dataset
    assert push["url"] == f"{hub_server.url}/datasets/{DATASET}" and push["repo_type"] == "dataset"
    got = last_json(run([sys.executable, "-c", PROTOCOL, DATASET], hub_client_env(hub_server, tmp_path / "home")))
    assert got["sha"] == push["commit"]
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*.png")}
    assert {p: s for p, s in got["tree"].items() if p.endswith(".png")} == files
    assert {"train", "train/fractured", "train/not fractured", "val", "test"} <= set(got["tree"])
    assert got["top"] == [".gitattributes", "test", "train", "val"]
    assert got["expanded"] == [["train/fractured", True], ["train/not fractured", True]]  # with last commits
    assert got["paths_info"] == ["RepoFile:test/fractured/img000.png", "RepoFolder:train/fractured"]
    assert got["parquet"] == "RevisionNotFound"  # no parquet conversion: datasets reads the files themselves
    assert got["part"] == got["whole_part"] == (folder / "test/fractured/img000.png").read_bytes()[100:132].hex()
    assert not got["model_exists"]  # a dataset repo is not a model repo of the same name
    assert any(" 206" in line and "/datasets/team/tiny-xrays/resolve/" in line for line in hub_server.requests())


def test_train_from_a_hub_dataset_id(hub_server, pushed_dataset, tmp_path):
    out = tmp_path / "model"
    env = hub_client_env(hub_server, tmp_path / "home")
    proc = run(train_cmd(DATASET, out, "--epochs", "1"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    n_files = 2 * sum(PER_CLASS.values())
    report = json.loads((out / "data_report.json").read_text())
    assert report["files"] == report["distinct_images"] == n_files
    assert report["skipped_files"] == 0 and not report["problems"]
    assert {split: e["files"] for split, e in report["shipped_splits"].items()} == {
        split: 2 * n for split, n in PER_CLASS.items()}
    assert report["hub_datasets"] == [DATASET]
    assert list(report["sources"]) == [DATASET] and report["sources"][DATASET]["files"] == n_files
    with gzip.open(out / "split_manifest.csv.gz", "rt", newline="") as f:
        paths = {row["path"] for row in csv.DictReader(f)}
    assert "train/fractured/img000.png" in paths and len(paths) == n_files  # the files' paths in the repo

    card = (out / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["datasets"] == [DATASET]

    # The images came over HTTP from the test Hub: listed from the tree API, then each file downloaded.
    requests = hub_server.requests()
    assert any(line.startswith(f"GET /api/datasets/{DATASET}/tree/") and line.endswith(" 200") for line in requests)
    downloads = {line.split()[1] for line in requests
                 if line.startswith(f"GET /datasets/{DATASET}/resolve/") and line.endswith(".png 200")}
    assert len(downloads) >= n_files


def test_missing_hub_dataset_is_one_clear_error(hub_server, tmp_path):
    proc = run(train_cmd("team/no-such-dataset", tmp_path / "model", "--epochs", "1"),
               hub_client_env(hub_server, tmp_path / "home"))
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "team/no-such-dataset" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "model" / "model.safetensors").exists()
    assert any(line.startswith("HEAD /datasets/team/no-such-dataset/") and line.endswith(" 404")
               for line in hub_server.requests())
