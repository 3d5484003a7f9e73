"""Batched similarity measures between explanation maps: Spearman rank correlation, top-k IoU and SSIM.

Each takes two batches of maps (``N×…``, compared image by image) and returns ``Tensor[N]`` on their device. They are
the batched torch forms of ``scipy.stats.spearmanr`` (average ranks for ties) and
``skimage.metrics.structural_similarity`` (uniform 7×7 window, sample covariance), checked against both in
``tests/test_metrics_stability.py``. Shared by the stability metrics; other families may import them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.metrics.explanation._stats import spearman  # one Spearman for every family

__all__ = ["minmax_normalise", "spearman", "ssim", "topk_iou"]



def _flat_pair(a: Tensor, b: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"{name}: the two batches must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError(f"{name}: expected batches N×…, got shape {tuple(a.shape)}")
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def topk_iou(a: Tensor, b: Tensor, k: float = 0.1) -> Tensor:
    """Intersection over union of the top ``k`` fraction of entries of ``a[i]`` and of ``b[i]`` (flattened).

    Args:
        a, b: ``N×…`` maps.
        k: fraction of entries in each top set, in (0, 1]; the set size is ``max(1, round(k · D))``.

    Returns:
        ``Tensor[N]`` in [0, 1] (1: the same top set). Ties at the cut-off are broken by ``torch.topk``.
    """
    if not (0 < k <= 1):
        raise ValueError(f"k must be a fraction in (0, 1], got {k!r}")
    a, b = _flat_pair(a, b, "topk_iou")
    n_top = max(1, round(k * a.shape[1]))
    in_a = torch.zeros_like(a, dtype=torch.bool).scatter_(1, a.topk(n_top, dim=1).indices, True)
    in_b = torch.zeros_like(b, dtype=torch.bool).scatter_(1, b.topk(n_top, dim=1).indices, True)
    return ((in_a & in_b).sum(1).float() / (in_a | in_b).sum(1).float())


def minmax_normalise(x: Tensor) -> Tensor:
    """Each ``x[i]`` rescaled to [0, 1] by its own min and max (a constant map becomes all zeros)."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.amin(1).view(-1, *([1] * (x.ndim - 1)))
    hi = flat.amax(1).view(-1, *([1] * (x.ndim - 1)))
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(torch.finfo(x.dtype).tiny), torch.zeros_like(x))


def ssim(a: Tensor, b: Tensor, *, data_range: float = 1.0, win_size: int = 7) -> Tensor:
    """Mean structural similarity (Wang et al. 2004) of each pair of ``N×C×H×W`` maps, as scikit-image computes it.

    Same as ``skimage.metrics.structural_similarity(a[i], b[i], data_range=data_range, win_size=win_size,
    channel_axis=0)``: uniform ``win_size``² windows, sample covariance, K1 = 0.01, K2 = 0.03, averaged over the
    windows that fit inside the image (scikit-image crops the border) and over channels. Images smaller than the
    window use the largest odd window that fits.

    Returns:
        ``Tensor[N]`` (float32), 1 for identical maps.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim: expected two N×C×H×W batches of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be odd and >= 1, got {win_size}")
    side = min(a.shape[-2:])
    win = min(win_size, side if side % 2 else side - 1)
    a, b = a.double(), b.double()
    np_ = win * win
    cov_norm = np_ / (np_ - 1) if np_ > 1 else 1.0

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(t, win, stride=1)  # "valid" windows == scikit-image's filtered image, border cropped

    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()

