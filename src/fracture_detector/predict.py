"""`Predictor`: a saved model with its preprocessing, labels, calibration and X-ray check; and which model to load.

The app and the CLI both classify through it: one file (`predict`), pixel grids
(`predict_pixels`), or many files with decoding in parallel threads (`predict_files`).
ONNX Runtime runs the model where there is a `model.onnx` (`onnx_model`), PyTorch otherwise.
Every prediction says what the X-ray check (`xray_check`) found: an X-ray like the
training data, one unlike it (the probability comes with a warning), or not an X-ray (no
probability). `resolve_model` turns a model spec (the bundled default,
`hf-hub:ORG/NAME[@REV]`, `local-dir:PATH` or a path) into a local folder;
`resolve_for_serving` adds the policy of a server that must start even when the Hub does
not answer.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import hub
from .calibration import Calibration
from .decode import open_image
from .errors import DecodeError, ModelError, NotAnXrayError
from .heatmap import cam_weights, class_activation_map, gradcam
from .model import check_model_folder, load_model, model_inputs
from .onnx_model import (
    ONNX_FILE,
    OnnxSession,
    ServingModel,
    cached_export,
    cached_export_path,
    weights_digest,
)
from .preprocess import equalize, to_pixels, upright
from .resources import BACKENDS, BUNDLED_MODEL
from .xray_check import (
    NOT_AN_XRAY,
    UNCHECKED,
    UNFAMILIAR,
    concat_stages,
    load_feature_check,
    not_an_xray_reason,
    stage_statistics,
    stage_widths,
)

DISPLAY_SIZE = 512  # longest side of the images kept for display and heatmap overlays
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
    """One input of `Predictor.predict_files`: its prediction (and heatmap), or why it failed or was refused."""

    source: str | Path
    xray: Xray | None = None
    prediction: Prediction | None = None
    heatmap: np.ndarray | None = None
    error: str | None = None


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

    def __init__(self, model_dir: str | Path = BUNDLED_MODEL, backend: str = "auto", log=None,
                 wait_for_export: bool = True):
        """Load a saved model folder; `ModelError` (or `CalibrationError`) if it is not a calibrated model.

        `backend`: "onnx" runs the model with ONNX Runtime (the folder's `model.onnx`, or one
        exported into the cache on first use), "torch" with PyTorch, and "auto" with ONNX
        Runtime where the folder has `model.onnx` or is the bundled model, else PyTorch.
        `log` (default: stderr) tells of a first-use export. With `wait_for_export=False` (the
        demo), a first-use export runs in a background thread while PyTorch answers (`exporting`).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        check_model_folder(model_dir)
        self.model, self.config = load_model(model_dir)
        self.calibration = Calibration.from_config(self.config, f"{model_dir}/config.json")
        self.model.requires_grad_(False)  # inference only: Grad-CAM needs gradients of activations, not weights
        # Inputs are channels_last (model_inputs); a model in the same layout runs faster on CPU.
        self.model.to(memory_format=torch.channels_last)
        self.serving = ServingModel(self.model)
        self.model_dir = Path(model_dir)
        self.label_names: list[str] = list(self.config["label_names"])
        self.positive = self.calibration.positive_index(self.label_names)
        self.image_size = int(self.config["pretrained_cfg"]["input_size"][-1])
        self.equalize = bool(self.config.get("equalize", False))
        self.cam_weights = cam_weights(self.model, self.positive)  # None: heatmaps by Grad-CAM
        self.feature_check = load_feature_check(model_dir)  # None: the cheap image statistics only
        # Grad-CAM (Captum) and its statistics hook the shared model for one call: one such call at a time.
        # Everything else adds nothing to the model, so threads share a Predictor freely.
        self._hooked = threading.Lock()
        widths = stage_widths(self.model)
        if self.feature_check is not None and self.feature_check.sizes != widths:
            raise ModelError(f"{model_dir}: its X-ray check was fitted on feature stages of widths "
                             f"{self.feature_check.sizes}, the model's are {widths}")
        self.session = None  # an OnnxSession when ONNX Runtime runs the model
        self.exporting: threading.Thread | None = None  # the background export, while it runs
        onnx_file = self.model_dir / ONNX_FILE
        bundled = self.model_dir.resolve() == BUNDLED_MODEL.resolve()
        if backend == "onnx" or (backend == "auto" and (onnx_file.is_file() or bundled)):
            digest = weights_digest(self.model_dir)  # once: it names the cache and checks the export
            if backend == "auto" and not wait_for_export and not onnx_file.is_file() \
                    and not cached_export_path(digest).is_file():
                # A first start (a fresh Space or container): answer with PyTorch now, switch when the export is built.
                self.exporting = threading.Thread(target=self._use_onnx, args=(digest, backend, log, True),
                                                  daemon=True, name="onnx-export")
                self.exporting.start()
            else:
                self._use_onnx(digest, backend, log)

    def _use_onnx(self, digest: str, backend: str, log, in_background: bool = False) -> None:
        """Run the model with ONNX Runtime from now on: the folder's `model.onnx`, or one exported into the cache
        (`in_background`: by another process, while this one's threads run the model).

        An export that fails falls back to PyTorch with one line (a `ModelError` if `backend` is "onnx").
        """
        onnx_file = self.model_dir / ONNX_FILE
        try:
            path = onnx_file if onnx_file.is_file() else cached_export(self.model_dir, digest, log, in_background)
        except OSError as e:  # e.g. a read-only cache folder
            if backend == "onnx":
                raise ModelError(f"cannot export {self.model_dir} to ONNX: {e}") from None
            print(f"ONNX export failed ({e}); running the model with PyTorch", file=sys.stderr, flush=True)
        else:
            self.session = OnnxSession(path, self.model_dir, digest)  # one assignment: threads see old or new

    @property
    def backend(self) -> str:
        """What runs the model: "onnxruntime" or "torch"."""
        return "torch" if self.session is None else "onnxruntime"

    @property
    def threshold(self) -> float:
        """The decision threshold on the calibrated probability of the positive class."""
        return self.calibration.threshold

    def model_grids(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel grids from `preprocess.to_pixels` as this model was trained on them (equalised if it was)."""
        return equalize(pixels) if self.equalize else pixels

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
        activation maps from the same forward pass, or Grad-CAM where the head has none."""
        return self._classify(pixels, inverted, check, heatmaps=True)

    def _classify(self, pixels: np.ndarray, inverted: Sequence[bool] | None, check: bool,
                  heatmaps: bool) -> tuple[list[Prediction], np.ndarray | None]:
        """One forward pass: logits, heatmaps, and the X-ray check from the same pass's features."""
        grids = self.model_grids(np.asarray(pixels))
        cams = None
        if heatmaps and self.cam_weights is None:  # a head without a class activation map: Grad-CAM
            with self._hooked, stage_statistics(self.model) as captured:
                logits, cams = gradcam(self.model, grids, self.positive)
            stats = concat_stages(captured) if len(grids) else None
        else:
            logits, features, stats = self.forward(grids)
            if heatmaps:
                cams = class_activation_map(features, self.cam_weights, grids.shape[-2:])
        distances = [None] * len(grids)
        if self.feature_check is not None and len(grids):
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

    def forward(self, grids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Model-ready pixel grids `(N, S, S)` -> logits, last feature maps and X-ray check statistics
        (`onnx_model.ServingModel`), by ONNX Runtime or PyTorch."""
        if not len(grids):
            return torch.zeros(0, len(self.label_names)), torch.zeros(0), torch.zeros(0)
        inputs = model_inputs(self.model, grids)
        session = self.session  # read once: a background export may set it between two reads
        if session is not None:
            return session.run(inputs)
        with torch.inference_mode():
            logits, features, stats = self.serving(inputs)
        return logits.float(), features, stats

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
        self, sources: Sequence[str | Path], batch_size: int = 64, workers: int = 4, check: bool = True,
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
            except DecodeError as e:
                return e.reason
            except Exception as e:  # whatever else a decoder raises is this file's failure, not the batch's
                return f"could not be read ({type(e).__name__}: {str(e)[:200]})"

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
                    if not isinstance(x, Xray):
                        yield FileResult(source, error=x)
                        continue
                    prediction, cam = next(results)
                    if prediction.probabilities is None:
                        refusal = NotAnXrayError(str(source), FAR_FROM_XRAYS)  # the same sentence as `predict`
                        yield FileResult(source, x, prediction, error=refusal.reason)
                    else:
                        yield FileResult(source, x, prediction, cam)


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


def load(model: str | Path | None = None, revision: str | None = None, backend: str = "auto") -> Predictor:
    """A `Predictor` for `model` (see `resolve_model`), with its preprocessing, labels and calibration."""
    return Predictor(resolve_model(model, revision), backend)
