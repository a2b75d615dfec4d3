"""Batched training augmentation on tensors: one `grid_sample` for the geometry, broadcast ops for the rest.

Aimed at X-rays from sources we never see: other orientations, zoomed-out anatomy in
wide black borders (collimation, scanned films), darker and flatter exposures, noise
and blur. Works on a whole batch at once, so it costs little next to the model step
(torchvision's transforms work one image at a time, which is what made the naive loop slow).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Randomly transform a float batch `(N, 1, H, W)` in [0, 1]; returns a new batch in [0, 1]."""
    n = x.shape[0]
    # Geometry: rotation, zoom (out to 0.7x: small anatomy in a black frame), shift, flips.
    angle = _uniform(n, -math.pi / 6, math.pi / 6, g)
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

    # Photometry: exposure, contrast around the image mean, gamma.
    exposure = torch.exp(_uniform(n, math.log(0.7), math.log(1.3), g)).view(n, 1, 1, 1)
    contrast = _uniform(n, 0.7, 1.3, g).view(n, 1, 1, 1)
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
