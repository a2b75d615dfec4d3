"""Training throughput: this project's pipeline against a naive `datasets` + torchvision loop.

Both train the same model (the default architecture, 224 px, batch 64, AdamW) on the same
images in one run, and the script prints images/s for each and their ratio.

- naive: `datasets` imagefolder with a torchvision transform applied per image on access
  (decode, grayscale, random rotation / resized crop / flip / colour jitter), a PyTorch
  DataLoader with 2 workers, fp32, default memory layout.
- pipeline: images decoded once into a uint8 cache (timed separately), batched tensor
  augmentation (`fracture_detector.augment`), channels_last, the precision `train.py` picks.

    python bench/train_throughput.py --data /path/to/imagefolder [--steps 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from fracture_detector import data as data_lib  # noqa: E402
from fracture_detector.model import DEFAULT_ARCH, create_model  # noqa: E402
from fracture_detector.preprocess import IMAGE_SIZE, MEAN, STD  # noqa: E402
from fracture_detector.training import _mixed_precision, train_step  # noqa: E402


def naive(data_dir: str, steps: int, batch: int, warmup: int) -> float:
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

    def apply(batch_dict):
        batch_dict["pixel_values"] = [tf(im) for im in batch_dict["image"]]
        return batch_dict

    ds.set_transform(apply)

    def collate(rows):
        return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r["label"] for r in rows])

    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=2,
                                         collate_fn=collate, persistent_workers=True)
    torch.manual_seed(0)
    model = create_model(DEFAULT_ARCH).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(loader)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        x, y = next(it)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def pipeline(data_dir: str, steps: int, batch: int, warmup: int) -> tuple[float, float]:
    from accelerate import Accelerator

    t0 = time.perf_counter()
    records, sources, names = data_lib.load_records(data_dir)
    images, _ = data_lib.decode_records(records, sources, names)
    cache_seconds = time.perf_counter() - t0
    pixels, labels = torch.from_numpy(images.pixels), torch.from_numpy(images.labels)
    acc = Accelerator(mixed_precision=_mixed_precision("auto"))
    torch.manual_seed(0)
    model = create_model(DEFAULT_ARCH).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, opt = acc.prepare(model, opt)
    g = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        idx = torch.from_numpy(rng.integers(0, len(pixels), batch))
        train_step(model, opt, acc, pixels[idx], labels[idx], g)
    return steps * batch / (time.perf_counter() - t0), cache_seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, model {DEFAULT_ARCH}, "
          f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up steps")
    base = naive(args.data, args.steps, args.batch_size, args.warmup)
    print(f"naive datasets + torchvision DataLoader loop: {base:.1f} images/s")
    ours, cache_s = pipeline(args.data, args.steps, args.batch_size, args.warmup)
    print(f"fracture_detector pipeline:                    {ours:.1f} images/s "
          f"(one-off decode + cache: {cache_s:.1f} s)")
    print(f"ratio: {ours / base:.2f}x")


if __name__ == "__main__":
    main()
