"""FGSM (Goodfellow et al. 2015): one signed-gradient step, with an ε sweep that costs one backward per batch."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from xai_bench.robustness.attacks.base import Attack

__all__ = ["FGSM"]


class FGSM(Attack):
    """Fast Gradient Sign Method: ``x_adv = clip[0,1](x + ε · sign(∇ₓ L(x, y)))`` (minus, towards t, if targeted).

    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.

    Because the step direction does not depend on ε, :meth:`sweep` computes the input gradient once per batch and
    only re-scores per ε: one forward+backward plus one forward per non-zero ε.

    Args:
        model: module or callable mapping N×C×H×W images in [0, 1] to N×K logits.
        targeted: attack towards ``target_labels``. Default: False.
        loss: ``"ce"`` or ``"margin"``. Default: ``"ce"``.
    """

    norm = "inf"

    def perturb(self, images: Tensor, labels: Tensor, eps: float, target_labels: Tensor | None) -> Tensor:
        grad, _ = self._input_grad(images, labels, target_labels)
        return self._step(images, grad, eps)

    @staticmethod
    def _step(images: Tensor, grad: Tensor, eps: float) -> Tensor:
        return (images + eps * grad.sign()).clamp_(0, 1)

    def _sweep_setup(self, images: Tensor, labels: Tensor,
                     target: Tensor | None) -> tuple[Tensor, Callable[[float], Tensor]]:
        grad, clean_logits = self._input_grad(images, labels, target)
        direction = grad.sign()
        return clean_logits, lambda eps: (images + eps * direction).clamp_(0, 1)
