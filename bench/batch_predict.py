"""Batch inference over a folder of X-rays: `Predictor.predict_files` (what `fracture-detector
predict` runs) against a naive loop, in one run, plus the model's compute bound on this machine.

- naive: one image at a time: PIL open + convert("L"), torchvision Resize/ToTensor/Normalize,
  the model in fp32 eager mode at batch 1 (default memory layout), under `torch.no_grad`.
- ours: decoding in threads while the model runs, batches of 64, channels_last, the X-ray check
  on (as the CLI runs by default).
- compute bound: the model's FLOPs per image (PyTorch's FlopCounterMode) against the FLOP/s
  this machine reaches on a large fp32 matrix multiply.
- `torch.compile`: the same `predict_files` with the model compiled, and the compile time. It is
  not offered in the CLI because it was not faster end to end here (batch sizes vary, so it
  recompiles); TorchScript (trace + freeze) was faster on the model alone once, but it is
  deprecated in this PyTorch, so it was not kept either.

    python bench/batch_predict.py [--data ../shared/datasets/fracture-multi-region] [--images 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

from fracture_detector.model import model_inputs  # noqa: E402
from fracture_detector.predict import Predictor  # noqa: E402


def naive(predictor: Predictor, files: list[Path]) -> float:
    """Seconds for the one-image-at-a-time loop."""
    cfg = predictor.model.pretrained_cfg
    size = cfg["input_size"][-2:]
    transform = transforms.Compose([transforms.Resize(size), transforms.ToTensor(),
                                    transforms.Normalize(cfg["mean"], cfg["std"])])
    model = predictor.model.to(memory_format=torch.contiguous_format)
    t = time.perf_counter()
    with torch.no_grad():
        for path in files:
            x = transform(Image.open(path).convert("L"))[None]
            torch.softmax(model(x), dim=1)
    seconds = time.perf_counter() - t
    predictor.model.to(memory_format=torch.channels_last)
    return seconds


def ours(predictor: Predictor, files: list[Path]) -> tuple[float, int]:
    """Seconds for `predict_files`, and how many files it classified."""
    t = time.perf_counter()
    done = sum(r.prediction is not None for r in predictor.predict_files(files))
    return time.perf_counter() - t, done


def compute_bound(predictor: Predictor) -> tuple[float, float]:
    """(GFLOPs per image, images/s if the machine ran the model at its matmul FLOP/s)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = model_inputs(predictor.model, torch.zeros(1, *predictor.model.pretrained_cfg["input_size"][-2:],
                                                  dtype=torch.uint8))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        predictor.model(x)
    flops = counter.get_total_flops()
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    t, n = time.perf_counter(), 10
    for _ in range(n):
        torch.mm(a, b)
    peak = 2 * 2048**3 * n / (time.perf_counter() - t)
    return flops / 1e9, peak / flops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "fracture-multi-region"))
    p.add_argument("--images", type=int, default=1000)
    args = p.parse_args()
    files = sorted(Path(args.data).rglob("*.*"))
    files = [f for f in files if f.suffix.lower() in (".jpg", ".jpeg", ".png")][: args.images]
    print(f"{len(files)} files from {args.data}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    predictor = Predictor()

    base = naive(predictor, files)
    print(f"naive loop (PIL + torchvision, fp32 eager, batch 1): {len(files) / base:.1f} images/s")
    seconds, done = ours(predictor, files)
    print(f"predict_files (threads decode, batch 64, channels_last, X-ray check): {len(files) / seconds:.1f} "
          f"images/s ({done} classified) -> {base / seconds:.2f}x the naive loop")
    gflops, bound = compute_bound(predictor)
    print(f"compute bound: {gflops:.3f} GFLOPs per image; at this machine's fp32 matmul rate the model "
          f"alone could do {bound:.0f} images/s; predict_files reaches {len(files) / seconds / bound:.0%} of it")

    predictor.model = torch.compile(predictor.model)  # measured, not offered: see the module docstring
    t = time.perf_counter()
    predictor.predict_pixels(torch.zeros(64, *predictor.model.pretrained_cfg["input_size"][-2:], dtype=torch.uint8))
    compile_seconds = time.perf_counter() - t
    compiled, _ = ours(predictor, files)
    print(f"predict_files with torch.compile: {len(files) / compiled:.1f} images/s after {compile_seconds:.0f} s "
          f"of compiling ({base / compiled:.2f}x the naive loop without the compile time, "
          f"{base / (compiled + compile_seconds):.2f}x with it)")


if __name__ == "__main__":
    main()
