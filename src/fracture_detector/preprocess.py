"""The one preprocessing of this project: grayscale, upright, squash-resize, scale to [0, 1], normalise.

Training, evaluation, the app and the CLI all call these functions, and `data_config`
writes the same choices into the model's `config.json` (timm's `pretrained_cfg`), so a
plain timm user gets the same input with
`timm.data.create_transform(**timm.data.resolve_data_config(model=model))` applied to
`Image.open(path).convert("L")`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from .decode import DRAFT_SIZE, decode_image

IMAGE_SIZE = 224
# One input channel: X-rays are grayscale. Mean/std of the training images' pixels
# (measured once on the fracture-multi-region data, rounded).
MEAN = (0.24,)
STD = (0.22,)
INTERPOLATION = "bilinear"
# Mean gray level of the outer tenth of the image above which it is a radiograph shown inverted:
# X-ray backgrounds are dark. bench/xray_check.py counts how many X-rays it turns, as shipped and inverted.
INVERTED_BORDER = 128


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


def upright(image: Image.Image) -> tuple[Image.Image, bool]:
    """A grayscale radiograph shown inverted (dark bone on white, so a bright border) is inverted back.

    Returns the image and whether it was inverted. Training, evaluation and prediction all
    read images through this, so a plain timm user does the same before timm's transform.
    """
    a = np.asarray(image)
    b = max(1, min(a.shape[:2]) // 10)
    border = np.concatenate([a[:b].ravel(), a[-b:].ravel(), a[:, :b].ravel(), a[:, -b:].ravel()])
    if border.mean() > INVERTED_BORDER:
        return ImageOps.invert(image), True
    return image, False


def to_pixels(image: Image.Image, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Grayscale PIL image -> `(image_size, image_size)` uint8 array (aspect squashed, as timm's 'squash')."""
    if image.mode != "L":
        image = image.convert("L")
    return np.array(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)


def equalize(pixels: np.ndarray) -> np.ndarray:
    """Histogram-equalise each uint8 pixel grid `(N, S, S)` with PIL's `ImageOps.equalize`.

    An option of the recipe (`--equalize`, recorded as `"equalize": true` in `config.json`):
    it spreads dark, low-contrast films over the whole gray range. It runs on the resized
    grid, so a plain timm user does the same with `ImageOps.equalize` after resizing.
    """
    return np.stack([np.asarray(ImageOps.equalize(Image.fromarray(grid))) for grid in pixels]) if len(pixels) \
        else pixels


def load_pixels(source, image_size: int = IMAGE_SIZE, draft_size: int = DRAFT_SIZE) -> np.ndarray:
    """Decode a file (path or bytes) straight to the model's uint8 pixel grid (upright); `draft_size` as for
    `decode_image`."""
    return to_pixels(upright(decode_image(source, draft_size))[0], image_size)


def normalize(pixels, mean: tuple = MEAN, std: tuple = STD):
    """uint8 `(N, H, W)` or float [0, 1] `(N, 1, H, W)` pixels -> normalised float32 `(N, 1, H, W)`.

    NumPy arrays in (serving), NumPy arrays out; PyTorch tensors in (training), tensors out.
    """
    x = pixels
    if str(x.dtype).endswith("uint8"):  # np.uint8 or torch.uint8
        x = x.float() / 255.0 if hasattr(x, "float") else x.astype(np.float32) / np.float32(255.0)
    if x.ndim == 3:
        x = x[:, None]
    return (x - mean[0]) / std[0]
