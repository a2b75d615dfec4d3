"""Training throughput: this project's pipeline against a tuned naive `datasets` + torchvision loop.

Both train the same model (the default architecture, 224 px, batch 64, AdamW) on the same
training images and report images/s over the timed steps.

- naive: `datasets` imagefolder with a torchvision transform applied per image on access
  (decode, grayscale, random rotation / resized crop / flip / colour jitter), a PyTorch
  DataLoader, fp32, default memory layout. Several settings of DataLoader workers and torch
  threads that fit 2 cores are measured; the fastest (by median) is the baseline.
- pipeline: images decoded once into a uint8 cache (timed separately, not counted),
  batched tensor augmentation (`fracture_detector.training.train_step`), channels_last,
  accelerate's default precision (fp32; what `--precision auto` picks on a CPU without AMX).

Every measurement starts its own loader and runs `--warmup` untimed steps before `--steps`
timed ones; all settings run in alternating order for `--rounds` rounds, and the ratio
(pipeline / fastest naive setting) is taken per round.

    python bench/train_throughput.py --data /tmp/fmr [--steps 12 --rounds 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from common import (
    add_out_argument,
    alternate,
    command_line,
    fmt_range,
    fmt_ratio,
    loadavg,
    md_table,
    met,
    ratios,
    summary,
    write_results,
)

from fracture_detector import data as data_lib
from fracture_detector.model import DEFAULT_ARCH, create_model
from fracture_detector.preprocess import IMAGE_SIZE, MEAN, STD
from fracture_detector.training import train_step

NAIVE_SETTINGS = [(0, 2), (1, 2), (2, 2), (1, 1)]  # (DataLoader workers, torch threads in the main process)
PIPELINE_THREADS = 2
TARGET = 3.0


def naive_dataset(data_dir: str):
    """The training split as a `datasets` imagefolder with per-image torchvision augmentation."""
    from datasets import load_dataset
    from torchvision import transforms as T

    ds = load_dataset("imagefolder", data_dir=data_dir, split="train")
    tf = T.Compose([
        T.Grayscale(1),
        T.RandomRotation(30),
        T.RandomResizedCrop(IMAGE_SIZE, scale=(0.6, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.3, 0.3),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ])

    def apply(batch_dict: dict) -> dict:
        batch_dict["pixel_values"] = [tf(im) for im in batch_dict["image"]]
        return batch_dict

    ds.set_transform(apply)
    return ds


def collate(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r["label"] for r in rows])


def images_per_second(step: Callable[[], None], steps: int, warmup: int, batch: int) -> float:
    """Run `warmup` untimed steps, then `steps` timed ones; images/s of the timed ones."""
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def naive_side(ds, workers: int, threads: int, steps: int, warmup: int, batch: int) -> Callable[[], float]:
    """One measurement of the naive loop: a fresh DataLoader per call, shut down afterwards."""
    torch.manual_seed(0)
    model = create_model(DEFAULT_ARCH).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(batches: Iterator) -> None:
        x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def measure() -> float:
        torch.set_num_threads(threads)
        batches = iter(torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                                   collate_fn=collate, drop_last=True))
        rate = images_per_second(partial(step, batches), steps, warmup, batch)
        del batches  # stops the workers so that they do not compete with the next measurement
        return rate

    return measure


def pipeline_side(data_dir: str, steps: int, warmup: int, batch: int) -> tuple[Callable[[], float], float]:
    """The project's training step on the decoded uint8 cache; also returns the seconds the cache took."""
    t0 = time.perf_counter()
    records, sources, names = data_lib.load_records(data_dir)
    images, _ = data_lib.decode_records(records, sources, names)
    cache_seconds = time.perf_counter() - t0
    train = np.array([r.index for r in records if r.shipped_split == "train" and r.index >= 0])
    pixels, labels = torch.from_numpy(images.pixels[train]), torch.from_numpy(images.labels[train])
    acc = Accelerator()
    torch.manual_seed(0)
    model = create_model(DEFAULT_ARCH).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)

    def measure() -> float:
        torch.set_num_threads(PIPELINE_THREADS)

        def step() -> None:
            idx = torch.from_numpy(rng.integers(0, len(pixels), batch))
            train_step(model, opt, acc, pixels[idx], labels[idx], g)

        return images_per_second(step, steps, warmup, batch)

    return measure, cache_seconds


def report(rates: dict[str, list[float]], cache_seconds: float, args: argparse.Namespace) -> tuple[dict, str]:
    """Raw numbers and the README markdown: every setting, the fastest naive one, the ratio and the target."""
    naive = {k: v for k, v in rates.items() if k.startswith("naive")}
    best = max(naive, key=lambda k: summary(naive[k])["median"])
    ratio = ratios(rates["pipeline"], naive[best])
    rows = [[k + (" **(baseline: fastest naive)**" if k == best else ""), fmt_range(v)] for k, v in rates.items()]
    ok = summary(ratio)["median"] >= TARGET
    markdown = "\n".join([
        f"`{command_line()}`: {DEFAULT_ARCH}, {IMAGE_SIZE} px, "
        f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up steps per measurement, "
        f"median of {args.rounds} alternating runs (min, max). Pipeline's one-off decode + cache: "
        f"{cache_seconds:.1f} s (not counted).",
        "",
        md_table(["setting", "images/s"], rows),
        "",
        md_table(["", "measured", "target", ""],
                 [["pipeline / fastest naive", fmt_ratio(ratio), f">= {TARGET:g}x", met(ok)]]),
    ])
    results = {
        "model": DEFAULT_ARCH, "image_size": IMAGE_SIZE, "batch_size": args.batch_size, "steps": args.steps,
        "warmup_steps": args.warmup, "rounds": args.rounds, "cache_seconds": cache_seconds,
        "images_per_second": {k: summary(v) for k, v in rates.items()},
        "naive_baseline": best, "ratio": summary(ratio), "target_ratio": TARGET, "target_met": ok,
    }
    return results, markdown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    ds = naive_dataset(args.data)
    sides = {f"naive, DataLoader num_workers={w}, {t} torch threads":
             naive_side(ds, w, t, args.steps, args.warmup, args.batch_size) for w, t in NAIVE_SETTINGS}
    sides["pipeline"], cache_seconds = pipeline_side(args.data, args.steps, args.warmup, args.batch_size)
    rates = alternate(sides, args.rounds, warmup=False)  # each measurement warms up itself
    torch.set_num_threads(PIPELINE_THREADS)
    results, markdown = report(rates, cache_seconds, args)
    write_results(args.out, results, markdown, before)


if __name__ == "__main__":
    main()
