"""The classic LIME figure (Ribeiro et al., KDD 2016, Fig. 4): each image with only its k most positive superpixels
shown, beside its k most negative ones."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from xai_bench.viz._common import (_FONT, _LINE_IN, ArrayLike, _aspect, _batch, _check_len, _clean_axis, _draw_image,
                                   _grid, _image_np, _map_batch, _n_lines, _to_numpy, _wrap)

__all__ = ["segment_weights", "topk_superpixel_figure"]


def segment_weights(attr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean attribution of each segment ``0 … K−1`` of ``mask`` (H×W ints) in one map (H×W)."""
    k = int(mask.max()) + 1
    sums = np.bincount(mask.ravel(), weights=attr.ravel(), minlength=k)
    return sums / np.maximum(np.bincount(mask.ravel(), minlength=k), 1)


def _keep(img: np.ndarray, mask: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The image where ``mask`` is in ``ids``; elsewhere a dim grey, so the kept segments stand out."""
    keep = np.isin(mask, ids)
    grey = img if img.ndim == 2 else img.mean(-1)
    dim = 0.15 + 0.25 * grey
    out = np.where(keep if img.ndim == 2 else keep[..., None], img, dim if img.ndim == 2 else dim[..., None])
    return out


def topk_superpixel_figure(images: ArrayLike, maps: ArrayLike, masks: ArrayLike, k: int = 5, *,
                           titles: Sequence[str] | None = None, title: str | None = None,
                           cell_size: float = 1.8) -> Figure:
    """Rows of (image, its k most positive superpixels, its k most negative superpixels).

    Args:
        images: ``N×C×H×W`` in [0, 1].
        maps: ``N×1×H×W`` (or ``N×H×W``) superpixel attributions (LIME, Kernel SHAP: constant on each segment).
        masks: ``N×1×H×W`` integer segment ids (what the method used).
        k: segments shown per side; fewer when fewer have that sign.
        titles: one row label per image.
        title: text above the grid.

    Returns:
        The figure.
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    imgs = _batch(images, "images")
    n = imgs.shape[0]
    _check_len(titles, n, "titles")
    attrs = _map_batch(maps, n, "maps").sum(1)
    segs = _map_batch(_to_numpy(masks, "masks", np.int64), n, "masks")[:, 0].astype(np.int64)
    row_labels = [_wrap(t, cell_size) for t in titles] if titles else []
    caption = _wrap(title or "", 3 * cell_size + 0.1) if title else ""
    top = 0.1 + _LINE_IN * (1 + _n_lines([caption])) + (0.1 if caption else 0)
    fig, axes, _, _ = _grid(n, [3], aspect=_aspect(*imgs.shape[2:]), cell_w=cell_size,
                            left=0.1 + _LINE_IN * _n_lines(row_labels), right=0.1, top=top, bottom=0.1,
                            wspace=0.05, hspace=0.05)
    if caption:
        fig.text(0.5, 1 - 0.08 / fig.get_size_inches()[1], caption, ha="center", va="top", fontsize=_FONT)
    heads = ["image", f"top {k} for the class (+)", f"top {k} against (−)"]
    for i in range(n):
        img = _image_np(imgs[i], f"images[{i}]")
        w = segment_weights(attrs[i], segs[i])
        order = np.argsort(w)
        pos = [s for s in order[::-1][:k] if w[s] > 0]
        neg = [s for s in order[:k] if w[s] < 0]
        for j, shown in enumerate((img, _keep(img, segs[i], np.array(pos)), _keep(img, segs[i], np.array(neg)))):
            ax = axes[i][j]
            _draw_image(ax, shown)
            _clean_axis(ax)
            if i == 0:
                ax.set_title(heads[j], fontsize=_FONT)
            if j and not (pos if j == 1 else neg):
                ax.text(0.5, 0.5, "none", transform=ax.transAxes, ha="center", va="center", color="w",
                        fontsize=_FONT)
        if row_labels:
            axes[i][0].set_ylabel(row_labels[i], fontsize=_FONT)
    return fig
