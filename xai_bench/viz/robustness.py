"""Robustness figures: accuracy against attack budget, clean | perturbation | adversarial, corruption heat map."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from xai_bench.viz._common import (
    _FONT,
    _LINE_IN,
    _MARKERS,
    ArrayLike,
    _aspect,
    _batch,
    _check_len,
    _clean_axis,
    _draw_image,
    _grid,
    _image_np,
    _n_lines,
    _new_figure,
    _to_numpy,
    _wrap,
)

__all__ = ["accuracy_vs_eps", "adversarial_grid", "corruption_heatmap"]


def accuracy_vs_eps(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str = "ε (pixel units, ×255)",
    ylabel: str = "accuracy",
    scale_255: bool = True,
    title: str | None = None,
) -> Figure:
    """Robust accuracy against attack budget, one line with markers per model.

    Args:
        curves: model name → ``(epsilons, accuracies)``; ε in [0, 1] pixel units, accuracies in [0, 1].
        xlabel, ylabel: axis labels.
        scale_255: plot ε × 255 (so 8/255 reads as 8).
        title: axes title.

    Returns:
        The figure.
    """
    if not curves:
        raise ValueError("curves is empty; pass model name → (epsilons, accuracies)")
    fig = _new_figure((5.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    top = 1.0
    for i, (name, (eps, acc)) in enumerate(curves.items()):
        e = _to_numpy(eps, f"curves[{name!r}] epsilons").reshape(-1)
        a = _to_numpy(acc, f"curves[{name!r}] accuracies").reshape(-1)
        if e.shape != a.shape:
            raise ValueError(f"curves[{name!r}] has {e.size} epsilons but {a.size} accuracies")
        order = np.argsort(e)
        top = max(top, float(a.max(initial=0)))
        ax.plot(e[order] * (255 if scale_255 else 1), a[order], marker=_MARKERS[i % len(_MARKERS)], markersize=5,
                linewidth=1.5, label=str(name))
    ax.set_ylim(0, 1.02 if top <= 1 else top * 1.02)
    ax.set_xlabel(xlabel, fontsize=_FONT + 1)
    ax.set_ylabel(ylabel, fontsize=_FONT + 1)
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=_FONT - 1, frameon=False)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig


def adversarial_grid(
    clean: ArrayLike,
    adv: ArrayLike,
    clean_titles: Sequence[str] | None = None,
    adv_titles: Sequence[str] | None = None,
    perturbation_scale: float | str = "auto",
    *,
    images_per_row: int = 1,
    cell_size: float = 1.8,
    operators: bool = True,
) -> Figure:
    """The "panda → gibbon" figure: clean | perturbation | adversarial, for each image.

    After Goodfellow et al., "Explaining and Harnessing Adversarial Examples" (ICLR 2015, Fig. 1). The
    perturbation ``δ = adv − clean`` is drawn as ``0.5 + scale·δ`` (mid-gray = no change) so that a few
    pixel levels become visible; its title gives the scale and ``‖δ‖∞`` in 1/255 units.

    Args:
        clean: ``N×C×H×W`` clean images in [0, 1].
        adv: ``N×C×H×W`` adversarial images in [0, 1].
        clean_titles: one title per image (e.g. ``"panda 57.7%"``).
        adv_titles: one title per adversarial image (e.g. ``"gibbon 99.3%"``).
        perturbation_scale: ``"auto"`` maps each image's ``max|δ|`` to mid-gray ± 0.5; a number fixes the scale
            for all images (so their perturbations can be compared).
        images_per_row: triplets per row (e.g. 2 for a 2-column layout of 4 images).
        cell_size: width of one panel in inches.
        operators: draw "+" and "=" between the panels.

    Returns:
        The figure.
    """
    x = _batch(clean, "clean")
    xa = _batch(adv, "adv")
    if x.shape != xa.shape:
        raise ValueError(f"clean {tuple(x.shape)} and adv {tuple(xa.shape)} must have the same shape")
    n = x.shape[0]
    _check_len(clean_titles, n, "clean_titles")
    _check_len(adv_titles, n, "adv_titles")
    if isinstance(perturbation_scale, str) and perturbation_scale != "auto":
        raise ValueError(f"perturbation_scale must be 'auto' or a positive number, got {perturbation_scale!r}")
    if not isinstance(perturbation_scale, str) and perturbation_scale <= 0:
        raise ValueError(f"perturbation_scale must be positive, got {perturbation_scale}")
    if images_per_row < 1:
        raise ValueError(f"images_per_row must be ≥ 1, got {images_per_row}")
    delta = xa - x
    linf = np.abs(delta).reshape(n, -1).max(axis=1)
    if perturbation_scale == "auto":
        scales = np.where(linf > 0, 0.5 / np.maximum(linf, 1e-12), 1.0)
    else:
        scales = np.full(n, float(perturbation_scale))
    per_row = min(images_per_row, n)
    nrows = math.ceil(n / per_row)
    titles = [[_wrap(t, cell_size) for t in ts] if ts else [] for ts in (clean_titles, adv_titles)]
    delta_titles = [_wrap(f"δ ×{s:.3g}  (‖δ‖∞={255 * l:.3g}/255)", cell_size, _FONT - 1)
                    for s, l in zip(scales, linf)]  # noqa: E741
    title_h = _LINE_IN * max(_n_lines(titles[0]), _n_lines(titles[1]), _n_lines(delta_titles))
    gap = 0.3 if operators else 0.05
    fig, axes, _, _ = _grid(nrows, [3] * per_row, aspect=_aspect(*x.shape[2:]), cell_w=cell_size, left=0.05,
                            right=0.05, top=0.05 + title_h, bottom=0.05, wspace=gap, hspace=0.1 + title_h,
                            block_gap=0.35)
    width, height = fig.get_size_inches()
    for idx in range(nrows * per_row):
        r, c = divmod(idx, per_row)
        ax_c, ax_d, ax_a = axes[r][3 * c: 3 * c + 3]
        if idx >= n:
            for ax in (ax_c, ax_d, ax_a):
                ax.remove()
            continue
        _draw_image(ax_c, _image_np(x[idx], f"clean[{idx}]"))
        _draw_image(ax_d, np.clip(0.5 + scales[idx] * _delta_hwc(delta[idx]), 0, 1))
        _draw_image(ax_a, _image_np(xa[idx], f"adv[{idx}]"))
        for ax in (ax_c, ax_d, ax_a):
            _clean_axis(ax)
        if titles[0]:
            ax_c.set_title(titles[0][idx], fontsize=_FONT)
        ax_d.set_title(delta_titles[idx], fontsize=_FONT - 1)
        if titles[1]:
            ax_a.set_title(titles[1][idx], fontsize=_FONT)
        if operators:
            for left_ax, sym in ((ax_c, "+"), (ax_d, "=")):
                box = left_ax.get_position()
                fig.text(box.x1 + gap / 2 / width, (box.y0 + box.y1) / 2, sym, ha="center", va="center",
                         fontsize=_FONT + 5)
    return fig


def _delta_hwc(d: np.ndarray) -> np.ndarray:
    return d[0] if d.shape[0] == 1 else d.transpose(1, 2, 0)


def corruption_heatmap(
    acc: ArrayLike,
    corruption_names: Sequence[str],
    severities: Sequence[Any],
    *,
    title: str | None = None,
    cmap: str = "viridis",
    vmin: float = 0.0,
    vmax: float | None = None,
    fmt: str = ".2f",
    colorbar_label: str = "accuracy",
) -> Figure:
    """Accuracy per corruption (rows) and severity (columns), annotated (Hendrycks & Dietterich, ICLR 2019).

    Args:
        acc: ``n_corruptions × n_severities`` accuracies.
        corruption_names: row labels.
        severities: column labels (e.g. ``[1, 2, 3, 4, 5]``).
        title: axes title.
        cmap: colormap. Default ``"viridis"``.
        vmin, vmax: colour range (default 0 and ``max(1, acc.max())``).
        fmt: format of the cell values.
        colorbar_label: colorbar label.

    Returns:
        The figure.
    """
    a = _to_numpy(acc, "acc")
    if a.ndim != 2:
        raise ValueError(f"acc must be n_corruptions × n_severities, got shape {tuple(a.shape)}")
    if len(corruption_names) != a.shape[0] or len(severities) != a.shape[1]:
        raise ValueError(f"acc is {a.shape[0]}×{a.shape[1]} but got {len(corruption_names)} corruption_names and "
                         f"{len(severities)} severities")
    vmax = max(1.0, float(np.nanmax(a))) if vmax is None else vmax
    label_w = 0.07 * max(len(str(c)) for c in corruption_names)
    fig = _new_figure((1.6 + label_w + 0.55 * a.shape[1], 1.2 + 0.32 * a.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=ax, label=colorbar_label, fraction=0.05, pad=0.02)
    ax.set_xticks(range(a.shape[1]), [str(s) for s in severities], fontsize=_FONT)
    ax.set_yticks(range(a.shape[0]), [str(c) for c in corruption_names], fontsize=_FONT)
    ax.set_xlabel("severity", fontsize=_FONT + 1)
    cm = colormaps[cmap]
    norm = Normalize(vmin=vmin, vmax=vmax)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            v = a[i, j]
            if np.isnan(v):
                continue
            r, g, b, _ = cm(norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived luminance decides the text colour
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=_FONT - 1,
                    color="white" if dark else "black")
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig
