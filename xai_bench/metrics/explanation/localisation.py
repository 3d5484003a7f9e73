"""Localisation metrics (Quantus's ``localisation`` category): does the map's relevance fall on the object?

Each needs a ground-truth mask per image (``needs_masks = True``; Bool ``N×1×H×W``) and reads only the maps
(``needs_model = False``). A map with several channels is summed over its channels first. An image whose mask is
empty scores NaN, as in Quantus. Quantus's default max-normalisation is left out: none of these scores changes
when a map is multiplied by a positive number.
"""

from __future__ import annotations

import warnings

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.metrics.explanation._stats import average_ranks, flat_map
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = ["AUC", "AttributionLocalisation", "EnergyPointingGame", "PointingGame", "RelevanceMassAccuracy",
           "RelevanceRankAccuracy", "TopKIntersection", "bounding_boxes", "dilate"]


def dilate(masks: Tensor, radius: int) -> Tensor:
    """Grow Bool masks (``N×1×H×W``) by a disk of ``radius`` pixels (``radius = 0``: unchanged)."""
    if radius <= 0:
        return masks.bool()
    r = torch.arange(-radius, radius + 1, device=masks.device, dtype=torch.float32)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]
    return F.conv2d(masks.float(), disk, padding=radius) > 0.5


def bounding_boxes(masks: Tensor) -> Tensor:
    """The tightest axis-aligned box around each Bool mask (``N×1×H×W``), as a Bool mask; empty stays empty."""
    def span(any_: Tensor) -> Tensor:  # True from the first to the last True along the last dim
        forward = any_.long().cummax(-1).values.bool()
        backward = any_.flip(-1).long().cummax(-1).values.bool().flip(-1)
        return forward & backward

    rows, cols = span(masks.any(-1)), span(masks.any(-2))
    return rows[..., :, None] & cols[..., None, :]


class _Localisation(ExplanationMetric):
    category = "localisation"
    needs_model = False
    needs_masks = True

    def __init__(self, abs: bool = False) -> None:
        self.abs = bool(abs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(abs={self.abs})"

    def flat(self, maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """``N×D`` map values (channels summed, absolute if configured) and ``N×D`` Bool mask."""
        a = flat_map(maps)
        return (a.abs() if self.abs else a), masks.flatten(1).bool()

    @staticmethod
    def nan_where_empty(scores: Tensor, s: Tensor) -> Tensor:
        return torch.where(s.any(1), scores, torch.full_like(scores, float("nan")))


@register_metric
class PointingGame(_Localisation):
    """Hit (1) if the map's maximum lies on the object, else 0 (Zhang et al., 2018, "Top-down neural attention by
    excitation backprop"; Quantus ``PointingGame``). Any of several tied maxima on the object is a hit (Quantus).

    Args:
        tolerance: grow the mask by a disk of this many pixels first (the paper uses 15 px at ImageNet size;
            Quantus has none, so the default is 0).
        weighted: score a hit as ``1 − |mask| / (H·W)`` (Quantus's ``weighted``): hits on big objects count less.
        abs: take the map's absolute value first (Quantus's default ``False``).
    """

    name = "pointing_game"
    higher_is_better = True

    def __init__(self, tolerance: int = 0, weighted: bool = False, abs: bool = False) -> None:
        super().__init__(abs=abs)
        if isinstance(tolerance, bool) or int(tolerance) != tolerance or tolerance < 0:
            raise ValueError(f"pointing_game: tolerance must be an integer number of pixels ≥ 0, got {tolerance!r}")
        self.tolerance = int(tolerance)
        self.weighted = bool(weighted)

    def __repr__(self) -> str:
        return f"PointingGame(tolerance={self.tolerance}, weighted={self.weighted}, abs={self.abs})"

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = self.flat(maps, dilate(masks, self.tolerance))
        hit = ((a == a.amax(1, keepdim=True)) & s).any(1).float()
        if self.weighted:
            hit = hit * (1 - s.float().mean(1))
        return self.nan_where_empty(hit, s)


@register_metric
class EnergyPointingGame(_Localisation):
    """Share of the map's positive energy that falls on the object, ``Σ_mask a⁺ / Σ a⁺`` (Wang et al., 2020,
    "Score-CAM: score-weighted visual explanations for CNNs", §4.2). NaN where the map has no positive value.

    Args:
        bounding_box: use the mask's bounding box as the object, as the paper does with ILSVRC boxes.
        abs: take the map's absolute value first (default ``False``: the paper scores the positive part).
    """

    name = "energy_pointing_game"
    higher_is_better = True

    def __init__(self, bounding_box: bool = False, abs: bool = False) -> None:
        super().__init__(abs=abs)
        self.bounding_box = bool(bounding_box)

    def __repr__(self) -> str:
        return f"EnergyPointingGame(bounding_box={self.bounding_box}, abs={self.abs})"

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = self.flat(maps, bounding_boxes(masks) if self.bounding_box else masks)
        a = a.double().clamp_min(0)
        total = a.sum(1)
        inside = (a * s).sum(1) / torch.where(total > 0, total, torch.full_like(total, float("nan")))
        return self.nan_where_empty(inside, s)


@register_metric
class RelevanceMassAccuracy(_Localisation):
    """Share of the map's total relevance that falls on the object, ``Σ_mask a / Σ a`` (Arras et al., 2022,
    "CLEVR-XAI: a benchmark dataset for the ground truth evaluation of neural network explanations"; Quantus
    ``RelevanceMassAccuracy``, which does not clip negative values: a signed map can score outside [0, 1]).

    Args:
        abs: take the map's absolute value first (Quantus's default ``False``).
    """

    name = "relevance_mass_accuracy"
    higher_is_better = True

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = self.flat(maps, masks)
        a = a.double()
        return self.nan_where_empty((a * s).sum(1) / a.sum(1), s)


@register_metric
class RelevanceRankAccuracy(_Localisation):
    """Share of the ``K = |mask|`` highest-ranked pixels that lie on the object (Arras et al., 2022; Quantus
    ``RelevanceRankAccuracy``). Ties are broken by pixel order (a stable sort).

    Args:
        abs: take the map's absolute value first (Quantus's default ``False``).
    """

    name = "relevance_rank_accuracy"
    higher_is_better = True

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = self.flat(maps, masks)
        order = torch.sort(a, dim=1, descending=True, stable=True).indices
        k = s.sum(1, keepdim=True)
        top = torch.arange(a.shape[1], device=a.device)[None] < k
        hits = (s.gather(1, order) & top).sum(1).double()
        return self.nan_where_empty(hits / k[:, 0].clamp_min(1), s)


@register_metric
class TopKIntersection(_Localisation):
    """Share of the map's ``k`` highest-ranked pixels that lie on the object (Theiner et al., 2021,
    "Interpretable semantic photo geolocation"; Quantus ``TopKIntersection``). Ties are broken by pixel order.

    Args:
        k: how many pixels (Quantus's default 1000; a larger ``k`` than the map has pixels takes them all).
        concept_influence: divide by the object's share of the image (Quantus's ``concept_influence``).
        abs: take the map's absolute value first (Quantus's default ``False``).
    """

    name = "top_k_intersection"
    higher_is_better = True

    def __init__(self, k: int = 1000, concept_influence: bool = False, abs: bool = False) -> None:
        super().__init__(abs=abs)
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"top_k_intersection: k must be an integer ≥ 1, got {k!r}")
        self.k = int(k)
        self.concept_influence = bool(concept_influence)
        self._warned = False

    def __repr__(self) -> str:
        return f"TopKIntersection(k={self.k}, concept_influence={self.concept_influence}, abs={self.abs})"

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = self.flat(maps, masks)
        k = min(self.k, a.shape[1])
        if 2 * k > a.shape[1] and not self._warned:  # the score is then close to the object's share of the image
            self._warned = True
            scaled = max(1, round(1000 * a.shape[1] / (224 * 224)))
            warnings.warn(f"top_k_intersection: k={self.k} covers {k / a.shape[1]:.0%} of the map's {a.shape[1]} "
                          "pixels, so every map, a random one included, scores about the object's share of the "
                          f"image; set metric.top_k_intersection.k smaller (k={scaled} is Quantus's 1,000 of "
                          "224×224 scaled to this size)", stacklevel=2)
        order = torch.sort(a, dim=1, descending=True, stable=True).indices[:, :k]
        tki = s.gather(1, order).double().mean(1)
        if self.concept_influence:
            tki = tki * a.shape[1] / s.sum(1).clamp_min(1)
        return self.nan_where_empty(tki, s)


@register_metric
class AttributionLocalisation(_Localisation):
    """Share of the (absolute) relevance inside the object, ``Σ_mask a / (Σ a + 1e-9)`` (Kohlbrenner et al., 2020,
    "Towards best practice in explaining neural network decisions with LRP"; Quantus ``AttributionLocalisation``
    with its defaults: ``abs=True``, ``positive_attributions=False``, ``weighted=False``). A ratio above 1 (possible
    only for signed maps) is NaN, as in Quantus.

    Args:
        weighted: multiply by the object's share of the image (Quantus's ``weighted``; Quantus computes that share
            from a wrong slice of the batch, here it is ``|mask| / (H·W)``).
        positive_attributions: clip the map at 0 first.
        abs: take the map's absolute value (after clipping).
    """

    name = "attribution_localisation"
    higher_is_better = True

    def __init__(self, weighted: bool = False, positive_attributions: bool = False, abs: bool = True) -> None:
        super().__init__(abs=abs)
        self.weighted = bool(weighted)
        self.positive_attributions = bool(positive_attributions)

    def __repr__(self) -> str:
        return (f"AttributionLocalisation(weighted={self.weighted}, positive_attributions="
                f"{self.positive_attributions}, abs={self.abs})")

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = flat_map(maps).double(), masks.flatten(1).bool()
        if self.positive_attributions:
            a = a.clamp_min(0)
        if self.abs:
            a = a.abs()
        ratio = (a * s).sum(1) / (a.sum(1) + 1e-9)
        ratio = torch.where(ratio > 1, torch.full_like(ratio, float("nan")), ratio)
        if self.weighted:
            ratio = ratio * s.double().mean(1)
        return self.nan_where_empty(ratio, s)


@register_metric
class AUC(_Localisation):
    """ROC-AUC of the map as a score for "this pixel is on the object" (Fawcett, 2006; Quantus ``AUC``, which
    calls scikit-learn's ``roc_curve`` + ``auc``). Computed as the Mann–Whitney statistic over average ranks, so
    ties count one half, exactly as the ROC curve through tied scores. NaN where the mask is empty or full.

    Args:
        abs: take the map's absolute value first (Quantus's default ``False``).
    """

    name = "auc"
    higher_is_better = True

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a, s = self.flat(maps, masks)
        ranks = average_ranks(a)
        pos = s.sum(1).double()
        neg = s.shape[1] - pos
        u = (ranks * s).sum(1) - pos * (pos + 1) / 2
        auc = u / (pos * neg)
        return torch.where((pos > 0) & (neg > 0), auc, torch.full_like(auc, float("nan")))
