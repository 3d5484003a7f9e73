"""Image decoding, train-time augmentation from config, and eval transforms that follow the model's input policy."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class BadImageError(ValueError):
    """An image file that cannot be used as it is: undecodable, a decompression bomb, non-finite or out-of-range
    float pixels. Folder datasets skip such files and list them (``DataBundle.skipped``); the message names the file.
    """


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not valid UTF-8 (kept by Python as surrogate escapes) are written
    as ``\\xNN``, so the name can go into a CSV, JSON or safetensors file without crashing the run at the end."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def load_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Decode ``path`` with Pillow into an 8-bit RGB (channels=3) or L (channels=1) image, upright.

    The contract, one rule per kind of file:

    - EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo tagged "rotate 90°" is seen upright.
    - 16-bit images are rescaled to 8 bits; RGBA/LA are composited on white (a transparent background otherwise
      turns black and becomes a spurious feature); palette images are expanded.
    - 32-bit float images (mode ``F``, e.g. float TIFFs) are read as intensities in [0, 1]. A NaN or ±inf pixel, or
      any value outside [0, 1] (a 0–4000 sensor range, say), is refused: rescaling by the image's own range would
      give every image a different brightness scale, and clipping would silently flatten it.
    - Undecodable files (zero bytes, truncated, text named ``.png``, macOS ``._x.png`` metadata) and decompression
      bombs (more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels) are refused.

    Every refusal raises :class:`BadImageError` (a ``ValueError``) naming the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {display_path(path)} does not exist")
    name = display_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                img = ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImageError(f"{name}: decompression bomb ({exc}); it is refused rather than decoded. Downscale it, "
                            "or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        hint = " (a macOS metadata file; delete the ._* files)" if path.name.startswith("._") else ""
        raise BadImageError(f"cannot decode image {name}{hint}: {exc or type(exc).__name__}. Remove it or convert "
                            "it to PNG/JPEG.") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        img = Image.fromarray(_float_to_8bit(np.asarray(img, dtype=np.float64), name), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if channels == 1:
        return img.convert("L")
    if channels == 3:
        return img.convert("RGB")
    raise ValueError(f"images can be loaded with 1 or 3 channels, not {channels}")


def _float_to_8bit(arr: np.ndarray, name: str) -> np.ndarray:
    """A float image in [0, 1] as uint8; anything else is refused (see :func:`load_image`)."""
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        raise BadImageError(f"{name}: float image with {n_nan} NaN and {n_inf} infinite pixel(s); xai-bench refuses "
                            "non-finite images. Fill or mask those pixels and save the image again.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 1:
        raise BadImageError(f"{name}: float image with values in [{lo:.4g}, {hi:.4g}]; float images are read as "
                            "intensities in [0, 1]. Rescale it to [0, 1] (e.g. divide by the sensor's full range) "
                            "or save it as an 8/16-bit integer image.")
    return (arr * 255.0 + 0.5).astype(np.uint8)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def build_augment(cfg: dict[str, Any] | None, image_size: int | None = None) -> Callable | None:
    """Train-time augmentation from config keys ``rotation`` (degrees), ``translate`` (fraction), ``crop_padding``
    (pixels, random crop after padding), ``hflip`` (bool), ``scale`` ([min, max] zoom). Works on C×H×W tensors."""
    if not cfg:
        return None
    from torchvision.transforms import v2

    known = {"rotation", "translate", "crop_padding", "hflip", "scale"}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {sorted(unknown)} in dataset.augment; known: {sorted(known)}")
    ops: list[Callable] = []
    if cfg.get("crop_padding"):
        if image_size is None:
            raise ValueError("dataset.augment.crop_padding needs a fixed dataset.image_size")
        ops.append(v2.RandomCrop(image_size, padding=int(cfg["crop_padding"]), padding_mode="reflect"))
    if cfg.get("hflip"):
        ops.append(v2.RandomHorizontalFlip())
    rotation, translate, scale = cfg.get("rotation") or 0, cfg.get("translate") or 0, cfg.get("scale")
    if rotation or translate or scale:
        ops.append(v2.RandomAffine(degrees=float(rotation), translate=(translate, translate) if translate else None,
                                   scale=tuple(scale) if scale else None))
    return v2.Compose(ops) if ops else None


def eval_transform(input_size: tuple[int, int, int],
                   resize_size: int | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image → C×H×W tensor in [0, 1] following a model's policy: resize the shorter side to ``resize_size``
    and centre-crop to ``input_size`` (ImageNet style), or resize straight to ``input_size`` when it is ``None``."""
    from torchvision.transforms import v2

    c, h, w = input_size
    steps: list[Callable] = []
    if resize_size:
        steps += [v2.Resize(int(resize_size), antialias=True), v2.CenterCrop((h, w))]
    else:
        steps += [v2.Resize((h, w), antialias=True)]
    resize = v2.Compose(steps)

    def apply(img: Image.Image) -> torch.Tensor:
        img = img.convert("L" if c == 1 else "RGB")
        return resize(pil_to_tensor(img)).clamp_(0, 1)

    return apply
