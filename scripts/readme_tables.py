"""Write the numbers of the README and of `docs/` from the files that hold them, so they cannot drift from the code.

Every number of those pages sits in a generated block between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->`, rebuilt here from:

- `bundled`, `leak`, `summary`: the bundled model's `metrics.json`, `data_report.json`, `config.json` and
  weights (`summary`: with `bench/results/unseen_site.json`);
- `bench/NAME`: the `markdown` field of `bench/results/NAME.json`, which `python bench/NAME.py` writes.

    python scripts/readme_tables.py           # rewrite README.md and docs/*.md in place
    python scripts/readme_tables.py --check   # exit 1 if a page is not what the files say (the tests run this)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]  # the pages with generated blocks
MODEL = ROOT / "src" / "fracture_detector" / "default_model"
BENCH_RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "src"))  # the package's TrainConfig, also from a checkout without `pip install`
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w/]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)

# The targets of the model issue (issue 20), per source of the bundled model.
TARGETS = {
    "fracture-multi-region": {"roc_auc": 0.95},
    "roboflow-bone-fracture": {"roc_auc": 0.85},
    "fracatlas": {"roc_auc": 0.93},
}
TARGET_POOLED_ECE = 0.05
TARGET_SENSITIVITY_AT_THRESHOLD = 0.85
TARGET_SPECIFICITY_AT_THRESHOLD = 0.5
TARGET_TRAIN_MINUTES = 45
TARGET_FOLDER_MB = 10


def _read(name: str) -> dict:
    return json.loads((MODEL / name).read_text())


def _ci(result: dict, key: str) -> str:
    lo, hi = result.get(f"{key}_ci95", (None, None))
    return f"{result[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def _met(ok: bool | None) -> str:
    return "unknown" if ok is None else ("yes" if ok else "**no**")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def train_command(train_config: dict) -> str:
    """The `train.py` command that reproduces the run: its sources, output folder and every non-default option."""
    from fracture_detector.training import TrainConfig

    parts = ["python train.py --data " + " ".join(train_config["data"]),
             "--output-dir src/fracture_detector/default_model"]
    for f in dataclasses.fields(TrainConfig):
        value = train_config.get(f.name, f.default)
        if f.name in ("data", "output_dir") or value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        parts.append(flag if value is True else f"--no-{flag[2:]}" if value is False else f"{flag} {value}")
    return " \\\n    ".join(parts)


def temperature_sentence(metrics: dict) -> str:
    """How the temperature was decided (models trained before the rule record none: nothing to say)."""
    choice = metrics.get("temperature_choice")
    if choice is None:
        return ""
    low, high = choice["ece_drop_ci95"]
    verdict = ("so it is applied" if choice["kept"] else
               "within its noise, so it is not applied (temperature 1: the probabilities are the model's own)")
    return (f" The fitted temperature ({choice['fitted']:.3f}) moves the validation ECE from "
            f"{choice['validation_ece_at_1']:.3f} to {choice['validation_ece_at_fitted']:.3f}; the 95% interval of "
            f"that drop under a group bootstrap is [{low:.3f}, {high:.3f}], {verdict}.")


def bundled_block() -> str:
    """The bundled model: what it is, how it was trained, its clean-test results per source and the targets."""
    import timm

    metrics, config, train_config = _read("metrics.json"), _read("config.json"), _read("train_config.json")
    params = sum(p.numel() for p in timm.create_model(f"local-dir:{MODEL}", pretrained=True).parameters())
    folder_mb = sum(p.stat().st_size for p in MODEL.iterdir() if p.is_file()) / 2**20
    cal = metrics["calibration"]
    size = config["pretrained_cfg"]["input_size"]
    wall = metrics["wall_seconds"]
    start = "ImageNet weights" if train_config["pretrained"] or train_config.get("pretrained_offline") else "scratch"
    columns = metrics["by_source"] | {"pooled": metrics["results"]}
    clean = {name: r["clean_test"] for name, r in columns.items()}
    val_best = next(h["val_roc_auc"] for h in metrics["history"] if h["epoch"] == metrics["best_epoch"])

    def row(title: str, cell) -> str:
        return f"| {title} | " + " | ".join(cell(r) for r in clean.values()) + " |"

    lines = [
        f"`{metrics['architecture']}` (timm, {params / 1e6:.2f} M parameters, "
        f"{'fp16' if train_config.get('half_weights') else 'fp32'} weights, folder {folder_mb:.1f} MB), "
        f"{size[0]} grayscale input channel at {size[1]} x {size[2]}, trained from {start} for "
        f"{train_config['epochs']} epochs on {len(metrics['by_source'])} sources with",
        "",
        "```bash",
        train_command(train_config),
        "```",
        "",
        f"That run took {_minutes(wall)} on 2 CPU cores (wall clock, recorded by the run in `metrics.json`: "
        "data preparation and evaluation included).",
        "",
        "Results on each source's clean test split (X-rays that neither the model nor any copy of them saw in "
        "training); 95% intervals from a bootstrap that resamples whole copy groups:",
        "",
        "| | " + " | ".join(f"{name} ({r['images']} images, {r['groups']} X-rays)" for name, r in clean.items())
        + " |",
        "|---" * (len(clean) + 1) + "|",
        row("ROC-AUC", lambda r: f"**{_ci(r, 'roc_auc')}**"),
        row("PR-AUC", lambda r: _ci(r, "pr_auc")),
        row("best sensitivity at specificity >= 0.80 / 0.90",
            lambda r: f"{r['sensitivity_at_specificity_0.80']:.3f} / {r['sensitivity_at_specificity_0.90']:.3f}"),
        row(f"sensitivity / specificity at the threshold ({cal['threshold']:.3f})",
            lambda r: f"{r['sensitivity']:.3f} / {r['specificity']:.3f}"),
        row("accuracy at the threshold / of the most probable class",
            lambda r: f"{r['accuracy_at_threshold']:.3f} / {r['accuracy_argmax']:.3f}"),
        row(f"ECE before / after temperature scaling (T = {cal['temperature']:.3f})",
            lambda r: f"{r['ece_uncalibrated']:.3f} / {r['ece']:.3f}"),
        "| shipped test split (leaky), ROC-AUC | " + " | ".join(
            _ci(r["shipped_test"], "roc_auc") if "shipped_test" in r else "-" for r in columns.values()) + " |",
        "",
        ("The threshold is the highest at which every source's validation X-rays reach "
         if cal.get("per_source") else "The threshold was chosen on the pooled validation split for ")
        + f"{cal['target_sensitivity']:.0%} sensitivity; temperature and best epoch ({metrics['best_epoch']} of "
        f"{len(metrics['history'])}, validation ROC-AUC "
        f"{val_best:.3f} on {metrics['results']['validation']['groups']} X-rays) were chosen there too."
        + temperature_sentence(metrics),
        "",
        "| target (issue 20) | measured | met? |",
        "|---|---|---|",
    ]
    for name, targets in TARGETS.items():
        if name not in clean:
            continue
        for key, target in targets.items():
            what = (f"ROC-AUC >= {target}" if key == "roc_auc"
                    else f"sensitivity >= {target} at specificity >= {key.rsplit('_', 1)[-1]}")
            shown = _ci(clean[name], key) if key == "roc_auc" else f"{clean[name][key]:.3f}"
            lines.append(f"| {name}: {what} | {shown} | {_met(clean[name][key] >= target)} |")
    pooled_ece = clean["pooled"]["ece"]
    lines.append(f"| pooled ECE of the shipped probabilities <= {TARGET_POOLED_ECE} | {pooled_ece:.3f} | "
                 f"{_met(pooled_ece <= TARGET_POOLED_ECE)} |")
    for name in metrics["by_source"]:
        sens, spec = clean[name]["sensitivity"], clean[name]["specificity"]
        lines.append(f"| {name}: at the threshold, sensitivity >= {TARGET_SENSITIVITY_AT_THRESHOLD} and specificity "
                     f">= {TARGET_SPECIFICITY_AT_THRESHOLD} | {sens:.3f} / {spec:.3f} | "
                     f"{_met(sens >= TARGET_SENSITIVITY_AT_THRESHOLD and spec >= TARGET_SPECIFICITY_AT_THRESHOLD)} |")
    lines += [
        f"| trains in <= {TARGET_TRAIN_MINUTES} min on 2 CPU cores | {_minutes(wall)} | "
        f"{_met(wall <= 60 * TARGET_TRAIN_MINUTES)} |",
        f"| model folder <= {TARGET_FOLDER_MB} MB | {folder_mb:.1f} MB | {_met(folder_mb <= TARGET_FOLDER_MB)} |",
    ]
    return "\n".join(lines) + "\n"


def summary_block() -> str:
    """The front page's table: per source, the bundled model's clean-test numbers, and the ROC-AUC that
    `bench/unseen_site.py` measured with that source left out of training (a hospital never seen)."""
    metrics, config = _read("metrics.json"), _read("config.json")
    unseen = json.loads((BENCH_RESULTS / "unseen_site.json").read_text())["results"]["runs"]
    threshold = metrics["calibration"]["threshold"]
    lines = [f"The bundled model (`{config['architecture']}`, {config['pretrained_cfg']['input_size'][-1]} px, trained "
             f"on {len(metrics['by_source'])} public data sets on 2 CPU cores) on each source's clean test split, "
             "and, last column, the same recipe trained without that source and scored on it: what a hospital the "
             "model never saw should expect.", "",
             "| source | clean test split | ROC-AUC [95% CI] | sensitivity / specificity at the "
             f"threshold ({threshold:.3f}) | ROC-AUC at a hospital never seen: trained without this source |",
             "|---|---|---|---|---|"]
    for name, results in metrics["by_source"].items():
        r = results["clean_test"]
        runs = [run["unseen"] for run in unseen
                if run["held_out"] == name and run.get("recipe", "bundled") == "bundled"]  # not candidates
        if len(runs) == 1:
            elsewhere = _ci(runs[0], "roc_auc")
        elif runs:
            aucs = [run["roc_auc"] for run in runs]
            mean = sum(aucs) / len(aucs)
            sd = (sum((a - mean) ** 2 for a in aucs) / (len(aucs) - 1)) ** 0.5
            elsewhere = f"{mean:.3f} +- {sd:.3f} over {len(aucs)} seeds"
        else:
            elsewhere = "not measured"
        lines.append(f"| {name} | {r['images']} images of {r['groups']} X-rays | {_ci(r, 'roc_auc')} | "
                     f"{r['sensitivity']:.2f} / {r['specificity']:.2f} | {elsewhere} |")
    return "\n".join(lines) + "\n"


def leak_block() -> str:
    """Per source: how much of the shipped val/test splits copies the shipped training files, the distinct
    X-rays, and the clean split sizes."""
    report = _read("data_report.json")
    lines = ["| source | shipped split | files | exact copies of a shipped train file | exact or near copies |",
             "|---|---|---|---|---|"]
    for name, r in report["sources"].items():
        for split in ("test", "val"):
            s = r["shipped_splits"].get(split)
            if s and "exact_copies_of_train_files" in s:
                lines.append(f"| {name} | {split} | {s['files']:,} | {s['exact_copies_of_train_files']:,} | "
                             f"{s['near_or_exact_copies_of_train_files']:,} |")
    lines.append("")
    for name, r in report["sources"].items():
        sizes = ", ".join(f"{split} {c['images']:,} images / {c['groups']} groups"
                          for split, c in r["clean_splits"].items())
        lines.append(f"- **{name}**: {r['files']:,} files hold {r['distinct_images']:,} distinct images, which fall "
                     f"into **{r['groups']} copy groups** (largest {r['largest_group']} images). Clean split: {sizes}.")
    lines += [
        "",
        f"Copies are found over all sources together ({report['groups']} groups in all); whole groups are split "
        "70/15/15 by images, stratified by source and label, seeded.",
    ]
    return "\n".join(lines) + "\n"


def bench_block(name: str) -> str:
    """The markdown that `bench/NAME.py` wrote into `bench/results/NAME.json`."""
    path = BENCH_RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python bench/{name}.py` first")
    return json.loads(path.read_text())["markdown"].rstrip("\n") + "\n"


def block(name: str) -> str:
    if name == "bundled":
        return bundled_block()
    if name == "leak":
        return leak_block()
    if name == "summary":
        return summary_block()
    if name.startswith("bench/"):
        return bench_block(name.removeprefix("bench/"))
    raise SystemExit(f"unknown generated block {name!r}")


def render(text: str) -> str:
    """`text` with every generated block rebuilt."""
    return BLOCK.sub(lambda m: m.group(1) + block(m.group("name")) + m.group(4), text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if a page is out of date")
    args = p.parse_args()
    stale = []
    for page in DOCUMENTS:
        text = page.read_text()
        new = render(text)
        if new != text:
            stale.append(page.relative_to(ROOT).as_posix())
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        sys.exit(f"{', '.join(stale)} out of date: run `python scripts/readme_tables.py`")
    print(f"{', '.join(stale)} rewritten" if stale else "README.md and docs/ match their source files")


if __name__ == "__main__":
    main()
