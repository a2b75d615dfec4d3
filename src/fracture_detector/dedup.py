"""Find exact copies and near-copies of X-rays, so that no image leaks across splits.

Exact copies share a SHA-256 of their bytes. Near-copies in this data are the same
X-ray rotated about its centre by any angle, flipped, brightened, re-encoded or
re-cropped about its centre. We compare high-pass filtered images in polar
coordinates around the centre, where a rotation is a circular shift along the angle
axis, a flip reverses it, and a centred zoom scales the radius:

1. `polar_signatures`: each image as small standardised (ring x angle) grids, sampled
   at the full radius and at `SCALES` of it (to meet a zoomed-in copy half-way).
2. Candidate pairs: the nearest neighbours under a rotation- and flip-invariant
   descriptor (the magnitude of each ring's Fourier transform along the angle).
3. Verification: the best Pearson correlation over all rotations, both flips and the
   radial scales, computed exactly with FFTs; pairs at or above `threshold` are
   near-copies.
4. `group_ids`: connected components of the copy graph (scipy).

The threshold was chosen on the real data (see `bench/dedup_real.py` and docs/model.md):
file names there reveal which files derive from one X-ray.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

RINGS = 24
ANGLES = 128
GRID = 128
# Outer radius as a fraction of the half-width: the inscribed circle survives any
# rotation about the centre, the corners do not.
MAX_RADIUS = 0.95
MIN_RADIUS = 0.1
THRESHOLD = 0.60
NEIGHBOURS = 16
# Radius factors: a copy cropped to 90% (80%) about the centre and resized matches the
# original sampled at 0.9 (0.8) of its radius.
SCALES = (1.0, 0.9, 0.8)


def content_hash(data: bytes) -> str:
    """SHA-256 of a file's bytes: equal for byte-identical copies."""
    return hashlib.sha256(data).hexdigest()


def polar_signatures(pixels: np.ndarray) -> torch.Tensor:
    """uint8 `(N, H, W)` images -> standardised polar grids `(N, len(SCALES), RINGS, ANGLES)`.

    Each grid has zero mean and unit norm, so a dot product is a Pearson correlation
    and brightness/contrast changes drop out.
    """
    x = torch.from_numpy(np.ascontiguousarray(pixels)).float().unsqueeze(1) / 255.0
    x = F.interpolate(x, size=(GRID, GRID), mode="area")
    # High-pass (image minus its blur): bone edges and texture identify an X-ray;
    # the broad bright/dark layout that unrelated X-rays share does not.
    x = x - F.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)
    radius = torch.linspace(MIN_RADIUS, MAX_RADIUS, RINGS)
    theta = torch.arange(ANGLES) * (2 * torch.pi / ANGLES)
    grids = [
        torch.stack([s * radius[:, None] * torch.cos(theta), s * radius[:, None] * torch.sin(theta)], dim=-1)
        for s in SCALES
    ]
    grid = torch.cat(grids)  # (len(SCALES) * RINGS, ANGLES, 2)
    out = []
    for chunk in x.split(1024):
        g = grid.expand(len(chunk), *grid.shape)
        out.append(F.grid_sample(chunk, g, mode="bilinear", align_corners=False)[:, 0])
    polar = torch.cat(out).view(len(x), len(SCALES), RINGS, ANGLES)
    polar = polar - polar.mean(dim=(-2, -1), keepdim=True)
    return polar / polar.flatten(-2).norm(dim=-1).clamp_min(1e-6)[..., None, None]


def rotation_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Best correlation between polar grids `a[..., :, :]` and `b[..., :, :]` over every rotation and flip."""
    fa = torch.fft.rfft(a, dim=-1)
    best = None
    for fb in (torch.fft.rfft(b, dim=-1), torch.fft.rfft(b.flip(-1), dim=-1)):
        xc = torch.fft.irfft((fa * fb.conj()).sum(dim=-2), n=ANGLES, dim=-1)
        score = xc.max(dim=-1).values
        best = score if best is None else torch.maximum(best, score)
    return best


def copy_score(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Best correlation of signatures `a[i]` and `b[i]` over rotations, flips and radial scales.

    Both at full radius, or one at full radius against the other zoomed (either way).
    """
    scores = [rotation_correlation(a[:, 0], b[:, 0])]
    for s in range(1, a.shape[1]):
        scores += [rotation_correlation(a[:, 0], b[:, s]), rotation_correlation(a[:, s], b[:, 0])]
    return torch.stack(scores).max(dim=0).values


def near_copy_pairs(
    signatures: torch.Tensor, threshold: float = THRESHOLD, neighbours: int = NEIGHBOURS
) -> list[tuple[int, int, float]]:
    """Pairs `(i, j, score)` with `i < j` whose `copy_score` >= threshold."""
    n, n_scales = signatures.shape[:2]
    if n < 2:
        return []
    spectrum = torch.fft.rfft(signatures, dim=-1).abs().flatten(2)
    spectrum = spectrum / spectrum.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    keys = spectrum.flatten(0, 1)  # every image at every scale
    k = min(neighbours, len(keys) - n_scales)
    rows, cols = [], []
    for start in range(0, n, 1024):
        idx = torch.arange(start, min(start + 1024, n))
        sim = spectrum[idx, 0] @ keys.T
        own = idx[:, None] * n_scales + torch.arange(n_scales)
        sim.scatter_(1, own, -1.0)  # not its own neighbour
        top = sim.topk(k, dim=1).indices // n_scales
        rows.append(idx[:, None].expand(-1, k).reshape(-1))
        cols.append(top.reshape(-1))
    i, j = torch.cat(rows), torch.cat(cols)
    i, j = torch.minimum(i, j), torch.maximum(i, j)
    pairs = torch.unique(torch.stack([i, j], dim=1), dim=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    scores = torch.cat([copy_score(signatures[p[:, 0]], signatures[p[:, 1]]) for p in pairs.split(4096)])
    keep = scores >= threshold
    return [
        (int(a), int(b), float(s))
        for (a, b), s in zip(pairs[keep].tolist(), scores[keep].tolist())
    ]


def group_ids(n: int, pairs) -> np.ndarray:
    """Connected components of the graph with `n` nodes and edges `pairs` -> group id per node.

    Ids are numbered by each component's smallest node, so they are stable for a given input.
    """
    edges = np.array([(a, b) for a, b, *_ in pairs], dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels
