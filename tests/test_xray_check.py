"""The input check: the learned feature statistics, inverted radiographs, and one sentence per refusal."""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import train_cmd
from corpus import make_dicom, real_xray, xray12
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from fracture_detector.predict import NotAnXrayError, Predictor, read_xray
from fracture_detector.xray_check import NOT_AN_XRAY, STATS_FILE, THRESHOLD_TOLERANCE, FeatureCheck


def non_xrays() -> dict[str, Image.Image]:
    """Synthetic images that are plainly not radiographs, but neither colour nor blank."""
    rng = np.random.default_rng(0)
    document = Image.new("L", (300, 400), 255)
    for y in range(20, 380, 14):
        ImageDraw.Draw(document).text((20, y), "Patient report: no acute findings. " * 2, fill=0)
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (256, 1))
    y, x = np.mgrid[:256, :256] / 256
    checker = ((np.floor(x * 8) + np.floor(y * 8)) % 2 * 200 + 30).astype(np.uint8)
    noise = Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
    dark_page = ImageOps.invert(document)
    return {"document": document, "gradient": Image.fromarray(ramp.astype(np.uint8)),
            "checkerboard": Image.fromarray(checker), "blurred noise": ImageOps.autocontrast(noise),
            "dark-mode page": dark_page}


def test_feature_check_refuses_far_rows_keeps_validation_rows_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [6, 10]  # two "stages"
    train = rng.standard_normal((600, 16), dtype=np.float32)
    validation = {"a": rng.standard_normal((200, 16), dtype=np.float32),
                  "b": 1.1 * rng.standard_normal((100, 16), dtype=np.float32)}
    check = FeatureCheck.fit(train, validation, sizes)
    for rows in validation.values():
        assert (check.distance(rows) > check.refuse_above).sum() == 0
        assert (check.distance(rows) > check.unfamiliar_above).mean() <= 0.06
    far = 3 + 4 * rng.standard_normal((20, 16), dtype=np.float32)
    assert [check.verdict(d) for d in check.distance(far).tolist()] == [NOT_AN_XRAY] * 20

    check.save(tmp_path / STATS_FILE)
    loaded = FeatureCheck.load(tmp_path / STATS_FILE)
    rows = np.concatenate([far, validation["a"]])
    assert np.allclose(loaded.distance(rows), check.distance(rows))
    assert (loaded.unfamiliar_above, loaded.refuse_above, loaded.sizes) == (check.unfamiliar_above,
                                                                          check.refuse_above, sizes)


def test_a_model_trained_under_bf16_autocast_is_checked_as_it_is_served(tiny_folder, tmp_path):
    """Calibration, metrics and the X-ray check come from the fp32 model that ships, not from the bf16
    autocast that trained it (the default on CPUs with AMX): served, the validation X-ray that sets the
    refusal threshold scores on it."""
    out = tmp_path / "model"
    proc = subprocess.run(train_cmd(tiny_folder, out, "--epochs", "1", "--precision", "bf16", "--no-onnx"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictor = Predictor(out, backend="torch")
    with gzip.open(out / "split_manifest.csv.gz", "rt") as f:
        val = [tiny_folder / row["path"] for row in csv.DictReader(f) if row["split"] == "val"]
    grids = np.stack([read_xray(path, predictor.image_size).pixels for path in val])
    _, _, stats = predictor.forward(predictor.model_grids(grids))
    served = predictor.feature_check.distance(stats).max().item()
    assert served == pytest.approx(predictor.feature_check.refuse_above, rel=THRESHOLD_TOLERANCE)


def test_tiny_model_accepts_its_validation_xrays_and_refuses_synthetic_non_xrays(trained, tiny_folder, tmp_path):
    predictor = Predictor(trained)
    assert predictor.feature_check is not None
    with gzip.open(trained / "split_manifest.csv.gz", "rt") as f:
        val = [tiny_folder / row["path"] for row in csv.DictReader(f) if row["split"] == "val"]
    assert val
    for r in predictor.predict_files(val):
        assert r.error is None and r.prediction.probabilities, (r.source, r.error)

    paths = []
    for name, image in non_xrays().items():
        paths.append(tmp_path / f"{name}.png")
        image.save(paths[-1])
    for r in predictor.predict_files(paths):
        assert r.prediction.probabilities is None and r.prediction.check == NOT_AN_XRAY, r.source
        assert r.error.startswith("this does not look like an X-ray (its features are far"), r.source

    # Grad-CAM's pass gives the check the same features as the plain pass, row for row.
    grids = np.stack([read_xray(path, predictor.image_size).pixels for path in [*val, *paths]])
    plain = predictor.predict_pixels(grids)
    with_maps, _ = predictor.predict_with_heatmaps(grids)
    assert [p.distance for p in with_maps] == pytest.approx([p.distance for p in plain], rel=1e-4)


def test_every_refusal_is_one_sentence_in_the_api(trained, tmp_path):
    predictor = Predictor(trained)
    non_xrays()["document"].save(tmp_path / "document.png")
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "red.png")
    with pytest.raises(NotAnXrayError, match=r"document.png: this does not look like an X-ray \(its features are far "
                                             r"from those of every X-ray the model was trained on\)$"):
        predictor.predict(tmp_path / "document.png")
    with pytest.raises(NotAnXrayError, match=r"this does not look like an X-ray \(it is a colour image\)$"):
        predictor.predict(tmp_path / "red.png")
    unchecked = predictor.predict(tmp_path / "document.png", check=False)  # asked for: a probability, and the finding
    assert unchecked.probabilities and unchecked.check == NOT_AN_XRAY
    assert unchecked.warning.startswith("This does not look like an X-ray")


def test_statistics_travel_through_the_test_hub(hub_server, trained, tiny_folder, tmp_path):
    from conftest import ROOT, hub_client_env

    env = hub_client_env(hub_server, tmp_path / "home", PYTHONPATH=str(ROOT / "src"))
    push = subprocess.run([sys.executable, "-m", "fracture_detector", "push", str(trained), "team/with-check"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert push.returncode == 0, push.stderr[-3000:]
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    code = ("import json, sys, fracture_detector\np = fracture_detector.load(sys.argv[1])\n"
            "r = p.predict(sys.argv[2], check=False)\n"
            "print(json.dumps({'dir': str(p.model_dir), 'distance': r.distance, 'check': r.check}))")
    proc = subprocess.run([sys.executable, "-c", code, "hf-hub:team/with-check", str(image)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    remote = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(tmp_path / "home") in remote["dir"]  # downloaded into the Hugging Face cache
    local = Predictor(trained).predict(image, check=False)
    assert remote["distance"] == pytest.approx(local.distance, rel=1e-6) and remote["check"] == local.check


def test_inverted_radiograph_is_turned_back_and_scored_as_the_original(tmp_path):
    predictor = Predictor()  # the bundled model
    for name in ("fractured_roboflow_1.jpg", "not_fractured_fracatlas_1.jpg"):
        real_xray(name).save(tmp_path / "original.png")
        ImageOps.invert(real_xray(name)).save(tmp_path / "inverted.png")
        original, inverted = predictor.predict(tmp_path / "original.png"), predictor.predict(tmp_path / "inverted.png")
        assert not original.inverted and inverted.inverted, name
        assert inverted.probabilities == pytest.approx(original.probabilities, abs=1e-6)
        assert "inverted back before scoring" in inverted.warning

    # DICOM MONOCHROME1 (0 is white) is read upright by its header, so nothing is turned back.
    mono2 = predictor.predict(make_dicom(tmp_path / "m2.dcm", xray12("fractured_kaggle_1.jpg")))
    mono1 = predictor.predict(make_dicom(tmp_path / "m1.dcm", 4095 - xray12("fractured_kaggle_1.jpg"),
                                         photometric="MONOCHROME1"))
    # (The two decodings differ by one gray level of rounding here and there, which moves the score a little.)
    assert not mono1.inverted and mono1.probabilities == pytest.approx(mono2.probabilities, abs=0.03)


def test_the_card_snippet_gives_the_predictors_probabilities(trained, tiny_folder, tmp_path):
    """The model card's plain-timm code, run as a user would (without this package), on an inverted X-ray."""
    import os

    code = re.search(r"```python\n(.*?)```", (trained / "README.md").read_text(), re.S).group(1)
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    ImageOps.invert(Image.open(image)).save(tmp_path / "xray.png")
    code = re.sub(r'"hf-hub:[^"]+"', repr(f"local-dir:{trained}"), code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = ast.literal_eval(proc.stdout.strip().splitlines()[-1])  # the snippet prints a dict of floats
    served = Predictor(trained).predict(tmp_path / "xray.png", check=False)
    assert served.inverted and printed == pytest.approx(served.probabilities, abs=1e-4)
