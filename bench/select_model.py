"""Choose the architecture by measurement: quality x CPU speed x size, on the clean split.

Each candidate timm CNN is trained by the project's own recipe, `fracture_detector.training.train`
(one `TrainConfig` per candidate, a fresh temporary output folder each, a small bootstrap), for the
same number of epochs at a reduced input size; the best validation ROC-AUC is read from the run's
`metrics.json`. Speed is measured apart from training, on the same 2 cores, with all candidates
in alternating order (A, B, C, ..., A, B, C, ...) for `--rounds` rounds after a warm-up:

- training throughput: `train_step` (batched augmentation, AdamW, channels_last) on the cached
  training pixels at the training size, batch 64, images/s;
- single-image inference latency of the model alone at 224 px, median of 30 calls per block (ms).

Weights are the size of the saved `model.safetensors`. If the measured throughput says the trainings
would take longer than `--budget-minutes`, the number of epochs is reduced (and the output says so).

    python bench/select_model.py --data /tmp/fmr [--epochs 10 --image-size 128 --budget-minutes 25]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
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

from fracture_detector.model import create_model
from fracture_detector.training import TrainConfig, prepare_data, train, train_step

CANDIDATES = ["mobilenetv3_small_100", "lcnet_075", "regnetx_002", "mobilenetv4_conv_small", "ghostnet_050"]
BATCH = 64


def throughput_side(arch: str, pixels: torch.Tensor, labels: torch.Tensor, acc: Accelerator,
                    steps: int = 8, warmup: int = 2) -> Callable[[], float]:
    """Training images/s of `arch` with `train_step` on cached pixels (a fresh model, seeded)."""
    torch.manual_seed(0)
    model = create_model(arch, image_size=pixels.shape[-1]).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def step() -> None:
        idx = torch.from_numpy(rng.integers(0, len(pixels), BATCH))
        train_step(model, opt, acc, pixels[idx], labels[idx], g)

    def measure() -> float:
        for _ in range(warmup):
            step()
        return steps * BATCH / timed(lambda: [step() for _ in range(steps)])

    return measure


def latency_side(arch: str, size: int = 224, repeats: int = 30) -> Callable[[], float]:
    """Median ms of one-image inference (model alone, eval, channels_last) over `repeats` calls."""
    model = create_model(arch).to(memory_format=torch.channels_last).eval()
    x = torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def measure() -> float:
        for _ in range(3):
            model(x)
        return 1000 * statistics.median(timed(lambda: model(x)) for _ in range(repeats))

    return measure


def plan_epochs(wanted: int, budget_s: float, prepare_s: float, epoch_s: dict[str, float]) -> tuple[int, float]:
    """The most epochs <= `wanted` whose estimated total (data preparation per run + epochs) fits the budget."""
    def estimate(e: int) -> float:
        return len(epoch_s) * prepare_s + e * sum(epoch_s.values())

    epochs = wanted
    while epochs > 1 and estimate(epochs) > budget_s:
        epochs -= 1
    return epochs, estimate(wanted)


def train_candidate(arch: str, data: str, epochs: int, image_size: int, bootstrap: int) -> dict:
    """Train with the project's recipe in a temporary folder; best validation ROC-AUC from metrics.json."""
    with tempfile.TemporaryDirectory(prefix=f"select_{arch}_") as tmp:
        cfg = TrainConfig(data=data, output_dir=tmp, arch=arch, epochs=epochs, image_size=image_size,
                          bootstrap=bootstrap)
        t = time.perf_counter()
        out = train(cfg)
        seconds = time.perf_counter() - t
        history = json.loads((Path(out) / "metrics.json").read_text())["history"]
        weights_mb = (Path(out) / "model.safetensors").stat().st_size / 2**20
    scored = [(h["val_roc_auc"], h["epoch"]) for h in history if not math.isnan(h["val_roc_auc"])]
    best_auc, best_epoch = max(scored) if scored else (float("nan"), None)
    return {"best_val_roc_auc": best_auc, "best_epoch": best_epoch, "train_seconds": seconds,
            "weights_mb": weights_mb, "val_roc_auc_per_epoch": [h["val_roc_auc"] for h in history]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--arch", nargs="*", default=CANDIDATES)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bootstrap", type=int, default=0, help="bootstrap resamples in each run's evaluation")
    p.add_argument("--budget-minutes", type=float, default=25.0, help="reduce epochs to fit")
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()

    t = time.perf_counter()
    _, images, _ = prepare_data(TrainConfig(data=args.data, image_size=args.image_size), None)
    prepare_s = time.perf_counter() - t
    train_idx = np.flatnonzero(images.split == "train")
    pixels, labels = torch.from_numpy(images.pixels[train_idx]), torch.from_numpy(images.labels[train_idx])
    acc = Accelerator()
    print("training throughput (images/s):", flush=True)
    rates = alternate({a: throughput_side(a, pixels, labels, acc) for a in args.arch}, args.rounds)
    print("latency at 224 px (ms):", flush=True)
    latency = alternate({a: latency_side(a) for a in args.arch}, args.rounds)

    images_per_epoch = math.ceil(len(train_idx) / BATCH) * BATCH
    epoch_s = {a: images_per_epoch / summary(rates[a])["median"] for a in args.arch}
    epochs, estimate_s = plan_epochs(args.epochs, args.budget_minutes * 60, prepare_s, epoch_s)
    print(f"estimated {estimate_s / 60:.1f} min for {args.epochs} epochs; training {epochs} epochs", flush=True)

    rows, results = [], {}
    for arch in args.arch:
        params = sum(q.numel() for q in create_model(arch).parameters())
        run = train_candidate(arch, args.data, epochs, args.image_size, args.bootstrap)
        results[arch] = {"params_m": params / 1e6, **run, "train_images_per_second": summary(rates[arch]),
                         "latency_ms_224": summary(latency[arch])}
        rows.append([arch, f"{params / 1e6:.2f}", f"{run['weights_mb']:.1f}", fmt_range(rates[arch], "{:.0f}"),
                     fmt_range(latency[arch]), f"{run['best_val_roc_auc']:.4f} (epoch {run['best_epoch']})",
                     f"{run['train_seconds'] / 60:.1f}"])

    reduced = (f" (reduced from {args.epochs}: {args.epochs} epochs were estimated at {estimate_s / 60:.0f} min, "
               f"over the {args.budget_minutes:g} min budget)") if epochs < args.epochs else ""
    markdown = "\n".join([
        f"`{command_line()}`: {epochs} epochs at {args.image_size} px{reduced}, seed 0, "
        f"{len(train_idx)} training / {int((images.split == 'val').sum())} validation images (clean split). "
        f"Speed columns: median of {args.rounds} alternating runs (min, max), {torch.get_num_threads()} threads.",
        "",
        md_table(["model", "params (M)", "weights (MB)", f"train img/s at {args.image_size} px",
                  "1-image latency at 224 px (ms)", f"best val ROC-AUC ({epochs} epochs)", "train() wall time (min)"],
                 rows),
    ])
    summary_results = {"epochs": epochs, "epochs_requested": args.epochs, "image_size": args.image_size,
                       "estimated_seconds_for_requested_epochs": estimate_s, "prepare_seconds": prepare_s,
                       "train_images": len(train_idx), "rounds": args.rounds, "bootstrap": args.bootstrap,
                       "candidates": results}
    write_results(args.out, summary_results, markdown, before)


if __name__ == "__main__":
    main()
