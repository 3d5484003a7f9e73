"""Reference inputs ("baselines") for path and perturbation attribution methods.

Integrated Gradients, DeepLift, GradientSHAP, Occlusion, feature ablation, LIME and Kernel SHAP all compare the
input with a reference that should mean "no information". Which reference is right is an open question (Sturmfels et
al., "Visualizing the Impact of Feature Attribution Baselines", Distill 2020), so the benchmark makes it a config
choice: ``zeros`` (black), ``constant`` (e.g. mid grey), ``blurred`` (a Gaussian blur of the input) and ``uniform``
(seeded uniform noise).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from xai_bench.checks import check_images
from xai_bench.ops import gaussian_filter
from xai_bench.registry import unknown_name_message

BASELINE_KINDS = ("zeros", "constant", "blurred", "uniform")
DATA_BASELINE = "data"  # baselines drawn from the training split (a background set), not made from the image


def data_baseline(background: Tensor | None, images: Tensor, name: str) -> Tensor:
    """The background set of ``baseline: data`` (Expected Gradients, DeepLIFT-SHAP) on ``images``' device, checked.

    The explain task draws it from the training split (:mod:`xai_bench.tasks._background`); code passes it to
    ``build_attribution(..., background=images)``.
    """
    from xai_bench.errors import ConfigError

    if background is None:
        raise ConfigError(f"attribution.{name}.baseline=data needs a background set from the dataset's training "
                          f"split: explain.py draws it (attribution.{name}.baseline_samples images, seed "
                          f"baseline_seed); in code pass build_attribution(..., background=images)")
    bg = background.to(images.device, images.dtype)
    if bg.dim() != 4 or bg.shape[1:] != images.shape[1:]:
        raise ConfigError(f"attribution.{name}: the background set is {tuple(bg.shape)} but the images are "
                          f"N×{'×'.join(map(str, images.shape[1:]))}; draw it from the same dataset")
    return bg


def make_baseline(
    kind: str,
    images: Tensor,
    *,
    value: float = 0.0,
    sigma: float = 5.0,
    low: float = 0.0,
    high: float = 1.0,
    seed: int | None = 0,
) -> Tensor:
    """A baseline tensor shaped like ``images`` on the same device and dtype.

    Args:
        kind: ``"zeros"``, ``"constant"`` (every pixel ``value``), ``"blurred"`` (Gaussian blur of each image with
            standard deviation ``sigma`` pixels, reflect padding) or ``"uniform"`` (noise in ``[low, high)``).
        images: N×C×H×W inputs in [0, 1]; only their shape/device/dtype matter except for ``blurred``.
        value: fill value for ``constant``. Default: 0.0.
        sigma: blur standard deviation in pixels for ``blurred``. Default: 5.0.
        low, high: range of ``uniform`` noise. Default: 0, 1.
        seed: seed of the private generator used by ``uniform`` (the global RNG is left alone, so a baseline does not
            shift the random stream of the method that uses it); ``None`` draws from the global RNG. Default: 0.

    Returns:
        N×C×H×W tensor.
    """
    check_images(images, check_range=False)
    if kind == "zeros":
        return torch.zeros_like(images)
    if kind == "constant":
        return torch.full_like(images, float(value))
    if kind == "blurred":
        return gaussian_blur(images, sigma)
    if kind == "uniform":
        if not high > low:
            raise ValueError(f"uniform baseline needs high > low, got low={low}, high={high}")
        gen = None
        if seed is not None:
            # CPU generator + copy: a device generator would make the noise depend on the device type.
            gen = torch.Generator().manual_seed(int(seed))
        noise = torch.rand(images.shape, generator=gen, dtype=images.dtype)
        return (low + (high - low) * noise).to(images.device)
    raise ValueError(unknown_name_message("baseline kind", str(kind), BASELINE_KINDS,
                                          " Set attribution.baseline to one of these (or null)."))


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of N×C×H×W ``images``: σ in pixels, kernel radius ⌈3σ⌉, edges reflected about the
    border pixels (``dcb|abcd``: torch's ``"reflect"``, scipy's ``"mirror"``; see :mod:`xai_bench.ops`).

    The radius is also kept below the image side (torch's reflect padding required it when this was a padded
    convolution), so blurred baselines of small images keep the values they had.
    """
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return images.clone()
    h, w = images.shape[-2:]
    radius = max(1, min(math.ceil(3 * sigma), h - 1, w - 1))
    return gaussian_filter(images, sigma, mode="reflect101", radius=radius)
