"""Fidelity of our ImageNet-C corruptions against the reference implementation (``imagecorruptions``).

For each corruption and severity: the mean over photos × random draws of the PSNR of the corrupted image against
the clean one, ours and the reference's, their difference (ours − reference; positive = ours is milder), and the
time per 224² image. Photos are scikit-image's bundled ones, resized (shorter side) and centre-cropped to 224².
Frost is reported twice: with ImageNet-C's photographs (what ``corrupt`` uses when ``imagecorruptions`` is
installed) and with the procedural stand-in (what it uses otherwise). Its PSNR depends mostly on which of the five
photographs a draw picks, so frost draws are stratified: draw r of every photo uses frost photograph r mod 5, on
both sides (the reference's seeds are chosen so that its first ``randint(5)`` gives that photograph).

    pip install 'xai-bench[bench]'   # imagecorruptions, with its frost photographs
    PYTHONPATH=. python benchmarks/bench_imagenet_c_fidelity.py                   # frost and glass blur
    PYTHONPATH=. python benchmarks/bench_imagenet_c_fidelity.py --names '*' --repeats 2
    PYTHONPATH=. python benchmarks/bench_imagenet_c_fidelity.py --record          # FROST_PROFILES source
"""

from __future__ import annotations

import argparse
import fnmatch
import time

import numpy as np
import torch

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.robustness import corruptions as C
from xai_bench.robustness.corruptions import _frost
from xai_bench.robustness.corruptions._reference import load_imagecorruptions

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "immunohistochemistry", "hubble_deep_field", "camera")
SLOW_REFERENCE = {"glass_blur"}  # ≈2 s per image in the reference's per-pixel Python loop


def load_photos(size: int = 224, names: tuple[str, ...] = PHOTOS) -> np.ndarray:
    """scikit-image photos as uint8 N×size×size×3: shorter side resized to ``size`` (bicubic), centre crop."""
    from PIL import Image
    from skimage import data

    out = []
    for name in names:
        im = Image.fromarray(getattr(data, name)()).convert("RGB")
        s = size / min(im.size)
        im = im.resize((max(size, round(im.width * s)), max(size, round(im.height * s))), Image.BICUBIC)
        left, top = (im.width - size) // 2, (im.height - size) // 2
        out.append(np.asarray(im.crop((left, top, left + size, top + size))))
    return np.stack(out)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR in dB of images in [0, 1], one value per leading index."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-20))


def ours(photos: np.ndarray, name: str, severity: int, repeats: int, texture: str | None) -> tuple[np.ndarray, float]:
    # draw r of all photos first, then draw r + 1, … (the reference's order below)
    x = torch.from_numpy(photos).permute(0, 3, 1, 2).float().div(255).repeat(repeats, 1, 1, 1)
    seed = 1000 * severity + repeats
    t0 = time.perf_counter()
    if name == "frost":  # C.corrupt's frost, with the photograph fixed per draw (stratified)
        a, b = _frost.FROST_BLEND[severity - 1]
        stratum = torch.arange(repeats).repeat_interleave(len(photos)) % 5
        layer = _frost.frost_layer(len(x), *x.shape[-2:], 3, torch.Generator().manual_seed(seed), x,
                                   source=texture, photo=stratum)
        y = (a * x + b * layer).clamp(0, 1)
    else:
        y = C.corrupt(x, name, severity, seed=seed)
    dt = time.perf_counter() - t0
    return psnr(y.permute(0, 2, 3, 1).numpy(), x.permute(0, 2, 3, 1).numpy()), dt / len(x)


def _seed_picking(photo: int, start: int) -> int:
    """The first seed ≥ ``start`` whose first ``np.random.randint(5)`` is ``photo`` (the reference frost's pick)."""
    seed = start
    while np.random.RandomState(seed).randint(5) != photo:
        seed += 1
    return seed


def reference(ic, photos: np.ndarray, name: str, severity: int, repeats: int) -> tuple[np.ndarray, float]:
    fn = ic.corruption_dict[name]
    scores, elapsed = [], 0.0
    for r in range(repeats):
        for i, img in enumerate(photos):
            seed = 10_000 * severity + 100 * r + i
            np.random.seed(_seed_picking(r % 5, 1000 * seed) if name == "frost" else seed)
            t0 = time.perf_counter()
            # the corruption functions return floats in [0, 255] (``ic.corrupt`` would truncate to uint8)
            y = np.clip(np.asarray(fn(img.copy(), severity), dtype=np.float64), 0, 255) / 255
            elapsed += time.perf_counter() - t0
            scores.append(psnr(y[None], img[None] / 255.0)[0])
    return np.array(scores), elapsed / (repeats * len(photos))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names", default="frost,glass_blur",
                        help="comma-separated corruption names or fnmatch patterns ('*' = all 15 + extras)")
    parser.add_argument("--repeats", type=int, default=40,
                        help="random draws per photo (frost and other fast ones; frost: a multiple of 5)")
    parser.add_argument("--slow-repeats", type=int, default=2, help="random draws per photo for glass blur")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on shared CPUs)")
    parser.add_argument("--record", action="store_true", help="print FROST_PROFILES from the photographs and exit")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.record:
        print(_frost.format_profiles([_frost.frost_statistics(p) for p in _frost._photos()]))
        return

    ic = load_imagecorruptions()
    patterns = [p.strip() for p in args.names.split(",") if p.strip()]
    names = [n for n in C.list_corruptions()
             if n in ic.corruption_dict and any(fnmatch.fnmatch(n, p) for p in patterns)]
    photos = load_photos(args.size)
    rows = []
    for name in names:
        repeats = args.slow_repeats if name in SLOW_REFERENCE else args.repeats
        variants = [("photos", "photos"), ("stand-in", "procedural")] if name == "frost" else [("", None)]
        for severity in range(1, 6):
            ref, t_ref = reference(ic, photos, name, severity, repeats)
            for label, texture in variants:
                ours_psnr, t_ours = ours(photos, name, severity, repeats, texture)
                rows.append((f"{name} ({label})" if label else name, severity, ours_psnr.mean(), ref.mean(),
                             ours_psnr.mean() - ref.mean(), 1e3 * t_ours, 1e3 * t_ref, len(ref)))

    print(f"mean PSNR (dB) of corrupted vs clean, {len(photos)} photos {args.size}², ours vs imagecorruptions "
          f"{getattr(ic, '__version__', '1.1.2')}; ms per image ({torch.get_num_threads()} torch thread(s); ours "
          "batched over all draws)")
    header = (f"{'corruption':<20}{'sev':>4}{'ours':>9}{'reference':>11}{'diff':>8}"
              f"{'ms ours':>10}{'ms ref':>10}{'draws':>7}")
    print(header)
    print("-" * len(header))
    for label, sev, o, r, d, to, tr, k in rows:
        print(f"{label:<20}{sev:>4}{o:>9.2f}{r:>11.2f}{d:>+8.2f}{to:>10.1f}{tr:>10.1f}{k:>7}")
    worst = max(rows, key=lambda row: abs(row[4]))
    print(f"largest |diff|: {worst[0]} severity {worst[1]}: {worst[4]:+.2f} dB")


if __name__ == "__main__":
    main()
