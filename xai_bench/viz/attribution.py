"""Attribution figures: one map drawn as a heat map, an overlay or isolines, and images × methods (× models) grids.

A map may be coarser than its image (e.g. a raw Grad-CAM map); it is stretched over the image. Images are
``N×C×H×W`` (or ``C×H×W`` for one) in [0, 1]; maps ``N×C×H×W`` / ``N×1×H×W`` / ``N×H×W`` (or one map ``C×H×W`` /
``H×W``), as tensors or arrays. One-channel images are drawn in gray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text

from xai_bench.checks import check_number
from xai_bench.viz._common import (
    _FONT,
    _LINE_IN,
    CMAP_ABSOLUTE,
    CMAP_ISOLINES,
    CMAP_OVERLAY,
    CMAP_SIGNED,
    ArrayLike,
    _aspect,
    _batch,
    _cell_width,
    _check_len,
    _clean_axis,
    _colorbar,
    _draw_image,
    _extent,
    _grid,
    _image_np,
    _map_batch,
    _n_lines,
    _new_figure,
    _wrap,
    SCALE_NOTES,
    display_ranges,
    normalize_map,
)

__all__ = ["attribution_figure", "attribution_grid", "draw_heatmap", "draw_isolines", "draw_overlay", "image_grid"]

_ATTRIBUTION_KINDS = ("overlay", "heatmap", "isolines", "signed", "all")


def _single_map(attr: ArrayLike, signed: bool, percentile: float,
                vrange: tuple[float, float] | None = None) -> np.ndarray:
    m = normalize_map(attr, signed=signed, percentile=percentile, vrange=vrange)
    if m.ndim == 3:
        if m.shape[0] != 1:
            raise ValueError(f"expected one attribution map, got a batch of {m.shape[0]}; index it first")
        m = m[0]
    return m


def draw_heatmap(
    ax: Axes,
    attr: ArrayLike,
    signed: bool = False,
    cmap: str | None = None,
    *,
    percentile: float = 99.5,
    extent: tuple[float, float, float, float] | None = None,
    vrange: tuple[float, float] | None = None,
) -> Any:
    """Draw one attribution map as a heat map on ``ax``.

    Args:
        ax: matplotlib axes.
        attr: one map, ``H×W``, ``C×H×W`` or ``1×C×H×W``.
        signed: diverging map centred at 0 (default cmap ``"bwr"``) instead of magnitude (``"inferno"``).
        cmap: colormap name overriding the default.
        percentile: see :func:`normalize_map`.
        extent: data extent (default: the map's own pixels); pass an image's extent to stretch a coarse map.
        vrange: a shared display range ``(lo, hi)`` in map units (:func:`display_ranges`); default: the map's own.

    Returns:
        The ``AxesImage`` (for a colorbar).
    """
    m = _single_map(attr, signed, percentile, vrange)
    cmap = cmap or (CMAP_SIGNED if signed else CMAP_ABSOLUTE)
    vmin = -1.0 if signed else 0.0
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=1.0, interpolation="bilinear",
                   extent=extent or _extent(m.shape))
    _clean_axis(ax)
    return im


def _rgba_map(m: np.ndarray, signed: bool, cmap: str, alpha: float, weight_alpha: bool) -> np.ndarray:
    norm = Normalize(vmin=-1.0 if signed else 0.0, vmax=1.0)
    rgba = colormaps[cmap](norm(m))
    rgba[..., 3] = alpha * np.abs(m) if weight_alpha else alpha
    return rgba


def draw_overlay(
    ax: Axes,
    image: ArrayLike,
    attr: ArrayLike,
    alpha: float = 0.5,
    signed: bool = False,
    cmap: str | None = None,
    *,
    percentile: float = 99.5,
    weight_alpha: bool | None = None,
    vrange: tuple[float, float] | None = None,
) -> Any:
    """Draw an attribution map blended over its image (Grad-CAM-style overlay).

    Args:
        ax: matplotlib axes.
        image: ``C×H×W`` (or ``1×C×H×W``) image in [0, 1]; one channel is drawn in gray.
        attr: one map for this image; a coarser map is stretched over the image.
        alpha: opacity of the map, in [0, 1]. Default 0.5.
        signed: diverging map (``"bwr"``) instead of magnitude (``"jet"``).
        cmap: colormap name overriding the default.
        percentile: see :func:`normalize_map`.
        weight_alpha: make the opacity proportional to ``|map|`` so that unimportant pixels show the image
            untouched. Default: on for signed maps (a white zero level would wash the image out), off otherwise.
        vrange: a shared display range (see :func:`draw_heatmap`).

    A signed map is drawn over the image in greyscale, so that red and blue read as the map's and never as the
    photo's own colours.

    Returns:
        The map's ``AxesImage``.
    """
    check_number("alpha", alpha, lo=0, hi=1)
    img = _image_np(image)
    m = _single_map(attr, signed, percentile, vrange)
    cmap = cmap or (CMAP_SIGNED if signed else CMAP_OVERLAY)
    weight_alpha = signed if weight_alpha is None else weight_alpha
    # Upsample the scalar map before colouring it: interpolating colours of a coarse map shows its blocks.
    m = _resize_map(m, img.shape[:2])
    _draw_image(ax, _grey(img) if signed else img)
    im = ax.imshow(_rgba_map(m, signed, cmap, alpha, weight_alpha), interpolation="bilinear",
                   extent=_extent(img.shape[:2]))
    _clean_axis(ax)
    return im


def _grey(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114], dtype=img.dtype)


def _resize_map(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if m.shape == hw:
        return m
    from scipy.ndimage import zoom

    return zoom(m, (hw[0] / m.shape[0], hw[1] / m.shape[1]), order=1, grid_mode=True, mode="nearest")


def draw_isolines(
    ax: Axes,
    image: ArrayLike,
    attr: ArrayLike,
    levels: int = 5,
    cmap: str | None = None,
    *,
    signed: bool = False,
    smooth: float | None = None,
    percentile: float = 99.5,
    fill_alpha: float = 0.25,
    linewidth: float = 1.2,
    vrange: tuple[float, float] | None = None,
) -> Any:
    """Draw contour lines of the smoothed attribution map over its image.

    Contours show where the evidence is without hiding the pixels under it, which reads better than an overlay
    for small objects.

    Args:
        ax: matplotlib axes.
        image: ``C×H×W`` image in [0, 1].
        attr: one map for this image (stretched to the image size if coarser).
        levels: number of contour levels, evenly spaced in (0, 1) of the normalised map (in (-1, 1) if signed).
        cmap: colormap for the levels (default ``"autumn"``; ``"bwr"`` if signed).
        signed: contour the signed map (negative levels dashed).
        smooth: Gaussian sigma in pixels (default ``max(H, W) / 40``); 0 disables smoothing.
        percentile: see :func:`normalize_map`.
        fill_alpha: opacity of filled bands between levels (0: lines only).
        linewidth: contour line width in points.
        vrange: a shared display range (see :func:`draw_heatmap`).

    Returns:
        The line ``QuadContourSet`` (``None`` when the map is flat and no level crosses it).
    """
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    img = _image_np(image)
    hw = img.shape[:2]
    m = _resize_map(_single_map(attr, signed, percentile, vrange), hw)
    sigma = max(hw) / 40 if smooth is None else smooth
    if sigma > 0:
        from scipy.ndimage import gaussian_filter

        m = gaussian_filter(m, sigma)
        peak = np.abs(m).max()
        if peak > 0:  # smoothing lowers the peaks; rescale so the levels still span the map
            m = m / peak
    cmap = cmap or (CMAP_SIGNED if signed else CMAP_ISOLINES)
    if signed:
        pos = np.linspace(0, 1, levels + 2)[1:-1]
        lv = np.concatenate([-pos[::-1], pos])
    else:
        lv = np.linspace(0, 1, levels + 2)[1:-1]
    lv = lv[(lv > m.min()) & (lv < m.max())]  # a level the map never crosses would only raise a warning
    _draw_image(ax, img)
    cs = None
    if lv.size:
        norm = Normalize(vmin=-1.0 if signed else 0.0, vmax=1.0)
        if fill_alpha > 0 and not signed:
            ax.contourf(m, levels=np.append(lv, max(1.0, m.max())), cmap=cmap, norm=norm, alpha=fill_alpha,
                        origin="upper", extent=_extent(hw))
        cs = ax.contour(m, levels=lv, cmap=cmap, norm=norm, linewidths=linewidth, origin="upper",
                        extent=_extent(hw))
    ax.set_xlim(-0.5, hw[1] - 0.5)
    ax.set_ylim(hw[0] - 0.5, -0.5)
    _clean_axis(ax)
    return cs


def _draw_kind(ax: Axes, kind: str, image: ArrayLike, attr: ArrayLike, *, signed: bool, alpha: float,
               cmap: str | None, percentile: float, vrange: tuple[float, float] | None = None) -> Any:
    kw = {"cmap": cmap, "percentile": percentile, "vrange": vrange}
    if kind == "overlay":
        return draw_overlay(ax, image, attr, alpha=alpha, signed=signed, **kw)
    if kind == "heatmap":
        return draw_heatmap(ax, attr, signed=signed, extent=_extent(_image_np(image).shape[:2]), **kw)
    if kind == "isolines":
        return draw_isolines(ax, image, attr, signed=signed, **kw)
    if kind == "signed":
        return draw_heatmap(ax, attr, signed=True, extent=_extent(_image_np(image).shape[:2]), **kw)
    raise ValueError(f"kind must be one of {_ATTRIBUTION_KINDS}, got {kind!r}")


def attribution_figure(
    image: ArrayLike,
    attr: ArrayLike,
    kind: str = "overlay",
    title: str | None = None,
    *,
    signed: bool = False,
    alpha: float = 0.5,
    cmap: str | None = None,
    percentile: float = 99.5,
    colorbar: bool = True,
    panel_size: float = 2.6,
    vrange: tuple[float, float] | None = None,
) -> Figure:
    """One attribution map for one image, as a figure.

    Args:
        image: ``C×H×W`` image in [0, 1].
        attr: its map (``H×W``, ``C×H×W`` or ``1×C×H×W``).
        kind: ``"overlay"``, ``"heatmap"``, ``"isolines"``, ``"signed"`` (diverging heat map) or ``"all"`` (image,
            heat map, overlay, isolines and signed map side by side).
        title: figure title (e.g. ``"IntegratedGradients · cat 0.93"``).
        signed: for overlay/heatmap/isolines, draw the signed map.
        alpha, cmap, percentile: see :func:`draw_overlay` / :func:`normalize_map`.
        colorbar: add a colorbar for heat maps and overlays.
        panel_size: width of one panel in inches.
        vrange: a shared display range in map units (:func:`display_ranges`); the colour bar then reads in map
            units. Default: the map's own range (the colour bar reads min → percentile).

    Returns:
        The figure.
    """
    if kind not in _ATTRIBUTION_KINDS:
        raise ValueError(f"kind must be one of {_ATTRIBUTION_KINDS}, got {kind!r}")
    img = _image_np(image)
    aspect = img.shape[0] / img.shape[1]
    if kind == "all":
        panels = [("image", None, False), ("heat map", "heatmap", False), ("overlay", "overlay", False),
                  ("isolines", "isolines", False), ("signed", "signed", True)]
    else:
        panels = [(None, kind, signed or kind == "signed")]
    n = len(panels)
    fig = _new_figure((panel_size * n + (0.6 if colorbar else 0.1), panel_size * aspect + 0.5), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (label, k, sgn) in zip(axes, panels):
        if k is None:
            _draw_image(ax, img)
            _clean_axis(ax)
        else:
            rng = vrange if vrange is not None and (not sgn or signed) else None
            artist = _draw_kind(ax, k, image, attr, signed=sgn, alpha=alpha, cmap=cmap, percentile=percentile,
                                vrange=rng)
            if colorbar and k in ("heatmap", "signed", "overlay") and artist is not None:
                # Drawn from the scalar colormap behind the (possibly RGBA) artist, labelled in map units.
                _colorbar(fig, _cmap_for(k, sgn, cmap), rng, sgn, percentile, ax=ax, fraction=0.046, pad=0.02,
                          shrink=0.9)
        if label:
            ax.set_title(label, fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    return fig


def _cmap_for(kind: str, signed: bool, cmap: str | None) -> str:
    if cmap:
        return cmap
    if signed or kind == "signed":
        return CMAP_SIGNED
    return {"overlay": CMAP_OVERLAY, "isolines": CMAP_ISOLINES}.get(kind, CMAP_ABSOLUTE)


def attribution_grid(
    images: ArrayLike,
    maps: Mapping[str, ArrayLike] | Mapping[tuple[str, str], ArrayLike],
    *,
    titles: Sequence[str] | None = None,
    kind: str = "overlay",
    method_kinds: Mapping[str, str] | None = None,
    signed: Mapping[str, bool] | bool = False,
    models: Sequence[str] | None = None,
    alpha: float = 0.5,
    cmap: str | None = None,
    percentile: float = 99.5,
    cell_size: float = 1.6,
    max_width: float = 24.0,
    image_header: str = "image",
    scale: str = "per_map",
    colorbar: bool = True,
    title: str | None = None,
) -> Figure:
    """Images (rows) × attribution methods (columns), the input image in the first column.

    With ``maps`` keyed by ``(model, method)`` the columns are grouped in one block per model under a two-level
    header (model, then method), giving images × methods × models in one figure.

    Args:
        images: ``N×C×H×W`` images in [0, 1].
        maps: method name (or ``(model, method)``) → ``N×C×H×W``, ``N×1×H×W`` or ``N×H×W`` maps.
        titles: one row label per image, e.g. ``"cat 0.93"`` (prediction and confidence).
        kind: ``"overlay"``, ``"heatmap"``, ``"isolines"`` or ``"signed"``.
        method_kinds: per-method exceptions to ``kind`` (method name → kind), e.g. Grad-CAM as an overlay in a
            grid of heat maps.
        signed: one flag for all methods, or method name (or ``(model, method)`` key) → flag; missing → False.
        models: order of the model blocks (default: first appearance in ``maps``); only for tuple keys.
        alpha, cmap, percentile: see :func:`draw_overlay` / :func:`normalize_map`.
        cell_size: width of one cell in inches (shrunk for very wide grids so the figure stays ≤ ``max_width``).
        image_header: header of the image column.
        scale: which maps share a colour scale (:func:`display_ranges`): ``"per_map"`` (each its own; default),
            ``"per_image"`` (the methods of a row; only meaningful when they share units) or ``"per_method"`` (the
            images of a column: a weak map looks weak). The figure's last line says which.
        colorbar: a colour bar under each method column, in map units for ``per_method``; otherwise it reads
            ``min`` → ``p99`` (``−p99`` · 0 · ``+p99`` signed), each map (or row) having its own values.
        title: text above the grid (e.g. the model and what the maps explain); the scale note is appended.

    Returns:
        The figure (``N × (1 + #columns)`` axes; for tuple keys one image column per model block).
    """
    method_kinds = dict(method_kinds or {})
    for k in (kind, *method_kinds.values()):
        if k not in _ATTRIBUTION_KINDS or k == "all":
            raise ValueError(f"kind must be one of {_ATTRIBUTION_KINDS[:-1]} for a grid, got {k!r}")
    imgs = _batch(images, "images")
    n = imgs.shape[0]
    _check_len(titles, n, "titles")
    if not maps:
        raise ValueError("maps is empty; pass at least one method name → maps entry")
    keys = list(maps)
    nested = isinstance(keys[0], tuple)
    if any(isinstance(k, tuple) != nested for k in keys):
        raise ValueError("maps keys must be all method names or all (model, method) tuples, not a mix")
    if nested:
        seen = list(dict.fromkeys(k[0] for k in keys))
        model_order = list(models) if models is not None else seen
        unknown = [m for m in seen if m not in model_order]
        if unknown:
            raise ValueError(f"models {unknown} appear in maps but not in models={list(model_order)}; list them all")
        blocks = [(m, [k for k in keys if k[0] == m]) for m in model_order]
        blocks = [(m, ks) for m, ks in blocks if ks]
    else:
        if models is not None:
            raise ValueError("models is only used when maps is keyed by (model, method) tuples")
        blocks = [(None, keys)]
    arrays = {k: _map_batch(maps[k], n, f"maps[{k!r}]") for k in keys}

    def kind_of(key: Any) -> str:
        return method_kinds.get(key[1] if isinstance(key, tuple) else key, kind)

    def is_signed(key: Any) -> bool:
        if kind_of(key) == "signed":
            return True
        if isinstance(signed, bool):
            return signed
        if key in signed:
            return bool(signed[key])
        return bool(signed.get(key[1] if isinstance(key, tuple) else key, False))

    ranges = display_ranges(arrays, {k: is_signed(k) for k in keys}, scale=scale, percentile=percentile)
    # One image column per model block reads best: each block is a self-contained image × methods panel.
    col_blocks = [1 + len(ks) for _, ks in blocks] if nested else [1 + len(keys)]
    ncols = sum(col_blocks)
    cell_w = _cell_width(ncols, cell_size, max_width)
    headers = [_wrap(k[1] if isinstance(k, tuple) else k, cell_w) for _, ks in blocks for k in ks]
    row_labels = [_wrap(t, cell_w * _aspect(*imgs.shape[2:])) for t in titles] if titles else []
    full_width = ncols * (cell_w + 0.05) + 0.25 * (len(col_blocks) - 1)
    caption = _wrap(f"{title + ' · ' if title else ''}colour: {SCALE_NOTES[scale]} (figure.scale={scale})",
                    full_width, _FONT)
    title_h = _LINE_IN * _n_lines([caption]) + 0.1
    top = 0.1 + title_h + _LINE_IN * max(1, _n_lines(headers)) + (_LINE_IN + 0.15 if nested else 0.0)
    left = 0.1 + _LINE_IN * _n_lines(row_labels)
    fig, axes, spans, grid_top = _grid(
        n, col_blocks, aspect=_aspect(*imgs.shape[2:]), cell_w=cell_w, left=left, right=0.1, top=top,
        bottom=0.45 if colorbar else 0.1, wspace=0.05, hspace=0.05, block_gap=0.25,
    )
    width_in, height_in = fig.get_size_inches()
    # an artist rather than fig.text: fig.texts stays the grid's own headers
    fig.add_artist(Text(0.5, 1 - 0.08 / height_in, caption, ha="center", va="top", fontsize=_FONT,
                        transform=fig.transFigure))
    for i in range(n):
        col = 0
        for b, (_, ks) in enumerate(blocks):
            ax = axes[i][col]
            _draw_image(ax, _image_np(imgs[i], f"images[{i}]"))
            _clean_axis(ax)
            if i == 0:
                ax.set_title(image_header, fontsize=_FONT)
            if row_labels and (b == 0 or not nested):
                ax.set_ylabel(row_labels[i], fontsize=_FONT)
            col += 1
            for k in ks:
                ax = axes[i][col]
                _draw_kind(ax, kind_of(k), imgs[i], arrays[k][i], signed=is_signed(k), alpha=alpha, cmap=cmap,
                           percentile=percentile, vrange=tuple(ranges[k][i]))
                if i == 0:
                    ax.set_title(_wrap(k[1] if isinstance(k, tuple) else k, cell_w), fontsize=_FONT)
                if colorbar and i == n - 1:
                    box = ax.get_position()
                    cax = fig.add_axes((box.x0 + 0.1 * box.width, box.y0 - 0.2 / height_in, 0.8 * box.width,
                                        0.07 / height_in), label="colorbar")
                    shared = tuple(ranges[k][0]) if scale == "per_method" else None
                    _colorbar(fig, _cmap_for(kind_of(k), is_signed(k), cmap), shared, is_signed(k), percentile,
                              cax=cax, orientation="horizontal")
                col += 1
    if nested:
        y = grid_top + (0.1 + _LINE_IN * max(1, _n_lines(headers))) / height_in
        for (model, _), (x0, x1) in zip(blocks, spans):
            fig.text((x0 + x1) / 2, y + 0.04 / height_in, str(model), ha="center", va="bottom",
                     fontsize=_FONT + 1, fontweight="bold")
            fig.add_artist(Line2D([x0, x1], [y, y], color="0.3", linewidth=0.8, transform=fig.transFigure))
    return fig


def image_grid(
    images: ArrayLike,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    *,
    cell_size: float = 1.4,
) -> Figure:
    """Sample images with their labels, ``ncols`` per row.

    Args:
        images: ``N×C×H×W`` images in [0, 1].
        titles: one title per image (e.g. the class name), or None.
        ncols: images per row. Default 8.
        cell_size: width of one image in inches.

    Returns:
        The figure.
    """
    if ncols < 1:
        raise ValueError(f"ncols must be ≥ 1, got {ncols}")
    imgs = _batch(images, "images")
    n = imgs.shape[0]
    _check_len(titles, n, "titles")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    wrapped = [_wrap(t, cell_size) for t in titles] if titles else []
    title_h = _LINE_IN * _n_lines(wrapped)
    fig, axes, _, _ = _grid(nrows, [ncols], aspect=_aspect(*imgs.shape[2:]), cell_w=cell_size, left=0.05,
                            right=0.05, top=0.05 + title_h, bottom=0.05, wspace=0.05, hspace=0.05 + title_h)
    for idx, ax in enumerate(ax for row in axes for ax in row):
        if idx >= n:
            ax.remove()
            continue
        _draw_image(ax, _image_np(imgs[idx], f"images[{idx}]"))
        _clean_axis(ax)
        if wrapped:
            ax.set_title(wrapped[idx], fontsize=_FONT)
    return fig
