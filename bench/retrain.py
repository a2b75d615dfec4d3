"""A candidate recipe trained as the bundled model is (on every source), over seeds, beside the bundled recipe.

`bench/unseen_site.py` judges a candidate at hospitals never seen; before it replaces the bundled
recipe it must also hold where the bundled model is chosen: the validation split of all the
sources together. Each seed trains on every source (seed 0's split is the bundled model's own)
and records the pooled and per-source validation ROC-AUC, the threshold and what it does on each
source's validation X-rays, and the training time. The clean test split is recorded beside
it, for the docs, never to choose by.

    python bench/retrain.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        fracatlas=/tmp/fra --seeds 0 1 2 [--recipe lite2 --set arch='"tf_efficientnet_lite2"']

A run takes 10 to 35 minutes on 2 cores, so results accumulate in `bench/results/retrain.json` (one
entry per recipe and seed). `--from-folder DIR` records a folder that `train.py` already trained
with that recipe and seed (its `train_config.json` must agree) instead of training it again: the
bundled model itself is seed 0 of the bundled recipe. Each entry keeps every epoch's validation scores
(`history`), so another way of choosing the epoch can be judged from the record; `--table-only`
rewrites the tables of the recorded runs. When a candidate is shipped, its runs and the old
bundled ones are renamed as in `bench/unseen_site.py` (256 px `bundled`, 160 px `size160`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
from common import add_out_argument, loadavg, md_table, rewrite_markdown, write_results
from unseen_site import (
    BUNDLED,
    RECIPE_KEYS,
    add_recipe_arguments,
    baseline_of,
    mean_sd,
    recipe_options,
    recorded_baseline,
)

from fracture_detector.training import TrainConfig, train

SPLITS = ("validation", "clean_test")


def record(folder: Path, name: str, options: dict, data: list[str], seed: int, baseline: str | None = None) -> dict:
    """What one trained folder says of itself (`metrics.json`), as one entry of the results."""
    metrics = json.loads((folder / "metrics.json").read_text())

    def scores(result: dict) -> dict:
        return {k: result[k] for k in ("images", "roc_auc", "sensitivity", "specificity")}

    return {"recipe": name, **recorded_baseline(name, baseline), "seed": seed, "options": options, "data": data,
            "threshold": metrics["calibration"]["threshold"], "best_epoch": metrics["best_epoch"],
            "wall_seconds": metrics["wall_seconds"],
            # Every epoch's validation scores, so another way of choosing the epoch can be judged from the record.
            "history": [{k: v for k, v in e.items() if k.startswith("val_") or k == "epoch"}
                        for e in metrics["history"]],
            **{split: {"pooled": scores(metrics["results"][split]),
                       **{s: scores(r[split]) for s, r in metrics["by_source"].items()}} for split in SPLITS}}


def check_folder(folder: Path, data: list[str], options: dict, seed: int) -> None:
    """Refuse a folder trained on other data, options or seed than asked (an option it lacks is its default:
    the folder was trained before that option existed)."""
    config = json.loads((folder / "train_config.json").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    differ = [k for k in RECIPE_KEYS if config.get(k, defaults.get(k)) != options.get(k, defaults.get(k))]
    differ += [k for k, v in (("seed", seed), ("data", data)) if config[k] != v]
    if differ:
        raise SystemExit(f"{folder}: trained with another {', '.join(differ)} than asked")


def source_mean_auc(run: dict) -> float:
    """The mean of the sources' own validation ROC-AUCs: unlike the pooled one, a model earns nothing here for
    scoring a whole source higher (the between-source shortcut that keeps one threshold from holding)."""
    return float(np.mean([v["roc_auc"] for part, v in run["validation"].items() if part != "pooled"]))


def lowest_specificity(run: dict) -> float:
    """The lowest validation specificity of any source at the run's one threshold: what the issue's
    'one threshold that holds on every source' asks to raise."""
    return min(v["specificity"] for part, v in run["validation"].items() if part != "pooled")


def markdown(runs: list[dict]) -> str:
    """Per recipe and source: mean +- sd over seeds of validation ROC-AUC, specificity at the threshold, test."""
    names = sorted({r["recipe"] for r in runs}, key=lambda n: (n != BUNDLED, n))
    rows = []
    for name in names:
        mine = sorted((r for r in runs if r["recipe"] == name), key=lambda r: r["seed"])
        for part in ["pooled", *sorted(set(mine[0]["validation"]) - {"pooled"})]:
            val = [r["validation"][part] for r in mine]
            test = [r["clean_test"][part]["roc_auc"] for r in mine]
            pooled = part == "pooled"
            rows.append([name, ", ".join(str(r["seed"]) for r in mine), part,
                         mean_sd([v["roc_auc"] for v in val]),
                         mean_sd([source_mean_auc(r) for r in mine]) if pooled else "",
                         f"{np.mean([v['sensitivity'] for v in val]):.2f} / "
                         f"{np.mean([v['specificity'] for v in val]):.2f}",
                         f"{np.mean([lowest_specificity(r) for r in mine]):.2f}" if pooled else "",
                         mean_sd(test),
                         f"{np.mean([r['wall_seconds'] for r in mine]) / 60:.1f} min" if pooled else ""])
    header = ["recipe", "seeds", "validation X-rays of", "validation ROC-AUC, mean +- sd",
              "mean of the sources' validation ROC-AUCs, mean +- sd",
              "validation sensitivity / specificity at the threshold (mean)",
              "lowest source's validation specificity at the threshold (mean)",
              "clean test ROC-AUC, mean +- sd (not chosen by)", "training time per run"]
    text = ("Trained on every source as the bundled model is (seed 0: the bundled model's split; the bundled "
            "recipe's seed 0 is the bundled model itself), 2 CPU cores; `python bench/retrain.py`.\n\n"
            + md_table(header, rows))
    paired = []
    for name in sorted({r["recipe"] for r in runs if baseline_of(r)}):
        mine = [r for r in runs if r["recipe"] == name]
        base = {r["seed"]: r for r in runs if r["recipe"] == baseline_of(mine[0])}
        pairs = [(r, base[r["seed"]]) for r in mine if r["seed"] in base]
        diffs = [r["validation"]["pooled"]["roc_auc"] - b["validation"]["pooled"]["roc_auc"] for r, b in pairs]
        source_diffs = [source_mean_auc(r) - source_mean_auc(b) for r, b in pairs]
        specificity_diffs = [lowest_specificity(r) - lowest_specificity(b) for r, b in pairs]
        if diffs:
            paired.append([name, len(diffs), f"{sum(d > 0 for d in diffs)} of {len(diffs)}",
                           f"{np.mean(diffs):+.3f}", f"{min(diffs):+.3f} / {max(diffs):+.3f}",
                           f"{sum(d > 0 for d in source_diffs)} of {len(diffs)}", f"{np.mean(source_diffs):+.3f}",
                           f"{sum(d > 0 for d in specificity_diffs)} of {len(diffs)}",
                           f"{np.mean(specificity_diffs):+.2f}"])
    if paired:
        header = ["candidate", "seeds", "seeds where the candidate is higher", "mean difference", "lowest / highest",
                  "mean of the sources' ROC-AUCs: seeds where higher", "its mean difference",
                  "lowest source's specificity at the threshold: seeds where higher", "its mean difference"]
        text += ("\n\nPooled validation ROC-AUC (and the mean of the sources' own, and the lowest source's "
                 "specificity at the threshold), candidate - its baseline "
                 "(the bundled recipe unless recorded), seed by seed (same split):\n\n"
                 + md_table(header, paired))
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=[], help="NAME=FOLDER sources, as for train.py")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    add_recipe_arguments(p)
    p.add_argument("--from-folder", nargs="+", type=Path, default=[], metavar="DIR",
                   help="folders train.py already trained with this recipe, one per seed, in --seeds order")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--table-only", action="store_true", help="rewrite the tables of the runs in --out, train nothing")
    add_out_argument(p, __file__)
    args = p.parse_args()
    out = Path(args.out)
    if args.table_only:
        rewrite_markdown(out, markdown)
        return
    if not args.data:
        p.error("--data is required (unless --table-only)")
    options = recipe_options(p, args)
    if args.from_folder and len(args.from_folder) != len(args.seeds):
        p.error("--from-folder takes one folder per seed of --seeds")
    before = loadavg()
    runs = json.loads(out.read_text())["results"]["runs"] if out.is_file() else []
    for i, seed in enumerate(args.seeds):
        runs = [r for r in runs if (r["recipe"], r["seed"]) != (args.recipe, seed)]
        if args.from_folder:
            check_folder(args.from_folder[i], args.data, options, seed)
            runs.append(record(args.from_folder[i], args.recipe, options, args.data, seed, args.baseline))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = TrainConfig(data=args.data, output_dir=str(Path(tmp) / "model"), seed=seed, onnx=False,
                                  bootstrap=args.bootstrap, **options)
                runs.append(record(train(cfg), args.recipe, options, args.data, seed, args.baseline))
        write_results(out, {"runs": runs}, markdown(runs), before)  # keep what finished


if __name__ == "__main__":
    main()
