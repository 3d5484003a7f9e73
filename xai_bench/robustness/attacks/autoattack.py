"""AutoAttack (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T and Square run in turn, each on the images that are still
classified correctly — the parameter-free ensemble that RobustBench reports.

PGD-10 with cross-entropy overestimates robustness (fixed step size, a saturating loss); AutoAttack's figure is the
one reviewers accept. The four attacks are not rewritten here: they come from ``torchattacks`` (3.5.1), a
maintained PyTorch port of the reference code. Why that package: the reference ``autoattack`` is not on PyPI (only a
git URL), and the Adversarial Robustness Toolbox (which installs with our pins) runs its AutoAttack through NumPy
estimator wrappers, a far larger dependency for the same four attacks. ``torchattacks`` pins ``requests~=2.25``,
which would downgrade what wandb needs, so it is installed without its dependencies (it needs only torch, numpy,
scipy and tqdm, which we have): ``pip install --no-deps torchattacks==3.5.1``. Its own ``AutoAttack`` class hard-codes
10 steps per attack, one tenth of the paper's 100, so the ensemble is assembled here from its parts with the paper's
settings as defaults and the same "attack only what is still robust" loop as the reference code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench.errors import ConfigError
from xai_bench.robustness.attacks.base import Attack, _normalise_norm

__all__ = ["AutoAttack"]

INSTALL = "pip install --no-deps torchattacks==3.5.1"
COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


def _torchattacks() -> Any:
    try:
        import torchattacks
    except ImportError as err:
        raise ConfigError(f"attack=autoattack needs the torchattacks package, which is not installed: {INSTALL} "
                          f"(--no-deps: its requests pin would break wandb)") from err
    return torchattacks


class _Logits(nn.Module):
    """torchattacks needs an ``nn.Module`` with parameters (it reads the device from them)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], device: torch.device) -> None:
        super().__init__()
        self.fn = fn
        self.anchor = nn.Parameter(torch.zeros(1, device=device), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


class AutoAttack(Attack):
    """AutoAttack, standard version: APGD-CE → APGD-T (DLR, targeted at the top other classes) → FAB-T → Square.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks", ICML 2020. An image counts as broken as soon as one attack fools the model; the others then skip it.

    Args:
        model: classifier mapping N×C×H×W images in [0, 1] to N×K logits.
        norm: ``"inf"`` or ``"2"``. Default ``"inf"``.
        attacks: which of ``apgd-ce``, ``apgd-t``, ``fab-t``, ``square`` run, in this order. Default all four.
        steps: iterations of APGD-CE, APGD-T and FAB-T (paper: 100). Default 100.
        n_queries: Square's query budget (paper: 5000). Default 5000.
        n_target_classes: target classes tried by APGD-T and FAB-T (paper: 9); capped at K − 1. Default 9.
        seed: seed of every component's random start. Default 0.
        targeted, loss: AutoAttack is untargeted and chooses its own losses; ``targeted=True`` is refused.
    """

    _nhwc_inputs = False  # torchattacks' FAB calls .view() on the images

    def __init__(self, model: Callable[[Tensor], Tensor], *, norm: str = "inf",
                 attacks: tuple[str, ...] | list[str] = COMPONENTS, steps: int = 100, n_queries: int = 5000,
                 n_target_classes: int = 9, seed: int = 0, targeted: bool = False, loss: str = "ce") -> None:
        if targeted:
            raise ConfigError("attack=autoattack is untargeted (its APGD-T and FAB-T pick their own target classes); "
                              "set attack.target_class=null, or use attack=pgd_linf for a targeted attack")
        super().__init__(model, targeted=False, loss=loss)
        self.norm = _normalise_norm(norm)
        unknown = [a for a in attacks if a not in COMPONENTS]
        if unknown or not attacks:
            raise ConfigError(f"attack.method.attacks={list(attacks)}: use a non-empty subset of {list(COMPONENTS)}")
        if int(steps) < 1 or int(n_queries) < 1 or int(n_target_classes) < 1:
            raise ConfigError("attack.method.steps, n_queries and n_target_classes must be >= 1")
        self.attacks = tuple(attacks)
        self.steps, self.n_queries, self.n_target_classes = int(steps), int(n_queries), int(n_target_classes)
        self.seed = int(seed)
        _torchattacks()  # a missing package fails when the attack is built, before any data is read

    def __repr__(self) -> str:
        return (f"AutoAttack(norm={self.norm!r}, attacks={list(self.attacks)}, steps={self.steps}, "
                f"n_queries={self.n_queries})")

    def _components(self, model: nn.Module, eps: float, num_classes: int) -> list[Any]:
        ta = _torchattacks()
        norm = "Linf" if self.norm == "inf" else "L2"
        # torchattacks' APGD-T/FAB-T try the n_classes − 1 classes after the true one, as the reference code's
        # n_target_classes does, so n_classes is set to n_target_classes + 1 (at most K).
        n_cls = min(num_classes, self.n_target_classes + 1)
        common = {"norm": norm, "eps": eps, "seed": self.seed}
        make = {
            "apgd-ce": lambda: ta.APGD(model, steps=self.steps, loss="ce", n_restarts=1, **common),
            "apgd-t": lambda: ta.APGDT(model, steps=self.steps, n_restarts=1, n_classes=n_cls, **common),
            "fab-t": lambda: ta.FAB(model, steps=self.steps, n_restarts=1, multi_targeted=True, n_classes=n_cls,
                                    **common),
            "square": lambda: ta.Square(model, n_queries=self.n_queries, n_restarts=1, **common),
        }
        return [make[name]() for name in self.attacks]

    def perturb(self, images: Tensor, labels: Tensor, eps: float, target_labels: Tensor | None) -> Tensor:
        if labels.dtype == torch.bool:  # reference sets: fine when each holds one class (a single-label dataset)
            if not bool((labels.sum(1) == 1).all()):
                raise ConfigError("attack=autoattack takes one correct class per image, but some images accept "
                                  "several (reference sets): its APGD-T and FAB-T target single classes; use "
                                  "attack=pgd_linf with attack.method.loss=margin for these images")
            labels = labels.float().argmax(1)
        model = self.model if isinstance(self.model, nn.Module) and any(True for _ in self.model.parameters()) \
            else _Logits(self.model, images.device)
        with torch.no_grad():
            logits = model(images)
        robust = logits.argmax(1) == labels
        adv = images.clone()
        for attack in self._components(model, eps, int(logits.shape[1])):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            x_adv = attack(images[idx], labels[idx]).detach()
            x_adv = self._project(images[idx], x_adv, eps)
            with torch.no_grad():
                fooled = model(x_adv).argmax(1) != labels[idx]
            adv[idx[fooled]] = x_adv[fooled]
            robust[idx[fooled]] = False
        return adv

    def _project(self, images: Tensor, x: Tensor, eps: float) -> Tensor:
        """Into the ε-ball and [0, 1] (the components stay inside up to rounding; the contract is exact)."""
        delta = x - images
        if self.norm == "inf":
            delta = delta.clamp(-eps, eps)
        else:
            norms = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            delta = delta * (eps / norms.clamp_min(1e-12)).clamp(max=1.0)
        return (images + delta).clamp(0, 1)
