"""Measure the near-copy detector on the real data: threshold sweep and planted copies.

Two measurements, both written as markdown tables (with the raw numbers) to `--out`
(bench/results/dedup_real.json):

1. Threshold sweep over all distinct images: number of groups, largest group, groups
   holding both labels (a false merge, since the dataset never gives one X-ray two
   labels), and agreement with the file names (files named `N-rotated...` in one class
   folder derive from X-ray N: the share of those families kept in one group).
2. Planted copies: each of 300 random distinct images is rotated, flipped, re-exposed,
   re-cropped or JPEG-recompressed, and we count how often the copy's best
   rotation/flip/scale correlation with its original clears the threshold.

    python bench/dedup_real.py --data /tmp/fmr
"""

from __future__ import annotations

import argparse
import io
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from common import add_out_argument, command_line, loadavg, md_table, write_results
from PIL import Image, ImageEnhance

from fracture_detector import data, dedup
from fracture_detector.preprocess import to_pixels


def sweep(images: data.Images, records: list[data.Record], thresholds: list[float]) -> list[dict]:
    """Groups at each threshold: count, largest, false merges (both labels), file-name families kept whole."""
    sig = dedup.polar_signatures(images.thumbnails)
    pairs = dedup.near_copy_pairs(sig, threshold=min(thresholds))
    family = defaultdict(set)  # (label, N) -> distinct image indices
    for r in records:
        m = re.match(r"^(\d+)-rotated", Path(r.path).name)
        if m and r.index >= 0:
            family[(r.label, m.group(1))].add(r.index)
    rows = []
    for th in thresholds:
        groups = dedup.group_ids(len(images.thumbnails), [p for p in pairs if p[2] >= th])
        sizes = Counter(groups.tolist())
        mixed = sum(len(set(images.labels[groups == g].tolist())) > 1 for g in sizes)
        whole = sum(len({groups[i] for i in members}) == 1 for members in family.values())
        rows.append({"threshold": th, "groups": len(sizes), "largest": max(sizes.values()), "mixed_label_groups": mixed,
                     "families_whole": whole, "families": len(family)})
    return rows


def planted(images: data.Images, n: int = 300, seed: int = 0) -> list[dict]:
    """Share of planted copies (per kind of edit) whose copy score clears the threshold, and the median score."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(images.thumbnails), size=min(n, len(images.thumbnails)), replace=False)

    def jpeg(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=60)
        return Image.open(io.BytesIO(buf.getvalue())).convert("L")

    def gamma(im: Image.Image, g: float) -> Image.Image:
        return im.point([round(255 * (v / 255) ** g) for v in range(256)])

    def crop(im: Image.Image, f: float) -> Image.Image:
        w, h = im.size
        dx, dy = int(w * (1 - f) / 2), int(h * (1 - f) / 2)
        return im.crop((dx, dy, w - dx, h - dy))

    transforms = {
        "rotate 10-170 degrees": lambda im, r: im.rotate(float(r.uniform(10, 170)) * r.choice([-1, 1]),
                                                         resample=Image.BILINEAR),
        "flip": lambda im, r: im.transpose(Image.FLIP_LEFT_RIGHT),
        "flip + rotate": lambda im, r: im.transpose(Image.FLIP_TOP_BOTTOM).rotate(float(r.uniform(-60, 60))),
        "brighter / darker (x0.6-1.5)": lambda im, r: ImageEnhance.Brightness(im).enhance(float(r.uniform(0.6, 1.5))),
        "gamma 0.6-1.6": lambda im, r: gamma(im, float(r.uniform(0.6, 1.6))),
        "JPEG quality 60": lambda im, r: jpeg(im),
        "centre crop 90%": lambda im, r: crop(im, 0.9),
        "centre crop 80%": lambda im, r: crop(im, 0.8),
    }
    size = dedup.GRID
    rows = []
    originals = images.thumbnails[picks]
    for name, fn in transforms.items():
        r = np.random.default_rng(seed + 1)
        copies = np.stack([to_pixels(fn(Image.fromarray(originals[i]), r), size) for i in range(len(picks))])
        sig = dedup.polar_signatures(np.concatenate([originals, copies]))
        score = dedup.copy_score(sig[: len(picks)], sig[len(picks):]).numpy()
        rows.append({"copy": name, "images": len(picks), "found": float((score >= dedup.THRESHOLD).mean()),
                     "median_score": float(np.median(score))})
    return rows


def markdown(sweep_rows: list[dict], planted_rows: list[dict]) -> str:
    th = md_table(["threshold", "groups", "largest", "groups with both labels", "file-name families kept whole"],
                  [[f"{r['threshold']:.2f}", r["groups"], r["largest"], r["mixed_label_groups"],
                    f"{r['families_whole']}/{r['families']}"] for r in sweep_rows])
    n = planted_rows[0]["images"] if planted_rows else 0
    pl = md_table([f"planted copy ({n} images)", f"found at {dedup.THRESHOLD}", "median score"],
                  [[r["copy"], f"{r['found']:.1%}", f"{r['median_score']:.3f}"] for r in planted_rows])
    return f"`{command_line()}`:\n\n{th}\n\n{pl}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    records, sources, names = data.load_records(args.data)
    images, _ = data.decode_records(records, sources, names)
    sweep_rows = sweep(images, records, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    planted_rows = planted(images)
    results = {"distinct_images": len(images.thumbnails), "threshold": dedup.THRESHOLD, "sweep": sweep_rows,
               "planted": planted_rows}
    write_results(args.out, results, markdown(sweep_rows, planted_rows), before)


if __name__ == "__main__":
    main()
