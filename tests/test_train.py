"""End-to-end training on tiny synthetic data: output format, plain-timm loading, resume, accelerate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TEST_ARCH, make_xray, train_cmd
from PIL import Image
from safetensors.torch import load_file

from fracture_detector.resources import BUNDLED_MODEL
from fracture_detector.training import TrainConfig, validation_scores

pytestmark = pytest.mark.slow

PLAIN_TIMM_LOAD = r"""
import json, sys
import timm, torch
from PIL import Image
model = timm.create_model("local-dir:" + sys.argv[1], pretrained=True).eval()
cfg = timm.data.resolve_data_config(model=model)
transform = timm.data.create_transform(**cfg)
x = transform(Image.open(sys.argv[2]).convert("L")).unsqueeze(0)
with torch.no_grad():
    logits = model(x)
assert not any(m.startswith("fracture_detector") for m in sys.modules), "package was imported"
print(json.dumps({"shape": list(x.shape), "input": x[0].flatten().tolist(), "logits": logits[0].tolist(),
                  "labels": model.pretrained_cfg["label_names"]}))
"""


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def test_train_py_defaults_are_the_bundled_models_recipe():
    """`python train.py --data ...` trains as the bundled model was trained: every knob but where the data and the
    output go, and whether it writes model.onnx (the bundled model's was exported afterwards), is its default."""
    shipped = json.loads((BUNDLED_MODEL / "train_config.json").read_text())
    defaults = TrainConfig(data=["unused"]).__dict__
    differ = {k: (defaults[k], v) for k, v in shipped.items() if k not in ("data", "output_dir", "onnx")
              and defaults[k] != v}
    assert not differ, f"train.py defaults (first) differ from the bundled model's recipe (second): {differ}"


def test_validation_scores_do_not_reward_scoring_a_whole_source_higher():
    # Source a: fractured 0.9, normal 0.5; source b: fractured 0.3, normal 0.1. Each source ranks its X-rays
    # perfectly, but b's fractures sit below a's normal X-rays, so the pooled ROC-AUC does not.
    prob = np.array([0.9, 0.9, 0.5, 0.5, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1])
    labels = np.array([0, 0, 1, 1, 0, 0, 1, 1, 1, 1])  # 0: fractured
    sources = np.array(["a"] * 4 + ["b"] * 6)
    logits = np.stack([np.log(prob), np.log1p(-prob)], axis=1)  # softmax gives back prob for class 0
    scores = validation_scores(logits, labels, sources, positive=0, target_sensitivity=0.9)
    assert scores["val_roc_auc_by_source"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}
    assert scores["val_roc_auc_source_mean"] == pytest.approx(1.0)
    assert scores["val_roc_auc"] == pytest.approx(20 / 24)  # a's 2 normal X-rays outrank b's 2 fractured ones
    # The threshold that keeps b's fractures (0.3) calls every normal X-ray of a fractured.
    assert scores["val_lowest_source_specificity"] == 0.0


def test_output_folder_is_timm_hub_format(trained):
    names = {p.name for p in trained.iterdir()}
    for name in ("config.json", "model.safetensors", "README.md", "metrics.json", "data_report.json",
                 "split_manifest.csv.gz", "confusion_matrix.png", "roc_curve.png"):
        assert name in names, name
    assert not list(trained.glob("*.bin")) and not list(trained.glob("*.pth"))  # no pickles
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["architecture"] == TEST_ARCH[1] and cfg["num_classes"] == 2
    assert cfg["label_names"] == ["fractured", "not fractured"]
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [1, 64, 64] and pre["mean"] == [0.24] and pre["crop_mode"] == "squash"
    assert 0 < cfg["temperature"] and 0 <= cfg["threshold"] <= 1
    assert cfg["positive_label"] == "fractured" and cfg["target_sensitivity"] == TrainConfig.target_sensitivity
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["wall_seconds"] > 0
    assert metrics["calibration"] == {k: cfg[k] for k in ("temperature", "threshold", "positive_label",
                                                           "target_sensitivity", "per_source")}
    assert [set(h) for h in metrics["history"]] == [{"epoch", "train_loss_ema", "val_roc_auc",
                                                     "val_roc_auc_source_mean", "val_roc_auc_by_source",
                                                     "val_lowest_source_specificity", "val_accuracy_argmax",
                                                     "seconds"}] * 2
    for split in ("clean_test", "validation", "shipped_test"):
        r = metrics["results"][split]
        for key in ("accuracy_at_threshold", "accuracy_argmax", "roc_auc", "pr_auc", "roc_auc_ci95", "sensitivity",
                    "specificity", "ece", "ece_uncalibrated", "confusion_matrix", "classification_report"):
            assert key in r, (split, key)
    card = (trained / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: timm" in card and "model-index" in card
    assert f"{metrics['results']['clean_test']['roc_auc']:.4f}" in card


def test_plain_timm_loads_the_folder(trained, tiny_folder, tmp_path):
    image = next((tiny_folder / "test" / "fractured").glob("*.png"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = _run([sys.executable, "-c", PLAIN_TIMM_LOAD, str(trained), str(image)], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [1, 1, 64, 64] and out["labels"] == ["fractured", "not fractured"]

    # The same input tensor as this package's own decoding and preprocessing of the same file,
    # and so the same logits.
    from fracture_detector.model import load_model, model_inputs, predict_logits
    from fracture_detector.preprocess import load_pixels

    model, _ = load_model(trained)
    pixels = load_pixels(image, 64)[None]
    ours = model_inputs(model, pixels).flatten()
    assert torch.allclose(ours, torch.tensor(out["input"]), atol=1e-6, rtol=0)
    assert torch.allclose(predict_logits(model, pixels)[0], torch.tensor(out["logits"]), atol=1e-4)


def test_eval_only_rescores_a_folder(trained, tiny_folder, tmp_path):
    out = tmp_path / "scores.json"
    proc = _run([sys.executable, str(ROOT / "train.py"), "--eval-only", str(trained), "--data", str(tiny_folder),
                 "--bootstrap", "20", "--metrics-out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert results["all"]["images"] == 40 and set(results) == {"train", "val", "test", "all"}
    assert set(results["all"]["xray_check"]) == {"refused", "unfamiliar"}  # the model's X-ray check, per split


def test_refuses_to_overwrite_a_run_without_resume(trained, tiny_folder):
    proc = _run(train_cmd(tiny_folder, trained, "--epochs", "2"))
    assert proc.returncode != 0 and "--resume" in proc.stderr


@pytest.mark.parametrize("ema", [[], ["--ema-decay", "0.99"]], ids=["raw-weights", "weight-average"])
def test_resume_after_kill_matches_uninterrupted_run(tiny_folder, tmp_path, ema):
    epochs = ["--epochs", "4", *ema]
    full = tmp_path / "full"
    assert _run(train_cmd(tiny_folder, full, *epochs)).returncode == 0

    cut = tmp_path / "cut"
    proc = subprocess.Popen(train_cmd(tiny_folder, cut, *epochs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    latest = cut / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and not (latest.exists() and latest.read_text().strip() >= "epoch-0001"):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-epoch or mid-write
    proc.wait()
    assert latest.exists(), "no checkpoint was written before the kill"
    assert not (cut / "model.safetensors").exists(), "the run finished before it could be killed"

    resumed = _run(train_cmd(tiny_folder, cut, *epochs, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch" in resumed.stdout
    history = json.loads((cut / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    a, b = load_file(full / "model.safetensors"), load_file(cut / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if ema:  # it ships the average, scored beside the raw weights each epoch
        assert all("val_roc_auc_raw_weights" in h for h in history)
        last = cut / "checkpoints" / (cut / "checkpoints" / "latest").read_text().strip()
        raw = load_file(last / "model.safetensors")
        assert any(not torch.equal(a[k], raw[k].to(a[k].dtype)) for k in a if a[k].is_floating_point())


def test_resume_with_a_weight_average_the_run_did_not_keep_is_one_clear_error(trained, tiny_folder, tmp_path):
    import shutil

    run = shutil.copytree(trained, tmp_path / "run")  # trained without --ema-decay
    proc = _run(train_cmd(tiny_folder, run, "--epochs", "2", "--resume", "--ema-decay", "0.99"))
    assert proc.returncode != 0 and "without --ema-decay" in proc.stderr and "Traceback" not in proc.stderr


def test_accelerate_launch_two_cpu_processes(tiny_folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           *train_cmd(tiny_folder, out, "--epochs", "1")[1:]]
    proc = _run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").exists() and (out / "metrics.json").exists()


def test_card_can_be_rerendered_for_a_repo_id(trained, tmp_path):
    import shutil

    from fracture_detector.card import rewrite_model_card

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    rewrite_model_card(copy, repo_id="someone/xray-model")
    card = (copy / "README.md").read_text()
    assert 'timm.create_model("hf-hub:someone/xray-model"' in card and "- name: xray-model" in card


@pytest.mark.parametrize("data", ["/no/such/folder", "./missing"])
def test_missing_data_gives_one_clear_error(data, tmp_path):
    proc = _run([sys.executable, str(ROOT / "train.py"), "--data", data, "--output-dir", str(tmp_path / "o")])
    assert proc.returncode != 0
    assert "error:" in proc.stderr and "not a folder" in proc.stderr and "Traceback" not in proc.stderr


def test_folder_without_fractured_class_is_refused(tmp_path):
    for label in ("cats", "dogs"):
        (tmp_path / "d" / "train" / label).mkdir(parents=True)
        make_xray(1).save(tmp_path / "d" / "train" / label / "a.png")
    proc = _run([sys.executable, str(ROOT / "train.py"), "--data", str(tmp_path / "d"), "--output-dir",
                 str(tmp_path / "o")])
    assert proc.returncode != 0 and "'fractured'" in proc.stderr and "Traceback" not in proc.stderr


def make_planted_folder(root: Path, per_split: dict[str, int], size: int = 32, seed: int = 0) -> Path:
    """Noise images; every 'fractured' one has a bright disc somewhere near the centre: a signal any
    working training loop finds in a few epochs, whatever the augmentation does to it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, n in per_split.items():
        for label in ("fractured", "not fractured"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.normal(60, 25, (size, size))
                if label == "fractured":
                    cx, cy = rng.uniform(0.35 * size, 0.65 * size, 2)
                    radius = rng.uniform(0.15, 0.25) * size
                    img[(xx - cx) ** 2 + (yy - cy) ** 2 < radius**2] += 150
                Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_training_learns_a_planted_signal(tmp_path):
    """The whole recipe (split, augmentation, schedule, best epoch, calibration) must learn an easy signal."""
    data = make_planted_folder(tmp_path / "planted", {"train": 80, "val": 20, "test": 20})
    out = tmp_path / "model"
    proc = _run([sys.executable, str(ROOT / "train.py"), "--data", str(data), "--output-dir", str(out), *TEST_ARCH,
                 "--image-size", "32", "--batch-size", "32", "--epochs", "5", "--lr", "3e-3",
                 "--warmup-epochs", "0.5", "--bootstrap", "0"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean = json.loads((out / "metrics.json").read_text())["results"]["clean_test"]
    assert clean["groups"] >= 30 and clean["roc_auc"] > 0.9, clean


def test_card_of_a_folder_from_another_version_is_a_clear_error(trained, tmp_path):
    """A folder whose metrics.json has another shape (here: an older key name) gives one ModelError, and a
    push of it stops before talking to any Hub."""
    import shutil

    from fracture_detector.card import render_model_card
    from fracture_detector.hub import push
    from fracture_detector.model import ModelError

    old = tmp_path / "old"
    shutil.copytree(trained, old)
    metrics = json.loads((old / "metrics.json").read_text())
    for result in metrics["results"].values():
        result["accuracy"] = result.pop("accuracy_at_threshold")
    (old / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ModelError, match="cannot render its model card .*accuracy_at_threshold"):
        render_model_card(old)
    with pytest.raises(ModelError, match="cannot render its model card"):
        push(old, "team/never-pushed")  # HF_ENDPOINT is not set up here: an attempt to talk would fail otherwise


def test_two_sources_are_trained_on_and_scored_per_source(tiny_folder, tmp_path):
    from conftest import make_imagefolder

    other = make_imagefolder(tmp_path / "other", {"train": 12, "val": 4, "test": 4}, seed=7)
    out = tmp_path / "model"
    proc = _run(train_cmd([f"fracture-multi-region={tiny_folder}", f"elsewhere={other}"], out, "--epochs", "1",
                          "--equalize"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["equalize"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_source"]) == {"fracture-multi-region", "elsewhere"}
    for source, results in metrics["by_source"].items():
        assert results["clean_test"]["images"] > 0 and "roc_auc" in results["clean_test"], source
    target = metrics["calibration"]["target_sensitivity"]
    assert metrics["calibration"]["per_source"] is True
    for source, results in metrics["by_source"].items():  # the threshold holds on every source's validation split
        assert results["validation"]["sensitivity"] >= target, source
    pooled = metrics["results"]["clean_test"]["images"]
    assert pooled == sum(r["clean_test"]["images"] for r in metrics["by_source"].values())
    report = json.loads((out / "data_report.json").read_text())
    assert set(report["sources"]) == {"fracture-multi-region", "elsewhere"}
    card = (out / "README.md").read_text()
    assert "| elsewhere |" in card and "| fracture-multi-region |" in card  # the per-source table
    assert "type: elsewhere" in card and "type: fracture-multi-region" in card  # one model-index entry each
    assert "ODC-By 1.0" in card and "a source this project does not know" in card
    assert "image = ImageOps.equalize(image.resize((64, 64), Image.BILINEAR))" in card  # what plain timm users do

    scores = tmp_path / "scores.json"
    proc = _run([sys.executable, str(ROOT / "train.py"), "--eval-only", str(out), "--data", f"one={tiny_folder}",
                 f"two={other}", "--bootstrap", "20", "--metrics-out", str(scores)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(scores.read_text())
    assert set(result["by_source"]) == {"one", "two"} and result["results"]["all"]["images"] == 80


def test_the_threshold_reaches_the_target_sensitivity_on_every_source():
    from fracture_detector.calibration import threshold_for_every_source

    rng = np.random.default_rng(0)
    sources = np.array(["large"] * 400 + ["small"] * 100)  # the small source scores lower: pooled, it would lose
    is_pos = rng.random(500) < 0.3
    prob = np.clip(np.where(is_pos, 0.5, 0.2) + rng.normal(0, 0.15, 500) - np.where(sources == "small", 0.15, 0), 0, 1)
    threshold = threshold_for_every_source(prob, is_pos, sources, 0.9)

    def sensitivities(t):
        return [(prob[(sources == name) & is_pos] >= t).mean() for name in ("large", "small")]

    assert min(sensitivities(threshold)) >= 0.9
    higher = prob[prob > threshold].min()  # the next threshold up loses a source
    assert min(sensitivities(higher)) < 0.9


def test_the_threshold_still_holds_when_evaluation_applies_it_to_the_calibrated_probabilities():
    # Training picks the threshold from positive_probability, evaluate() applies it to Calibration's
    # probabilities: the threshold is one positive's score, so the two must agree to the last bit.
    from fracture_detector.calibration import Calibration, threshold_for_every_source
    from fracture_detector.evaluate import evaluate, positive_probability

    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(size=(400, 2)).astype(np.float32)
        labels = (rng.random(400) < 0.4).astype(int)  # 0: fractured, as in ["fractured", "not fractured"]
        sources = rng.integers(0, 3, 400).astype(str)
        temperature = 1.0715
        threshold = threshold_for_every_source(positive_probability(logits, 0, temperature), labels == 0, sources, 0.9)
        calibration = Calibration(temperature, threshold, "fractured", 0.9, per_source=True)
        for name in np.unique(sources):
            m = sources == name
            result = evaluate(logits[m], labels[m], ["fractured", "not fractured"], calibration, bootstrap=0)
            assert result["sensitivity"] >= 0.9


def test_a_temperature_is_applied_only_where_it_lowers_the_validation_ece_beyond_its_noise():
    from fracture_detector.evaluate import temperature_that_helps

    rng = np.random.default_rng(0)
    score = rng.normal(0, 2, 2000)
    labels = (rng.random(2000) >= 1 / (1 + np.exp(-score))).astype(int)  # class 0 with probability sigmoid(score)
    calibrated = np.stack([score / 2, -score / 2], 1)  # softmax gives class 0 exactly sigmoid(score)
    groups = np.arange(2000)

    temperature, choice = temperature_that_helps(calibrated, labels, 0, groups, n=200)
    assert temperature == 1.0 and not choice["kept"]
    assert choice["ece_drop_ci95"][0] <= 0 and choice["fitted"] == pytest.approx(1.0, abs=0.15)

    temperature, choice = temperature_that_helps(4 * calibrated, labels, 0, groups, n=200)  # overconfident
    assert choice["kept"] and temperature == choice["fitted"] == pytest.approx(4.0, rel=0.15)
    assert choice["validation_ece_at_fitted"] < choice["validation_ece_at_1"]


def test_balance_labels_draws_each_label_equally_often_within_each_source():
    from fracture_detector.training import _epoch_indices

    sources = np.array(["large"] * 900 + ["small"] * 100)
    labels = np.r_[np.zeros(150, int), np.ones(750, int), np.zeros(50, int), np.ones(50, int)]  # large: 5 in 6
    groups = np.arange(1000)

    def shares(by_label):
        drawn = _epoch_indices(groups, sources, 40_000, 0, 0, by_label)
        return [(sources[drawn] == s).mean() for s in ("large", "small")], [
            labels[drawn][sources[drawn] == s].mean() for s in ("large", "small")]

    source_share, label_share = shares(None)
    assert source_share == pytest.approx([0.5, 0.5], abs=0.02) and label_share[0] == pytest.approx(5 / 6, abs=0.02)
    source_share, label_share = shares(labels)
    assert source_share == pytest.approx([0.5, 0.5], abs=0.02) and label_share == pytest.approx([0.5, 0.5], abs=0.02)
