"""Does metal drive the score? FracAtlas clean-test ROC-AUC with and without the X-rays that show hardware.

In FracAtlas, plates, screws and nails are in 42 of the 337 fractured X-rays and in 2 of the
1,819 others (its `metadata.csv`, column `hardware`): a model can learn "metal means
fracture". This scores the bundled model (or `--model`) on the FracAtlas part of its clean
test split (its `split_manifest.csv.gz`), by the CLI's path (`site.positive_probabilities`:
`Predictor.predict_files`, the X-ray check off so that every file gets a probability), once
on every X-ray and once without those with hardware; intervals from a bootstrap over copy
groups.

    python bench/hardware_shortcut.py --data /tmp/fra [--metadata ../shared/datasets/fracatlas/metadata.csv]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from common import add_out_argument, clean_test_rows, loadavg, md_table, write_results
from sklearn.metrics import roc_auc_score

from fracture_detector.evaluate import bootstrap_ci
from fracture_detector.predict import Predictor
from fracture_detector.resources import BUNDLED_MODEL
from fracture_detector.site import positive_probabilities

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "fracatlas"


def clean_test_files(model_dir: Path, data: Path) -> list[dict]:
    """The FracAtlas rows of the model's clean test split, one per distinct image, with their files under `data`."""
    return [{**row, "file": data / row["path"]} for row in clean_test_rows(model_dir, {SOURCE})]


def score(mask: np.ndarray, prob: np.ndarray, is_pos: np.ndarray, groups: np.ndarray) -> dict:
    lo, hi = bootstrap_ci(roc_auc_score, prob[mask], is_pos[mask], groups[mask])
    return {"images": int(mask.sum()), "fractured": int(is_pos[mask].sum()),
            "roc_auc": float(roc_auc_score(is_pos[mask], prob[mask])), "roc_auc_ci95": [lo, hi]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the unpacked FracAtlas folder (its unpack.py)")
    p.add_argument("--metadata", type=Path, default=ROOT.parent / "shared" / "datasets" / SOURCE / "metadata.csv")
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    with open(args.metadata, newline="") as f:
        hardware = {row["filename"]: row["hardware"] == "1" for row in csv.DictReader(f)}
    rows = clean_test_files(args.model, args.data)
    predictor = Predictor(args.model)
    prob = positive_probabilities(predictor, [r["file"] for r in rows])
    positive = predictor.label_names[predictor.positive]
    is_pos = np.array([r["label"] == positive for r in rows])
    groups = np.array([int(r["group"]) for r in rows])
    metal = np.array([hardware[Path(r["path"]).name] for r in rows])
    everything = np.ones(len(rows), dtype=bool)
    out = {"model": str(args.model), "all": score(everything, prob, is_pos, groups),
           "without_hardware": score(~metal, prob, is_pos, groups),
           "hardware": {"images": int(metal.sum()), "fractured": int(is_pos[metal].sum()),
                        "flagged": int((prob[metal] >= predictor.threshold).sum())}}
    table = md_table(
        ["FracAtlas clean test", "X-rays (fractured)", "ROC-AUC [95% CI]"],
        [[name, f"{r['images']} ({r['fractured']})", f"{r['roc_auc']:.3f} [{r['roc_auc_ci95'][0]:.2f}, "
          f"{r['roc_auc_ci95'][1]:.2f}]"] for name, r in (("all", out["all"]),
                                                          ("without hardware", out["without_hardware"]))])
    h = out["hardware"]
    markdown = (f"{table}\n\nX-rays with hardware: {h['images']} ({h['fractured']} fractured), {h['flagged']} flagged "
                f"at the threshold; `python bench/hardware_shortcut.py`.")
    write_results(args.out, out, markdown, before)


if __name__ == "__main__":
    main()
