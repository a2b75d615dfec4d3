"""Is this upload an X-ray, and one like those the model was trained on?

Two stages, measured by `bench/xray_check.py` (docs/xray-check.md):

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

This module runs on NumPy alone (a serving install has no PyTorch); the statistics come
from the model's runtime (`stages` for PyTorch, the export's `xray_stats` for ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import load_file, save_file

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


@dataclass
class Gaussian:
    """A Ledoit-Wolf Gaussian of one stage's statistics, kept to its `RANK` leading directions plus one shared
    variance for the others (probabilistic PCA); `scale` makes its distances comparable across stages."""

    mean: np.ndarray  # (D,) float32
    components: np.ndarray  # (K, D) float32, orthonormal rows
    variances: np.ndarray  # (K,) float32
    residual_variance: float
    scale: float = 1.0

    @classmethod
    def fit(cls, x: np.ndarray, rank: int = RANK) -> Gaussian:
        """Fit on rows `(N, D)`: Ledoit-Wolf shrinkage keeps the covariance usable with few rows per dimension."""
        from sklearn.covariance import LedoitWolf

        x = np.asarray(x, dtype=np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(LedoitWolf().fit(x).covariance_)  # ascending
        rank = min(rank, len(eigenvalues) - 1)
        return cls(mean=x.mean(0).astype(np.float32),
                   components=np.ascontiguousarray(eigenvectors[:, -rank:].T, dtype=np.float32),
                   variances=eigenvalues[-rank:].astype(np.float32),
                   residual_variance=float(eigenvalues[:-rank].clip(min=1e-12).mean()))

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Mahalanobis distances `(N,)` of rows `(N, D)`, over sqrt(D) and over `scale`."""
        centred = np.asarray(x, dtype=np.float32) - self.mean
        along = centred @ self.components.T
        rest = (np.square(centred).sum(1) - np.square(along).sum(1)).clip(min=0)
        squared = (np.square(along) / self.variances).sum(1) + rest / np.float32(self.residual_variance)
        return np.sqrt(squared / centred.shape[1]) / np.float32(self.scale)


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
    def fit(cls, train: np.ndarray, validation: dict[str, np.ndarray], sizes: list[int]) -> FeatureCheck:
        """Fit on the training X-rays' statistic rows (`stages.concat_stages`); scales and thresholds from each
        source's validation rows (arrays, or CPU tensors).

        `sizes` are the stages' widths (2 x channels). Without validation rows the scales
        stay 1 and nothing is refused or called unfamiliar.
        """
        splits = np.cumsum(sizes)[:-1]
        stages = [Gaussian.fit(part) for part in np.split(np.asarray(train), splits, 1)]
        check = cls(stages, unfamiliar_above=float("inf"), refuse_above=float("inf"))
        validation = {name: np.asarray(rows) for name, rows in validation.items() if len(rows)}
        if not validation:
            return check
        for k, stage in enumerate(stages):
            stage.scale = max(float(np.quantile(stage.distance(np.split(rows, splits, 1)[k]), SCALE_QUANTILE))
                              for rows in validation.values())
        scores = [check.distance(rows) for rows in validation.values()]
        check.unfamiliar_above = max(float(np.quantile(d, UNFAMILIAR_QUANTILE)) for d in scores)
        check.refuse_above = max(float(d.max()) for d in scores)
        return check

    @property
    def sizes(self) -> list[int]:
        """Each stage's width (2 x its channels), as `stages.stage_widths` gives them for the model."""
        return [len(stage.mean) for stage in self.stages]

    def distance(self, features: np.ndarray) -> np.ndarray:
        """`(N,)` scores of statistic rows `(N, D)`: the largest of the stages' scaled distances."""
        parts = np.split(np.asarray(features, dtype=np.float32), np.cumsum(self.sizes)[:-1], 1)
        return np.stack([stage.distance(part) for stage, part in zip(self.stages, parts)]).max(0)

    def verdict(self, distance: float) -> str:
        """`FAMILIAR`, `UNFAMILIAR` or `NOT_AN_XRAY` for one score."""
        if distance > self.refuse_above * (1 + THRESHOLD_TOLERANCE):
            return NOT_AN_XRAY
        return UNFAMILIAR if distance > self.unfamiliar_above * (1 + THRESHOLD_TOLERANCE) else FAMILIAR

    def verdicts(self, features: np.ndarray) -> np.ndarray:
        """`verdict` of each row of statistics, as an array of strings."""
        return np.array([self.verdict(d) for d in self.distance(features).tolist()], dtype=object)

    def save(self, path: str | Path) -> None:
        """Write the statistics and thresholds as safetensors (no pickles)."""
        tensors = {"thresholds": np.array([self.unfamiliar_above, self.refuse_above], dtype=np.float64)}
        for k, stage in enumerate(self.stages):
            tensors |= {f"stage{k}.mean": stage.mean, f"stage{k}.components": stage.components,
                        f"stage{k}.variances": stage.variances,
                        f"stage{k}.scalars": np.array([stage.residual_variance, stage.scale], dtype=np.float64)}
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
