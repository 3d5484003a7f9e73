"""Parametric corruptions: plain functions ``f(x, <param>) -> x'`` with the parameter in physical units.

``contrast``, ``gaussian_blur``, ``invert``, ``brightness``, ``gaussian_noise``, ``jpeg``, ``pixelate`` and ``rotate``
take N×C×H×W float images in [0, 1] and a contrast factor, a blur radius in pixels, a JPEG quality …; the identity
setting returns an exact copy. Use them from configs as ``_partial_`` nodes (``conf/corruption/basic.yaml``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.checks import check_images, check_number
from xai_bench.ops import gaussian_filter
from xai_bench.robustness.corruptions._kernels import (
    finish,
    hsv_value_shift,
    jpeg_roundtrip,
    randn,
    resize_box,
    to_work_dtype,
)

__all__ = ["brightness", "contrast", "gaussian_blur", "gaussian_noise", "invert", "jpeg", "pixelate", "rotate"]


def contrast(x: Tensor, factor: float) -> Tensor:
    r"""Scale each image's contrast around its per-channel mean (ImageNet-C's contrast, continuous).

    ``x' = clip((x - μ) · factor + μ)`` with μ the mean over H×W of each image and channel.

    Args:
        x: images, N×C×H×W in [0, 1].
        factor: ≥ 0; 1 is the identity (exact), < 1 lowers contrast (0 = flat mean image), > 1 raises it (e.g. 5).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    factor = check_number("factor", factor, lo=0.0)
    if factor == 1.0:
        return x.clone()
    xw = to_work_dtype(x)
    mean = xw.mean((-2, -1), keepdim=True)
    return finish((xw - mean) * factor + mean, x)


def gaussian_blur(x: Tensor, radius: float) -> Tensor:
    r"""Gaussian blur with σ = ``radius`` pixels, as a separable filter (edges repeat, kernel truncated at 4σ).

    Args:
        x: images, N×C×H×W in [0, 1].
        radius: σ in pixels, ≥ 0; 0 is the identity (e.g. 10 for a heavy blur).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    radius = check_number("radius", radius, lo=0.0)
    if radius == 0.0:
        return x.clone()
    return finish(gaussian_filter(to_work_dtype(x), radius, mode="nearest"), x)


def invert(x: Tensor) -> Tensor:
    r"""Photographic negative, ``1 - x``.

    Args:
        x: images, N×C×H×W in [0, 1].

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    return 1.0 - x


def brightness(x: Tensor, delta: float) -> Tensor:
    r"""Shift brightness by adding ``delta`` to the HSV value channel (ImageNet-C's brightness, continuous).

    Hue and saturation are kept, so colours do not wash out the way ``x + delta`` would make them.

    Args:
        x: images, N×C×H×W in [0, 1].
        delta: in [-1, 1]; 0 is the identity (ImageNet-C uses 0.1 … 0.5).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    delta = check_number("delta", delta, lo=-1.0, hi=1.0)
    if delta == 0.0:
        return x.clone()
    return finish(hsv_value_shift(to_work_dtype(x), delta), x)


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    r"""Additive i.i.d. Gaussian noise, ``clip(x + std · z)``, z ~ N(0, 1) per pixel and channel.

    Args:
        x: images, N×C×H×W in [0, 1].
        std: noise standard deviation in pixel units, ≥ 0; 0 is the identity.
        generator: optional ``torch.Generator`` for reproducible noise (any device).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    std = check_number("std", std, lo=0.0)
    if std == 0.0:
        return x.clone()
    xw = to_work_dtype(x)
    return finish(xw + std * randn(tuple(x.shape), generator, xw), x)


def jpeg(x: Tensor, quality: int) -> Tensor:
    r"""JPEG compression artefacts: encode and decode each image with Pillow at ``quality``.

    JPEG has no batched torch form, so this runs per image on the CPU (images are quantised to uint8 first) and the
    result is moved back to ``x``'s device. Even quality 100 is *not* the identity: chroma subsampling and the
    DCT quantisation still change pixels slightly.

    Args:
        x: images, N×C×H×W in [0, 1] with C = 1 or 3.
        quality: integer in 1–100 (lower = stronger artefacts).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1–100; got {quality!r}")
    return finish(jpeg_roundtrip(to_work_dtype(x), int(quality)), x)


def pixelate(x: Tensor, factor: float) -> Tensor:
    r"""Pixelate by box-downsampling by ``factor`` and upsampling back with nearest neighbour.

    Args:
        x: images, N×C×H×W in [0, 1].
        factor: downsampling factor ≥ 1 (block size in pixels); 1 is the identity (e.g. 8 → 28×28 blocks of 8 px
            on a 224 px image).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    factor = check_number("factor", factor, lo=1.0)
    if factor == 1.0:
        return x.clone()
    h, w = x.shape[-2:]
    size = (max(1, int(h / factor)), max(1, int(w / factor)))
    return finish(resize_box(to_work_dtype(x), size), x)


def rotate(x: Tensor, degrees: float, padding_mode: str = "zeros") -> Tensor:
    r"""Rotate every image about its centre by ``degrees`` (counter-clockwise), bilinear, batched with grid_sample.

    Args:
        x: images, N×C×H×W in [0, 1].
        degrees: rotation angle; 0 is the identity (exact).
        padding_mode: how uncovered corners are filled: ``"zeros"`` (black, default), ``"border"`` or
            ``"reflection"`` (see ``torch.nn.functional.grid_sample``).

    Returns:
        Tensor like ``x``.
    """
    check_images(x, "x", allow_empty=False)
    degrees = check_number("degrees", degrees)
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection'; got {padding_mode!r}")
    if degrees % 360 == 0:
        return x.clone()
    xw = to_work_dtype(x)
    n, _, h, w = x.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # grid_sample works in coordinates normalised per axis; the aspect terms keep the rotation rigid in pixels.
    # The grid maps output → input, i.e. the inverse rotation (counter-clockwise on screen, where y points down).
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], device=x.device, dtype=xw.dtype)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(xw, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return finish(out, x)
