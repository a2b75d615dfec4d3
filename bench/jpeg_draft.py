"""Decoding JPEGs at the model's scale (Pillow's draft mode): what it saves and what it changes.

Every file of the model's clean test split (its `split_manifest.csv.gz`, one file per distinct
image) is decoded three ways: as shipped (JPEGs over twice `decode.DRAFT_SIZE` shrunk in the
decoder), and with the decoder shrinking every JPEG over twice 512 (the display size) or over
twice the model's input size. For each: the model's clean-test ROC-AUC and sensitivity /
specificity at its threshold per source (by `Predictor.predict_pixels`, the X-ray check off,
so every file gets a probability), how far the probabilities move from the shipped decoding's,
how many decisions change, and the time to read one file into the model's pixel grid (decode,
upright, resize), the median of 3 alternating passes over the files' bytes held in memory.

    python bench/jpeg_draft.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        fracatlas=/tmp/fra [--model DIR]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from common import (
    add_out_argument,
    alternate,
    clean_test_rows,
    fmt_range,
    fmt_ratio,
    loadavg,
    md_table,
    ratios,
    summary,
    timed,
    write_results,
)
from PIL import Image
from sklearn.metrics import roc_auc_score

from fracture_detector.calibration import sensitivity_specificity
from fracture_detector.data import parse_source
from fracture_detector.decode import DRAFT_SIZE
from fracture_detector.predict import DISPLAY_SIZE, Predictor
from fracture_detector.preprocess import load_pixels
from fracture_detector.resources import BUNDLED_MODEL


def read_pixels(files: list[bytes], image_size: int, draft_size: int) -> np.ndarray:
    """The model's pixel grids, with the decoder shrinking JPEGs to `draft_size`."""
    return np.stack([load_pixels(data, image_size, draft_size) for data in files])


def shrunk_by_decoder(data: bytes, draft_size: int) -> bool:
    """Whether the decoder shrinks this file at `draft_size` (a JPEG over twice it); reads the header only."""
    with Image.open(io.BytesIO(data)) as im:
        return im.format == "JPEG" and max(im.size) > 2 * draft_size


def timed_read(files: list[bytes], image_size: int, draft_size: int) -> float:
    """Seconds to read every file into the model's pixel grid."""
    return timed(lambda: read_pixels(files, image_size, draft_size))


def scores(prob: np.ndarray, is_pos: np.ndarray, threshold: float) -> dict:
    sensitivity, specificity = sensitivity_specificity(prob, is_pos, threshold)
    return {"roc_auc": float(roc_auc_score(is_pos, prob)), "sensitivity": sensitivity, "specificity": specificity}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER sources the model was trained on")
    p.add_argument("--model", type=Path, default=BUNDLED_MODEL)
    p.add_argument("--rounds", type=int, default=3)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    folders = {name: Path(folder) for name, folder in map(parse_source, args.data)}
    predictor = Predictor(args.model)
    size, calibration = predictor.image_size, predictor.calibration
    threshold, positive = calibration.threshold, calibration.positive_label
    rows = clean_test_rows(args.model, folders)
    files = [(folders[r["source"]] / r["path"]).read_bytes() for r in rows]
    sources = np.array([r["source"] for r in rows])
    is_pos = np.array([r["label"] == positive for r in rows])
    drafts = {f"as shipped (JPEGs over {2 * DRAFT_SIZE} px to >= {DRAFT_SIZE})": DRAFT_SIZE,
              f"display scale (over {2 * DISPLAY_SIZE} px to >= {DISPLAY_SIZE})": DISPLAY_SIZE,
              f"model scale (over {2 * size} px to >= {size})": size}
    shipped = next(iter(drafts))

    probs = {}
    for name, draft in drafts.items():
        print(f"scoring: {name}", flush=True)
        predictions = predictor.predict_pixels(read_pixels(files, size, draft), check=False)
        probs[name] = np.array([pr.probabilities[positive] for pr in predictions])
    reads = {name: lambda d=draft: timed_read(files, size, d) for name, draft in drafts.items()}
    seconds = alternate(reads, args.rounds)

    results = {"images": len(rows), "threshold": threshold, "image_size": size, "settings": {}}
    quality, speed = [], []
    for name, draft in drafts.items():
        moved = np.abs(probs[name] - probs[shipped])
        flipped = (probs[name] >= threshold) != (probs[shipped] >= threshold)
        per_file_ms = [1000 * s / len(files) for s in seconds[name]]
        speedup = ratios(seconds[shipped], seconds[name])
        by_source = {src: scores(probs[name][sources == src], is_pos[sources == src], threshold)
                     for src in sorted(folders)}
        shrunk = sum(shrunk_by_decoder(data, draft) for data in files)
        results["settings"][name] = {"draft_size": draft, "files_shrunk": shrunk, "ms_per_file": summary(per_file_ms),
                                     "speedup": summary(speedup), "by_source": by_source,
                                     "max_probability_change": float(moved.max()),
                                     "median_probability_change": float(np.median(moved)),
                                     "decisions_changed": int(flipped.sum())}
        for src, s in by_source.items():
            mine = sources == src
            quality.append([name, src, f"{s['roc_auc']:.3f}", f"{s['sensitivity']:.2f} / {s['specificity']:.2f}",
                            f"{np.median(moved[mine]):.4f} / {moved[mine].max():.4f}", int(flipped[mine].sum())])
        speed.append([name, shrunk, f"{fmt_range(per_file_ms, '{:.2f}')}", fmt_ratio(speedup),
                      f"{int(flipped.sum())} of {len(files)}"])
    jpegs = sum(data[:2] == b"\xff\xd8" for data in files)
    header = ["decoding", "source", "clean-test ROC-AUC", f"sensitivity / specificity at {threshold:.3f}",
              "probability change vs as shipped, median / max", "decisions changed"]
    speed_header = ["decoding", "files the decoder shrinks", "read, ms per file", "speed / as shipped",
                    "decisions changed"]
    markdown = (f"`python bench/jpeg_draft.py`: {args.model.name}'s clean test split, {len(files)} files "
                f"({jpegs} JPEGs), model input {size} px, the model as trained (not retrained on the new decoding); "
                f"read = decode, upright and resize one file from memory, median of {args.rounds} alternating passes "
                f"(min, max).\n\n" + md_table(header, quality) + "\n\n" + md_table(speed_header, speed))
    write_results(args.out, results, markdown, before)


if __name__ == "__main__":
    main()
