"""The model's ONNX file: what it holds, whether it matches the weights, and the cache of exports; NumPy and
ONNX Runtime only (the export itself, which needs PyTorch, is `export`).

`model.onnx` takes the normalised input `(N, 1, S, S)` that timm's transform gives
(float32, any batch size) and returns, from one forward pass:

- `logits` `(N, classes)`: divide by `config.json`'s `temperature`, softmax, compare the
  positive class with its `threshold`;
- `features` `(N, K, h, w)`: the last feature map, before global average pooling. With a
  head that is average pooling + linear (the file's `cam_classifier` names its weight), the
  classifier's weights turn it into the class activation map (`heatmap.class_activation_map`);
- `xray_stats` `(N, D)`: the per-channel mean and deviation of the feature stages the
  learned X-ray check reads, so the check runs too.

Beside a model's weights, `model.onnx` holds only the graph: its weights are read from
`model.safetensors` itself (ONNX external data at the tensors' offsets in that file), so a
folder carries one copy of them. An export for a folder that has none (`--backend onnx`)
is kept self-contained in a cache folder, keyed by the weights' hash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

from .bundle import WEIGHTS_FILE
from .errors import ModelError

ONNX_FILE = "model.onnx"
OUTPUTS = ("logits", "features", "xray_stats")
# Bumped when what an export holds changes: a cached export of another format is not used.
EXPORT_FORMAT = "2"  # 2: weights shared with model.safetensors, `cam_classifier` recorded
# Where exports of folders that hold no model.onnx are kept: one sub-folder per weights hash and format.
CACHE = Path(os.environ.get("FRACTURE_DETECTOR_CACHE")
             or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fracture-detector")
CACHE_ENTRY = re.compile(r"[0-9a-f]{16}")  # a cache sub-folder's name: 16 hex digits of the key
CACHE_MAX_AGE_DAYS = 30  # exports unused this long are deleted when a new one is built


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of the folder's `model.safetensors`: an export records it, so a stale `model.onnx` is caught."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_export(metadata: dict[str, str], path: str | Path, model_dir: str | Path, digest: str | None = None) -> None:
    """Raise `ModelError` unless `metadata` (what the ONNX file at `path` records) is of this export format and
    of `model_dir`'s weights (whose hash is `digest`, when the caller has it already)."""
    again = f"run `fracture-detector export {model_dir}` again"
    if metadata.get("export_format") != EXPORT_FORMAT:
        raise ModelError(f"{path} was written by an older fracture-detector: {again}")
    if metadata.get("weights_sha256") != (digest or weights_digest(model_dir)):
        raise ModelError(f"{path} was exported from other weights than {model_dir}/{WEIGHTS_FILE}: {again}")


def open_session(path: str | Path, model_dir: str | Path):
    """An ONNX Runtime CPU session of `path`; `ModelError` if ONNX Runtime cannot load it (e.g. its weights
    file has changed under it).

    Settings measured on 2 cores by bench/onnx_runtime.py: one thread per core and every
    graph optimisation (docs/serving.md, "What helps ONNX Runtime on 2 cores").
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 0  # 0: one per physical core
    options.inter_op_num_threads = 1  # the graph is a chain: no use for parallel branches
    options.log_severity_level = 3  # errors only: a failure is raised below, in one sentence
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ONNX Runtime raises its own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ModelError(f"ONNX Runtime cannot load {path} ({first}); if {model_dir}/{WEIGHTS_FILE} has changed, "
                         f"run `fracture-detector export {model_dir}` again") from None


def recorded_metadata(path: str | Path, model_dir: str | Path) -> dict[str, str]:
    """What an ONNX file records (weights hash, export format, labels, CAM classifier), read by ONNX Runtime."""
    return open_session(path, model_dir).get_modelmeta().custom_metadata_map


def cached_export_path(digest: str) -> Path:
    """Where `cached_export` keeps the export of the weights whose hash is `digest`."""
    key = hashlib.sha256(f"{digest}:{EXPORT_FORMAT}".encode()).hexdigest()[:16]
    return CACHE / key / ONNX_FILE


def cached_export(model_dir: str | Path, digest: str, log=None) -> Path:
    """The `model.onnx` of a folder that has none, built on first use into `CACHE` under its weights' hash
    `digest` (`log`, default stderr, says so). Building one prunes exports unused for `CACHE_MAX_AGE_DAYS`.

    Building needs PyTorch (the full install); a cache that cannot be written raises `OSError`.
    """
    out = cached_export_path(digest)
    if out.is_file():
        with contextlib.suppress(OSError):  # a read-only cache still serves; its entries just age
            os.utime(out)  # the file's time is when it was last used: what prune_cache reads
        return out
    (log or _to_stderr)(f"Exporting the model to ONNX for ONNX Runtime (once; kept in {out.parent})...")
    from .export import export  # PyTorch: only a first export needs it

    export(model_dir, out)
    prune_cache(keep=out.parent)
    return out


def prune_cache(keep: Path, max_age_days: float = CACHE_MAX_AGE_DAYS) -> list[Path]:
    """Delete the exports in `CACHE` other than `keep` that have not been used for `max_age_days`; returns
    their folders. Only folders named like a cache key that hold a `model.onnx` are touched: a folder
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
