"""Robustness figures: accuracy against attack budget, clean | perturbation | adversarial, corruption heat map, accuracy
per corruption, and a gallery of corrupted images."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

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

__all__ = ["accuracy_vs_eps", "adversarial_grid", "corruption_bars", "corruption_gallery", "corruption_heatmap"]


def accuracy_vs_eps(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str | None = None,
    ylabel: str = "accuracy",
    scale_255: bool = True,
    title: str | None = None,
    xscale: str = "symlog",
) -> Figure:
    """Robust accuracy against attack budget, one line with markers per model.

    Accuracy typically collapses between 0 and 2/255, so the default ``symlog`` axis is linear from 0 to the smallest
    positive ε (1/255 with ``scale_255``) and logarithmic above it: ε = 0 stays on the axis and the small budgets get
    room. Ticks sit at the swept ε values, as ``k/255`` with ``scale_255``.

    Args:
        curves: model name → ``(epsilons, accuracies)``; ε in [0, 1] pixel units, accuracies in [0, 1].
        xlabel: x-axis label (default: says the unit and the axis scale).
        ylabel: y-axis label.
        scale_255: ε is an L∞ radius in pixel units: plot it in 1/255 steps and label ticks ``k/255``.
        title: axes title.
        xscale: ``"symlog"`` (default) or ``"linear"``.

    Returns:
        The figure.
    """
    if not curves:
        raise ValueError("curves is empty; pass model name → (epsilons, accuracies)")
    if xscale not in ("symlog", "linear"):
        raise ValueError(f"xscale must be 'symlog' or 'linear', got {xscale!r}")
    fig = _new_figure((5.0, 3.6), layout="constrained")
    ax = fig.add_subplot()
    top = 1.0
    xs_all: list[float] = []
    for i, (name, (eps, acc)) in enumerate(curves.items()):
        e = _to_numpy(eps, f"curves[{name!r}] epsilons").reshape(-1)
        a = _to_numpy(acc, f"curves[{name!r}] accuracies").reshape(-1)
        if e.shape != a.shape:
            raise ValueError(f"curves[{name!r}] has {e.size} epsilons but {a.size} accuracies")
        order = np.argsort(e)
        top = max(top, float(a.max(initial=0)))
        xs = e[order] * (255 if scale_255 else 1)
        xs_all += [float(v) for v in xs]
        ax.plot(xs, a[order], marker=_MARKERS[i % len(_MARKERS)], markersize=5, linewidth=1.5, label=str(name))
    positive = sorted({round(v, 6) for v in xs_all if v > 0})
    if xscale == "symlog" and positive:
        ax.set_xscale("symlog", linthresh=min(1.0, positive[0]) if scale_255 else positive[0], linscale=0.6)
        ax.set_xlim(0, positive[-1] * 1.15)
    ticks = _eps_ticks([0.0, *positive] if 0 in {round(v, 6) for v in xs_all} else positive, xscale == "symlog")
    ax.set_xticks(ticks, [_eps_tick_label(t, scale_255) for t in ticks], fontsize=_FONT)
    ax.minorticks_off()
    ax.set_ylim(0, 1.02 if top <= 1 else top * 1.02)
    if xlabel is None:
        xlabel = ("ε (L∞ radius, k/255 of the pixel range" if scale_255 else "ε") + (
            "; symlog axis)" if xscale == "symlog" else ")" if scale_255 else "")
    ax.set_xlabel(xlabel, fontsize=_FONT + 1)
    ax.set_ylabel(ylabel, fontsize=_FONT + 1)
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=_FONT - 1, frameon=False)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig


def _eps_ticks(values: list[float], log: bool) -> list[float]:
    """The swept ε values as ticks, thinned so that neighbours on the (log) axis do not collide."""
    ticks: list[float] = []
    for v in values:
        if not ticks or ticks[-1] == 0 or v == 0:
            ticks.append(v)
        elif (v / ticks[-1] >= 1.25) if log else (v - ticks[-1] >= 0.06 * (values[-1] or 1)):
            ticks.append(v)
    return ticks


def _eps_tick_label(v: float, scale_255: bool) -> str:
    if v == 0:
        return "0"
    return f"{v:.3g}/255" if scale_255 else f"{v:.3g}"


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
    groups: Sequence[str] | None = None,
) -> Figure:
    """Accuracy per corruption (rows) and severity (columns), annotated (Hendrycks & Dietterich, ICLR 2019).

    Args:
        acc: ``n_corruptions × n_severities`` accuracies.
        corruption_names: row labels (in the order to draw; see
            :func:`xai_bench.robustness.corruption_eval.group_order` for ImageNet-C's).
        groups: one group name per row (e.g. ``"noise"``); consecutive rows of a group are bracketed by a label on
            the left and separated from the next group by a line.
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
    if groups is not None and len(groups) != a.shape[0]:
        raise ValueError(f"groups has {len(groups)} entries for {a.shape[0]} rows")
    vmax = max(1.0, float(np.nanmax(a))) if vmax is None else vmax
    label_w = 0.07 * max(len(str(c)) for c in corruption_names) + (0.25 if groups is not None else 0)
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
    if groups is not None:
        _group_brackets(ax, list(groups), max(len(str(c)) for c in corruption_names))
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig


def _group_brackets(ax: Any, groups: list[str], label_chars: int) -> None:
    """Group names left of the row labels, and a line between groups."""
    offset = -(0.55 * _FONT * label_chars + 10)  # points: past the longest row label
    start = 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            ax.annotate(groups[start], xy=(0, (start + i - 1) / 2), xycoords=("axes fraction", "data"),
                        xytext=(offset, 0), textcoords="offset points", rotation=90, ha="center", va="center",
                        fontsize=_FONT, fontweight="bold", color="0.25", annotation_clip=False)
            if i < len(groups):
                ax.axhline(i - 0.5, color="white", linewidth=2.5)
            start = i


def corruption_bars(
    labels: Sequence[str],
    accuracies: ArrayLike | Sequence[float],
    *,
    groups: Sequence[str] | None = None,
    clean: float | None = None,
    title: str | None = None,
    ylabel: str = "accuracy",
) -> Figure:
    """Accuracy per corruption as bars beside the clean accuracy (a first bar and a dashed line).

    Args:
        labels: corruption labels, in drawing order.
        accuracies: one accuracy per label in [0, 1] (e.g. the mean over severities).
        groups: one group per label (bars coloured by group, with a legend), e.g. ImageNet-C's noise/blur/….
        clean: the clean accuracy, drawn as the first bar and a dashed line.
        title: axes title.
        ylabel: y-axis label.

    Returns:
        The figure.
    """
    acc = _to_numpy(accuracies, "accuracies").reshape(-1)
    if acc.size != len(labels):
        raise ValueError(f"labels ({len(labels)}) and accuracies ({acc.size}) must be the same length")
    if groups is not None and len(groups) != len(labels):
        raise ValueError(f"groups has {len(groups)} entries for {len(labels)} labels")
    names = (["clean"] if clean is not None else []) + [str(v) for v in labels]
    values = np.concatenate([[clean] if clean is not None else [], acc])
    kinds = (["clean"] if clean is not None else []) + [str(g) for g in (groups or ["corrupted"] * len(labels))]
    palette = {"clean": "0.35"} | {k: f"C{i}" for i, k in enumerate(dict.fromkeys(k for k in kinds if k != "clean"))}
    fig = _new_figure((max(4.0, 0.38 * len(names) + 1.6), 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x, values, color=[palette[k] for k in kinds], edgecolor="0.2", linewidth=0.5, width=0.75)
    handles = [Patch(facecolor=c, edgecolor="0.2", linewidth=0.5, label=k) for k, c in palette.items() if k in kinds]
    for xi, v in zip(x, values):
        ax.text(xi, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=_FONT - 2)
    if clean is not None:
        ax.axhline(clean, color="0.35", linestyle="--", linewidth=1.0)
    ax.set_ylim(0, 1.12)
    ax.set_xticks(x, names, rotation=45, ha="right", rotation_mode="anchor", fontsize=_FONT - 1)
    ax.set_ylabel(ylabel, fontsize=_FONT + 1)
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    if len(palette) > 2 or groups is not None:
        ax.legend(handles=handles, fontsize=_FONT - 1, frameon=False, ncols=min(len(handles), 5), loc="upper right")
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig


def corruption_gallery(
    images: Sequence[Sequence[ArrayLike | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    titles: Sequence[Sequence[str | None]] | None = None,
    *,
    title: str | None = None,
    cell_size: float = 1.25,
) -> Figure:
    """A table of images: one row per corruption, one column per severity (e.g. clean, 1 … 5).

    Args:
        images: ``rows × cols`` images (``C×H×W`` in [0, 1]); ``None`` leaves a cell empty.
        row_labels: one label per row (drawn left of it).
        col_labels: one header per column.
        titles: optional ``rows × cols`` cell titles (e.g. the prediction under that corruption, ✓/✗).
        title: figure title.
        cell_size: width of one cell in inches.

    Returns:
        The figure.
    """
    nrows, ncols = len(images), max((len(r) for r in images), default=0)
    if not nrows or not ncols:
        raise ValueError("images is empty; pass rows × cols images")
    if len(row_labels) != nrows or len(col_labels) != ncols:
        raise ValueError(f"{nrows}×{ncols} images but {len(row_labels)} row_labels and {len(col_labels)} col_labels")
    first = next(im for row in images for im in row if im is not None)
    shape = _image_np(first, "images[0][0]").shape
    wrapped = [[_wrap(t, cell_size, _FONT - 1) if t else "" for t in row] for row in titles] if titles else []
    title_h = _LINE_IN * 0.85 * max((_n_lines(row) for row in wrapped), default=0)
    label_w = 0.07 * max(len(str(r)) for r in row_labels) + 0.1
    width_in = 0.1 + label_w + ncols * (cell_size + 0.05)
    head = _LINE_IN * (1 + (_wrap(title, width_in, _FONT + 1).count("\n") + 1 if title else 0))
    fig, axes, _, top_y = _grid(nrows, [ncols], aspect=_aspect(shape[0], shape[1]), cell_w=cell_size,
                                left=0.05 + label_w, right=0.05, top=0.05 + head + title_h, bottom=0.05,
                                wspace=0.05, hspace=0.08 + title_h)
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r][c]
            img = images[r][c] if c < len(images[r]) else None
            if img is None:
                ax.remove()
                continue
            _draw_image(ax, _image_np(img, f"images[{r}][{c}]"))
            _clean_axis(ax)
            if wrapped and wrapped[r][c]:
                ax.set_title(wrapped[r][c], fontsize=_FONT - 1, pad=2)
        box = axes[r][0].get_position()
        fig.text(box.x0 - 0.05 / fig.get_size_inches()[0], (box.y0 + box.y1) / 2, str(row_labels[r]), ha="right",
                 va="center", fontsize=_FONT)
    height = fig.get_size_inches()[1]
    for c, label in enumerate(col_labels):
        box = axes[0][c].get_position()
        first_h = _LINE_IN * 0.85 * _n_lines(wrapped[0]) if wrapped else 0.0  # above the first row's titles
        fig.text((box.x0 + box.x1) / 2, top_y + (first_h + 0.05) / height, str(label), ha="center", va="bottom",
                 fontsize=_FONT, fontweight="bold")
    if title:
        fig.text(0.5, 1 - 0.04 / height, _wrap(title, fig.get_size_inches()[0], _FONT + 1), ha="center", va="top",
                 fontsize=_FONT + 1)
    return fig
