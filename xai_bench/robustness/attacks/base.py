"""The attack template and its helpers: :class:`Attack`, the losses, ε parsing and :func:`build_attack`.

The shape follows torchattacks' template method without its magic: :class:`Attack.__call__` validates the inputs,
puts the model in eval mode, calls the subclass's :meth:`Attack.perturb` and restores every module's previous
train/eval flag in ``finally``. Models take N×C×H×W images in [0, 1] and normalise inside, so ε is in pixel units
(``8/255`` is eight grey levels). Adversarial images always stay inside the ε-ball *and* inside [0, 1].

Captum's ``captum.robust.FGSM`` / ``captum.robust.PGD`` are the reference behaviour (see ``tests/test_attacks.py``);
with ``loss_func=cross_entropy(reduction="none")`` and bounds [0, 1] they agree to float precision. The
differences: only an exactly-zero gradient component gives a zero step (Captum also leaves components with
``|g| ≤ 1e-6`` unperturbed), and our L2 PGD takes normalised-gradient steps (Madry et al.) where Captum takes sign
steps. Per-ε summaries of :meth:`Attack.sweep` are in :mod:`xai_bench.robustness.sweeps`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from xai_bench.accel import channels_last_weights
from xai_bench.checks import as_class_indices, check_images, eval_mode
from xai_bench.utils import build

__all__ = ["LOSSES", "Attack", "build_attack", "parse_eps"]

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_EPS_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:/\s*({_NUMBER})\s*)?$")


def _ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    if y.dtype == torch.bool:  # a reference set: -log Σ_{c∈A} p_c, the probability of any accepted class
        return logits.logsumexp(1) - logits.masked_fill(~y, float("-inf")).logsumexp(1)
    return F.cross_entropy(logits, y, reduction="none")


def _margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    # Carlini–Wagner margin: best other logit minus the logit of y. Unlike CE it does not saturate once the
    # image is confidently (mis)classified, which keeps PGD steps informative.
    if y.dtype == torch.bool:  # a reference set: best rejected logit minus best accepted logit
        true = logits.masked_fill(~y, float("-inf")).amax(dim=1)
        other = logits.masked_fill(y, float("-inf")).amax(dim=1)
        return torch.where(y.all(1), torch.zeros_like(true), other - true)  # all accepted: nothing to attack
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return other - true


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"ce": _ce_loss, "margin": _margin_loss}


def _normalise_norm(norm: Any) -> str:
    key = str(norm).strip().lower().lstrip("l")
    if key in ("inf", "infinity"):
        return "inf"
    if key == "2":
        return "2"
    raise ValueError(f"norm={norm!r} is not supported; use norm='inf' (L∞) or norm='2' (L2)")


def parse_eps(values: Any, *, norm: str = "inf", name: str = "attack.eps") -> list[float]:
    """Parse a list of ε values (pixel units) as written in configs or on the Hydra command line.

    YAML and Hydra pass ``0.5/255`` as the string ``"0.5/255"``; this accepts floats, ints and such ``"a/b"``
    strings, a single value or any iterable of them (lists, tuples, OmegaConf ``ListConfig``).

    Args:
        values: one value or an iterable of values, e.g. ``[0, "0.5/255", 8/255]``.
        norm: ``"inf"`` (values must lie in [0, 1]) or ``"2"`` (values must be ≥ 0).
        name: what to call the parameter in error messages.

    Returns:
        The ε values as Python floats, in the given order.
    """
    norm = _normalise_norm(norm)
    if isinstance(values, (str, int, float)) or (isinstance(values, Tensor) and values.ndim == 0):
        values = [values]
    out: list[float] = []
    for v in values:
        if isinstance(v, bool):
            raise ValueError(f"{name} contains the boolean {v!r}; give numbers such as 0, 0.01 or '8/255'")
        if isinstance(v, str):
            m = _EPS_RE.match(v)
            if m is None:
                raise ValueError(f"{name} contains {v!r}, which is not a number or a fraction like '8/255'")
            num, den = float(m.group(1)), float(m.group(2)) if m.group(2) is not None else 1.0
            if den == 0:
                raise ValueError(f"{name} contains {v!r}, a division by zero")
            eps = num / den
        else:
            try:
                eps = float(v)
            except (TypeError, ValueError):
                raise ValueError(f"{name} contains {v!r}, which is not a number or a fraction like '8/255'") from None
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"{name} contains {v!r} = {eps}; ε must be a finite number ≥ 0")
        if norm == "inf" and eps > 1:
            raise ValueError(f"{name} contains {v!r} = {eps}; an L∞ ε is in pixel units and must lie in [0, 1] "
                             f"(did you mean {v}/255?)")
        out.append(eps)
    return out


def _nhwc_weights(model: Any) -> bool:
    """Whether the first 4-D weight of ``model`` is channels_last (as :func:`channels_last_weights` leaves it)."""
    if not isinstance(model, torch.nn.Module):
        return False
    for p in model.parameters():
        if p.ndim == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _delta_norms(delta: Tensor) -> tuple[Tensor, Tensor]:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1), flat.norm(dim=1)


class Attack:
    """Base class of gradient attacks on an image classifier (template method).

    Subclasses implement :meth:`perturb`; :meth:`__call__` and :meth:`sweep` do the checks and the mode handling.

    Args:
        model: any module or callable mapping N×C×H×W images in [0, 1] to N×K logits.
        targeted: if True, minimise the loss towards ``target_labels`` instead of maximising it for ``labels``.
        loss: ``"ce"`` (cross-entropy on logits, summed over the batch so each image's step is independent of the
            batch) or ``"margin"`` (Carlini–Wagner logit margin). Default: ``"ce"``.

    Reference sets: when an image has several correct classes (``accept``, e.g. the five ImageNet cat classes — the
    same sets accuracy is scored with, :func:`xai_bench.checks.accept_matrix`), an untargeted attack works against
    the whole set: the CE loss is ``-log Σ_{c∈A} p_c`` and the margin is the best rejected logit minus the best
    accepted one. Pushing a tabby towards "tiger cat" then gains the attack nothing, just as it costs no accuracy,
    so the attack and the accuracy it is scored by agree.
    """

    norm: str = "inf"
    # Whether sweep() may hand the attack channels_last images (when the weights are NHWC): False for attacks whose
    # code calls .view() on the images (torchattacks' FAB inside AutoAttack).
    _nhwc_inputs: bool = True

    def __init__(self, model: Callable[[Tensor], Tensor], *, targeted: bool = False, loss: str = "ce") -> None:
        if not callable(model):
            raise ValueError(f"model must be a module or callable mapping images to logits, got {type(model)}")
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not supported; choose one of {sorted(LOSSES)}")
        self.model = model
        self.targeted = bool(targeted)
        self.loss = loss
        self._loss_fn = LOSSES[loss]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(targeted={self.targeted}, loss={self.loss!r}, norm={self.norm!r})"

    # -- public API ---------------------------------------------------------------------------------------------
    def __call__(self, images: Tensor, labels: Tensor, eps: float | str, *,
                 target_labels: Tensor | int | None = None, accept: Tensor | None = None) -> Tensor:
        """Adversarial versions of ``images``.

        Args:
            images: N×C×H×W float tensor in [0, 1].
            labels: N true class indices.
            eps: radius of the perturbation ball in pixel units (a float or a string like ``"8/255"``).
            target_labels: N class indices (or one int for all images); required iff the attack is targeted.
            accept: optional ``Bool[N, K]`` reference sets, the classes that count as correct; an untargeted attack
                then pushes the image out of its whole set (images with an empty set: away from ``labels``).
                Ignored by targeted attacks.

        Returns:
            N×C×H×W adversarial images with ``‖x_adv − x‖ ≤ eps`` (in the attack's norm) and values in [0, 1].
        """
        (eps_value,) = parse_eps(eps, norm=self.norm, name="eps")
        images, labels, target = self._check_inputs(images, labels, target_labels, accept)
        with eval_mode(self.model), channels_last_weights(self.model, images.device):  # NHWC: faster, same values
            if eps_value == 0:
                return images.detach().clone()
            return self.perturb(images, labels, eps_value, target).detach()

    def perturb(self, images: Tensor, labels: Tensor, eps: float, target_labels: Tensor | None) -> Tensor:
        """The algorithm itself; inputs are already validated and the model is in eval mode. Overridden.

        ``labels`` is what the untargeted loss works against: N class indices, or ``Bool[N, K]`` reference sets when
        the caller gave ``accept``. Pass it on to :meth:`_input_grad` unchanged.
        """
        raise NotImplementedError

    def sweep(self, images: Tensor, labels: Tensor, eps_list: Iterable[float | str],
              target_labels: Tensor | int | None = None, *, accept: Tensor | None = None,
              return_images: bool = False, progress: bool = False) -> dict[str, Any]:
        """Attack the batch at every ε and score the results (per-ε rows: :mod:`xai_bench.robustness.sweeps`).

        Args:
            images: N×C×H×W float tensor in [0, 1].
            labels: N true class indices.
            eps_list: E radii in pixel units (floats or strings like ``"8/255"``).
            target_labels: as in :meth:`__call__`.
            accept: ``Bool[N, K]`` reference sets, as in :meth:`__call__`; pass the sets the sweep is scored with.
            return_images: also return the E×N×C×H×W adversarial images (memory: E copies of the batch).
            progress: show a progress bar over ε.

        Returns:
            dict with ``eps`` (list of E floats), ``clean_logits`` (N×K), ``logits`` (E×N×K), ``preds`` (E×N),
            ``linf`` and ``l2`` (E×N per-image norms of δ), ``images`` (E×N×C×H×W or None), ``targeted``,
            ``target_labels`` (N or None) and ``norm``. All tensors are detached and on the input's device.
        """
        eps_values = parse_eps(eps_list, norm=self.norm, name="eps_list")
        images, labels, target = self._check_inputs(images, labels, target_labels, accept)
        with eval_mode(self.model), channels_last_weights(self.model, images.device):  # NHWC: faster, same values
            if self._nhwc_inputs and images.ndim == 4 and _nhwc_weights(self.model):  # no layout copy per forward
                images = images.contiguous(memory_format=torch.channels_last)
            clean_logits, adversary = self._sweep_setup(images, labels, target)
            return self._collect(images, clean_logits, eps_values, adversary, target, return_images, progress)

    # -- helpers for subclasses ---------------------------------------------------------------------------------
    def _input_grad(self, x: Tensor, labels: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """Gradient of the signed objective (ascend for untargeted, descend for targeted) and the logits at ``x``."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            y = target if self.targeted else labels
            loss = self._loss_fn(logits, y).sum()
            (grad,) = torch.autograd.grad(loss, x)
        # The sign turns "minimise the loss towards the target" into the same ascent step as the untargeted case.
        return (-grad if self.targeted else grad), logits.detach()

    def _sweep_setup(self, images: Tensor, labels: Tensor,
                     target: Tensor | None) -> tuple[Tensor, Callable[[float], Tensor]]:
        with torch.no_grad():
            clean_logits = self.model(images)
        return clean_logits, lambda eps: self.perturb(images, labels, eps, target)

    def _collect(self, images: Tensor, clean_logits: Tensor, eps_values: Sequence[float],
                 adversary: Callable[[float], Tensor], target: Tensor | None, return_images: bool,
                 progress: bool) -> dict[str, Any]:
        logits, linf, l2, advs = [], [], [], []
        for eps in tqdm(eps_values, desc=f"{type(self).__name__} ε sweep", disable=not progress, leave=False):
            if eps == 0:
                adv, out = images, clean_logits  # ε = 0 is the clean batch: no attack, no forward
            else:
                adv = adversary(eps).detach()
                # Scoring needs no graph: inference mode also skips what no_grad still does per op (version
                # counters, max-pool indices), ~30 % of a small CNN's forward. The logits come out as inference
                # tensors: read-only outside, which is all the sweep's callers do with them.
                with torch.inference_mode():
                    out = self.model(adv)
            a, b = _delta_norms(adv - images)
            logits.append(out.detach())
            linf.append(a)
            l2.append(b)
            if return_images:
                advs.append(adv)
        stacked = torch.stack(logits) if logits else clean_logits.new_empty((0, *clean_logits.shape))
        return {
            "eps": list(eps_values),
            "clean_logits": clean_logits.detach(),
            "logits": stacked,
            "preds": stacked.argmax(dim=-1),
            "linf": torch.stack(linf) if linf else images.new_empty((0, len(images))),
            "l2": torch.stack(l2) if l2 else images.new_empty((0, len(images))),
            "images": (torch.stack(advs) if advs else images.new_empty((0, *images.shape))) if return_images else None,
            "targeted": self.targeted,
            "target_labels": target,
            "norm": self.norm,
        }

    def _check_inputs(self, images: Tensor, labels: Any, target_labels: Any,
                      accept: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        check_images(images, "images")
        n = images.shape[0]
        num_classes = getattr(self.model, "num_classes", None)
        num_classes = num_classes if isinstance(num_classes, int) else None
        labels = as_class_indices(labels, n, images.device, "labels", num_classes=num_classes)
        if self.targeted:
            if target_labels is None:
                raise ValueError("this attack is targeted (targeted=True) but no target_labels were given; pass "
                                 "target_labels=<N class indices or one int> or set attack.target_class")
            target = as_class_indices(target_labels, n, images.device, "target_labels", num_classes=num_classes)
        else:
            if target_labels is not None:
                raise ValueError("target_labels were given to an untargeted attack; build it with targeted=True "
                                 "(or set attack.target_class) or drop target_labels")
            target = None
            if accept is not None:
                labels = self._reference_sets(accept, labels, num_classes)
        return images.detach(), labels, target

    @staticmethod
    def _reference_sets(accept: Tensor, labels: Tensor, num_classes: int | None) -> Tensor:
        """``Bool[N, K]`` sets for the loss; an image with an empty set (unlabelled) is attacked away from its label."""
        accept = torch.as_tensor(accept, device=labels.device)
        n = labels.shape[0]
        if accept.dtype != torch.bool or accept.ndim != 2 or accept.shape[0] != n:
            raise ValueError(f"accept must be Bool[N, K] reference sets with N={n}; got dtype {accept.dtype}, "
                             f"shape {tuple(accept.shape)}")
        if num_classes is not None and accept.shape[1] != num_classes:
            raise ValueError(f"accept has {accept.shape[1]} classes but the model outputs {num_classes}")
        if labels.numel() and int(labels.max()) >= accept.shape[1]:
            raise ValueError(f"labels reach class {int(labels.max())} but accept has only {accept.shape[1]} classes")
        sets = accept.clone()
        empty = ~sets.any(1)
        sets[empty.nonzero().squeeze(1), labels[empty]] = True
        return sets


def build_attack(cfg: Mapping[str, Any], model: Callable[[Tensor], Tensor]) -> tuple[Attack, list[float]]:
    """Build the attack and its ε list from a ``conf/attack/*.yaml`` node.

    Schema: ``method`` (a ``_partial_`` ``_target_`` node taking the model), ``eps`` (list of floats or ``"a/b"``
    strings), ``target_class`` (``null`` or an int: a targeted attack towards that class for every image, which
    forces ``targeted=True``), ``save_examples`` (read by the task).

    Args:
        cfg: the ``attack`` config node (DictConfig or dict).
        model: the classifier to attack.

    Returns:
        ``(attack, eps_list)``; pass ``target_labels=cfg.target_class`` to the attack when it is targeted.
    """
    for key in ("method", "eps"):
        if key not in cfg:
            raise ValueError(f"attack config has no {key!r}; see conf/attack/fgsm.yaml for the schema")
    target_class = cfg.get("target_class")
    factory = build(cfg["method"])
    attack = factory(model, targeted=True) if target_class is not None else factory(model)
    if not isinstance(attack, Attack):
        raise ValueError(f"attack.method built {type(attack).__name__}, not an xai_bench.robustness.attacks.Attack")
    if attack.targeted and target_class is None:
        raise ValueError("attack.method.targeted is true but attack.target_class is null; "
                         "set attack.target_class=<class index>")
    if target_class is not None:
        num_classes = getattr(model, "num_classes", None)
        if isinstance(target_class, bool) or not isinstance(target_class, int) or target_class < 0 or (
                isinstance(num_classes, int) and target_class >= num_classes):
            raise ValueError(f"attack.target_class={target_class!r} must be a class index in "
                             f"[0, {num_classes - 1 if isinstance(num_classes, int) else 'K-1'}]")
    return attack, parse_eps(cfg["eps"], norm=attack.norm, name="attack.eps")
