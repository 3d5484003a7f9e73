"""ROAD: RemOve And Debias (Rong et al. 2022), removal by noisy linear imputation instead of a fixed baseline.

Removed pixels are not set to a constant (which leaks the removed shape to the model: the "class information leakage"
the paper measures) but filled in from their neighbours by solving a sparse linear system, then a little Gaussian noise
is added. :func:`linear_imputation` is that solve as batched tensor code; :class:`ROAD` is the metric.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.checks import check_number
from xai_bench.metrics.explanation import _perturb as P
from xai_bench.metrics.explanation.base import register_metric
from xai_bench.metrics.explanation._curve import _CurveMetric

__all__ = ["ROAD", "linear_imputation"]

log = logging.getLogger(__name__)

# Rong et al.'s neighbour weights (their road_evaluation code, Quantus's noisy_linear_imputation): 1/6 for the four
# direct neighbours, 1/12 for the four diagonal ones; they sum to 1 inside the image.
_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))

# float32 values per imputation piece (~32 MB a buffer; conjugate gradients keeps about six such buffers alive)
_IMPUTE_VALUES = 2**23


def linear_imputation(images: Tensor, removed: Tensor, *, tol: float = 1e-6, max_iter: int | None = None) -> Tensor:
    """Fill the ``removed`` pixels of every image with the weighted mean of their 8 neighbours (noise-free ROAD).

    Every removed pixel ``i`` must equal ``Σ_j w_ij x_j / Σ_j w_ij`` over its in-image neighbours ``j`` (``w`` = 1/6
    direct, 1/12 diagonal), where a neighbour is the image's value if kept and an unknown if removed too: one sparse
    linear system per image and channel (Rong et al. 2022, Quantus's ``noisy_linear_imputation`` without its noise).
    Quantus builds it with ``scipy.sparse`` and calls ``spsolve`` once per image and step; here all images × channels
    are solved at once by Jacobi-preconditioned conjugate gradients. The system matrix ``s_i x_i − Σ_{j removed} w_ij
    x_j`` is symmetric (``w_ij = w_ji``) and positive definite whenever some pixel is kept, so CG converges; its
    matrix-vector product is one masked 3×3 convolution, which keeps everything batched on the images' device, where a
    sparse direct solve would need one factorisation per image and step on the CPU. CG needs about ``O(H + W)``
    iterations (plain Jacobi iteration would need ``O((H + W)²)``).

    Args:
        images: ``B×C×H×W``.
        removed: ``B×1×H×W`` (or ``B×H×W``) bool, the pixels to impute (all channels of a pixel together).
        tol: stop when every system's residual norm is below ``tol`` × its right-hand side's norm.
        max_iter: CG iterations at most (default ``4·(H + W) + 50``; a warning is logged if that was not enough).

    Returns:
        ``B×C×H×W``: the images with the removed pixels imputed (kept pixels unchanged, bit for bit).
    """
    b, c, h, w = images.shape
    removed = removed.reshape(b, 1, h, w).bool()
    if b == 0 or not removed.any():
        return images.clone()
    if bool(removed.flatten(1).all(1).any()):
        raise ValueError("linear_imputation: an image has every pixel removed; nothing is left to impute from")
    x = images.reshape(b * c, 1, h, w)
    r = removed.to(images.dtype).repeat_interleave(c, 0)  # (B·C)×1×H×W: each channel is its own system
    kernel = torch.tensor(_WEIGHTS, dtype=images.dtype, device=images.device).view(1, 1, 3, 3)

    def neighbours(v: Tensor) -> Tensor:  # Σ_j w_ij v_j over the in-image neighbours (zero padding)
        return F.conv2d(v, kernel, padding=1)

    s = neighbours(torch.ones(1, 1, h, w, dtype=images.dtype, device=images.device))  # Σ_j w_ij: 1 inside

    def apply(u: Tensor, r: Tensor) -> Tensor:  # the system matrix on the removed pixels, 0 elsewhere
        return r * (s * u - neighbours(r * u))

    def dot(a: Tensor, bb: Tensor) -> Tensor:
        return (a * bb).sum((1, 2, 3))

    rhs = r * neighbours((1 - r) * x)
    out = r * _pyramid_fill(x, 1 - r)
    # CG state of the systems still iterating; converged ones are written to `out` and dropped (every 8 steps, one
    # sync), so a batch of mostly easy systems (few pixels removed) does not iterate as long as its hardest one
    act = torch.arange(b * c, device=images.device)
    u, ra = out, r
    res = rhs - apply(u, ra)
    z = res / s
    p = z
    rz = dot(res, z)
    stop = (tol * rhs.flatten(1).norm(dim=1)).square()
    max_iter = max_iter if max_iter is not None else 4 * (h + w) + 50
    for it in range(max_iter + 1):
        if it % 8 == 0 or it == max_iter:
            left = dot(res, res) > stop
            if not bool(left.all()):
                out[act[~left]] = u[~left]
                act, u, ra, res, p, rz, stop = (t[left] for t in (act, u, ra, res, p, rz, stop))
            if act.numel() == 0 or it == max_iter:
                break
        ap = apply(p, ra)
        pap = dot(p, ap)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(torch.finfo(pap.dtype).tiny), torch.zeros_like(pap))
        u = u + alpha.view(-1, 1, 1, 1) * p
        res = res - alpha.view(-1, 1, 1, 1) * ap
        z = res / s
        rz_new = dot(res, z)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(torch.finfo(rz.dtype).tiny), torch.zeros_like(rz))
        p = z + beta.view(-1, 1, 1, 1) * p
        rz = rz_new
    if act.numel():
        out[act] = u
        log.warning("linear_imputation: conjugate gradients did not reach tol=%g in %d iterations for %d of %d "
                    "systems", tol, max_iter, act.numel(), b * c)
    return torch.where(r.bool(), out, x).view(b, c, h, w)


def _pyramid_fill(x: Tensor, known: Tensor) -> Tensor:
    """A smooth first guess for the holes of ``x`` (``B×1×H×W``, ``known`` 0/1): push-pull interpolation, i.e. the
    known pixels averaged down a 2× pyramid until every hole is covered, then bilinearly upsampled back into the holes.
    Conjugate gradients removes the local error fast; this start removes most of the slow, large-scale error that big
    holes (a most-relevant-first removal of a compact object) would otherwise take ~the hole's width in iterations."""
    h, w = x.shape[-2:]
    if min(h, w) < 2 or bool((known > 0).all()):
        return x
    xs = F.avg_pool2d(x * known, 2, ceil_mode=True)
    ks = F.avg_pool2d(known, 2, ceil_mode=True)
    coarse = _pyramid_fill(xs / ks.clamp_min(1e-12), (ks > 0).to(x.dtype))
    up = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return known * x + (1 - known) * up


@register_metric
class ROAD(_CurveMetric):
    """ROAD, RemOve And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML), as Quantus's ``ROAD`` but scored per image.

    For each percentage ``p``, the ``⌊H·W·p/100⌋`` pixels ranked first are removed — most relevant first (``morf``)
    or least relevant first (``lerf``) — by noisy linear imputation: :func:`linear_imputation` fills them from their
    neighbours, then ``N(0, noise²)`` is added to the filled values (not clipped, as Quantus). The curve is the
    target's softmax probability at each percentage. The score is the area under that curve over the fraction of
    pixels actually removed (trapezoid rule), divided by the width of that range, so a constant probability ``q``
    scores ``q`` (the mean height of the curve). With ``morf`` a faithful map makes the probability fall fast: lower
    is better; with ``lerf`` it stays high: higher is better (``higher_is_better`` follows ``order``).

    Differences from Quantus: Quantus records whether the predicted class still equals the label at each percentage
    and returns that curve averaged over the images (an accuracy curve, one per batch); here each image gets a score
    from its own probability curve, so methods can be compared image by image. The noise is drawn once per call from
    ``seed`` (one draw per percentage, shared by all images) so a score does not depend on its batch-mates.
    Relevance is per pixel (the map summed over its channels); ties are broken by pixel index (a stable sort).

    Args:
        percentages: percentages of pixels removed, increasing, each in ``[0, 100)``. Default: ``5, 15, …, 95``
            (10 steps: the midpoints of ten equal bins, as Quantus's ``range(1, 100, 2)`` are those of fifty; 5× fewer
            forward passes and imputations).
        order: ``morf`` (Quantus's and the paper's main order) | ``lerf``.
        noise: σ of the Gaussian noise added to imputed pixels, in pixel units (Quantus: 0.01).
        softmax: score the target's probability (default) instead of its logit.
        seed: seeds the noise.
    """

    name = "road"
    category = "faithfulness"
    higher_is_better = False
    ORDERS = ("morf", "lerf")

    def __init__(self, percentages: Sequence[float] | None = None, order: str = "morf", noise: float = 0.01,
                 softmax: bool = True, seed: int | None = 0) -> None:
        if percentages is None:
            percentages = tuple(range(5, 100, 10))
        if isinstance(percentages, (str, int, float)) or not len(percentages):
            raise ValueError(f"percentages must be a non-empty list of numbers in [0, 100), got {percentages!r}")
        self.percentages = tuple(check_number("percentages", p, lo=0) for p in percentages)
        if max(self.percentages) >= 100:
            raise ValueError(f"percentages must be < 100 (removing every pixel leaves nothing to impute from), "
                             f"got {list(percentages)}")
        if any(b <= a for a, b in zip(self.percentages, self.percentages[1:])):
            raise ValueError(f"percentages must be strictly increasing, got {list(percentages)}")
        self.order = P.check_choice("order", order, self.ORDERS)
        self.higher_is_better = self.order == "lerf"
        self.noise = check_number("noise", noise, lo=0)
        self.softmax = bool(softmax)
        self.seed = None if seed is None else P.check_int("seed", seed, 0)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(percentages={list(self.percentages)}, order={self.order!r}, "
                f"noise={self.noise}, softmax={self.softmax}, seed={self.seed})")

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        _, c, h, w = images.shape
        n_pix = h * w
        counts = torch.tensor([int(n_pix * p / 100) for p in self.percentages], device=images.device)
        r = P.ranks(P.pixel_relevance(maps), descending=self.order == "morf")
        eps = torch.randn(len(counts), c, h, w, generator=P.generator(self.seed)).to(images) * self.noise
        piece = max(1, _IMPUTE_VALUES // max(1, images[0].numel()))

        def make(n: Tensor, s: Tensor) -> Tensor:
            out = []
            for i in range(0, n.numel(), piece):  # bounds the solver's memory, not a loop over images
                ni, si = n[i:i + piece], s[i:i + piece]
                mask = (r[ni] < counts[si, None]).view(-1, 1, h, w)
                filled = linear_imputation(images[ni], mask)
                out.append(torch.where(mask, filled + eps[si], filled))
            return torch.cat(out)

        curve = P.perturbed_scores(model, images, targets, len(counts), make, softmax=self.softmax)
        return curve, counts.float() / n_pix

    curve_xlabel = "fraction of pixels removed and imputed"
    score_label = "mean height"

    def _summarise(self, curve: Tensor, x: Tensor) -> Tensor:
        width = float(x[-1] - x[0])
        if width <= 0:  # one percentage (or all rounding to the same count): the curve's mean height
            return curve.mean(-1)
        return P.trapezoid(curve, x) / width
