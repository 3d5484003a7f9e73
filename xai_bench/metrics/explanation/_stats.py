"""Small batched statistics for the explanation metrics: average ranks, Spearman correlation, SSIM, per-map
normalisation. Each works on a whole batch of maps at once, on the maps' device (no NumPy, no per-image loop).

Shared helpers another family may reuse: :func:`average_ranks`, :func:`spearman`, :func:`ssim`,
:func:`normalise_by_max`, :func:`flat_map`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["average_ranks", "flat_map", "normalise_by_max", "spearman", "ssim"]


def flat_map(maps: Tensor) -> Tensor:
    """``N×C×H×W`` maps as ``N×(H·W)`` float rows, channels summed (one value per pixel)."""
    return maps.float().sum(1).flatten(1)


def normalise_by_max(a: Tensor) -> Tensor:
    """Divide each row of ``a`` (``N×D``) by its largest absolute value; all-zero rows are left as they are.

    Quantus's ``normalise_by_max`` divides by the largest value over the whole *batch*, which makes a score depend on
    which other images share the batch; per image is the same rule without that dependence.
    """
    m = a.abs().amax(1, keepdim=True)
    return a / torch.where(m > 0, m, torch.ones_like(m))


def average_ranks(a: Tensor) -> Tensor:
    """Ranks ``1..D`` of each row of ``a`` (``N×D``), ties given the average of the ranks they span
    (``scipy.stats.rankdata(method="average")``). Float64 on ``a``'s device."""
    n, d = a.shape
    values, order = torch.sort(a, dim=1, stable=True)
    pos = torch.arange(1, d + 1, device=a.device, dtype=torch.float64).expand(n, d)
    # a new tie group starts wherever the sorted value changes; every member gets the mean of the group's positions
    new = torch.ones(n, d, dtype=torch.bool, device=a.device)
    new[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new.long().cumsum(1) - 1  # group id per sorted position, 0..G-1 within each row
    sums = torch.zeros(n, d, dtype=torch.float64, device=a.device).scatter_add_(1, group, pos)
    counts = torch.zeros(n, d, dtype=torch.float64, device=a.device).scatter_add_(1, group, torch.ones_like(pos))
    sorted_ranks = (sums / counts.clamp_min(1)).gather(1, group)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each pair of maps (flattened), average ranks for ties.

    Args:
        a, b: ``N×…`` tensors of the same shape.

    Returns:
        ``Tensor[N]`` (float32); NaN where a map is constant, as ``scipy.stats.spearmanr`` returns.
    """
    if a.shape != b.shape:
        raise ValueError(f"spearman: the two batches must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    out = (ra * rb).sum(1) / den
    return out.masked_fill(den == 0, float("nan")).clamp(-1, 1).float()


def ssim(a: Tensor, b: Tensor, *, win_size: int = 7, data_range: Tensor | float | None = None,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Structural similarity of each pair of single-channel maps, as ``skimage.metrics.structural_similarity`` with
    its defaults (uniform ``win_size``² window, sample covariance, mean SSIM over the pixels whose window lies
    inside the image).

    Args:
        a, b: ``N×H×W`` or ``N×1×H×W`` maps.
        win_size: odd window side, at most ``min(H, W)``.
        data_range: the value range; default, as Quantus: ``max − min`` over both maps of the pair.
        k1, k2: the SSIM constants.

    Returns:
        ``Tensor[N]`` (float32).
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    a = a.reshape(a.shape[0], 1, *a.shape[-2:]).double()
    b = b.reshape(b.shape[0], 1, *b.shape[-2:]).double()
    if win_size % 2 == 0 or win_size > min(a.shape[-2:]):
        raise ValueError(f"ssim: win_size={win_size} must be odd and at most the map's side {tuple(a.shape[-2:])}")
    if data_range is None:
        both = torch.cat([a.flatten(1), b.flatten(1)], 1)
        data_range = both.amax(1) - both.amin(1)
    r = torch.as_tensor(data_range, dtype=torch.float64, device=a.device).reshape(-1, 1, 1, 1)
    kernel = torch.full((1, 1, win_size, win_size), 1.0 / win_size**2, dtype=torch.float64, device=a.device)
    # skimage filters with reflection and then drops a border of (win_size − 1) / 2: the same as a valid correlation
    mean = [F.conv2d(t, kernel) for t in (a, b, a * a, b * b, a * b)]
    ux, uy, uxx, uyy, uxy = mean
    cov = win_size**2 / (win_size**2 - 1)  # sample covariance
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()
