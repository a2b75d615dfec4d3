"""`Predictor`: a saved model with its preprocessing, labels, temperature and threshold.

The app and the CLI both classify through it: one file (`predict`), pixel grids
(`predict_pixels`), or many files with decoding in parallel threads (`predict_files`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .decode import DecodeError, open_image
from .heatmap import gradcam
from .model import load_model, predict_logits
from .preprocess import to_pixels
from .xray_check import not_an_xray_reason

BUNDLED_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
DISPLAY_SIZE = 512  # longest side of the images kept for display and heatmap overlays


class NotAnXrayError(DecodeError):
    """The file is an image, but it does not look like an X-ray; `reason` says why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: this does not look like an X-ray ({reason})")
        self.reason = reason


@dataclass
class Prediction:
    """Calibrated class probabilities for one image and the decision at the model's threshold."""

    probabilities: dict[str, float]
    fractured: bool

    @property
    def decision(self) -> str:
        return "fracture suspected" if self.fractured else "no fracture detected"


@dataclass
class Xray:
    """A decoded upload: the model's pixel grid and a grayscale copy for display."""

    pixels: np.ndarray
    image: Image.Image


@dataclass
class FileResult:
    """One input of `Predictor.predict_files`: its prediction (and heatmap), or why it failed."""

    source: str | Path
    xray: Xray | None = None
    prediction: Prediction | None = None
    heatmap: np.ndarray | None = None
    error: str | None = None


def read_xray(source: str | Path | bytes, image_size: int, check: bool = True) -> Xray:
    """Decode `source` for the model; raises `DecodeError` (or `NotAnXrayError` when `check`)."""
    image = open_image(source)
    if check and (reason := not_an_xray_reason(image)):
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise NotAnXrayError(name, reason)
    gray = image.convert("L")
    pixels = to_pixels(gray, image_size)
    gray.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
    return Xray(pixels, gray)


class Predictor:
    """Classify X-ray files or pixel grids exactly as training and evaluation did."""

    def __init__(self, model_dir: str | Path = BUNDLED_MODEL):
        self.model, self.config = load_model(model_dir)
        self.model.requires_grad_(False)  # inference only: Grad-CAM needs gradients of activations, not weights
        # Inputs are channels_last (model_inputs); a matching model is ~25% faster on CPU (bench/app_speed.py).
        self.model.to(memory_format=torch.channels_last)
        self.model_dir = Path(model_dir)
        self.label_names: list[str] = list(self.config["label_names"])
        self.positive = self.label_names.index(self.config.get("positive_label", "fractured"))
        self.temperature = float(self.config.get("temperature", 1.0))
        self.threshold = float(self.config.get("threshold", 0.5))
        self.image_size = int(self.config["pretrained_cfg"]["input_size"][-1])

    def predict_pixels(self, pixels: np.ndarray) -> list[Prediction]:
        """uint8 pixel grids `(N, S, S)` (from `preprocess.to_pixels`) -> one Prediction each."""
        return self._predictions(predict_logits(self.model, pixels))

    def predict_with_heatmaps(self, pixels: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
        """Predictions and Grad-CAM maps `(N, S, S)` in [0, 1] for the fractured class, in one forward pass."""
        logits, cams = gradcam(self.model, pixels, self.positive)
        return self._predictions(logits), cams

    def _predictions(self, logits: torch.Tensor) -> list[Prediction]:
        probs = torch.softmax(logits / self.temperature, dim=1).numpy()
        return [
            Prediction(
                probabilities={name: float(p[i]) for i, name in enumerate(self.label_names)},
                fractured=bool(p[self.positive] >= self.threshold),
            )
            for p in probs
        ]

    def predict(self, source: str | Path | bytes, check: bool = False) -> Prediction:
        """Decode one file (path or bytes) and classify it; raises `DecodeError` if unreadable.

        With `check=True` it also raises `NotAnXrayError` for images that are not X-rays.
        """
        return self.predict_pixels(read_xray(source, self.image_size, check).pixels[None])[0]

    def predict_files(
        self, sources: Sequence[str | Path], batch_size: int = 64, workers: int = 4, check: bool = True,
        heatmaps: bool = False,
    ) -> Iterator[FileResult]:
        """Classify many files in batches; yields one `FileResult` per source, in input order.

        Threads decode the next batch while the model runs on this one (PIL releases the
        GIL while decoding). With `heatmaps`, the Grad-CAM maps come from the same forward
        pass as the predictions. A file that fails gets `error` (why) and no prediction.
        """

        def load(source):
            try:
                return read_xray(source, self.image_size, check)
            except DecodeError as e:
                return str(e).split(": ", 1)[-1]

        batches = [sources[i : i + batch_size] for i in range(0, len(sources), batch_size)]
        with ThreadPoolExecutor(workers) as pool:
            upcoming = pool.map(load, batches[0]) if batches else iter(())
            for k, batch in enumerate(batches):
                loaded = list(upcoming)
                if k + 1 < len(batches):
                    upcoming = pool.map(load, batches[k + 1])  # decoded while the model runs
                good = [x.pixels for x in loaded if isinstance(x, Xray)]
                predictions, cams = [], [None] * len(good)
                if good and heatmaps:
                    predictions, cams = self.predict_with_heatmaps(np.stack(good))
                elif good:
                    predictions = self.predict_pixels(np.stack(good))
                results = iter(zip(predictions, cams))
                for source, x in zip(batch, loaded):
                    if isinstance(x, Xray):
                        prediction, cam = next(results)
                        yield FileResult(source, x, prediction, cam)
                    else:
                        yield FileResult(source, error=x)
