"""What helps ONNX Runtime on 2 cores: threads, graph optimisation, int8, OpenVINO's execution provider.

On the bundled model's `model.onnx` (built into the cache as the app and the CLI build it),
each setting is measured at batch 1 (ms per image, median of `--calls` calls) and at batch 64
(images/s), warmed up, in alternating order for `--rounds` rounds:

- fp32, 2 threads, every graph optimisation: what `onnx_model.OnnxSession` runs;
- fp32 with 1 thread; fp32 with basic graph optimisations only;
- int8: static quantisation (`onnxruntime.quantization`, QDQ, per-channel weights), calibrated
  on 256 X-rays of the bundled model's training split, in four variants: min/max ranges from
  files spread over the split (mostly the first source, as it is), from 128 files of each
  source, the same with percentile ranges, and the same with the first and last convolutions
  left in fp32; quality: ROC-AUC on each source's clean test split (each distinct image once,
  as in metrics.json), fp32 against each int8 variant (the project quantises only if it moves
  by at most 0.005);
- with `--openvino-python PATH` (a Python whose environment has `onnxruntime-openvino`, which
  cannot share one with `onnxruntime`): the OpenVINO execution provider, fp32, each
  measurement in that Python (model load and warm-up not counted).

    python bench/onnx_runtime.py --data fracture-multi-region=/tmp/fmr roboflow-bone-fracture=/tmp/rbf \\
        [--openvino-python /tmp/ov/bin/python]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from common import add_out_argument, alternate, command_line, fmt_range, loadavg, md_table, summary, write_results
from sklearn.metrics import roc_auc_score

from fracture_detector.data import MANIFEST_NAME, parse_source
from fracture_detector.predict import Predictor, read_xray
from fracture_detector.resources import BUNDLED_MODEL

THREADS = 2
MAX_AUC_CHANGE = 0.005
SHIPPED = "fp32, 2 threads, all graph optimisations (shipped)"
# int8 variants: name -> (calibration files, how activation ranges are set, first and last convolutions in fp32)
INT8 = {
    "int8, min/max ranges, files spread over the split": ("spread", "MinMax", False),
    "int8, min/max ranges, 128 files of each source": ("balanced", "MinMax", False),
    "int8, percentile ranges, 128 files of each source": ("balanced", "Percentile", False),
    "int8, min/max ranges, 128 files of each source, first and last convolutions fp32": ("balanced", "MinMax", True),
}
OPENVINO = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
model, batch_file, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
session = ort.InferenceSession(model, providers=["OpenVINOExecutionProvider"])
assert session.get_providers()[0] == "OpenVINOExecutionProvider", session.get_providers()
batch = np.load(batch_file)
one = batch[:1]
for x in (one, batch):
    session.run(None, {"pixels": x})
ms = []
for _ in range(calls):
    t = time.perf_counter(); session.run(None, {"pixels": one}); ms.append((time.perf_counter() - t) * 1000)
t = time.perf_counter()
for _ in range(4):
    session.run(None, {"pixels": batch})
rate = 4 * len(batch) / (time.perf_counter() - t)
print(json.dumps({"batch1_ms": sorted(ms)[len(ms) // 2], "batch64_images_s": rate}))
"""


def manifest_files(roots: dict[str, str], split: str) -> list[tuple[str, Path, str]]:
    """(source, file, label) of each distinct content (the first file by path) of one clean split of the bundled
    model's manifest: the images its metrics.json counts."""
    with gzip.open(BUNDLED_MODEL / MANIFEST_NAME, "rt", newline="") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == split), key=lambda r: r["path"])
    distinct = {}
    for r in rows:
        distinct.setdefault(r["sha256"], (r["source"], Path(roots[r["source"]]) / r["path"], r["label"]))
    return list(distinct.values())


ALL, BASIC = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def session(path: Path, threads: int = THREADS, level=ALL) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = level
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize(model: Path, calibration: np.ndarray, out: Path, method: str = "MinMax",
             fp32_ends: bool = False) -> float:
    """Static int8 quantisation of `model` calibrated on normalised inputs; returns the seconds it took.

    `method`: how activation ranges are set (onnxruntime's `CalibrationMethod`: "MinMax",
    "Percentile", "Entropy"); `fp32_ends` leaves the first and last convolutions unquantised.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"pixels": calibration[i : i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.batches, None)

    t = time.perf_counter()
    prepared = out.with_suffix(".pre.onnx")
    # ORT's symbolic shape inference cannot read `Constant` nodes with `value_ints` (PyTorch's exporter writes
    # them); onnx's own shape inference, which quant_pre_process runs as well, covers this fixed-shape CNN.
    quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod[method],
                    nodes_to_exclude=[convs[0], convs[-1]] if fp32_ends else [])
    return time.perf_counter() - t


def side(run: Callable[[np.ndarray], object], one: np.ndarray, batch: np.ndarray, calls: int,
         batch64: list[float]) -> Callable[[], float]:
    """ms per image at batch 1 (median of `calls`); appends the images/s at batch 64 to `batch64`."""

    def measure() -> float:
        ms = []
        for _ in range(calls):
            t = time.perf_counter()
            run(one)
            ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        for _ in range(4):
            run(batch)
        batch64.append(4 * len(batch) / (time.perf_counter() - t))
        return float(np.median(ms))

    return measure


def openvino_side(python: str, model: Path, batch: np.ndarray, calls: int, batch64: list[float],
                  tmp: Path) -> Callable[[], float]:
    np.save(tmp / "batch.npy", batch)

    def measure() -> float:
        proc = subprocess.run([python, "-c", OPENVINO, str(model), str(tmp / "batch.npy"), str(calls)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(proc.stderr[-2000:])
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        batch64.append(result["batch64_images_s"])
        return result["batch1_ms"]

    return measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="NAME=FOLDER for each source of the bundled model")
    p.add_argument("--openvino-python", help="a Python with onnxruntime-openvino installed")
    p.add_argument("--calls", type=int, default=200, help="batch-1 calls per measurement")
    p.add_argument("--rounds", type=int, default=3)
    add_out_argument(p, __file__)
    args = p.parse_args()
    before = loadavg()
    roots = dict(parse_source(spec) for spec in args.data)
    predictor = Predictor(BUNDLED_MODEL, backend="onnx")
    model = predictor.runtime.path

    def inputs(files: list[Path]) -> np.ndarray:
        grids = np.stack([read_xray(f, predictor.image_size, check=False).pixels for f in files])
        return predictor.bundle.inputs(predictor.model_grids(grids))

    train = manifest_files(roots, "train")
    by_source = [[f for s, f, _ in train if s == source] for source in roots]
    calibration = {
        "spread": inputs([f for _, f, _ in train[:: max(1, len(train) // 256)][:256]]),
        "balanced": inputs([f for files in by_source for f in files[:: max(1, len(files) // 128)][:128]]),
    }
    test = manifest_files(roots, "test")
    test_x = inputs([f for _, f, _ in test])
    tmp = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    sessions = {SHIPPED: session(model), "fp32, 1 thread": session(model, threads=1),
                "fp32, basic graph optimisations only": session(model, level=BASIC)}
    quantize_seconds = {}
    for k, (name, (data, method, fp32_ends)) in enumerate(INT8.items()):
        out = tmp / f"model.int8-{k}.onnx"
        quantize_seconds[name] = quantize(model, calibration[data], out, method, fp32_ends)
        sessions[name] = session(out)

    positive = np.array([label == predictor.calibration.positive_label for _, _, label in test])
    sources = np.array([s for s, _, _ in test])
    auc = {}
    for name in (SHIPPED, *INT8):
        logits = np.concatenate([sessions[name].run(["logits"], {"pixels": test_x[i : i + 64]})[0]
                                 for i in range(0, len(test_x), 64)])
        probs = predictor.calibration.probabilities(logits)[:, predictor.positive]
        auc[name] = {s: float(roc_auc_score(positive[sources == s], probs[sources == s])) for s in roots}
    batch = test_x[:64]
    batch64: dict[str, list[float]] = {name: [] for name in sessions}
    sides = {name: side(lambda x, s=s: s.run(None, {"pixels": x}), batch[:1], batch, args.calls, batch64[name])
             for name, s in sessions.items()}
    if args.openvino_python:
        name = "OpenVINO execution provider, fp32"
        batch64[name] = []
        sides[name] = openvino_side(args.openvino_python, model, batch, args.calls, batch64[name], tmp)
    ms = alternate(sides, args.rounds)
    batch64 = {k: v[1:] for k, v in batch64.items()}  # the first is the warm-up

    change = {name: max(abs(auc[name][s] - auc[SHIPPED][s]) for s in roots) for name in INT8}
    closest = min(change, key=change.get)
    rows = [[k, fmt_range(v, "{:.2f}"), fmt_range(batch64[k], "{:.0f}")] for k, v in ms.items()]
    auc_rows = [[SHIPPED.split(",")[0], *(f"{auc[SHIPPED][s]:.4f}" for s in roots), ""]]
    auc_rows += [[name, *(f"{auc[name][s]:.4f} ({auc[name][s] - auc[SHIPPED][s]:+.4f})" for s in roots),
                  f"{change[name]:.4f}"] for name in INT8]
    markdown = "\n".join([
        f"`{command_line()}`: bundled model's model.onnx; median of {args.rounds} alternating runs (min, max).",
        "",
        md_table(["setting", "batch 1, ms per image", "batch 64, images/s"], rows),
        "",
        md_table(["ROC-AUC on the clean test split (change)", *roots, "largest change"], auc_rows),
        "",
        f"The closest int8 variant ({closest}) moves ROC-AUC by up to {change[closest]:.4f} (the limit for "
        f"shipping int8 is {MAX_AUC_CHANGE}): "
        + ("within it." if change[closest] <= MAX_AUC_CHANGE else "over it, so the shipped model stays fp32.")
        + f" Quantising took {min(quantize_seconds.values()):.0f}-{max(quantize_seconds.values()):.0f} s.",
    ])
    results = {"ms_per_image_batch1": {k: summary(v) for k, v in ms.items()},
               "images_per_second_batch64": {k: summary(v) for k, v in batch64.items()},
               "roc_auc_clean_test": auc, "int8_max_auc_change": change, "closest_int8": closest,
               "max_auc_change": MAX_AUC_CHANGE, "test_images": len(test),
               "calibration_images": {k: len(v) for k, v in calibration.items()}, "quantize_seconds": quantize_seconds}
    write_results(args.out, results, markdown, before)


if __name__ == "__main__":
    main()
