"""Sufficiency (Dasgupta et al. 2022): do images whose explanations look alike get the same prediction?

Unlike every other metric here, an image's score depends on its batch-mates by definition: its neighbours are the
other images of the batch whose explanation lies within a distance threshold. Score large, class-balanced batches and
keep the batch composition fixed when comparing methods.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xai_bench.checks import check_number
from xai_bench.metrics.explanation import _perturb as P
from xai_bench.metrics.explanation._reexplain import forward_outputs
from xai_bench.metrics.explanation._stats import flat_map, normalise_by_max
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = ["Sufficiency", "explanation_distances"]

DISTANCES = ("seuclidean", "euclidean", "cosine")


def explanation_distances(a: Tensor, kind: str = "seuclidean") -> Tensor:
    """Pairwise distances ``N×N`` between the rows of ``a`` (``N×D``), as ``scipy.spatial.distance.cdist(a, a, kind)``.

    ``seuclidean`` is the Euclidean distance with each feature divided by its variance over the batch, scipy's
    ``V=None`` rule for ``cdist(a, a)``: the unbiased variance of ``a`` stacked on itself (``2·Σ(a − ā)² / (2N − 1)``).
    Features that are equal in every row contribute 0 (scipy returns NaN there). ``cosine`` is ``1 − cos``, with a
    zero row at distance 1 from everything (scipy: NaN). Float64 on ``a``'s device.
    """
    a = a.double()
    if kind == "seuclidean":
        n = a.shape[0]
        var = 2 * (a - a.mean(0)).square().sum(0) / max(1, 2 * n - 1)
        a = torch.where(var > 0, a / var.clamp_min(torch.finfo(a.dtype).tiny).sqrt(), torch.zeros_like(a))
        kind = "euclidean"
    if kind == "euclidean":
        d = (a.square().sum(1)[:, None] + a.square().sum(1)[None, :] - 2 * a @ a.T).clamp_min(0).sqrt()
        return d.fill_diagonal_(0)
    if kind == "cosine":
        u = a / a.norm(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        return (1 - u @ u.T).clamp_min(0).fill_diagonal_(0)
    raise ValueError(f"distance_func must be one of {list(DISTANCES)}, got {kind!r}")


@register_metric
class Sufficiency(ExplanationMetric):
    """Sufficiency (Dasgupta et al. 2022, "Framework for Evaluating Faithfulness of Local Explanations", ICML), as
    Quantus's ``Sufficiency``.

    An explanation is sufficient if the other inputs it also applies to get the same prediction. Maps are summed over
    their channels, divided by their largest absolute value (``normalise``) and taken in absolute value (``abs``);
    the pairwise distances between the maps of the batch (``distance_func``) are divided by the largest of them, and
    image ``j ≠ i`` is a neighbour of ``i`` when that normalised distance is ``≤ threshold``. The score of ``i`` is the
    fraction of its neighbours whose predicted class (the model's argmax; ``targets`` are not used) equals ``i``'s,
    and 0 when it has none (as Quantus). Higher is better.

    Depends on the batch by definition: the neighbours are batch-mates, and both the ``seuclidean`` feature variances
    and the distance normalisation are taken over the batch (as Quantus). An image scored alone always gets 0.

    Args:
        threshold: the largest normalised distance at which an explanation applies to another image (Quantus: 0.6).
        distance_func: ``seuclidean`` (Quantus's default: features scaled by their batch variance) | ``euclidean`` |
            ``cosine``, as ``scipy.spatial.distance.cdist``.
        abs: take absolute values of the maps (Quantus's default ``True``).
        normalise: divide each map by its largest absolute value first (Quantus: ``normalise_by_negative``, which is
            the same for ``abs=True``; per image here, so a map's scale does not matter).
    """

    name = "sufficiency"
    category = "faithfulness"
    higher_is_better = True

    def __init__(self, threshold: float = 0.6, distance_func: str = "seuclidean", abs: bool = True,
                 normalise: bool = True) -> None:
        self.threshold = check_number("threshold", threshold, lo=0)
        self.distance_func = P.check_choice("distance_func", distance_func, DISTANCES)
        self.abs = bool(abs)
        self.normalise = bool(normalise)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(threshold={self.threshold}, distance_func={self.distance_func!r}, "
                f"abs={self.abs}, normalise={self.normalise})")

    def neighbours(self, maps: Tensor) -> Tensor:
        """``N×N`` bool: ``[i, j]`` when ``j ≠ i`` lies within ``threshold`` of ``i``'s explanation."""
        a = flat_map(maps)
        if self.normalise:
            a = normalise_by_max(a)
        if self.abs:
            a = a.abs()
        d = explanation_distances(a, self.distance_func)
        top = d.max()
        if top > 0:  # Quantus's normalise_by_negative over the whole (non-negative) distance matrix
            d = d / top
        close = d <= self.threshold
        return close & ~torch.eye(len(d), dtype=torch.bool, device=d.device)

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        near = self.neighbours(maps)
        with torch.no_grad():
            pred = forward_outputs(model, images)[0].argmax(1).to(near.device)
        same = near & (pred[:, None] == pred[None, :])
        count = near.sum(1)
        return torch.where(count > 0, same.sum(1) / count.clamp_min(1), torch.zeros_like(count, dtype=torch.float))
