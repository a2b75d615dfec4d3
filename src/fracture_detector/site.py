"""A model's threshold re-chosen on one site's own labelled X-rays (`fracture-detector calibrate`).

The shipped threshold is the highest at which every training source's validation X-rays reach
the target sensitivity; at a hospital the model never saw, the probabilities sit elsewhere and the
same threshold gives another sensitivity and specificity (`bench/site_threshold.py` measures
both). A site that has labelled X-rays of its own can choose its threshold on them. This scores
them with the model as it is served, chooses the highest threshold that reaches the target
sensitivity on them, and writes a copy of the model folder with that threshold in `config.json`
(everything else unchanged) and a note in its card. No PyTorch needed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from .calibration import Calibration, sensitivity_specificity, threshold_for_sensitivity
from .errors import ModelError
from .predict import Predictor

# Fewer than this many X-rays of either label and the chosen threshold is mostly noise.
MIN_PER_LABEL = 20
CARD_HEADING = "## Threshold re-chosen at a site"


def positive_probabilities(predictor: Predictor, files: Sequence[str | Path], workers: int = 4) -> np.ndarray:
    """The calibrated probability of the positive class for each file, the X-ray check off (these are X-rays
    someone labelled); `ValueError` naming a file if any cannot be read."""
    results = list(predictor.predict_files(list(files), workers=workers, check=False))
    failed = [f"{r.source}: {r.error}" for r in results if r.prediction is None]
    if failed:
        raise ValueError(f"{len(failed)} files could not be read, e.g. {failed[0]}")
    positive = predictor.label_names[predictor.positive]
    return np.array([r.prediction.probabilities[positive] for r in results])


def site_threshold(predictor: Predictor, files: Sequence[str | Path], labels: Sequence[str], target: float,
                   workers: int = 4) -> dict:
    """Score `files` (their label names in `labels`) and choose the threshold for `target` sensitivity on them.

    Every file is scored, the X-ray check off, as `bench/site_threshold.py` does: a site's own labelled
    X-rays are X-rays. `ValueError` if a label is unknown or has fewer than `MIN_PER_LABEL` files,
    or a file cannot be read (nothing is written then).
    """
    unknown = sorted(set(labels) - set(predictor.label_names))
    if unknown:
        raise ValueError(f"labels {unknown} are not this model's ({predictor.label_names})")
    positive = predictor.label_names[predictor.positive]
    is_pos = np.array([label == positive for label in labels])
    counts = {positive: int(is_pos.sum()), "other": int((~is_pos).sum())}
    if min(counts.values()) < MIN_PER_LABEL:
        raise ValueError(f"{counts[positive]} {positive!r} and {counts['other']} other X-rays: at least "
                         f"{MIN_PER_LABEL} of each are needed to choose a threshold")
    prob = positive_probabilities(predictor, files, workers)
    threshold = threshold_for_sensitivity(prob, is_pos, target)
    rates = {key: dict(zip(("sensitivity", "specificity"), sensitivity_specificity(prob, is_pos, t)))
             for key, t in (("at_shipped_threshold", predictor.threshold), ("at_site_threshold", threshold))}
    return {"images": len(prob), "fractured": counts[positive], "target_sensitivity": target,
            "shipped_threshold": predictor.threshold, "threshold": threshold, **rates}


def write_site_model(model_dir: str | Path, out_dir: str | Path, record: dict) -> Path:
    """Copy `model_dir` to `out_dir` with the site's threshold in `config.json` and a note in `README.md`.

    `out_dir` must not exist: nothing is overwritten. `config.json` keeps every other field and
    records the site calibration under `site_calibration`.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise ModelError(f"{out_dir} already exists: choose a new folder, nothing was written")
    config = json.loads((model_dir / "config.json").read_text())
    calibration = replace(Calibration.from_config(config), threshold=record["threshold"],
                          target_sensitivity=record["target_sensitivity"], per_source=False)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(model_dir, tmp)
    (tmp / "config.json").write_text(json.dumps(config | calibration.to_config() | {"site_calibration": record},
                                                indent=2) + "\n")
    card = tmp / "README.md"
    if card.exists():
        card.write_text(card.read_text().rstrip("\n") + "\n\n" + card_note(record) + "\n")
    tmp.rename(out_dir)
    return out_dir


def card_note(record: dict) -> str:
    """The card's section on the re-chosen threshold: what it is, on what, and what it is worth."""
    shipped, site = record["at_shipped_threshold"], record["at_site_threshold"]
    return (f"{CARD_HEADING}\n\n"
            f"The decision threshold in `config.json` is {record['threshold']:.4f}, chosen on {record['images']} "
            f"labelled X-rays of one site ({record['fractured']} fractured) as the highest that reaches "
            f"{record['target_sensitivity']:.0%} sensitivity on them (`fracture-detector calibrate`); the model "
            f"shipped with {record['shipped_threshold']:.4f}. On those X-rays, sensitivity / specificity: "
            f"{shipped['sensitivity']:.2f} / {shipped['specificity']:.2f} at the shipped threshold, "
            f"{site['sensitivity']:.2f} / {site['specificity']:.2f} at this one. These are the X-rays the "
            "threshold was chosen on, so expect somewhat less on new ones; the rest of this card describes the "
            "model as shipped.")
