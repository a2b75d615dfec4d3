"""Measure the "is this an X-ray at all?" check (`fracture_detector.xray_check`) both ways.

1. Real X-rays wrongly rejected: every distinct file (by SHA-256) of the fracture-multi-region
   data (3,882 of 10,562 files) is decoded with `decode.open_image` and checked once. `--data`
   is the unpacked image folder (`split/label/file`) or the raw copy (`blobs/` + `manifest.csv`).
   The rejection rate is given per distinct file and per file as shipped (10,562, the files as
   users' folders hold them), overall and per split, with the count by
   reason, the distribution of each statistic against its threshold, and every rejected
   file with its statistics so a person can look at it. The thresholds were chosen by
   looking at these same files, so this is an in-sample rate: there is no second X-ray
   source here to measure it out of sample.
2. Non-X-rays let through: images that are not radiographs, by category: the image files
   shipped with scikit-image, scikit-learn and matplotlib (photographs, some of them
   grayscale, which are expected to pass), and seeded synthetic ones made here with PIL
   and matplotlib (text documents, screenshot-like UIs, blank/uniform/gradient images,
   charts), plus any `--extra DIR` of your own. Every let-through file is listed with its
   statistics.

It ends with one markdown table (images | turned away | let through) for the README, written
with every raw number to `--out` (bench/results/xray_check.json). About a minute on 2 cores.

    python bench/xray_check.py --data /tmp/fmr [--extra DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import add_out_argument, command_line, loadavg, md_table, write_results
from PIL import Image, ImageDraw, ImageFont

from fracture_detector import xray_check
from fracture_detector.decode import DecodeError, open_image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"}
THRESHOLDS = {  # statistic -> (rule, threshold)
    "colourfulness": ("<=", xray_check.MAX_COLOURFULNESS),
    "contrast": (">=", xray_check.MIN_CONTRAST),
    "white_fraction": ("<=", xray_check.MAX_WHITE_FRACTION),
    "mean": ("<=", xray_check.MAX_MEAN),
    "flat_fraction": ("<=", xray_check.MAX_FLAT_FRACTION),
}
UNREADABLE = "could not be decoded"
WORDS = ("the patient study report figure result method bone fracture image data table page section analysis "
         "value model test review summary clinical left right wrist elbow shoulder hand normal").split()


def check(source: Path | bytes) -> dict:
    """Decode one file (a path or its bytes) and run the check: {"reason": str | None, "stats": {...}}."""
    try:
        image = open_image(source)
    except DecodeError as e:
        return {"reason": UNREADABLE, "error": str(e), "stats": {}}
    return {"reason": xray_check.not_an_xray_reason(image), "stats": xray_check.image_statistics(image)}


def check_all(sources: list) -> list[dict]:
    """`check` each source on 2 threads (decoding and numpy release the GIL), in order."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(check, sources))


def fmt(stats: dict) -> str:
    """The statistics on one line, 3 significant digits."""
    return " ".join(f"{k}={v:.3g}" for k, v in stats.items()) if stats else "-"


def load_rows(data_dir: Path) -> tuple[list[dict], dict[str, Path]]:
    """One row per file as shipped ({split, label, filename, blob}) and a path for each distinct blob.

    The raw copy has them in `manifest.csv` and `blobs/`; in an unpacked image folder a blob is the
    SHA-256 of the file's bytes.
    """
    if (data_dir / "manifest.csv").exists():
        with open(data_dir / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        return rows, {r["blob"]: data_dir / "blobs" / r["blob"] for r in rows}
    rows, paths = [], {}
    for path in sorted(data_dir.glob("*/*/*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            blob = hashlib.sha256(path.read_bytes()).hexdigest()
            rows.append({"split": path.parts[-3], "label": path.parts[-2], "filename": path.name, "blob": blob})
            paths.setdefault(blob, path)
    return rows, paths


def real_xrays(data_dir: Path) -> dict:
    """Check every distinct file once; rejection rates per distinct file and per file as shipped."""
    rows, paths = load_rows(data_dir)
    blobs = sorted(paths)
    results = dict(zip(blobs, check_all([paths[b] for b in blobs])))
    rejected = {b for b, r in results.items() if r["reason"] not in (None, UNREADABLE)}
    unreadable = sorted(b for b, r in results.items() if r["reason"] == UNREADABLE)
    rows_of = defaultdict(list)
    for r in rows:
        rows_of[r["blob"]].append(r)

    def rates(subset: list[dict]) -> dict:
        distinct = {r["blob"] for r in subset}
        return {"files": len(distinct), "files_rejected": len(distinct & rejected),
                "rows": len(subset), "rows_rejected": sum(r["blob"] in rejected for r in subset)}

    splits = {"all": rates(rows)}
    for split in sorted({r["split"] for r in rows}):
        splits[split] = rates([r for r in rows if r["split"] == split])

    print(f"## Real X-rays ({data_dir}): {len(blobs)} distinct files, {len(rows)} files as shipped\n")
    print("In-sample: the thresholds were chosen by looking at these same files.\n")
    print("| split | distinct files | rejected | rate | files as shipped | rejected | rate |")
    print("|---|---|---|---|---|---|---|")
    for name, s in splits.items():
        print(f"| {name} | {s['files']} | {s['files_rejected']} | {s['files_rejected'] / s['files']:.2%} "
              f"| {s['rows']} | {s['rows_rejected']} | {s['rows_rejected'] / s['rows']:.2%} |")
    reasons = Counter(results[b]["reason"] for b in rejected)
    print("\n| reason (distinct files) | count |\n|---|---|")
    for reason, n in reasons.most_common():
        print(f"| {reason} | {n} |")
    if unreadable:
        print(f"\n{len(unreadable)} files could not be decoded (not counted as rejected): {unreadable}")

    stats = {k: np.array([r["stats"][k] for r in results.values() if r["stats"]]) for k in THRESHOLDS}
    qs = (0, 0.5, 5, 50, 95, 99.5, 100)
    print("\n| statistic | rule | min | 0.5% | 5% | 50% | 95% | 99.5% | max | beyond |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, (rule, th) in THRESHOLDS.items():
        v = stats[k]
        beyond = int((v < th).sum() if rule == ">=" else (v > th).sum())
        print(f"| {k} | {rule} {th:g} | " + " | ".join(f"{x:.3g}" for x in np.percentile(v, qs)) + f" | {beyond} |")

    print(f"\nRejected X-rays ({len(rejected)}):")
    listed = []
    for b in sorted(rejected):
        where = rows_of[b]
        names = sorted({f"{r['split']}/{r['label']}/{r['filename']}" for r in where})
        print(f"- {paths[b]} [{results[b]['reason']}]\n    {fmt(results[b]['stats'])}\n"
              f"    {len(where)} rows, e.g. {names[0]}")
        listed.append({"blob": b, "path": str(paths[b]), **results[b], "rows": names})
    return {"splits": splits, "reasons": dict(reasons), "rejected": listed, "unreadable": unreadable,
            "percentiles": {k: dict(zip(map(str, qs), np.percentile(v, qs).tolist())) for k, v in stats.items()}}


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


def non_xrays(extra: list[str], seed: int) -> dict:
    """Check every non-X-ray image, by category; print the ones let through."""
    rng = np.random.default_rng(seed)
    categories: dict[str, dict[str, Path | bytes]] = {
        name: {p.name: p for p in paths} for name, paths in shipped_images().items()}
    categories["synthetic documents"] = documents(20, rng)
    categories["synthetic screenshots"] = screenshots(20, rng)
    categories["synthetic blank / gradient"] = blanks(rng)
    categories["synthetic charts"] = charts(10, rng)
    for folder in extra:
        paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        categories[f"extra: {folder}"] = {str(p.relative_to(folder)): p for p in paths}

    print("\n## Non-X-rays\n")
    report = {}
    for category, sources in categories.items():
        results = dict(zip(sources, check_all(list(sources.values()))))
        through = {k: r for k, r in results.items() if r["reason"] is None}
        unreadable = [k for k, r in results.items() if r["reason"] == UNREADABLE]
        report[category] = {"images": len(results) - len(unreadable), "let_through": len(through),
                            "unreadable": unreadable, "results": results}
        print(f"### {category}: {len(through)} of {len(results) - len(unreadable)} let through"
              + (f" ({len(unreadable)} unreadable, skipped: {unreadable})" if unreadable else ""))
        for k, r in through.items():
            print(f"- {k}: {fmt(r['stats'])}")
        print(f"  reasons: {dict(Counter(r['reason'] for r in results.values() if r['reason']))}\n")
    return report


def summary_table(xrays: dict, others: dict) -> str:
    """The README table: real X-rays turned away (per distinct file and per file as shipped), then non-X-rays."""
    rows = []
    for name, s in xrays["splits"].items():
        what = "real X-rays" if name == "all" else f"... of which the shipped {name} split"
        rows.append([f"{what}: {s['files']} distinct files ({s['rows']} as shipped)",
                     f"{s['files_rejected']} ({s['files_rejected'] / s['files']:.2%}) distinct; "
                     f"{s['rows_rejected']} of {s['rows']} as shipped ({s['rows_rejected'] / s['rows']:.2%})",
                     s["files"] - s["files_rejected"]])
    for category, r in others.items():
        rows.append([f"{category} ({r['images']})", r["images"] - r["let_through"], r["let_through"]])
    return md_table(["images", "turned away", "let through"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="the unpacked image folder (split/label/file), or a folder with manifest.csv and blobs/")
    p.add_argument("--extra", action="append", default=[], help="a folder of more non-X-ray images (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed for the synthetic images")
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()

    xrays = real_xrays(Path(args.data).resolve())
    others = non_xrays(args.extra, args.seed)
    markdown = (f"`{command_line()}` (the X-ray rates are in-sample: the thresholds were chosen on these X-rays):"
                f"\n\n{summary_table(xrays, others)}")
    write_results(args.out, {"xrays": xrays, "non_xrays": others}, markdown, before)


if __name__ == "__main__":
    main()
