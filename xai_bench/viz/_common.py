"""Shared drawing kit: array coercion and checks, text wrapping, figure and grid layout, colormaps, saving.

Figures are built as ``matplotlib.figure.Figure`` on an explicit Agg canvas (no ``pyplot``, so no global state:
safe in threads, in sweeps and on headless machines). Inputs are torch tensors or NumPy arrays; images are
channels-first floats in [0, 1]. The checks here stay NumPy-side because every figure also accepts arrays, and a
drawn image may be a hair outside [0, 1] after resampling (it is clipped, not refused).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
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
