"""Private kernels of the faithfulness metrics: pixel relevance and ranks, substrates, batched perturbed scoring,
the trapezoid AUC and row-wise correlations.

Every perturbed copy is described by a flat index ``i = n·S + s`` (image ``n``, variant ``s`` of ``S``); a metric hands
:func:`perturbed_scores` a ``make(n, s)`` that builds the copies of a chunk of indices, so all images × all variants
go through :func:`~xai_bench.metrics.explanation.base.model_scores` as one stream of big batches without ever holding
all copies in memory. Could be shared with other families (robustness, randomisation) if they need it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from xai_bench.metrics.explanation._stats import spearman
from xai_bench.metrics.explanation.base import model_scores
from xai_bench.ops import gaussian_filter

__all__ = [
    "SUBSTRATES",
    "check_choice",
    "check_int",
    "generator",
    "pearson",
    "perturbed_scores",
    "pixel_relevance",
    "ranks",
    "spearman",
    "substrate",
    "trapezoid",
]

# what a removed pixel becomes; "black"/"mean" are Quantus's per-image min / mean over all channels and pixels
SUBSTRATES = ("zeros", "black", "mean", "blur")

# about 256 MB of float32 perturbed images are built at a time (model_scores splits them further, OOM-safe)
_CHUNK_VALUES = 2**26


def check_int(name: str, value: object, lo: int = 1, *, allow_none: bool = False) -> int | None:
    """``value`` as an int ≥ ``lo`` (or ``None`` when allowed), else a ValueError naming the argument."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}{' or None' if allow_none else ''}, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming the argument."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return str(value)


def generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (``None``: a fresh random seed)."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(int(seed))
    return g


def pixel_relevance(maps: Tensor, *, absolute: bool = False) -> Tensor:
    """One value per pixel, ``N×(H·W)``: the map summed over its channels (optionally of ``|map|``)."""
    m = maps.abs() if absolute else maps
    return m.sum(1).flatten(1)


def ranks(values: Tensor, *, descending: bool = True) -> Tensor:
    """``N×P`` rank of every entry (0 = first in the order); ties keep index order (a stable sort)."""
    order = values.argsort(dim=1, descending=descending, stable=True)
    r = torch.empty_like(order)
    r.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return r


def substrate(images: Tensor, kind: str, *, blur_sigma: float = 5.0) -> Tensor:
    """What removed pixels are replaced with, ``N×C×H×W``.

    ``zeros``: 0. ``black``: each image's minimum (Quantus's ``"black"``). ``mean``: each image's mean over all
    channels and pixels (Quantus's ``"mean"``). ``blur``: the image under a Gaussian blur of ``blur_sigma`` pixels
    (RISE's insertion substrate; :func:`xai_bench.ops.gaussian_filter`, nearest-edge boundary).
    """
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "black":
        return images.amin(dim=(1, 2, 3), keepdim=True).expand_as(images)
    if kind == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True).expand_as(images)
    if kind == "blur":
        return gaussian_filter(images, blur_sigma)
    raise ValueError(f"substrate must be one of {list(SUBSTRATES)}, got {kind!r}")


def perturbed_scores(model: nn.Module, images: Tensor, targets: Tensor, n_variants: int,
                     make: Callable[[Tensor, Tensor], Tensor], *, softmax: bool) -> Tensor:
    """The target's score on ``n_variants`` perturbed copies of every image, ``N×S``.

    Args:
        model: the classifier.
        images: ``N×C×H×W`` (only its shape and device are used here).
        targets: ``N`` classes.
        n_variants: ``S``, copies per image.
        make: ``make(n, s)`` with index tensors ``n``, ``s`` of length ``B`` returns the ``B×C×H×W`` copies
            (copy ``s`` of image ``n``).
        softmax: score the target's probability instead of its logit.
    """
    n_img = images.shape[0]
    total = n_img * n_variants
    chunk = max(1, _CHUNK_VALUES // max(1, images[0].numel()))
    out = []
    for start in range(0, total, chunk):
        idx = torch.arange(start, min(total, start + chunk), device=images.device)
        n, s = idx // n_variants, idx % n_variants
        out.append(model_scores(model, make(n, s), targets[n], softmax=softmax))
    if not out:
        return images.new_zeros(n_img, n_variants)
    return torch.cat(out).view(n_img, n_variants)


def trapezoid(curve: Tensor, x: Tensor | None = None, dx: float = 1.0) -> Tensor:
    """Area under each row of ``curve`` by the trapezoid rule, over ``x`` (or spacing ``dx``)."""
    if curve.shape[-1] < 2:
        return curve.new_zeros(curve.shape[:-1])
    if x is not None:
        return torch.trapezoid(curve, x=x, dim=-1)
    return torch.trapezoid(curve, dx=dx, dim=-1)


def pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of each row pair (NaN where a row is constant, as ``scipy.stats.pearsonr``)."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    den = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    r = (a * b).sum(-1) / den
    return torch.where(den > 0, r, torch.full_like(r, float("nan"))).clamp(-1, 1).float()
