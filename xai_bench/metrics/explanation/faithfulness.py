"""Faithfulness metrics: does the model's output change the way the explanation says it should when the pixels it
ranks as relevant are removed (or inserted)?

All of them work per pixel: an ``N×C×H×W`` map is summed over its channels to one relevance per pixel, a removed pixel
loses all its channels at once and step sizes count pixels. (Quantus broadcasts an ``N×1×H×W`` map over the channels
and counts single channel values, ordering a pixel's tied channels arbitrarily; on one-channel images the two agree,
and on ``C`` channels our ``k`` pixels per step are its ``k·C`` features per step with ties kept together.)

Perturbed copies of all images × all steps are built in chunks on the images' device and scored by
:func:`~xai_bench.metrics.explanation.base.model_scores` in OOM-safe batches. Random draws (subsets, uniform fills,
random orders) come from a local generator seeded with ``seed`` and are shared by all images, so an image's score
does not depend on its batch-mates.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from xai_bench.checks import as_class_indices, eval_mode
from xai_bench.metrics.explanation import _perturb as P
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = ["Deletion", "Insertion"]


def _replace(images: Tensor, fill: Tensor, replaced: Callable[[Tensor, Tensor], Tensor]) -> Callable:
    """``make(n, s)`` for :func:`_perturb.perturbed_scores`: copy ``s`` of image ``n`` takes ``fill`` where
    ``replaced(n, s)`` (a ``B×P`` bool) is true."""
    h, w = images.shape[-2:]

    def make(n: Tensor, s: Tensor) -> Tensor:
        mask = replaced(n, s).view(-1, 1, h, w)
        return torch.where(mask, fill[n], images[n])

    return make


class _CurveMetric(ExplanationMetric):
    """A metric whose score summarises a per-image curve; :meth:`curves` returns the curves themselves."""

    def curves(self, model: nn.Module, images: Tensor, targets: object, maps: Tensor) -> Tensor:
        """The per-image curves behind the score (``N×T``, float, on the CPU), e.g. for figures."""
        targets = as_class_indices(targets, images.shape[0], images.device, "targets")
        maps = maps.to(images.device, torch.float32)
        with eval_mode(model):
            return self._curves(model, images, targets, maps)[0].detach().float().cpu()

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """``(curves N×T, x T)`` on the images' device."""
        raise NotImplementedError


@register_metric
class Deletion(_CurveMetric):
    """Deletion (Petsiuk et al. 2018, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC).

    Pixels are removed most-relevant-first, ``pixels_per_step`` at a time, until none is left; the score is the area
    under the target's softmax probability over the fraction of pixels removed (trapezoid rule on ``[0, 1]``, the
    unperturbed image included). A faithful map makes the probability fall fast: lower is better.

    Args:
        pixels_per_step: pixels removed per step. Default ``None``: 32 steps of ``H·W / 32`` pixels (rounded).
            (RISE used 224 pixels per step on 224×224 images, 224 steps.)
        substrate: what removed pixels become, one of ``zeros`` (RISE's deletion), ``black`` (each image's minimum),
            ``mean`` (each image's mean) or ``blur`` (the image blurred). Default: ``zeros``.
        blur_sigma: σ in pixels of the ``blur`` substrate (RISE: σ = 5 truncated to 11×11; here scipy's 4σ radius).
        softmax: score the target's probability (RISE) instead of its logit.

    The x axis is the true fraction removed, so a last, partial step counts for its share.
    """

    name = "deletion"
    category = "faithfulness"
    higher_is_better = False
    _insert = False

    def __init__(self, pixels_per_step: int | None = None, substrate: str = "zeros", blur_sigma: float = 5.0,
                 softmax: bool = True) -> None:
        self.pixels_per_step = P.check_int("pixels_per_step", pixels_per_step, allow_none=True)
        self.substrate = P.check_choice("substrate", substrate, P.SUBSTRATES)
        if not float(blur_sigma) > 0:
            raise ValueError(f"blur_sigma must be > 0, got {blur_sigma!r}")
        self.blur_sigma = float(blur_sigma)
        self.softmax = bool(softmax)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pixels_per_step={self.pixels_per_step}, substrate={self.substrate!r}, "
                f"softmax={self.softmax})")

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        n_pix = images.shape[-2] * images.shape[-1]
        if self.pixels_per_step is None:  # 32 steps of H·W/32 pixels, rounded
            n_steps = min(32, n_pix)
            counts = torch.linspace(0, n_pix, n_steps + 1, device=images.device).round().long()
        else:
            n_steps = math.ceil(n_pix / self.pixels_per_step)
            counts = (torch.arange(n_steps + 1, device=images.device) * self.pixels_per_step).clamp(max=n_pix)
        r = P.ranks(P.pixel_relevance(maps), descending=True)
        fill = P.substrate(images, self.substrate, blur_sigma=self.blur_sigma)
        if self._insert:  # start from the substrate; the ranked pixels come back
            images, fill = fill, images
        make = _replace(images, fill, lambda n, s: r[n] < counts[s, None])
        curve = P.perturbed_scores(model, images, targets, n_steps + 1, make, softmax=self.softmax)
        return curve, counts.float() / n_pix

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        curve, x = self._curves(model, images, targets, maps)
        return P.trapezoid(curve, x)


@register_metric
class Insertion(Deletion):
    """Insertion (Petsiuk et al. 2018, RISE): the mirror of :class:`Deletion`.

    Starting from the substrate (default: the image blurred, RISE's choice), pixels of the image are put back
    most-relevant-first; the score is the area under the target's probability over the fraction inserted. A faithful
    map makes it rise fast: higher is better. Same arguments as :class:`Deletion` (default ``substrate="blur"``).
    """

    name = "insertion"
    higher_is_better = True
    _insert = True

    def __init__(self, pixels_per_step: int | None = None, substrate: str = "blur", blur_sigma: float = 5.0,
                 softmax: bool = True) -> None:
        super().__init__(pixels_per_step, substrate, blur_sigma, softmax)
