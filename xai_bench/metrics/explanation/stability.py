"""Stability of explanations under adversarial attacks and image corruptions (higher is better).

No metric library measures this directly; the idea follows Ghorbani, Abid & Zou, "Interpretation of Neural Networks
is Fragile", AAAI 2019 (rank correlation and top-k intersection between the maps of an image and of a slightly
perturbed copy) and Dombrowski et al., "Explanations can be manipulated and geometry is to blame", NeurIPS 2019
(SSIM between maps). Each metric perturbs the whole batch once (an attack from :mod:`xai_bench.robustness.attacks`
or a corruption from :mod:`xai_bench.robustness.corruptions`), re-explains all perturbed images in one explainer
call with the same targets, and compares the maps image by image:

- ``score`` — the Spearman rank correlation between the given (clean) map and the perturbed map (ties: average
  ranks; NaN when either map is constant);
- ``details`` — also the IoU of their top-``k`` pixels, the SSIM of the two maps each min-max scaled to [0, 1], and
  whether the model's prediction changed (``flipped``): the raw material of stability-versus-ε curves;
- ``sweep`` — ``details`` at each perturbation strength of the metric's ``curve_eps`` / ``curve_severities``
  setting (its YAML), for the explain task's stability curves.

Maps are compared as given (signed); multi-channel maps are summed over channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from xai_bench.checks import as_class_indices, check_images, check_number, eval_mode
from xai_bench.metrics.explanation._reexplain import explain_batch, forward_outputs, per_pixel
from xai_bench.metrics.explanation._similarity import minmax_normalise, spearman, ssim, topk_iou
from xai_bench.metrics.explanation.base import ExplanationMetric, register_metric
from xai_bench.robustness.attacks import FGSM, PGD, Attack, parse_eps
from xai_bench.robustness.corruptions import CORRUPTIONS, MAX_SEVERITY, corrupt

__all__ = ["AttackStability", "CorruptionStability"]

ATTACKS = ("fgsm", "pgd")


class _PerturbationStability(ExplanationMetric):
    """Template: :meth:`perturb` the batch once, re-explain it, compare the maps (see the module docstring)."""

    category = "stability"
    higher_is_better = True
    needs_model = True
    needs_explainer = True
    level_name: str = "level"  # the attribute that sets the perturbation's strength (eps, severity)
    level_label: str = "perturbation strength"  # its axis label
    curve_levels: list[float] = []

    def __init__(self, k: float) -> None:
        self.k = check_number("k", k, lo=0, hi=1)
        if self.k == 0:
            raise ValueError("k must be a fraction in (0, 1] (the share of pixels in the top-k sets), got 0")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def perturb(self, model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        """The perturbed batch (``N×C×H×W`` in [0, 1]). Overridden."""
        raise NotImplementedError

    def at_level(self, level: float) -> _PerturbationStability:
        """A copy of this metric perturbing at strength ``level`` (its ``eps`` or ``severity``)."""
        other = copy.copy(self)
        setattr(other, self.level_name, level)
        return other

    def sweep(self, model: nn.Module, images: Tensor, targets: object, maps: Tensor, *,
              explainer: Callable[..., Tensor], levels: Sequence[float] | None = None
              ) -> list[tuple[float, dict[str, Tensor]]]:
        """:meth:`details` at each strength of ``levels`` (default: the metric's ``curve_levels``), in order:
        ``[(level, details), …]``, the points of a stability-versus-strength curve."""
        levels = self.curve_levels if levels is None else list(levels)
        return [(lv, self.at_level(lv).details(model, images, targets, maps, explainer=explainer))
                for lv in levels]

    def score(self, model: nn.Module | None, images: Tensor, targets: Tensor, maps: Tensor, *,
              masks: Tensor | None = None, explainer: Callable[..., Tensor] | None = None) -> Tensor:
        assert model is not None and explainer is not None
        if images.shape[0] == 0:
            return images.new_zeros(0)
        adv = self.perturb(model, images, targets)
        return spearman(per_pixel(maps), explain_batch(explainer, adv, targets, self.name))

    def details(self, model: nn.Module, images: Tensor, targets: object, maps: Tensor, *,
                explainer: Callable[..., Tensor]) -> dict[str, Tensor]:
        """Per-image comparisons of the clean and perturbed maps, all ``Tensor[N]`` on the CPU.

        Args:
            model: the classifier (images in [0, 1], logits out).
            images: ``N×C×H×W`` in [0, 1].
            targets: the explained classes (one int or ``N``); the attack pushes away from them.
            maps: the clean maps ``N×1×H×W`` (or ``N×C×H×W``, summed over channels).
            explainer: ``explainer(images, targets) -> N×1×H×W``.

        Returns:
            ``spearman`` (rank correlation, float), ``topk_iou`` (IoU of the top ``k`` fraction of pixels, float),
            ``ssim`` (SSIM of the min-max scaled maps, float) and ``flipped`` (bool: the predicted class changed).
        """
        check_images(images, "images")
        n = images.shape[0]
        targets = as_class_indices(targets, n, images.device, "targets")
        if maps.ndim != 4 or maps.shape[0] != n or maps.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"{self.name}: maps must be N×1×H×W or N×C×H×W matching images {tuple(images.shape)}, "
                             f"got {tuple(maps.shape)}")
        e = per_pixel(maps.to(images.device, torch.float32))
        with eval_mode(model):
            adv = self.perturb(model, images, targets)
            e_adv = explain_batch(explainer, adv, targets, self.name)
            logits, _ = forward_outputs(model, torch.cat([images, adv]))
        pred = logits.argmax(1)
        out = {
            "spearman": spearman(e, e_adv),
            "topk_iou": topk_iou(e, e_adv, self.k),
            "ssim": ssim(minmax_normalise(e), minmax_normalise(e_adv), data_range=1.0),
            "flipped": pred[:n] != pred[n:],
        }
        return {key: v.detach().cpu() for key, v in out.items()}


@register_metric
class AttackStability(_PerturbationStability):
    """Spearman rank correlation between an image's map and the map of its adversarial version (FGSM or PGD).

    The attack (:mod:`xai_bench.robustness.attacks`) is untargeted against the explained class, in L∞ with radius
    ``eps`` in pixel units; :meth:`details` adds top-k IoU, SSIM and whether the prediction flipped. Higher is
    better (1: the ranking of pixels is unchanged).

    Args:
        attack: ``"fgsm"`` (Goodfellow et al. 2015) or ``"pgd"`` (Madry et al. 2018). Default: ``"fgsm"``.
        eps: L∞ radius, a number or a string such as ``"2/255"``. Default: 2/255.
        steps: PGD steps. Default: 10.
        step_size: PGD step; ``None``: ``2.5 · eps / steps``. Default: None.
        random_start: PGD starts from a random point of the ball. Default: False, so that an image's score does
            not depend on its batch-mates (the random start is drawn for the whole batch).
        loss: ``"ce"`` or ``"margin"``. Default: ``"ce"``.
        k: fraction of pixels in the top-k sets of :meth:`details`. Default: 0.1.
        seed: seeds PGD's random start. Default: 0.
        curve_eps: the radii of :meth:`sweep` (the explain task's stability-versus-ε curves), numbers or strings
            such as ``"8/255"``; ``None`` or empty: no curve. Default: None.
    """

    name = "attack_stability"
    level_name = "eps"
    level_label = "ε (L∞, pixel units ×255)"

    def __init__(self, attack: str = "fgsm", eps: float | str = 2 / 255, steps: int = 10,
                 step_size: float | None = None, random_start: bool = False, loss: str = "ce", k: float = 0.1,
                 seed: int | None = 0, curve_eps: Sequence[float | str] | None = None) -> None:
        super().__init__(k)
        if attack not in ATTACKS:
            raise ValueError(f"attack={attack!r} is not supported; choose one of {list(ATTACKS)}")
        self.attack = attack
        (self.eps,) = parse_eps(eps, name="eps")
        self.curve_levels = sorted(parse_eps(curve_eps, name="curve_eps")) if curve_eps else []
        self.steps, self.step_size, self.random_start, self.loss, self.seed = steps, step_size, random_start, loss, seed
        self._build(nn.Identity())  # validate the attack settings now, not on the first batch

    def _build(self, model: nn.Module) -> Attack:
        if self.attack == "fgsm":
            return FGSM(model, loss=self.loss)
        return PGD(model, steps=self.steps, step_size=self.step_size, random_start=self.random_start,
                   loss=self.loss, seed=self.seed)

    def perturb(self, model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        return self._build(model)(images, targets, self.eps)


@register_metric
class CorruptionStability(_PerturbationStability):
    """Spearman rank correlation between an image's map and the map of its corrupted version (ImageNet-C).

    The corruption is one of :func:`xai_bench.robustness.corruptions.list_corruptions` (Hendrycks & Dietterich
    2019) at ``severity``; :meth:`details` adds top-k IoU, SSIM and whether the prediction flipped. Higher is
    better. Random corruptions (noise, …) are seeded but drawn for the whole batch, so an image's corruption depends
    on its position in the batch; deterministic ones (blur, contrast, …) do not.

    Args:
        corruption: registered corruption name. Default: ``"gaussian_noise"``.
        severity: 0–5 (0: none). Default: 3.
        k: fraction of pixels in the top-k sets of :meth:`details`. Default: 0.1.
        seed: seeds random corruptions (``None``: torch's global generator). Default: 0.
        curve_severities: the severities of :meth:`sweep` (the explain task's stability-versus-severity curves);
            ``None`` or empty: no curve. Default: None.
    """

    name = "corruption_stability"
    level_name = "severity"

    def __init__(self, corruption: str = "gaussian_noise", severity: int = 3, k: float = 0.1,
                 seed: int | None = 0, curve_severities: Sequence[int] | None = None) -> None:
        super().__init__(k)
        CORRUPTIONS.get(corruption)  # unknown names raise with the close matches
        for s in [severity, *(curve_severities or [])]:
            if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEVERITY:
                raise ValueError(f"severity and curve_severities must be integers in [0, {MAX_SEVERITY}], "
                                 f"got {s!r}")
        self.corruption, self.severity, self.seed = corruption, severity, seed
        self.curve_levels = sorted(set(curve_severities or []))

    @property
    def level_label(self) -> str:  # type: ignore[override]
        return f"{self.corruption} severity"

    def perturb(self, model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        return corrupt(images, self.corruption, self.severity, seed=self.seed)
