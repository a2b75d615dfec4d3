"""Write the README's numbers from the files that hold them, so they cannot drift from the code.

Every number of the README sits in a generated block between `<!-- generated:NAME -->` and
`<!-- /generated:NAME -->`, rebuilt here from:

- `bundled`, `leak`: the bundled model's `metrics.json`, `data_report.json`, `config.json` and weights;
- `bench/NAME`: the `markdown` field of `bench/results/NAME.json`, which `python bench/NAME.py` writes.

    python scripts/readme_tables.py           # rewrite README.md in place
    python scripts/readme_tables.py --check   # exit 1 if README.md is not what the files say (the tests run this)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MODEL = ROOT / "src" / "fracture_detector" / "default_model"
BENCH_RESULTS = ROOT / "bench" / "results"
BLOCK = re.compile(r"(<!-- generated:(?P<name>[\w/]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)

# The quality targets of the first model issue, to compare the bundled model against.
TARGET_ROC_AUC = 0.97
TARGET_SENSITIVITY_AT_SPEC_90 = 0.93
TARGET_ECE = 0.03
TARGET_TRAIN_MINUTES = 20
BASELINE_ROC_AUC = 0.90  # mobilenetv3_small at 224 px from scratch, as quoted in that issue


def _read(name: str) -> dict:
    return json.loads((MODEL / name).read_text())


def _ci(result: dict, key: str) -> str:
    lo, hi = result.get(f"{key}_ci95", (None, None))
    return f"{result[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def _met(ok: bool | None) -> str:
    return "unknown" if ok is None else ("yes" if ok else "**no**")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def bundled_block() -> str:
    """The bundled model: what it is, how it was trained, its clean/shipped results and the targets."""
    import timm

    metrics, config, train_config = _read("metrics.json"), _read("config.json"), _read("train_config.json")
    params = sum(p.numel() for p in timm.create_model(f"local-dir:{MODEL}", pretrained=True).parameters())
    folder_mb = sum(p.stat().st_size for p in MODEL.iterdir() if p.is_file()) / 2**20
    clean, shipped = metrics["results"]["clean_test"], metrics["results"]["shipped_test"]
    cal = metrics["calibration"]
    size = config["pretrained_cfg"]["input_size"]
    wall = metrics.get("wall_seconds")
    trained = (f"That run took {_minutes(wall)} (wall clock, data preparation and evaluation included)."
               if wall else "Its wall time was not recorded: it was trained before `train.py` wrote "
                            "`wall_seconds` into `metrics.json`.")
    val_best = next(h["val_roc_auc"] for h in metrics["history"] if h["epoch"] == metrics["best_epoch"])
    start = "ImageNet weights" if train_config["pretrained"] else "scratch"
    lines = [
        f"`{metrics['architecture']}` (timm, {params / 1e6:.2f} M parameters, folder {folder_mb:.1f} MB), "
        f"{size[0]} grayscale input channel at {size[1]} x {size[2]}, trained from {start} for "
        f"{train_config['epochs']} epochs. {trained}",
        "",
        f"Results on the clean test split ({clean['images']} images from {clean['groups']} distinct X-rays; "
        "95% intervals from a bootstrap that resamples whole copy groups):",
        "",
        f"| | clean test ({clean['images']} images, {clean['groups']} X-rays) | "
        f"shipped test ({shipped['images']} files, leaky) |",
        "|---|---|---|",
        f"| ROC-AUC | **{_ci(clean, 'roc_auc')}** | {_ci(shipped, 'roc_auc')} |",
        f"| PR-AUC | {_ci(clean, 'pr_auc')} | {_ci(shipped, 'pr_auc')} |",
        f"| accuracy of the most probable class | {clean['accuracy_argmax']:.3f} | {shipped['accuracy_argmax']:.3f} |",
        f"| accuracy at the threshold | {clean['accuracy_at_threshold']:.3f} | "
        f"{shipped['accuracy_at_threshold']:.3f} |",
        f"| best sensitivity at specificity >= 0.90 | {clean['sensitivity_at_specificity_0.90']:.3f} | "
        f"{shipped['sensitivity_at_specificity_0.90']:.3f} |",
        f"| sensitivity / specificity at the threshold ({cal['threshold']:.3f}, chosen for "
        f"{cal['target_sensitivity']:.0%} sensitivity on validation) | {clean['sensitivity']:.3f} / "
        f"{clean['specificity']:.3f} | {shipped['sensitivity']:.3f} / {shipped['specificity']:.3f} |",
        f"| ECE before / after temperature scaling (T = {cal['temperature']:.3f}) | "
        f"{clean['ece_uncalibrated']:.3f} / {clean['ece']:.3f} | {shipped['ece_uncalibrated']:.3f} / "
        f"{shipped['ece']:.3f} |",
        "",
        f"Best epoch {metrics['best_epoch']} of {len(metrics['history'])} by validation ROC-AUC ({val_best:.3f} on "
        f"{metrics['results']['validation']['groups']} validation X-rays). At the threshold the model flags "
        f"{1 - clean['specificity']:.0%} of the normal X-rays of the clean test split.",
        "",
        "| target (issue 2) | measured | met? |",
        "|---|---|---|",
        f"| clean test ROC-AUC >= {TARGET_ROC_AUC} | {_ci(clean, 'roc_auc')} | "
        f"{_met(clean['roc_auc'] >= TARGET_ROC_AUC)} |",
        f"| sensitivity >= {TARGET_SENSITIVITY_AT_SPEC_90} at specificity >= 0.90 | "
        f"{clean['sensitivity_at_specificity_0.90']:.3f} | "
        f"{_met(clean['sensitivity_at_specificity_0.90'] >= TARGET_SENSITIVITY_AT_SPEC_90)} |",
        f"| ECE <= {TARGET_ECE} | {clean['ece']:.3f} after temperature scaling | {_met(clean['ece'] <= TARGET_ECE)} |",
        f"| trains in <= {TARGET_TRAIN_MINUTES} min on 2 CPU cores | "
        f"{_minutes(wall) if wall else 'not recorded'} | "
        f"{_met(None if not wall else wall <= 60 * TARGET_TRAIN_MINUTES)} |",
        f"| clearly beat mobilenetv3_small at 224 px from scratch (ROC-AUC ~{BASELINE_ROC_AUC}) | "
        f"{_ci(clean, 'roc_auc')} | {_met(clean['roc_auc_ci95'][0] > BASELINE_ROC_AUC)} |",
    ]
    return "\n".join(lines) + "\n"


def leak_block() -> str:
    """How much of the shipped val/test splits copies the shipped training files, and the clean split sizes."""
    report = _read("data_report.json")
    lines = ["| | files | exact copies of a shipped train file | exact or near copies |", "|---|---|---|---|"]
    for split in ("test", "val"):
        s = report["shipped_splits"][split]
        lines.append(f"| shipped {split} | {s['files']:,} | {s['exact_copies_of_train_files']:,} | "
                     f"{s['near_or_exact_copies_of_train_files']:,} |")
    clean = report["clean_splits"]
    sizes = ", ".join(f"{split} {c['images']:,} images / {c['groups']} groups" for split, c in clean.items())
    lines += [
        "",
        f"{report['files']:,} files hold {report['distinct_images']:,} distinct images, which fall into "
        f"**{report['groups']} copy groups** (largest {report['largest_group']} images). Whole groups are split "
        f"70/15/15 by images, stratified by label, seeded: {sizes}.",
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
    if name.startswith("bench/"):
        return bench_block(name.removeprefix("bench/"))
    raise SystemExit(f"README.md: unknown generated block {name!r}")


def render(text: str) -> str:
    """`text` with every generated block rebuilt."""
    return BLOCK.sub(lambda m: m.group(1) + block(m.group("name")) + m.group(4), text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if README.md is out of date")
    args = p.parse_args()
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            sys.exit("README.md is out of date: run `python scripts/readme_tables.py`")
        print("README.md matches its source files")
        return
    README.write_text(new)


if __name__ == "__main__":
    main()
