"""Choose the architecture by measurement: quality x CPU speed x size, on the clean split.

Each candidate timm CNN trains with this project's own recipe pieces (batched
augmentation, AdamW, warmup + cosine, group-weighted sampling) for the same number of
epochs at a reduced input size, so the whole comparison fits in minutes on 2 cores.
Prints, per candidate: parameters, weight size, training images/s, single-image
inference latency at 224 px, and the best validation ROC-AUC (clean split).

    python bench/select_model.py --data /path/to/imagefolder [--epochs 10 --image-size 128]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from fracture_detector.model import create_model, predict_logits  # noqa: E402
from fracture_detector.training import TrainConfig, _epoch_indices, _lr_at, prepare_data, train_step  # noqa: E402

CANDIDATES = ["mobilenetv3_small_100", "lcnet_075", "regnetx_002", "mobilenetv4_conv_small", "ghostnet_050"]


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, size: int = 224, repeats: int = 30) -> float:
    model.eval()
    x = torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    for _ in range(5):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def run(arch: str, images, cfg: TrainConfig, batch: int = 64, lr: float = 1e-3) -> dict:
    torch.manual_seed(cfg.seed)
    acc = Accelerator(mixed_precision="no")
    model = create_model(arch).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    train_idx = np.flatnonzero(images.split == "train")
    val_idx = np.flatnonzero(images.split == "val")
    pixels = torch.from_numpy(images.pixels)
    labels = torch.from_numpy(images.labels)
    steps = math.ceil(len(train_idx) / batch)
    total, best, t_train = steps * cfg.epochs, 0.0, 0.0
    g = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        model.train()
        order = train_idx[_epoch_indices(images.groups[train_idx], steps * batch, cfg.seed, epoch)]
        t0 = time.perf_counter()
        for i in range(steps):
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch * steps + i, total, steps, lr)
            idx = torch.from_numpy(order[i * batch : (i + 1) * batch])
            train_step(model, opt, acc, pixels[idx], labels[idx], g)
        t_train += time.perf_counter() - t0
        prob = torch.softmax(predict_logits(model, images.pixels[val_idx]), 1)[:, 0].numpy()
        auc = roc_auc_score(images.labels[val_idx] == 0, prob)
        best = max(best, auc)
        print(f"  {arch} epoch {epoch + 1}: val ROC-AUC {auc:.4f}", flush=True)
    params = sum(p.numel() for p in model.parameters())
    return {"arch": arch, "params_m": params / 1e6, "mb": params * 4 / 2**20, "best_val_auc": best,
            "train_img_s": steps * batch * cfg.epochs / t_train, "latency_ms": latency_ms(model)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--arch", nargs="*", default=CANDIDATES)
    args = p.parse_args()
    cfg = TrainConfig(data=args.data, epochs=args.epochs, image_size=args.image_size)
    _, images, _ = prepare_data(cfg, None)
    rows = [run(arch, images, cfg) for arch in args.arch]
    print(f"\n{args.epochs} epochs at {args.image_size} px, {torch.get_num_threads()} threads")
    print("| model | params (M) | weights (MB) | train img/s | 1-image latency at 224 px (ms) | best val ROC-AUC |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['arch']} | {r['params_m']:.2f} | {r['mb']:.1f} | {r['train_img_s']:.0f} | "
              f"{r['latency_ms']:.1f} | {r['best_val_auc']:.4f} |")


if __name__ == "__main__":
    main()
