"""The explanation-metric template: facts on the class (Quantus style), one batched call returning a score per image.

A metric is one class + one YAML (``conf/metric/<name>.yaml``, package ``metric.<name>``). The class declares what it
is as class attributes — ``name``, ``category``, ``higher_is_better`` and what it needs — and implements
:meth:`ExplanationMetric.score` over a whole batch: images ``N×C×H×W`` in [0, 1], targets ``N``, maps ``N×1×H×W`` (or
``N×C×H×W``), optional ground-truth masks ``N×1×H×W`` and, for metrics that re-explain, the explainer. Perturbed
copies are built on the model's device and pushed through the model in chunks sized by the shared out-of-memory-
halving batcher (:func:`model_scores`), never one image or one perturbation per forward pass.

Why not Quantus: its metrics loop over instances and perturbations in NumPy (its users report 45+ minutes for one
pixel-flipping run); these are the same definitions as tensor code, checked against it in ``benchmarks/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.accel import channels_last_weights, fast_forward
from xai_bench.batching import AdaptiveBatcher, default_batch_size
from xai_bench.checks import as_class_indices, check_images, eval_mode
from xai_bench.registry import Registry

__all__ = ["CATEGORIES", "METRICS", "ExplanationMetric", "model_scores", "register_metric"]

CATEGORIES = ("faithfulness", "robustness", "complexity", "localisation", "randomisation", "stability")

METRICS: Registry[type] = Registry("explanation metric")


def register_metric(cls: type) -> type:
    """Class decorator: add a metric to :data:`METRICS` under its ``name``."""
    if cls.category not in CATEGORIES:
        raise ValueError(f"{cls.__name__}.category={cls.category!r} is not one of {CATEGORIES}")
    METRICS.register(cls.name)(cls)
    return cls


class ExplanationMetric:
    """Base class. Subclasses set the facts below and implement :meth:`score`; settings go to the constructor.

    Attributes:
        name: the metric's key in tables (and its YAML file name).
        category: one of :data:`CATEGORIES` (the ranking takes a median rank per category).
        higher_is_better: the direction of a better explanation.
        needs_model: scores come from the model's outputs on perturbed inputs.
        needs_masks: needs ground-truth object masks (localisation).
        needs_explainer: re-runs the explainer (robustness, randomisation, stability).
    """

    name: str = ""
    category: str = ""
    higher_is_better: bool = True
    needs_model: bool = True
    needs_masks: bool = False
    needs_explainer: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __call__(self, model: nn.Module | None, images: Tensor, targets: Any, maps: Tensor, *,
                 masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        """Check the inputs against the contract, then score. Returns a float ``Tensor[N]`` on the CPU."""
        return self.evaluate(model, images, targets, maps, masks=masks, explainer=explainer)[0]

    def evaluate(self, model: nn.Module | None, images: Tensor, targets: Any, maps: Tensor, *,
                 masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None
                 ) -> tuple[Tensor, dict[str, Any]]:
        """As :meth:`__call__`, and also the material behind the scores that :meth:`score_details` keeps (curves,
        per-layer correlations, maps) for figures, computed in the same pass.

        Returns:
            ``(scores Tensor[N] on the CPU, details)``; ``details`` is ``{}`` for most metrics.
        """
        check_images(images, "images")
        n = images.shape[0]
        targets = as_class_indices(targets, n, images.device, "targets")
        if maps.ndim != 4 or maps.shape[0] != n or maps.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{self.name}: maps must be N×1×H×W or N×C×H×W matching images {tuple(images.shape)}, "
                             f"got {tuple(maps.shape)}")
        maps = maps.to(images.device, torch.float32)
        if self.needs_masks:
            if masks is None:
                raise ValueError(f"{self.name} needs ground-truth masks (a dataset with masks, e.g. synthetic_shapes, "
                                 f"or dataset.masks=<folder>)")
            masks = masks.to(images.device)
            if masks.shape[0] != n or masks.shape[-2:] != images.shape[-2:]:
                raise ValueError(f"{self.name}: masks must be N×1×H×W matching images, got {tuple(masks.shape)}")
            masks = masks.reshape(n, -1, *masks.shape[-2:]).amax(1, keepdim=True).bool()
        if self.needs_model and model is None:
            raise ValueError(f"{self.name} needs the model")
        if self.needs_explainer and explainer is None:
            raise ValueError(f"{self.name} re-explains perturbed inputs and needs the explainer")
        # NHWC weights once for the whole metric, so that its many model_scores calls need not convert each time
        with eval_mode(model), channels_last_weights(model):
            out, details = self.score_details(model, images, targets, maps, masks=masks, explainer=explainer)
        out = out.detach().float().cpu()
        if out.shape != (n,):
            raise RuntimeError(f"{self.name}.score returned shape {tuple(out.shape)}, expected ({n},)")
        return out, details

    def score_details(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
                      masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None
                      ) -> tuple[Tensor, dict[str, Any]]:
        """:meth:`score` and what it computed on the way that a figure can use (CPU tensors, names). Metrics
        whose score summarises a curve or a sequence of steps override this; the default has no details."""
        return self.score(model, images, targets, maps, masks=masks, explainer=explainer), {}

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        """One score per image (``Tensor[N]``). ``maps`` are float32 on the images' device."""
        raise NotImplementedError


def model_scores(model: nn.Module, batch: Tensor, targets: Tensor, *, softmax: bool = False,
                 batch_size: int | None = None) -> Tensor:
    """The model's target score for every image of ``batch`` (``B×C×H×W``, targets ``B``), in OOM-safe chunks.

    Args:
        model: the classifier (images in [0, 1], logits out).
        batch: the (perturbed) images, on any device; chunks move to the model's device.
        targets: one class per image.
        softmax: return the target's probability instead of its logit.
        batch_size: first chunk size (default: :func:`xai_bench.batching.default_batch_size`).

    Returns:
        ``Tensor[B]`` on ``batch``'s device.
    """
    device = next((p.device for p in model.parameters()), batch.device)
    size = batch_size or default_batch_size(model, tuple(batch.shape[1:]), device)
    batcher = AdaptiveBatcher(size, device=device)

    def run(s: slice) -> Tensor:
        out = model(batch[s].to(device)).float()
        if softmax:
            out = out.softmax(-1)
        return out.gather(1, targets[s].to(device).view(-1, 1)).squeeze(1)

    with fast_forward(model, device):  # forward passes only: inference mode, channels_last weights (undone on exit)
        scores = batcher(run, batch.shape[0])
    return scores.clone().to(batch.device)  # a normal tensor again (callers may update it in place)
