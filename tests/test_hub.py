"""Push to and load from a Hub over real HTTP, against the suite's local Hub server."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, hub_client_env, train_cmd

pytestmark = pytest.mark.slow

LOAD = r"""
import json, sys
import fracture_detector
p = fracture_detector.load(sys.argv[1], revision=sys.argv[2] or None)
print(json.dumps({"dir": str(p.model_dir), "threshold": p.threshold,
                  "prob": p.predict(sys.argv[3]).probabilities}))
"""

PLAIN_TIMM = r"""
import hashlib, json, sys
import timm, torch
from safetensors.torch import load_file
model = timm.create_model("hf-hub:" + sys.argv[1], pretrained=True)
ref = load_file(sys.argv[2])
state = model.state_dict()
print(json.dumps({"equal": all(torch.equal(state[k], ref[k]) for k in ref) and ref.keys() == state.keys()}))
"""


def hub_env(server, home, **extra) -> dict:
    """A Hub client's environment that can also import this package."""
    return hub_client_env(server, home, PYTHONPATH=str(ROOT / "src"), **extra)


def run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kw)


def folder_digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def pushed(hub_server, tiny_folder, tmp_path_factory):
    """A 1-epoch model trained and pushed by `train.py --push-to-hub`."""
    out = tmp_path_factory.mktemp("push") / "model"
    env = hub_env(hub_server, tmp_path_factory.mktemp("home"))
    proc = run(train_cmd(tiny_folder, out, "--epochs", "1", "--push-to-hub", "team/fracture-tiny"), env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed" in proc.stdout
    return out


def test_round_trip_weights_equal_bit_for_bit(hub_server, pushed, tiny_folder, tmp_path):
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    env = hub_env(hub_server, tmp_path / "home")
    proc = run([sys.executable, "-c", LOAD, "hf-hub:team/fracture-tiny", "", str(image)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(tmp_path / "home") in got["dir"]  # in the Hugging Face cache
    local = json.loads(run([sys.executable, "-c", LOAD, str(pushed), "", str(image)], env).stdout.splitlines()[-1])
    assert got["prob"] == local["prob"] and got["threshold"] == local["threshold"]

    proc = run([sys.executable, "-c", PLAIN_TIMM, "team/fracture-tiny", str(pushed / "model.safetensors")], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["equal"]


def test_pushed_repo_holds_card_and_no_pickles(hub_server, pushed, tmp_path):
    code = ("from huggingface_hub import HfApi, hf_hub_download; import json; repo = 'team/fracture-tiny';"
            "files = [s.rfilename for s in HfApi().model_info(repo).siblings];"
            "print(json.dumps({'files': files, 'card': open(hf_hub_download(repo, 'README.md')).read()}))")
    proc = run([sys.executable, "-c", code], hub_env(hub_server, tmp_path / "home"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"config.json", "model.safetensors", "README.md", "metrics.json", "confusion_matrix.png"}
    assert expected <= set(out["files"])
    assert not [f for f in out["files"] if f.endswith((".bin", ".pth", ".pt", ".pkl"))]
    assert not [f for f in out["files"] if f.startswith("checkpoints")]
    card = out["card"]
    assert "library_name: timm" in card and "pipeline_tag: image-classification" in card and "model-index" in card
    assert 'timm.create_model("hf-hub:team/fracture-tiny"' in card
    assert hub_server.token not in card
    # The local card is untouched by the push.
    assert "hf-hub:team/fracture-tiny" not in (pushed / "README.md").read_text()


def test_offline_from_cache_and_unreachable_endpoint(hub_server, pushed, tiny_folder, tmp_path):
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    home = tmp_path / "home"
    cmd = [sys.executable, "-c", LOAD, "hf-hub:team/fracture-tiny", "", str(image)]
    assert run(cmd, hub_env(hub_server, home)).returncode == 0  # fills the cache
    offline = run(cmd, hub_env(hub_server, home, HF_HUB_OFFLINE="1"))
    assert offline.returncode == 0, offline.stderr[-3000:]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
    from_cache = run(cmd, hub_env(hub_server, home, HF_ENDPOINT=closed))
    assert from_cache.returncode == 0, from_cache.stderr[-3000:]

    code = ("import fracture_detector\nfrom fracture_detector.hub import HubError\n"
            "try:\n    fracture_detector.load('hf-hub:team/fracture-tiny')\n"
            "except HubError as e:\n    print('HubError:', e)\n")
    empty = run([sys.executable, "-c", code], hub_env(hub_server, tmp_path / "empty", HF_ENDPOINT=closed))
    assert "HubError:" in empty.stdout and "Traceback" not in empty.stderr
    assert "not reachable" in empty.stdout or "cannot reach" in empty.stdout
    empty_offline = run([sys.executable, "-c", code], hub_env(hub_server, tmp_path / "empty2", HF_HUB_OFFLINE="1"))
    assert "not in the local cache" in empty_offline.stdout


@pytest.mark.parametrize(
    "spec,revision,expected",
    [
        ("hf-hub:team/no-such-model", "", "no such model"),
        ("hf-hub:team/fracture-tiny", "no-such-branch", "no revision 'no-such-branch'"),
        ("hf-hub:team/config-only", "", "has no file 'model.safetensors'"),
    ],
)
def test_clear_messages_for_missing_things(hub_server, pushed, tmp_path, spec, revision, expected):
    env = hub_env(hub_server, tmp_path / "home")
    if "config-only" in spec:
        up = ("from huggingface_hub import HfApi; api = HfApi(); api.create_repo('team/config-only', exist_ok=True);"
              f"api.upload_file(path_or_fileobj={str(pushed / 'config.json')!r}, path_in_repo='config.json',"
              "repo_id='team/config-only')")
        assert run([sys.executable, "-c", up], env).returncode == 0
    code = ("import sys, fracture_detector\nfrom fracture_detector.hub import HubError\n"
            "try:\n    fracture_detector.load(sys.argv[1], revision=sys.argv[2] or None)\n"
            "except HubError as e:\n    print('HubError:', e)\n")
    proc = run([sys.executable, "-c", code, spec, revision], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HubError:" in proc.stdout and expected in proc.stdout, proc.stdout


def test_push_cli_with_bad_token_fails_cleanly(hub_server, pushed, tmp_path):
    before = folder_digest(pushed)
    env = hub_env(hub_server, tmp_path / "home", HF_TOKEN="hf_wrong_token_123")
    proc = run([sys.executable, "-m", "fracture_detector", "push", str(pushed), "team/other"], env)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "401" in proc.stderr and "Traceback" not in proc.stderr
    assert "hf_wrong_token_123" not in proc.stderr + proc.stdout
    assert folder_digest(pushed) == before


def test_push_cli_to_a_branch_and_load_that_revision(hub_server, pushed, tiny_folder, tmp_path):
    env = hub_env(hub_server, tmp_path / "home")
    proc = run([sys.executable, "-m", "fracture_detector", "push", str(pushed), "team/fracture-tiny",
                "--revision", "v2"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    loaded = run([sys.executable, "-c", LOAD, "hf-hub:team/fracture-tiny", "v2", str(image)], env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]


def test_push_refuses_a_folder_that_is_not_a_model(hub_server, tmp_path):
    env = hub_env(hub_server, tmp_path / "home")
    proc = run([sys.executable, "-m", "fracture_detector", "push", str(tmp_path), "team/x"], env)
    assert proc.returncode != 0 and "not a saved model folder" in proc.stderr
