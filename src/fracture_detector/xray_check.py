"""Is this upload an X-ray at all? A few measured image statistics, not a model.

The fracture model answers for any input, so a holiday photo would get a "fracture
probability". These rules turn away what is plainly not a radiograph: colour photos,
blank images, white documents and screenshots, flat synthetic graphics. Measured by
`bench/xray_check.py` (README, "Not an X-ray"): 11 of the 3,882 distinct files of the
fracture-multi-region data are turned away, 9 of them radiographs shown inverted (dark
bone on white); grayscale photographs, smooth gradients and dark screenshots often pass.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# Measured on a 128-pixel thumbnail (bench/xray_check.py prints the distributions).
MAX_COLOURFULNESS = 24.0  # Hasler & Suesstrunk colourfulness; X-rays: 99.5% <= 11, photos >= 25
MIN_CONTRAST = 12.0  # std of gray levels; X-rays >= 27 (0.5th percentile)
MAX_WHITE_FRACTION = 0.30  # pixels >= 235; X-rays have dark backgrounds, documents white ones
MAX_MEAN = 160.0  # mean gray level; X-rays: 99.5% <= 135
MAX_FLAT_FRACTION = 0.75  # non-black pixels with no change to either neighbour; X-rays are noisy


def image_statistics(image: Image.Image) -> dict[str, float]:
    """The statistics the rules read, from an "L" or "RGB" image."""
    small = image.copy()
    small.thumbnail((128, 128))
    rgb = np.asarray(small.convert("RGB"), dtype=np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    gray = np.asarray(small.convert("L"), dtype=np.float32)
    still_x = np.diff(gray, axis=1)[:-1] == 0
    still_y = np.diff(gray, axis=0)[:, :-1] == 0
    lit = gray[:-1, :-1] > 12  # black borders and collimation are flat in X-rays too
    return {
        "colourfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        "contrast": float(gray.std()),
        "white_fraction": float((gray >= 235).mean()),
        "mean": float(gray.mean()),
        "flat_fraction": float((still_x & still_y & lit).sum() / max(lit.sum(), 1)),
    }


def not_an_xray_reason(image: Image.Image) -> str | None:
    """None if `image` may be an X-ray, else a short reason why it does not look like one."""
    s = image_statistics(image)
    if s["colourfulness"] > MAX_COLOURFULNESS:
        return "it is a colour image"
    if s["contrast"] < MIN_CONTRAST:
        return "it is blank or almost uniform"
    if s["white_fraction"] > MAX_WHITE_FRACTION or s["mean"] > MAX_MEAN:
        return "it is mostly white, like a document or a screenshot"
    if s["flat_fraction"] > MAX_FLAT_FRACTION:
        return "it is made of flat areas, like a drawing or a screenshot"
    return None
