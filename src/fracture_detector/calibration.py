"""How a model's logits become a calibrated probability and a decision: one object, saved in `config.json`.

Training fits the temperature and picks the threshold on validation X-rays; evaluation,
the `Predictor`, the app and the CLI all read them back from here, so none of them
assumes which class is positive or what the threshold was chosen for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import CalibrationError

# The class a positive decision means. Training requires a folder of this name.
POSITIVE_LABEL = "fractured"
# The validation sensitivity a threshold is chosen for, unless told otherwise (training and `calibrate`).
DEFAULT_TARGET_SENSITIVITY = 0.9


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax probabilities `(N, C)` of logits `(N, C)` at `temperature`, in float64.

    The one softmax that chooses the threshold and that applies it: two implementations differ in
    the last bit, and a positive scored exactly at the threshold would then fall on either side.
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    exp = np.exp(scaled - scaled.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


def threshold_for_sensitivity(prob_pos: np.ndarray, is_pos: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity (recall of positives) is at least `target`."""
    scores = np.sort(prob_pos[is_pos])[::-1]
    if len(scores) == 0:
        return 0.5
    k = int(np.ceil(target * len(scores)))  # positives that must score >= threshold
    return float(scores[max(k, 1) - 1])


def threshold_for_every_source(prob_pos: np.ndarray, is_pos: np.ndarray, sources: np.ndarray, target: float) -> float:
    """The highest threshold at which every source's sensitivity is at least `target`.

    One pooled threshold is set by the largest source: a source whose probabilities sit
    higher or lower gets another operating point. The lowest of the per-source thresholds
    holds on each of them (sources without positives set nothing).
    """
    masks = [sources == name for name in np.unique(sources)]
    chosen = [threshold_for_sensitivity(prob_pos[m], is_pos[m], target) for m in masks if is_pos[m].any()]
    return min(chosen, default=0.5)


def sensitivity_specificity(prob_pos: np.ndarray, is_pos: np.ndarray, threshold: float) -> tuple[float, float]:
    pred = prob_pos >= threshold
    sens = float(pred[is_pos].mean()) if is_pos.any() else float("nan")
    spec = float((~pred[~is_pos]).mean()) if (~is_pos).any() else float("nan")
    return sens, spec


@dataclass(frozen=True)
class Calibration:
    """Softmax temperature, decision threshold and what they apply to.

    `threshold` is on the calibrated probability of `positive_label`; it was chosen on the
    validation X-rays to reach `target_sensitivity` (None if unknown): on every source's
    validation X-rays when `per_source`, else on all of them pooled (older models).
    """

    temperature: float
    threshold: float
    positive_label: str = POSITIVE_LABEL
    target_sensitivity: float | None = None
    per_source: bool = False

    @classmethod
    def from_config(cls, config: dict, where: str = "config.json") -> Calibration:
        """Read the calibration from a model's `config.json` dict; `CalibrationError` if it is not there."""
        missing = [key for key in ("temperature", "threshold", "positive_label") if key not in config]
        if missing:
            raise CalibrationError(
                f"{where} has no {', '.join(missing)}: this model was not calibrated by fracture-detector's "
                f"train.py, so its scores cannot be turned into decisions"
            )
        if config["positive_label"] not in config.get("label_names", []):
            raise CalibrationError(f"{where}: positive_label {config['positive_label']!r} is not one of its "
                                   f"label_names {config.get('label_names')}")
        target = config.get("target_sensitivity")
        return cls(float(config["temperature"]), float(config["threshold"]), str(config["positive_label"]),
                   None if target is None else float(target), bool(config.get("per_source", False)))

    def to_config(self) -> dict:
        """The fields written into `config.json`, beside timm's own."""
        return asdict(self)

    def positive_index(self, label_names: list[str]) -> int:
        """Index of the positive class among the model's outputs."""
        return list(label_names).index(self.positive_label)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated softmax probabilities `(N, C)` of logits `(N, C)` (an array, or a CPU tensor)."""
        return softmax(logits, self.temperature)

    def describe_threshold(self) -> str:
        """The threshold in words, e.g. 'threshold 0.129 (chosen for 95% sensitivity on validation X-rays)'."""
        text = f"threshold {self.threshold:.3f}"
        if self.target_sensitivity is not None:
            where = "each source's validation X-rays" if self.per_source else "validation X-rays"
            text += f" (chosen for {self.target_sensitivity:.0%} sensitivity on {where})"
        return text
