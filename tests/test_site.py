"""`fracture-detector calibrate`: a site's own labelled X-rays choose the threshold of a copy of the model."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_imagefolder

from fracture_detector.predict import Predictor
from fracture_detector.resources import BUNDLED_MODEL
from fracture_detector.site import CARD_HEADING, MIN_PER_LABEL


def calibrate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fracture_detector", "calibrate", *args]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A site's labelled X-rays: FOLDER/fractured, FOLDER/not fractured (synthetic, 24 each)."""
    return make_imagefolder(tmp_path_factory.mktemp("site"), {"xrays": MIN_PER_LABEL + 4}, seed=7) / "xrays"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibrate_writes_a_copy_whose_threshold_reaches_the_target_on_the_sites_xrays(site, tmp_path):
    out = tmp_path / "site-model"
    proc = subprocess.run(calibrate_cmd(str(site), "--output-dir", str(out), "--target-sensitivity", "0.8"),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "site threshold" in proc.stdout and f"wrote {out}" in proc.stdout

    shipped, config = Predictor(BUNDLED_MODEL), json.loads((out / "config.json").read_text())
    record = config["site_calibration"]
    assert config["target_sensitivity"] == 0.8 and config["per_source"] is False
    assert config["threshold"] == record["threshold"] != shipped.threshold
    assert record["images"] == 2 * (MIN_PER_LABEL + 4) and record["shipped_threshold"] == shipped.threshold

    # The copy serves with the new threshold, and on the site's X-rays it reaches the target (the highest that does).
    copy = Predictor(out)
    files = sorted((site / "fractured").iterdir())
    prob = np.array([r.prediction.probabilities["fractured"] for r in copy.predict_files(files, check=False)])
    assert copy.threshold == record["threshold"]
    assert (prob >= copy.threshold).mean() >= 0.8 > (prob > copy.threshold).mean()
    assert record["at_site_threshold"]["sensitivity"] == pytest.approx((prob >= copy.threshold).mean())

    # Everything else is the shipped model, byte for byte; the card says what changed.
    for f in BUNDLED_MODEL.iterdir():
        if f.is_file() and f.name not in ("config.json", "README.md"):
            assert digest(out / f.name) == digest(f), f.name
    for key in ("architecture", "pretrained_cfg", "label_names", "temperature", "positive_label"):
        assert config[key] == json.loads((BUNDLED_MODEL / "config.json").read_text())[key]
    card = (out / "README.md").read_text()
    assert card.startswith((BUNDLED_MODEL / "README.md").read_text().rstrip("\n"))
    assert CARD_HEADING in card and f"{record['threshold']:.4f}" in card


def test_calibrate_refuses_an_existing_folder_and_too_few_xrays_writing_nothing(site, tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    proc = subprocess.run(calibrate_cmd(str(site), "--output-dir", str(existing)), capture_output=True, text=True)
    assert proc.returncode == 1 and "already exists" in proc.stderr and not any(existing.iterdir())

    few = make_imagefolder(tmp_path / "few", {"xrays": MIN_PER_LABEL - 1}) / "xrays"
    out = tmp_path / "never"
    proc = subprocess.run(calibrate_cmd(str(few), "--output-dir", str(out)), capture_output=True, text=True)
    assert proc.returncode == 1 and f"at least {MIN_PER_LABEL} of each" in proc.stderr
    assert not out.exists() and not (tmp_path / "never.partial").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(calibrate_cmd(str(empty), "--output-dir", str(out)), capture_output=True, text=True)
    assert proc.returncode == 1 and "a folder per label" in proc.stderr


@pytest.mark.parametrize("value", ["0", "1.5", "high"])
def test_calibrate_target_outside_zero_to_one_is_a_usage_error(site, tmp_path, value):
    proc = subprocess.run(calibrate_cmd(str(site), "--output-dir", str(tmp_path / "x"), "--target-sensitivity",
                                        value), capture_output=True, text=True)
    assert proc.returncode == 2 and "--target-sensitivity" in proc.stderr
