"""The committed default model: plain timm loads it, it gets the committed examples right, and its
recorded metrics are what it scores today."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED_DATA

from fracture_detector.resources import BUNDLED_MODEL as MODEL
from fracture_detector.resources import example_xrays

EXAMPLES = example_xrays()

PLAIN_TIMM = r"""
import json, sys
import numpy as np, timm, torch
from PIL import Image, ImageOps
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
cfg = json.load(open(sys.argv[1] + "/config.json"))
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
out = {}
for path in sys.argv[2:]:
    image = Image.open(path).convert("L")
    a, b = np.asarray(image), min(image.size) // 10 or 1  # as the model card says: inverted films turned back
    if np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()]).mean() > 128:
        image = ImageOps.invert(image)
    x = transform(image).unsqueeze(0)
    with torch.no_grad():
        p = torch.softmax(model(x) / cfg["temperature"], 1)[0]
    out[path] = p[cfg["label_names"].index(cfg["positive_label"])].item()
assert not any(m.startswith("fracture_detector") for m in sys.modules)
print(json.dumps(out))
"""


def _expected(path) -> bool:
    return not path.name.startswith("not_fractured")


@pytest.fixture(scope="module")
def plain_timm(tmp_path_factory) -> dict[str, float]:
    """P(positive) for each example, computed by plain timm in a process that never imports this package."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_TIMM, str(MODEL), *map(str, EXAMPLES)],
                          capture_output=True, text=True, cwd=tmp_path_factory.mktemp("plain"), env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bundled_folder_is_small_and_pickle_free():
    files = [p for p in MODEL.rglob("*") if p.is_file() and "checkpoints" not in p.parts]  # git-ignored
    assert sum(p.stat().st_size for p in files) <= 10 * 1024 * 1024
    assert {p.name for p in files} >= {"config.json", "model.safetensors", "README.md", "metrics.json"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]


def test_examples_exist_for_both_classes():
    assert any(_expected(p) for p in EXAMPLES) and any(not _expected(p) for p in EXAMPLES)


def test_plain_timm_gets_the_examples_right(plain_timm):
    threshold = json.loads((MODEL / "config.json").read_text())["threshold"]
    for path in EXAMPLES:
        assert (plain_timm[str(path)] >= threshold) == _expected(path), (path.name, plain_timm[str(path)])


def test_predictor_matches_plain_timm(plain_timm):
    """Our decoding and preprocessing give plain timm's probabilities, so the decisions agree too."""
    from fracture_detector.predict import Predictor

    predictor = Predictor(MODEL)
    positive = predictor.calibration.positive_label
    for path in EXAMPLES:
        ours = predictor.predict(path)
        assert abs(ours.probabilities[positive] - plain_timm[str(path)]) < 1e-5, path.name
        assert ours.fractured == (plain_timm[str(path)] >= predictor.threshold) == _expected(path), path.name


def test_bundled_metrics_are_the_ones_in_the_card():
    metrics = json.loads((MODEL / "metrics.json").read_text())
    card = (MODEL / "README.md").read_text()
    assert f"{metrics['results']['clean_test']['roc_auc']:.4f}" in card


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="real data not present at ../shared")
def test_bundled_model_rescored_on_its_clean_test_split(tmp_path):
    """Decode the clean test split recorded in the model's manifest with today's code, score it with
    today's model code, and get `metrics.json`'s numbers back, pooled and per source: nothing has
    drifted since training."""
    from fracture_detector.evaluate import evaluate
    from fracture_detector.model import predict_logits
    from fracture_detector.predict import Predictor
    from fracture_detector.preprocess import load_pixels
    from fracture_detector.stages import concat_stages, stage_statistics
    from fracture_detector.xray_check import NOT_AN_XRAY, UNFAMILIAR

    with gzip.open(MODEL / "split_manifest.csv.gz", "rt", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    first = {}  # the clean split holds each distinct content once
    for r in rows:
        first.setdefault(r["sha256"], r)
    rows = list(first.values())
    for r in rows:  # a manifest from before several sources were supported: the Kaggle data alone
        r.setdefault("source", "fracture-multi-region")
    roots = {}
    for source in {r["source"] for r in rows}:  # each source is a folder of ../shared/datasets of that name
        roots[source] = tmp_path / source
        subprocess.run([sys.executable, str(SHARED_DATA.parent / source / "unpack.py"), str(roots[source])],
                       check=True, capture_output=True)
    predictor = Predictor(MODEL)
    pixels = np.stack([load_pixels(roots[r["source"]] / r["path"], predictor.image_size) for r in rows])
    labels = np.array([predictor.label_names.index(r["label"]) for r in rows])
    sources = np.array([r["source"] for r in rows])
    with stage_statistics(predictor.model) as captured:
        logits = predict_logits(predictor.model, pixels).numpy()
    verdicts = predictor.feature_check.verdicts(concat_stages(captured))
    metrics = json.loads((MODEL / "metrics.json").read_text())
    recorded = {None: metrics["results"]["clean_test"]}
    recorded |= {name: r["clean_test"] for name, r in metrics.get("by_source", {}).items()}
    for source, expected in recorded.items():
        mine = np.ones(len(rows), bool) if source is None else sources == source
        now = evaluate(logits[mine], labels[mine], predictor.label_names, predictor.calibration,
                       groups=np.array([int(r["group"]) for r in rows])[mine], bootstrap=0)
        assert now["images"] == expected["images"] and now["groups"] == expected["groups"], source
        for key in ("roc_auc", "accuracy_at_threshold", "accuracy_argmax", "sensitivity", "specificity"):
            assert abs(now[key] - expected[key]) < 1e-4, (source, key, now[key], expected[key])
    for source, splits in metrics["xray_check"]["by_source"].items():  # and the X-ray check's counts
        mine = verdicts[sources == source]
        assert (mine == NOT_AN_XRAY).sum() == splits["test"]["refused"], source
        assert (mine == UNFAMILIAR).sum() == splits["test"]["unfamiliar"], source
