"""`Predictor`: a saved model with its preprocessing, labels and calibration; and which model to load.

The app and the CLI both classify through it: one file (`predict`), pixel grids
(`predict_pixels`), or many files with decoding in parallel threads (`predict_files`).
`resolve_model` turns a model spec (the bundled default, `hf-hub:ORG/NAME[@REV]`,
`local-dir:PATH` or a path) into a local folder; `resolve_for_serving` adds the policy of
a server that must start even when the Hub does not answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import hub
from .calibration import Calibration
from .decode import DecodeError, open_image
from .heatmap import gradcam
from .model import check_model_folder, load_model, predict_logits
from .preprocess import to_pixels
from .resources import BUNDLED_MODEL
from .xray_check import not_an_xray_reason

DISPLAY_SIZE = 512  # longest side of the images kept for display and heatmap overlays


class NotAnXrayError(DecodeError):
    """The file is an image, but it does not look like an X-ray; `finding` says what the check saw."""

    def __init__(self, name: str, reason: str):
        super().__init__(name, f"this does not look like an X-ray ({reason})")
        self.finding = reason  # what the check saw, e.g. "it is a colour image"


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
        """Load a saved model folder; `ModelError` (or `CalibrationError`) if it is not a calibrated model."""
        check_model_folder(model_dir)
        self.model, self.config = load_model(model_dir)
        self.calibration = Calibration.from_config(self.config, f"{model_dir}/config.json")
        self.model.requires_grad_(False)  # inference only: Grad-CAM needs gradients of activations, not weights
        # Inputs are channels_last (model_inputs); a model in the same layout runs faster on CPU.
        self.model.to(memory_format=torch.channels_last)
        self.model_dir = Path(model_dir)
        self.label_names: list[str] = list(self.config["label_names"])
        self.positive = self.calibration.positive_index(self.label_names)
        self.image_size = int(self.config["pretrained_cfg"]["input_size"][-1])

    def predict_pixels(self, pixels: np.ndarray) -> list[Prediction]:
        """uint8 pixel grids `(N, S, S)` (from `preprocess.to_pixels`) -> one Prediction each."""
        return self._predictions(predict_logits(self.model, pixels))

    @property
    def threshold(self) -> float:
        """The decision threshold on the calibrated probability of the positive class."""
        return self.calibration.threshold

    def predict_with_heatmaps(self, pixels: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
        """Predictions and Grad-CAM maps `(N, S, S)` in [0, 1] for the positive class, in one forward pass."""
        logits, cams = gradcam(self.model, pixels, self.positive)
        return self._predictions(logits), cams

    def _predictions(self, logits: torch.Tensor) -> list[Prediction]:
        probs = self.calibration.probabilities(logits)
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
                return e.reason

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


def resolve_model(model: str | Path | None = None, revision: str | None = None,
                  local_files_only: bool = False) -> Path:
    """A local folder holding the model: `hf-hub:ORG/NAME[@REV]` (through the Hugging Face cache),
    `local-dir:PATH`, a plain path, or None for the bundled default.

    Raises `HubError` for a Hub model that cannot be had, `ModelError` for a folder that is not a model.
    """
    spec = str(model or BUNDLED_MODEL)
    if spec.startswith("hf-hub:"):
        repo_id, revision = hub.parse_spec(spec, revision)
        return hub.download(repo_id, revision, local_files_only)
    path = Path(spec.removeprefix("local-dir:")).expanduser()
    check_model_folder(path)
    return path


def resolve_for_serving(model: str | Path | None = None) -> tuple[Path, str]:
    """`resolve_model` for a server that must start: the folder and one line saying where it came from.

    When the Hub cannot be reached, a Hub model comes from the local cache if it is there,
    else the bundled model is served; the line says so. Other failures (no such repository,
    a local folder that is not a model) raise.
    """
    if not model:
        return BUNDLED_MODEL, "the bundled model (fracture_detector/default_model)"
    spec = str(model)
    if not spec.startswith("hf-hub:"):
        return resolve_model(spec), f"local folder {spec}"
    repo_id, revision = hub.parse_spec(spec)
    if not hub.answers(repo_id, revision):
        unreachable = hub.unreachable_reason()
        try:
            folder = resolve_model(spec, local_files_only=True)
        except hub.HubError:
            return BUNDLED_MODEL, f"the bundled model: {unreachable} and {spec} is not in the local cache"
        return folder, f"{spec} (revision {folder.name[:12]}) from the local cache: {unreachable}"
    folder = resolve_model(spec)
    return folder, f"{spec} (revision {folder.name[:12]}) from {hub.endpoint()}"


def load(model: str | Path | None = None, revision: str | None = None) -> Predictor:
    """A `Predictor` for `model` (see `resolve_model`), with its preprocessing, labels and calibration."""
    return Predictor(resolve_model(model, revision))
