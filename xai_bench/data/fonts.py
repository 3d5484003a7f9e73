"""Glyph images rendered from fonts: the `glyphs` dataset, an offline stand-in for a class-per-folder alphabet (ASL).

Letters are rendered with Pillow from the TrueType fonts a Debian package ships (``fonts-dejavu-core``, 22 faces of
DejaVu Sans/Serif/Mono in regular, bold, oblique and condensed) in random face, size, rotation, position and
colours, on a smooth two-colour background with a distractor stroke and pixel noise, then written as
``<root>/<letter>/<index>.png``. The folder is read back by :func:`xai_bench.data.imagefolder` exactly as a
downloaded ASL folder would be, so the study that trains on it runs on the real dataset by pointing
``dataset=imagefolder dataset.root=…`` at it. Generation is seeded and deterministic; a ``.glyphs.json`` stamp in the
folder records the settings, and a folder made with other settings is regenerated, never silently reused.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from xai_bench.errors import DataMissingError
from xai_bench.progress import ProgressBar

__all__ = ["DEJAVU_DIR", "render_glyph_folder"]

log = logging.getLogger(__name__)

DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
_STAMP = ".glyphs.json"


def _fonts(font_dir: str | Path) -> list[Path]:
    fonts = sorted(p for p in Path(font_dir).glob("*.ttf") if "Math" not in p.name)  # the math face lacks style
    if not fonts:
        raise DataMissingError(f"dataset.font_dir={font_dir} holds no .ttf fonts; on Debian/Ubuntu `apt-get "
                               "install fonts-dejavu-core`, or point dataset.font_dir at a folder of .ttf files")
    return fonts


def _render(letter: str, font: Path, size: int, rng: np.random.Generator) -> Image.Image:
    """One letter at 2× resolution, then downsampled (anti-aliased edges)."""
    big = 2 * size
    yy, xx = np.mgrid[0:big, 0:big] / big
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy + 1) / 2  # a linear gradient between two random colours
    bg = (c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]) * 255
    img = Image.fromarray(bg.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    stroke = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.line([tuple(rng.integers(0, big, 2).tolist()), tuple(rng.integers(0, big, 2).tolist())], fill=stroke,
              width=int(rng.integers(1, max(2, big // 24))))
    # the letter's colour keeps a contrast to the background's mean, so it is always visible
    mean = bg.reshape(-1, 3).mean(0)
    colour = np.where(mean > 127, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3))
    face = ImageFont.truetype(str(font), int(big * rng.uniform(0.5, 0.8)))
    layer = Image.new("L", (big, big), 0)
    ImageDraw.Draw(layer).text((big / 2, big / 2), letter, font=face, fill=255, anchor="mm")
    layer = layer.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR,
                         translate=tuple((rng.uniform(-0.12, 0.12, 2) * big).tolist()))
    img.paste(Image.new("RGB", (big, big), tuple(int(v) for v in colour)), (0, 0), layer)
    img = img.resize((size, size), Image.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render_glyph_folder(root: str | Path, letters: Sequence[str], per_class: int, image_size: int, seed: int = 0,
                        font_dir: str | Path = DEJAVU_DIR) -> Path:
    """Write ``per_class`` images of each letter to ``root/<letter>/<i>.png`` (if the folder does not already hold
    exactly these settings) and return ``root``.

    Args:
        root: the output folder (created).
        letters: the classes, one folder each (e.g. ``"ABCDEFGHIKLMNOPQRSTUVWXY"``, ASL's 24 static letters).
        per_class: images per letter.
        image_size: side of the square images in pixels.
        seed: generation seed (the same seed gives the same files).
        font_dir: a folder of ``.ttf`` faces to draw from.
    """
    root = Path(root)
    if len(set(letters)) != len(letters) or len(letters) < 2 or per_class < 1 or image_size < 8:
        raise ValueError(f"dataset.letters={list(letters)!r} must be ≥ 2 distinct letters, dataset.per_class ≥ 1 "
                         f"(got {per_class}) and dataset.image_size ≥ 8 (got {image_size})")
    fonts = _fonts(font_dir)
    settings = {"letters": list(letters), "per_class": int(per_class), "image_size": int(image_size),
                "seed": int(seed), "fonts": [f.name for f in fonts], "version": 1}
    stamp = root / _STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        return root
    if root.exists():
        if not stamp.is_file():
            raise FileExistsError(f"dataset.root={root} exists and was not made by the glyphs dataset; choose "
                                  "another dataset.root")
        shutil.rmtree(root)  # ours, made with other settings
    log.info("rendering %d × %d glyph images (%d px) into %s", len(letters), per_class, image_size, root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    with ProgressBar(total=len(letters) * per_class, desc="glyphs", unit="img") as bar:
        for k, letter in enumerate(letters):
            rng = np.random.default_rng([int(seed), k])
            (tmp / letter).mkdir(parents=True)
            for i in range(per_class):
                font = fonts[int(rng.integers(len(fonts)))]
                _render(letter, font, int(image_size), rng).save(tmp / letter / f"{i:05d}.png")
            bar.update(per_class)
    (tmp / _STAMP).write_text(json.dumps(settings))
    tmp.rename(root)  # a half-written folder never looks finished
    return root
