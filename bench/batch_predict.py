"""Batch inference over a folder of X-rays: `Predictor.predict_files` (what `fracture-detector
predict` runs) against a tuned naive loop, plus the model's compute bound on this machine.

- naive: one image at a time: PIL open + convert("L"), torchvision Resize/ToTensor/Normalize,
  the bundled model in fp32 eager mode at batch 1 (default memory layout), under `torch.no_grad`.
  Measured as a plain loop and with a batch-1 DataLoader decoding in 1 worker, each with 1 and
  2 torch threads; the fastest setting (by median) is the baseline.
- predict_files: decoding in threads while the model runs, batches of 64, the X-ray check on (as
  the CLI runs by default), 2 threads; the model run by ONNX Runtime (the CLI's default for the
  bundled model) and by PyTorch (channels_last; the fallback without model.onnx).
- predict_files with an int8 copy of the model (not shipped: it fails the project's quality bar,
  bench/onnx_runtime.py), quantised as bench/onnx_runtime.py does, calibrated on the first 256
  of the files (this side measures speed only): how far a faster model alone would carry it.
- decoding alone: what predict_files' threads do before the model (`read_xray`: decode, the cheap
  X-ray check, upright, resize, display copy) in as many threads, nothing else running. With the
  batched model alone (below) it gives what predict_files could reach if decoding and the model
  shared the two cores without loss: 1 / (1 / decoding rate + 1 / model rate).
- batched model: the model alone (`Predictor.forward`: logits, feature map and the check's
  statistics, batch 64) on already decoded pixels, by each runtime. Over the fastest naive
  loop, this is the most predict_files could reach if decoding cost nothing.
- compute bound: the model's FLOPs per image (PyTorch's FlopCounterMode) against the FLOP/s this
  machine reaches on a 2048 x 2048 fp32 matrix multiply, as images/s.

Every side is warmed up once, then all run in alternating order for `--rounds` rounds;
ratios are taken per round.

    python bench/batch_predict.py --data /tmp/fmr [--images 500 --rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
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
    timed,
    write_results,
)
from onnx_runtime import quantize, session
from PIL import Image
from torchvision import transforms

from fracture_detector.model import load_model, model_inputs
from fracture_detector.predict import Predictor, read_xray
from fracture_detector.resources import BUNDLED_MODEL

SUFFIXES = (".jpg", ".jpeg", ".png")
NAIVE_SETTINGS = [("loop", 2), ("loop", 1), ("DataLoader, 1 worker", 2), ("DataLoader, 1 worker", 1)]
THREADS = 2
TARGET_RATIO = 5.0
FILES_ONNX, FILES_TORCH = "predict_files, ONNX Runtime", "predict_files, PyTorch"
FILES_INT8 = "predict_files, ONNX Runtime, int8 copy of the model (not shipped)"
DECODING = "decoding alone (read_xray, as predict_files' threads run it)"
MODEL_ONNX, MODEL_TORCH = "batched model alone (batch 64), ONNX Runtime", "batched model alone (batch 64), PyTorch"
TARGET_BOUND = 0.40


class NaiveFiles(torch.utils.data.Dataset):
    """Files -> normalised (1, H, W) tensors with torchvision, one at a time."""

    def __init__(self, files: list[Path], transform: Callable):
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(Image.open(self.files[i]).convert("L"))


def pick_files(data: str, n: int) -> list[Path]:
    """`n` image files spread evenly over the sorted folder (all splits and labels)."""
    files = sorted(f for f in Path(data).rglob("*") if f.suffix.lower() in SUFFIXES)
    return files[:: max(1, len(files) // n)][:n]


def naive_side(files: list[Path], how: str, threads: int) -> Callable[[], float]:
    """images/s of the one-image-at-a-time loop with its own fp32 contiguous copy of the model."""
    model, _ = load_model(BUNDLED_MODEL)
    cfg = model.pretrained_cfg
    transform = transforms.Compose([transforms.Resize(cfg["input_size"][-2:]), transforms.ToTensor(),
                                    transforms.Normalize(cfg["mean"], cfg["std"])])
    dataset = NaiveFiles(files, transform)

    def measure() -> float:
        torch.set_num_threads(threads)
        t = time.perf_counter()
        if how == "loop":
            inputs = (dataset[i][None] for i in range(len(dataset)))
        else:
            inputs = iter(torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1))
        with torch.no_grad():
            for x in inputs:
                torch.softmax(model(x), dim=1)
        return len(files) / (time.perf_counter() - t)

    return measure


def predict_files_side(predictor: Predictor, files: list[Path], classified: list[int]) -> Callable[[], float]:
    """images/s of `predict_files` (CLI defaults); appends how many files it classified to `classified`."""

    def measure() -> float:
        torch.set_num_threads(THREADS)
        t = time.perf_counter()
        classified.append(sum(r.prediction is not None for r in predictor.predict_files(files)))
        return len(files) / (time.perf_counter() - t)

    return measure


def decoding_side(predictor: Predictor, files: list[Path], workers: int = 4) -> Callable[[], float]:
    """images/s of predict_files' decoding threads on their own (`workers` is predict_files' default)."""

    def measure() -> float:
        t = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda f: read_xray(f, predictor.image_size), files))
        return len(files) / (time.perf_counter() - t)

    return measure


def batched_model_side(predictor: Predictor, files: list[Path], repeats: int = 4) -> Callable[[], float]:
    """images/s of the model alone on 64 decoded images, `repeats` times per measurement."""
    pixels = np.stack([read_xray(f, predictor.image_size, check=False).pixels for f in files[:64]])

    def measure() -> float:
        torch.set_num_threads(THREADS)
        return repeats * len(pixels) / timed(lambda: [predictor.forward(pixels) for _ in range(repeats)])

    return measure


def int8_predictor(files: list[Path]) -> Predictor:
    """The bundled model's Predictor with ONNX Runtime running an int8 copy of it, calibrated on `files[:256]`."""
    predictor = Predictor()
    pixels = np.stack([read_xray(f, predictor.image_size, check=False).pixels for f in files[:256]])
    calibration = predictor.bundle.inputs(predictor.model_grids(pixels))
    int8 = Path(tempfile.mkdtemp(prefix="batch-bench-")) / "model.int8.onnx"
    quantize(predictor.runtime.path, calibration, int8)
    predictor.runtime.session = session(int8)  # same inputs and outputs as the fp32 export
    return predictor


def model_flops(predictor: Predictor) -> float:
    """FLOPs of one forward pass for one image."""
    from torch.utils.flop_counter import FlopCounterMode

    size = predictor.model.pretrained_cfg["input_size"][-2:]
    x = model_inputs(predictor.model, torch.zeros(1, *size, dtype=torch.uint8))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        predictor.model(x)
    return float(counter.get_total_flops())


def bound_side(flops_per_image: float, n: int = 2048, repeats: int = 10) -> Callable[[], float]:
    """images/s the model would reach at this machine's fp32 matmul FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def measure() -> float:
        torch.set_num_threads(THREADS)
        seconds = timed(lambda: [torch.mm(a, b) for _ in range(repeats)])
        return 2 * n**3 * repeats / seconds / flops_per_image

    return measure


def report(rates: dict[str, list[float]], extra: dict, args: argparse.Namespace) -> tuple[dict, str]:
    naive = {k: v for k, v in rates.items() if k.startswith("naive")}
    best = max(naive, key=lambda k: summary(naive[k])["median"])
    speedup = ratios(rates[FILES_ONNX], naive[best])
    speedup_torch = ratios(rates[FILES_TORCH], naive[best])
    speedup_int8 = ratios(rates[FILES_INT8], naive[best])
    ceiling = ratios(rates[MODEL_ONNX], naive[best])
    lossless = [1 / (1 / d + 1 / m) for d, m in zip(rates[DECODING], rates[MODEL_ONNX])]  # per round
    lossless_ratio = ratios(lossless, naive[best])
    share_of_lossless = ratios(rates[FILES_ONNX], lossless)
    model_share = ratios(rates[MODEL_ONNX], rates["compute bound"])
    torch_share = ratios(rates[MODEL_TORCH], rates["compute bound"])
    files_share = ratios(rates[FILES_ONNX], rates["compute bound"])
    pct = "{:.0%}"
    labels = {best: f"{best} **(baseline: fastest naive)**",
              "compute bound": f"compute bound ({extra['gflops_per_image']:.3f} GFLOPs/image at the fp32 "
                               "matmul rate)"}
    rows = [[labels.get(k, k), fmt_range(v)] for k, v in rates.items()]
    ok_ratio = summary(speedup)["median"] >= TARGET_RATIO
    ok_bound = summary(model_share)["median"] >= TARGET_BOUND
    markdown = "\n".join([
        f"`{command_line()}`: {len(extra['files'])} files spread over the data, bundled model, "
        f"median of {args.rounds} alternating runs (min, max); predict_files classified "
        f"{'-'.join(sorted({str(n) for n in extra['classified']}))} of them (the others were refused).",
        "",
        md_table(["setting", "images/s"], rows),
        "",
        md_table(["", "measured", "target", ""], [
            ["predict_files (ONNX Runtime) / fastest naive", fmt_ratio(speedup), f">= {TARGET_RATIO:g}x",
             met(ok_ratio)],
            ["batched model (ONNX Runtime) / compute bound", fmt_range(model_share, pct), f">= {TARGET_BOUND:.0%}",
             met(ok_bound)],
            ["batched model alone (ONNX Runtime) / fastest naive: predict_files' ceiling", fmt_ratio(ceiling),
             "", ""],
            ["decoding and the model sharing the cores without loss / fastest naive", fmt_ratio(lossless_ratio),
             "", ""],
            ["predict_files (ONNX Runtime) / decoding and the model sharing the cores without loss",
             fmt_range(share_of_lossless, pct), "", ""],
            ["predict_files (ONNX Runtime, int8 copy, not shipped) / fastest naive", fmt_ratio(speedup_int8), "", ""],
            ["predict_files (PyTorch) / fastest naive", fmt_ratio(speedup_torch), "", ""],
            ["batched model (PyTorch) / compute bound", fmt_range(torch_share, pct), "", ""],
            ["predict_files (ONNX Runtime) / compute bound", fmt_range(files_share, pct), "", ""],
        ]),
    ])
    results = {
        **extra, "files": [str(f) for f in extra["files"]], "rounds": args.rounds, "threads": THREADS,
        "images_per_second": {k: summary(v) for k, v in rates.items()}, "naive_baseline": best,
        "ratio_predict_files_vs_naive": summary(speedup), "ratio_predict_files_torch_vs_naive": summary(speedup_torch),
        "ratio_predict_files_int8_vs_naive": summary(speedup_int8), "ratio_batched_model_vs_naive": summary(ceiling),
        "ratio_lossless_sharing_vs_naive": summary(lossless_ratio),
        "predict_files_share_of_lossless_sharing": summary(share_of_lossless),
        "batched_model_share_of_bound": summary(model_share), "batched_torch_share_of_bound": summary(torch_share),
        "predict_files_share_of_bound": summary(files_share),
        "target_ratio": TARGET_RATIO, "target_ratio_met": ok_ratio,
        "target_share_of_bound": TARGET_BOUND, "target_share_of_bound_met": ok_bound,
    }
    return results, markdown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a folder of X-ray image files (walked recursively)")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    torch.set_num_threads(THREADS)
    files = pick_files(args.data, args.images)
    for f in files:
        f.read_bytes()  # into the page cache, for every side alike
    predictor, torch_predictor = Predictor(), Predictor(backend="torch")
    assert predictor.backend == "onnxruntime"
    flops = model_flops(torch_predictor)
    classified: list[int] = []
    sides = {f"naive {how}, {t} torch threads": naive_side(files, how, t) for how, t in NAIVE_SETTINGS}
    sides[FILES_ONNX] = predict_files_side(predictor, files, classified)
    sides[FILES_INT8] = predict_files_side(int8_predictor(files), files, [])
    sides[FILES_TORCH] = predict_files_side(torch_predictor, files, [])
    sides[DECODING] = decoding_side(predictor, files)
    sides[MODEL_ONNX] = batched_model_side(predictor, files)
    sides[MODEL_TORCH] = batched_model_side(torch_predictor, files)
    sides["compute bound"] = bound_side(flops)
    rates = alternate(sides, args.rounds)
    extra = {"files": files, "gflops_per_image": flops / 1e9, "classified": classified}
    results, markdown = report(rates, extra, args)
    write_results(args.out, results, markdown, before)


if __name__ == "__main__":
    main()
