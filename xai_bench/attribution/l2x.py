"""L2X (Chen et al. 2018) as an attribution method: once its explainer network is trained (``python train.py
task=l2x``, :mod:`xai_bench.tasks.l2x`), explaining is a single forward pass of its selector.

The map is the selector's distribution over patches (softmax of its patch scores), constant on each patch: the
patches L2X would keep for the image are the ``k`` brightest. L2X explains the model's *prediction* as a whole
(the selector never sees a class), so ``target`` is accepted and ignored, like the reference maps do.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xai_bench.attribution.base import AttributionMethod
from xai_bench.checks import check_images
from xai_bench.errors import ConfigError
from xai_bench.models.l2x import load_l2x

__all__ = ["L2X"]


class L2X(AttributionMethod):
    """Patch-selection explanations from a trained L2X explainer.

    Args:
        forward_func: the explained model (only checked against the explainer: same input size and classes).
        path: the ``best/`` folder of a ``train.py task=l2x`` run.
    """

    forward_only = True

    def __init__(self, forward_func: nn.Module, path: str | None = None) -> None:
        super().__init__(forward_func)
        if not path:
            raise ConfigError("attribution.l2x.method.path is not set: train an explainer with python train.py "
                              "task=l2x model=checkpoint model.path=<run>/best, then pass "
                              "attribution.l2x.method.path=<that run>/best")
        self.explainer = load_l2x(path)
        size = getattr(forward_func, "input_size", None)
        if size is not None and tuple(size) != tuple(self.explainer.input_size):
            raise ConfigError(f"attribution.l2x.method.path={path} was trained on "
                              f"{'×'.join(map(str, self.explainer.input_size))} images but the model takes "
                              f"{'×'.join(map(str, size))}")
        self.path = str(path)

    @torch.no_grad()
    def attribute(self, inputs: Tensor, target: Any = None) -> Tensor:
        """N×1×H×W: each pixel carries its patch's selection probability (the patches sum to 1)."""
        check_images(inputs, "inputs", check_range=False)
        explainer = self.explainer.to(inputs.device).eval()
        net = explainer.net
        x = (inputs - explainer.mean) / explainer.std
        probs = net.scores(x).float().softmax(1).view(-1, 1, net.grid, net.grid)
        return F.interpolate(probs, scale_factor=net.patch_size, mode="nearest")
