"""Explanation-metric figures: the methods × metrics table as a heat map of ranks with the scores written in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from xai_bench.viz._common import _FONT, _new_figure

__all__ = ["metrics_heatmap"]


def metrics_heatmap(rows: Sequence[dict[str, Any]], *, title: str | None = None, cell_size: float = 0.9) -> Figure:
    """Methods (rows) × metrics (columns), coloured by the method's rank on that metric (bright = best), annotated
    with mean ± standard error. Colour is rank, not value, because metrics live on unrelated scales; each column
    header says whether higher (↑) or lower (↓) is better.

    Args:
        rows: :func:`xai_bench.metrics.explanation.summary_rows` output (keys method, metric, category,
            higher_is_better, mean, se).
        title: figure title.
        cell_size: inches per cell.
    """
    from xai_bench.metrics.explanation.scoring import rank_methods

    if not rows:
        raise ValueError("metrics_heatmap needs at least one (method, metric) row")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in sorted(rows, key=lambda r: r["category"])))
    ranks = {r["method"]: r for r in rank_methods(list(rows))}
    cell = {(r["method"], r["metric"]): r for r in rows}
    grid = np.full((len(methods), len(metrics)), np.nan)
    for i, m in enumerate(methods):
        for j, k in enumerate(metrics):
            grid[i, j] = ranks[m].get(f"rank/{k}", np.nan)
    width = max(4.0, 1.6 + cell_size * 1.3 * len(metrics))
    height = max(2.0, 1.4 + cell_size * 0.45 * len(methods))
    fig = _new_figure((width, height))
    ax = fig.add_axes((0.16, 0.08, 0.8, 0.62 if len(methods) > 2 else 0.5))
    ax.imshow(grid, cmap="viridis_r", vmin=1, vmax=max(1, len(methods)), aspect="auto")
    for (i, m), (j, k) in ((p, q) for p in enumerate(methods) for q in enumerate(metrics)):
        r = cell.get((m, k))
        if r is None or math.isnan(r["mean"]):
            continue
        se = "" if math.isnan(r["se"]) else f"\n±{r['se']:.2g}"
        ax.text(j, i, f"{r['mean']:.3g}{se}", ha="center", va="center", fontsize=_FONT - 2,
                color="black" if grid[i, j] <= (len(methods) + 1) / 2 else "white")
    heads = []
    for k in metrics:
        r = next(r for r in rows if r["metric"] == k)
        heads.append(f"{k} {'↑' if r['higher_is_better'] else '↓'}\n({r['category']})")
    ax.set_xticks(range(len(metrics)), heads, rotation=35, ha="left", fontsize=_FONT - 1)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(methods)), [f"{m}  (median rank {ranks[m]['median_rank']:.1f})" for m in methods],
                  fontsize=_FONT)
    fig.suptitle(f"{title + ' · ' if title else ''}colour = rank on the metric (bright = best)", fontsize=_FONT + 1,
                 y=0.99)
    return fig
