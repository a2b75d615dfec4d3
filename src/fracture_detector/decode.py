"""Robust decoding of X-ray image files into 8-bit grayscale PIL images.

Everything that reads pixels (training, evaluation, the app, the CLI) goes through
`decode_image`, so every entry point handles the same odd files the same way.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Decode JPEGs at a reduced scale when they are much larger than this: the model
# never needs more, and it bounds memory for very large originals.
DRAFT_SIZE = 1024
# PIL raises DecompressionBombError past twice this many pixels; we keep its guard.
Image.MAX_IMAGE_PIXELS = 120_000_000


class DecodeError(ValueError):
    """A file that cannot be read as an image; the message says why."""


def decode_image(source: str | Path | bytes) -> Image.Image:
    """Open `source` (a path or the file's bytes) as an 8-bit grayscale ("L") image.

    Handles EXIF orientation, palette and alpha PNGs (transparent areas become black,
    the X-ray background), 16-bit and float images (stretched to 8 bits), CMYK,
    and animated GIFs (first frame). Raises `DecodeError` for anything unreadable.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else source
            with Image.open(fp) as im:
                im.seek(0)
                if im.format == "JPEG" and max(im.size) > 2 * DRAFT_SIZE:
                    im.draft("L", (DRAFT_SIZE, DRAFT_SIZE))
                im.load()
                return _to_gray(ImageOps.exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DecodeError(f"{name}: image too large ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise DecodeError(f"{name}: file not found") from None
        raise DecodeError(f"{name}: not a readable image ({e})") from None


def _to_gray(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to "L", keeping X-ray contrast."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return Image.fromarray(((arr - lo) * scale).round().astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
    if im.mode == "L":
        return im.copy()
    return im.convert("RGB").convert("L")
