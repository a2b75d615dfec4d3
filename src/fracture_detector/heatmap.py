"""Heatmaps: where the model sees evidence of a fracture.

For a head that is global average pooling + linear (timm's EfficientNets, RegNets, ResNets),
the class activation map `sum_k w[c, k] * A_k` of the last feature map `A` comes from the
forward pass alone (`class_activation_map`, NumPy only): it is exactly what the pooled logit
averages. Other heads get Grad-CAM (`gradcam`, PyTorch and Captum), which needs a backward
pass. `bench/heatmaps.py` measures how the two agree on real X-rays.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

OPACITY = 0.45  # of the heatmap over the X-ray
# Matplotlib's "jet" colour map, from its own segment data (x, value) per channel: the demo and the CLI
# colour heatmaps without importing matplotlib, which costs seconds on a fresh machine (its font cache).
JET_SEGMENTS = {
    "red": ((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
    "green": ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
    "blue": ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)),
}
JET = (np.stack([np.interp(np.linspace(0, 1, 256), *zip(*JET_SEGMENTS[c])) for c in ("red", "green", "blue")], 1)
       * 255).round().astype(np.uint8)  # gray level -> colour


def class_activation_map(features: np.ndarray, weights: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """CAM maps `(N, *size)` in [0, 1] from the last feature maps `(N, K, h, w)` and one class's weights `(K,)`.

    Scaled as `gradcam` scales its maps: negative evidence cut at 0, upsampled
    bilinearly, each map divided by its peak (a map with no positive evidence stays 0).
    """
    cam = np.einsum("k,nkhw->nhw", np.asarray(weights, np.float32), np.asarray(features, np.float32)).clip(min=0)
    cam = _bilinear(size[0], cam.shape[1]) @ cam @ _bilinear(size[1], cam.shape[2]).T  # rows, then columns
    peak = cam.reshape(len(cam), -1).max(1, initial=0).clip(min=1e-12)[:, None, None]
    return (cam / peak).clip(0, 1).astype(np.float32)


def _bilinear(out_size: int, in_size: int) -> np.ndarray:
    """`(out_size, in_size)` weights of bilinear resampling along one axis, as PyTorch's `interpolate(...,
    mode="bilinear", align_corners=False)` computes them (pixel centres; edges clamped)."""
    source = ((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5).clip(min=0)
    low = np.minimum(source.astype(int), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    weights = np.zeros((out_size, in_size), np.float32)
    np.add.at(weights, (np.arange(out_size), low), 1 - (source - low))
    np.add.at(weights, (np.arange(out_size), high), source - low)
    return weights


def overlay(image: Image.Image, cam: np.ndarray) -> Image.Image:
    """The heatmap `cam` (any size, values in [0, 1]) coloured and laid over `image`, at the image's size.

    8-bit throughout (a 256-colour table and PIL's blend): in the demo this ran in float
    per pixel and cost more CPU than the model (docs/speed.md; bench/profile_app.py).
    """
    cam_image = Image.fromarray((cam * 255).astype(np.uint8), "L").resize(image.size, Image.BILINEAR)
    coloured = Image.fromarray(JET[np.asarray(cam_image)], "RGB")
    return Image.blend(image.convert("RGB"), coloured, OPACITY)
