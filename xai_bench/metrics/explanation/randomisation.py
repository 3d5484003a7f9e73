"""Randomisation metrics (Quantus's ``randomisation`` category): does the map change when the thing it should
depend on — the model's weights, the explained class — is randomised? A map that stays the same explains the
image, not the model. Lower scores are better.

Both re-explain (``needs_explainer = True``) and need to explain a *different* model or class than the original,
so the explainer must accept ``explainer(images, targets, model=None)``: ``model=None`` explains the original model,
a module explains that module (a randomised copy) instead. Maps with several channels are summed over channels.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.metrics.explanation._stats import flat_map, normalise_by_max, spearman, ssim
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric

__all__ = ["ModelParameterRandomisation", "RandomLogit", "randomisable_layers"]

LAYER_ORDERS = ("top_down", "bottom_up", "independent")


def randomisable_layers(model: nn.Module, patterns: Sequence[str] | None = None) -> list[str]:
    """Names of the modules Quantus randomises — those with a ``reset_parameters`` method (convolutions, linear
    and normalisation layers) — in forward-definition order, optionally only those matching glob ``patterns``."""
    names = [name for name, m in model.named_modules() if name and hasattr(m, "reset_parameters")]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return names


def _reset(module: nn.Module, seed: int | None) -> None:
    """Re-initialise one module's parameters with torch's own initialiser, seeded without touching the caller's
    global RNG state."""
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        module.reset_parameters()


@register_metric
class ModelParameterRandomisation(ExplanationMetric):
    """Model parameter randomisation test (Adebayo et al., 2018, "Sanity checks for saliency maps"; Quantus
    ``MPRT`` / ``ModelParameterRandomisation``): re-initialise the model's layers one by one and score the Spearman
    rank correlation between the original map and the map of the randomised model.

    Layers are the modules with ``reset_parameters`` (as in Quantus). ``top_down`` (default, the paper's cascading
    test) randomises from the output layer down, each step keeping the layers already randomised; ``bottom_up`` the
    same from the input; ``independent`` randomises one layer at a time on a fresh copy. Each layer is
    re-initialised with the global RNG seeded to ``seed + 1`` (as Quantus), inside a forked RNG state. The model
    itself is never modified (a deep copy is randomised).

    The score per image is the mean over layers (Quantus's ``return_average_correlation=True``; Quantus's average
    also counts the original-vs-recomputed similarity through a key mismatch, ours does not). As in Quantus
    (``abs=True``), both maps are taken in absolute value first. :meth:`layer_scores` gives the per-layer
    correlations (``N×L``) and the layer names, :meth:`details` also the maps after each step, for the cascading
    figure. A constant map scores NaN. A method whose mean correlation after the last cascading step (the fully
    randomised model) stays above ``insensitive_above`` is :meth:`insensitive` to the model's parameters (Adebayo
    et al. found Guided Backprop so); the explain task flags it in its tables and logs a warning.

    Args:
        layer_order: ``top_down`` | ``bottom_up`` | ``independent``.
        layers: glob patterns of module names to randomise (``None``: all that have ``reset_parameters``).
        abs: compare absolute maps (Quantus's default ``True``).
        seed: seed of the re-initialisation (``None``: unseeded).
        insensitive_above: the final-step Spearman above which a method is flagged insensitive (``None``: never).
    """

    name = "model_parameter_randomisation"
    category = "randomisation"
    higher_is_better = False
    needs_model = True
    needs_explainer = True

    def __init__(self, layer_order: str = "top_down", layers: Sequence[str] | None = None, abs: bool = True,
                 seed: int | None = 0, insensitive_above: float | None = 0.5) -> None:
        if layer_order not in LAYER_ORDERS:
            raise ValueError(f"{self.name}: layer_order must be one of {LAYER_ORDERS}, got {layer_order!r}")
        if insensitive_above is not None and (isinstance(insensitive_above, bool)
                                              or not -1 <= float(insensitive_above) <= 1):
            raise ValueError(f"{self.name}: insensitive_above must be a Spearman correlation in [-1, 1] or null, "
                             f"got {insensitive_above!r}")
        self.insensitive_above = None if insensitive_above is None else float(insensitive_above)
        if isinstance(layers, str):
            layers = [layers]
        self.layer_order = layer_order
        self.layers = list(layers) if layers else None
        self.abs = bool(abs)
        self.seed = None if seed is None else int(seed)

    def __repr__(self) -> str:
        return (f"ModelParameterRandomisation(layer_order={self.layer_order!r}, layers={self.layers}, "
                f"abs={self.abs}, seed={self.seed}, insensitive_above={self.insensitive_above})")

    def _prepare(self, maps: Tensor) -> Tensor:
        a = flat_map(maps)
        return a.abs() if self.abs else a

    def layer_scores(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor,
                     explainer: Callable[..., Tensor]) -> tuple[Tensor, list[str]]:
        """Spearman correlation of the original map with the map after each randomisation step.

        Args:
            model: the original model (left unchanged).
            images, targets, maps: as for :meth:`score`.
            explainer: ``explainer(images, targets, model=<module>) -> maps``.

        Returns:
            ``(scores N×L, layer names)``, layers in the order they were randomised.
        """
        d = self.details(model, images, targets, maps, explainer=explainer, keep_maps=0)
        return d["spearman"].to(maps.device), d["layers"]

    def details(self, model: nn.Module, images: Tensor, targets: Tensor, maps: Tensor, *,
                explainer: Callable[..., Tensor], keep_maps: int = 1) -> dict[str, Any]:
        """Everything the randomisation steps produce, for the cascading figure, in one pass.

        Args:
            model: the original model (left unchanged).
            images, targets, maps: as for :meth:`score`.
            explainer: ``explainer(images, targets, model=<module>) -> maps``.
            keep_maps: keep the randomised maps of the first ``keep_maps`` images (0: none).

        Returns:
            ``layers`` (names, in the order they were randomised), ``spearman`` (``N×L`` on the CPU: column ``l``
            compares the original map with the map after step ``l``), ``maps`` (``L×keep_maps×1×H×W`` channel-summed
            maps after each step, on the CPU, signed as the explainer gave them), ``cumulative`` (whether step
            ``l`` keeps the layers randomised before it, i.e. the last step is the fully randomised model) and
            ``order`` (:attr:`layer_order`).
        """
        names = randomisable_layers(model, self.layers)
        if not names:
            raise ValueError(f"{self.name}: the model has no layer with reset_parameters"
                             + (f" matching {self.layers}" if self.layers else ""))
        if self.layer_order != "bottom_up":
            names = names[::-1]
        original = self._prepare(maps)
        seed = None if self.seed is None else self.seed + 1
        randomised = copy.deepcopy(model)
        pristine = copy.deepcopy(randomised.state_dict()) if self.layer_order == "independent" else None
        modules = dict(randomised.named_modules())
        columns, kept = [], []
        for name in names:
            if pristine is not None:
                randomised.load_state_dict(pristine)
            _reset(modules[name], seed)
            new = explainer(images, targets, model=randomised).to(original.device, torch.float32)
            columns.append(spearman(original, self._prepare(new)))
            if keep_maps > 0:
                kept.append(new[:keep_maps].sum(1, keepdim=True).detach().cpu())
        h, w = maps.shape[-2:]
        return {"layers": names, "spearman": torch.stack(columns, 1).detach().float().cpu(),
                "maps": torch.stack(kept) if kept else torch.zeros(len(names), 0, 1, h, w),
                "cumulative": self.layer_order != "independent", "order": self.layer_order}

    def insensitive(self, final_spearman: float) -> bool:
        """Whether a method whose mean Spearman after the last cascading step is ``final_spearman`` is insensitive
        to the model's parameters (above :attr:`insensitive_above`; never for ``independent`` order, which has no
        fully randomised step, nor for NaN)."""
        return (self.layer_order != "independent" and self.insensitive_above is not None
                and not math.isnan(final_spearman) and final_spearman > self.insensitive_above)

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        scores, _ = self.layer_scores(model, images, targets, maps, explainer)
        return scores.mean(1)

    def score_details(self, model, images, targets, maps, *, masks=None, explainer=None
                      ) -> tuple[Tensor, dict[str, Any]]:
        """Scores and :meth:`details` (the maps of the first image), one pass."""
        d = self.details(model, images, targets, maps, explainer=explainer, keep_maps=1)
        return d["spearman"].mean(1), d


@register_metric
class RandomLogit(ExplanationMetric):
    """Random logit test (Sixt et al., 2020, "When explanations lie: why many modified BP attributions fail";
    Quantus ``RandomLogit``): SSIM between the map for the target class and the map for a random other class,
    drawn uniformly with a local generator. Lower is better (the map depends on the class).

    As Quantus (``normalise=True``, ``abs=False``, ``similarity_func=ssim``), each map is divided by its largest
    absolute value (per image; Quantus divides by the batch's) and SSIM uses ``skimage``'s defaults with a data range
    of ``max − min`` over the pair. The other classes are drawn in batch order, so with more than two classes an
    image's score depends on its position in the batch (as in Quantus); with two the other class is fixed.

    Args:
        num_classes: the model's class count (``None``: read from one forward pass).
        win_size: the SSIM window side (odd, ≤ the map's side; Quantus / skimage: 7).
        abs: compare absolute maps (Quantus's default ``False``).
        seed: seed of the class draw (``None``: unseeded).
    """

    name = "random_logit"
    category = "randomisation"
    higher_is_better = False
    needs_model = True
    needs_explainer = True

    def __init__(self, num_classes: int | None = None, win_size: int = 7, abs: bool = False,
                 seed: int | None = 0) -> None:
        if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 2):
            raise ValueError(f"{self.name}: num_classes must be ≥ 2 (or null to read it off the model), "
                             f"got {num_classes!r}")
        if isinstance(win_size, bool) or int(win_size) != win_size or win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"{self.name}: win_size must be an odd integer ≥ 3, got {win_size!r}")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.win_size = int(win_size)
        self.abs = bool(abs)
        self.seed = None if seed is None else int(seed)

    def __repr__(self) -> str:
        return (f"RandomLogit(num_classes={self.num_classes}, win_size={self.win_size}, abs={self.abs}, "
                f"seed={self.seed})")

    def other_classes(self, targets: Tensor, num_classes: int) -> Tensor:
        """A uniformly drawn class ≠ target per image."""
        g = torch.Generator()
        if self.seed is not None:
            g.manual_seed(self.seed)
        else:
            g.seed()
        draw = torch.randint(0, num_classes - 1, (targets.shape[0],), generator=g).to(targets.device)
        return draw + (draw >= targets).long()

    def _prepare(self, maps: Tensor, hw: tuple[int, int]) -> Tensor:
        a = normalise_by_max(flat_map(maps))
        return (a.abs() if self.abs else a).view(-1, *hw)

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        num_classes = self.num_classes
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(images[:1]).shape[-1])
        if num_classes < 2:
            raise ValueError(f"{self.name} needs a model with at least 2 classes, got {num_classes}")
        hw = tuple(maps.shape[-2:])
        if self.win_size > min(hw):
            raise ValueError(f"{self.name}: win_size={self.win_size} exceeds the map's side {hw}; lower win_size")
        off = self.other_classes(targets, num_classes)
        other = explainer(images, off).to(maps.device, torch.float32)
        return ssim(self._prepare(maps, hw), self._prepare(other, hw), win_size=self.win_size)
