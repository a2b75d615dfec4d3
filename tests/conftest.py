"""Shared fixtures: small synthetic X-ray-like data sets that the tests make themselves."""

from __future__ import annotations

import contextlib
import math
import os
import select
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "datasets" / "fracture-multi-region"
HUB_SERVER = Path(__file__).resolve().parent / "hub_server.py"
TOKEN = "hf_test_token"
LFS_MAX_BYTES = 1_000_000
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never reach the internet
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Exports of the bundled model to ONNX go to a fresh cache each session (and its subprocesses), so every
# run builds it once, as a new user's first run does.
os.environ.setdefault("FRACTURE_DETECTOR_CACHE", tempfile.mkdtemp(prefix="fracture-detector-cache-"))


def make_xray(seed: int, size: int = 160, fractured: bool = False) -> Image.Image:
    """A synthetic X-ray-like image: dark background, soft tissue, bright 'bones' (one broken if fractured)."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size), int(rng.integers(5, 30)))
    draw = ImageDraw.Draw(im)
    cx, cy = size / 2 + rng.normal(0, size / 12), size / 2 + rng.normal(0, size / 12)
    tissue = [cx - size * 0.35, cy - size * 0.45, cx + size * 0.35, cy + size * 0.45]
    draw.ellipse(tissue, fill=int(rng.integers(50, 80)))
    for _ in range(int(rng.integers(2, 5))):
        angle = rng.uniform(0, math.pi)
        length, width = rng.uniform(0.4, 0.8) * size, rng.uniform(0.05, 0.1) * size
        x0, y0 = cx + rng.normal(0, size / 8), cy + rng.normal(0, size / 8)
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        draw.line([x0 - dx, y0 - dy, x0 + dx, y0 + dy], fill=int(rng.integers(170, 240)), width=int(width))
        if fractured:
            crack = [x0 - dy * 0.2, y0 + dx * 0.2, x0 + dy * 0.2, y0 - dx * 0.2]
            draw.line(crack, fill=40, width=max(2, int(width / 4)))
    noise = rng.normal(0, 12, (size, size))
    arr = np.clip(np.asarray(im.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) + noise, 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "L")


def make_imagefolder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write `{split}/{fractured,not fractured}/*.png` with distinct synthetic X-rays."""
    k = seed * 10_000
    for split, n in per_class.items():
        for label in ("fractured", "not fractured"):
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                k += 1
                make_xray(k, fractured=label == "fractured").save(folder / f"img{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    """A small, clean imagefolder: 12/4/4 images per class in train/val/test."""
    return make_imagefolder(tmp_path_factory.mktemp("tiny"), {"train": 12, "val": 4, "test": 4})


# The tests train a small network from scratch: fast, and no ImageNet weights to load. (train.py's defaults are the
# shipped recipe: tf_efficientnet_lite0 from ImageNet.)
TEST_ARCH = ("--arch", "regnetx_002", "--no-pretrained-offline")


def train_cmd(data: Path | list[str], out: Path, *extra: str) -> list[str]:
    """Command line for a fast CPU training run on tiny data (one folder, or several `NAME=FOLDER` sources)."""
    sources = [str(data)] if isinstance(data, Path | str) else list(data)
    return [sys.executable, str(ROOT / "train.py"), "--data", *sources, "--output-dir", str(out), *TEST_ARCH,
            "--image-size", "64", "--batch-size", "8", "--bootstrap", "20", *extra]


@pytest.fixture(scope="session")
def trained(tiny_folder, tmp_path_factory) -> Path:
    """A 2-epoch model trained by train.py on `tiny_folder` (64 px): its folder."""
    out = tmp_path_factory.mktemp("run") / "model"
    proc = subprocess.run(train_cmd(tiny_folder, out, "--epochs", "2"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@dataclass
class Hub:
    """A running test Hub: its URL, the token it accepts, its storage folder and its request log."""

    url: str
    token: str
    root: Path
    log: Path
    home: Path

    def requests(self) -> list[str]:
        """The request lines logged so far (`METHOD /path STATUS`)."""
        return self.log.read_text().splitlines()


def hub_client_env(hub: Hub, home: Path, **extra: str) -> dict:
    """Environment for a client process: `hub` as the endpoint, its token, and `home` as its cache.

    huggingface_hub reads these at import, so clients run as subprocesses; inherited `HF_*`
    settings (the suite's own HF_HUB_OFFLINE=1) are dropped first.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=hub.token, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


@contextlib.contextmanager
def serve(tmp: Path, *extra: str):
    """Start tests/hub_server.py on a free port, wait for its READY line, and stop it afterwards."""
    log = tmp / "server.log"
    cmd = [sys.executable, str(HUB_SERVER), "--port", "0", "--root", str(tmp / "root"), *extra]
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("READY http://127.0.0.1:"):
            raise RuntimeError(f"hub server did not start: {line!r}\n{log.read_text()}")
        yield Hub(url=line.split()[1], token=TOKEN, root=tmp / "root", log=log, home=tmp / "hf_home")
    finally:
        stop(proc)
        proc.stdout.close()


@pytest.fixture(scope="session")
def hub_server(tmp_path_factory):
    """The test Hub in its default mode (every upload is 'regular')."""
    with serve(tmp_path_factory.mktemp("hub")) as hub:
        yield hub


@pytest.fixture(scope="session")
def lfs_hub_server(tmp_path_factory):
    """A second test Hub that asks for classic git-LFS uploads and accepts small bodies only."""
    with serve(tmp_path_factory.mktemp("hub_lfs"), "--lfs", "--max-bytes", str(LFS_MAX_BYTES)) as hub:
        yield hub


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a server process; kill it if it does not exit in `timeout` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def borderline(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the bundled model whose threshold sits halfway below an example X-ray's P(fractured), which
    is under 0.5: the decision ("fracture suspected") and the most probable class ("not fractured") differ.
    Returns the folder and the X-ray."""
    import json
    import shutil

    from fracture_detector.predict import Predictor
    from fracture_detector.resources import BUNDLED_MODEL, example_xrays

    predictor = Predictor(BUNDLED_MODEL, backend="torch")
    scored = sorted((predictor.predict(path).probabilities["fractured"], path) for path in example_xrays())
    p, xray = scored[0]
    assert p < 0.5, scored
    folder = tmp_path_factory.mktemp("borderline") / "model"
    shutil.copytree(BUNDLED_MODEL, folder)
    config = json.loads((folder / "config.json").read_text())
    config["threshold"] = p / 2
    (folder / "config.json").write_text(json.dumps(config))
    return folder, xray


@pytest.fixture(scope="module")
def borderline_url(borderline):
    """The demo on the `borderline` model, served in this process; its URL."""
    from fracture_detector.app import build_demo, start

    demo = build_demo(borderline[0], backend="torch")
    start(demo, "127.0.0.1", free_port())
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def app_url():
    """The demo on the bundled model, served in this process; its URL."""
    from fracture_detector.app import build_demo, start

    demo = build_demo()
    start(demo, "127.0.0.1", free_port())
    yield demo.local_url
    demo.close()
