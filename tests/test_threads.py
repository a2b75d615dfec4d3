"""One `Predictor` shared by threads gives exactly the serial results, and decoding keeps its refusal of
decompression bombs in every thread, whatever the process's warning filters say."""

from __future__ import annotations

import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fracture_detector.decode import MAX_PIXELS, DecodeError, decode_image
from fracture_detector.predict import Predictor
from fracture_detector.resources import example_xrays

THREADS = 8


def _outcome(prediction) -> tuple:
    return prediction.probabilities, prediction.distance, prediction.check, prediction.fractured


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_one_predictor_in_eight_threads_gives_the_serial_results(backend):
    predictor = Predictor(backend=backend)
    xrays = example_xrays()  # real X-rays of every source
    work = [xrays[k % len(xrays)] for k in range(12 * THREADS)]
    serial = {path: _outcome(predictor.predict(path)) for path in xrays}
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(lambda path: _outcome(predictor.predict(path)), work))
    assert threaded == [serial[path] for path in work]


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A tiny PNG file whose header claims `width` x `height` pixels (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_refused_in_every_thread_whatever_the_warning_filters(tmp_path):
    side = int(MAX_PIXELS**0.5) + 100  # over our limit, under twice it (where Pillow itself only warns)
    bomb = _png_header_only(tmp_path / "bomb.png", side, side)
    good = example_xrays()[0]

    def decode(path):
        try:
            return decode_image(path).size
        except DecodeError as e:
            return e.reason

    work = [bomb if k % 2 else good for k in range(8 * THREADS)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what another library, or another thread, may have set
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(decode, work))
    good_size = decode(good)
    for path, result in zip(work, results):
        if path == bomb:
            assert isinstance(result, str) and result.startswith("image too large"), result
        else:
            assert result == good_size
