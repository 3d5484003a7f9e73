"""Image operations behind the corruptions that have no ready batched torch form (private to this package).

Reimplementations of what ImageNet-C's reference code takes from Pillow, OpenCV, ImageMagick and scipy, each on
N×C×H×W float images on their own device: seeded random draws, HSV value shifts, JPEG round trips, Pillow's BOX
resize, ImageMagick's motion blur, scipy's clipped zoom, bilinear sampling with reflected edges and the
diamond-square plasma fractal. Generic filters (Gaussian, separable, FFT correlation) live in :mod:`xai_bench.ops`.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.ops import correlate2d

__all__ = [
    "clipped_zoom",
    "finish",
    "glass_sweep_sources",
    "glass_sweep_step",
    "gray",
    "hsv_value_shift",
    "jpeg_roundtrip",
    "motion_blur",
    "plasma_fractal",
    "rand",
    "randn",
    "resize_box",
    "sample_bilinear",
    "to_work_dtype",
]


def to_work_dtype(x: Tensor) -> Tensor:
    # Half precision is too coarse for the blur matrices and HSV arithmetic; compute in float32, cast back at the end.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def finish(out: Tensor, x: Tensor) -> Tensor:
    """``out`` clipped to [0, 1] in ``x``'s dtype: the last step of every corruption."""
    return out.clamp(0.0, 1.0).to(dtype=x.dtype)


def rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) draws on the generator's device (so a CPU generator also seeds CUDA inputs), moved to ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def randn(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma (OpenCV's RGB2GRAY) for RGB, channel mean otherwise; N×1×H×W."""
    if x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.mean(1, keepdim=True)


def glass_sweep_step(dy: Tensor, dx: Tensor, h: int, w: int, delta: int) -> Tensor:
    """Where each pixel's value comes from after one pass of ImageNet-C's glass-blur sweep, for given offsets.

    The reference (``make_imagenet_c.py``, unchanged in ``imagecorruptions``) runs, on an H×W×3 uint8 array::

        for h in range(H - δ, δ, -1):
            for w in range(W - δ, δ, -1):
                dx, dy = np.random.randint(-δ, δ, size=(2,))
                x[h, w], x[h + dy, w + dx] = x[h + dy, w + dx], x[h, w]

    ``x[h, w]`` of a 3-D array is a *view*, so this "swap" first copies the neighbour's pixel into ``(h, w)`` and
    then writes that same value back: each swept pixel is overwritten by its neighbour's *current* value (a true
    swap happens only for 2-D greyscale arrays). A neighbour swept earlier already holds a copied value, so content
    travels along chains of hops — which is why a one-hop parallel resampling moves it less.

    Every swept pixel is written exactly once per pass, so the sequential sweep has a closed form: pixel ``p``
    reading ``q`` ends with the original value of ``q`` if ``q`` is swept after ``p`` (or never), else with whatever
    ``q`` received. Those "else" links form chains that strictly go back in sweep order; pointer jumping resolves
    all of them at once in O(log chain length) gathers over the whole batch, instead of ≈5·10⁴ dependent steps.

    Args:
        dy, dx: integer offsets in [-δ, δ) for the swept pixels, N×(H-2δ)×(W-2δ), indexed by (row, column) from the
            top-left swept pixel ``(δ+1, δ+1)``.
        h, w: image size. delta: δ.

    Returns:
        N×(H·W) long tensor ``src``: after the pass, flat pixel ``i`` holds the value that flat pixel ``src[i]`` had
        before it.
    """
    n, nh, nw = dy.shape
    device = dy.device
    idx = torch.arange(h * w, device=device)
    if nh <= 0 or nw <= 0:
        return idx.expand(n, h * w).clone()
    rows = torch.arange(delta + 1, h - delta + 1, device=device)
    cols = torch.arange(delta + 1, w - delta + 1, device=device)
    p = (rows[:, None] * w + cols[None, :]).reshape(-1)  # swept pixels, flat
    # position in the sweep: rows from the bottom, columns from the right; never-swept pixels come "last"
    order = torch.full((h * w,), h * w, device=device, dtype=torch.long)
    order[p] = ((h - delta - rows)[:, None] * nw + (w - delta - cols)[None, :]).reshape(-1)
    q = (p.view(1, nh, nw) + dy * w + dx).reshape(n, -1)
    chained = order[q] < order[p]  # q was overwritten before p read it
    nxt = idx.expand(n, h * w).clone()
    nxt[:, p] = torch.where(chained, q, p)
    term = idx.expand(n, h * w).clone()
    term[:, p] = q
    while True:  # pointer jumping to the first link whose source was still original
        jumped = nxt.gather(1, nxt)
        if torch.equal(jumped, nxt):
            break
        nxt = jumped
    return term.gather(1, nxt)


def glass_sweep_sources(n: int, h: int, w: int, delta: int, iterations: int, generator: torch.Generator | None,
                        like: Tensor) -> Tensor:
    """``iterations`` passes of ImageNet-C's glass-blur sweep (see ``glass_sweep_step``) with fresh random offsets,
    composed into one N×(H·W) source index map on ``like``'s device."""
    nh, nw = h - 2 * delta, w - 2 * delta
    src = torch.arange(h * w, device=like.device).expand(n, h * w)
    for _ in range(iterations):
        if nh <= 0 or nw <= 0:
            break
        # reference order of draws: dx, then dy, per pixel
        d = torch.floor(rand((n, nh, nw, 2), generator, like.float()) * 2 * delta).long() - delta
        step = glass_sweep_step(d[..., 1], d[..., 0], h, w, delta)
        src = src.gather(1, step)  # y_new[i] = y_old[step[i]] = x[src[step[i]]]
    return src


def motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
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
    return correlate2d(x, kernel, "nearest")


def sample_bilinear(x: Tensor, sx: Tensor, sy: Tensor, mode: str) -> Tensor:
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


def clipped_zoom(x: Tensor, zoom: float) -> Tensor:
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


def resize_box(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Pillow ``resize(size, BOX)`` then back to the original size, as one pair of batched matmuls."""
    h, w = x.shape[-2:]
    mh = (_pil_box_matrix(size[0], h) @ _pil_box_matrix(h, size[0])).to(x.device, x.dtype)
    mw = (_pil_box_matrix(size[1], w) @ _pil_box_matrix(w, size[1])).to(x.device, x.dtype)
    return mh @ x @ mw.T


def plasma_fractal(n: int, mapsize: int, decay: float, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Diamond-square heightmaps (ImageNet-C's ``plasma_fractal``), N×mapsize×mapsize in [0, 1], batched over N."""
    m = torch.zeros(n, mapsize, mapsize, device=like.device, dtype=torch.float32)
    step, wibble = mapsize, 100.0

    def wibbled(a: Tensor) -> Tensor:
        u = rand(tuple(a.shape), generator, m) * 2 - 1
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


def hsv_value_shift(x: Tensor, delta: float) -> Tensor:
    """Add ``delta`` to the HSV value channel (hue and saturation kept), in closed form.

    With H and S fixed every channel is proportional to V = max_c x, so the shift is a per-pixel rescale; black
    pixels (S = 0) become grey at the new value, as in skimage's rgb2hsv → hsv2rgb round trip.
    """
    v = x.amax(1, keepdim=True)
    v_new = (v + delta).clamp(0.0, 1.0)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
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
