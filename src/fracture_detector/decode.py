"""Robust decoding of X-ray image files (PNG, JPEG, GIF, BMP, TIFF, 16-bit, DICOM).

Everything that reads pixels (training, evaluation, the app, the CLI) goes through
`decode_image`, so every entry point handles the same odd files the same way.
`open_image` keeps colour, for the check that an upload is an X-ray at all.
"""

from __future__ import annotations

import io
import logging
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import DecodeError

# Decode JPEGs at a reduced scale when they are more than twice this size: the model
# never needs more, and it bounds memory for very large originals. A caller may ask for less
# (`draft_size`); `bench/jpeg_draft.py` measures what that changes.
DRAFT_SIZE = 1024
# Larger images are refused ("image too large"), by our own check after reading the header: it does not
# depend on the warnings filters, which are process-wide and not safe to change from decoding threads.
MAX_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow's own guard: it warns past this and raises past twice this
# A JPEG that ends before its end marker is read when the image data it lacks is at most this share of its
# rows (the bottom ones, left flat gray). Measured on FracAtlas's files that end early: all but one lack at
# most about a fifth, mostly background; that one lacks about half and is refused, as is any JPEG cut halfway.
MAX_MISSING_SHARE = 0.25
JPEG_END = b"\xff\xd9"
DICOM_SUFFIXES = (".dcm", ".dicom")
# pydicom logs every odd tag of a broken file; the DecodeError message is what users need.
logging.getLogger("pydicom").setLevel(logging.ERROR)


def decode_image(source: str | Path | bytes, draft_size: int = DRAFT_SIZE) -> Image.Image:
    """Open `source` (a path or the file's bytes) as an 8-bit grayscale ("L") image.

    Handles EXIF orientation, palette and alpha PNGs (transparent areas become black,
    the X-ray background), 16-bit and float images (stretched to 8 bits), CMYK,
    animated GIFs (first frame) and DICOM. Raises `DecodeError` for anything unreadable.
    A JPEG over twice `draft_size` is decoded at the smallest of 1/2, 1/4 or 1/8 scale that keeps
    both sides at least `draft_size` (Pillow's draft mode: the JPEG decoder does the shrinking).
    """
    image = open_image(source, draft_size)
    return image if image.mode == "L" else image.convert("L")


def open_image(source: str | Path | bytes, draft_size: int = DRAFT_SIZE) -> Image.Image:
    """Like `decode_image`, but colour images stay "RGB" (everything else is "L")."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if name.lower().endswith(DICOM_SUFFIXES):
        return _open_dicom(source, name)
    try:
        return _open_pil(io.BytesIO(source) if isinstance(source, bytes) else source, name, draft_size)
    except DecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise DecodeError(name, f"image too large ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise DecodeError(name, "file not found") from None
        if isinstance(e, IsADirectoryError):
            raise DecodeError(name, "is a folder, not a file") from None
        # Only now look at the first bytes: the common case (PNG, JPEG) pays no extra read.
        head = _head(source)
        if not head:
            raise DecodeError(name, "empty file") from None
        if head[128:132] == b"DICM":  # a DICOM file without the .dcm suffix
            return _open_dicom(source, name)
        if head[:2] == b"\xff\xd8" and str(e).startswith("image file is truncated"):
            return _open_jpeg_without_end(source, name, draft_size)
        raise DecodeError(name, f"not a readable image ({e})") from None


def _open_pil(fp, name: str, draft_size: int = DRAFT_SIZE) -> Image.Image:
    """Pillow's decoding of an open file or path: first frame, JPEG drafts for big originals, EXIF turned."""
    with Image.open(fp) as im:
        if im.width * im.height > MAX_PIXELS:
            raise DecodeError(name, f"image too large ({im.width} x {im.height} pixels, over {MAX_PIXELS:,})")
        im.seek(0)
        if im.format == "JPEG" and max(im.size) > 2 * draft_size:
            im.draft(im.mode, (draft_size, draft_size))
        im.load()
        return _normalize_mode(ImageOps.exif_transpose(im))


def _open_jpeg_without_end(source: str | Path | bytes, name: str, draft_size: int = DRAFT_SIZE) -> Image.Image:
    """A JPEG that stops before its end marker: read it if it lacks little image data, else `DecodeError`.

    Given an end marker, libjpeg fills what is missing with flat gray (what Pillow's global
    `LOAD_TRUNCATED_IMAGES` does; we do not set it, so every other broken file still fails).
    How much is missing is measured, not guessed from the byte count: decoded again with
    noise before the marker, the image changes from the first row that depends on missing
    data (JPEG stores rows top to bottom).
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        filled = _open_pil(io.BytesIO(data + JPEG_END), name, draft_size)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DecodeError(name, f"not a readable image ({e})") from None
    noise = random.Random(0).randbytes(len(data)).replace(b"\xff", b"\x00")  # no 0xFF: no marker in it
    try:
        other = _open_pil(io.BytesIO(data + noise + JPEG_END), name, draft_size)
        a, b = np.asarray(filled), np.asarray(other)
        changed = np.flatnonzero((a != b).reshape(len(a), -1).any(1))  # rows that depend on missing data
        missing = 1 - changed[0] / len(a) if len(changed) else 0.0
    except (OSError, ValueError):  # the noise decoded as broken data: the scan was far from complete
        missing = 1.0
    if missing > MAX_MISSING_SHARE:
        raise DecodeError(name, f"JPEG cut inside its picture data (about {missing:.0%} of the image is missing)")
    return filled


def _head(source: str | Path | bytes) -> bytes:
    """The first 132 bytes (enough for the DICOM preamble), or b"" if unreadable."""
    if isinstance(source, bytes):
        return source[:132]
    try:
        with open(source, "rb") as f:
            return f.read(132)
    except OSError:
        return b""


def _open_dicom(source: str | Path | bytes, name: str) -> Image.Image:
    """A DICOM file -> "L" image: modality LUT (rescale), VOI LUT or window, MONOCHROME1 inverted."""
    import pydicom  # imported here: only DICOM inputs need it
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        # pydicom warns about every odd tag of a broken file. Its setting, not warnings.catch_warnings: that is
        # process-wide, and decoding threads would undo each other's filters.
        pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
        ds = pydicom.dcmread(fp, force=True)
        arr = ds.pixel_array
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            arr = arr[0]  # a multi-frame series: the first frame, as for animated GIFs
        if photometric.startswith("MONOCHROME"):
            arr = apply_voi_lut(apply_modality_lut(arr, ds), ds)
        if arr.ndim == 3:  # colour DICOM (RGB/YBR after pixel_array's conversion)
            return Image.fromarray(np.asarray(arr, dtype=np.uint8), "RGB").convert("L")
    except FileNotFoundError:
        raise DecodeError(name, "file not found") from None
    except Exception as e:  # pydicom raises many types for broken or unsupported files
        if not _head(source):
            raise DecodeError(name, "empty file") from None
        reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise DecodeError(name, f"not a readable DICOM image ({reason})") from None
    gray = _stretch(np.asarray(arr, dtype=np.float32))
    if photometric == "MONOCHROME1":  # 0 is white in MONOCHROME1; X-rays here have white bone
        gray = 255 - gray
    return Image.fromarray(gray, "L")


def _stretch(arr: np.ndarray) -> np.ndarray:
    """Linearly map the array's own range to 0..255 (16-bit, float and windowed images)."""
    lo, hi = float(arr.min()), float(arr.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((arr - lo) * scale).round().astype(np.uint8)


def _normalize_mode(im: Image.Image) -> Image.Image:
    """Any PIL mode -> "L" (grayscale, 16-bit, float) or "RGB" (colour), keeping X-ray contrast."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return Image.fromarray(_stretch(np.asarray(im, dtype=np.float32)), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
    if im.mode == "L":
        return im.copy()
    return im.convert("L") if im.mode == "1" else im.convert("RGB")
