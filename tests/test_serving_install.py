"""The serving install (`pip install fracture-detector`, no extras): no PyTorch, timm, datasets or accelerate.

The CLI (`calibrate` too), the Python API and the demo run the bundled model from its
model.onnx, with heatmaps, the X-ray check and every refusal; what needs PyTorch says so in
one sentence. Each test runs a Python process in which importing those packages fails, as in
an install without them (`.ci/run` also installs the wheel without extras into a clean virtual
environment and runs it).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, free_port, make_imagefolder, stop
from PIL import Image

from fracture_detector.onnx_model import ONNX_FILE
from fracture_detector.predict import Predictor
from fracture_detector.resources import BUNDLED_MODEL, example_xrays
from fracture_detector.site import MIN_PER_LABEL

NOT_INSTALLED = ("torch", "torchvision", "timm", "datasets", "accelerate")
# Run first in each process: importing any of NOT_INSTALLED fails as it would where they are not installed.
WITHOUT_PYTORCH = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {NOT_INSTALLED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, NotInstalled())
"""
FULL_INSTALL = "pip install 'fracture-detector[train]'"


def without_pytorch(code: str, *args, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run `code` (with `args` as sys.argv[1:]) in a process that cannot import PyTorch and its kin."""
    cmd = [sys.executable, "-c", WITHOUT_PYTORCH + code, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if kwargs.pop("background", False):
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def cli(*args) -> subprocess.CompletedProcess:
    return without_pytorch("from fracture_detector.cli import main\nmain(sys.argv[1:])", *args)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """A text file named like a PNG and a colour photo-like image: both refused, for different reasons."""
    folder = tmp_path_factory.mktemp("odd")
    (folder / "notes.png").write_text("not an image at all\n")
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(32, 0).repeat(32, 1)
    Image.fromarray(colour, "RGB").save(folder / "photo.png")
    return folder / "notes.png", folder / "photo.png"


def test_the_blocker_blocks():
    proc = without_pytorch("import torch")
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr


def test_cli_predicts_with_heatmaps_and_refusals(odd_files, tmp_path):
    notes, photo = odd_files
    examples = example_xrays()
    proc = cli("predict", *examples, notes, photo, "--json", tmp_path / "out.json", "--heatmaps", tmp_path / "maps",
               "--quiet")
    assert proc.returncode == 1, proc.stderr[-3000:]  # 1: some files failed (the two odd ones)
    assert "run by onnxruntime" in proc.stderr and "Traceback" not in proc.stderr
    records = {r["path"]: r for r in json.loads((tmp_path / "out.json").read_text())}
    reference = Predictor(BUNDLED_MODEL, backend="torch")  # this process has PyTorch: the same model by it
    for path in examples:
        record, expected = records[str(path)], reference.predict(path)
        assert record["error"] is None and record["xray_check"] == expected.check
        assert record["probabilities"] == pytest.approx(expected.probabilities, abs=1e-4)
        assert record["decision"] == expected.decision and os.path.getsize(record["heatmap"]) > 0
    assert records[str(notes)]["error"] and records[str(notes)]["probabilities"] is None
    assert records[str(photo)]["error"] == "this does not look like an X-ray (it is a colour image)"


def test_python_api():
    example = example_xrays()[0]
    code = ("import fracture_detector\npredictor = fracture_detector.load()\n"
            "print(predictor.backend, predictor.predict(sys.argv[1]).probabilities['fractured'])")
    proc = without_pytorch(code, example)
    assert proc.returncode == 0, proc.stderr[-3000:]
    backend, p = proc.stdout.split()
    expected = Predictor(BUNDLED_MODEL, backend="torch").predict(example).probabilities["fractured"]
    assert backend == "onnxruntime" and float(p) == pytest.approx(expected, abs=1e-4)


def test_calibrate_chooses_a_sites_threshold(tmp_path):
    site = make_imagefolder(tmp_path, {"xrays": MIN_PER_LABEL}, seed=3) / "xrays"
    out = tmp_path / "site-model"
    proc = cli("calibrate", site, "--output-dir", out)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["threshold"] == config["site_calibration"]["threshold"] and f"wrote {out}" in proc.stdout
    assert config["site_calibration"]["images"] == 2 * MIN_PER_LABEL


def test_demo_answers_and_refuses(odd_files):
    from gradio_client import Client, handle_file

    port = free_port()
    code = "import runpy\nsys.argv = ['app.py', '--port', sys.argv[1]]\nrunpy.run_path('app.py', run_name='__main__')"
    server = without_pytorch(code, port, background=True)
    try:
        lines = []
        while not any("Serving the demo at" in line for line in lines):
            ready, _, _ = select.select([server.stdout], [], [], 120)
            line = server.stdout.readline() if ready else ""
            assert line, "the demo did not start:\n" + "".join(lines)
            lines.append(line)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        heatmap, label, decision = client.predict(handle_file(str(example_xrays()[0])), api_name="/predict")
        assert heatmap and label["label"] in ("fracture suspected", "no fracture detected") and "threshold" in decision
        _, label, decision = client.predict(handle_file(str(odd_files[0])), api_name="/predict")
        assert not label and decision.startswith("**Could not read this file**")
    finally:
        stop(server)
        server.stdout.close()


def test_what_needs_pytorch_says_so_in_one_sentence(tmp_path, tiny_folder):
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, folder, ignore=shutil.ignore_patterns(ONNX_FILE))
    for proc in (cli("predict", example_xrays()[0], "--model", folder), cli("export", folder),
                 without_pytorch("import runpy\nsys.argv = ['train.py', '--data', sys.argv[1]]\n"
                                 "runpy.run_path('train.py', run_name='__main__')", tiny_folder)):
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        message = proc.stderr.strip().splitlines()[-1]
        assert "needs" in message and FULL_INSTALL in message, message
