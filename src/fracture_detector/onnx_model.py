"""The model exported to ONNX, and the ONNX Runtime session that the CLI and the app run it with.

`model.onnx` (written by `export`, `fracture-detector export` and `train.py`) takes the
normalised input `(N, 1, S, S)` that timm's transform gives (float32, any batch size) and
returns, from one forward pass:

- `logits` `(N, classes)`: divide by `config.json`'s `temperature`, softmax, compare the
  positive class with its `threshold`;
- `features` `(N, K, h, w)`: the last feature map, before global average pooling. With a
  head that is average pooling + linear, the classifier's weights turn it into the class
  activation map (`heatmap.class_activation_map`), a heatmap without a backward pass;
- `xray_stats` `(N, D)`: the per-channel mean and deviation of the feature stages the
  learned X-ray check reads (`xray_check.stage_statistics`), so the check runs too.

The bundled model's folder has no room for `model.onnx` (the package keeps it under 10 MB),
so `cached_export` builds it on first use into a cache folder, keyed by the weights' hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .errors import ModelError
from .model import check_model_folder, load_model, model_inputs
from .xray_check import stage_indices, stage_rows

ONNX_FILE = "model.onnx"
OUTPUTS = ("logits", "features", "xray_stats")
OPSET = 18
# Where exports of folders that hold no model.onnx (the bundled model) are kept: one sub-folder per weights hash.
CACHE = Path(os.environ.get("FRACTURE_DETECTOR_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fracture-detector")
CACHE_ENTRY = re.compile(r"[0-9a-f]{16}")  # a cache sub-folder's name: the first 16 hex digits of the weights hash
CACHE_MAX_AGE_DAYS = 30  # exports unused this long are deleted when a new one is built


class ServingModel(torch.nn.Module):
    """A timm classifier as it is served: logits, last feature map and the X-ray check's statistics, in one pass.

    The stages come from timm's `forward_intermediates`, not from hooks: nothing is added to
    the shared model per call, so threads can run one `ServingModel` at once.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.stages = stage_indices(model)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features, stages = self.model.forward_intermediates(x, indices=self.stages)
        logits = self.model.forward_head(features)
        return logits, features, stage_rows(stages)


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of the folder's `model.safetensors`: an export records it, so a stale `model.onnx` is caught."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export(model_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write `model_dir`'s model as ONNX (default: `model_dir/model.onnx`); returns the file's path.

    Uses PyTorch's `torch.export`-based exporter, batch size dynamic. The file records the
    hash of the weights it came from. Raises `ModelError` if `model_dir` is not a saved model.
    """
    import onnx  # imported here, as in recorded_digest: importing this module stays cheap

    check_model_folder(model_dir)
    out = Path(out or Path(model_dir) / ONNX_FILE)
    model, config = load_model(model_dir)
    size = int(config["pretrained_cfg"]["input_size"][-1])
    example = model_inputs(model, np.zeros((2, size, size), np.uint8)).contiguous()
    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress; stdout is the caller's
        program = torch.onnx.export(ServingModel(model).eval(), (example,), input_names=["pixels"],
                                    output_names=list(OUTPUTS), dynamic_shapes=({0: batch},),
                                    opset_version=OPSET, dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {"weights_sha256": weights_digest(model_dir),
                                        "label_names": ",".join(config["label_names"])})
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside its destination and renamed: a reader (another process building the same cache) never
    # sees half a file.
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".onnx.tmp", delete=False) as tmp:
        tmp.write(proto.SerializeToString())
    os.replace(tmp.name, out)
    return out


def check_export(recorded: str | None, path: str | Path, model_dir: str | Path, digest: str | None = None) -> None:
    """Raise `ModelError` unless `recorded` (the `weights_sha256` an ONNX file at `path` carries) is the hash of
    `model_dir`'s weights (`digest`, when the caller has it already)."""
    if recorded != (digest or weights_digest(model_dir)):
        raise ModelError(f"{path} was exported from other weights than {model_dir}/model.safetensors: "
                         f"run `fracture-detector export {model_dir}` again")


def recorded_digest(path: str | Path) -> str | None:
    """The weights hash an ONNX file records, read with `onnx` (for callers without a session)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}.get("weights_sha256")


def cached_export_path(digest: str) -> Path:
    """Where `cached_export` keeps the export of the weights whose hash is `digest`."""
    return CACHE / digest[:16] / ONNX_FILE


def cached_export(model_dir: str | Path, digest: str, log=None, in_subprocess: bool = False) -> Path:
    """The `model.onnx` of a folder that has none, built on first use into `CACHE` under its weights' hash
    `digest` (`log`, default stderr, says so). Building one prunes exports unused for `CACHE_MAX_AGE_DAYS`.

    With `in_subprocess`, another Python process exports (`fracture-detector export`): PyTorch's
    exporter patches module calls process-wide while it traces, so an export beside threads that
    run the model would break both. A failed export raises `OSError`.
    """
    out = cached_export_path(digest)
    if out.is_file():
        with contextlib.suppress(OSError):  # a read-only cache still serves; its entries just age
            os.utime(out)  # the file's time is when it was last used: what prune_cache reads
        return out
    (log or _to_stderr)(f"Exporting the model to ONNX for ONNX Runtime (once; kept in {out.parent})...")
    if in_subprocess:
        package_parent = str(Path(__file__).resolve().parents[1])  # importable also from a plain checkout
        path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
        done = subprocess.run([sys.executable, "-m", "fracture_detector", "export", str(model_dir), "--output",
                               str(out)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1][:200]
            raise OSError(f"the export process failed: {last}")
    else:
        export(model_dir, out)
    prune_cache(keep=out.parent)
    return out


def prune_cache(keep: Path, max_age_days: float = CACHE_MAX_AGE_DAYS) -> list[Path]:
    """Delete the exports in `CACHE` other than `keep` that have not been used for `max_age_days`; returns
    their folders. Only folders named like a weights hash that hold a `model.onnx` are touched: a folder
    whose export is still being written, or anything else in the cache folder, stays."""
    cutoff = time.time() - max_age_days * 86400
    removed = []
    for folder in CACHE.iterdir() if CACHE.is_dir() else ():
        onnx_file = folder / ONNX_FILE
        if folder != keep and CACHE_ENTRY.fullmatch(folder.name) and onnx_file.is_file() \
                and onnx_file.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class OnnxSession:
    """`model.onnx` in an ONNX Runtime CPU session; `run` gives what `ServingModel` gives, as tensors."""

    def __init__(self, path: str | Path, model_dir: str | Path, digest: str | None = None):
        """Raises `ModelError` when the file was exported from other weights than `model_dir`'s (whose hash is
        `digest`, when the caller has it already).

        Settings measured on 2 cores by bench/onnx_runtime.py: one thread per core and every
        graph optimisation (README, "What helps ONNX Runtime on 2 cores").
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 0  # 0: one per physical core
        options.inter_op_num_threads = 1  # the graph is a chain: no use for parallel branches
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        recorded = self.session.get_modelmeta().custom_metadata_map.get("weights_sha256")
        check_export(recorded, path, model_dir, digest)
        self.path = Path(path)

    def run(self, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`(logits, features, xray_stats)` for normalised inputs `(N, 1, S, S)`."""
        arrays = self.session.run(list(OUTPUTS), {"pixels": inputs.contiguous().numpy()})
        return tuple(torch.from_numpy(a) for a in arrays)
