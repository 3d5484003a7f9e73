"""The template of the faithfulness metrics whose score summarises a per-image curve (deletion, insertion, pixel
flipping, region perturbation): the curves, their summary, and the curves kept for the run's figure."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.checks import as_class_indices, eval_mode
from xai_bench.metrics.explanation.base import ExplanationMetric


def _replace(images: Tensor, fill: Tensor, replaced: Callable[[Tensor, Tensor], Tensor]) -> Callable:
    """``make(n, s)`` for :func:`_perturb.perturbed_scores`: copy ``s`` of image ``n`` takes ``fill`` where
    ``replaced(n, s)`` (a ``B×P`` bool) is true."""
    h, w = images.shape[-2:]

    def make(n: Tensor, s: Tensor) -> Tensor:
        mask = replaced(n, s).view(-1, 1, h, w)
        return torch.where(mask, fill[n], images[n])

    return make


class _CurveMetric(ExplanationMetric):
    """A metric whose score summarises a per-image curve; :meth:`curves` returns the curves themselves, and
    :meth:`score_details` the scores with the curves they came from (one pass, for the run's curve figure).

    Subclasses implement :meth:`_curves` and :meth:`_summarise`; ``curve_xlabel`` names the x axis of the curve.
    """

    curve_xlabel: str = "step"
    score_label: str = "AUC"  # what the score is as a summary of the curve
    softmax: bool = True

    @property
    def curve_ylabel(self) -> str:
        """What the curve's y axis is (the target's softmax probability or its logit)."""
        return "target class probability" if self.softmax else "target class logit"

    def score(self, model, images, targets, maps, *, masks=None, explainer=None) -> Tensor:
        return self._summarise(*self._curves(model, images, targets, maps))

    def score_details(self, model, images, targets, maps, *, masks=None, explainer=None
                      ) -> tuple[Tensor, dict[str, Any]]:
        """Scores and ``curve`` (``N×T``), ``x`` (``T``), ``xlabel``, ``ylabel``, all on the CPU."""
        curve, x = self._curves(model, images, targets, maps)
        details = {"curve": curve.detach().float().cpu(), "x": x.detach().float().cpu(),
                   "xlabel": self.curve_xlabel, "ylabel": self.curve_ylabel, "score_label": self.score_label}
        return self._summarise(curve, x), details

    def _summarise(self, curve: Tensor, x: Tensor) -> Tensor:
        """The per-image score of curves ``N×T`` over ``x``."""
        raise NotImplementedError

    def curves(self, model: nn.Module, images: Tensor, targets: object, maps: Tensor) -> Tensor:
        """The per-image curves behind the score (``N×T``, float, on the CPU), e.g. for figures."""
        targets = as_class_indices(targets, images.shape[0], images.device, "targets")
        maps = maps.to(images.device, torch.float32)
        with eval_mode(model):
            return self._curves(model, images, targets, maps)[0].detach().float().cpu()

    def _curves(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor) -> tuple[Tensor, Tensor]:
        """``(curves N×T, x T)`` on the images' device."""
        raise NotImplementedError
