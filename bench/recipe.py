"""Find the training recipe by measurement: named variants of `train.py`'s recipe, one run each, same split.

Every variant is trained by `fracture_detector.training.train` on the same sources with the
same seed (so the same leak-free split), and scored on each source's clean test split:
ROC-AUC with its group-bootstrap interval, the best sensitivity at specificity 0.80 and
0.90, specificity at the pooled threshold, the pooled ECE after temperature scaling, and
the run's wall time. Horizontal-flip test-time averaging is scored on every trained model
too (logits of the image and its mirror image averaged), with what it costs.

Runs take minutes each on 2 cores, so results accumulate: each invocation adds or replaces
the variants it ran in `bench/results/recipe.json`, and the table covers all of them.

    python bench/recipe.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        --variants regnetx-scratch effnet-imagenet [--image-size 160 --epochs 4]
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import add_out_argument, loadavg, md_table, write_results
from sklearn.metrics import roc_auc_score

from fracture_detector import data as data_lib
from fracture_detector.model import load_model, predict_logits
from fracture_detector.training import TrainConfig, prepare_data, train

EFFNET = {"arch": "tf_efficientnet_lite0", "pretrained_offline": True, "lr": 5e-4}
VARIANTS = {
    "regnetx-scratch": {"arch": "regnetx_002"},
    "effnet-imagenet": EFFNET,
    "effnet-imagenet-unbalanced": {**EFFNET, "balance_sources": False},
    "effnet-imagenet-lr1e-3": {**EFFNET, "lr": 1e-3},
    "effnet-imagenet-224px": {**EFFNET, "image_size": 224},
    "effnet-imagenet-more-epochs": {**EFFNET, "epochs_factor": 2},
    "effnet-imagenet-wide-aug": {**EFFNET, "augmentation": "wide"},
    "effnet-imagenet-equalized": {**EFFNET, "equalize": True},
}


@functools.cache
def clean_test(data: tuple[str, ...], image_size: int, equalize: bool) -> data_lib.Images:
    """The data decoded and split as `train` does (same seed): once per input size, shared by the variants."""
    cfg = TrainConfig(data=list(data), image_size=image_size, equalize=equalize)
    _, images, _ = prepare_data(cfg, None, log=lambda *_: None)
    return images


def flip_tta(model_dir: Path, cfg: TrainConfig) -> dict:
    """Clean-test ROC-AUC per source with and without flip averaging, and what the averaging costs."""
    model, config = load_model(model_dir)
    images = clean_test(tuple(cfg.data), cfg.image_size, cfg.equalize)
    test = images.split == "test"
    pixels = torch.from_numpy(images.pixels[test])
    start = time.perf_counter()
    plain = predict_logits(model, pixels)
    plain_s = time.perf_counter() - start
    start = time.perf_counter()
    averaged = (predict_logits(model, pixels) + predict_logits(model, pixels.flip(-1))) / 2
    tta_s = time.perf_counter() - start
    positive = images.label_names.index(config["positive_label"])
    out = {"cost": tta_s / plain_s}
    for source in np.unique(images.sources[test]):
        mine = images.sources[test] == source
        is_pos = images.labels[test][mine] == positive
        out[source] = {name: float(roc_auc_score(is_pos, torch.softmax(logits[mine], 1)[:, positive].numpy()))
                       for name, logits in (("plain", plain), ("flip_tta", averaged))}
    return out


def run_variant(name: str, data: list[str], image_size: int, epochs: int, bootstrap: int) -> dict:
    """Train one variant in a temporary folder; its metrics, wall time and flip-TTA scores."""
    options = dict(VARIANTS[name])
    epochs = epochs * options.pop("epochs_factor", 1)
    options.setdefault("image_size", image_size)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data=data, output_dir=str(Path(tmp) / name), epochs=epochs, bootstrap=bootstrap, **options)
        out_dir = train(cfg)
        metrics = json.loads((out_dir / "metrics.json").read_text())
        tta = flip_tta(out_dir, cfg)
    return {"options": {**options, "epochs": epochs}, "wall_seconds": metrics["wall_seconds"],
            "best_epoch": metrics["best_epoch"], "calibration": metrics["calibration"],
            "pooled_ece": metrics["results"]["clean_test"]["ece"],
            "by_source": {s: r["clean_test"] for s, r in metrics["by_source"].items()}, "flip_tta": tta}


def markdown(runs: dict) -> str:
    """One row per variant and source."""
    rows = []
    for name, run in runs.items():
        o = run["options"]
        for source, r in run["by_source"].items():
            lo, hi = r.get("roc_auc_ci95", (float("nan"),) * 2)
            tta = run["flip_tta"][source]
            rows.append([
                name, f"{o['arch']} {o['image_size']} px, {o['epochs']} ep, lr {o.get('lr', 1e-3):g}"
                + ("" if o.get("balance_sources", True) else ", unbalanced")
                + (f", {o['augmentation']} augmentation" if "augmentation" in o else "")
                + (", equalised" if o.get("equalize") else ""),
                source, f"{r['roc_auc']:.3f} [{lo:.2f}, {hi:.2f}]",
                f"{r['sensitivity_at_specificity_0.80']:.2f} / {r['sensitivity_at_specificity_0.90']:.2f}",
                f"{r['specificity']:.2f}", f"{run['pooled_ece']:.3f}",
                f"{tta['flip_tta']:.3f} ({run['flip_tta']['cost']:.1f}x time)",
                f"{run['wall_seconds'] / 60:.1f} min",
            ])
    header = ["variant", "recipe", "source", "clean-test ROC-AUC [95% CI]", "sens. at spec. 0.80 / 0.90",
              "spec. at threshold", "pooled ECE", "ROC-AUC with flip TTA", "wall time"]
    return ("One run per variant, same split (seed 0), 2 CPU cores; `python bench/recipe.py`.\n\n"
            + md_table(header, rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER sources, as for train.py")
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--bootstrap", type=int, default=200)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    out = Path(args.out)
    runs = json.loads(out.read_text())["results"]["runs"] if out.is_file() else {}
    for name in args.variants:
        runs[name] = run_variant(name, args.data, args.image_size, args.epochs, args.bootstrap)
        write_results(out, {"data": args.data, "runs": runs}, markdown(runs), before)  # keep what finished


if __name__ == "__main__":
    main()
