"""Test inputs: DICOM files and a corpus of odd, broken and non-X-ray files, with what each should give."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fracture_detector.resources import EXAMPLES

OK = None  # the file must get a prediction


def make_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", window: tuple | None = None,
               slope: float = 1.0, intercept: float = 0.0) -> Path:
    """A minimal DX DICOM file (explicit VR little endian, 16-bit unsigned) holding `pixels`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def real_xray(name: str = "not_fractured_kaggle_1.jpg") -> Image.Image:
    """One of the bundled example X-rays, grayscale: inputs the bundled model must accept as X-rays
    (its X-ray check turns synthetic drawings like `make_xray`'s away)."""
    return Image.open(EXAMPLES / name).convert("L")


def xray12(name: str = "not_fractured_kaggle_1.jpg") -> np.ndarray:
    """A real X-ray as 12-bit values."""
    return np.asarray(real_xray(name), dtype=np.uint16) * 16


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb() -> bytes:
    """A small PNG whose header claims 40,000 x 40,000 pixels."""
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 40_001 * 8)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def input_corpus(folder: Path) -> list[tuple[str, Path, str | None]]:
    """Write 28 kinds of input into `folder`: `(kind, path, expected)`, where `expected` is
    None for "gets a prediction" or a phrase the error message must contain."""
    import sklearn.datasets

    folder.mkdir(parents=True, exist_ok=True)
    xray = real_xray("fractured_kaggle_1.jpg")
    jpeg, png = encoded(xray, "JPEG", quality=90), encoded(xray, "PNG")
    photo = Path(sklearn.datasets.__file__).parent / "images" / "china.jpg"
    document = Image.new("L", (300, 400), 255)
    draw = ImageDraw.Draw(document)
    for y in range(20, 380, 14):
        draw.text((20, y), "Patient report: no acute findings. " * 2, fill=0)
    screenshot = Image.new("RGB", (400, 300), (240, 240, 245))
    ImageDraw.Draw(screenshot).rectangle([0, 0, 400, 40], fill=(30, 90, 200))
    ImageDraw.Draw(screenshot).rectangle([20, 60, 380, 280], fill=(255, 255, 255), outline=(200, 0, 0))
    frames = [real_xray(name).resize((200, 200)) for name in ("fractured_kaggle_1.jpg", "not_fractured_kaggle_1.jpg",
                                                               "fractured_roboflow_1.jpg")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100)
    rgba = xray.convert("RGBA")
    rgba.putalpha(Image.new("L", xray.size, 255).point(lambda v: v if v else 0))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    cases: list[tuple[str, str, bytes | None, str | None]] = [
        ("jpeg x-ray", "ok.jpg", jpeg, OK),
        ("png x-ray", "ok.png", png, OK),
        ("16-bit png", "sixteen.png", None, OK),
        ("rgba png", "rgba.png", encoded(rgba, "PNG"), OK),
        ("palette png", "palette.png", encoded(xray.convert("P"), "PNG"), OK),
        ("cmyk jpeg", "cmyk.jpg", encoded(xray.convert("CMYK"), "JPEG"), OK),
        ("animated gif", "animated.gif", gif.getvalue(), OK),
        ("bmp", "x.bmp", encoded(xray, "BMP"), OK),
        ("float tiff", "float.tif", None, OK),
        ("dicom monochrome2", "mono2.dcm", None, OK),
        ("dicom monochrome1 windowed", "mono1.dcm", None, OK),
        ("empty file", "empty.png", b"", "empty file"),
        ("empty dicom", "empty.dcm", b"", "empty file"),
        ("truncated jpeg", "truncated.jpg", jpeg[: len(jpeg) // 2], "JPEG cut inside its picture data"),
        ("corrupt jpeg", "corrupt.jpg", jpeg[:200] + bytes(range(256)) * 20, "not a readable image"),
        ("truncated png", "truncated.png", png[: len(png) // 2], "not a readable image"),
        ("png with bad checksum", "badcrc.png", png[:40] + b"\x00\x00" + png[42:], "not a readable image"),
        ("text renamed .png", "text.png", b"hello, this is not an image\n" * 10, "not a readable image"),
        ("html renamed .jpg", "page.jpg", b"<!doctype html><html><body>hi</body></html>", "not a readable image"),
        ("pdf renamed .png", "doc.png", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "not a readable image"),
        ("decompression bomb", "bomb.png", decompression_bomb(), "too large"),
        ("broken dicom", "broken.dcm", b"\0" * 128 + b"DICM" + b"\2\0\x10\0garbage" * 8, "not a readable DICOM"),
        ("dicom without pixels", "nopixels.dcm", None, "not a readable DICOM"),
        ("colour photo", "photo.jpg", photo.read_bytes(), "does not look like an X-ray"),
        ("blank white", "white.png", encoded(Image.new("L", (256, 256), 255), "PNG"), "does not look like an X-ray"),
        ("blank black", "black.jpg", encoded(Image.new("L", (256, 256), 0), "JPEG"), "does not look like an X-ray"),
        ("one pixel", "pixel.png", encoded(Image.new("L", (1, 1), 90), "PNG"), "does not look like an X-ray"),
        ("document", "document.png", encoded(document, "PNG"), "does not look like an X-ray"),
        ("screenshot", "screenshot.png", encoded(screenshot, "PNG"), "does not look like an X-ray"),
    ]
    out = []
    for kind, name, data, expected in cases:
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        out.append((kind, path, expected))
    Image.fromarray(np.asarray(xray, dtype=np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(np.asarray(xray, dtype=np.float32) / 255.0).save(folder / "float.tif")
    make_dicom(folder / "mono2.dcm", xray12())
    make_dicom(folder / "mono1.dcm", 4095 - xray12(), photometric="MONOCHROME1", window=(2048, 4096))
    make_dicom(folder / "nopixels.dcm", xray12())
    import pydicom

    ds = pydicom.dcmread(folder / "nopixels.dcm")
    del ds.PixelData
    ds.save_as(folder / "nopixels.dcm")
    return out
