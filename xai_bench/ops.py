"""Small tensor kernels shared across the library: Gaussian kernels, separable and 2-D filters, boundary modes.

Used by the corruptions (``xai_bench.robustness.corruptions``), the attribution baselines
(``xai_bench.attribution.baselines``) and explanation metrics. Everything works on the last two dims of a tensor
(usually N×C×H×W images), stays on the input's device and batches over all leading dims.

Boundary modes name one convention each, because the libraries we match disagree on the words:

===============  ==============  ======================  ==========================  ===================
``mode``         pattern         scipy.ndimage           OpenCV                      ``torch.nn.functional.pad``
===============  ==============  ======================  ==========================  ===================
``nearest``      ``aaa|abcd``    ``"nearest"``           ``BORDER_REPLICATE``        ``"replicate"``
``symmetric``    ``cba|abcd``    ``"reflect"``           ``BORDER_REFLECT``          (none)
``reflect101``   ``dcb|abcd``    ``"mirror"``            ``BORDER_REFLECT_101``      ``"reflect"``
===============  ==============  ======================  ==========================  ===================

Unlike ``F.pad``, every mode here works for pads wider than the image (the pattern repeats).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "BOUNDARY_MODES",
    "boundary_index",
    "correlate2d",
    "filter_matrix",
    "gaussian_filter",
    "gaussian_kernel1d",
    "pad",
    "separable_filter",
]

BOUNDARY_MODES = ("nearest", "symmetric", "reflect101")


def boundary_index(idx: Tensor, n: int, mode: str) -> Tensor:
    """Map integer indices (possibly outside ``[0, n)``) into ``[0, n)`` by the boundary rule ``mode``.

    Args:
        idx: integer tensor of indices along an axis of length ``n``.
        n: the axis length.
        mode: one of :data:`BOUNDARY_MODES` (see the module docstring).

    Returns:
        Tensor like ``idx`` with values in ``[0, n)``.
    """
    if mode == "nearest" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "symmetric":
        j = idx.remainder(2 * n)
        return torch.where(j >= n, 2 * n - 1 - j, j)
    if mode == "reflect101":
        j = idx.remainder(2 * n - 2)
        return torch.where(j >= n, 2 * n - 2 - j, j)
    raise ValueError(f"unknown boundary mode {mode!r}; use one of {list(BOUNDARY_MODES)}")


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, *, radius: int | None = None) -> Tensor:
    """A sampled 1-D Gaussian, normalised to sum 1 (float64, CPU).

    Args:
        sigma: standard deviation in samples, > 0.
        truncate: with ``radius=None``, the radius is ``int(truncate·σ + 0.5)`` (scipy.ndimage's rule).
        radius: the half-width in samples, overriding ``truncate``.

    Returns:
        ``2·radius + 1`` weights.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = int(truncate * sigma + 0.5) if radius is None else int(radius)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def filter_matrix(n: int, kernel: Tensor, mode: str, like: Tensor) -> Tensor:
    """The n×n matrix of a 1-D correlation with an odd-length ``kernel`` under the boundary rule ``mode``.

    Built in float64 on the CPU, returned on ``like``'s device and dtype.
    """
    r = (kernel.numel() - 1) // 2
    rows = torch.arange(n).repeat_interleave(kernel.numel())
    cols = boundary_index(rows + torch.arange(-r, r + 1).repeat(n), n, mode)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows, cols), kernel.detach().cpu().double().repeat(n), accumulate=True)
    return m.to(like.device, like.dtype)


def separable_filter(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate the last two dims of ``x`` with ``kernel`` along each (a separable 2-D filter), as ``M_h · x · M_wᵀ``.

    Folding the boundary rule into a matrix makes any kernel width exact, wider than the image included
    (ImageNet-C's elastic transform blurs with σ ≈ 170 px on 224 px images), and turns the filter into two batched
    matmuls.

    Args:
        x: tensor ``…×H×W`` (float).
        kernel: odd-length 1-D kernel, applied along H and along W.
        mode: boundary rule, one of :data:`BOUNDARY_MODES`.

    Returns:
        Tensor like ``x``.
    """
    mh = filter_matrix(x.shape[-2], kernel, mode, x)
    mw = filter_matrix(x.shape[-1], kernel, mode, x)
    return mh @ x @ mw.T


def gaussian_filter(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0, *,
                    radius: int | None = None) -> Tensor:
    """Gaussian blur over the last two dims: ``scipy.ndimage.gaussian_filter`` / ``skimage.filters.gaussian``.

    The one Gaussian blur of the library: the corruptions and the ``blurred`` attribution baseline call it.

    Args:
        x: tensor ``…×H×W`` (float), e.g. N×C×H×W images.
        sigma: standard deviation in pixels; ``σ ≤ 0`` returns ``x`` itself.
        mode: boundary rule, one of :data:`BOUNDARY_MODES`. Default: ``"nearest"`` (skimage's default).
        truncate: kernel radius ``int(truncate·σ + 0.5)`` (scipy's rule). Default: 4.0.
        radius: explicit kernel half-width in pixels, overriding ``truncate``.

    Returns:
        Tensor like ``x``.
    """
    if sigma <= 0:
        return x
    return separable_filter(x, gaussian_kernel1d(sigma, truncate, radius=radius), mode)


def pad(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    """Pad the last two dims by ``ph`` rows and ``pw`` columns on each side under the boundary rule ``mode``."""
    h, w = x.shape[-2:]
    iy = boundary_index(torch.arange(-ph, h + ph, device=x.device), h, mode)
    ix = boundary_index(torch.arange(-pw, w + pw, device=x.device), w, mode)
    return x.index_select(-2, iy).index_select(-1, ix)


def correlate2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """2-D correlation of every channel of N×C×H×W ``x`` with a kernel, the output the size of the input.

    Done by FFT on the boundary-padded image: the cost does not grow with the kernel (ImageNet-C's defocus and
    motion kernels reach 21×21 and 81×81), and per-image kernels (random motion angles) batch like a shared one.
    With the pad as wide as the kernel's half-width the circular correlation never wraps into the kept region.

    Args:
        x: N×C×H×W float tensor.
        kernel: ``kh×kw`` (shared) or ``N×kh×kw`` (one per image), odd sizes.
        mode: boundary rule, one of :data:`BOUNDARY_MODES`.

    Returns:
        Tensor like ``x``.
    """
    h, w = x.shape[-2:]
    kh, kw = kernel.shape[-2:]
    xp = pad(x, kh // 2, kw // 2, mode)
    hp, wp = xp.shape[-2:]
    ft_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = kernel.to(x.device, ft_dtype).reshape(-1, 1, kh, kw)
    fx = torch.fft.rfft2(xp.to(ft_dtype), s=(hp, wp))
    fk = torch.fft.rfft2(k, s=(hp, wp))
    out = torch.fft.irfft2(fx * fk.conj(), s=(hp, wp))
    return out[..., :h, :w].to(x.dtype)

