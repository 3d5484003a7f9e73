"""Stitch the README's study figures (docs/img/study_*.png) from the figures the studies' own runs wrote.

Nothing is redrawn: each panel is a PNG a study step wrote, placed side by side (or stacked), so the README shows
exactly what the runs produced. Run after `python benchmarks/time_studies.py` (or the studies' commands):

    python docs/study_figures.py                      # reads outputs/ and multirun/ of this checkout
    python docs/study_figures.py --root /path/to/checkout --out docs/img

A study whose figures are missing is reported and skipped (exit status 1), never drawn from older runs' leftovers:
each panel comes from the newest run folder of its step.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

# study → rows of panels; each panel a glob under the root, the newest match wins ("*" in a run folder's date).
STUDIES: dict[str, list[list[str]]] = {
    "ood_ensemble": [["outputs/evaluate/*/figures/still_correct.png"]],
    "asl_cnn_vs_darknet": [["outputs/studies/asl_cnn_vs_darknet/attack/accuracy_vs_eps.png"],
                           ["outputs/studies/asl_cnn_vs_darknet/explain/0/figures/lime_topk.png",
                            "outputs/studies/asl_cnn_vs_darknet/explain/1/figures/lime_topk.png"]],
    "cifar_vgg_resnet": [["outputs/studies/cifar_vgg_resnet/attack/0/figures/adversarial_grid.png",
                          "outputs/studies/cifar_vgg_resnet/explain/0/figures/attributions.png"],
                         ["outputs/studies/cifar_vgg_resnet/attack/1/figures/adversarial_grid.png",
                          "outputs/studies/cifar_vgg_resnet/explain/1/figures/attributions.png"]],
    "lime_vs_rise": [["multirun/explain/*/0_efficientnet_lite0/figures/attributions_isolines.png"],
                     ["multirun/explain/*/0_efficientnet_lite0/figures/metrics.png",
                      "multirun/explain/*/1_efficientnet_lite1/figures/metrics.png"]],
    "xai_suite": [["outputs/explain/*/figures/attributions.png"]],
}
# xai_suite's run folder is told apart from other explain runs by the rise_20000 method it holds.
MARKERS = {"xai_suite": "rise_20000", "lime_vs_rise": "rise_grid15"}


def newest(root: Path, pattern: str, marker: str | None) -> Path | None:
    hits = [p for p in root.glob(pattern) if p.is_file()]
    if marker:
        hits = [p for p in hits if marker in _config_text(p)]
    return max(hits, key=lambda p: p.stat().st_mtime) if hits else None


def _config_text(png: Path) -> str:
    for parent in png.parents:
        cfg = parent / ".hydra" / "config.yaml"
        if cfg.is_file():
            return cfg.read_text()
    return ""


def stitch(rows: list[list[Path]], pad: int = 12) -> Image.Image:
    """Rows of images, each row scaled to one height, rows scaled to one width, on white."""
    strips = []
    for row in rows:
        ims = [Image.open(p).convert("RGB") for p in row]
        h = max(im.height for im in ims)
        ims = [im.resize((round(im.width * h / im.height), h), Image.LANCZOS) if im.height != h else im for im in ims]
        strip = Image.new("RGB", (sum(im.width for im in ims) + pad * (len(ims) - 1), h), "white")
        x = 0
        for im in ims:
            strip.paste(im, (x, 0))
            x += im.width + pad
        strips.append(strip)
    w = max(s.width for s in strips)
    strips = [s.resize((w, round(s.height * w / s.width)), Image.LANCZOS) if s.width != w else s for s in strips]
    out = Image.new("RGB", (w, sum(s.height for s in strips) + pad * (len(strips) - 1)), "white")
    y = 0
    for s in strips:
        out.paste(s, (0, y))
        y += s.height + pad
    return out


def save_small(image: Image.Image, path: Path, max_width: int = 1400) -> None:
    """Save for the README at most ``max_width`` px wide (the photo panels made full-size PNGs of several MB). Full
    colour: a 256-colour palette banded the colour bars."""
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    image.save(path, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "img")
    parser.add_argument("--studies", nargs="+", choices=sorted(STUDIES), default=list(STUDIES))
    parser.add_argument("--max-width", type=int, default=1400,
                        help="scale wider figures down to this (px); xai_suite's one row of 12 panels gets 2400")
    args = parser.parse_args()
    missing = 0
    for study in args.studies:
        rows = [[newest(args.root, pattern, MARKERS.get(study)) for pattern in row] for row in STUDIES[study]]
        absent = [pattern for row, got in zip(STUDIES[study], rows) for pattern, p in zip(row, got) if p is None]
        if absent:
            print(f"{study}: skipped, no figure for {absent}", file=sys.stderr)
            missing += 1
            continue
        name = "study_ood_ensemble_still_correct.png" if study == "ood_ensemble" else f"study_{study}.png"
        save_small(stitch(rows), args.out / name, max(args.max_width, 2400) if study == "xai_suite" else args.max_width)
        print(f"{study}: {args.out / name} from {[str(p.relative_to(args.root)) for row in rows for p in row]}")
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
