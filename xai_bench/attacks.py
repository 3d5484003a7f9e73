"""Gradient attacks in pixel space: FGSM and PGD (L∞ / L2), with cheap ε sweeps and per-ε summaries.

The shape follows torchattacks' template method without its magic: :class:`Attack.__call__` validates the inputs,
puts the model in eval mode, calls the subclass's :meth:`Attack.perturb` and restores every module's previous
train/eval flag in ``finally``. Models take N×C×H×W images in [0, 1] and normalise inside, so ε is in pixel units
(``8/255`` is eight grey levels). Adversarial images always stay inside the ε-ball *and* inside [0, 1].

Captum's ``captum.robust.FGSM`` / ``captum.robust.PGD`` are the reference behaviour (see ``tests/test_attacks.py``);
with ``loss_func=cross_entropy(reduction="none")`` and bounds [0, 1] they agree to float precision. The
differences: only an exactly-zero gradient component gives a zero step (Captum also leaves components with
``|g| ≤ 1e-6`` unperturbed), and our L2 PGD takes normalised-gradient steps (Madry et al.) where Captum takes sign
steps.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from xai_bench.utils import build

__all__ = ["FGSM", "LOSSES", "PGD", "Attack", "build_attack", "parse_eps", "summarize_sweep"]

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_EPS_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:/\s*({_NUMBER})\s*)?$")


def _ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    # Carlini–Wagner margin: best other logit minus the logit of y. Unlike CE it does not saturate once the
    # image is confidently (mis)classified, which keeps PGD steps informative.
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


@contextlib.contextmanager
def _eval_mode(model: Callable) -> Iterator[None]:
    """Eval mode for the duration; every submodule gets back its own flag (a frozen BatchNorm stays frozen)."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _as_labels(value: Any, n: int, device: torch.device, name: str) -> Tensor:
    t = torch.as_tensor(value, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match {n} images, got {tuple(t.shape)}")
    return t.long()


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
    """

    norm: str = "inf"

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
                 target_labels: Tensor | int | None = None) -> Tensor:
        """Adversarial versions of ``images``.

        Args:
            images: N×C×H×W float tensor in [0, 1].
            labels: N true class indices.
            eps: radius of the perturbation ball in pixel units (a float or a string like ``"8/255"``).
            target_labels: N class indices (or one int for all images); required iff the attack is targeted.

        Returns:
            N×C×H×W adversarial images with ``‖x_adv − x‖ ≤ eps`` (in the attack's norm) and values in [0, 1].
        """
        (eps_value,) = parse_eps(eps, norm=self.norm, name="eps")
        images, labels, target = self._check_inputs(images, labels, target_labels)
        with _eval_mode(self.model):
            if eps_value == 0:
                return images.detach().clone()
            return self.perturb(images, labels, eps_value, target).detach()

    def perturb(self, images: Tensor, labels: Tensor, eps: float, target_labels: Tensor | None) -> Tensor:
        """The algorithm itself; inputs are already validated and the model is in eval mode. Overridden."""
        raise NotImplementedError

    def sweep(self, images: Tensor, labels: Tensor, eps_list: Iterable[float | str],
              target_labels: Tensor | int | None = None, *, return_images: bool = False,
              progress: bool = False) -> dict[str, Any]:
        """Attack the batch at every ε and score the results, ready for :func:`summarize_sweep`.

        Args:
            images: N×C×H×W float tensor in [0, 1].
            labels: N true class indices.
            eps_list: E radii in pixel units (floats or strings like ``"8/255"``).
            target_labels: as in :meth:`__call__`.
            return_images: also return the E×N×C×H×W adversarial images (memory: E copies of the batch).
            progress: show a progress bar over ε.

        Returns:
            dict with ``eps`` (list of E floats), ``clean_logits`` (N×K), ``logits`` (E×N×K), ``preds`` (E×N),
            ``linf`` and ``l2`` (E×N per-image norms of δ), ``images`` (E×N×C×H×W or None), ``targeted`` and
            ``target_labels`` (N or None). All tensors are detached and on the input's device.
        """
        eps_values = parse_eps(eps_list, norm=self.norm, name="eps_list")
        images, labels, target = self._check_inputs(images, labels, target_labels)
        with _eval_mode(self.model):
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
                with torch.no_grad():
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
        }

    def _check_inputs(self, images: Tensor, labels: Any,
                      target_labels: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be an N×C×H×W tensor, got {shape}; add a batch dimension with "
                             f"images[None] for a single image")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}; "
                             f"convert uint8 images with images.float() / 255")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"images must lie in [0, 1] (got min {images.min().item():.4g}, max "
                             f"{images.max().item():.4g}); pass unnormalised pixels, the model normalises inside")
        n = images.shape[0]
        labels = _as_labels(labels, n, images.device, "labels")
        num_classes = getattr(self.model, "num_classes", None)
        if self.targeted:
            if target_labels is None:
                raise ValueError("this attack is targeted (targeted=True) but no target_labels were given; pass "
                                 "target_labels=<N class indices or one int> or set attack.target_class")
            target = _as_labels(target_labels, n, images.device, "target_labels")
        else:
            if target_labels is not None:
                raise ValueError("target_labels were given to an untargeted attack; build it with targeted=True "
                                 "(or set attack.target_class) or drop target_labels")
            target = None
        if isinstance(num_classes, int):
            for name, t in (("labels", labels), ("target_labels", target)):
                if t is not None and t.numel() and (t.min() < 0 or t.max() >= num_classes):
                    raise ValueError(f"{name} must lie in [0, {num_classes - 1}] for a model with {num_classes} "
                                     f"classes, got range [{t.min().item()}, {t.max().item()}]")
        return images.detach(), labels, target


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
        raise ValueError(f"attack.method built {type(attack).__name__}, not an xai_bench.attacks.Attack")
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


def summarize_sweep(sweep_result: Mapping[str, Any], labels: Tensor,
                    target_labels: Tensor | int | None = None) -> list[dict[str, float]]:
    """Per-ε robustness numbers from :meth:`Attack.sweep`.

    Args:
        sweep_result: the dict returned by ``sweep``.
        labels: N true class indices.
        target_labels: N target indices or one int (default: the ones stored in ``sweep_result``).

    Returns:
        One dict per ε with ``eps``, ``accuracy``, ``attack_success_rate`` (untargeted: fraction of the
        originally correct images that are now misclassified; targeted: fraction of the images whose true class is
        not the target that are now predicted as the target; NaN when that set is empty), ``mean_confidence``
        (softmax probability of the predicted class), ``mean_true_class_prob``, ``mean_target_class_prob``
        (targeted only) and ``linf_max``, ``linf_mean``, ``l2_max``, ``l2_mean`` of δ.
    """
    logits = sweep_result["logits"]
    n = logits.shape[1]
    labels = _as_labels(labels, n, logits.device, "labels")
    targeted = bool(sweep_result.get("targeted", False))
    if target_labels is None:
        target_labels = sweep_result.get("target_labels")
    if targeted and target_labels is None:
        raise ValueError("the sweep was targeted; pass target_labels to summarize_sweep")
    target = _as_labels(target_labels, n, logits.device, "target_labels") if targeted else None

    probs = logits.float().softmax(dim=-1)
    preds = sweep_result["preds"]
    clean_correct = sweep_result["clean_logits"].argmax(dim=-1) == labels
    attackable = (labels != target) if targeted else clean_correct
    success = (preds == target) if targeted else (preds != labels)
    success_rate = (success & attackable).sum(dim=1).float() / attackable.sum().float()  # 0/0 → NaN on purpose
    rows = []
    for i, eps in enumerate(sweep_result["eps"]):
        row = {
            "eps": float(eps),
            "n": n,
            "accuracy": (preds[i] == labels).float().mean().item(),
            "attack_success_rate": success_rate[i].item(),
            "mean_confidence": probs[i].amax(dim=-1).mean().item(),
            "mean_true_class_prob": probs[i].gather(1, labels[:, None]).mean().item(),
        }
        if targeted:
            row["mean_target_class_prob"] = probs[i].gather(1, target[:, None]).mean().item()
        linf, l2 = sweep_result["linf"][i], sweep_result["l2"][i]
        row.update(linf_max=linf.max().item(), linf_mean=linf.mean().item(),
                   l2_max=l2.max().item(), l2_mean=l2.mean().item())
        rows.append(row)
    return rows
