"""Paper figures: attribution maps, calibration, robustness and ensemble plots.

Every function builds a ``matplotlib.figure.Figure`` directly (no ``pyplot``, so no global state: safe in threads,
in sweeps and on headless machines) and returns it; :func:`save_figure` writes it atomically. Inputs follow the
project layout: images are ``N×C×H×W`` (or ``C×H×W`` for one image) floats in [0, 1], attribution maps are
``N×C×H×W`` / ``N×1×H×W`` (or ``C×H×W`` / ``H×W`` for one map), as torch tensors or NumPy arrays. One-channel images
are drawn in gray. A map may be coarser than its image (e.g. a raw Grad-CAM map); it is stretched over the image.
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from xai_bench.utils import atomic_path

__all__ = [
    "CMAP_ABSOLUTE",
    "CMAP_OVERLAY",
    "CMAP_SIGNED",
    "accuracy_vs_eps",
    "adversarial_grid",
    "attribution_figure",
    "attribution_grid",
    "confusion_matrix_figure",
    "corruption_heatmap",
    "draw_heatmap",
    "draw_isolines",
    "draw_overlay",
    "expected_calibration_error",
    "image_grid",
    "member_votes_figure",
    "normalize_map",
    "per_model_accuracy_figure",
    "reliability_diagram",
    "save_figure",
    "uncertainty_strip",
]

ArrayLike = torch.Tensor | np.ndarray

# Default colormaps; callers override them per call with ``cmap=``.
CMAP_ABSOLUTE = "inferno"
CMAP_OVERLAY = "jet"
CMAP_SIGNED = "bwr"
CMAP_ISOLINES = "autumn"

_FONT = 9  # points; cells are sized in inches, so text stays readable however many cells a grid has
_LINE_IN = 0.2  # height of one line of 9-pt text plus padding, in inches
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")
_ATTRIBUTION_KINDS = ("overlay", "heatmap", "isolines", "signed", "all")


# ----------------------------------------------------------------------------------------------- input handling
def _to_numpy(x: ArrayLike | Sequence[float], name: str, dtype: type = np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device="cpu", dtype=torch.from_numpy(np.zeros(0, dtype)).dtype).numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a torch tensor or a numeric array, got {type(x).__name__}") from err


def _image_np(image: ArrayLike, name: str = "image") -> np.ndarray:
    """One image (``C×H×W``, ``1×C×H×W`` or ``H×W``, C ∈ {1, 3}) → ``H×W×3`` or ``H×W`` (gray) in [0, 1]."""
    img = _to_numpy(image, name)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ValueError(
            f"{name} must be one image of shape C×H×W with C=1 or 3 (channels first), got shape {tuple(img.shape)}"
        )
    if not np.isfinite(img).all():
        raise ValueError(f"{name} contains NaN or inf values")
    lo, hi = float(img.min()), float(img.max())
    if lo < -0.01 or hi > 1.01:
        raise ValueError(
            f"{name} must be in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); pass pixel-space images, not "
            "normalised ones (xai-bench models normalise inside)"
        )
    img = np.clip(img, 0.0, 1.0)
    return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)


def _batch(x: ArrayLike, name: str) -> np.ndarray:
    """A batch of images ``N×C×H×W`` as a NumPy array (validated image by image when drawn)."""
    arr = _to_numpy(x, name)
    if arr.ndim == 3:  # one C×H×W image
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be an N×C×H×W batch, got shape {tuple(arr.shape)}")
    return arr


def _map_batch(x: ArrayLike, n: int, name: str) -> np.ndarray:
    """A batch of maps as ``N×C×h×w`` (``N×h×w`` gets a channel axis)."""
    arr = _to_numpy(x, name)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape N×C×H×W or N×H×W with N={n} (one map per image), "
                         f"got shape {tuple(arr.shape)}")
    return arr


def _check_len(seq: Sequence[Any] | None, n: int, name: str) -> None:
    if seq is not None and len(seq) != n:
        raise ValueError(f"{name} has {len(seq)} entries but there are {n} images; give one per image or None")


def _wrap(text: str, width_in: float, fontsize: float = _FONT) -> str:
    """Wrap ``text`` to lines that fit ``width_in`` inches (an average glyph is about 0.55 em wide)."""
    chars = max(6, int(width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.wrap(str(text), chars, break_long_words=True)) or ""


def _n_lines(texts: Sequence[str | None]) -> int:
    return max((t.count("\n") + 1 for t in texts if t), default=0)


def _new_figure(figsize: tuple[float, float], **kwargs: Any) -> Figure:
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)  # an explicit Agg canvas: text can be measured and drawn without pyplot
    return fig


def _clean_axis(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# ------------------------------------------------------------------------------------------- attribution maps
def normalize_map(attr: ArrayLike, signed: bool = False, percentile: float = 99.5) -> np.ndarray:
    """Reduce an attribution map over channels and scale it for display.

    Signed maps are summed over channels and divided by the ``percentile``-th percentile of their absolute values,
    then clipped to [-1, 1]; absolute maps sum ``|attr|`` over channels and land in [0, 1]. Scaling by a high
    percentile rather than the maximum keeps one extreme pixel from washing out the map (as in Captum's
    ``visualization._normalize_attr``). Each map of a batch is scaled on its own; an all-zero map stays zero.

    Args:
        attr: ``H×W``, ``C×H×W`` or ``N×C×H×W`` attributions (tensor or array).
        signed: keep the sign (sum over channels) instead of the magnitude (sum of ``|.|``).
        percentile: in (0, 100]; the value mapped to ±1. Default 99.5.

    Returns:
        ``H×W`` (for 2-D/3-D input) or ``N×H×W`` float32 NumPy array in [-1, 1] (signed) or [0, 1].
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    a = _to_numpy(attr, "attr")
    if a.ndim == 2:
        a = a[None]
    if a.ndim not in (3, 4):
        raise ValueError(f"attr must be H×W, C×H×W or N×C×H×W, got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError("attr contains NaN or inf values; check the attribution method's output")
    m = a.sum(axis=-3) if signed else np.abs(a).sum(axis=-3)
    scale = np.percentile(np.abs(m), percentile, axis=(-2, -1), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    return np.clip(m / scale, -1.0 if signed else 0.0, 1.0).astype(np.float32)


def _extent(image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = image_hw
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def _draw_image(ax: Axes, img: np.ndarray, **kwargs: Any) -> Any:
    if img.ndim == 2:
        return ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)
    return ax.imshow(img, interpolation="nearest", **kwargs)


def _single_map(attr: ArrayLike, signed: bool, percentile: float) -> np.ndarray:
    m = normalize_map(attr, signed=signed, percentile=percentile)
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
) -> Any:
    """Draw one attribution map as a heat map on ``ax``.

    Args:
        ax: matplotlib axes.
        attr: one map, ``H×W``, ``C×H×W`` or ``1×C×H×W``.
        signed: diverging map centred at 0 (default cmap ``"bwr"``) instead of magnitude (``"inferno"``).
        cmap: colormap name overriding the default.
        percentile: see :func:`normalize_map`.
        extent: data extent (default: the map's own pixels); pass an image's extent to stretch a coarse map.

    Returns:
        The ``AxesImage`` (for a colorbar).
    """
    m = _single_map(attr, signed, percentile)
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

    Returns:
        The map's ``AxesImage``.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = _image_np(image)
    m = _single_map(attr, signed, percentile)
    cmap = cmap or (CMAP_SIGNED if signed else CMAP_OVERLAY)
    weight_alpha = signed if weight_alpha is None else weight_alpha
    # Upsample the scalar map before colouring it: interpolating colours of a coarse map shows its blocks.
    m = _resize_map(m, img.shape[:2])
    _draw_image(ax, img)
    im = ax.imshow(_rgba_map(m, signed, cmap, alpha, weight_alpha), interpolation="bilinear",
                   extent=_extent(img.shape[:2]))
    _clean_axis(ax)
    return im


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

    Returns:
        The line ``QuadContourSet`` (``None`` when the map is flat and no level crosses it).
    """
    if levels < 1:
        raise ValueError(f"levels must be ≥ 1, got {levels}")
    img = _image_np(image)
    hw = img.shape[:2]
    m = _resize_map(_single_map(attr, signed, percentile), hw)
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
               cmap: str | None, percentile: float) -> Any:
    if kind == "overlay":
        return draw_overlay(ax, image, attr, alpha=alpha, signed=signed, cmap=cmap, percentile=percentile)
    if kind == "heatmap":
        img = _image_np(image)
        return draw_heatmap(ax, attr, signed=signed, cmap=cmap, percentile=percentile,
                            extent=_extent(img.shape[:2]))
    if kind == "isolines":
        return draw_isolines(ax, image, attr, cmap=cmap, signed=signed, percentile=percentile)
    if kind == "signed":
        img = _image_np(image)
        return draw_heatmap(ax, attr, signed=True, cmap=cmap, percentile=percentile, extent=_extent(img.shape[:2]))
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
            artist = _draw_kind(ax, k, image, attr, signed=sgn, alpha=alpha, cmap=cmap, percentile=percentile)
            if colorbar and k in ("heatmap", "signed", "overlay") and artist is not None:
                # The overlay artist is an RGBA image; its colorbar needs the scalar colormap behind it.
                overlay_cmap = cmap or (CMAP_SIGNED if sgn else CMAP_OVERLAY)
                mappable = artist if k != "overlay" else _scalar_mappable(overlay_cmap, -1.0 if sgn else 0.0)
                fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02, shrink=0.9)
        if label:
            ax.set_title(label, fontsize=_FONT)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    return fig


def _scalar_mappable(cmap: str, vmin: float) -> Any:
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=Normalize(vmin=vmin, vmax=1.0), cmap=cmap)


# ------------------------------------------------------------------------------------------------ grid layout
def _grid(
    nrows: int,
    col_blocks: Sequence[int],
    *,
    aspect: float,
    cell_w: float,
    left: float,
    right: float,
    top: float,
    bottom: float,
    wspace: float,
    hspace: float,
    block_gap: float = 0.0,
) -> tuple[Figure, list[list[Axes]], list[tuple[float, float]], float]:
    """Axes for a grid of image cells, placed in inches so the layout is exact whatever the number of cells.

    Returns the figure, ``axes[row][col]``, each column block's (x0, x1) in figure fractions, and the y of the top
    of the first row in figure fractions.
    """
    ncols = int(sum(col_blocks))
    cell_h = cell_w * aspect
    width = left + ncols * cell_w + (ncols - 1) * wspace + (len(col_blocks) - 1) * block_gap + right
    height = top + nrows * cell_h + (nrows - 1) * hspace + bottom
    fig = _new_figure((width, height))
    block_of = [b for b, size in enumerate(col_blocks) for _ in range(size)]
    xs = [left + j * (cell_w + wspace) + block_of[j] * block_gap for j in range(ncols)]
    axes = []
    for i in range(nrows):
        y = height - top - i * (cell_h + hspace) - cell_h
        axes.append([fig.add_axes((x / width, y / height, cell_w / width, cell_h / height)) for x in xs])
    spans, start = [], 0
    for size in col_blocks:
        spans.append((xs[start] / width, (xs[start + size - 1] + cell_w) / width))
        start += size
    return fig, axes, spans, (height - top) / height


def _aspect(h: int, w: int) -> float:
    return float(min(max(h / w, 0.25), 4.0))


def _cell_width(ncols: int, cell_size: float, max_width: float) -> float:
    # Shrink cells for very wide grids, but never below an inch: past that, titles stop fitting.
    return max(1.0, min(cell_size, max_width / max(ncols, 1)))


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

    # One image column per model block reads best: each block is a self-contained image × methods panel.
    col_blocks = [1 + len(ks) for _, ks in blocks] if nested else [1 + len(keys)]
    ncols = sum(col_blocks)
    cell_w = _cell_width(ncols, cell_size, max_width)
    headers = [_wrap(k[1] if isinstance(k, tuple) else k, cell_w) for _, ks in blocks for k in ks]
    row_labels = [_wrap(t, cell_w * _aspect(*imgs.shape[2:])) for t in titles] if titles else []
    top = 0.1 + _LINE_IN * max(1, _n_lines(headers)) + (_LINE_IN + 0.15 if nested else 0.0)
    left = 0.1 + _LINE_IN * _n_lines(row_labels)
    fig, axes, spans, grid_top = _grid(
        n, col_blocks, aspect=_aspect(*imgs.shape[2:]), cell_w=cell_w, left=left, right=0.1, top=top, bottom=0.1,
        wspace=0.05, hspace=0.05, block_gap=0.25,
    )
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
                           percentile=percentile)
                if i == 0:
                    ax.set_title(_wrap(k[1] if isinstance(k, tuple) else k, cell_w), fontsize=_FONT)
                col += 1
    if nested:
        height_in = fig.get_size_inches()[1]
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


# ------------------------------------------------------------------------------------------------- save
def save_figure(fig: Figure, path: str | Path, dpi: int = 150, **savefig_kwargs: Any) -> Path:
    """Write ``fig`` to ``path`` atomically and close it.

    The file is drawn into a temporary file next to ``path`` and moved into place only when drawing succeeded, so
    an error never leaves a half-written figure or clobbers an existing one. The format follows ``path``'s
    extension (``.png``, ``.pdf``, ``.svg``, …).

    Args:
        fig: the figure.
        path: destination file; parent folders are created.
        dpi: resolution for raster formats. Default 150.
        **savefig_kwargs: passed to ``Figure.savefig`` (default ``bbox_inches="tight"``, ``pad_inches=0.05``).

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"path must end in one of {sorted('.' + f for f in supported)}, got {str(path)!r}")
    savefig_kwargs.setdefault("bbox_inches", "tight")
    savefig_kwargs.setdefault("pad_inches", 0.05)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, **savefig_kwargs)
    finally:
        # Figures made here are not tracked by pyplot; one made with pyplot must be closed there to free it.
        pyplot = sys.modules.get("matplotlib.pyplot")
        if pyplot is not None:
            pyplot.close(fig)
    return path


# ------------------------------------------------------------------------------------------ classification
def confusion_matrix_figure(
    cm: ArrayLike,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
    *,
    title: str | None = None,
    cmap: str = "Blues",
    annotate: bool | None = None,
) -> Figure:
    """Confusion matrix, rows = true class, columns = predicted class.

    Args:
        cm: ``K×K`` counts (``cm[i, j]`` = images of class i predicted as j).
        class_names: K names (default ``"0"…"K-1"``); tick labels are dropped above 60 classes.
        normalize: divide each row by its total (per-class recall on the diagonal); empty rows stay 0.
        title: axes title.
        cmap: colormap. Default ``"Blues"``.
        annotate: write the value in each cell (default: when K ≤ 20).

    Returns:
        The figure.
    """
    m = _to_numpy(cm, "cm", np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"cm must be a square K×K matrix, got shape {tuple(m.shape)}")
    k = m.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"class_names has {len(names)} entries but cm is {k}×{k}")
    if normalize:
        totals = m.sum(axis=1, keepdims=True)
        m = np.divide(m, totals, out=np.zeros_like(m), where=totals > 0)
    annotate = k <= 20 if annotate is None else annotate
    side = float(np.clip(0.45 * k + 2.2, 4.0, 20.0))
    fig = _new_figure((side + 0.8, side), layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)
    im = ax.imshow(m, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of true class" if normalize else "count")
    if k <= 60:
        ax.set_xticks(range(k), [_wrap(n, 1.2, 7) for n in names], rotation=45, ha="right",
                      rotation_mode="anchor", fontsize=_FONT if k <= 20 else 6)
        ax.set_yticks(range(k), names, fontsize=_FONT if k <= 20 else 6)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted class", fontsize=_FONT + 1)
    ax.set_ylabel("true class", fontsize=_FONT + 1)
    if annotate:
        fs = _FONT - 1 if k <= 10 else 6
        for i in range(k):
            for j in range(k):
                v = m[i, j]
                text = f"{v:.2f}" if normalize else f"{int(round(v))}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fs,
                        color="white" if v > 0.5 * vmax else "0.15")
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig


def _calibration_bins(confidences: ArrayLike, correct: ArrayLike, n_bins: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin counts, mean accuracy and mean confidence over equal-width bins (lo, hi] of [0, 1]."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be ≥ 1, got {n_bins}")
    conf = _to_numpy(confidences, "confidences", np.float64).reshape(-1)
    corr = _to_numpy(correct, "correct", np.float64).reshape(-1)
    if conf.size == 0:
        raise ValueError("confidences is empty")
    if conf.shape != corr.shape:
        raise ValueError(f"confidences ({conf.size}) and correct ({corr.size}) must have one entry per sample")
    if not np.isfinite(conf).all() or conf.min() < 0 or conf.max() > 1:
        raise ValueError("confidences must be finite probabilities in [0, 1] (e.g. the softmax max), not logits")
    if not np.isin(corr, (0.0, 1.0)).all():
        raise ValueError("correct must be booleans or 0/1 (prediction == label)")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right=True puts x in bin i when edges[i] < x <= edges[i+1] (Guo et al. 2017); a confidence of 0 joins bin 0.
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    safe = np.maximum(counts, 1)
    acc = np.bincount(idx, weights=corr, minlength=n_bins) / safe
    mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / safe
    return counts, acc, mean_conf


def expected_calibration_error(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins.

    Implements ECE as in Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017):
    ``Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|`` over ``n_bins`` bins ``(b/n, (b+1)/n]`` of [0, 1].

    Args:
        confidences: ``N`` predicted-class probabilities in [0, 1].
        correct: ``N`` booleans (or 0/1), whether the prediction was right.
        n_bins: number of bins. Default 15.

    Returns:
        ECE in [0, 1].
    """
    counts, acc, conf = _calibration_bins(confidences, correct, n_bins)
    return float(np.sum(counts / counts.sum() * np.abs(acc - conf)))


def reliability_diagram(
    confidences: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 15,
    *,
    title: str | None = None,
    show_histogram: bool = True,
) -> tuple[Figure, float]:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.

    Follows Guo et al. (ICML 2017, Fig. 1): bars give each bin's accuracy, shaded bars the gap to its mean
    confidence; below, how many samples fall in each bin with the mean accuracy and confidence marked.

    Args:
        confidences: ``N`` predicted-class probabilities in [0, 1].
        correct: ``N`` booleans (or 0/1).
        n_bins: number of equal-width bins. Default 15.
        title: prefix of the title (the ECE is always shown).
        show_histogram: add the confidence histogram under the diagram.

    Returns:
        ``(figure, ece)`` with ``ece`` from :func:`expected_calibration_error`.
    """
    counts, acc, conf = _calibration_bins(confidences, correct, n_bins)
    ece = float(np.sum(counts / counts.sum() * np.abs(acc - conf)))
    fig = _new_figure((4.2, 5.4 if show_histogram else 4.4), layout="constrained")
    if show_histogram:
        ax, hax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    else:
        ax, hax = fig.add_subplot(), None
    width = 1.0 / n_bins
    centres = (np.arange(n_bins) + 0.5) * width
    full = counts > 0
    ax.bar(centres[full], acc[full], width=width, color="C0", edgecolor="0.15", linewidth=0.6, label="accuracy")
    ax.bar(centres[full], (conf - acc)[full], bottom=acc[full], width=width, color="C3", alpha=0.3,
           edgecolor="C3", hatch="//", linewidth=0.6, label="gap")
    ax.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1.0, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal" if not show_histogram else "auto")
    ax.set_ylabel("accuracy", fontsize=_FONT + 1)
    ax.legend(loc="upper left", fontsize=_FONT - 1, frameon=False)
    ax.set_title(f"{title + ' · ' if title else ''}ECE = {100 * ece:.2f}%", fontsize=_FONT + 1)
    ax.grid(alpha=0.25, linewidth=0.5)
    xax = ax
    if hax is not None:
        hax.bar(centres, counts / counts.sum(), width=width, color="0.55", edgecolor="0.15", linewidth=0.5)
        n_conf = _to_numpy(confidences, "confidences").reshape(-1)
        n_corr = _to_numpy(correct, "correct").reshape(-1)
        hax.axvline(float(n_corr.mean()), color="C0", linestyle="--", linewidth=1.2, label="accuracy")
        hax.axvline(float(n_conf.mean()), color="C3", linestyle="--", linewidth=1.2, label="avg. confidence")
        hax.set_ylabel("fraction", fontsize=_FONT)
        hax.legend(loc="upper left", fontsize=_FONT - 2, frameon=False)
        hax.grid(alpha=0.25, linewidth=0.5)
        xax = hax
    xax.set_xlabel("confidence", fontsize=_FONT + 1)
    return fig, ece


# ----------------------------------------------------------------------------------------------- robustness
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


# ------------------------------------------------------------------------------------------------- ensembles
def member_votes_figure(
    image: ArrayLike,
    member_names: Sequence[str],
    member_top_classes: Sequence[int],
    member_probs: ArrayLike,
    class_names: Sequence[str],
    ensemble_probs: ArrayLike,
    *,
    k: int = 5,
    title: str | None = None,
) -> Figure:
    """An image beside the ensemble's top-k class probabilities, with each member's vote marked.

    The classes shown are the ensemble's top-k plus any class a member voted for outside it, so every vote is
    visible; each member's marker sits at its own probability for the class it voted for.

    Args:
        image: ``C×H×W`` image in [0, 1].
        member_names: M member names.
        member_top_classes: M class indices, each member's top-1 prediction.
        member_probs: ``M`` probabilities of each member's top-1 class, or ``M×K`` full member probabilities.
        class_names: K class names.
        ensemble_probs: ``K`` ensemble probabilities (e.g. the mean of the members' softmax).
        k: number of top ensemble classes. Default 5.
        title: figure title.

    Returns:
        The figure.
    """
    img = _image_np(image)
    ens = _to_numpy(ensemble_probs, "ensemble_probs").reshape(-1)
    n_cls = ens.size
    if len(class_names) != n_cls:
        raise ValueError(f"class_names has {len(class_names)} entries but ensemble_probs has {n_cls}")
    m = len(member_names)
    votes = [int(c) for c in member_top_classes]
    if len(votes) != m:
        raise ValueError(f"member_top_classes has {len(votes)} entries for {m} member_names")
    if any(not 0 <= v < n_cls for v in votes):
        raise ValueError(f"member_top_classes must be class indices in [0, {n_cls}), got {votes}")
    mp = _to_numpy(member_probs, "member_probs")
    if mp.shape == (m, n_cls):
        vote_p = mp[np.arange(m), votes]
    elif mp.shape == (m,):
        vote_p = mp
    else:
        raise ValueError(f"member_probs must have shape ({m},) or ({m}, {n_cls}), got {tuple(mp.shape)}")
    top = list(np.argsort(-ens, kind="stable")[: max(1, k)])
    shown = top + [v for v in dict.fromkeys(votes) if v not in top]
    shown.sort(key=lambda c: -ens[c])
    fig = _new_figure((8.0, max(2.8, 0.42 * len(shown) + 1.3)), layout="constrained")
    ax_img, ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    _draw_image(ax_img, img)
    _clean_axis(ax_img)
    rows = {c: len(shown) - 1 - i for i, c in enumerate(shown)}  # highest probability on top
    ys = [rows[c] for c in shown]
    ax.barh(ys, [ens[c] for c in shown], height=0.7, color="0.75", edgecolor="0.3", linewidth=0.6,
            label="ensemble")
    for c in shown:
        n_votes = votes.count(c)
        label = f"{ens[c]:.2f}" + (f"  ({n_votes}/{m} votes)" if n_votes else "")
        # A fixed column right of the [0, 1] range keeps the numbers clear of the bars and the vote markers.
        ax.text(1.04, rows[c], label, va="center", fontsize=_FONT - 1)
    for j, (name, c, p) in enumerate(zip(member_names, votes, vote_p)):
        same = [i for i, v in enumerate(votes) if v == c]
        # Members voting for the same class are spread vertically inside the bar so no marker hides another.
        offset = (same.index(j) - (len(same) - 1) / 2) * min(0.5 / len(same), 0.15)
        ax.plot(float(p), rows[c] + offset, linestyle="none", marker=_MARKERS[j % len(_MARKERS)], markersize=7,
                color=f"C{j % 10}", markeredgecolor="black", markeredgewidth=0.5, label=str(name))
    ax.set_yticks(ys, [_wrap(class_names[c], 1.6) for c in shown], fontsize=_FONT)
    ax.set_xlim(0, 1.42)
    ax.axvline(1.0, color="0.85", linewidth=0.8, zorder=0)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("probability", fontsize=_FONT + 1)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=_FONT - 1, frameon=False,
              title="member votes", title_fontsize=_FONT - 1)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    return fig


def uncertainty_strip(
    images: ArrayLike,
    scores: ArrayLike,
    titles: Sequence[str] | None = None,
    *,
    score_name: str = "H",
    ncols: int | None = None,
    cell_size: float = 1.4,
) -> Figure:
    """Images ordered from most to least certain, each with its uncertainty score underneath.

    Args:
        images: ``N×C×H×W`` images in [0, 1].
        scores: ``N`` uncertainty scores where higher means less certain (predictive entropy, mutual information).
        titles: one title per image (e.g. ``"cat 0.93"``), shown above it.
        score_name: label of the score (``"H"`` for entropy, ``"MI"`` for mutual information).
        ncols: images per row (default: all in one row up to 10).
        cell_size: width of one image in inches.

    Returns:
        The figure.
    """
    imgs = _batch(images, "images")
    n = imgs.shape[0]
    s = _to_numpy(scores, "scores").reshape(-1)
    if s.size != n:
        raise ValueError(f"scores has {s.size} entries but there are {n} images")
    _check_len(titles, n, "titles")
    order = np.argsort(s, kind="stable")
    ncols = min(n, ncols or 10)
    nrows = math.ceil(n / ncols)
    wrapped = [_wrap(t, cell_size) for t in titles] if titles else []
    title_h = _LINE_IN * _n_lines(wrapped)
    fig, axes, _, _ = _grid(nrows, [ncols], aspect=_aspect(*imgs.shape[2:]), cell_w=cell_size, left=0.05,
                            right=0.05, top=0.05 + title_h, bottom=0.55, wspace=0.08,
                            hspace=0.1 + title_h + _LINE_IN)
    for pos, ax in enumerate(ax for row in axes for ax in row):
        if pos >= n:
            ax.remove()
            continue
        i = int(order[pos])
        _draw_image(ax, _image_np(imgs[i], f"images[{i}]"))
        _clean_axis(ax)
        if wrapped:
            ax.set_title(wrapped[i], fontsize=_FONT)
        ax.set_xlabel(f"{score_name} = {s[i]:.3f}", fontsize=_FONT, labelpad=2)
    height = fig.get_size_inches()[1]
    fig.text(0.5, 0.12 / height, "more certain  →  less certain", ha="center", va="bottom", fontsize=_FONT,
             style="italic", color="0.3")
    return fig


def per_model_accuracy_figure(
    names: Sequence[str],
    accuracies: ArrayLike | Sequence[float],
    *,
    title: str | None = None,
    ylabel: str = "accuracy",
    errors: ArrayLike | Sequence[float] | None = None,
    highlight: Sequence[str] = ("ensemble",),
) -> Figure:
    """Bar chart of one accuracy per model (e.g. each ensemble member and the ensemble).

    Args:
        names: model names.
        accuracies: one accuracy per model, in [0, 1] (or percent).
        title: axes title.
        ylabel: y-axis label.
        errors: optional error bars (e.g. standard deviation over seeds).
        highlight: names drawn in a second colour (default: ``"ensemble"``).

    Returns:
        The figure.
    """
    acc = _to_numpy(accuracies, "accuracies").reshape(-1)
    if acc.size != len(names) or acc.size == 0:
        raise ValueError(f"names ({len(names)}) and accuracies ({acc.size}) must be non-empty and the same length")
    err = None if errors is None else _to_numpy(errors, "errors").reshape(-1)
    if err is not None and err.size != acc.size:
        raise ValueError(f"errors has {err.size} entries for {acc.size} models")
    longest = max(len(str(nm)) for nm in names)
    rotate = longest * len(names) > 60
    fig = _new_figure((max(3.5, 0.6 * len(names) + 1.5), 3.6), layout="constrained")
    ax = fig.add_subplot()
    colors = ["C1" if str(nm) in highlight else "C0" for nm in names]
    x = np.arange(acc.size)
    ax.bar(x, acc, yerr=err, color=colors, edgecolor="0.2", linewidth=0.6, capsize=3, width=0.7)
    top = 1.0 if acc.max() <= 1 else 100.0
    for xi, v in zip(x, acc):
        ax.text(xi, v + 0.01 * top, f"{v:.3f}" if top == 1 else f"{v:.1f}", ha="center", va="bottom",
                fontsize=_FONT - 1)
    ax.set_ylim(0, top * 1.1)
    ax.set_xticks(x, [str(nm) for nm in names], rotation=30 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor", fontsize=_FONT)
    ax.set_ylabel(ylabel, fontsize=_FONT + 1)
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig
