"""`Predictor`: classify X-ray files or pixel grids exactly as training and evaluation did.

The app and the CLI both classify through it: one file (`predict`), pixel grids
(`predict_pixels`, `predict_with_heatmaps`), or many files with decoding in parallel threads
(`predict_files`, the one batch path of the CLI and the demo). It joins three parts, each
with one job: the model folder (`bundle.ModelBundle`: config, calibration, X-ray check),
what runs the network (`runtime`: ONNX Runtime or PyTorch) and the heatmap (`heatmap`).
Every prediction says what the X-ray check (`xray_check`) found: an X-ray like the training
data, one unlike it (the probability comes with a warning), or not an X-ray (no probability).
Which folder to load is `loading`'s job. With a `model.onnx` in the folder, none of this
imports PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .bundle import ModelBundle
from .decode import open_image
from .errors import DecodeError, NotAnXrayError
from .heatmap import class_activation_map
from .preprocess import to_pixels, upright
from .resources import BUNDLED_MODEL
from .runtime import OnnxRuntime, TorchRuntime, open_runtime
from .xray_check import NOT_AN_XRAY, UNCHECKED, UNFAMILIAR, not_an_xray_reason

DISPLAY_SIZE = 512  # longest side of the images kept for display and heatmap overlays
MAX_BATCH = 64  # images per forward pass: one pass over a thousand 256 px grids needs tens of GB
FAR_FROM_XRAYS = "its features are far from those of every X-ray the model was trained on"


@dataclass
class Prediction:
    """Calibrated class probabilities for one image, the decision at the model's threshold, and what the
    X-ray check found (`check`: "X-ray", "X-ray unlike the training data", "not an X-ray" or "not checked").

    An image that is not an X-ray has no probabilities and no decision.
    """

    probabilities: dict[str, float] | None
    fractured: bool | None
    check: str = UNCHECKED
    distance: float | None = None  # the check's score: 99% of validation X-rays are within 1
    inverted: bool = False  # shown inverted (dark bone on white), so inverted back before scoring

    @property
    def decision(self) -> str:
        if self.fractured is None:
            return "not an X-ray"
        return "fracture suspected" if self.fractured else "no fracture detected"

    @property
    def warning(self) -> str | None:
        """One sentence for the user when the check found something, else None."""
        if self.check == NOT_AN_XRAY:
            return f"This does not look like an X-ray ({FAR_FROM_XRAYS}), so no fracture probability is given."
        notes = []
        if self.check == UNFAMILIAR:
            notes.append("This X-ray is unlike the ones the model was trained on, so its probability is less "
                         "reliable.")
        if self.inverted:
            notes.append("It looked like a radiograph shown inverted (dark bone on white), so it was inverted "
                         "back before scoring.")
        return " ".join(notes) or None


@dataclass
class Xray:
    """A decoded upload: the model's pixel grid, a grayscale copy for display, and whether it was shown
    inverted (and so inverted back, `preprocess.upright`)."""

    pixels: np.ndarray
    image: Image.Image
    inverted: bool = False


@dataclass
class FileResult:
    """One input of `Predictor.predict_files`: its prediction (and heatmap), or why it failed or was refused.

    `refused` is what the X-ray check saw when it turned the file away (then `error` says so too).
    """

    source: str | Path
    xray: Xray | None = None
    prediction: Prediction | None = None
    heatmap: np.ndarray | None = None
    error: str | None = None
    refused: str | None = None


def read_xray(source: str | Path | bytes, image_size: int, check: bool = True) -> Xray:
    """Decode `source` for the model; raises `DecodeError` (or `NotAnXrayError` when `check` and the
    image is a colour or a blank one)."""
    image = open_image(source)
    if check and (reason := not_an_xray_reason(image)):
        name = "<bytes>" if isinstance(source, bytes) else str(source)
        raise NotAnXrayError(name, reason)
    gray, inverted = upright(image.convert("L"))
    pixels = to_pixels(gray, image_size)
    gray.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE))
    return Xray(pixels, gray, inverted)


class Predictor:
    """Classify X-ray files or pixel grids exactly as training and evaluation did."""

    def __init__(self, model_dir: str | Path = BUNDLED_MODEL, backend: str = "auto", log=None):
        """Load a saved model folder; `ModelError` (or `CalibrationError`) if it is not a calibrated model, or if
        what `backend` asks for cannot run here.

        `backend` (`runtime.open_runtime`): "auto" runs the model with ONNX Runtime where the
        folder has `model.onnx` (the bundled model does), else with PyTorch; "onnx" always with
        ONNX Runtime (exported into a cache on first use, with PyTorch); "torch" with PyTorch.
        `log` (default: stderr) tells of a first-use export.
        """
        self.bundle = ModelBundle(model_dir)
        self.runtime: OnnxRuntime | TorchRuntime = open_runtime(self.bundle, backend, log)
        # The X-ray check in use (None: the cheap image statistics only); an attribute, so a caller can swap it.
        self.feature_check = self.bundle.feature_check
        self._torch: TorchRuntime | None = self.runtime if isinstance(self.runtime, TorchRuntime) else None

    # What the model folder says, read from the bundle.
    model_dir = property(lambda self: self.bundle.folder)
    config = property(lambda self: self.bundle.config)
    calibration = property(lambda self: self.bundle.calibration)
    label_names = property(lambda self: self.bundle.label_names)
    positive = property(lambda self: self.bundle.positive)
    image_size = property(lambda self: self.bundle.image_size)

    @property
    def backend(self) -> str:
        """What runs the model: "onnxruntime" or "torch"."""
        return self.runtime.name

    @property
    def threshold(self) -> float:
        """The decision threshold on the calibrated probability of the positive class."""
        return self.calibration.threshold

    @property
    def torch_runtime(self) -> TorchRuntime:
        """The model in PyTorch, loaded on first use (Grad-CAM for heads without a class activation map, or a
        user who wants the timm model); `ModelError` in a serving install, which has no PyTorch."""
        if self._torch is None:
            self._torch = TorchRuntime(self.bundle, purpose="a Grad-CAM heatmap (this head has no class "
                                                            "activation map) or the timm model")
        return self._torch

    @property
    def model(self):
        """The timm model (`torch.nn.Module`), in eval mode; needs the full install (`torch_runtime`)."""
        return self.torch_runtime.model

    def model_grids(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel grids from `preprocess.to_pixels` as this model was trained on them (equalised if it was)."""
        return self.bundle.model_grids(pixels)

    def predict_pixels(self, pixels: np.ndarray, inverted: Sequence[bool] | None = None,
                       check: bool = True) -> list[Prediction]:
        """uint8 pixel grids `(N, S, S)` (from `preprocess.to_pixels`) -> one Prediction each.

        `inverted` marks grids that were inverted back (`Xray.inverted`; the predictions say
        so). With `check`, an image that is not an X-ray gets no probabilities.
        """
        return self._classify(pixels, inverted, check, heatmaps=False)[0]

    def predict_with_heatmaps(self, pixels: np.ndarray, inverted: Sequence[bool] | None = None,
                              check: bool = True) -> tuple[list[Prediction], np.ndarray]:
        """`predict_pixels` plus heatmaps `(N, S, S)` in [0, 1] for the positive class (`heatmap`): class
        activation maps from the same forward pass, or Grad-CAM where the head has none (PyTorch)."""
        return self._classify(pixels, inverted, check, heatmaps=True)

    def _classify(self, pixels: np.ndarray, inverted: Sequence[bool] | None, check: bool,
                  heatmaps: bool) -> tuple[list[Prediction], np.ndarray | None]:
        """Logits, heatmaps and the X-ray check from the same forward pass, run MAX_BATCH grids at a time."""
        grids = self.model_grids(np.asarray(pixels))
        if not len(grids):
            return [], np.zeros(grids.shape, np.float32) if heatmaps else None
        parts = []  # (logits, heatmaps, statistics) of at most MAX_BATCH grids each
        for part in np.split(grids, range(MAX_BATCH, len(grids), MAX_BATCH)):
            if heatmaps and self.runtime.cam_weights is None:  # a head without a class activation map: Grad-CAM
                parts.append(self.torch_runtime.gradcam(part, self.positive))
            else:
                logits, features, stats = self.forward(part)
                cams = class_activation_map(features, self.runtime.cam_weights, part.shape[-2:]) if heatmaps else None
                parts.append((logits, cams, stats))
        # Heatmaps only when asked for; statistics only from a runtime that gives them.
        logits, cams, stats = (None if parts[0][k] is None else np.concatenate([part[k] for part in parts])
                               for k in range(3))
        distances = [None] * len(grids)
        if self.feature_check is not None:
            distances = self.feature_check.distance(stats).tolist()
        predictions = []
        for p, distance, was_inverted in zip(self.calibration.probabilities(logits), distances,
                                             inverted or [False] * len(grids)):
            verdict = UNCHECKED if distance is None else self.feature_check.verdict(distance)
            refused = check and verdict == NOT_AN_XRAY
            predictions.append(Prediction(
                probabilities=None if refused else {name: float(p[i]) for i, name in enumerate(self.label_names)},
                fractured=None if refused else bool(p[self.positive] >= self.threshold),
                check=verdict, distance=distance, inverted=bool(was_inverted),
            ))
        return predictions, cams

    def forward(self, grids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Model-ready pixel grids `(N, S, S)` -> logits, last feature maps and X-ray check statistics, as
        NumPy arrays, by ONNX Runtime or PyTorch (`runtime`)."""
        if not len(grids):
            return np.zeros((0, len(self.label_names)), np.float32), np.zeros(0), np.zeros(0)
        return self.runtime.forward(self.bundle.inputs(grids))

    def predict(self, source: str | Path | bytes, check: bool = True) -> Prediction:
        """Decode one file (path or bytes) and classify it; raises `DecodeError` if unreadable.

        With `check` (the default) it raises `NotAnXrayError` for images that are not X-rays;
        without it, they get probabilities too (and `check` still says what was found).
        """
        xray = read_xray(source, self.image_size, check)
        prediction = self.predict_pixels(xray.pixels[None], [xray.inverted], check)[0]
        if prediction.probabilities is None:
            raise NotAnXrayError("<bytes>" if isinstance(source, bytes) else str(source), FAR_FROM_XRAYS)
        return prediction

    def predict_files(
        self, sources: Sequence[str | Path], batch_size: int = MAX_BATCH, workers: int = 4, check: bool = True,
        heatmaps: bool = False,
    ) -> Iterator[FileResult]:
        """Classify many files in batches; yields one `FileResult` per source, in input order.

        Threads decode the next batch while the model runs on this one (PIL releases the
        GIL while decoding). With `heatmaps`, the heatmaps come from the same forward
        pass as the predictions. A file that fails gets `error` (why) and no prediction; one
        that is not an X-ray gets `error` and a prediction without probabilities.
        """
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be at least 1, not {batch_size} and {workers}")

        def load(source):
            try:
                return read_xray(source, self.image_size, check)
            except DecodeError as e:  # NotAnXrayError too: the cheap image statistics refused it
                return e
            except Exception as e:  # whatever else a decoder raises is this file's failure, not the batch's
                return DecodeError(str(source), f"could not be read ({type(e).__name__}: {str(e)[:200]})")

        batches = [sources[i : i + batch_size] for i in range(0, len(sources), batch_size)]
        with ThreadPoolExecutor(workers) as pool:
            upcoming = pool.map(load, batches[0]) if batches else iter(())
            for k, batch in enumerate(batches):
                loaded = list(upcoming)
                if k + 1 < len(batches):
                    upcoming = pool.map(load, batches[k + 1])  # decoded while the model runs
                good = [x for x in loaded if isinstance(x, Xray)]
                predictions, cams = [], [None] * len(good)
                if good:
                    pixels, inverted = np.stack([x.pixels for x in good]), [x.inverted for x in good]
                    predictions, maps = self._classify(pixels, inverted, check, heatmaps)
                    cams = cams if maps is None else maps
                results = iter(zip(predictions, cams))
                for source, x in zip(batch, loaded):
                    if isinstance(x, DecodeError):
                        yield FileResult(source, error=x.reason, refused=getattr(x, "finding", None))
                        continue
                    prediction, cam = next(results)
                    if prediction.probabilities is None:
                        refusal = NotAnXrayError(str(source), FAR_FROM_XRAYS)  # the same sentence as `predict`
                        yield FileResult(source, x, prediction, error=refusal.reason, refused=refusal.finding)
                    else:
                        yield FileResult(source, x, prediction, cam)
