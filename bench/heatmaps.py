"""The heatmap at no extra cost: the class activation map (CAM) against Grad-CAM, on real X-rays.

The bundled model's head is global average pooling + linear, so `sum_k w[c, k] * A_k` over its
last feature map is a heatmap from the forward pass alone (`heatmap.class_activation_map`).
Grad-CAM (the demo's heatmap before) takes the gradient at the last `feature_info` stage, which
needs a backward pass. This script measures, on one X-ray per copy group of the bundled model's
clean test split (every source):

1. Agreement: Pearson correlation of the two maps of each X-ray (both at the input size, in
   [0, 1]), over the X-rays where both maps show some positive evidence; how many maps are
   empty (no positive evidence anywhere: the model is sure there is no fracture), and whether
   the peaks fall in the same place (the two peaks within a tenth of the image of each other).
2. Cost, per image at batch 1 and in batches of 32: the prediction alone, the prediction with
   CAM (ONNX Runtime, what the app and the CLI run) and with Grad-CAM (PyTorch), warmed up,
   in alternating order for `--rounds` rounds.

    python bench/heatmaps.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf
"""

from __future__ import annotations

import argparse
import csv
import gzip
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from common import (
    add_out_argument,
    alternate,
    command_line,
    fmt_range,
    loadavg,
    md_table,
    summary,
    timed,
    write_results,
)

from fracture_detector.data import MANIFEST_NAME, parse_source
from fracture_detector.gradcam import gradcam
from fracture_detector.predict import Predictor, read_xray
from fracture_detector.resources import BUNDLED_MODEL

THREADS = 2


def clean_test_files(roots: dict[str, str]) -> dict[str, list[Path]]:
    """Per source, the first file (by path) of each copy group of the bundled model's clean test split."""
    with gzip.open(BUNDLED_MODEL / MANIFEST_NAME, "rt", newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "test"), key=lambda r: r["path"])
    first: dict[str, dict[str, Path]] = {}
    for r in rows:
        first.setdefault(r["source"], {}).setdefault(r["group"], Path(roots[r["source"]]) / r["path"])
    return {source: list(groups.values()) for source, groups in first.items()}


def agreement(cams: np.ndarray, grad_cams: np.ndarray) -> dict:
    """Correlations and peak distances of paired maps `(N, S, S)`, and how many of each are empty."""
    empty_cam, empty_grad = cams.max((1, 2)) == 0, grad_cams.max((1, 2)) == 0
    both = ~empty_cam & ~empty_grad
    r = [float(np.corrcoef(a.ravel(), b.ravel())[0, 1]) for a, b in zip(cams[both], grad_cams[both])]
    size = cams.shape[-1]
    peaks = [np.unravel_index(m.argmax(), m.shape) for m in (*cams[both], *grad_cams[both])]
    n = int(both.sum())
    distance = [float(np.hypot(*np.subtract(peaks[i], peaks[n + i]))) / size for i in range(n)]
    return {"images": len(cams), "both_non_empty": n, "empty_cam": int(empty_cam.sum()),
            "empty_grad_cam": int(empty_grad.sum()), "empty_both": int((empty_cam & empty_grad).sum()),
            "correlation": {"median": statistics.median(r), "p10": float(np.percentile(r, 10)),
                            "min": min(r), "share_above_0.5": float(np.mean(np.array(r) > 0.5))} if r else None,
            "peaks_within_a_tenth": float(np.mean(np.array(distance) <= 0.1)) if distance else None}


def cost_side(fn: Callable[[], object], per: int, calls: int) -> Callable[[], float]:
    """ms per image of `calls` calls of `fn` (`per` images a call)."""

    def measure() -> float:
        return timed(lambda: [fn() for _ in range(calls)]) * 1000 / (calls * per)

    return measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER for each source of the bundled model")
    p.add_argument("--rounds", type=int, default=3)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    torch.set_num_threads(THREADS)
    files = clean_test_files(dict(parse_source(spec) for spec in args.data))
    onnx, torch_ = Predictor(BUNDLED_MODEL), Predictor(BUNDLED_MODEL, backend="torch")
    assert onnx.backend == "onnxruntime"
    by_source, pixels = {}, {}
    for source, paths in files.items():
        pixels[source] = np.stack([read_xray(f, onnx.image_size, check=False).pixels for f in paths])
        _, cams = onnx.predict_with_heatmaps(pixels[source], check=False)
        _, grad_cams = gradcam(torch_.model, pixels[source], torch_.positive)
        by_source[source] = agreement(cams, grad_cams)
        print(source, by_source[source], flush=True)

    one = next(iter(pixels.values()))[:1]
    batch = np.repeat(one, 32, axis=0)
    sides = {
        "prediction only, ONNX Runtime": (lambda: onnx.predict_pixels(one), 1, 100),
        "prediction + CAM, ONNX Runtime": (lambda: onnx.predict_with_heatmaps(one), 1, 100),
        "prediction + Grad-CAM, PyTorch": (lambda: gradcam(torch_.model, one, torch_.positive), 1, 50),
        "batch of 32: prediction + CAM, ONNX Runtime": (lambda: onnx.predict_with_heatmaps(batch), 32, 5),
        "batch of 32: prediction + Grad-CAM, PyTorch": (lambda: gradcam(torch_.model, batch, torch_.positive), 32, 3),
    }
    costs = alternate({k: cost_side(*v) for k, v in sides.items()}, args.rounds)

    rows = []
    for source, a in by_source.items():
        c = a["correlation"]
        rows.append([source, a["images"], a["both_non_empty"], f"{c['median']:.2f}", f"{c['p10']:.2f}",
                     f"{c['share_above_0.5']:.0%}", f"{a['peaks_within_a_tenth']:.0%}",
                     f"{a['empty_cam']} / {a['empty_grad_cam']} ({a['empty_both']} both)"])
    markdown = "\n".join([
        f"`{command_line()}`: bundled model, one X-ray per copy group of its clean test split; cost in ms per "
        f"image, median of {args.rounds} alternating runs (min, max), {THREADS} threads.",
        "",
        md_table(["source", "X-rays", "both maps non-empty", "correlation, median", "correlation, 10th pct",
                  "correlation > 0.5", "peaks within 1/10 of the image", "empty maps: CAM / Grad-CAM"], rows),
        "",
        md_table(["path", "ms per image"], [[k, fmt_range(v, "{:.2f}")] for k, v in costs.items()]),
    ])
    results = {"agreement": by_source, "ms_per_image": {k: summary(v) for k, v in costs.items()},
               "rounds": args.rounds, "threads": THREADS}
    write_results(args.out, results, markdown, before)


if __name__ == "__main__":
    main()
