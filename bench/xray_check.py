"""Measure the input check (`fracture_detector.xray_check`) of a model folder both ways, and what it costs.

1. Real X-rays: every distinct X-ray of each source (by SHA-256), split exactly as training
   split them (the model's `train_config.json` gives the sources' names and the seed), each
   read from its file by `Predictor.predict_files` as a user's file would be. Per source and
   clean split: turned away (by the cheap statistics or the learned check) and called
   unlike the training data. The thresholds were set on the validation split, so the test
   split is out of sample.
2. Inverted radiographs: the clean-test X-rays saved inverted (dark bone on white). How many
   are turned back upright, how many are refused, and ROC-AUC per source: as shipped,
   inverted and served (turned back), inverted and scored as they are (no turning back).
3. Non-X-rays by category, in two parts.
   - Tuning: looked at while the learned check's design (stages, score, thresholds) was
     chosen. The image files shipped with scikit-image, scikit-learn and matplotlib;
     synthetic documents, screenshots, blank/gradient images and charts; and a first
     held-out set, which failed (many of its images got a probability, mostly grayscale photos)
     and was then used to redesign the check: the package photos in grayscale and as
     negatives, an MRI slice, elevation maps and a 2-D function from matplotlib's sample
     data, fractal-noise and periodic textures, dark-mode documents, line drawings and
     shapes.
   - Held out: made and run after the redesign was fixed, of kinds absent from the tuning
     part (photographs aside): the sample images that ship with Gradio (photographs and a
     drawing of a bus), in grayscale;
     synthetic ultrasound-like fans of speckle, fingerprint-like ridges, barcodes and
     QR-like block codes, and floor plans.
   Each image is turned away before the model, refused by the learned check, or given a
   probability (with or without the "unlike the training data" warning).
4. Cost: one image end to end (`Predictor.predict` of an example file: decode, preprocess,
   model, check) as served by ONNX Runtime (the check's statistics computed in the exported
   graph, then its distances) against a logits-only export of the same weights without the
   check, alternating, median of `--rounds`.

    python bench/xray_check.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        [--model MODEL_DIR] [--extra DIR]

It ends with the markdown for the README and writes every raw number to `--out`
(bench/results/xray_check.json). A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from common import (
    add_out_argument,
    alternate,
    command_line,
    fmt_ratio,
    loadavg,
    md_table,
    ratios,
    summary,
    timed,
    write_results,
)
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from sklearn.metrics import roc_auc_score

from fracture_detector import data as data_lib
from fracture_detector.decode import decode_image
from fracture_detector.predict import Predictor
from fracture_detector.resources import BUNDLED_MODEL, EXAMPLES
from fracture_detector.training import TrainConfig, prepare_data
from fracture_detector.xray_check import NOT_AN_XRAY, UNFAMILIAR

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}
WORDS = ("the patient study report figure result method bone fracture image data table page section analysis "
         "value model test review summary clinical left right wrist elbow shoulder hand normal").split()
TURNED_AWAY, REFUSED, UNLIKE, GIVEN = "turned away before the model", "refused by the learned check", \
    "probability, with the warning", "probability"


def outcome(result) -> str:
    """What a `FileResult` came to, or "unreadable"."""
    if result.prediction is None:
        return TURNED_AWAY if result.error and "does not look like an X-ray" in result.error else "unreadable"
    if result.prediction.check == NOT_AN_XRAY:
        return REFUSED
    return UNLIKE if result.prediction.check == UNFAMILIAR else GIVEN


def shipped_images() -> dict[str, list[Path]]:
    """Image files that come with scikit-image, scikit-learn and matplotlib (photos, graphics, scans)."""
    import matplotlib
    import skimage
    import sklearn

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)

    return {
        "scikit-image data": images(Path(skimage.__file__).parent / "data"),
        "scikit-learn images": images(Path(sklearn.__file__).parent / "datasets" / "images"),
        "matplotlib sample_data": images(Path(matplotlib.get_data_path()) / "sample_data"),
    }


def encode(im: Image.Image, image_format: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, image_format, **kw)
    return buf.getvalue()


def text_lines(draw: ImageDraw.ImageDraw, rng, box, size: int, ink) -> None:
    """Fill `box` (x0, y0, x1, y1) with lines of random words in a font of `size` pixels."""
    font = ImageFont.load_default(size=size)
    x0, y, x1, y1 = box
    while y + size < y1:
        line = ""
        while draw.textlength(line + " " + WORDS[0], font=font) < x1 - x0 - size * 4:
            line += " " + str(rng.choice(WORDS))
        draw.text((x0, y), line.strip(), fill=ink, font=font)
        y += int(size * rng.uniform(1.3, 1.8)) + (size * 2 if rng.random() < 0.1 else 0)  # paragraph gap


def documents(n: int, rng) -> dict[str, bytes]:
    """White (some slightly gray) pages of black text, varied sizes and margins, some JPEG."""
    out = {}
    for i in range(n):
        w, h = int(rng.integers(600, 1300)), int(rng.integers(800, 1700))
        paper = 255 if rng.random() < 0.6 else int(rng.integers(225, 250))
        im = Image.new("L", (w, h), paper) if rng.random() < 0.5 else Image.new("RGB", (w, h), (paper,) * 3)
        draw = ImageDraw.Draw(im)
        m = int(rng.integers(20, 150))
        size = int(rng.integers(10, 30))
        title = "Report " + str(rng.choice(WORDS)).title()
        draw.text((m, m), title, fill=0, font=ImageFont.load_default(size=2 * size))
        text_lines(draw, rng, (m, m + 3 * size, w - m, h - m), size, int(rng.integers(0, 60)))
        if rng.random() < 0.4:
            out[f"document_{i:02d}.jpg"] = encode(im, "JPEG", quality=int(rng.integers(40, 90)))
        else:
            out[f"document_{i:02d}.png"] = encode(im)
    return out


def screenshots(n: int, rng) -> dict[str, bytes]:
    """UI-like screenshots: light or dark window, coloured title bar, sidebar, buttons, text."""
    accents = [(0, 120, 215), (220, 53, 69), (40, 167, 69), (255, 193, 7), (111, 66, 193), (23, 162, 184)]
    out = {}
    for i in range(n):
        dark = i % 2 == 1
        w, h = [(1280, 800), (1920, 1080), (800, 600), (390, 844)][i % 4]
        bg, panel, ink = ((30, 30, 30), (45, 45, 48), (220, 220, 220)) if dark else \
            ((255, 255, 255), (243, 243, 243), (30, 30, 30))
        im = Image.new("RGB", (w, h), bg)
        draw = ImageDraw.Draw(im)
        accent = accents[int(rng.integers(len(accents)))]
        bar = int(rng.integers(30, 70))
        draw.rectangle((0, 0, w, bar), fill=accent if rng.random() < 0.5 else panel)
        side = int(w * rng.uniform(0.15, 0.3)) if w > 600 else 0
        if side:
            draw.rectangle((0, bar, side, h), fill=panel)
            text_lines(draw, rng, (15, bar + 20, side - 10, h - 20), 14, ink)
        text_lines(draw, rng, (side + 30, bar + 30, w - 30, h * 2 // 3), int(rng.integers(12, 20)), ink)
        for b in range(int(rng.integers(1, 5))):
            x = side + 30 + b * 140
            colour = accents[int(rng.integers(len(accents)))]
            draw.rounded_rectangle((x, h - 90, x + 120, h - 50), radius=6, fill=colour)
            draw.text((x + 20, h - 80), "Button", fill="white", font=ImageFont.load_default(size=16))
        out[f"screenshot_{'dark' if dark else 'light'}_{i:02d}.png"] = encode(im)
    return out


def blanks(rng) -> dict[str, bytes]:
    """Uniform, noisy-uniform and gradient images."""
    ramp = np.linspace(0, 255, 512, dtype=np.float32)
    arrays = {
        "white": np.full((512, 512), 255.0),
        "black": np.zeros((512, 512)),
        "gray": np.full((512, 512), 128.0),
        "light_gray": np.full((512, 512), 200.0),
        "mid_gray_noise": 128 + rng.normal(0, 4, (512, 512)),
        "dark_gray_noise": 60 + rng.normal(0, 6, (512, 512)),
        "gradient_horizontal": np.tile(ramp, (512, 1)),
        "gradient_vertical": np.tile(ramp[:, None], (1, 512)),
        "gradient_dark_radial": 120 * np.hypot(*np.meshgrid(ramp - 128, ramp - 128)) / 362,
        "gradient_noise": np.tile(ramp, (512, 1)) * 0.5 + 60 + rng.normal(0, 5, (512, 512)),
    }
    return {f"blank_{k}.png": encode(Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L"))
            for k, a in arrays.items()}


def charts(n: int, rng) -> dict[str, bytes]:
    """Matplotlib line, bar, scatter and histogram plots in light, dark and grayscale styles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    styles = ["default", "dark_background", "ggplot", "grayscale", "seaborn-v0_8-whitegrid"]
    for i in range(n):
        style, kind = styles[i % len(styles)], ["line", "bar", "scatter", "hist"][i % 4]
        with plt.style.context(style):
            fig, ax = plt.subplots(figsize=(rng.uniform(4, 8), rng.uniform(3, 6)))
            x = np.arange(20)
            if kind == "line":
                for _ in range(3):
                    ax.plot(x, np.cumsum(rng.normal(0, 1, 20)))
            elif kind == "bar":
                ax.bar(x[:8], rng.uniform(1, 10, 8))
            elif kind == "scatter":
                ax.scatter(rng.normal(size=200), rng.normal(size=200), s=8)
            else:
                ax.hist(rng.normal(size=1000), bins=30)
            ax.set_title(f"{kind} chart ({style})")
            ax.set_xlabel("x")
            ax.set_ylabel("value")
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            plt.close(fig)
        out[f"chart_{kind}_{style}_{i:02d}.png"] = buf.getvalue()
    return out


def grayscale_photos() -> dict[str, bytes]:
    """The packages' colour photos in grayscale, and as negatives (the first held-out set)."""
    out = {}
    for paths in shipped_images().values():
        for path in paths:
            try:
                image = Image.open(path)
                image.seek(0)
                gray = image.convert("L")
            except Exception:  # a shipped file PIL cannot read is skipped
                continue
            out[f"gray_{path.stem}.png"] = encode(gray)
            out[f"negative_{path.stem}.png"] = encode(ImageOps.invert(gray))
    return out


def sample_data_images() -> dict[str, bytes]:
    """An MRI slice, terrain elevation maps and a smooth 2-D function from matplotlib's sample data (first held out)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"

    def gray(a: np.ndarray) -> bytes:
        a = np.asarray(a, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12) * 255
        image = Image.fromarray(a.astype(np.uint8), "L")
        return encode(image.resize((max(256, image.width), max(256, image.height)), Image.BILINEAR))

    with gzip.open(folder / "s1045.ima.gz") as f:
        mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
    return {"mri_s1045.png": gray(mri),
            "elevation_jacksboro.png": gray(np.load(folder / "jacksboro_fault_dem.npz")["elevation"]),
            "elevation_topobathy.png": gray(np.load(folder / "topobathy.npz")["topo"]),
            "bivariate_normal.png": gray(np.load(folder / "axes_grid" / "bivariate_normal.npy"))}


def textures(rng) -> dict[str, bytes]:
    """Fractal noise at several roughnesses, stripes, rings, checkerboards and cell-like blobs (first held out)."""
    size = 384
    out = {}
    for k, beta in enumerate((1.0, 1.5, 2.0, 2.5, 3.0)):  # 1/f^beta noise: rough to smooth
        f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
        amplitude = np.maximum(f, 1 / size) ** (-beta / 2)  # power falls as 1/f^beta
        spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) * amplitude
        a = np.real(np.fft.ifft2(spectrum))
        out[f"texture_noise_{k}.png"] = encode(Image.fromarray(
            ((a - a.min()) / (a.max() - a.min()) * 255).astype(np.uint8), "L"))
    y, x = np.mgrid[:size, :size] / size
    for period in (8, 24):
        out[f"texture_stripes_{period}.png"] = encode(Image.fromarray(
            (127.5 + 127.5 * np.sin(2 * np.pi * (x + 0.3 * y) * size / period)).astype(np.uint8), "L"))
        out[f"texture_rings_{period}.png"] = encode(Image.fromarray(
            (127.5 + 127.5 * np.cos(2 * np.pi * np.hypot(x - 0.5, y - 0.5) * size / period)).astype(np.uint8), "L"))
    for cells in (4, 16):
        board = ((np.floor(x * cells) + np.floor(y * cells)) % 2 * 200 + 30).astype(np.uint8)
        out[f"texture_checker_{cells}.png"] = encode(Image.fromarray(board, "L").filter(ImageFilter.GaussianBlur(1)))
    blobs = Image.new("L", (size, size), 20)
    draw = ImageDraw.Draw(blobs)
    for _ in range(60):
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(8, 30)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=int(rng.integers(120, 250)))
    out["texture_cells.png"] = encode(blobs.filter(ImageFilter.GaussianBlur(2)))
    return out


def dark_documents(n: int, rng) -> dict[str, bytes]:
    """Light text on black or dark gray: dark-mode pages and terminals (first held out)."""
    out = {}
    for i in range(n):
        w, h = int(rng.integers(500, 1200)), int(rng.integers(500, 1200))
        im = Image.new("L", (w, h), int(rng.integers(0, 40)))
        draw = ImageDraw.Draw(im)
        text_lines(draw, rng, (20, 20, w - 20, h - 20), int(rng.integers(10, 24)), int(rng.integers(180, 255)))
        out[f"dark_document_{i:02d}.png"] = encode(im)
    return out


def drawings(rng) -> dict[str, bytes]:
    """Line drawings (edges of the packages' photos, black on white and white on black) and white shapes on
    black (first held out)."""
    out = {}
    photos = [p for paths in shipped_images().values() for p in paths if p.suffix.lower() in (".png", ".jpg")]
    for path in photos[:8]:
        try:
            edges = Image.open(path).convert("L").filter(ImageFilter.FIND_EDGES)
        except Exception:  # a shipped file PIL cannot read is skipped
            continue
        lines = edges.point(lambda v: 255 if v > 40 else 0)
        out[f"drawing_{path.stem}.png"] = encode(ImageOps.invert(lines))
        out[f"drawing_white_{path.stem}.png"] = encode(lines)
    for i in range(6):
        im = Image.new("L", (400, 400), 0)
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(3, 12))):
            x0, y0 = rng.uniform(0, 350, 2)
            x1, y1 = x0 + rng.uniform(20, 200), y0 + rng.uniform(20, 200)
            shape = [draw.rectangle, draw.ellipse][int(rng.integers(2))]
            shape((x0, y0, x1, y1), fill=int(rng.integers(100, 256)))
        out[f"shapes_{i}.png"] = encode(im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 3)))))
    return out


def gradio_photos() -> dict[str, bytes]:
    """The photographs that ship with Gradio (its media assets and test data), in grayscale (held out)."""
    import gradio

    root = Path(gradio.__file__).parent
    paths = sorted([*(root / "media_assets" / "images").glob("*.jp*g"), *(root / "test_data").glob("*.jp*g"),
                    root / "media_assets" / "images" / "bus.png"])
    return {f"gray_{p.stem}.png": encode(Image.open(p).convert("L")) for p in paths if p.is_file()}


def ultrasound_fans(n: int, rng) -> dict[str, bytes]:
    """Ultrasound-like images: a fan-shaped sector of speckle on black, with brighter echo bands (held out)."""
    out = {}
    for i in range(n):
        size = 400
        y, x = np.mgrid[:size, :size].astype(np.float32)
        r, angle = np.hypot(x - size / 2, y), np.arctan2(x - size / 2, y)
        fan = (r < size * 0.95) & (np.abs(angle) < rng.uniform(0.5, 0.8))
        speckle = rng.rayleigh(40, (size, size))
        bands = 1 + 1.5 * np.exp(-((r - rng.uniform(100, 300)) / 20) ** 2)
        image = np.where(fan, speckle * bands * np.exp(-r / size), 0)
        out[f"ultrasound_{i}.png"] = encode(Image.fromarray(np.clip(image * 2, 0, 255).astype(np.uint8), "L"))
    return out


def fingerprints(n: int, rng) -> dict[str, bytes]:
    """Fingerprint-like ridge patterns: sinusoids along curved flow in an oval, dark on light (held out)."""
    out = {}
    for i in range(n):
        size = 320
        y, x = (np.mgrid[:size, :size] - size / 2) / size
        cx, cy = rng.normal(0, 0.05, 2)
        phase = 60 * np.hypot(x - cx, (y - cy) * rng.uniform(0.6, 1.4)) + 8 * np.sin(3 * x + rng.uniform(0, 6))
        ridges = 0.5 + 0.5 * np.sin(phase)
        oval = ((x / 0.35) ** 2 + (y / 0.45) ** 2) < 1
        image = np.where(oval, 255 - 200 * ridges, 245)
        out[f"fingerprint_{i}.png"] = encode(Image.fromarray(image.astype(np.uint8), "L"))
    return out


def codes(n: int, rng) -> dict[str, bytes]:
    """Barcodes and QR-like block codes, black on white, some photographed-looking (blurred, tilted) (held out)."""
    out = {}
    for i in range(n):
        if i % 2:
            cells = rng.integers(0, 2, (25, 25)) * 255
            for cy, cx in ((0, 0), (0, 18), (18, 0)):  # the three finder squares
                cells[cy:cy + 7, cx:cx + 7] = 0
                cells[cy + 1:cy + 6, cx + 1:cx + 6] = 255
                cells[cy + 2:cy + 5, cx + 2:cx + 5] = 0
            image = Image.fromarray(np.pad(cells, 4, constant_values=255).astype(np.uint8), "L").resize((330, 330),
                                                                                                   Image.NEAREST)
        else:
            widths = rng.integers(1, 5, 60)
            bars = np.repeat(np.arange(60) % 2 * 255, widths * 3)
            image = Image.fromarray(np.tile(bars, (150, 1)).astype(np.uint8), "L")
            image = ImageOps.expand(image, 30, fill=255)
        if rng.random() < 0.5:
            image = image.rotate(float(rng.uniform(-15, 15)), fillcolor=255).filter(ImageFilter.GaussianBlur(1))
        out[f"code_{i}.png"] = encode(image)
    return out


def floor_plans(n: int, rng) -> dict[str, bytes]:
    """Floor plans: thick walls as black lines on white, with door gaps and room labels (held out)."""
    out = {}
    for i in range(n):
        w, h = int(rng.integers(500, 800)), int(rng.integers(400, 700))
        im = Image.new("L", (w, h), 255)
        draw = ImageDraw.Draw(im)
        draw.rectangle((20, 20, w - 20, h - 20), outline=0, width=6)
        for _ in range(int(rng.integers(3, 7))):
            if rng.random() < 0.5:
                x = int(rng.integers(80, w - 80))
                draw.line((x, 20, x, h - 20), fill=0, width=4)
                gap = int(rng.integers(40, h - 80))
                draw.line((x, gap, x, gap + 35), fill=255, width=6)
            else:
                y = int(rng.integers(80, h - 80))
                draw.line((20, y, w - 20, y), fill=0, width=4)
        for _ in range(4):
            draw.text((int(rng.integers(40, w - 120)), int(rng.integers(40, h - 40))), str(rng.choice(WORDS)).title(),
                      fill=0, font=ImageFont.load_default(size=18))
        out[f"floor_plan_{i}.png"] = encode(im)
    return out


def corpus(extra: list[str], seed: int) -> dict[str, dict[str, dict[str, Path | bytes]]]:
    """{"tuning" | "held out": {category: {name: path or bytes}}}."""
    rng = np.random.default_rng(seed)
    tuning: dict[str, dict[str, Path | bytes]] = {
        name: {p.name: p for p in paths} for name, paths in shipped_images().items()}
    tuning["synthetic documents"] = documents(20, rng)
    tuning["synthetic screenshots"] = screenshots(20, rng)
    tuning["synthetic blank / gradient"] = blanks(rng)
    tuning["synthetic charts"] = charts(10, rng)
    # The first held-out set: it failed, and the check was redesigned looking at it.
    tuning["package photos in grayscale and as negatives"] = grayscale_photos()
    tuning["MRI slice, elevation maps, 2-D function"] = sample_data_images()
    tuning["synthetic textures"] = textures(rng)
    tuning["synthetic dark-mode documents"] = dark_documents(10, rng)
    tuning["line drawings and shapes"] = drawings(rng)
    held_out = {
        "Gradio's sample images (photographs, a drawing), in grayscale": gradio_photos(),
        "synthetic ultrasound-like fans": ultrasound_fans(6, rng),
        "synthetic fingerprint-like ridges": fingerprints(6, rng),
        "synthetic barcodes and QR-like codes": codes(8, rng),
        "synthetic floor plans": floor_plans(6, rng),
    }
    for folder in extra:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        held_out[f"extra: {folder}"] = {str(p.relative_to(folder)): p for p in paths}
    return {"tuning": tuning, "held out": held_out}


def non_xrays(predictor: Predictor, parts: dict, tmp: Path) -> dict:
    """Every non-X-ray through `predict_files`; counts by outcome per part and category, and each image's."""
    report = {}
    for part, categories in parts.items():
        report[part] = {}
        for category, sources in categories.items():
            paths = []
            for name, source in sources.items():
                if isinstance(source, bytes):
                    path = tmp / part / category / Path(name).name  # names are unique within a category
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(source)
                    source = path
                paths.append(source)
            results = list(predictor.predict_files(paths))
            outcomes = {name: outcome(r) for name, r in zip(sources, results)}
            distances = {name: r.prediction.distance for name, r in zip(sources, results) if r.prediction}
            counts = Counter(o for o in outcomes.values() if o != "unreadable")
            report[part][category] = {"images": sum(counts.values()), **{k: counts.get(k, 0) for k in
                                      (TURNED_AWAY, REFUSED, UNLIKE, GIVEN)},
                                      "outcomes": outcomes, "distances": distances}
            given = [f"{n} ({distances[n]:.2f})" for n, o in outcomes.items() if o in (UNLIKE, GIVEN)]
            print(f"{part} / {category}: {dict(counts)}" + (f"; given a probability: {given}" if given else ""),
                  flush=True)
    return report


def real_xrays(predictor: Predictor, data: list[str], seed: int, tmp: Path) -> dict:
    """Every distinct X-ray from its file, per source and clean split; and the clean-test ones inverted."""
    cfg = TrainConfig(data=data, image_size=predictor.image_size, seed=seed, equalize=predictor.bundle.equalize)
    records, images, _ = prepare_data(cfg, None, log=lambda *_: None)
    roots = dict(data_lib.parse_source(spec) for spec in data)
    path_of = {}
    for r in records:
        if r.index >= 0 and r.index not in path_of:
            path_of[r.index] = Path(roots[r.source]) / r.path
    order = sorted(path_of)
    results = dict(zip(order, predictor.predict_files([path_of[i] for i in order])))
    positive = images.label_names.index(predictor.calibration.positive_label)
    report: dict = {"by_source": {}}
    for source in np.unique(images.sources):
        report["by_source"][source] = {}
        for split in data_lib.SPLITS:
            mine = [i for i in order if images.sources[i] == source and images.split[i] == split]
            counts = Counter(outcome(results[i]) for i in mine)
            report["by_source"][source][split] = {"images": len(mine), **{k: counts.get(k, 0) for k in
                                                  (TURNED_AWAY, REFUSED, UNLIKE, "unreadable")},
                                                  "turned_upright": sum(bool(results[i].xray and
                                                                             results[i].xray.inverted) for i in mine),
                                                  "refused_files": [str(path_of[i]) for i in mine if
                                                                    outcome(results[i]) in (TURNED_AWAY, REFUSED)]}
    # Inverted radiographs: the clean-test X-rays saved inverted, served as users' files.
    test = [i for i in order if images.split[i] == "test" and results[i].prediction is not None]
    inverted_paths = []
    for i in test:
        path = tmp / f"inverted_{i}.png"
        ImageOps.invert(decode_image(path_of[i])).save(path)  # the project's decoder: archives' odd JPEGs too
        inverted_paths.append(path)
    # Scored without the learned check's refusals, so every X-ray has a probability for the ROC-AUCs.
    served = [r.prediction for r in predictor.predict_files(inverted_paths, check=False)]
    pixels = np.stack([results[i].xray.pixels for i in test])
    shipped = predictor.predict_pixels(pixels, check=False)
    as_is = predictor.predict_pixels(255 - pixels, check=False)
    report["inverted"] = {}
    for source in np.unique(images.sources):
        k = [j for j, i in enumerate(test) if images.sources[i] == source]
        truth = [images.labels[test[j]] == positive for j in k]
        name = predictor.label_names[positive]

        def auc(predictions, k=k, truth=truth, name=name) -> float:
            return float(roc_auc_score(truth, [predictions[j].probabilities[name] for j in k]))

        report["inverted"][source] = {
            "images": len(k), "turned_back": sum(served[j].inverted for j in k),
            "refused_with_check": sum(served[j].check == NOT_AN_XRAY for j in k),
            "roc_auc_shipped": auc(shipped), "roc_auc_inverted_served": auc(served),
            "roc_auc_inverted_as_is": auc(as_is),
            "shipped_turned_back": sum(results[test[j]].xray.inverted for j in k)}
    return report


class LogitsOnly:
    """The same weights exported to ONNX with the logits as the only output: the model without the check (a runtime
    the Predictor can use in place of its own, `runtime.OnnxRuntime`, for predictions without heatmaps)."""

    name = "onnxruntime"
    cam_weights = None

    def __init__(self, predictor: Predictor, folder: Path):
        import onnxruntime as ort
        import torch

        size = predictor.image_size
        example = torch.zeros(2, 1, size, size)
        path = folder / "logits_only.onnx"
        model = predictor.model.to(memory_format=torch.contiguous_format)
        torch.onnx.export(model, (example,), str(path), input_names=["pixels"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True)
        predictor.model.to(memory_format=torch.channels_last)
        self.session = ort.InferenceSession(str(path), predictor.runtime.session.get_session_options(),
                                            providers=["CPUExecutionProvider"])

    def forward(self, inputs: np.ndarray):
        return self.session.run(None, {"pixels": inputs})[0], None, None


def cost(predictor: Predictor, rounds: int, folder: Path) -> dict:
    """One example file end to end, as served (ONNX Runtime: the check's statistics in the graph, then its
    distances) and with a logits-only export of the same weights and no check, alternating."""
    example = sorted(EXAMPLES.glob("*.jpg"))[0]
    check, served, plain = predictor.feature_check, predictor.runtime, LogitsOnly(predictor, folder)

    def run(with_check: bool) -> float:
        predictor.feature_check, predictor.runtime = (check, served) if with_check else (None, plain)
        seconds = min(timed(lambda: predictor.predict(example, check=False)) for _ in range(20))  # best of 20
        predictor.feature_check, predictor.runtime = check, served
        return seconds

    values = alternate({"with the check": lambda: run(True), "without": lambda: run(False)}, rounds)
    return {"example": example.name, "seconds": {k: summary(v) for k, v in values.items()},
            "ratio": ratios(values["with the check"], values["without"])}


def markdown(xrays: dict, others: dict, spent: dict) -> str:
    rows = []
    for source, splits in xrays["by_source"].items():
        for split, r in splits.items():
            refused = r[TURNED_AWAY] + r[REFUSED]
            rows.append([f"{source} X-rays, clean {split}" + (" (out of sample)" if split == "test" else ""),
                         r["images"], f"{refused} ({refused / max(r['images'], 1):.1%})",
                         f"{r[UNLIKE]} ({r[UNLIKE] / max(r['images'], 1):.1%})", "-", r["turned_upright"]])
    for part, categories in others.items():
        for category, r in categories.items():
            given = r[UNLIKE] + r[GIVEN]
            rows.append([f"{part}: {category}", r["images"], f"{r[TURNED_AWAY]} + {r[REFUSED]}",
                         r[UNLIKE], f"{given} ({given / max(r['images'], 1):.0%})", "-"])
        n = sum(r["images"] for r in categories.values())
        given = sum(r[UNLIKE] + r[GIVEN] for r in categories.values())
        rows.append([f"**{part}: all**", n, "", "", f"**{given} ({given / max(n, 1):.1%})**", ""])
    table = md_table(["images", "count", "turned away (before the model + learned check)", "called unlike the "
                      "training data", "given a probability", "turned upright"], rows)
    inv_rows = [[source, r["images"], r["turned_back"], r["refused_with_check"], f"{r['roc_auc_shipped']:.3f}",
                 f"{r['roc_auc_inverted_served']:.3f}", f"{r['roc_auc_inverted_as_is']:.3f}",
                 r["shipped_turned_back"]] for source, r in xrays["inverted"].items()]
    inverted = md_table(["source (clean test)", "X-rays", "inverted copies turned back", "refused",
                         "ROC-AUC as shipped", "inverted, served", "inverted, scored as they are",
                         "shipped files turned back"], inv_rows)
    return (f"`{command_line()}`\n\n{table}\n\nInverted radiographs (each clean-test X-ray saved inverted):\n\n"
            f"{inverted}\n\nCost, one image end to end by ONNX Runtime ({spent['example']}), with the learned check vs "
            f"a logits-only export without it: "
            f"{fmt_ratio(spent['ratio'])}.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="the model's training sources, NAME=FOLDER as for train.py")
    p.add_argument("--model", default=str(BUNDLED_MODEL), help="a model folder with xray_check.safetensors")
    p.add_argument("--extra", action="append", default=[], help="a folder of more non-X-ray images (held out)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic images")
    p.add_argument("--rounds", type=int, default=5)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    predictor = Predictor(args.model, backend="onnx")
    if predictor.feature_check is None:
        raise SystemExit(f"{args.model} has no learned X-ray check (xray_check.safetensors)")
    split_seed = json.loads((Path(args.model) / "train_config.json").read_text()).get("seed", 0)
    with tempfile.TemporaryDirectory() as tmp:
        others = non_xrays(predictor, corpus(args.extra, args.seed), Path(tmp))
        xrays = real_xrays(predictor, args.data, split_seed, Path(tmp))
        spent = cost(predictor, args.rounds, Path(tmp))
    write_results(args.out, {"xrays": xrays, "non_xrays": others, "cost": spent,
                             "thresholds": {"unfamiliar_above": predictor.feature_check.unfamiliar_above,
                                            "refuse_above": predictor.feature_check.refuse_above}},
                  markdown(xrays, others, spent), before)


if __name__ == "__main__":
    main()
