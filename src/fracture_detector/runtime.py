"""What runs the network: ONNX Runtime (`OnnxRuntime`, NumPy only: the serving install) or PyTorch
(`TorchRuntime`, the full install), and `open_runtime`, the one policy that picks between them.

Both take the bundle's normalised inputs `(N, 1, S, S)` and return NumPy arrays from one
forward pass: logits, the last feature map and the X-ray check's statistics (`onnx_model`).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from .bundle import ModelBundle
from .errors import ModelError
from .onnx_model import ONNX_FILE, OUTPUTS, cached_export, check_export, open_session, weights_digest
from .resources import BACKENDS

FULL_INSTALL = "pip install 'fracture-detector[train]'"


def torch_installed() -> bool:
    """Whether PyTorch and timm can be imported (the full install), without importing them."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in ("torch", "timm"))
    except (ImportError, ValueError):
        return False


class OnnxRuntime:
    """`model.onnx` in an ONNX Runtime CPU session, checked against the bundle's weights and X-ray check."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, bundle: ModelBundle, digest: str | None = None):
        """Raises `ModelError` when the file was exported from other weights than the bundle's (whose hash is
        `digest`, when the caller has it already), by an older version, or for another X-ray check."""
        self.path = Path(path)
        self.session = open_session(path, bundle.folder)
        metadata = self.session.get_modelmeta().custom_metadata_map
        check_export(metadata, path, bundle.folder, digest)
        stats_width = self.session.get_outputs()[OUTPUTS.index("xray_stats")].shape[-1]
        if bundle.feature_check is not None and stats_width != sum(bundle.feature_check.sizes):
            raise ModelError(f"{path} gives X-ray statistics of width {stats_width}; the folder's X-ray check "
                             f"reads {sum(bundle.feature_check.sizes)}")
        classifier = metadata.get("cam_classifier", "")
        # The class activation map's weights (None: the head has none, heatmaps need Grad-CAM and PyTorch).
        self.cam_weights = bundle.weight(classifier)[bundle.positive] if classifier else None

    def forward(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(logits, features, xray_stats)` for normalised inputs `(N, 1, S, S)`."""
        return tuple(self.session.run(list(OUTPUTS), {"pixels": inputs}))


class TorchRuntime:
    """The timm model in PyTorch (the full install): the same three outputs as `OnnxRuntime`, and Grad-CAM
    for heads without a class activation map."""

    name = "torch"

    def __init__(self, bundle: ModelBundle, purpose: str | None = None):
        """Load the timm model; `ModelError` without PyTorch, saying what needed it (`purpose`)."""
        if not torch_installed():
            purpose = purpose or f"running {bundle.folder} without a {ONNX_FILE}"
            raise ModelError(f"{purpose} needs PyTorch, which this install lacks: {FULL_INSTALL}")
        import torch

        from .gradcam import cam_weights
        from .model import load_model
        from .stages import ServingModel, stage_widths

        self.torch = torch
        self.model, _ = load_model(bundle.folder)
        self.model.requires_grad_(False)  # inference only: Grad-CAM needs gradients of activations, not weights
        # Inputs are channels_last; a model in the same layout runs faster on CPU.
        self.model.to(memory_format=torch.channels_last)
        self.serving = ServingModel(self.model)
        self.cam_weights = cam_weights(self.model, bundle.positive)  # None: heatmaps by Grad-CAM
        widths = stage_widths(self.model)
        if bundle.feature_check is not None and bundle.feature_check.sizes != widths:
            raise ModelError(f"{bundle.folder}: its X-ray check was fitted on feature stages of widths "
                             f"{bundle.feature_check.sizes}, the model's are {widths}")
        # Grad-CAM (Captum) and its statistics hook the shared model for one call: one such call at a time.
        # `forward` adds nothing to the model, so threads share it freely.
        self._hooked = threading.Lock()

    def forward(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(logits, features, xray_stats)` for normalised inputs `(N, 1, S, S)`."""
        x = self.torch.from_numpy(inputs).contiguous(memory_format=self.torch.channels_last)
        with self.torch.inference_mode():
            logits, features, stats = self.serving(x)
        return logits.float().numpy(), features.float().numpy(), stats.numpy()

    def gradcam(self, grids: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits, Grad-CAM maps `(N, S, S)` of class `target` and X-ray check statistics, from one pass."""
        from .gradcam import gradcam
        from .stages import concat_stages, stage_statistics

        with self._hooked, stage_statistics(self.model) as captured:
            logits, cams = gradcam(self.model, grids, target)
        return logits.numpy(), cams, concat_stages(captured).numpy()


def open_runtime(bundle: ModelBundle, backend: str = "auto", log=None) -> OnnxRuntime | TorchRuntime:
    """What runs `bundle`'s model.

    "auto": ONNX Runtime where the folder has `model.onnx`, else PyTorch. "onnx": ONNX
    Runtime, exporting into the cache (`onnx_model.cached_export`, with PyTorch) when the
    folder has no `model.onnx`. "torch": PyTorch. `log` (default stderr) tells of an export.
    Raises `ModelError` when the choice cannot run here (e.g. PyTorch in a serving install).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    onnx_file = bundle.folder / ONNX_FILE
    if backend == "torch" or (backend == "auto" and not onnx_file.is_file()):
        return TorchRuntime(bundle)
    digest = weights_digest(bundle.folder)  # once: it names the cache and checks the export
    if onnx_file.is_file():
        return OnnxRuntime(onnx_file, bundle, digest)
    if not torch_installed():
        raise ModelError(f"{bundle.folder} has no {ONNX_FILE}, and exporting one needs PyTorch: {FULL_INSTALL}")
    try:
        path = cached_export(bundle.folder, digest, log)
    except OSError as e:  # e.g. a read-only cache folder
        raise ModelError(f"cannot export {bundle.folder} to ONNX: {e}") from None
    return OnnxRuntime(path, bundle, digest)
