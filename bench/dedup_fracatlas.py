"""The near-copy matcher on FracAtlas, looked at by eye (issue 20): its precision by score band, and the groups it
makes at its threshold.

`dedup.THRESHOLD` was chosen on the Kaggle set, where file names tell which files derive
from one X-ray (`bench/dedup_real.py`). FracAtlas has no such names, and its X-rays share
framings (the same joint, the same projection, the same detector), so the matcher's
precision there is measured here:

1. Every pair of distinct FracAtlas images the matcher scores at 0.5 or more, in score bands.
2. A seeded sample of each band, drawn side by side (`--sheets DIR` writes one PNG per band),
   judged by eye: `JUDGEMENTS` records each verdict under the two files' names ("same": one
   X-ray, rotated, flipped, cropped or re-exposed; "different": two X-rays), so the precision
   per band is computed from what was looked at, and a new sample shows up as unjudged.
3. Groups, the largest group and the groups holding both labels, at each threshold.

    python bench/dedup_fracatlas.py --data /tmp/fra [--sheets /tmp/sheets]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from common import add_out_argument, command_line, loadavg, md_table, write_results
from PIL import Image, ImageDraw

from fracture_detector import data, dedup
from fracture_detector.decode import decode_image

BANDS = [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 0.99), (0.99, 1.01)]
PER_BAND = 8
SEED = 0
THRESHOLDS = [0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
# Verdicts by eye on the sheets `--sheets` draws (seed 0, 8 pairs per band), keyed by the pair's file names, with
# the pair's score: "same" (one X-ray: re-exported, masked at the bottom, cropped or re-exposed), "same patient"
# (another acquisition of the same patient's same part: a merge that keeps a leak out) or "different".
JUDGEMENTS: dict[tuple[str, str], str] = {
    # 0.50-0.60
    ("train/fractured/IMG0001971.jpg", "train/not fractured/IMG0003400.jpg"): "different",  # 0.5521
    ("train/fractured/IMG0002498.jpg", "train/fractured/IMG0003565.jpg"): "different",  # 0.5039
    ("train/fractured/IMG0003396.jpg", "val/not fractured/IMG0003799.jpg"): "different",  # 0.5051
    ("train/not fractured/IMG0000688.jpg", "test/not fractured/IMG0003056.jpg"): "different",  # 0.567
    ("train/not fractured/IMG0000872.jpg", "train/not fractured/IMG0002661.jpg"): "different",  # 0.5014
    ("train/not fractured/IMG0001694.jpg", "train/not fractured/IMG0002855.jpg"): "different",  # 0.5648
    ("train/not fractured/IMG0002624.jpg", "train/not fractured/IMG0002871.jpg"): "different",  # 0.5018
    ("train/not fractured/IMG0003795.jpg", "test/not fractured/IMG0003387.jpg"): "different",  # 0.5281
    # 0.60-0.70
    ("train/not fractured/IMG0000880.jpg", "train/not fractured/IMG0003407.jpg"): "different",  # 0.6594
    ("train/not fractured/IMG0003003.jpg", "train/not fractured/IMG0003376.jpg"): "different",  # 0.6205
    ("train/not fractured/IMG0003273.jpg", "train/not fractured/IMG0003606.jpg"): "different",  # 0.628
    ("val/not fractured/IMG0000427.jpg", "val/not fractured/IMG0003143.jpg"): "different",  # 0.6451
    ("val/not fractured/IMG0001258.jpg", "val/not fractured/IMG0001341.jpg"): "different",  # 0.6336
    ("val/not fractured/IMG0001503.jpg", "val/not fractured/IMG0003717.jpg"): "different",  # 0.6378
    ("test/not fractured/IMG0000814.jpg", "test/not fractured/IMG0001538.jpg"): "different",  # 0.607
    ("test/not fractured/IMG0001721.jpg", "test/not fractured/IMG0003447.jpg"): "different",  # 0.6677
    # 0.70-0.80
    ("train/not fractured/IMG0000136.jpg", "train/not fractured/IMG0000137.jpg"): "same",  # 0.7817
    ("train/not fractured/IMG0000461.jpg", "train/not fractured/IMG0000880.jpg"): "different",  # 0.7406
    ("train/not fractured/IMG0000485.jpg", "train/not fractured/IMG0003984.jpg"): "different",  # 0.782
    ("train/not fractured/IMG0001996.jpg", "train/not fractured/IMG0003922.jpg"): "different",  # 0.7322
    ("train/not fractured/IMG0002966.jpg", "train/not fractured/IMG0004252.jpg"): "same",  # 0.731
    ("train/not fractured/IMG0003061.jpg", "train/not fractured/IMG0004297.jpg"): "same",  # 0.712
    ("val/fractured/IMG0002304.jpg", "val/fractured/IMG0002306.jpg"): "same patient",  # 0.7647
    ("test/not fractured/IMG0000891.jpg", "test/not fractured/IMG0001721.jpg"): "different",  # 0.7009
    # 0.80-0.90
    ("train/not fractured/IMG0000089.jpg", "train/not fractured/IMG0000090.jpg"): "same",  # 0.807
    ("train/not fractured/IMG0002677.jpg", "train/not fractured/IMG0004109.jpg"): "same",  # 0.8772
    ("train/not fractured/IMG0002735.jpg", "train/not fractured/IMG0004122.jpg"): "same",  # 0.8701
    ("train/not fractured/IMG0002765.jpg", "train/not fractured/IMG0004169.jpg"): "same",  # 0.8077
    ("val/not fractured/IMG0002876.jpg", "val/not fractured/IMG0004189.jpg"): "same",  # 0.8771
    ("val/not fractured/IMG0002917.jpg", "val/not fractured/IMG0004227.jpg"): "same",  # 0.8081
    ("val/not fractured/IMG0002961.jpg", "val/not fractured/IMG0004255.jpg"): "same",  # 0.8824
    ("test/not fractured/IMG0002618.jpg", "test/not fractured/IMG0004029.jpg"): "same",  # 0.8324
    # 0.90-0.99
    ("train/fractured/IMG0002749.jpg", "train/fractured/IMG0004113.jpg"): "same",  # 0.9716
    ("train/not fractured/IMG0002702.jpg", "train/not fractured/IMG0004092.jpg"): "same",  # 0.9151
    ("train/not fractured/IMG0002727.jpg", "train/not fractured/IMG0004130.jpg"): "same",  # 0.9759
    ("train/not fractured/IMG0002736.jpg", "train/not fractured/IMG0004123.jpg"): "same",  # 0.9497
    ("train/not fractured/IMG0002869.jpg", "train/not fractured/IMG0004194.jpg"): "same",  # 0.9475
    ("train/not fractured/IMG0002960.jpg", "train/not fractured/IMG0004258.jpg"): "same",  # 0.9457
    ("test/not fractured/IMG0002742.jpg", "test/not fractured/IMG0004119.jpg"): "same",  # 0.9893
    ("test/not fractured/IMG0003044.jpg", "test/not fractured/IMG0004308.jpg"): "same",  # 0.9879
    # 0.99-1.00
    ("train/fractured/IMG0002846.jpg", "train/fractured/IMG0004209.jpg"): "same",  # 0.9999
    ("train/not fractured/IMG0002796.jpg", "train/not fractured/IMG0004146.jpg"): "same",  # 1.0
    ("train/not fractured/IMG0002875.jpg", "train/not fractured/IMG0004188.jpg"): "same",  # 1.0
    ("train/not fractured/IMG0002947.jpg", "train/not fractured/IMG0004264.jpg"): "same",  # 1.0
    ("train/not fractured/IMG0002956.jpg", "train/not fractured/IMG0004260.jpg"): "same",  # 1.0
    ("train/not fractured/IMG0003063.jpg", "train/not fractured/IMG0004295.jpg"): "same",  # 1.0
    ("val/not fractured/IMG0002662.jpg", "val/not fractured/IMG0004062.jpg"): "same",  # 1.0
    ("val/not fractured/IMG0002988.jpg", "val/not fractured/IMG0004287.jpg"): "same",  # 1.0
}
RIGHT = ("same", "same patient")  # verdicts under which merging the pair is right


def band_of(score: float) -> tuple[float, float]:
    return next(b for b in BANDS if b[0] <= score < b[1])


def sample(pairs: list[tuple[int, int, float]]) -> dict[tuple[float, float], list[tuple[int, int, float]]]:
    """Up to `PER_BAND` pairs of each band, drawn with `SEED`."""
    rng = np.random.default_rng(SEED)
    drawn = {}
    for band in BANDS:
        inside = [p for p in pairs if band[0] <= p[2] < band[1]]
        picks = rng.choice(len(inside), size=min(PER_BAND, len(inside)), replace=False) if inside else []
        drawn[band] = [inside[k] for k in sorted(picks)]
    return drawn


def sheet(pairs: list[tuple[int, int, float]], names: list[str], root: Path, title: str) -> Image.Image:
    """The pairs side by side, 256 px each, with their number, score and file names."""
    side, caption = 256, 28
    out = Image.new("L", (2 * side + 10, len(pairs) * (side + caption) + 30), 255)
    draw = ImageDraw.Draw(out)
    draw.text((5, 5), title, fill=0)
    for k, (a, b, score) in enumerate(pairs):
        y = 30 + k * (side + caption)
        draw.text((5, y), f"#{k + 1}  score {score:.3f}  {names[a]}  |  {names[b]}", fill=0)
        for x, i in ((0, a), (side + 10, b)):
            image = decode_image(root / names[i]).convert("L")
            image.thumbnail((side, side))
            out.paste(image, (x, y + caption))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the unpacked FracAtlas folder")
    p.add_argument("--sheets", help="write the sampled pairs of each band as PNGs here")
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    records, files, label_names = data.load_records(args.data)
    images, _ = data.decode_records(records, files, label_names)
    names = [""] * len(images.thumbnails)
    for r in records:
        if r.index >= 0 and not names[r.index]:
            names[r.index] = r.path
    pairs = dedup.near_copy_pairs(dedup.polar_signatures(images.thumbnails), threshold=BANDS[0][0])
    drawn = sample(pairs)
    bands = []
    for band, picked in drawn.items():
        verdicts = [JUDGEMENTS.get((names[a], names[b])) for a, b, _ in picked]
        judged = [v for v in verdicts if v]
        label = f"{band[0]:.2f}-{min(band[1], 1.0):.2f}"
        bands.append({"band": label, "pairs": sum(band[0] <= s < band[1] for *_, s in pairs),
                      "both_labels": sum(band[0] <= s < band[1] and images.labels[a] != images.labels[b]
                                         for a, b, s in pairs),
                      "sampled": len(picked), "judged": len(judged), "right": sum(v in RIGHT for v in judged),
                      "unjudged": [(names[a], names[b], round(s, 4))
                                   for (a, b, s), v in zip(picked, verdicts) if not v]})
        if args.sheets:
            Path(args.sheets).mkdir(parents=True, exist_ok=True)
            sheet(picked, names, Path(args.data), f"band {label}: {len(picked)} sampled pairs").save(
                Path(args.sheets) / f"band_{label}.png")
    groups_rows = []
    for th in THRESHOLDS:
        groups = dedup.group_ids(len(images.thumbnails), [p for p in pairs if p[2] >= th])
        sizes = Counter(groups.tolist())
        mixed = sum(len(set(images.labels[groups == g].tolist())) > 1 for g, n in sizes.items() if n > 1)
        groups_rows.append({"threshold": th, "groups": len(sizes), "in_groups_of_2_or_more":
                            sum(n for n in sizes.values() if n > 1), "largest": max(sizes.values()),
                            "mixed_label_groups": mixed})
    markdown = (f"`{command_line()}`: {len(images.thumbnails)} distinct FracAtlas images; pairs the matcher scores "
                f">= {BANDS[0][0]}, a seeded sample of each score band judged by eye.\n\n"
                + md_table(["copy score", "pairs", "pairs with both labels", "judged by eye",
                            "same X-ray or same patient", "precision"],
                           [[b["band"], b["pairs"], b["both_labels"], b["judged"], b["right"],
                             f"{b['right'] / b['judged']:.0%}" if b["judged"] else "-"] for b in bands])
                + "\n\n" + md_table(["threshold", "groups", "images in groups of 2+", "largest group",
                                     "groups with both labels"],
                                    [[f"{r['threshold']:.2f}", r["groups"], r["in_groups_of_2_or_more"], r["largest"],
                                      r["mixed_label_groups"]] for r in groups_rows]))
    write_results(args.out, {"distinct_images": len(images.thumbnails), "bands": bands, "groups": groups_rows},
                  markdown, before)


if __name__ == "__main__":
    main()
