"""One threshold for every source, or one per site: what each source's specificity would be at its own.

The shipped threshold is the highest at which every source's validation X-rays reach the target
sensitivity, so the source whose fractures score lowest sets it for all. This scores the bundled
model (or `--model`) on each source's validation and clean test X-rays of its
`split_manifest.csv.gz` (one per distinct image), by the CLI's path (`Predictor.predict_files`,
the X-ray check off so that every file gets a probability), and reports per source: the threshold
that `fracture-detector calibrate` (`site.site_threshold`) would choose on its validation X-rays
for the same target, and the clean-test sensitivity and
specificity at the shipped threshold and at that own one. The gap between the two is what one
threshold for all sources costs, and what a site gains by setting the threshold on its own
labelled X-rays.

    python bench/site_threshold.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        fracatlas=/tmp/fra
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from common import add_out_argument, clean_test_rows, loadavg, md_table, write_results
from sklearn.metrics import roc_auc_score

from fracture_detector.calibration import sensitivity_specificity
from fracture_detector.data import parse_source
from fracture_detector.predict import Predictor
from fracture_detector.resources import BUNDLED_MODEL
from fracture_detector.site import positive_probabilities, site_threshold


def source_row(predictor: Predictor, model_dir: Path, name: str, folder: Path, target: float) -> dict:
    """One source: the threshold `fracture-detector calibrate` would choose on its validation X-rays for
    `target`, and its clean-test rates at that one and at the shipped one."""
    val_rows, test_rows = clean_test_rows(model_dir, {name}, "val"), clean_test_rows(model_dir, {name})
    own = site_threshold(predictor, [folder / r["path"] for r in val_rows], [r["label"] for r in val_rows], target)
    test_prob = positive_probabilities(predictor, [folder / r["path"] for r in test_rows])
    test_pos = np.array([r["label"] == predictor.label_names[predictor.positive] for r in test_rows])
    at = {key: dict(zip(("sensitivity", "specificity"), sensitivity_specificity(test_prob, test_pos, t)))
          for key, t in (("shipped", predictor.threshold), ("own", own["threshold"]))}
    return {"source": name, "validation": {"images": own["images"], "fractured": own["fractured"]},
            "test": {"images": len(test_prob), "fractured": int(test_pos.sum()),
                     "roc_auc": float(roc_auc_score(test_pos, test_prob))},
            "own_threshold": own["threshold"], "at_shipped_threshold": at["shipped"], "at_own_threshold": at["own"]}


def markdown(rows: list[dict], threshold: float, target: float) -> str:
    def rates(r: dict) -> str:
        return f"{r['sensitivity']:.2f} / {r['specificity']:.2f}"

    table = md_table(
        ["source", "validation X-rays (fractured)", f"its own threshold ({target:.0%} sensitivity on them)",
         "clean test X-rays (fractured)", f"test sensitivity / specificity at the shipped {threshold:.3f}",
         "at its own threshold", "test ROC-AUC"],
        [[r["source"], f"{r['validation']['images']} ({r['validation']['fractured']})", f"{r['own_threshold']:.3f}",
          f"{r['test']['images']} ({r['test']['fractured']})", rates(r["at_shipped_threshold"]),
          rates(r["at_own_threshold"]), f"{r['test']['roc_auc']:.3f}"] for r in rows])
    return (f"{table}\n\nThe bundled model through the CLI's path, the X-ray check off; one image per distinct X-ray; "
            "`python bench/site_threshold.py`.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER of each source the model was trained on")
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    predictor = Predictor(args.model)
    target = predictor.calibration.target_sensitivity
    if target is None:
        raise SystemExit(f"{args.model}: its config.json does not say what sensitivity the threshold was chosen for")
    rows = []
    for spec in args.data:
        name, folder = parse_source(spec)
        rows.append(source_row(predictor, args.model, name, Path(folder), target))
        print(name, rows[-1]["own_threshold"], rows[-1]["at_own_threshold"], flush=True)
    out = {"model": str(args.model), "threshold": predictor.threshold, "target_sensitivity": target, "sources": rows}
    write_results(args.out, out, markdown(rows, predictor.threshold, target), before)


if __name__ == "__main__":
    main()
