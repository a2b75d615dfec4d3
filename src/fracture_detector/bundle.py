"""A saved model folder as serving reads it, without PyTorch: its config, calibration, labels, input
preprocessing and X-ray check. What runs the network is a runtime's job (`runtime`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open

from .calibration import Calibration
from .errors import ModelError
from .preprocess import MEAN, STD, equalize, normalize
from .xray_check import FeatureCheck, load_feature_check

# What a model folder needs to load: timm's config (with our calibration) and safetensors weights.
REQUIRED_FILES = ("config.json", "model.safetensors")
WEIGHTS_FILE = "model.safetensors"


def check_model_folder(folder: str | Path) -> None:
    """Raise `ModelError` unless `folder` holds a saved model (config and safetensors weights)."""
    missing = [name for name in REQUIRED_FILES if not (Path(folder) / name).is_file()]
    if missing:
        raise ModelError(f"{folder}: not a saved model folder (missing {', '.join(missing)})")


def read_config(model_dir: str | Path) -> dict:
    """The `config.json` of a saved model folder."""
    return json.loads((Path(model_dir) / "config.json").read_text())


class ModelBundle:
    """One saved model folder: `config.json` (timm's fields and our calibration), the X-ray check, and the
    preprocessing the network expects. Raises `ModelError` (or `CalibrationError`) for a folder that is
    not a calibrated model."""

    def __init__(self, folder: str | Path):
        check_model_folder(folder)
        self.folder = Path(folder)
        self.config = read_config(folder)
        self.calibration = Calibration.from_config(self.config, f"{folder}/config.json")
        self.label_names: list[str] = list(self.config["label_names"])
        self.positive = self.calibration.positive_index(self.label_names)
        data = self.config["pretrained_cfg"]
        self.image_size = int(data["input_size"][-1])
        self.mean, self.std = tuple(data.get("mean", MEAN)), tuple(data.get("std", STD))
        self.equalize = bool(self.config.get("equalize", False))
        self.feature_check: FeatureCheck | None = load_feature_check(folder)  # None: cheap image statistics only

    def model_grids(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel grids from `preprocess.to_pixels` as this model was trained on them (equalised if it was)."""
        return equalize(pixels) if self.equalize else pixels

    def inputs(self, grids: np.ndarray) -> np.ndarray:
        """Model-ready grids `(N, S, S)` -> the network's input `(N, 1, S, S)` float32, normalised with the
        model's own mean and deviation (as timm's transform from its `pretrained_cfg`)."""
        return np.ascontiguousarray(normalize(np.asarray(grids), self.mean, self.std), dtype=np.float32)

    def weight(self, name: str) -> np.ndarray:
        """One tensor of `model.safetensors` as float32 (read alone, not the whole file)."""
        with safe_open(self.folder / WEIGHTS_FILE, framework="numpy") as f:
            if name not in f.keys():
                raise ModelError(f"{self.folder}/{WEIGHTS_FILE} has no tensor {name!r}")
            return f.get_tensor(name).astype(np.float32)
