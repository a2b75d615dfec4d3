"""The feature stages the X-ray check reads, taken from a timm model in PyTorch (training, export and the
PyTorch runtime); `xray_check` itself needs only NumPy.

`ServingModel` is a model as it is served: logits, the last feature map (the heatmap's)
and the check's statistics from one forward pass. `export` writes exactly this module to
ONNX, so ONNX Runtime returns the same three outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .xray_check import STAGES


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


@contextlib.contextmanager
def stage_statistics(model: torch.nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Collect the per-channel mean and standard deviation of each feature stage's output (timm's
    `feature_info`) over every forward pass in the block; `concat_stages` joins them.

    Forward hooks on the model's own stages, for passes that are not `ServingModel`'s
    (training's evaluation, Grad-CAM): the statistics come from the pass that gives the logits.
    """
    captured: dict[str, list[torch.Tensor]] = {model.feature_info[k]["module"]: [] for k in STAGES}

    def keep(name):
        def hook(_module, _args, out):
            captured[name].append(channel_statistics(out))
        return hook

    hooks = [model.get_submodule(name).register_forward_hook(keep(name)) for name in captured]
    try:
        yield captured
    finally:
        for hook in hooks:
            hook.remove()


def stage_indices(model: torch.nn.Module) -> list[int]:
    """`STAGES` as the non-negative `feature_info` indices that timm's `forward_intermediates` takes."""
    return [k % len(model.feature_info) for k in STAGES]


def channel_statistics(feature_map: torch.Tensor) -> torch.Tensor:
    """`(N, 2 x channels)`: each channel's mean, then each channel's deviation, of a feature map `(N, C, h, w)`."""
    std, mean = torch.std_mean(feature_map.detach().float(), dim=(2, 3))
    return torch.cat([mean, std.nan_to_num(0.0)], 1)  # a 1 x 1 map (a tiny input) has no spread


def stage_rows(stages: list[torch.Tensor]) -> torch.Tensor:
    """`(N, sum of 2 x channels)` from the feature maps of the `STAGES` (`forward_intermediates`), stages side
    by side: the same rows as `stage_statistics` collects."""
    return torch.cat([channel_statistics(out) for out in stages], 1)


def stage_widths(model: torch.nn.Module) -> list[int]:
    """Widths of the rows `stage_statistics` collects, per stage (a mean and a deviation per channel)."""
    return [2 * model.feature_info[k]["num_chs"] for k in STAGES]


def concat_stages(captured: dict[str, list[torch.Tensor]]) -> torch.Tensor:
    """`(N, sum of 2 x channels)`: the statistics of `stage_statistics`, one row per image, stages side by side."""
    return torch.cat([torch.cat(parts) for parts in captured.values()], 1)
