"""The demo over real HTTP: gradio_client calls of /predict, a corpus of bad inputs, the share
link failing offline, and a Hub that cannot be reached."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import ROOT, free_port, hub_client_env, stop
from corpus import input_corpus

from fracture_detector.resources import BUNDLED_MODEL, EXAMPLES


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def call(client, path):
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), api_name="/predict")


def test_predict_gives_label_decision_and_heatmap(client):
    from PIL import Image

    from fracture_detector.predict import Predictor

    example = EXAMPLES / "fractured_roboflow_1.jpg"
    heatmap, label, decision = call(client, example)
    assert {c["label"] for c in label["confidences"]} == {"fractured", "not fractured"}
    assert abs(sum(c["confidence"] for c in label["confidences"]) - 1) < 1e-4
    calibration = Predictor(BUNDLED_MODEL).calibration
    target = round(calibration.target_sensitivity * 100)
    assert f"threshold {calibration.threshold:.3f} (chosen for {target}% sensitivity on " in decision
    overlay = Image.open(heatmap)
    assert overlay.mode == "RGB" and overlay.size == Image.open(example).size  # the X-ray, coloured


def test_the_headline_is_the_decision_at_the_threshold_not_the_most_probable_class(borderline, borderline_url):
    from gradio_client import Client

    folder, xray = borderline
    _, label, decision = call(Client(borderline_url, verbose=False), xray)
    p = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert p["fractured"] < 0.5 < p["not fractured"]  # the most probable class is "not fractured"
    assert label["label"] == "fracture suspected"  # the headline follows the threshold
    assert decision.startswith(f"**Fracture suspected**: P(fractured) = {p['fractured']:.3f}; flagged when it "
                               f"reaches the threshold ")


def test_bad_input_corpus_gets_clear_messages_and_the_server_keeps_answering(client, tmp_path):
    corpus = input_corpus(tmp_path)
    assert len(corpus) >= 20
    for kind, path, expected in corpus:
        heatmap, label, decision = call(client, path)
        if expected is None:
            assert label and label["label"] in ("fracture suspected", "no fracture detected"), kind
            assert heatmap and "threshold" in decision, kind
        else:
            assert heatmap is None and not (label or {}).get("confidences") and expected in decision, (kind, decision)
            _, label, _ = call(client, EXAMPLES / "not_fractured_kaggle_1.jpg")  # still answering
            assert label["label"] in ("fracture suspected", "no fracture detected")


def test_inverted_xray_is_scored_upright_and_the_page_says_so(client, tmp_path):
    from PIL import Image, ImageOps

    ImageOps.invert(Image.open(EXAMPLES / "fractured_roboflow_1.jpg").convert("L")).save(tmp_path / "inverted.png")
    _, upright_label, _ = call(client, EXAMPLES / "fractured_roboflow_1.jpg")
    heatmap, label, decision = call(client, tmp_path / "inverted.png")
    assert heatmap and "inverted back before scoring" in decision
    assert abs(label["confidences"][0]["confidence"] - upright_label["confidences"][0]["confidence"]) < 1e-4


def test_upload_size_limit(app_url, tmp_path):
    """Uploads over the limit are refused by the server (HTTP 413) before they reach the model, and
    gradio_client refuses to send them; a small upload on the same route is accepted."""
    import httpx
    from gradio_client import Client, handle_file

    from fracture_detector.app import MAX_UPLOAD

    limit = int(MAX_UPLOAD.removesuffix("mb")) * 1024 * 1024
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (limit + 10))
    upload = app_url.rstrip("/") + "/gradio_api/upload"
    refused = httpx.post(upload, files={"files": ("big.png", big.read_bytes(), "image/png")}, timeout=120)
    assert refused.status_code == 413 and f"maximum allowed size of {limit} bytes" in refused.text
    small = httpx.post(upload, files={"files": ("small.png", b"\x89PNG" + b"\x00" * 100, "image/png")}, timeout=60)
    assert small.status_code == 200
    with pytest.raises(ValueError, match=f"exceeds the maximum file size of {limit} bytes"):
        Client(app_url, verbose=False).predict(handle_file(str(big)), api_name="/predict")


def test_offline_share_and_unreachable_hub(tmp_path):
    """`python app.py --share` with no internet and MODEL_ID on an unreachable Hub: two plain lines,
    the bundled model, and the page still served."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    # Every outgoing request (share tunnel, frpc download) goes to a closed local port: no internet.
    env.update(HF_ENDPOINT=closed, HF_HOME=str(tmp_path / "home"), MODEL_ID="hf-hub:team/not-cached",
               HTTPS_PROXY=closed, HTTP_PROXY=closed, https_proxy=closed, http_proxy=closed,
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--share", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        lines = []
        deadline = time.time() + 180
        while time.time() < deadline and not any("share link" in line for line in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        out = "".join(lines)
        assert "Model: the bundled model: the Hub at " + closed + " is unreachable" in out, out
        share_lines = [line for line in lines if "share link" in line]
        assert share_lines == [f"Could not create a public share link (that needs the internet); the demo is "
                               f"still served at http://127.0.0.1:{port}/\n"], out
        assert "Traceback" not in out and "frpc" not in out
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).status == 200
    finally:
        stop(proc)


@pytest.mark.slow
def test_model_source_hub_then_cache_when_unreachable(hub_server, tmp_path):
    """A Hub model: downloaded while the Hub answers, then served from the cache when it does not;
    a repository that does not exist is an error, not a silent fallback."""
    home = tmp_path / "home"
    env = hub_client_env(hub_server, home, PYTHONPATH=str(ROOT / "src"))
    pushed = subprocess.run([sys.executable, "-m", "fracture_detector", "push", str(BUNDLED_MODEL),
                             "team/demo-model"], env=env, capture_output=True, text=True, timeout=300)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    code = """
import sys
from fracture_detector.hub import HubError
from fracture_detector.loading import resolve_for_serving
try:
    folder, line = resolve_for_serving(sys.argv[1])
    print(line, (folder / "metrics.json").is_file())
except HubError as e:
    print("HubError:", e)
"""

    def source(spec, **extra):
        proc = subprocess.run([sys.executable, "-c", code, spec], env={**env, **extra}, capture_output=True,
                              text=True, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return proc.stdout.strip()

    assert source("hf-hub:team/demo-model").startswith("hf-hub:team/demo-model (revision ")
    assert source("hf-hub:team/demo-model").endswith(f"from {hub_server.url} True")  # with its metrics
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    cached = source("hf-hub:team/demo-model", HF_ENDPOINT=closed)
    assert "from the local cache: the Hub at " + closed + " is unreachable" in cached
    with failing_hub() as failing:  # a Hub that answers, with a server error: the cache, as when unreachable
        assert "from the local cache: the Hub at " + failing + " is unreachable or failing" in \
            source("hf-hub:team/demo-model", HF_ENDPOINT=failing)
    assert "HubError: team/no-such-model: no such model" in source("hf-hub:team/no-such-model")


@contextlib.contextmanager
def failing_hub():
    """A local HTTP server that answers every request with 503, as a Hub in trouble does; yields its URL."""

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_busy_port_is_one_sentence(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--port", str(port)], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"error: cannot serve on 127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr, proc.stderr


def test_headline_gives_each_source_its_own_numbers():
    """A model trained on several sources shows each source's clean-test numbers, not only the pooled ones."""
    import json

    from fracture_detector.app import headline

    text = headline(BUNDLED_MODEL)
    by_source = json.loads((BUNDLED_MODEL / "metrics.json").read_text())["by_source"]
    assert len(by_source) >= 2
    for name, results in by_source.items():
        assert f"**{name}** ({results['clean_test']['groups']} distinct X-rays): ROC-AUC " \
               f"{results['clean_test']['roc_auc']:.3f}" in text, name
