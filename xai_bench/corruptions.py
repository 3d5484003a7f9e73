"""Batched image corruptions for robustness evaluation, run on the input's device.

Two families, both on N×C×H×W float images in [0, 1]:

* **Parametric "first-reach" corruptions** (``contrast``, ``gaussian_blur``, ``invert``, ``brightness``,
  ``gaussian_noise``, ``jpeg``, ``pixelate``, ``rotate``): plain functions ``f(x, <param>) -> x'`` whose parameter is
  in physical units (a contrast factor, a blur radius in pixels, a JPEG quality …). Use them from configs as
  ``_partial_`` nodes.
* **ImageNet-C** (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
  Perturbations", ICLR 2019, https://arxiv.org/abs/1903.12261): 15 corruptions (plus the extras ``speckle_noise`` and
  ``gaussian_blur``) at severities 1–5 with the parameter tables of the reference ``make_imagenet_c.py``. They live
  in the registry ``CORRUPTIONS``; call them through ``corrupt(x, name, severity, seed=...)``.

ImageNet-C's spatial parameters are in pixels calibrated for 224×224 images; we keep them as they are, so smaller
images see relatively stronger blurs and displacements. Where the reference relies on tools without a batched torch
form (ImageMagick motion blur, OpenCV, image files) we reimplement the operation and say so in the docstring; the
released ImageNet-C files were additionally re-saved as JPEG (quality 85), which we do not do.

``build_suite(cfg)`` turns a ``conf/corruption/*.yaml`` suite into ``{label: callable(x)}`` for the evaluate task.
"""

from __future__ import annotations

import functools
import inspect
import io
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.registry import Registry

__all__ = [
    "CORRUPTIONS",
    "IMAGENET_C_NAMES",
    "SeededCorruption",
    "brightness",
    "build_suite",
    "contrast",
    "corrupt",
    "gaussian_blur",
    "gaussian_noise",
    "invert",
    "jpeg",
    "list_corruptions",
    "pixelate",
    "rotate",
]

CORRUPTIONS: Registry[Callable[..., Tensor]] = Registry("corruption")

MAX_SEVERITY = 5


# ----------------------------------------------------------------------------------------------------------------
# validation and small helpers
# ----------------------------------------------------------------------------------------------------------------


def _check_images(x: Any, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape N×C×H×W; got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape N×C×H×W (4 dims); got shape {tuple(x.shape)}. "
                         "Add a batch dimension with x.unsqueeze(0) for a single image.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a float tensor in [0, 1]; got dtype {x.dtype}. Use x.float() / 255.")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    lo, hi = torch.aminmax(x)
    lo, hi = float(lo), float(hi)
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(f"{name} must hold values in [0, 1]; got min={lo:.4g}, max={hi:.4g}. "
                         "Pass un-normalised images (models normalise inside).")


def _check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        rng = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
        raise ValueError(f"{name} must be in {rng}; got {value!r}")
    return float(value)


def _check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= MAX_SEVERITY:
        raise ValueError(f"severity must be an integer in 0–{MAX_SEVERITY} (0 = no corruption); got {severity!r}")
    return int(severity)


def _work(x: Tensor) -> Tensor:
    # Half precision is too coarse for the blur matrices and HSV arithmetic; compute in float32, cast back at the end.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _finish(out: Tensor, x: Tensor) -> Tensor:
    return out.clamp(0.0, 1.0).to(dtype=x.dtype)


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws on the generator's device (so a CPU generator also seeds CUDA inputs), moved to ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma (OpenCV's RGB2GRAY) for RGB, channel mean otherwise; N×1×H×W."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def _boundary_index(idx: Tensor, n: int, mode: str) -> Tensor:
    """Map out-of-range indices into ``[0, n)``: ``nearest`` (edge), ``symmetric`` (dcba|abcd, scipy "reflect"),
    ``reflect101`` (dcb|abcd, OpenCV's default / scipy "mirror"). Works for pads larger than the image."""
    if mode == "nearest" or n == 1:
        return idx.clamp(0, n - 1)
    if mode == "symmetric":
        j = idx.remainder(2 * n)
        return torch.where(j >= n, 2 * n - 1 - j, j)
    if mode == "reflect101":
        j = idx.remainder(2 * n - 2)
        return torch.where(j >= n, 2 * n - 2 - j, j)
    raise ValueError(f"unknown boundary mode {mode!r}")


def _gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage's sampled Gaussian: radius ``int(truncate·σ + 0.5)``, normalised to sum 1 (float64, CPU)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _filter_matrix(n: int, kernel: Tensor, mode: str, like: Tensor) -> Tensor:
    """The n×n matrix of a 1-D correlation with ``kernel`` and the given boundary handling."""
    r = (kernel.numel() - 1) // 2
    rows = torch.arange(n).repeat_interleave(kernel.numel())
    cols = _boundary_index(rows + torch.arange(-r, r + 1).repeat(n), n, mode)
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows, cols), kernel.repeat(n), accumulate=True)
    return m.to(like.device, like.dtype)


def _separable(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Separable 2-D filtering of the last two dims as ``M_h · x · M_wᵀ``.

    Folding the boundary rule into a matrix makes any kernel width exact (ImageNet-C's elastic transform blurs with
    σ ≈ 170 px on 224 px images) and turns the filter into two batched matmuls.
    """
    mh = _filter_matrix(x.shape[-2], kernel, mode, x)
    mw = _filter_matrix(x.shape[-1], kernel, mode, x)
    return mh @ x @ mw.T


def _gaussian_filter(x: Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Tensor:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter over H and W (default mode ``nearest``)."""
    if sigma <= 0:
        return x
    return _separable(x, _gaussian_kernel1d(sigma, truncate), mode)


def _pad(x: Tensor, ph: int, pw: int, mode: str) -> Tensor:
    h, w = x.shape[-2:]
    iy = _boundary_index(torch.arange(-ph, h + ph, device=x.device), h, mode)
    ix = _boundary_index(torch.arange(-pw, w + pw, device=x.device), w, mode)
    return x.index_select(-2, iy).index_select(-1, ix)


def _correlate(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """2-D correlation of every channel with a (K×kh×kw, K = 1 or N) kernel, output the size of the input.

    Done by FFT on the boundary-padded image: the cost does not grow with the kernel (ImageNet-C's defocus and
    motion kernels reach 21×21 and 81×81), and per-image kernels (random motion angles) batch like a shared one.
    With the pad as wide as the kernel's half-width the circular correlation never wraps into the kept region.
    """
    h, w = x.shape[-2:]
    kh, kw = kernel.shape[-2:]
    xp = _pad(x, kh // 2, kw // 2, mode)
    hp, wp = xp.shape[-2:]
    ft_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    k = kernel.to(x.device, ft_dtype).reshape(-1, 1, kh, kw)
    fx = torch.fft.rfft2(xp.to(ft_dtype), s=(hp, wp))
    fk = torch.fft.rfft2(k, s=(hp, wp))
    out = torch.fft.irfft2(fx * fk.conj(), s=(hp, wp))
    return out[..., :h, :w].to(x.dtype)


def _gather_pixels(x: Tensor, iy: Tensor, ix: Tensor) -> Tensor:
    """``out[n, c, i, j] = x[n, c, iy[n, i, j], ix[n, i, j]]`` for per-image integer index maps (N×H×W)."""
    n, c, _, w = x.shape
    flat = (iy * w + ix).reshape(n, 1, -1).expand(n, c, -1)
    return x.reshape(n, c, -1).gather(2, flat).reshape(n, c, *iy.shape[1:])


def _motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick's ``MotionBlurImage``: a one-sided half-Gaussian smear along ``angles`` (degrees, one per image).

    Kernel width ``2·ceil(radius)+1``; tap ``i`` reads the pixel at ``(round(i·cos a), round(i·sin a))`` and edges
    repeat (ImageMagick's default virtual pixels). The taps become one sparse 2-D kernel per image, applied by FFT.
    """
    width = int(2 * math.ceil(radius) + 1)
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * max(sigma, 1e-12) ** 2))
    k = k / k.sum()
    a = torch.deg2rad(angles.double().cpu())[:, None]
    reach = width - 1
    ox = torch.ceil(i * torch.cos(a) - 0.5).long() + reach  # N×width, shifted to kernel coordinates
    oy = torch.ceil(i * torch.sin(a) - 0.5).long() + reach
    n = angles.shape[0]
    kernel = torch.zeros(n, 2 * reach + 1, 2 * reach + 1, dtype=torch.float64)
    rows = torch.arange(n)[:, None].expand(n, width)
    kernel.index_put_((rows, oy, ox), k.expand(n, width), accumulate=True)
    return _correlate(x, kernel, "nearest")


def _sample(x: Tensor, sx: Tensor, sy: Tensor, mode: str) -> Tensor:
    """Bilinear sampling at absolute pixel coordinates ``(sx, sy)`` (each N×H'×W'), reflecting outside the image.

    ``mode="reflect101"`` mirrors about the edge pixels' centres (OpenCV BORDER_REFLECT_101, scipy "mirror"), which
    is grid_sample's reflection with ``align_corners=True``; ``"symmetric"`` mirrors about the outer pixel edges
    (scipy "reflect"), i.e. ``align_corners=False``.
    """
    h, w = x.shape[-2:]
    if mode == "reflect101":
        grid = torch.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], dim=-1)
    else:
        grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], dim=-1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection",
                         align_corners=mode == "reflect101")


def _clipped_zoom(x: Tensor, zoom: float) -> Tensor:
    """ImageNet-C's ``clipped_zoom``: crop the centre 1/zoom, zoom back with (corner-aligned) bilinear, trim."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    oh, ow = round(ch * zoom), round(cw * zoom)  # scipy.ndimage.zoom's output shape
    z = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)
    tt, tl = (oh - h) // 2, (ow - w) // 2
    return z[..., tt : tt + h, tl : tl + w]


def _pil_box_matrix(n_in: int, n_out: int) -> Tensor:
    """Pillow's BOX resampling along one axis as an (n_out × n_in) matrix (its ``precompute_coeffs``).

    Output pixel j averages the inputs whose offset from its centre ``(j + ½)·n_in/n_out``, in output-pixel units,
    lies in (-½, ½] — binary weights, normalised, exactly as Pillow (which then rounds to uint8 per pass).
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    center = (torch.arange(n_out, dtype=torch.float64)[:, None] + 0.5) * scale
    xmin = (center - support + 0.5).floor().clamp_min(0)
    xmax = (center + support + 0.5).floor().clamp_max(n_in)
    xs = torch.arange(n_in, dtype=torch.float64)[None, :]
    t = (xs - center + 0.5) / filterscale
    m = ((t > -0.5) & (t <= 0.5) & (xs >= xmin) & (xs < xmax)).double()
    return m / m.sum(1, keepdim=True).clamp_min(1e-12)


def _resize_box(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Pillow ``resize(size, BOX)`` then back to the original size, as one pair of batched matmuls."""
    h, w = x.shape[-2:]
    mh = (_pil_box_matrix(size[0], h) @ _pil_box_matrix(h, size[0])).to(x.device, x.dtype)
    mw = (_pil_box_matrix(size[1], w) @ _pil_box_matrix(w, size[1])).to(x.device, x.dtype)
    return mh @ x @ mw.T


def _plasma_fractal(n: int, mapsize: int, decay: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Diamond-square heightmaps (ImageNet-C's ``plasma_fractal``), N×mapsize×mapsize in [0, 1], batched over N."""
    m = torch.zeros(n, mapsize, mapsize, device=like.device, dtype=torch.float32)
    step, wibble = mapsize, 100.0

    def wibbled(a: Tensor) -> Tensor:
        u = _rand(tuple(a.shape), generator, m) * 2 - 1
        return a / 4 + wibble * wibble * u

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + corner.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = wibbled(sq)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = wibbled(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        m[:, half::step, 0::step] = wibbled(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step = half
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return (m / m.amax((1, 2), keepdim=True).clamp_min(1e-12)).to(like.dtype)


def _hsv_value_shift(x: Tensor, delta: float) -> Tensor:
    """Add ``delta`` to the HSV value channel (hue and saturation kept), in closed form.

    With H and S fixed every channel is proportional to V = max_c x, so the shift is a per-pixel rescale; black
    pixels (S = 0) become grey at the new value, as in skimage's rgb2hsv → hsv2rgb round trip.
    """
    v = x.amax(1, keepdim=True)
    v_new = (v + delta).clamp(0.0, 1.0)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def _jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    from PIL import Image

    if x.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs 1 or 3 channels; got x with {x.shape[1]} channels")
    arr = (x.detach() * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(arr)
    for i, img in enumerate(arr):  # JPEG has no batched torch form: Pillow encodes one image at a time
        buf = io.BytesIO()
        pil = Image.fromarray(img[..., 0], mode="L") if img.shape[-1] == 1 else Image.fromarray(img, mode="RGB")
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255.0


# ----------------------------------------------------------------------------------------------------------------
# parametric corruptions
# ----------------------------------------------------------------------------------------------------------------


def contrast(x: Tensor, factor: float) -> Tensor:
    r"""Scale each image's contrast around its per-channel mean (ImageNet-C's contrast, continuous).

    ``x' = clip((x - μ) · factor + μ)`` with μ the mean over H×W of each image and channel.

    Args:
        x: images, N×C×H×W in [0, 1].
        factor: ≥ 0; 1 is the identity (exact), < 1 lowers contrast (0 = flat mean image), > 1 raises it (e.g. 5).

    Returns:
        Tensor like ``x``.
    """
    _check_images(x)
    factor = _check_number("factor", factor, lo=0.0)
    if factor == 1.0:
        return x.clone()
    xw = _work(x)
    mean = xw.mean((-2, -1), keepdim=True)
    return _finish((xw - mean) * factor + mean, x)


def gaussian_blur(x: Tensor, radius: float) -> Tensor:
    r"""Gaussian blur with σ = ``radius`` pixels, as a separable filter (edges repeat, kernel truncated at 4σ).

    Args:
        x: images, N×C×H×W in [0, 1].
        radius: σ in pixels, ≥ 0; 0 is the identity (e.g. 10 for a heavy blur).

    Returns:
        Tensor like ``x``.
    """
    _check_images(x)
    radius = _check_number("radius", radius, lo=0.0)
    if radius == 0.0:
        return x.clone()
    return _finish(_gaussian_filter(_work(x), radius, mode="nearest"), x)


def invert(x: Tensor) -> Tensor:
    r"""Photographic negative, ``1 - x``.

    Args:
        x: images, N×C×H×W in [0, 1].

    Returns:
        Tensor like ``x``.
    """
    _check_images(x)
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
    _check_images(x)
    delta = _check_number("delta", delta, lo=-1.0, hi=1.0)
    if delta == 0.0:
        return x.clone()
    return _finish(_hsv_value_shift(_work(x), delta), x)


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    r"""Additive i.i.d. Gaussian noise, ``clip(x + std · z)``, z ~ N(0, 1) per pixel and channel.

    Args:
        x: images, N×C×H×W in [0, 1].
        std: noise standard deviation in pixel units, ≥ 0; 0 is the identity.
        generator: optional ``torch.Generator`` for reproducible noise (any device).

    Returns:
        Tensor like ``x``.
    """
    _check_images(x)
    std = _check_number("std", std, lo=0.0)
    if std == 0.0:
        return x.clone()
    xw = _work(x)
    return _finish(xw + std * _randn(tuple(x.shape), generator, xw), x)


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
    _check_images(x)
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1–100; got {quality!r}")
    return _finish(_jpeg_roundtrip(_work(x), int(quality)), x)


def pixelate(x: Tensor, factor: float) -> Tensor:
    r"""Pixelate by box-downsampling by ``factor`` and upsampling back with nearest neighbour.

    Args:
        x: images, N×C×H×W in [0, 1].
        factor: downsampling factor ≥ 1 (block size in pixels); 1 is the identity (e.g. 8 → 28×28 blocks of 8 px
            on a 224 px image).

    Returns:
        Tensor like ``x``.
    """
    _check_images(x)
    factor = _check_number("factor", factor, lo=1.0)
    if factor == 1.0:
        return x.clone()
    h, w = x.shape[-2:]
    size = (max(1, int(h / factor)), max(1, int(w / factor)))
    return _finish(_resize_box(_work(x), size), x)


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
    _check_images(x)
    degrees = _check_number("degrees", degrees)
    if padding_mode not in ("zeros", "border", "reflection"):
        raise ValueError(f"padding_mode must be 'zeros', 'border' or 'reflection'; got {padding_mode!r}")
    if degrees % 360 == 0:
        return x.clone()
    xw = _work(x)
    n, _, h, w = x.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # grid_sample works in coordinates normalised per axis; the aspect terms keep the rotation rigid in pixels.
    # The grid maps output → input, i.e. the inverse rotation (counter-clockwise on screen, where y points down).
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], device=x.device, dtype=xw.dtype)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
    out = F.grid_sample(xw, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return _finish(out, x)


# ----------------------------------------------------------------------------------------------------------------
# ImageNet-C (Hendrycks & Dietterich 2019), severities 1–5
# ----------------------------------------------------------------------------------------------------------------


def _imagenet_c(name: str) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register an ImageNet-C kernel ``f(x, severity, generator)`` behind input checks, severity 0 and dtype care."""

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        @functools.wraps(fn)
        def wrapper(x: Tensor, severity: int = 1, generator: torch.Generator | None = None) -> Tensor:
            _check_images(x)
            severity = _check_severity(severity)
            if severity == 0:
                return x.clone()
            return _finish(fn(_work(x), severity, generator), x)

        wrapper.__name__ = name
        wrapper.__qualname__ = name
        CORRUPTIONS.register(name)(wrapper)
        return wrapper

    return deco


@_imagenet_c("gaussian_noise")
def _c_gaussian_noise(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C Gaussian noise: additive N(0, σ²), σ ∈ (.08, .12, .18, .26, .38)."""
    c = [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1]
    return x + c * _randn(tuple(x.shape), generator, x)


@_imagenet_c("shot_noise")
def _c_shot_noise(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C shot noise: ``Poisson(x·λ)/λ``, λ ∈ (60, 25, 12, 5, 3)."""
    c = [60, 25, 12, 5, 3][severity - 1]
    rate = (x * c).float()
    if generator is not None and generator.device != x.device:
        return torch.poisson(rate.to(generator.device), generator=generator).to(x.device, x.dtype) / c
    return torch.poisson(rate, generator=generator).to(x.dtype) / c


@_imagenet_c("impulse_noise")
def _c_impulse_noise(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C impulse noise: salt-and-pepper on a fraction p ∈ (.03, .06, .09, .17, .27) of values, half each."""
    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    flip = _rand(tuple(x.shape), generator, x) < c
    salt = _rand(tuple(x.shape), generator, x) < 0.5
    return torch.where(flip, salt.to(x.dtype), x)


@_imagenet_c("speckle_noise")
def _c_speckle_noise(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C speckle noise (an extra): multiplicative ``x + x·σz``, σ ∈ (.15, .2, .35, .45, .6)."""
    c = [0.15, 0.2, 0.35, 0.45, 0.6][severity - 1]
    return x + x * c * _randn(tuple(x.shape), generator, x)


@_imagenet_c("gaussian_blur")
def _c_gaussian_blur(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C Gaussian blur (an extra): σ ∈ (1, 2, 3, 4, 6) px."""
    c = [1, 2, 3, 4, 6][severity - 1]
    return _gaussian_filter(x, c, mode="nearest")


@_imagenet_c("defocus_blur")
def _c_defocus_blur(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C defocus blur: an anti-aliased disk kernel of radius (3, 4, 6, 8, 10) px, mirrored edges."""
    radius, alias_blur = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    half, ksize = (8, 3) if radius <= 8 else (radius, 5)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    # cv2.GaussianBlur(ksize, sigma): sampled Gaussian of exactly ksize taps, reflect-101 border.
    g = torch.exp(-((torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2) ** 2) / (2 * alias_blur**2))
    kernel = _separable(disk, g / g.sum(), "reflect101")
    return _correlate(x, kernel, "reflect101")


@_imagenet_c("glass_blur")
def _c_glass_blur(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C glass blur: Gaussian blur, local pixel shuffling within ±δ, blur again.

    Batched variant: the reference swaps pixels one at a time in a sequential sweep (≈10⁵ dependent swaps per
    image). Here every interior pixel instead reads, all at once, the pixel at a random offset in [-δ, δ) — the same
    neighbourhood and sweep region, a local resampling rather than a permutation — which looks and scores alike and
    is orders of magnitude faster.
    """
    sigma, delta, iters = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    n, _, h, w = x.shape
    # The reference stores the first blur as uint8 (truncating).
    x = torch.floor(_gaussian_filter(x, sigma).clamp(0, 1) * 255) / 255
    ys = torch.arange(h, device=x.device)[None, :, None].expand(n, h, w)
    xs = torch.arange(w, device=x.device)[None, None, :].expand(n, h, w)
    inner = ((ys > delta) & (ys <= h - delta) & (xs > delta) & (xs <= w - delta))
    for _ in range(iters):
        dy = torch.floor(_rand((n, h, w), generator, x) * 2 * delta).long() - delta
        dx = torch.floor(_rand((n, h, w), generator, x) * 2 * delta).long() - delta
        iy = torch.where(inner, ys + dy, ys).clamp(0, h - 1)
        ix = torch.where(inner, xs + dx, xs).clamp(0, w - 1)
        x = _gather_pixels(x, iy, ix)
    return _gaussian_filter(x, sigma)


@_imagenet_c("motion_blur")
def _c_motion_blur(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C motion blur: ImageMagick's one-sided motion blur (radius, σ) at a random angle in [-45°, 45°).

    Reimplemented in torch (see ``_motion_blur``); each image gets its own angle.
    """
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    angles = _rand((x.shape[0],), generator, x) * 90 - 45
    return _motion_blur(x, radius, sigma, angles)


@_imagenet_c("zoom_blur")
def _c_zoom_blur(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C zoom blur: the mean of the image and centre zooms by 1 … 1.11–1.31."""
    start, stop, step = [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)][
        severity - 1
    ]
    zooms = np.arange(start, stop, step)
    out = x.clone()
    for z in zooms:
        out = out + _clipped_zoom(x, float(z))
    return out / (len(zooms) + 1)


@_imagenet_c("snow")
def _c_snow(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C snow: a thresholded, zoomed, motion-blurred noise layer (and its 180° rotation) over a greyed image.

    The ImageMagick motion blur is reimplemented in torch; each image gets its own snow layer and fall angle.
    """
    loc, scale, zoom, thresh, radius, sigma, keep = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ][severity - 1]
    n, _, h, w = x.shape
    layer = loc + scale * _randn((n, 1, h, w), generator, x)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255) / 255  # the reference passes the layer through a uint8 PNG
    angles = _rand((n,), generator, x) * 90 - 135
    layer = _motion_blur(layer, radius, sigma, angles)
    x = keep * x + (1 - keep) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-2, -1)


def _frost_texture(n: int, h: int, w: int, c: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """A procedural stand-in for ImageNet-C's frost photographs, N×C×H×W in [0, 1], one per image.

    Smooth plasma blotches where frost gathers, with fine grain and crystal streaks along three directions 60° apart
    inside them, tinted icy blue-white (mean ≈ 0.4, like the photographs).
    """
    size = 1 << max(1, math.ceil(math.log2(max(h, w))))
    haze = _plasma_fractal(n, size, 1.8, generator, like)[:, None, :h, :w]
    grain = _plasma_fractal(n, size, 1.15, generator, like)[:, None, :h, :w]
    streaks = torch.zeros(n, 1, h, w, device=like.device, dtype=like.dtype)
    base_angle = _rand((n,), generator, like) * 180
    for offset in (0.0, 60.0, 120.0):  # hexagonal ice-crystal directions
        seeds = (_rand((n, 1, h, w), generator, like) < 0.004).to(like.dtype)
        streaks = streaks + _motion_blur(seeds, 10, 8, base_angle + offset)
    streaks = (streaks / streaks.amax((1, 2, 3), keepdim=True).clamp_min(1e-12)).clamp(0, 1)
    # frost gathers in bright blotches (haze); crystals and grain show mostly inside them
    tex = haze**2 * (0.5 + 0.5 * grain) + 1.5 * haze * streaks.sqrt()
    tex = (tex / tex.amax((1, 2, 3), keepdim=True).clamp_min(1e-12)).sqrt()  # frost photos average ≈ 0.4–0.5
    tint = torch.tensor([0.82, 0.9, 1.0], device=like.device, dtype=like.dtype)
    tint = tint.view(1, 3, 1, 1) if c == 3 else tint.mean().view(1, 1, 1, 1).expand(1, c, 1, 1)
    return tex * tint


@_imagenet_c("frost")
def _c_frost(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C frost: ``clip(a·x + b·frost)`` with (a, b) from the reference table.

    The reference blends random crops of six frost photographs that we do not ship; the frost layer here is
    synthesised procedurally (``_frost_texture``: plasma blotches, grain and crystal streaks, icy tint), so scores
    are comparable in spirit but not numerically to published ImageNet-C frost results.
    """
    a, b = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    n, c, h, w = x.shape
    return a * x + b * _frost_texture(n, h, w, c, generator, x)


@_imagenet_c("fog")
def _c_fog(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C fog: a diamond-square plasma fractal added, then the range rescaled by max/(max + strength).

    The plasma is batched in torch (one fractal per image) on a power-of-two map covering the image (256 for 224).
    """
    strength, decay = [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)][severity - 1]
    n, _, h, w = x.shape
    size = 1 << max(1, math.ceil(math.log2(max(h, w))))
    max_val = x.amax((1, 2, 3), keepdim=True)
    x = x + strength * _plasma_fractal(n, size, decay, generator, x)[:, None, :h, :w]
    return x * max_val / (max_val + strength)


@_imagenet_c("brightness")
def _c_brightness(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C brightness: HSV value + (.1, .2, .3, .4, .5)."""
    return _hsv_value_shift(x, [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1])


@_imagenet_c("contrast")
def _c_contrast(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C contrast: scale around the per-channel image mean by (.4, .3, .2, .1, .05)."""
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    mean = x.mean((-2, -1), keepdim=True)
    return (x - mean) * c + mean


@_imagenet_c("elastic_transform")
def _c_elastic_transform(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C elastic transform: a random affine warp (reflect-101 edges), then a smooth random displacement
    field (uniform noise blurred with σ, scaled by α; symmetric edges), both bilinear via grid_sample.

    Parameters (α, σ, affine jitter) are the reference's, in pixels including its "244 for 224" constants.
    """
    alpha, sigma, jitter = [
        (244 * 2, 244 * 0.7, 244 * 0.1),
        (244 * 2, 244 * 0.08, 244 * 0.2),
        (244 * 0.05, 244 * 0.01, 244 * 0.02),
        (244 * 0.07, 244 * 0.01, 244 * 0.02),
        (244 * 0.12, 244 * 0.01, 244 * 0.02),
    ][severity - 1]
    n, _, h, w = x.shape
    dt = x.dtype
    cx, cy, s = float(w // 2), float(h // 2), float(min(h, w) // 3)
    pts1 = torch.tensor([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=torch.float64)
    pts2 = pts1 + (_rand((n, 3, 2), generator, x).double().cpu() * 2 - 1) * jitter
    # cv2.warpAffine samples the source at M⁻¹·p, i.e. the affine that maps pts2 back onto pts1.
    p2h = torch.cat([pts2, torch.ones(n, 3, 1, dtype=torch.float64)], dim=2)
    inv = torch.linalg.solve(p2h, pts1.expand(n, 3, 2)).transpose(1, 2).to(x.device, dt)  # N×2×3
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=dt), torch.arange(w, device=x.device, dtype=dt),
                            indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # H×W×3
    src = torch.einsum("nij,hwj->nhwi", inv, pix)
    x = _sample(x, src[..., 0], src[..., 1], "reflect101")

    noise = _rand((n, 2, h, w), generator, x) * 2 - 1
    disp = _gaussian_filter(noise, sigma, mode="symmetric", truncate=3.0) * alpha  # N×2×H×W: (dx, dy)
    return _sample(x, xs + disp[:, 0], ys + disp[:, 1], "symmetric")


@_imagenet_c("pixelate")
def _c_pixelate(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C pixelate: box-resize to (.6, .5, .4, .3, .25) of the size and back (Pillow BOX, emulated)."""
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    h, w = x.shape[-2:]
    return _resize_box(x, (max(1, int(h * c)), max(1, int(w * c))))


@_imagenet_c("jpeg_compression")
def _c_jpeg_compression(x: Tensor, severity: int, generator: torch.Generator | None) -> Tensor:
    """ImageNet-C JPEG: Pillow JPEG at quality (25, 18, 15, 10, 7); per image on the CPU (no batched torch JPEG)."""
    if x.shape[1] not in (1, 3):
        raise ValueError(f"jpeg_compression needs 1 or 3 channels; got x with {x.shape[1]} channels")
    return _jpeg_roundtrip(x, [25, 18, 15, 10, 7][severity - 1])


# ----------------------------------------------------------------------------------------------------------------
# lookup and suites
# ----------------------------------------------------------------------------------------------------------------

IMAGENET_C_NAMES: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)  # fmt: skip
"""The 15 benchmark corruptions, in the paper's order (``speckle_noise`` and ``gaussian_blur`` are the extras)."""


def list_corruptions(pattern: str = "*") -> list[str]:
    """Names of the registered severity-indexed corruptions matching an fnmatch ``pattern`` (e.g. ``"*blur"``)."""
    return CORRUPTIONS.list(pattern)


def corrupt(x: Tensor, name: str, severity: int, *, seed: int | None = None,
            generator: torch.Generator | None = None) -> Tensor:
    r"""Apply the registered ImageNet-C corruption ``name`` at ``severity``.

    Args:
        x: images, N×C×H×W in [0, 1], on any device (the result stays there).
        name: a registry name (see ``list_corruptions()``); unknown names raise ``KeyError`` with close matches.
        severity: 0–5; 0 returns a copy of ``x``.
        seed: makes random corruptions reproducible (a fresh generator on ``x``'s device). Random draws differ
            between CPU and CUDA for the same seed.
        generator: alternatively, a generator to draw from (advances; not used together with ``seed``).

    Returns:
        Tensor like ``x`` (same shape, dtype, device), values in [0, 1].
    """
    fn = CORRUPTIONS.get(name)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator to corrupt(), not both")
    if seed is not None:
        if not isinstance(x, Tensor):
            _check_images(x)
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    return fn(x, severity, generator=generator)


class SeededCorruption:
    """A corruption bound to its settings and a seeded random stream: call it on batch after batch.

    The generator is created on the first batch's device and advances with every call, so consecutive batches get
    fresh noise while the whole sequence is reproducible from ``seed``.
    """

    def __init__(self, fn: Callable[..., Tensor], seed: int | None = None, label: str = "") -> None:
        self.fn = fn
        self.seed = seed
        self.label = label
        target = fn.func if isinstance(fn, functools.partial) else fn
        try:
            self._takes_generator = "generator" in inspect.signature(target).parameters
        except (TypeError, ValueError):
            self._takes_generator = False
        self._generator: torch.Generator | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if not self._takes_generator or self.seed is None:
            return self.fn(x)
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device).manual_seed(int(self.seed))
        return self.fn(x, generator=self._generator)

    def __repr__(self) -> str:
        return f"SeededCorruption({self.label or self.fn!r}, seed={self.seed})"


def build_suite(cfg: Mapping[str, Any] | None) -> dict[str, Callable[[Tensor], Tensor]]:
    r"""Turn a corruption-suite config into ``{label: corrupt_fn(x)}``.

    Schema (``conf/corruption/*.yaml``)::

        names: [gaussian_noise, ...]   # registry names, crossed with severities → "gaussian_noise/3"
        severities: [1, 2, 3, 4, 5]
        custom: {contrast_x5: {_target_: xai_bench.corruptions.contrast, _partial_: true, factor: 5}}
        seed: 0                        # per-label generator; null = unseeded

    Args:
        cfg: the suite config (DictConfig or dict); ``None`` or an empty node gives an empty suite.

    Returns:
        An insertion-ordered dict; each callable maps N×C×H×W images in [0, 1] to corrupted images like them.
    """
    from xai_bench.utils import build

    cfg = cfg or {}
    names = list(cfg.get("names") or [])
    severities = list(cfg.get("severities") or [])
    custom = cfg.get("custom") or {}
    seed = cfg.get("seed")
    if names and not severities:
        raise ValueError("corruption suite lists names but no severities; set severities: [1, 2, 3, 4, 5]")
    severities = [_check_severity(s) for s in severities]
    suite: dict[str, Callable[[Tensor], Tensor]] = {}
    for name in names:
        fn = CORRUPTIONS.get(name)  # fail early on a typo, with close matches
        for sev in severities:
            label = f"{name}/{sev}"
            suite[label] = SeededCorruption(functools.partial(fn, severity=sev), seed, label)
    for label, node in custom.items():
        label = str(label)
        if label in suite:
            raise ValueError(f"custom corruption label {label!r} clashes with a registry label; rename it")
        fn = build(node)
        if not callable(fn):
            raise ValueError(f"custom corruption {label!r} did not build a callable; add _partial_: true")
        suite[label] = SeededCorruption(fn, seed, label)
    return suite
