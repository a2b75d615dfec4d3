"""Pick the example X-rays that ship with the package, from the bundled model's clean test split.

For each source and label, copy groups of the clean test split (`split_manifest.csv.gz`)
are drawn in a seeded random order, one JPEG per group; the first `--per-class` that the
bundled model classifies correctly at its threshold are kept. Every draw is recorded in
`examples/README.md`, wrong ones included, so "the bundled model gets the examples right"
(a test) is read for what it is: the examples are correct cases, not typical ones.

    python scripts/pick_examples.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf
"""

from __future__ import annotations

import argparse
import csv
import gzip
import random
import shutil
from pathlib import Path

from fracture_detector.card import describe_datasets
from fracture_detector.data import MANIFEST_NAME, parse_source
from fracture_detector.predict import Predictor
from fracture_detector.resources import BUNDLED_MODEL, EXAMPLES
from fracture_detector.xray_check import FAMILIAR

SHORT_NAMES = {"fracture-multi-region": "kaggle", "roboflow-bone-fracture": "roboflow"}  # others: their name


def clean_test_groups(model_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """(source, label) -> one JPEG manifest row per copy group of the clean test split (the first by path),
    groups in the order of their ids."""
    with gzip.open(model_dir / MANIFEST_NAME, "rt", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test" and r["path"].lower().endswith((".jpg", ".jpeg"))]
    first: dict[tuple[str, str], dict[int, dict]] = {}
    for r in sorted(rows, key=lambda r: r["path"]):
        first.setdefault((r["source"], r["label"]), {}).setdefault(int(r["group"]), r)
    return {key: [by_group[g] for g in sorted(by_group)] for key, by_group in sorted(first.items())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER for each source of the bundled model")
    p.add_argument("--per-class", type=int, default=2, help="examples per source and label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-kb", type=int, default=300, help="skip larger files (they ship in every wheel)")
    args = p.parse_args()
    roots = dict(parse_source(spec) for spec in args.data)
    predictor = Predictor(BUNDLED_MODEL)
    positive = predictor.calibration.positive_label
    picked, tried = [], {}
    for (source, label), rows in clean_test_groups(BUNDLED_MODEL).items():
        if source not in roots:
            raise SystemExit(f"no folder for source {source}: pass {source}=FOLDER")
        random.Random(f"{args.seed}:{source}:{label}").shuffle(rows)
        kept, draws = 0, 0
        for row in rows:
            if kept == args.per_class:
                break
            path = Path(roots[source]) / row["path"]
            if path.stat().st_size > args.max_kb * 1024:
                continue  # not drawn: too large to ship
            draws += 1
            result = predictor.predict(path, check=False)
            if result.check == FAMILIAR and result.fractured == (label == positive):
                kept += 1
                name = f"{label.replace(' ', '_')}_{SHORT_NAMES.get(source, source)}_{kept}.jpg"
                picked.append((name, source, label, row["path"], result.probabilities[positive]))
        tried[(source, label)] = (kept, draws)
    for old in EXAMPLES.glob("*.jpg"):
        old.unlink()
    for name, source, _, path, _ in picked:
        shutil.copyfile(Path(roots[source]) / path, EXAMPLES / name)
    write_readme(picked, tried, predictor.threshold, args)
    print(f"wrote {len(picked)} examples to {EXAMPLES}")


def write_readme(picked: list, tried: dict, threshold: float, args: argparse.Namespace) -> None:
    datasets = {d["name"]: d for d in describe_datasets(sorted({source for _, source, *_ in picked}))}
    lines = [
        "# Example X-rays",
        "",
        "Real X-rays, used by the demo and the tests; written by `python scripts/pick_examples.py "
        f"--per-class {args.per_class} --seed {args.seed} --max-kb {args.max_kb}`. Sources and licences:",
        "",
        *[f"- **{d['name']}**: \"{d['title']}\" ({d['origin']}), {d['licence']}." for d in datasets.values()],
        "",
        "| file | label | source | file in the source's distributed layout | P(fractured), calibrated |",
        "|---|---|---|---|---|",
        *[f"| `{name}` | {label} | {source} | `{path}` | {p:.3f} |" for name, source, label, path, p in picked],
        "",
        "How they were chosen: all come from copy groups of the bundled model's **clean test split**",
        "(the model never saw them or any copy of them). For each source and label, the groups were drawn in a",
        f"seeded random order, one JPEG per group (groups whose file is over {args.max_kb} KB passed over), and",
        f"the first ones that the bundled model classifies correctly at its threshold ({threshold:.3f}), and",
        "that its X-ray check takes for X-rays like the training data, were kept. Draws it took (kept / drawn):",
        "",
        *[f"- {source}, {label}: {kept} / {draws}" for (source, label), (kept, draws) in tried.items()],
        "",
        "The draws not kept are X-rays the model got wrong at its threshold (or, rarely, X-rays its check calls",
        "unlike the training data): the examples are correct cases, not typical ones.",
    ]
    (EXAMPLES / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
