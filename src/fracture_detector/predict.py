"""`Predictor`: a saved model with its preprocessing, labels, temperature and threshold."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model import load_model, predict_logits
from .preprocess import load_pixels

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"


@dataclass
class Prediction:
    """Calibrated class probabilities for one image and the decision at the model's threshold."""

    probabilities: dict[str, float]
    fractured: bool


class Predictor:
    """Classify X-ray files or pixel grids exactly as training and evaluation did."""

    def __init__(self, model_dir: str | Path = BUNDLED_MODEL):
        self.model, self.config = load_model(model_dir)
        self.model_dir = Path(model_dir)
        self.label_names: list[str] = list(self.config["label_names"])
        self.positive = self.label_names.index(self.config.get("positive_label", "fractured"))
        self.temperature = float(self.config.get("temperature", 1.0))
        self.threshold = float(self.config.get("threshold", 0.5))
        self.image_size = int(self.config["pretrained_cfg"]["input_size"][-1])

    def predict_pixels(self, pixels: np.ndarray) -> list[Prediction]:
        """uint8 pixel grids `(N, S, S)` (from `preprocess.to_pixels`) -> one Prediction each."""
        probs = torch.softmax(predict_logits(self.model, pixels) / self.temperature, dim=1).numpy()
        return [
            Prediction(
                probabilities={name: float(p[i]) for i, name in enumerate(self.label_names)},
                fractured=bool(p[self.positive] >= self.threshold),
            )
            for p in probs
        ]

    def predict(self, source: str | Path | bytes) -> Prediction:
        """Decode one file (path or bytes) and classify it; raises `DecodeError` if unreadable."""
        return self.predict_pixels(load_pixels(source, self.image_size)[None])[0]
