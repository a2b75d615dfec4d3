"""Batched training augmentation on tensors: one `grid_sample` for the geometry, broadcast ops for the rest.

Aimed at X-rays from sources we never see: other orientations, zoomed-out anatomy in
wide black borders (collimation, scanned films), darker and flatter exposures, noise
and blur. Works on a whole batch at once, so it costs little next to the model step
(torchvision's transforms work one image at a time, which is what made the naive loop slow).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


@dataclass(frozen=True)
class Strength:
    """How far the random draws reach: rotation, exposure and contrast ranges, and burnt-in markers."""

    max_rotation: float  # radians, either way
    exposure: tuple[float, float]  # multiplies the pixels
    contrast: tuple[float, float]  # around the image mean
    marker_p: float  # share of images that get a burnt-in "R" or "L"


# "wide" reaches for the second source's look (dark, flat films with side markers, turned further)
# beyond what "standard" covers; `bench/recipe.py` measures both.
AUGMENTATIONS = {
    "standard": Strength(math.pi / 6, (0.7, 1.3), (0.7, 1.3), 0.0),
    "wide": Strength(math.pi / 4, (0.45, 1.3), (0.45, 1.3), 0.3),
}


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


@functools.cache
def _letters() -> torch.Tensor:
    """White "R" and "L" on black, `(2, 1, 24, 24)` float masks: the side markers burnt into many films.

    Bold strokes, so the letters survive `grid_sample`'s shrinking to a few pixels.
    """
    font = ImageFont.load_default(size=18)
    masks = []
    for letter in "RL":
        image = Image.new("L", (24, 24))
        ImageDraw.Draw(image).text((12, 12), letter, fill=255, font=font, anchor="mm", stroke_width=2,
                                   stroke_fill=255)
        masks.append(torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0))
    return torch.stack(masks).unsqueeze(1)


def burn_in_markers(x: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    """Stamp a bright "R" or "L" (in a square 8-16% of the image high, anywhere) on a share `p` of the batch."""
    n = x.shape[0]
    stamped = torch.rand(n, generator=g) < p
    letters = _letters()[torch.randint(0, 2, (n,), generator=g)]
    # Half the letter square's side in grid units (the image spans [-1, 1]): the square is `size` of the image.
    size = _uniform(n, 0.08, 0.16, g)
    centre = _uniform(2 * n, -0.85, 0.85, g).view(n, 2)
    zero = torch.zeros(n)
    # Maps each output position to the letter's own [-1, 1] square: (position - centre) / size.
    theta = torch.stack([torch.stack([1 / size, zero, -centre[:, 0] / size], 1),
                         torch.stack([zero, 1 / size, -centre[:, 1] / size], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    mask = F.grid_sample(letters, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness = _uniform(n, 0.8, 1.0, g).view(n, 1, 1, 1)
    return torch.where(stamped.view(n, 1, 1, 1), torch.maximum(x, mask * brightness), x)


def augment(x: torch.Tensor, g: torch.Generator, strength: str = "standard") -> torch.Tensor:
    """Randomly transform a float batch `(N, 1, H, W)` in [0, 1]; returns a new batch in [0, 1].

    `strength` names one of `AUGMENTATIONS`.
    """
    reach = AUGMENTATIONS[strength]
    n = x.shape[0]
    # Geometry: rotation, zoom (out to 0.7x: small anatomy in a black frame), shift, flips.
    angle = _uniform(n, -reach.max_rotation, reach.max_rotation, g)
    scale = torch.exp(_uniform(n, math.log(0.7), math.log(1.2), g))
    shift = _uniform(2 * n, -0.08, 0.08, g).view(n, 2)
    flip_x = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n, generator=g) < 0.2, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip_x, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip_x * flip_y, cos * flip_y, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Framing: a random rectangle of the image survives, the rest goes black (collimation).
    frame = torch.rand(n, generator=g) < 0.15
    if frame.any():
        h, w = x.shape[-2:]
        ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
        top, left = (_uniform(n, 0, 0.2, g) * h).view(n, 1, 1), (_uniform(n, 0, 0.2, g) * w).view(n, 1, 1)
        bottom, right = h - (_uniform(n, 0, 0.2, g) * h).view(n, 1, 1), w - (_uniform(n, 0, 0.2, g) * w).view(n, 1, 1)
        keep = (ys >= top) & (ys < bottom) & (xs >= left) & (xs < right)
        keep = keep | ~frame.view(n, 1, 1)
        x = x * keep.unsqueeze(1)

    if reach.marker_p > 0:  # burnt in before the exposure, so they darken and flatten with the film
        x = burn_in_markers(x, g, reach.marker_p)

    # Photometry: exposure, contrast around the image mean, gamma.
    exposure = torch.exp(_uniform(n, *map(math.log, reach.exposure), g)).view(n, 1, 1, 1)
    contrast = _uniform(n, *reach.contrast, g).view(n, 1, 1, 1)
    gamma = torch.exp(_uniform(n, math.log(0.7), math.log(1.5), g)).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean) * exposure
    x = x.clamp(0, 1).pow(gamma)

    # Blur on some images, sensor noise on others.
    blur = (torch.rand(n, generator=g) < 0.15).view(n, 1, 1, 1)
    if blur.any():
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = (k[:, None] * k[None, :]) / 256.0
        blurred = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.view(1, 1, 5, 5))
        x = torch.where(blur, blurred, x)
    noise_std = _uniform(n, 0.0, 0.03, g).view(n, 1, 1, 1) * (torch.rand(n, 1, 1, 1, generator=g) < 0.2)
    x = x + torch.randn(x.shape, generator=g) * noise_std
    return x.clamp(0, 1)
