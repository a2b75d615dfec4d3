"""Metrics for a binary fracture classifier, with honest uncertainty.

Everything is computed on the calibrated probability of the positive class (`Calibration`).
Confidence intervals come from a cluster bootstrap over near-copy groups: copies of one
X-ray are not independent evidence, so whole groups are resampled.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from .calibration import Calibration, sensitivity_specificity, softmax


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T minimising the negative log-likelihood of softmax(logits / T).

    A grid search over one parameter: exact enough, and it cannot diverge on tiny validation sets.
    """
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels)
    temps = torch.logspace(-1.3, 1.3, 261, dtype=torch.float64)
    nll = torch.stack(
        [torch.nn.functional.cross_entropy(logits_t / t, labels_t) for t in temps]
    )
    return float(temps[nll.argmin()])


def temperature_that_helps(logits: np.ndarray, labels: np.ndarray, positive: int, groups: np.ndarray,
                           n: int = 1000, seed: int = 0) -> tuple[float, dict]:
    """The fitted temperature where it lowers the validation ECE by more than its noise, else 1.

    `fit_temperature` minimises the likelihood, not the ECE, and on a well calibrated model it moves
    the ECE by less than the resampling noise, either way on a new split. It is kept only when the
    95% interval of the ECE drop (at temperature 1 minus at the fitted one) under a group bootstrap
    of these validation X-rays lies above 0. Returns the temperature and what decided it.
    """
    fitted = fit_temperature(logits, labels)
    is_pos = labels == positive
    both = np.stack([positive_probability(logits, positive), positive_probability(logits, positive, fitted)], 1)

    def drop(y: np.ndarray, prob: np.ndarray) -> float:
        return expected_calibration_error(prob[:, 0], y) - expected_calibration_error(prob[:, 1], y)

    low, high = bootstrap_ci(drop, both, is_pos, groups, n, seed)
    kept = bool(low > 0)
    return (fitted if kept else 1.0), {
        "fitted": fitted, "kept": kept,
        "validation_ece_at_1": expected_calibration_error(both[:, 0], is_pos),
        "validation_ece_at_fitted": expected_calibration_error(both[:, 1], is_pos),
        "ece_drop_ci95": [low, high],
    }


def positive_probability(logits: np.ndarray, positive: int, temperature: float = 1.0) -> np.ndarray:
    """Softmax probability of class `positive` at the given temperature."""
    return softmax(logits, temperature)[:, positive]


def expected_calibration_error(prob_pos: np.ndarray, is_pos: np.ndarray, bins: int = 15) -> float:
    """ECE of the predicted class's confidence, in equal-width bins."""
    confidence = np.maximum(prob_pos, 1 - prob_pos)
    correct = (prob_pos >= 0.5) == is_pos
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def bootstrap_ci(
    metric, prob_pos: np.ndarray, is_pos: np.ndarray, groups: np.ndarray, n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% interval of `metric(is_pos, prob_pos)` under a bootstrap that resamples whole groups.

    Our own: scikit-learn and scipy bootstrap single observations, not clusters of copies.
    """
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    values = []
    for _ in range(n):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        y = is_pos[idx]
        if y.all() or not y.any():
            continue
        values.append(metric(y, prob_pos[idx]))
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def evaluate(
    logits: np.ndarray,
    labels: np.ndarray,
    label_names: list[str],
    calibration: Calibration,
    groups: np.ndarray | None = None,
    bootstrap: int = 1000,
) -> dict:
    """All reported metrics for one evaluation set; `labels` index into `label_names`.

    `accuracy_at_threshold` scores the decision at the calibrated threshold; `accuracy_argmax`
    the most probable class.
    """
    positive = calibration.positive_index(label_names)
    threshold = calibration.threshold
    prob = calibration.probabilities(logits)[:, positive]
    is_pos = labels == positive
    pred_pos = prob >= threshold
    pred = np.where(pred_pos, positive, 1 - positive)  # binary: the other class
    groups = np.arange(len(labels)) if groups is None else groups
    both = bool(is_pos.any() and (~is_pos).any())
    sens, spec = sensitivity_specificity(prob, is_pos, threshold)
    out = {
        "images": int(len(labels)),
        "groups": int(len(np.unique(groups))),
        "positives": int(is_pos.sum()),
        "accuracy_at_threshold": float((pred == labels).mean()) if len(labels) else float("nan"),
        "accuracy_argmax": float((np.asarray(logits).argmax(1) == labels).mean()) if len(labels) else float("nan"),
        "threshold": float(threshold),
        "sensitivity": sens,
        "specificity": spec,
        "ece_uncalibrated": expected_calibration_error(positive_probability(logits, positive), is_pos),
        "ece": expected_calibration_error(prob, is_pos),
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(len(label_names)))).tolist(),
        "classification_report": classification_report(
            labels, pred, labels=list(range(len(label_names))), target_names=label_names,
            output_dict=True, zero_division=0,
        ),
    }
    if both:
        out["roc_auc"] = float(roc_auc_score(is_pos, prob))
        out["pr_auc"] = float(average_precision_score(is_pos, prob))
        if bootstrap:
            out["roc_auc_ci95"] = bootstrap_ci(roc_auc_score, prob, is_pos, groups, bootstrap)
            out["pr_auc_ci95"] = bootstrap_ci(average_precision_score, prob, is_pos, groups, bootstrap)
        fpr, tpr, _ = roc_curve(is_pos, prob)
        for specificity in (0.80, 0.90):  # the operating points the targets are stated at
            spec_ok = (1 - fpr) >= specificity
            out[f"sensitivity_at_specificity_{specificity:.2f}"] = float(tpr[spec_ok].max()) if spec_ok.any() else 0.0
    return out


def save_plots(results: dict[str, dict], curves: dict[str, tuple], label_names: list[str], out_dir: Path) -> None:
    """Confusion matrices (PNG) and ROC curves for each evaluation set.

    Plain `Figure`s, not pyplot: no global backend is switched, so a notebook that trains
    keeps showing its own figures.
    """
    from matplotlib.figure import Figure

    names = list(results)
    fig = Figure(figsize=(4.2 * len(names), 3.8))
    axes = fig.subplots(1, len(names))
    for ax, name in zip(np.atleast_1d(axes), names):
        cm = np.array(results[name]["confusion_matrix"])
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="black" if v < cm.max() / 2 else "white")
        ax.set_xticks(range(len(label_names)), label_names)
        ax.set_yticks(range(len(label_names)), label_names, rotation=90, va="center")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png", dpi=80)

    fig = Figure(figsize=(4.5, 4.2))
    ax = fig.subplots()
    for name, (is_pos, prob) in curves.items():
        if is_pos.any() and (~is_pos).any():
            fpr, tpr, _ = roc_curve(is_pos, prob)
            ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(is_pos, prob):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "roc_curve.png", dpi=80)


def write_json(path: Path, obj) -> None:
    """Pretty JSON, written atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)
