"""The committed default model: plain timm loads it, and it gets the committed examples right."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

MODEL = ROOT / "models" / "default"
EXAMPLES = sorted((ROOT / "examples").glob("*.jpg"))

PLAIN_TIMM = r"""
import json, sys
import timm, torch
from PIL import Image
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
cfg = json.load(open(sys.argv[1] + "/config.json"))
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
out = {}
for path in sys.argv[2:]:
    x = transform(Image.open(path).convert("L")).unsqueeze(0)
    with torch.no_grad():
        p = torch.softmax(model(x) / cfg["temperature"], 1)[0]
    out[path] = p[cfg["label_names"].index("fractured")].item()
assert not any(m.startswith("fracture_detector") for m in sys.modules)
print(json.dumps(out))
"""


def _expected(path) -> bool:
    return not path.name.startswith("not_fractured")


def test_bundled_folder_is_small_and_pickle_free():
    files = [p for p in MODEL.rglob("*") if p.is_file() and "checkpoints" not in p.parts]  # git-ignored
    assert sum(p.stat().st_size for p in files) <= 10 * 1024 * 1024
    assert {p.name for p in files} >= {"config.json", "model.safetensors", "README.md", "metrics.json"}
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]


def test_examples_exist_for_both_classes():
    assert any(_expected(p) for p in EXAMPLES) and any(not _expected(p) for p in EXAMPLES)


def test_plain_timm_gets_the_examples_right(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_TIMM, str(MODEL), *map(str, EXAMPLES)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    prob = json.loads(proc.stdout.strip().splitlines()[-1])
    threshold = json.loads((MODEL / "config.json").read_text())["threshold"]
    for path in EXAMPLES:
        assert (prob[str(path)] >= threshold) == _expected(path), (path.name, prob[str(path)])


def test_predictor_matches_plain_timm_decisions():
    from fracture_detector.predict import Predictor

    predictor = Predictor(MODEL)
    for path in EXAMPLES:
        assert predictor.predict(path).fractured == _expected(path), path.name


@pytest.mark.skipif(not MODEL.joinpath("metrics.json").exists(), reason="no bundled model")
def test_bundled_metrics_are_the_ones_in_the_card():
    metrics = json.loads((MODEL / "metrics.json").read_text())
    card = (MODEL / "README.md").read_text()
    assert f"{metrics['results']['clean_test']['roc_auc']:.4f}" in card
