"""How far a source's look goes without looking at bone: labels from image size and exposure alone.

Each source has its own look (file sizes, framing, exposure), and where the share of fractured
X-rays differs with it (one body part framed wider than another, one archive exported brighter),
a model can score in-source without reading a fracture, and that score is lost at another site.
This fits a gradient-boosted classifier on nine numbers per image that say nothing about a
fracture: width, height, aspect ratio, bytes per pixel, colour or gray, mean and spread of the
gray levels, and the shares of near-black and near-white pixels. It uses the bundled model's
split (its `split_manifest.csv.gz`, one row per distinct image) and scores, for each source:

- in-source: fitted on that source's clean train and validation images, scored on its clean test split;
- a hospital never seen: fitted on the other sources' clean train and validation images, scored on
  the held-out source's clean test X-rays whose copy group stays in that source (as
  `bench/unseen_site.py` scores them),

beside the bundled model's in-source ROC-AUC and the leave-one-source-out model of the same split
(`bench/unseen_site.py`, bundled recipe, seed 0). Intervals from a bootstrap over copy groups.

    python bench/look_shortcut.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        fracatlas=/tmp/fra
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path

import numpy as np
from common import RESULTS_DIR, add_out_argument, loadavg, md_table, write_results
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.metrics import roc_auc_score

from fracture_detector.data import MANIFEST_NAME, parse_source
from fracture_detector.decode import open_image
from fracture_detector.evaluate import bootstrap_ci
from fracture_detector.resources import BUNDLED_MODEL

FEATURES = ("width", "height", "aspect ratio", "bytes per pixel", "colour", "mean gray", "gray spread",
            "near-black share", "near-white share")
POSITIVE = "fractured"


def distinct_rows(model_dir: Path) -> list[dict]:
    """The model's `split_manifest.csv.gz`, one row per distinct image (copies share a hash), without the files
    training skipped as unreadable."""
    seen, rows = set(), []
    with gzip.open(model_dir / MANIFEST_NAME, "rt", newline="") as f:
        for row in csv.DictReader(f):
            if row["split"] != "skipped" and row["sha256"] not in seen:
                seen.add(row["sha256"])
                rows.append(row)
    return rows


def look(path: Path) -> list[float]:
    """The nine numbers of `FEATURES` for one file: its size and format, and its gray levels at 64 x 64."""
    image = open_image(path)
    width, height = image.size
    gray = np.asarray(image.convert("L").resize((64, 64)), dtype=np.float32) / 255
    return [width, height, width / height, path.stat().st_size / (width * height), float(image.mode == "RGB"),
            float(gray.mean()), float(gray.std()), float((gray < 0.05).mean()), float((gray > 0.9).mean())]


def score(fit: np.ndarray, test: np.ndarray, x: np.ndarray, is_pos: np.ndarray, groups: np.ndarray) -> dict:
    """Fit on the rows in `fit`, score those in `test`: ROC-AUC with its group-bootstrap interval, and how much
    of it each number carries (the ROC-AUC lost when that number is shuffled among the test rows)."""
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=0).fit(x[fit], is_pos[fit])
    prob = model.predict_proba(x[test])[:, 1]
    lo, hi = bootstrap_ci(roc_auc_score, prob, is_pos[test], groups[test])
    shuffled = permutation_importance(model, x[test], is_pos[test], scoring="roc_auc", n_repeats=10, random_state=0)
    return {"images": int(test.sum()), "fractured": int(is_pos[test].sum()),
            "roc_auc": float(roc_auc_score(is_pos[test], prob)), "roc_auc_ci95": [lo, hi],
            "roc_auc_lost_when_shuffled": dict(zip(FEATURES, shuffled.importances_mean.round(4).tolist()))}


def most_telling(result: dict, n: int = 2) -> str:
    """The `n` numbers whose shuffling costs the most ROC-AUC, with what it costs."""
    lost = sorted(result["roc_auc_lost_when_shuffled"].items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} ({value:.2f})" for name, value in lost)


def cnn_scores(model_dir: Path, unseen_file: Path) -> tuple[dict, dict]:
    """The bundled model's in-source clean-test ROC-AUC per source, and the seed-0 leave-one-source-out ones."""
    metrics = json.loads((model_dir / "metrics.json").read_text())
    in_source = {s: r["clean_test"]["roc_auc"] for s, r in metrics["by_source"].items()}
    runs = json.loads(unseen_file.read_text())["results"]["runs"] if unseen_file.is_file() else []
    unseen = {r["held_out"]: r["unseen"]["roc_auc"] for r in runs
              if r.get("recipe", "bundled") == "bundled" and r["seed"] == 0}
    return in_source, unseen


def auc_text(result: dict) -> str:
    lo, hi = result["roc_auc_ci95"]
    return f"{result['roc_auc']:.3f} [{lo:.2f}, {hi:.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER sources, as for train.py")
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL, help="whose split to use (default: the bundled)")
    p.add_argument("--unseen", type=Path, default=RESULTS_DIR / "unseen_site.json",
                   help="bench/unseen_site.py's results, for the leave-one-source-out model beside")
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    folders = dict(parse_source(spec) for spec in args.data)
    rows = [r for r in distinct_rows(args.model) if r["source"] in folders]
    missing = sorted(set(folders) - {r["source"] for r in rows})
    if missing:
        p.error(f"the model's split holds no images of {missing}")
    x = np.array([look(Path(folders[r["source"]]) / r["path"]) for r in rows])
    is_pos = np.array([r["label"] == POSITIVE for r in rows])
    groups = np.array([int(r["group"]) for r in rows])
    sources = np.array([r["source"] for r in rows])
    test = np.array([r["split"] == "test" for r in rows])
    in_cnn, unseen_cnn = cnn_scores(args.model, args.unseen)
    results, table = {}, []
    for source in folders:
        mine = sources == source
        elsewhere = np.isin(groups, np.unique(groups[~mine]))  # a copy lives in another source
        results[source] = {"in_source": score(mine & ~test, mine & test, x, is_pos, groups),
                           "unseen": score(~mine & ~test, mine & test & ~elsewhere, x, is_pos, groups)}
        r = results[source]
        unseen = unseen_cnn.get(source)
        table.append([source, f"{r['in_source']['images']} ({r['in_source']['fractured']})",
                      auc_text(r["in_source"]), most_telling(r["in_source"]),
                      f"{in_cnn[source]:.3f}" if source in in_cnn else "n/a",
                      auc_text(r["unseen"]), f"{unseen:.3f}" if unseen is not None else "not run"])
    header = ["source", "clean test images (fractured)", "look alone, in-source: ROC-AUC [95% CI]",
              "its most telling numbers (ROC-AUC lost when shuffled)", "bundled model, in-source",
              "look alone, source never seen", "CNN trained without it (seed 0)"]
    markdown = (md_table(header, table) + f"\n\nThe look: {', '.join(FEATURES)}; a gradient-boosted classifier "
                "(scikit-learn) on the bundled model's split; `python bench/look_shortcut.py`.")
    write_results(args.out, {"features": FEATURES, "by_source": results}, markdown, before)


if __name__ == "__main__":
    main()
