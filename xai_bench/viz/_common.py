"""Shared drawing kit: array coercion and checks, text wrapping, figure and grid layout, colormaps, saving.

Figures are built as ``matplotlib.figure.Figure`` on an explicit Agg canvas (no ``pyplot``, so no global state:
safe in threads, in sweeps and on headless machines). Inputs are torch tensors or NumPy arrays; images are
channels-first floats in [0, 1]. The checks here stay NumPy-side because every figure also accepts arrays, and a
drawn image may be a hair outside [0, 1] after resampling (it is clipped, not refused).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from xai_bench.utils import atomic_path

ArrayLike = torch.Tensor | np.ndarray

# Default colormaps; callers override them per call with ``cmap=``.
CMAP_ABSOLUTE = "inferno"
CMAP_OVERLAY = "jet"
CMAP_SIGNED = "bwr"
CMAP_ISOLINES = "autumn"

_FONT = 9  # points; cells are sized in inches, so text stays readable however many cells a grid has
_LINE_IN = 0.2  # height of one line of 9-pt text plus padding, in inches
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h")


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


def _extent(image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = image_hw
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def _draw_image(ax: Axes, img: np.ndarray, **kwargs: Any) -> Any:
    if img.ndim == 2:
        return ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)
    return ax.imshow(img, interpolation="nearest", **kwargs)


# ------------------------------------------------------------------------------------------------ map scaling
# How maps share a colour scale: each on its own, across the methods of one image, or across the images of one method.
SCALES = ("per_map", "per_image", "per_method")
SCALE_NOTES = {
    "per_map": "each map scaled on its own",
    "per_image": "one scale per image, shared by its methods",
    "per_method": "one scale per method, shared by all images",
}


def reduce_map(attr: ArrayLike, signed: bool = False) -> np.ndarray:
    """Reduce attributions over channels: ``H×W`` / ``C×H×W`` → ``1×H×W``, ``N×C×H×W`` → ``N×H×W`` (float32).

    Signed maps sum over channels; magnitude maps sum ``|attr|``.
    """
    a = _to_numpy(attr, "attr")
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"attr must be H×W, C×H×W or N×C×H×W, got shape {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError("attr contains NaN or inf values; check the attribution method's output")
    return (a.sum(axis=-3) if signed else np.abs(a).sum(axis=-3)).astype(np.float32)


def map_range(values: np.ndarray, signed: bool, percentile: float = 99.5) -> tuple[float, float]:
    """The display range ``(lo, hi)`` of (reduced) map values: what maps to the bottom and top of the colour map.

    Signed: ``(-s, s)`` with ``s`` the ``percentile``-th percentile of ``|values|``, so 0 is the colour map's centre.
    Magnitudes: ``lo`` = the minimum and ``hi`` = the ``percentile``-th percentile, so a map in [0.229, 0.283] (RISE
    scores) spans the whole colour map instead of landing in its top fifth. A high percentile rather than the maximum
    keeps one extreme pixel from washing out the map (as Captum's ``visualization._normalize_attr``); when that
    percentile equals the minimum (a flat map with a few outliers) the maximum is used. A constant map gets a range
    that draws it at the bottom (at 0 when signed).
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    v = np.asarray(values, dtype=np.float64)
    if signed:
        a = np.abs(v)
        s = float(np.percentile(a, percentile))
        s = s if s > 0 else float(a.max())
        s = s if s > 0 else 1.0
        return -s, s
    lo, hi = float(v.min()), float(np.percentile(v, percentile))
    if hi <= lo:
        hi = float(v.max())
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def scale_values(m: np.ndarray, vrange: tuple[float, float], signed: bool) -> np.ndarray:
    """Map values → [-1, 1] (signed: ``m / hi``) or [0, 1] (``(m - lo) / (hi - lo)``), clipped."""
    lo, hi = vrange
    if signed:
        return np.clip(m / hi, -1.0, 1.0).astype(np.float32)
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def normalize_map(attr: ArrayLike, signed: bool = False, percentile: float = 99.5,
                  vrange: tuple[float, float] | None = None) -> np.ndarray:
    """Reduce an attribution map over channels and scale it for display.

    Signed maps are summed over channels and divided by the ``percentile``-th percentile of their absolute values,
    then clipped to [-1, 1] (0 stays 0: the centre of a diverging colour map). Magnitude maps sum ``|attr|`` over
    channels, subtract their minimum and divide by the ``percentile``-th percentile of what is left, landing in
    [0, 1] (:func:`map_range`). Each map of a batch is scaled on its own unless ``vrange`` is given; an all-zero map
    stays zero.

    Args:
        attr: ``H×W``, ``C×H×W`` or ``N×C×H×W`` attributions (tensor or array).
        signed: keep the sign (sum over channels) instead of the magnitude (sum of ``|.|``).
        percentile: in (0, 100]; the value mapped to the top of the colour scale (±1 signed). Default 99.5.
        vrange: a shared ``(lo, hi)`` in map units (from :func:`display_ranges`) instead of each map's own.

    Returns:
        ``H×W`` (for 2-D/3-D input) or ``N×H×W`` float32 NumPy array in [-1, 1] (signed) or [0, 1].
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    m = reduce_map(attr, signed)
    out = np.stack([scale_values(mi, vrange or map_range(mi, signed, percentile), signed) for mi in m])
    return out[0] if _to_numpy(attr, "attr").ndim < 4 else out


def display_ranges(maps: Mapping[Any, ArrayLike], signed: Mapping[Any, bool] | bool = False, *,
                   scale: str = "per_map", percentile: float = 99.5) -> dict[Any, np.ndarray]:
    """Display ranges of a set of map batches under one of :data:`SCALES`.

    ``per_map``: each map its own range. ``per_method``: one range per method (key) over all its maps, so a map made
    for a class at probability 0.00 is drawn weaker than the top class's and ratios between images survive.
    ``per_image``: one range per image (row) over the methods of the same signedness; only meaningful when the
    methods share units (e.g. gradient × input and IG; not saliency beside RISE probabilities).

    Args:
        maps: key → ``N×C×H×W`` / ``N×H×W`` maps (every batch with the same N).
        signed: per key (missing → False), or one flag.
        scale: ``"per_map"``, ``"per_image"`` or ``"per_method"``.
        percentile: see :func:`map_range`.

    Returns:
        key → ``N×2`` array of ``(lo, hi)`` in map units, one row per image.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")

    def sgn(k: Any) -> bool:
        return signed if isinstance(signed, bool) else bool(signed.get(k, False))

    reduced = {}
    for k, v in maps.items():
        a = _to_numpy(v, f"maps[{k!r}]")
        reduced[k] = reduce_map(a if a.ndim == 4 else a[:, None], sgn(k))
    out: dict[Any, np.ndarray] = {}
    for k, m in reduced.items():
        if scale == "per_map":
            out[k] = np.array([map_range(mi, sgn(k), percentile) for mi in m])
        elif scale == "per_method":
            out[k] = np.tile(map_range(m, sgn(k), percentile), (len(m), 1))
        else:
            peers = [p for p in reduced if sgn(p) == sgn(k)]
            out[k] = np.array([map_range(np.stack([reduced[p][i].ravel() for p in peers]), sgn(k), percentile)
                               for i in range(len(m))])
    return out


def _colorbar(fig: Figure, cmap: str, vrange: tuple[float, float] | None, signed: bool, percentile: float,
              **kwargs: Any) -> Any:
    """A colour bar for maps drawn with ``cmap``: in map units when they share ``vrange``; otherwise each map had its
    own range, and the bar says so (``min`` → ``p99``, or ``−p99`` · 0 · ``+p99`` for signed maps)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    lo, hi = vrange if vrange is not None else (-1.0 if signed else 0.0, 1.0)
    cb = fig.colorbar(ScalarMappable(norm=Normalize(vmin=lo, vmax=hi), cmap=cmap), **kwargs)
    p = f"p{percentile:g}"
    if vrange is None:
        ticks, labels = ([-1.0, 0.0, 1.0], [f"−{p}", "0", f"+{p}"]) if signed else ([0.0, 1.0], ["min", p])
    else:
        ticks = [lo, 0.0, hi] if signed else [lo, hi]
        labels = [f"{t:.3g}" if abs(t) >= 1e-3 * max(abs(lo), abs(hi)) else "0" for t in ticks]
    cb.set_ticks(ticks)
    cb.set_ticklabels(labels)
    cb.ax.tick_params(labelsize=_FONT - 2, length=2, pad=1)
    return cb


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
