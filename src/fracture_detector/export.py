"""Export a saved model to ONNX (`model.onnx`, see `onnx_model`): PyTorch's exporter, so the full install.

Beside the weights, the file holds only the graph and points at `model.safetensors` for the
weights. For that the exported graph keeps PyTorch's own tensors: constants are folded, but
batch norms are not fused into the convolutions (ONNX Runtime fuses them when it loads the
file, so it runs as fast as a fused export: bench/onnx_runtime.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .bundle import WEIGHTS_FILE, check_model_folder
from .gradcam import cam_weights
from .model import load_model, model_inputs
from .onnx_model import EXPORT_FORMAT, ONNX_FILE, OUTPUTS, weights_digest
from .stages import ServingModel

OPSET = 18


def export(model_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write `model_dir`'s model as ONNX (default: `model_dir/model.onnx`); returns the file's path.

    PyTorch's `torch.export`-based exporter, batch size dynamic. Written into the model's own
    folder, the file reads its weights from `model.safetensors`; written anywhere else (the
    export cache), it holds them. It records the hash of the weights it came from, the
    labels and the classifier weight that makes heatmaps (`cam_classifier`, "" for heads
    without a class activation map). Raises `ModelError` if `model_dir` is not a saved model.
    """
    import onnx  # the exporter's own dependencies: imported here, where they are used
    from onnxscript.optimizer import fold_constants, remove_unused_nodes

    check_model_folder(model_dir)
    out = Path(out or Path(model_dir) / ONNX_FILE)
    model, config = load_model(model_dir)
    size = int(config["pretrained_cfg"]["input_size"][-1])
    example = model_inputs(model, np.zeros((2, size, size), np.uint8)).contiguous()
    batch = torch.export.Dim("batch", min=1)
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress; stdout is the caller's
        program = torch.onnx.export(ServingModel(model).eval(), (example,), input_names=["pixels"],
                                    output_names=list(OUTPUTS), dynamic_shapes=({0: batch},),
                                    opset_version=OPSET, dynamo=True, verbose=False, optimize=False)
    proto = program.model_proto
    fold_constants(proto)  # not the exporter's full optimiser: it would fuse batch norms, changing the weights
    remove_unused_nodes(proto)
    for node in proto.graph.node:
        del node.metadata_props[:]  # each node's Python stack trace: most of the graph's size
    if out.parent.resolve() == Path(model_dir).resolve():
        share_weights(proto, Path(model_dir) / WEIGHTS_FILE)
    positive = config["label_names"].index(config["positive_label"])
    classifier = model.get_classifier()
    cam_classifier = "" if cam_weights(model, positive) is None else next(
        name for name, p in model.named_parameters() if p is classifier.weight)
    onnx.helper.set_model_props(proto, {"weights_sha256": weights_digest(model_dir), "export_format": EXPORT_FORMAT,
                                        "label_names": ",".join(config["label_names"]),
                                        "cam_classifier": cam_classifier})
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside its destination and renamed: a reader (another process building the same cache) never
    # sees half a file.
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".onnx.tmp", delete=False) as tmp:
        tmp.write(proto.SerializeToString())
    os.chmod(tmp.name, 0o644)  # a temporary file is private; the export is read by whoever serves the model
    os.replace(tmp.name, out)
    return out


def share_weights(proto, weights_file: Path) -> int:
    """Point every initializer of `proto` that is a tensor of `weights_file` (same name under the exporter's
    `model.` prefix, same values) at that tensor's bytes in the file (ONNX external data), through a
    `Cast` where the file stores it in another type (fp16 weights). Returns how many were shared; the rest
    (folded constants) stay in the graph.
    """
    import onnx
    from onnx import TensorProto, numpy_helper
    from safetensors.numpy import load_file

    with open(weights_file, "rb") as f:  # the header only: the offsets of the tensors' bytes
        header_size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_size))
    stored = load_file(str(weights_file))
    types = {"F16": TensorProto.FLOAT16, "F32": TensorProto.FLOAT, "BF16": TensorProto.BFLOAT16}
    kept, casts, shared = [], [], 0
    for init in proto.graph.initializer:
        name = init.name.removeprefix("model.")
        entry = header.get(name)
        value = numpy_helper.to_array(init)
        if entry is None or entry["dtype"] not in types or tuple(entry["shape"]) != value.shape \
                or not np.array_equal(stored[name].astype(value.dtype), value):
            kept.append(init)
            continue
        tensor = TensorProto(name=init.name, data_type=types[entry["dtype"]], dims=entry["shape"],
                             data_location=TensorProto.EXTERNAL)
        start, end = entry["data_offsets"]
        for key, text in (("location", weights_file.name), ("offset", str(8 + header_size + start)),
                          ("length", str(end - start))):
            tensor.external_data.add(key=key, value=text)
        if tensor.data_type != init.data_type:  # read as stored, cast once: ONNX Runtime folds it at load
            tensor.name = f"{init.name}.stored"
            casts.append(onnx.helper.make_node("Cast", [tensor.name], [init.name], to=init.data_type))
        kept.append(tensor)
        shared += 1
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)
    return shared
