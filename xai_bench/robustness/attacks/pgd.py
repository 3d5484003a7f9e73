"""PGD (Madry et al. 2018): iterated gradient steps projected onto the L∞ or L2 ε-ball and into [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from xai_bench.robustness.attacks.base import Attack, _normalise_norm

__all__ = ["PGD"]


class PGD(Attack):
    """Projected Gradient Descent: iterated gradient steps, each projected back onto the ε-ball and into [0, 1].

    Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.

    L∞ steps are ``α · sign(∇)``; L2 steps are ``α · ∇ / ‖∇‖₂`` per image, and the L2 projection rescales δ to
    norm ε when it is longer. A random start is uniform in the ε-ball (L2: uniform in volume).

    Args:
        model: module or callable mapping N×C×H×W images in [0, 1] to N×K logits.
        norm: ``"inf"`` or ``"2"`` (``"Linf"``, ``"L2"`` and ``2`` are accepted too). Default: ``"inf"``.
        steps: number of gradient steps. Default: 10.
        step_size: α in pixel units; ``None`` means ``2.5 · ε / steps`` (Madry et al.). Default: None.
        random_start: start from a uniform random point in the ball. Default: True.
        targeted: attack towards ``target_labels``. Default: False.
        loss: ``"ce"`` or ``"margin"``. Default: ``"ce"``.
        seed: seeds the random start (a fresh generator per call, so repeated calls agree); ``None`` uses torch's
            global generator. Default: None.
    """

    def __init__(self, model: Callable[[Tensor], Tensor], *, norm: str = "inf", steps: int = 10,
                 step_size: float | None = None, random_start: bool = True, targeted: bool = False,
                 loss: str = "ce", seed: int | None = None) -> None:
        super().__init__(model, targeted=targeted, loss=loss)
        self.norm = _normalise_norm(norm)
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps={steps!r} must be a positive integer")
        if step_size is not None and not (float(step_size) > 0):
            raise ValueError(f"step_size={step_size!r} must be > 0, or None for 2.5·eps/steps")
        self.steps = int(steps)
        self.step_size = None if step_size is None else float(step_size)
        self.random_start = bool(random_start)
        self.seed = seed

    def __repr__(self) -> str:
        return (f"PGD(norm={self.norm!r}, steps={self.steps}, step_size={self.step_size}, "
                f"random_start={self.random_start}, targeted={self.targeted}, loss={self.loss!r})")

    def perturb(self, images: Tensor, labels: Tensor, eps: float, target_labels: Tensor | None) -> Tensor:
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        x = self._random_start(images, eps) if self.random_start else images.clone()
        for _ in range(self.steps):
            grad, _ = self._input_grad(x, labels, target_labels)
            if self.norm == "inf":
                x = x + alpha * grad.sign()
            else:
                x = x + alpha * grad / _per_image_l2(grad).clamp_min(1e-12)
            x = self._project(images, x, eps)
        return x

    def _project(self, images: Tensor, x: Tensor, eps: float) -> Tensor:
        delta = x - images
        if self.norm == "inf":
            delta = delta.clamp(-eps, eps)
        else:
            delta = delta * (eps / _per_image_l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        # Clipping into [0, 1] only shrinks each |δᵢ|, so the result stays inside the ball.
        return (images + delta).clamp_(0, 1).detach()

    def _random_start(self, images: Tensor, eps: float) -> Tensor:
        gen = None
        if self.seed is not None:
            gen = torch.Generator(device=images.device).manual_seed(int(self.seed))
        if self.norm == "inf":
            u = torch.rand(images.shape, generator=gen, device=images.device, dtype=images.dtype)
            delta = (2 * u - 1) * eps
        else:
            direction = torch.randn(images.shape, generator=gen, device=images.device, dtype=images.dtype)
            direction = direction / _per_image_l2(direction).clamp_min(1e-12)
            d = images[0].numel()
            r = torch.rand((len(images), 1, 1, 1), generator=gen, device=images.device, dtype=images.dtype)
            delta = direction * eps * r ** (1.0 / d)  # r^(1/d): uniform in volume, not crowded at the centre
        return self._project(images, images + delta, eps)


def _per_image_l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))
