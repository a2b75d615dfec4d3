"""ONNX export and ONNX Runtime: the same probabilities, X-ray check and heatmaps as PyTorch, in the CLI,
the demo and the model card's snippet; clear errors for folders without weights and stale exports."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, free_port, hub_client_env

from fracture_detector import predict
from fracture_detector.gradcam import gradcam
from fracture_detector.model import ModelError
from fracture_detector.onnx_model import ONNX_FILE
from fracture_detector.predict import Predictor, read_xray
from fracture_detector.resources import BUNDLED_MODEL, example_xrays

# Pearson correlation of the class activation map with Grad-CAM on the fractured examples. Measured on the
# bundled model: 0.85 to 0.96 (bench/heatmaps.py measures it on clean-test X-rays).
CAM_AGREEMENT_FLOOR = 0.6


@pytest.fixture(scope="module")
def bundled():
    """The bundled model run by ONNX Runtime (its model.onnx) and by PyTorch."""
    return Predictor(BUNDLED_MODEL), Predictor(BUNDLED_MODEL, backend="torch")


@pytest.fixture()
def without_onnx(trained, tmp_path):
    """A copy of the tiny trained model without its model.onnx."""
    folder = tmp_path / "model"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns(ONNX_FILE, "checkpoints"))
    return folder


def test_onnx_runtime_gives_pytorchs_probabilities_and_check(bundled):
    onnx, torch_ = bundled
    assert (onnx.backend, torch_.backend) == ("onnxruntime", "torch")
    for path in example_xrays():
        a, b = onnx.predict(path), torch_.predict(path)
        for label in a.probabilities:
            assert abs(a.probabilities[label] - b.probabilities[label]) < 1e-4, path.name
        assert a.check == b.check and a.distance == pytest.approx(b.distance, rel=1e-4), path.name


def test_cam_heatmap_has_the_xrays_shape_and_agrees_with_gradcam(bundled):
    onnx, torch_ = bundled
    # Fractured examples the model finds more likely fractured than not: a class activation map shows positive
    # evidence only, and a fractured X-ray scored under 0.5 (flagged by a low threshold) may have none at all.
    fractured = [p for p in example_xrays() if p.name.startswith("fractured")
                 and onnx.predict(p).probabilities["fractured"] >= 0.5]
    assert len(fractured) >= 4
    pixels = np.stack([read_xray(p, onnx.image_size).pixels for p in fractured])
    _, cams = onnx.predict_with_heatmaps(pixels)
    _, torch_cams = torch_.predict_with_heatmaps(pixels)
    _, grad_cams = gradcam(torch_.model, pixels, torch_.positive)
    assert cams.shape == pixels.shape and cams.min() >= 0 and cams.max() <= 1
    assert np.abs(cams - torch_cams).max() < 1e-3  # the same map from either runtime
    for path, cam, reference in zip(fractured, cams, grad_cams):
        assert np.corrcoef(cam.ravel(), reference.ravel())[0, 1] > CAM_AGREEMENT_FLOOR, path.name


def test_more_grids_than_one_pass_takes_are_scored_as_each_alone(bundled, monkeypatch):
    """Grids beyond MAX_BATCH run in further forward passes (memory stays bounded), each with its own result."""
    onnx, _ = bundled
    monkeypatch.setattr(predict, "MAX_BATCH", 4)
    pixels = np.stack([read_xray(p, onnx.image_size).pixels for p in example_xrays()])
    assert len(pixels) > 2 * predict.MAX_BATCH  # three passes, the last one short
    predictions, cams = onnx.predict_with_heatmaps(pixels)
    assert len(predictions) == len(cams) == len(pixels)
    for i, (prediction, cam) in enumerate(zip(predictions, cams)):
        (alone,), (alone_cam,) = onnx.predict_with_heatmaps(pixels[i : i + 1])
        assert prediction.probabilities == pytest.approx(alone.probabilities, abs=1e-5)
        assert prediction.distance == pytest.approx(alone.distance, rel=1e-4)
        assert np.abs(cam - alone_cam).max() < 1e-4


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fracture_detector", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=env or {**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_cli_with_and_without_model_onnx(trained, without_onnx, tiny_folder, tmp_path):
    assert (trained / ONNX_FILE).is_file()  # train.py exports it
    images = tiny_folder / "test"
    results = {}
    for name, folder in (("onnx", trained), ("torch", without_onnx)):
        proc = _cli("predict", images, "--model", folder, "--json", tmp_path / f"{name}.json", "--quiet",
                    "--no-xray-check")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"run by {'onnxruntime' if name == 'onnx' else 'torch'})" in proc.stderr
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    for a, b in zip(results["onnx"], results["torch"]):
        assert a["path"] == b["path"] and a["xray_check"] == b["xray_check"]
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)


def test_export_writes_a_file_the_predictor_uses(without_onnx):
    proc = _cli("export", without_onnx)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (without_onnx / ONNX_FILE).is_file() and str(without_onnx / ONNX_FILE) in proc.stdout
    assert Predictor(without_onnx).backend == "onnxruntime"


def test_export_of_a_folder_without_weights_is_a_clear_error(tmp_path):
    proc = _cli("export", tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"{tmp_path}: not a saved model folder (missing config.json, model.safetensors)" in proc.stderr


def test_a_stale_model_onnx_is_refused(trained, without_onnx):
    """model.onnx exported from other weights: loading it, and pushing it, say what to run."""
    from safetensors.torch import load_file, save_file

    from fracture_detector.hub import push

    shutil.copy(trained / ONNX_FILE, without_onnx / ONNX_FILE)
    weights = load_file(without_onnx / "model.safetensors")
    weights[next(iter(weights))] += 1  # retrained, as far as model.onnx can tell
    save_file(weights, without_onnx / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match="exported from other weights.*fracture-detector export"):
        Predictor(without_onnx)
    with pytest.raises(ModelError, match="exported from other weights"):
        push(without_onnx, "team/stale")


def test_demo_with_and_without_model_onnx(trained, without_onnx, tiny_folder):
    """The same /predict answers from the demo run by ONNX Runtime and by PyTorch."""
    from gradio_client import Client, handle_file

    from fracture_detector.app import build_demo, start

    with gzip.open(trained / "split_manifest.csv.gz", "rt") as f:  # a validation X-ray: the tiny model accepts it
        example = next(tiny_folder / row["path"] for row in csv.DictReader(f) if row["split"] == "val")
    answers = {}
    for folder in (trained, without_onnx):
        demo = build_demo(folder)
        try:
            start(demo, "127.0.0.1", free_port())
            heatmap, label, decision = Client(demo.local_url, verbose=False).predict(
                handle_file(str(example)), api_name="/predict")
        finally:
            demo.close()
        answers[folder] = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert heatmap and "threshold" in decision
    onnx_answer, torch_answer = answers[trained], answers[without_onnx]
    assert onnx_answer == pytest.approx(torch_answer, abs=1e-4)


def test_the_cards_onnx_snippet_runs_on_the_pushed_model(hub_server, trained, tiny_folder, tmp_path):
    """Push the model with its model.onnx to the test Hub, then run the card's ONNX Runtime code as it
    stands on the Hub, in a process without this package and without PyTorch imported."""
    from PIL import Image, ImageOps

    env = hub_client_env(hub_server, tmp_path / "home", PYTHONPATH=str(ROOT / "src"))
    push = _cli("push", trained, "team/onnx", env=env)
    assert push.returncode == 0, push.stderr[-3000:]
    card = _cli_download(env, "team/onnx", "README.md")
    code = next(block for block in re.findall(r"```python\n(.*?)```", card, re.S) if "onnxruntime" in block)
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    ImageOps.invert(Image.open(image)).save(tmp_path / "xray.png")
    code += "\nimport sys\nassert 'torch' not in sys.modules and not any(m.startswith('fracture_detector') " \
            "for m in sys.modules)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # the snippet prints a dict of floats
    served = Predictor(trained).predict(tmp_path / "xray.png", check=False)
    assert served.inverted and printed == pytest.approx(served.probabilities, abs=1e-4)


def _cli_download(env: dict, repo_id: str, filename: str) -> str:
    code = ("import sys\nfrom huggingface_hub import hf_hub_download\n"
            "print(open(hf_hub_download(sys.argv[1], sys.argv[2])).read())")
    proc = subprocess.run([sys.executable, "-c", code, repo_id, filename], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout



def test_an_export_into_a_cache_that_cannot_be_written_is_one_clear_error(without_onnx, tmp_path, monkeypatch):
    """`--backend onnx` on a folder without model.onnx exports into the cache; when it cannot, it says so."""
    from fracture_detector import onnx_model

    (tmp_path / "file").write_text("")
    monkeypatch.setattr(onnx_model, "CACHE", tmp_path / "file" / "cache")
    with pytest.raises(ModelError, match=f"cannot export {without_onnx} to ONNX"):
        Predictor(without_onnx, backend="onnx")
    assert Predictor(without_onnx).backend == "torch"  # "auto": PyTorch where the folder has no model.onnx


def test_an_export_for_the_cache_holds_its_weights_and_gives_the_same_answers(without_onnx, tmp_path, monkeypatch):
    from fracture_detector import onnx_model

    monkeypatch.setattr(onnx_model, "CACHE", tmp_path / "cache")
    cached, plain = Predictor(without_onnx, backend="onnx"), Predictor(without_onnx, backend="torch")
    assert cached.backend == "onnxruntime" and cached.runtime.path.is_relative_to(tmp_path / "cache")
    assert cached.runtime.path.stat().st_size > (without_onnx / "model.safetensors").stat().st_size
    pixels = np.random.default_rng(0).integers(0, 256, (3, cached.image_size, cached.image_size), dtype=np.uint8)
    for a, b in zip(cached.predict_pixels(pixels, check=False), plain.predict_pixels(pixels, check=False)):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)


def test_model_onnx_beside_the_weights_reads_them_from_model_safetensors(trained):
    """One copy of the weights: the graph's initializers point into model.safetensors (fp16 there, cast once
    at load), so model.onnx adds little to the folder."""
    import onnx

    proto = onnx.load(str(trained / ONNX_FILE), load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert len(external) > 0.9 * sum(1 for name in _safetensors_names(trained) if "num_batches" not in name)
    assert {e.value for t in external for e in t.external_data if e.key == "location"} == {"model.safetensors"}
    assert (trained / ONNX_FILE).stat().st_size < 0.2 * (trained / "model.safetensors").stat().st_size


def _safetensors_names(folder) -> list[str]:
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", framework="numpy") as f:
        return list(f.keys())


def test_the_bundled_model_ships_its_onnx_graph_within_the_folder_budget():
    from fracture_detector.onnx_model import weights_digest

    assert Predictor().backend == "onnxruntime"
    metadata = Predictor().runtime.session.get_modelmeta().custom_metadata_map
    assert metadata["weights_sha256"] == weights_digest(BUNDLED_MODEL)  # exported from the weights it ships
    assert sum(f.stat().st_size for f in BUNDLED_MODEL.iterdir()) <= 10 * 10**6


def test_the_cache_keeps_exports_in_use_and_prunes_old_ones(tmp_path, monkeypatch):
    from fracture_detector import onnx_model

    monkeypatch.setattr(onnx_model, "CACHE", tmp_path)
    old = time.time() - 60 * 86400

    def entry(name: str, files=(ONNX_FILE,), mtime=old):
        (tmp_path / name).mkdir()
        for f in files:
            (tmp_path / name / f).write_bytes(b"onnx")
            os.utime(tmp_path / name / f, (mtime, mtime))
        return tmp_path / name

    used = entry(onnx_model.cached_export_path("a" * 64).parent.name)  # the export of the weights hashed "aaa..."
    assert onnx_model.cached_export("unused: nothing is exported", "a" * 64) == used / ONNX_FILE
    assert (used / ONNX_FILE).stat().st_mtime > old + 86400  # using an export marks it as used
    stale, kept = entry("b" * 16), entry("c" * 16)
    recent = entry("d" * 16, mtime=time.time())
    writing = entry("e" * 16, files=("x.onnx.tmp",))  # another process's export, not finished
    other = entry("not-an-export")
    assert onnx_model.prune_cache(keep=kept) == [stale]
    assert not stale.exists()
    assert all(p.exists() for p in (used, kept, recent, writing, other))


def test_heatmap_colours_are_matplotlibs_jet():
    from matplotlib import colormaps

    from fracture_detector.heatmap import JET

    reference = (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(int)
    assert JET.shape == (256, 3) and np.abs(JET.astype(int) - reference).max() <= 1  # rounding apart, the same
