"""Complexity metrics (Quantus's ``complexity`` category): how concentrated a map is, from the map alone.

Every metric here reads only the maps (``needs_model = False``). A map with several channels is first summed over
its channels (one value per pixel). As in Quantus, each map is divided by its largest absolute value
(``normalise=True``) and then taken in absolute value (``abs=True``) before scoring; Quantus divides by the largest
value of the whole batch, we divide per image so that a score does not depend on the batch (the only metric where
this changes anything is :class:`EffectiveComplexity`, whose threshold is absolute).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from xai_bench.metrics.explanation._stats import flat_map, normalise_by_max
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = ["Complexity", "EffectiveComplexity", "Sparseness"]


class _MapOnly(ExplanationMetric):
    category = "complexity"
    needs_model = False

    def __init__(self, abs: bool = True, normalise: bool = True) -> None:
        self.abs = bool(abs)
        self.normalise = bool(normalise)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(abs={self.abs}, normalise={self.normalise})"

    def prepare(self, maps: Tensor) -> Tensor:
        """``N×(H·W)`` rows: channels summed, then normalised by the max and/or made absolute, as configured."""
        a = flat_map(maps)
        if self.normalise:
            a = normalise_by_max(a)
        return a.abs() if self.abs else a


@register_metric
class Sparseness(_MapOnly):
    """Gini index of the map's values (Chalasani et al., 2020, "Concise explanations of neural networks using
    adversarial training"; Quantus ``Sparseness``): 0 for a constant map, towards 1 when one pixel holds all.

    ``G = Σ_i (2i − D − 1) a_(i) / (D Σ_i a_(i))`` over the ``D`` pixel values sorted ascending, with Quantus's
    ``1e-7`` added to every value (so an all-zero map scores 0, not NaN).

    Args:
        abs: take absolute values (Quantus's default ``True``; the Gini index is meant for non-negative values).
        normalise: divide each map by its largest absolute value first.
    """

    name = "sparseness"
    higher_is_better = True

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a = torch.sort(self.prepare(maps).double() + 1e-7, dim=1).values
        d = a.shape[1]
        i = torch.arange(1, d + 1, dtype=a.dtype, device=a.device)
        return ((2 * i - d - 1) * a).sum(1) / (d * a.sum(1))


@register_metric
class Complexity(_MapOnly):
    """Entropy of the map's normalised absolute values (Bhatt et al., 2020, "Evaluating and aggregating
    feature-based model explanations"; Quantus ``Complexity``): ``−Σ p_i log p_i`` with ``p = |a| / Σ|a|``;
    0 when one pixel holds all, ``log D`` for a constant map. Lower is better. An all-zero map gives NaN.

    Args:
        abs: take absolute values first (Quantus's default ``True``).
        normalise: divide each map by its largest absolute value first (no effect on the score).
    """

    name = "complexity"
    higher_is_better = False

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        a = self.prepare(maps).double()
        p = a / a.abs().sum(1, keepdim=True)
        return -(p * torch.log(p + 1e-12)).sum(1)


@register_metric
class EffectiveComplexity(_MapOnly):
    """Number of pixels whose (normalised, absolute) value exceeds ``eps`` (Nguyen & Martínez, 2020, "On
    quantitative aspects of model interpretability"; Quantus ``EffectiveComplexity``). Lower is better.

    Args:
        eps: the threshold on the normalised map (Quantus's default ``1e-5``), in ``[0, 1)``.
        abs: take absolute values first (Quantus's default ``True``).
        normalise: divide each map by its largest absolute value first, so ``eps`` is a fraction of the peak.
    """

    name = "effective_complexity"
    higher_is_better = False

    def __init__(self, eps: float = 1e-5, abs: bool = True, normalise: bool = True) -> None:
        super().__init__(abs=abs, normalise=normalise)
        if not eps >= 0:
            raise ValueError(f"effective_complexity: eps must be ≥ 0, got {eps!r}")
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"EffectiveComplexity(eps={self.eps}, abs={self.abs}, normalise={self.normalise})"

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        return (self.prepare(maps) > self.eps).sum(1).float()
