"""The shared checks kit: one definition of each input contract the library enforces.

Every public function that takes images, class targets, reference sets or a model's train/eval flag goes through
these, so an error message (and what counts as valid) is the same wherever a user meets it. Messages name the
argument or config field and say how to fix it.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["accept_matrix", "as_class_indices", "check_images", "check_limit", "check_number", "eval_mode",
           "safe_name", "target_indices"]


def check_images(x: Any, name: str = "images", *, check_range: bool = True, allow_empty: bool = True) -> Tensor:
    """Check the canonical image layout: a float ``N×C×H×W`` tensor with values in [0, 1] (NaN refused).

    Args:
        x: the images.
        name: what the caller calls them, for the error message.
        check_range: also check the values lie in [0, 1] (one reduction over the batch).
        allow_empty: accept ``N = 0``.

    Returns:
        ``x`` unchanged.
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape N×C×H×W; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must be an N×C×H×W tensor (4 dims); got shape {tuple(x.shape)}. "
                         "Add a batch dimension with x.unsqueeze(0) (or images[None]) for a single image.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1]; got dtype {x.dtype}. "
                         "Convert uint8 images with x.float() / 255.")
    if x.numel() == 0:
        if not allow_empty:
            raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
        return x
    if check_range:
        lo, hi = (float(v) for v in torch.aminmax(x.detach()))
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise ValueError(f"{name} must hold values in [0, 1]; got min={lo:.4g}, max={hi:.4g}. "
                             "Pass un-normalised pixels: models normalise inside.")
    return x


def as_class_indices(value: Any, n: int, device: torch.device | str | None = None, name: str = "target", *,
                     num_classes: int | None = None) -> Tensor:
    """Class indices as a ``LongTensor[n]``: one int (or 0-d / 1-element tensor) for all, or one per example.

    Args:
        value: an int, a sequence of ints, or an integer tensor.
        n: the number of examples.
        device: where the result lives.
        name: what the caller calls it, for the error message.
        num_classes: when given, every index must lie in ``[0, num_classes)``.
    """
    t = torch.as_tensor(value, device=device)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    if t.numel() == 1:
        t = t.reshape(()).expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} has {t.numel()} entries (shape {tuple(t.shape)}) but there are {n} examples; pass "
                         f"one int for all or one index per example")
    if num_classes is not None and t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = int(t[(t < 0) | (t >= num_classes)][0])
        raise ValueError(f"{name} id {bad} is out of range for a model with num_classes={num_classes}: {name} must "
                         f"lie in [0, {num_classes - 1}], got range [{int(t.min())}, {int(t.max())}]")
    return t.long()


def target_indices(forward_func: Callable[[Tensor], Tensor] | None, inputs: Tensor, target: object,
                   logits: Tensor | None = None) -> Tensor:
    """Captum-style ``target`` as a ``LongTensor[N]`` on ``inputs.device``.

    Args:
        forward_func: the model; only called when ``target`` is ``None`` and ``logits`` is not given.
        inputs: Tensor[N, ...].
        target: ``None`` (argmax of the model's output on ``inputs``), an int or 0-d/1-element tensor (same class for
            every input), or a list/1-D tensor of N ints.
        logits: the model's output on ``inputs`` if already computed.
    """
    n = inputs.shape[0]
    if target is None:
        if logits is None:
            with torch.no_grad():
                logits = forward_func(inputs)  # type: ignore[misc]
        if logits.dim() != 2:
            raise ValueError(f"target=None needs N×K model outputs to take the argmax of, got {tuple(logits.shape)}")
        return logits.argmax(dim=1)
    if isinstance(target, tuple):
        raise ValueError("tuple targets (for outputs with more than 2 dims) are not supported; pass an int, a list "
                         "of N ints or a 1-D tensor")
    return as_class_indices(target, n, inputs.device, "target")


def accept_matrix(labels: Tensor, num_classes: int, accept: Tensor | None = None, *,
                  device: torch.device | str | None = None) -> Tensor:
    """``Bool[N, K]``: the classes that count as correct for each image.

    The image's reference set when the dataset gives one (``accept``, e.g. all five ImageNet cat classes), else the
    one-hot of its label; unlabelled images (label < 0) accept nothing. ``num_classes`` is always the model's class
    count, never inferred from the batch.
    """
    device = device if device is not None else labels.device
    labels = labels.to(device)
    if accept is not None:
        accept = accept.to(device).bool()
        if accept.ndim != 2 or accept.shape[0] != labels.shape[0]:
            raise ValueError(f"reference sets must be Bool[N, K] with N={labels.shape[0]}, got {tuple(accept.shape)}")
        if accept.shape[1] != num_classes:
            raise ValueError(f"the dataset's reference sets have {accept.shape[1]} classes but the model outputs "
                             f"{num_classes}; pick a matching model or dataset")
        return accept
    out = torch.zeros(labels.shape[0], num_classes, dtype=torch.bool, device=device)
    known = (labels >= 0) & (labels < num_classes)
    out[known.nonzero().squeeze(1), labels[known]] = True
    return out


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """Eval mode for the duration; every submodule gets back its own flag afterwards (a frozen BatchNorm stays frozen).

    Anything that is not an ``nn.Module`` (a plain function) passes through untouched.
    """
    if not isinstance(model, nn.Module):
        yield model
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None) -> float:
    """A finite real number (bools refused), optionally within ``[lo, hi]``; returned as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must be in {rng}; got {value!r}")
    return float(value)


def check_limit(name: str, value: Any) -> int | None:
    """A cap on a count such as ``max_images``: ``None`` means no cap, else a positive integer.

    0 and negative numbers are refused rather than read as "all" (``if cfg.max_images:`` used to take 0 for no cap,
    and -1 failed deep inside ``torch.cat``).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, or null for no limit; got {value!r}")
    return value


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: Any, repl: str = "_") -> str:
    """A file-name-safe form of ``text``: runs of characters outside ``[A-Za-z0-9._-]`` become ``repl``."""
    out = _UNSAFE.sub(repl, str(text)).strip(repl)
    return out or repl
