"""Is this upload an X-ray, and one like those the model was trained on?

Two stages, measured by `bench/xray_check.py` (README, "Not an X-ray"):

1. Cheap image statistics, before the model, only where they are unambiguous: a colour
   image or a blank one is not a radiograph. A mostly white image is not turned away: it
   may be a radiograph shown inverted, which `preprocess.upright` turns back.
2. `FeatureCheck`, learned at training time: Mahalanobis distances of the statistics of
   three of the model's feature stages (captured from the same forward pass as the logits)
   from those of its training X-rays. Two thresholds, set by each source's validation
   X-rays, split inputs into X-rays like the training data, X-rays unlike it (the
   probability is less reliable) and images that are not X-rays at all (no probability).
   It is saved beside the weights as `xray_check.safetensors`; a model folder without it
   works with the cheap statistics only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

# Measured on a 128-pixel thumbnail (bench/xray_check.py prints the distributions).
MAX_COLOURFULNESS = 24.0  # Hasler & Suesstrunk colourfulness; X-rays: 99.5% <= 11, photos >= 25
MIN_CONTRAST = 2.0  # std of gray levels; the darkest, flattest real films of both sources are >= 4.3

STATS_FILE = "xray_check.safetensors"
# Which of timm's feature stages (`feature_info`) the check reads: the first (grain, contrast) and the last
# two (content). Chosen on the tuning images and the validation X-rays (bench/xray_check.py): the middle
# stages set the second source's validation films apart from the first's as much as from other images.
STAGES = (0, -2, -1)
RANK = 128  # leading covariance directions kept per stage; the rest share one variance (keeps the file small)
SCALE_QUANTILE = 0.99  # a stage's distances are divided by the largest per-source quantile on validation
UNFAMILIAR_QUANTILE = 0.95  # X-rays beyond the largest per-source quantile of validation scores get a warning
# Relative margin on both thresholds. The validation X-ray that sets a threshold scores exactly on it, and
# the same image's score from ONNX Runtime differs from PyTorch's by about 1e-6: it must stay on its side.
THRESHOLD_TOLERANCE = 1e-4

FAMILIAR = "X-ray"
UNFAMILIAR = "X-ray unlike the training data"
NOT_AN_XRAY = "not an X-ray"
UNCHECKED = "not checked"


def image_statistics(image: Image.Image) -> dict[str, float]:
    """The statistics the rules read, from an "L" or "RGB" image."""
    small = image.copy()
    small.thumbnail((128, 128))
    rgb = np.asarray(small.convert("RGB"), dtype=np.float32)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    gray = np.asarray(small.convert("L"), dtype=np.float32)
    return {
        "colourfulness": float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())),
        "contrast": float(gray.std()),
    }


def not_an_xray_reason(image: Image.Image) -> str | None:
    """None if `image` may be an X-ray, else a short reason why it is plainly not one."""
    stats = image_statistics(image)
    if stats["colourfulness"] > MAX_COLOURFULNESS:
        return "it is a colour image"
    if stats["contrast"] < MIN_CONTRAST:
        return "it is blank or almost uniform"
    return None


@contextlib.contextmanager
def stage_statistics(model: torch.nn.Module) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Collect the per-channel mean and standard deviation of each feature stage's output (timm's
    `feature_info`) over every forward pass in the block; `concat_stages` joins them.

    Forward hooks on the model's own stages: the statistics come from the pass that gives
    the logits (or Grad-CAM), with no second network and no second pass.
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


@dataclass
class Gaussian:
    """A Ledoit-Wolf Gaussian of one stage's statistics, kept to its `RANK` leading directions plus one shared
    variance for the others (probabilistic PCA); `scale` makes its distances comparable across stages."""

    mean: torch.Tensor  # (D,)
    components: torch.Tensor  # (K, D), orthonormal rows
    variances: torch.Tensor  # (K,)
    residual_variance: float
    scale: float = 1.0

    @classmethod
    def fit(cls, x: torch.Tensor, rank: int = RANK) -> Gaussian:
        """Fit on rows `(N, D)`: Ledoit-Wolf shrinkage keeps the covariance usable with few rows per dimension."""
        from sklearn.covariance import LedoitWolf

        covariance = torch.from_numpy(LedoitWolf().fit(x.double().numpy()).covariance_)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        rank = min(rank, len(eigenvalues) - 1)
        return cls(mean=x.double().mean(0).float(), components=eigenvectors[:, -rank:].T.float().contiguous(),
                   variances=eigenvalues[-rank:].float(),
                   residual_variance=float(eigenvalues[:-rank].clamp_min(1e-12).mean()))

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distances `(N,)` of rows `(N, D)`, over sqrt(D) and over `scale`."""
        centred = x.float() - self.mean
        along = centred @ self.components.T
        rest = (centred.square().sum(1) - along.square().sum(1)).clamp_min(0)
        squared = (along.square() / self.variances).sum(1) + rest / self.residual_variance
        return (squared / centred.shape[1]).sqrt() / self.scale


@dataclass
class FeatureCheck:
    """How far an image's stage statistics lie from the training X-rays', and the two thresholds.

    One `Gaussian` per feature stage, fitted on the training X-rays; each stage's distance
    is scaled so that 99% of every source's validation X-rays lie within 1, and the score
    is the largest over the stages (an image far from X-rays in any of them is suspect).
    Above `refuse_above`, the highest score of any validation X-ray, an image is not taken
    for an X-ray: a new X-ray like a source's validation ones lies beyond it with
    probability about 1 / (its validation X-rays + 1).
    """

    stages: list[Gaussian]
    unfamiliar_above: float
    refuse_above: float

    @classmethod
    def fit(cls, train: torch.Tensor, validation: dict[str, torch.Tensor], sizes: list[int]) -> FeatureCheck:
        """Fit on the training X-rays' `concat_stages` rows; scales and thresholds from each source's validation rows.

        `sizes` are the stages' widths (2 x channels). Without validation rows the scales
        stay 1 and nothing is refused or called unfamiliar.
        """
        stages = [Gaussian.fit(part) for part in train.split(sizes, 1)]
        check = cls(stages, unfamiliar_above=float("inf"), refuse_above=float("inf"))
        validation = {name: rows for name, rows in validation.items() if len(rows)}
        if not validation:
            return check
        for k, stage in enumerate(stages):
            stage.scale = max(float(torch.quantile(stage.distance(rows.split(sizes, 1)[k]), SCALE_QUANTILE))
                              for rows in validation.values())
        scores = [check.distance(rows) for rows in validation.values()]
        check.unfamiliar_above = max(float(torch.quantile(d, UNFAMILIAR_QUANTILE)) for d in scores)
        check.refuse_above = max(float(d.max()) for d in scores)
        return check

    @property
    def sizes(self) -> list[int]:
        """Each stage's width (2 x its channels), as `stage_widths` gives them for the model."""
        return [len(stage.mean) for stage in self.stages]

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """`(N,)` scores of `concat_stages` rows `(N, D)`: the largest of the stages' scaled distances."""
        parts = features.split(self.sizes, 1)
        return torch.stack([stage.distance(part) for stage, part in zip(self.stages, parts)]).amax(0)

    def verdict(self, distance: float) -> str:
        """`FAMILIAR`, `UNFAMILIAR` or `NOT_AN_XRAY` for one score."""
        if distance > self.refuse_above * (1 + THRESHOLD_TOLERANCE):
            return NOT_AN_XRAY
        return UNFAMILIAR if distance > self.unfamiliar_above * (1 + THRESHOLD_TOLERANCE) else FAMILIAR

    def verdicts(self, features: torch.Tensor) -> np.ndarray:
        """`verdict` of each row of `concat_stages` features, as an array of strings."""
        return np.array([self.verdict(d) for d in self.distance(features).tolist()], dtype=object)

    def save(self, path: str | Path) -> None:
        """Write the statistics and thresholds as safetensors (no pickles)."""
        tensors = {"thresholds": torch.tensor([self.unfamiliar_above, self.refuse_above], dtype=torch.float64)}
        for k, stage in enumerate(self.stages):
            tensors |= {f"stage{k}.mean": stage.mean, f"stage{k}.components": stage.components,
                        f"stage{k}.variances": stage.variances,
                        f"stage{k}.scalars": torch.tensor([stage.residual_variance, stage.scale], dtype=torch.float64)}
        save_file(tensors, str(path), metadata={"thresholds": "unfamiliar_above,refuse_above",
                                                "stageK.scalars": "residual_variance,scale"})

    @classmethod
    def load(cls, path: str | Path) -> FeatureCheck:
        """Read what `save` wrote."""
        t = load_file(str(path))
        stages = []
        while f"stage{len(stages)}.mean" in t:
            k = len(stages)
            residual, scale = t[f"stage{k}.scalars"].tolist()
            stages.append(Gaussian(t[f"stage{k}.mean"], t[f"stage{k}.components"], t[f"stage{k}.variances"],
                                   residual, scale))
        unfamiliar, refuse = t["thresholds"].tolist()
        return cls(stages, unfamiliar, refuse)


def load_feature_check(model_dir: str | Path) -> FeatureCheck | None:
    """The model folder's `FeatureCheck`, or None if it has none (an older or a foreign model)."""
    path = Path(model_dir) / STATS_FILE
    return FeatureCheck.load(path) if path.is_file() else None
