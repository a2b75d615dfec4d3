"""The one preprocessing of this project: grayscale, squash-resize, scale to [0, 1], normalise.

Training, evaluation, the app and the CLI all call these functions, and `data_config`
writes the same choices into the model's `config.json` (timm's `pretrained_cfg`), so a
plain timm user gets the same input with
`timm.data.create_transform(**timm.data.resolve_data_config(model=model))` applied to
`Image.open(path).convert("L")`.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .decode import decode_image

IMAGE_SIZE = 224
# One input channel: X-rays are grayscale. Mean/std of the training images' pixels
# (measured once on the fracture-multi-region data, rounded).
MEAN = (0.24,)
STD = (0.22,)
INTERPOLATION = "bilinear"


def data_config(image_size: int = IMAGE_SIZE) -> dict:
    """timm data config for this preprocessing (saved into the model's pretrained_cfg)."""
    return {
        "input_size": (1, image_size, image_size),
        "interpolation": INTERPOLATION,
        "mean": MEAN,
        "std": STD,
        "crop_pct": 1.0,
        "crop_mode": "squash",
    }


def to_pixels(image: Image.Image, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Grayscale PIL image -> `(image_size, image_size)` uint8 array (aspect squashed, as timm's 'squash')."""
    if image.mode != "L":
        image = image.convert("L")
    return np.array(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def load_pixels(source, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode a file (path or bytes) straight to the model's uint8 pixel grid."""
    return to_pixels(decode_image(source), image_size)


def normalize(pixels: torch.Tensor, mean: tuple = MEAN, std: tuple = STD) -> torch.Tensor:
    """uint8 `(N, H, W)` or float [0, 1] `(N, 1, H, W)` pixels -> normalised float `(N, 1, H, W)`."""
    x = pixels
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x - mean[0]) / std[0]
