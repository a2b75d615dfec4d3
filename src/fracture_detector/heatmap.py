"""Grad-CAM heatmaps (Captum's `LayerGradCam`): where the model sees evidence of a fracture."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from matplotlib import colormaps
from PIL import Image

from .model import model_inputs

OPACITY = 0.45  # of the heatmap over the X-ray


def gradcam(model: torch.nn.Module, pixels: np.ndarray, target: int) -> tuple[torch.Tensor, np.ndarray]:
    """Logits `(N, C)` and Grad-CAM maps of class `target` `(N, S, S)` in [0, 1], from one forward pass,
    for uint8 pixel grids `(N, S, S)`.

    The layer is the last feature stage timm reports (`feature_info`), the usual Grad-CAM
    choice: the finest map that still sees the whole image. A forward hook keeps the logits
    of Captum's own pass, so classifying with a heatmap costs one forward, not two.
    """
    layer = model.get_submodule(model.feature_info[-1]["module"])
    outputs = []
    hook = model.register_forward_hook(lambda _module, _args, out: outputs.append(out.detach().float()))
    model.eval()
    try:
        with torch.enable_grad():
            cam = LayerGradCam(model, layer).attribute(model_inputs(model, pixels), target=target,
                                                       relu_attributions=True)
    finally:
        hook.remove()
    cam = LayerAttribution.interpolate(cam.detach(), tuple(pixels.shape[-2:]), "bilinear")[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return outputs[-1], (cam / peak).clamp(0, 1).numpy()


def overlay(image: Image.Image, cam: np.ndarray) -> Image.Image:
    """The heatmap `cam` (any size, values in [0, 1]) coloured and laid over `image`, at the image's size."""
    cam_image = Image.fromarray((cam * 255).astype(np.uint8), "L").resize(image.size, Image.BILINEAR)
    coloured = colormaps["jet"](np.asarray(cam_image, dtype=np.float32) / 255.0)[..., :3]
    base = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    blend = (1 - OPACITY) * base + OPACITY * coloured
    return Image.fromarray((blend * 255).round().astype(np.uint8), "RGB")
