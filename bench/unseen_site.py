"""The number that matters most: how the model does at a hospital it has never seen.

For each source, train on the others with the bundled model's recipe (its `train_config.json`,
or `--config`), then score that source's clean test split: X-rays of a site that no part of
the run saw. The split is the one that training on all the sources makes (same seed), so the
numbers sit beside the bundled model's in-source ones; test X-rays whose copy group reaches
into another source are left out, since a copy of them may have been trained on. Each
held-out model keeps its own threshold, chosen on its training sources' validation X-rays,
so "specificity at the threshold" is what a new site would get from it as shipped.

    python bench/unseen_site.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        fracatlas=/tmp/fra [--seeds 0 1 2] [--held-out fracatlas]

Runs take minutes each on 2 cores, so results accumulate in `bench/results/unseen_site.json`
(one entry per recipe, held-out source and seed); the first table covers the bundled recipe.

A candidate recipe is the bundled one with options changed, under a name of its own, e.g.
`--recipe ema --set ema_decay=0.99`; a second table sets each candidate beside its baseline, seed
by seed on the same held-out X-rays. A run's baseline is the recipe it changed (its `baseline`
key; without one, the bundled recipe). When a candidate is shipped, its runs are renamed `bundled`
and the old bundled runs get a name of their own and `"baseline": null` (they changed no recipe);
they stay the other candidates' baseline. That is how 256 px replaced 160 px (`size160`). A new
run records `--baseline NAME` when given (`none`: null), e.g. a re-run of the bundled recipe with
`--baseline size160`.
`--keep-models DIR` keeps each run's model folder (with its last checkpoint) for `bench/soup.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from common import add_out_argument, loadavg, md_table, met, rewrite_markdown, write_results

from fracture_detector.calibration import Calibration
from fracture_detector.data import Images, parse_source
from fracture_detector.evaluate import evaluate
from fracture_detector.model import load_model, predict_logits, read_config
from fracture_detector.resources import BUNDLED_MODEL
from fracture_detector.training import TrainConfig, prepare_data, train

TARGET_ROC_AUC = 0.80  # issue 20: leave-one-source-out ROC-AUC of each source
BUNDLED = "bundled"  # the name of the bundled model's recipe; runs recorded without a name are of it
RECIPE_KEYS = ("arch", "pretrained", "pretrained_offline", "epochs", "batch_size", "lr", "weight_decay",
               "warmup_epochs", "label_smoothing", "augmentation", "image_size", "equalize", "target_sensitivity",
               "balance_sources", "balance_labels", "half_weights", "ema_decay", "select_by")


def recipe(config_file: Path) -> dict:
    """The training options of a run's `train_config.json`, without its data, output or seed."""
    return {k: v for k, v in json.loads(config_file.read_text()).items() if k in RECIPE_KEYS}


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """`--config`, `--recipe` and `--set`: which recipe a bench trains, and its name."""
    p.add_argument("--config", type=Path, default=BUNDLED_MODEL / "train_config.json",
                   help="the recipe: a run's train_config.json (default: the bundled model's)")
    p.add_argument("--recipe", default=BUNDLED, help="a name for the recipe (--set makes it a candidate)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="options changed from --config, VALUE as JSON (e.g. ema_decay=0.99 image_size=224)")
    p.add_argument("--baseline", help="the recipe this one changed, paired with it in the tables (default: the "
                   "bundled recipe; `none`: it changed none); recorded with each run")


def recipe_options(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The training options `add_recipe_arguments` asked for: --config's recipe with --set's changes."""
    options = recipe(args.config)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in RECIPE_KEYS:
            p.error(f"--set {item}: not a recipe option ({', '.join(RECIPE_KEYS)})")
        options[key] = json.loads(value)
    if args.set and args.recipe == BUNDLED:
        p.error("--set changes the recipe: name it with --recipe")
    return options


def all_sources(data: list[str], options: dict, seed: int) -> Images:
    """Every source decoded and split as training on all of them splits (same seed): once per seed."""
    _, images, _ = prepare_data(TrainConfig(data=data, seed=seed, **options), None, log=lambda *_: None)
    return images


def unseen_test(images: Images, held_out: str) -> tuple[np.ndarray, int]:
    """The held-out source's clean test X-rays, minus groups shared with other sources (and how many those are)."""
    mine, test = images.sources == held_out, images.split == "test"
    shared = np.isin(images.groups, np.unique(images.groups[~mine]))  # a copy lives in another source
    return np.flatnonzero(mine & test & ~shared), int((mine & test & shared).sum())


def recipe_of(run: dict) -> str:
    return run.get("recipe", BUNDLED)


def recorded_baseline(name: str, baseline: str | None) -> dict:
    """The `baseline` key a new run of recipe `name` records: `--baseline` when given (`none`: null), else the
    bundled recipe for a candidate and nothing for the bundled recipe itself."""
    if baseline is not None:
        return {"baseline": None if baseline == "none" else baseline}
    return {} if name == BUNDLED else {"baseline": BUNDLED}


def baseline_of(run: dict) -> str | None:
    """The recipe a run's recipe changed: its `baseline` key (None: it changed none), else the bundled recipe
    (None for the bundled one)."""
    return run.get("baseline", None if recipe_of(run) == BUNDLED else BUNDLED)


def run(data: list[str], images: Images, options: dict, seed: int, held_out: str, bootstrap: int,
        name: str = BUNDLED, keep: Path | None = None, baseline: str | None = None) -> dict:
    """Train without `held_out`, then score its clean test split (`images`: `all_sources` for this seed)."""
    training = [spec for spec in data if parse_source(spec)[0] != held_out]
    idx, left_out = unseen_test(images, held_out)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(data=training, output_dir=str(Path(tmp) / "model"), seed=seed, onnx=False,
                          bootstrap=bootstrap, **options)
        out_dir = train(cfg)
        model, _ = load_model(out_dir)
        calibration = Calibration.from_config(read_config(out_dir))
        metrics = json.loads((out_dir / "metrics.json").read_text())
        if keep is not None:
            kept = keep / name / held_out / str(seed)
            shutil.rmtree(kept, ignore_errors=True)
            shutil.copytree(out_dir, kept)
    logits = predict_logits(model, images.pixels[idx]).numpy()
    unseen = evaluate(logits, images.labels[idx], images.label_names, calibration, groups=images.groups[idx],
                      bootstrap=bootstrap)
    return {"recipe": name, **recorded_baseline(name, baseline), "held_out": held_out, "seed": seed,
            "trained_on": training, "options": options,
            "left_out_shared_copies": left_out, "threshold": calibration.threshold, "unseen": unseen,
            "in_source": {s: r["clean_test"] for s, r in metrics["by_source"].items()},
            "validation_roc_auc": metrics["results"]["validation"]["roc_auc"],
            "history": metrics["history"], "wall_seconds": metrics["wall_seconds"]}


def mean_sd(values: list[float]) -> str:
    return f"{np.mean(values):.3f} +- {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def paired(runs: list[dict], name: str, held_out: str) -> dict[int, dict[str, dict]]:
    """Seeds both candidate `name` and its baseline ran with `held_out` left out:
    {seed: {"candidate": run, "baseline": run}}."""
    mine = {r["seed"]: r for r in runs if r["held_out"] == held_out and recipe_of(r) == name}
    if not mine:
        return {}
    baseline = baseline_of(next(iter(mine.values())))
    base = {r["seed"]: r for r in runs if r["held_out"] == held_out and recipe_of(r) == baseline}
    return {seed: {"candidate": mine[seed], "baseline": base[seed]} for seed in sorted(mine) if seed in base}


def overall(runs: list[dict], names: list[str]) -> str:
    """One line per candidate over every paired run: how often it beat its baseline, and by how much."""
    rows = []
    for name in names:
        pairs = [(held_out, p) for held_out in sorted({r["held_out"] for r in runs if recipe_of(r) == name})
                 for p in paired(runs, name, held_out).values()]
        differences = [p["candidate"]["unseen"]["roc_auc"] - p["baseline"]["unseen"]["roc_auc"] for _, p in pairs]
        sources = len({h for h, _ in pairs})
        rows.append([name, f"{sources} source{'s' * (sources != 1)}, {len(pairs)} runs",
                     f"{sum(d > 0 for d in differences)} of {len(differences)}",
                     f"{np.mean(differences):+.3f}", f"{min(differences):+.3f} / {max(differences):+.3f}"])
    header = ["candidate", "paired with its baseline", "runs where the candidate's ROC-AUC is higher",
              "mean difference (candidate - baseline)", "lowest / highest difference"]
    return "\n\nEach candidate over all its paired runs (every held-out source and seed):\n\n" + md_table(header, rows)


def candidates(runs: list[dict]) -> str:
    """Each candidate recipe beside its baseline: mean +- sd over the seeds both ran, and the paired difference."""
    rows = []
    names = sorted({recipe_of(r) for r in runs if baseline_of(r)})
    for name in names:
        for held_out in sorted({r["held_out"] for r in runs if recipe_of(r) == name}):
            pairs = paired(runs, name, held_out)
            if not pairs:
                continue
            sides = ("baseline", "candidate")
            auc = {k: [p[k]["unseen"]["roc_auc"] for p in pairs.values()] for k in sides}
            spec = {k: [p[k]["unseen"]["specificity"] for p in pairs.values()] for k in sides}
            minutes = {k: np.mean([p[k]["wall_seconds"] for p in pairs.values()]) / 60 for k in sides}
            val = [p["candidate"].get("validation_roc_auc") for p in pairs.values()]
            baseline = baseline_of(next(iter(pairs.values()))["candidate"])
            rows.append([name, baseline, held_out, ", ".join(map(str, pairs)), mean_sd(auc["baseline"]),
                         mean_sd(auc["candidate"]), mean_sd(list(np.subtract(auc["candidate"], auc["baseline"]))),
                         f"{np.mean(spec['baseline']):.2f} / {np.mean(spec['candidate']):.2f}",
                         mean_sd(val) if None not in val else "n/a",
                         f"{minutes['baseline']:.1f} / {minutes['candidate']:.1f} min"])
    if not rows:
        return ""
    header = ["candidate", "its baseline", "held-out source", "seeds", "ROC-AUC, baseline", "ROC-AUC, candidate",
              "difference (candidate - baseline)", "specificity at own threshold, baseline / candidate",
              "candidate's validation ROC-AUC (training sources)", "training time per run, baseline / candidate"]
    return ("\n\nCandidate recipes on the same seeds (same splits, same held-out X-rays), mean +- sd over the seeds:"
            "\n\n" + md_table(header, rows) + overall(runs, sorted({row[0] for row in rows})))


def markdown(runs: list[dict]) -> str:
    """One row per held-out source and seed of the bundled recipe, mean +- sd over the seeds; then the candidates."""
    rows = []
    bundled = [r for r in runs if recipe_of(r) == BUNDLED]
    for held_out in sorted({r["held_out"] for r in bundled}):
        mine = sorted((r for r in bundled if r["held_out"] == held_out), key=lambda r: r["seed"])
        aucs = [r["unseen"]["roc_auc"] for r in mine]
        spread = mean_sd(aucs) if len(aucs) > 1 else "one seed"
        for r in mine:
            u = r["unseen"]
            lo, hi = u.get("roc_auc_ci95", (float("nan"),) * 2)
            rows.append([held_out, " + ".join(parse_source(s)[0] for s in r["trained_on"]), r["seed"],
                         f"{u['images']} in {u['groups']} copy groups ({u['positives']} fractured)",
                         f"{u['roc_auc']:.3f} [{lo:.2f}, {hi:.2f}]",
                         spread, f"{r['threshold']:.3f}", f"{u['sensitivity']:.2f} / {u['specificity']:.2f}",
                         f"{r['wall_seconds'] / 60:.1f} min", met(u["roc_auc"] >= TARGET_ROC_AUC)])
    header = ["held-out source (never trained on)", "trained on", "seed", "test images", "ROC-AUC [95% CI]",
              "ROC-AUC mean +- sd over seeds", "its threshold", "sensitivity / specificity at it", "training time",
              f"ROC-AUC >= {TARGET_ROC_AUC}"]
    return ("Leave one source out: trained on the other sources with the bundled recipe, scored on the held-out "
            "source's clean test split, 2 CPU cores; `python bench/unseen_site.py`.\n\n" + md_table(header, rows)
            + candidates(runs))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=[], help="NAME=FOLDER sources, as for train.py (at least 2)")
    p.add_argument("--held-out", nargs="+", help="sources to hold out (default: each in turn)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    add_recipe_arguments(p)
    p.add_argument("--keep-models", type=Path, help="keep each run's model folder under DIR/recipe/held-out/seed")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--table-only", action="store_true", help="rewrite the table of the runs in --out, train nothing")
    add_out_argument(p, __file__)
    args = p.parse_args()
    names = [parse_source(spec)[0] for spec in args.data]
    if len(names) < 2 and not args.table_only:
        p.error("needs at least two sources: one to hold out, one to train on")
    before = loadavg()
    out = Path(args.out)
    if args.table_only:
        rewrite_markdown(out, markdown)
        return
    runs = json.loads(out.read_text())["results"]["runs"] if out.is_file() else []
    options = recipe_options(p, args)
    for seed in args.seeds:
        images = all_sources(args.data, options, seed)
        for held_out in args.held_out or names:
            runs = [r for r in runs if (recipe_of(r), r["held_out"], r["seed"]) != (args.recipe, held_out, seed)]
            runs.append(run(args.data, images, options, seed, held_out, args.bootstrap, args.recipe,
                            args.keep_models, args.baseline))
            write_results(out, {"data": args.data, "runs": runs}, markdown(runs), before)  # keep what finished


if __name__ == "__main__":
    main()
