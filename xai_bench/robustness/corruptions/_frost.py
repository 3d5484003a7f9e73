"""ImageNet-C's frost layer: the original photographs when ``imagecorruptions`` is installed, else a calibrated
procedural stand-in (private to this package).

The reference (``make_imagenet_c.py``) adds a random 224×224 crop of one of five frost photographs (``frost1.png`` …
``frost5.jpg``; a sixth ships but ``randint(5)`` never picks it, and ``frost2``/``frost3`` are the same picture).
We do not ship those photographs; ``imagecorruptions`` (the ``bench`` extra) does, and when it is importable we read
them from its package data with Pillow — it is never imported for this. Without it we synthesise a stand-in per
image: one of five *profiles* recorded from the photographs (``FROST_PROFILES``), each a per-channel histogram (33
crop-weighted quantiles of 224² crops) and a luma power spectrum (variance per octave of spatial frequency). A
Gaussian random field with that spectrum is mapped through each channel's quantile function by rank, so the
stand-in has the photograph's mean, contrast and full per-channel distribution exactly (up to the 33-point
interpolation) and its spatial spectrum approximately.

What differs (measured by ``benchmarks/bench_imagenet_c_fidelity.py`` on eight 224² photos): frost PSNR agrees with
the photographs to within ≈0.2 dB at every severity. The stand-in's three channels share one field (the photos'
channels are highly but not perfectly correlated), each image's texture has exactly its profile's histogram (real
crops vary around it: crop means have a standard deviation of 0.025–0.05), the lowest octave of the spectrum is
about 40 % short, and there are no crystal shapes — it is a textured, correctly coloured veil, not a photograph of
ice.

``XAI_BENCH_FROST_TEXTURES=procedural`` (or ``photos``) overrides the automatic choice, e.g. to compare machines with
and without ``imagecorruptions``; the choice is logged once.
"""

from __future__ import annotations

import functools
import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xai_bench.robustness.corruptions._kernels import rand, randn
from xai_bench.robustness.corruptions._reference import FROST_PHOTOS, frost_photo_dir

__all__ = ["FROST_BLEND", "FROST_PROFILES", "FROST_TEXTURES_ENV", "frost_layer", "frost_source", "frost_statistics",
           "octave_band_power", "photo_frost", "procedural_frost"]

log = logging.getLogger(__name__)

FROST_TEXTURES_ENV = "XAI_BENCH_FROST_TEXTURES"
FROST_BLEND = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (a, b) per severity: a·x + b·frost
REFERENCE_SIZE = 224  # ImageNet-C crops 224×224 patches of the photographs
N_QUANTILES = 33
N_BANDS = 7  # octaves of radial frequency from 1/224 cycles/px to the Nyquist corner
_LUMA = (0.2989, 0.5870, 0.1140)  # imagecorruptions' rgb2gray for greyscale inputs

# Recorded from frost1–frost5 by ``frost_statistics`` (``benchmarks/bench_imagenet_c_fidelity.py --record`` prints
# this table; a test recomputes it when imagecorruptions is installed). Per photograph: for R, G and B the values
# 0–255 at the quantiles 0, 1/32, …, 1 of all pixels of all 224² crops (each pixel weighted by how many crops hold
# it), and the fraction of luma variance in each octave band (Hann-windowed 224² crops, averaged).
# frost2 and frost3 (one profile: the two published files hold identical pixels)
_FROST2 = {
    "quantiles": (
        (55, 152, 163, 170, 175, 178, 182, 184, 187, 189, 191, 193, 195, 197, 198, 200, 201,
         202, 204, 205, 207, 208, 209, 211, 212, 214, 215, 217, 219, 221, 224, 227, 253),
        (56, 155, 166, 173, 178, 182, 185, 188, 191, 193, 195, 197, 199, 201, 202, 204, 206,
         207, 208, 210, 211, 213, 214, 216, 217, 219, 220, 222, 224, 226, 229, 232, 255),
        (60, 162, 174, 181, 186, 190, 194, 197, 200, 202, 204, 206, 208, 210, 212, 214, 215,
         217, 218, 220, 221, 223, 224, 226, 227, 229, 231, 232, 234, 236, 239, 242, 255),
    ),
    "bands": (0.137, 0.066, 0.09, 0.18, 0.184, 0.21, 0.133),
}

FROST_PROFILES: tuple[dict[str, tuple], ...] = (
    {  # frost1
        "quantiles": (
            (15, 35, 40, 43, 46, 49, 51, 54, 56, 58, 60, 62, 64, 66, 68, 70, 72,
             75, 77, 79, 82, 85, 88, 91, 95, 98, 102, 107, 112, 118, 127, 139, 201),
            (99, 120, 124, 127, 129, 131, 132, 134, 136, 137, 138, 140, 141, 142, 144, 145, 146,
             148, 149, 150, 152, 153, 155, 157, 158, 160, 163, 165, 168, 171, 175, 181, 230),
            (115, 139, 142, 144, 147, 148, 150, 152, 153, 155, 156, 157, 159, 160, 161, 162, 164,
             165, 166, 167, 169, 170, 171, 173, 174, 176, 178, 180, 182, 185, 188, 192, 235),
        ),
        "bands": (0.266, 0.147, 0.077, 0.048, 0.081, 0.196, 0.185),
    },
    _FROST2,  # frost2
    _FROST2,  # frost3: the same pixels as frost2 in the published files
    {  # frost4
        "quantiles": (
            (15, 91, 103, 110, 116, 120, 123, 126, 129, 132, 134, 136, 138, 140, 142, 144, 146,
             148, 150, 151, 153, 155, 157, 159, 161, 163, 166, 169, 172, 177, 183, 194, 251),
            (24, 106, 118, 125, 131, 135, 138, 141, 144, 147, 149, 151, 153, 155, 157, 159, 161,
             162, 164, 166, 168, 170, 172, 174, 176, 178, 181, 184, 187, 192, 198, 209, 255),
            (31, 116, 129, 136, 142, 146, 150, 153, 156, 158, 161, 163, 166, 168, 170, 172, 174,
             176, 178, 179, 181, 183, 185, 188, 190, 192, 195, 198, 202, 207, 213, 225, 255),
        ),
        "bands": (0.072, 0.028, 0.059, 0.117, 0.191, 0.306, 0.228),
    },
    {  # frost5
        "quantiles": (
            (14, 41, 48, 54, 58, 62, 66, 69, 73, 76, 79, 82, 85, 88, 90, 93, 96,
             99, 103, 106, 109, 113, 117, 121, 125, 129, 134, 140, 146, 154, 165, 182, 255),
            (25, 53, 60, 66, 70, 74, 78, 81, 84, 87, 90, 93, 96, 99, 102, 105, 108,
             111, 114, 117, 121, 124, 128, 132, 136, 140, 145, 151, 157, 165, 176, 192, 255),
            (36, 65, 72, 78, 83, 87, 90, 94, 97, 100, 103, 106, 109, 112, 115, 118, 120,
             123, 126, 130, 133, 136, 140, 144, 147, 152, 156, 161, 168, 175, 186, 201, 255),
        ),
        "bands": (0.056, 0.089, 0.158, 0.157, 0.17, 0.176, 0.194),
    },
)  # fmt: skip


def frost_source() -> str:
    """``"photos"`` or ``"procedural"``: what ``frost_layer`` uses here (``XAI_BENCH_FROST_TEXTURES`` or auto)."""
    choice = os.environ.get(FROST_TEXTURES_ENV, "auto").strip().lower()
    if choice not in ("auto", "photos", "procedural"):
        raise ValueError(f"{FROST_TEXTURES_ENV} must be auto, photos or procedural; got {choice!r}")
    if choice == "photos" and frost_photo_dir() is None:
        raise ValueError(f"{FROST_TEXTURES_ENV}=photos needs the optional package imagecorruptions "
                         "(pip install 'xai-bench[bench]')")
    if choice == "auto":
        choice = "photos" if frost_photo_dir() is not None else "procedural"
    _log_source_once(choice)
    return choice


@functools.cache
def _log_source_once(choice: str) -> None:
    if choice == "photos":
        log.info("frost: using ImageNet-C's frost photographs from %s", frost_photo_dir())
    else:
        log.info("frost: imagecorruptions not installed; using the calibrated procedural frost stand-in "
                 "(PSNR within ≈0.2 dB of the photographs; see xai_bench.robustness.corruptions._frost)")


@functools.cache
def _photos() -> tuple[Tensor, ...]:
    from PIL import Image

    folder = frost_photo_dir()
    if folder is None:
        raise FileNotFoundError("ImageNet-C's frost photographs come with the optional package imagecorruptions")
    out = []
    for name in FROST_PHOTOS[:5]:  # the reference draws randint(5): frost6 is never used
        with Image.open(folder / name) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1).contiguous())
    return tuple(out)


def _to_channels(rgb: Tensor, c: int) -> Tensor:
    if c == 3:
        return rgb
    luma = torch.tensor(_LUMA, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * luma).sum(1, keepdim=True).expand(-1, c, -1, -1)


def photo_frost(n: int, h: int, w: int, c: int, generator: torch.Generator | None, like: Tensor,
                photo: Tensor | None = None) -> Tensor:
    """Random H×W crops of ImageNet-C's frost photographs, one photograph per image, N×C×H×W on ``like``'s device.

    As ``make_imagenet_c.py`` at 224²: photograph ``randint(5)``, crop at its native resolution. A photograph
    smaller than the image is first enlarged (bicubic, like ``imagecorruptions``) just enough to cover it.
    Non-RGB images get the crop's luma (``imagecorruptions``' greyscale rule) in every channel. ``photo`` (N
    indices in 0–4) fixes each image's photograph, e.g. for stratified comparisons; the crops stay random.
    """
    photos = _photos()
    pick = rand((n, 3), generator, like.float()).double().cpu()  # photograph, crop top, crop left
    which = _which(pick[:, 0], photo, len(photos))
    out = torch.empty(n, 3, h, w, dtype=like.dtype, device=like.device)
    for i in range(n):  # one crop per image: slicing, no arithmetic
        img = photos[int(which[i])]
        ph, pw = img.shape[-2:]
        if ph < h or pw < w:
            s = max(h / ph, w / pw)
            img = F.interpolate(img[None], size=(math.ceil(ph * s), math.ceil(pw * s)), mode="bicubic",
                                align_corners=False)[0].clamp(0, 1)
            ph, pw = img.shape[-2:]
        top = min(int(pick[i, 1] * (ph - h + 1)), ph - h)
        left = min(int(pick[i, 2] * (pw - w + 1)), pw - w)
        out[i] = img[:, top : top + h, left : left + w].to(like.device, like.dtype)
    return _to_channels(out, c)


def _which(u: Tensor, photo: Tensor | None, k: int) -> Tensor:
    """Photograph (or profile) per image: ``floor(u·k)`` from uniform draws ``u``, unless ``photo`` fixes them."""
    if photo is None:
        return torch.floor(u * k).long().clamp(0, k - 1)
    photo = torch.as_tensor(photo).long().cpu().reshape(-1)
    if photo.numel() != u.numel() or photo.min() < 0 or photo.max() >= k:
        raise ValueError(f"photo must hold one index in 0–{k - 1} per image; got {photo.tolist()}")
    return photo


def _radial_frequency(h: int, w: int, device: torch.device) -> Tensor:
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, device=device, dtype=torch.float64)[None, :]
    return torch.sqrt(fy**2 + fx**2)


def _band_index(f: Tensor) -> Tensor:
    """Octave band of each radial frequency (cycles/px): band k holds [2^k, 2^(k+1))/224, the last one all above."""
    b = torch.floor(torch.log2((f * REFERENCE_SIZE).clamp_min(1.0)))
    return b.clamp(0, N_BANDS - 1).long()


def octave_band_power(g: Tensor) -> Tensor:
    """Fraction of the (Hann-windowed, mean-removed) variance of each N×H×W map in each of ``N_BANDS`` octaves."""
    h, w = g.shape[-2:]
    g = g.double()
    g = g - g.mean((-2, -1), keepdim=True)
    win = torch.hann_window(h, periodic=False, dtype=torch.float64, device=g.device)[:, None] * torch.hann_window(
        w, periodic=False, dtype=torch.float64, device=g.device)[None, :]
    spec = torch.fft.rfft2(g * win).abs() ** 2
    spec[..., 1 : (w + 1) // 2] *= 2  # rfft2 holds each non-self-conjugate column once
    band = _band_index(_radial_frequency(h, w, g.device))
    band[0, 0] = N_BANDS  # DC apart
    power = torch.zeros(*g.shape[:-2], N_BANDS + 1, dtype=torch.float64, device=g.device)
    power.index_add_(-1, band.reshape(-1), spec.reshape(*g.shape[:-2], -1))
    power = power[..., :N_BANDS]
    return power / power.sum(-1, keepdim=True).clamp_min(1e-300)


def frost_statistics(photo: Tensor, size: int = REFERENCE_SIZE, crops: int = 64, seed: int = 0) -> dict[str, tuple]:
    """The profile ``FROST_PROFILES`` records for one photograph (3×H×W in [0, 1], 8-bit values).

    ``quantiles``: per channel, the 0–255 values at ``N_QUANTILES`` evenly spaced levels of the crop-weighted pixel
    distribution (inverted CDF, so integers). ``bands``: ``octave_band_power`` of the luma, averaged over ``crops``
    random ``size``² crops, to three decimals.
    """
    _, ph, pw = photo.shape
    # how many size×size crops hold each pixel (the reference draws the crop's corner uniformly)
    cover_y = torch.ones(ph - size + 1, 1, 1, dtype=torch.float64)
    cover_x = torch.ones(pw - size + 1, 1, 1, dtype=torch.float64)
    wy = F.conv_transpose1d(cover_y.view(1, 1, -1), torch.ones(1, 1, size, dtype=torch.float64))[0, 0]
    wx = F.conv_transpose1d(cover_x.view(1, 1, -1), torch.ones(1, 1, size, dtype=torch.float64))[0, 0]
    weight = (wy[:, None] * wx[None, :]).reshape(-1)
    levels = torch.linspace(0, 1, N_QUANTILES, dtype=torch.float64)
    quantiles = []
    for ch in photo:
        values = torch.round(ch.double() * 255).reshape(-1)
        order = values.argsort()
        cdf = weight[order].cumsum(0) / weight.sum()
        at = torch.searchsorted(cdf, levels.clamp(max=1 - 1e-12)).clamp(max=values.numel() - 1)
        quantiles.append(tuple(int(v) for v in values[order][at]))
    g = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, ph - size + 1, (crops,), generator=g)
    lefts = torch.randint(0, pw - size + 1, (crops,), generator=g)
    luma = (photo.double() * torch.tensor(_LUMA, dtype=torch.float64).view(3, 1, 1)).sum(0)
    patches = torch.stack([luma[t : t + size, s : s + size] for t, s in zip(tops.tolist(), lefts.tolist())])
    bands = octave_band_power(patches).mean(0)
    return {"quantiles": tuple(quantiles), "bands": tuple(round(float(b), 3) for b in bands)}


def format_profiles(profiles: list[dict[str, tuple]]) -> str:
    """Python source of ``FROST_PROFILES`` for the given ``frost_statistics`` (what ``--record`` prints)."""
    lines = ["FROST_PROFILES: tuple[dict[str, tuple], ...] = ("]
    for i, prof in enumerate(profiles):
        lines += [f"    {{  # frost{i + 1}", '        "quantiles": (']
        for q in prof["quantiles"]:
            half = (len(q) + 1) // 2
            lines += ["            (" + ", ".join(map(str, q[:half])) + ",",
                      "             " + ", ".join(map(str, q[half:])) + "),"]
        lines += ["        ),", '        "bands": (' + ", ".join(map(str, prof["bands"])) + "),", "    },"]
    return "\n".join([*lines, ")  # fmt: skip"])


def procedural_frost(n: int, h: int, w: int, c: int, generator: torch.Generator | None, like: Tensor,
                     photo: Tensor | None = None) -> Tensor:
    """A stand-in for ImageNet-C's frost crops calibrated on the photographs, N×C×H×W in [0, 1].

    Per image: a profile of ``FROST_PROFILES`` drawn uniformly (as the reference draws a photograph); white noise
    shaped in Fourier space to the profile's octave-band spectrum (flat within each octave); then each channel
    takes, by rank, the profile's quantile function — so the mean, contrast and histogram are the photograph's and
    the spectrum close to it: ``octave_band_power`` within 0.05 per octave, except the lowest (1–2 cycles per
    image), which gets about 60 % of the photographs' share because their crops also hold structure larger than
    the crop and the stand-in is periodic at the image size. ``photo`` fixes
    each image's profile as in ``photo_frost``.
    """
    dev = like.device
    pick = _which(rand((n,), generator, like.float()).cpu(), photo, len(FROST_PROFILES)).to(dev)
    bands = torch.tensor([p["bands"] for p in FROST_PROFILES], dtype=torch.float64, device=dev)[pick]  # N×B
    q = torch.tensor([p["quantiles"] for p in FROST_PROFILES], dtype=torch.float64, device=dev)[pick] / 255  # N×3×Q

    f = _radial_frequency(h, w, dev)
    band = _band_index(f)
    count = torch.bincount(band[f > 0].reshape(-1), minlength=N_BANDS).clamp_min(1).double()
    amp = (bands / count).sqrt()[:, band]  # N×H×(W/2+1): each band's variance spread evenly over its bins
    amp[:, 0, 0] = 0
    noise = randn((n, h, w), generator, like.float()).double()
    field = torch.fft.irfft2(torch.fft.rfft2(noise) * amp, s=(h, w)).reshape(n, -1)

    # rank → quantile function (linear between the recorded quantiles), the same ranks for every channel
    m = h * w
    u = (torch.arange(m, dtype=torch.float64, device=dev) + 0.5) / m * (N_QUANTILES - 1)
    i0 = u.floor().long().clamp(max=N_QUANTILES - 2)
    frac = u - i0
    values = q[..., i0] * (1 - frac) + q[..., i0 + 1] * frac  # N×3×M, ascending
    order = field.argsort(dim=1)
    out = torch.empty(n, 3, m, dtype=torch.float64, device=dev)
    out.scatter_(2, order[:, None, :].expand(n, 3, m), values)
    return _to_channels(out.reshape(n, 3, h, w).to(like.dtype), c)


def frost_layer(n: int, h: int, w: int, c: int, generator: torch.Generator | None, like: Tensor,
                source: str | None = None, photo: Tensor | None = None) -> Tensor:
    """ImageNet-C's frost texture for N images (``source``: ``"photos"``, ``"procedural"``, or None for auto)."""
    source = frost_source() if source is None else source
    if source == "photos":
        return photo_frost(n, h, w, c, generator, like, photo)
    if source == "procedural":
        return procedural_frost(n, h, w, c, generator, like, photo)
    raise ValueError(f"source must be 'photos' or 'procedural'; got {source!r}")
