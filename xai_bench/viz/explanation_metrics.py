"""Explanation-metric figures: the methods × metrics table as a heat map of ranks with the scores written in, and
the figures behind single metrics, each drawn from the rows of its table
(:mod:`xai_bench.metrics.explanation.summaries`) so the figure and the CSV hold the same numbers:

- :func:`perturbation_curves` — mean deletion / insertion curve per method ± standard error, score in the legend;
- :func:`randomisation_curve` — Spearman of original vs randomised maps per cascading step (Adebayo et al. 2018);
- :func:`randomisation_grid` — methods × (original map, map after each randomisation step) for one image;
- :func:`stability_curves` — map similarity and flip rate against ε / severity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from xai_bench.viz._common import _FONT, _MARKERS, ArrayLike, _new_figure, _to_numpy

__all__ = ["metrics_heatmap", "perturbation_curves", "randomisation_curve", "randomisation_grid", "stability_curves"]


def metrics_heatmap(rows: Sequence[dict[str, Any]], *, title: str | None = None, cell_size: float = 0.9) -> Figure:
    """Methods × metrics (metrics as rows when there are more of them), coloured by the method's rank on that
    metric (bright = best), annotated with mean ± standard error. Colour is rank, not value, because metrics live
    on unrelated scales; each metric label says whether higher (↑) or lower (↓) is better.

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
    heads = []
    for k in metrics:
        r = next(r for r in rows if r["metric"] == k)
        heads.append(f"{k} {'↑' if r['higher_is_better'] else '↓'} ({r['category']})")
    method_labels = [f"{m}  (median rank {ranks[m]['median_rank']:.1f})" for m in methods]
    # Many metrics (a whole suite) read better as rows: the long axis runs down the page.
    flip = len(metrics) > len(methods)
    shown = grid.T if flip else grid
    n_rows, n_cols = shown.shape
    col_w = cell_size * (1.0 if flip else 1.3)
    width = max(4.0, 3.0 + col_w * n_cols)
    height = max(2.0, 2.4 + cell_size * 0.45 * n_rows)
    # constrained layout sizes the margins from the labels themselves (long metric and method names, any count)
    fig = _new_figure((width, height), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(shown, cmap="viridis_r", vmin=1, vmax=max(1, len(methods)), aspect="auto")
    for (i, m), (j, k) in ((p, q) for p in enumerate(methods) for q in enumerate(metrics)):
        r = cell.get((m, k))
        if r is None or math.isnan(r["mean"]):
            continue
        se = "" if math.isnan(r["se"]) else f"\n±{r['se']:.2g}"
        flag = "\n(flagged)" if r.get("flag") else ""
        ax.text(i if flip else j, j if flip else i, f"{r['mean']:.3g}{se}{flag}", ha="center", va="center",
                fontsize=_FONT - 2, color="black" if grid[i, j] <= (len(methods) + 1) / 2 else "white")
    col_labels, row_labels = (method_labels, heads) if flip else (heads, method_labels)
    ax.set_xticks(range(n_cols), col_labels, rotation=40, ha="right", rotation_mode="anchor", fontsize=_FONT - 1)
    ax.set_yticks(range(n_rows), row_labels, fontsize=_FONT - 1)
    fig.suptitle(f"{title + ' · ' if title else ''}colour = rank on the metric (bright = best)", fontsize=_FONT + 1)
    return fig


def _method_colours(n: int) -> list[Any]:
    """Distinct colours for ``n`` methods: the default cycle up to 10, then tab20 (no two methods share one)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _bands(n_methods: int) -> bool:
    """± s.e. bands only while they stay readable: beyond four methods they cover each other."""
    return n_methods <= 4


def _legend_below(ax: Any, n_entries: int) -> None:
    """The legend under the axes (it never hides a curve), in as many columns as fit."""
    ax.legend(fontsize=_FONT - 1, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2 if n_entries > 4 else 1)


def _group(rows: Sequence[dict[str, Any]], *keys: str) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]], []).append(r)
    return out


def _title(ax: Any, text: str | None) -> None:
    if text:
        ax.set_title(text, fontsize=_FONT + 1)


def perturbation_curves(rows: Sequence[dict[str, Any]], scores: Sequence[dict[str, Any]] | None = None, *,
                        score_labels: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """One panel per curve metric (deletion, insertion, …): the mean curve of each method with a ± standard error
    band, the method's mean score (AUC) ± s.e. in the legend, and a dotted line at the mean unperturbed score.

    Args:
        rows: :func:`~xai_bench.metrics.explanation.summaries.curve_rows` (metric, method, x, mean, se, n, xlabel,
            ylabel).
        scores: :func:`~xai_bench.metrics.explanation.scoring.summary_rows` rows (method, metric, mean, se) for
            the legend; ``None``: no scores.
        score_labels: metric → what its score is (``"AUC"``); default ``"score"``.
        title: figure title (say how many images).
    """
    if not rows:
        raise ValueError("perturbation_curves needs at least one curve row")
    panels = _group(rows, "metric")
    score = {(r["metric"], r["method"]): r for r in scores or []}
    fig = _new_figure((4.4 * len(panels), 3.6 + 0.16 * len(_group(rows, "method"))), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, prow) in zip(axes, panels.items()):
        top, probability = 0.0, "probability" in str(prow[0]["ylabel"])
        start = []
        by_method = _group(prow, "method")
        colours, bands = _method_colours(len(by_method)), _bands(len(by_method))
        for i, (method, mrows) in enumerate(by_method.items()):
            mrows = sorted(mrows, key=lambda r: r["step"])
            x = np.array([r["x"] for r in mrows])
            y = np.array([r["mean"] for r in mrows])
            se = np.nan_to_num(np.array([r["se"] for r in mrows]))
            label = str(method)
            s = score.get((metric, method))
            if s is not None and not math.isnan(s["mean"]):
                pm = "" if math.isnan(s["se"]) else f" ± {s['se']:.2g}"
                label += f"  ({(score_labels or {}).get(metric, 'score')} {s['mean']:.3g}{pm})"
            ax.plot(x, y, linewidth=1.5, label=label, marker=_MARKERS[i % len(_MARKERS)], markersize=3,
                    markevery=max(1, len(x) // 8), color=colours[i])
            if bands:
                ax.fill_between(x, y - se, y + se, color=colours[i], alpha=0.2, linewidth=0)
            top = max(top, float(np.nanmax(y + se)))
            start.append(y[-1] if "insert" in str(mrows[0]["xlabel"]) else y[0])
        if start and "fraction" in str(prow[0]["xlabel"]):  # the unperturbed image's score, shared by all methods
            ax.axhline(float(np.mean(start)), color="0.4", linestyle=":", linewidth=1,
                       label="unperturbed (mean)")
        if probability:
            ax.set_ylim(0, max(1.0, top) * 1.02)  # probabilities on their full scale: no zoomed-in axis
        ax.set_xlabel(str(prow[0]["xlabel"]), fontsize=_FONT + 1)
        ax.set_ylabel(f"{prow[0]['ylabel']} ({'mean ± s.e.' if bands else 'mean; s.e. in the CSV'})",
                      fontsize=_FONT + 1)
        ax.grid(alpha=0.3, linewidth=0.5)
        _legend_below(ax, len(by_method))
        _title(ax, f"{metric} (n={max(r['n'] for r in prow)} maps per method)")
    if title:
        fig.suptitle(title, fontsize=_FONT + 2)
    return fig


def randomisation_curve(rows: Sequence[dict[str, Any]], *, threshold: float | None = None,
                        title: str | None = None, max_ticks: int = 24) -> Figure:
    """Spearman rank correlation between the original and the randomised maps after each randomisation step, one
    line per method (mean ± s.e. over images), the cascading figure of Adebayo et al. (2018): a map that explains
    the model decorrelates as more layers are randomised.

    Args:
        rows: :func:`~xai_bench.metrics.explanation.summaries.layer_rows` (method, step, layer, spearman, se, n,
            cumulative).
        threshold: draw the "insensitive above" line (the metric's ``insensitive_above``).
        title: figure title (say how many images).
        max_ticks: at most this many layer names on the x axis (every k-th beyond).
    """
    if not rows:
        raise ValueError("randomisation_curve needs at least one layer row")
    by_method = _group(rows, "method")
    first = sorted(next(iter(by_method.values())), key=lambda r: r["step"])
    layers = [r["layer"] for r in first]
    cumulative = bool(first[0].get("cumulative", True))
    fig = _new_figure((max(5.0, 1.5 + 0.32 * len(layers)), 4.0), layout="constrained")
    ax = fig.add_subplot()
    colours, bands = _method_colours(len(by_method)), _bands(len(by_method))
    for i, (method, mrows) in enumerate(by_method.items()):
        mrows = sorted(mrows, key=lambda r: r["step"])
        x = np.array([r["step"] for r in mrows])
        y = np.array([r["spearman"] for r in mrows])
        se = np.nan_to_num(np.array([r["se"] for r in mrows]))
        ax.plot(x, y, marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.5, label=str(method),
                color=colours[i])
        if bands:
            ax.fill_between(x, y - se, y + se, color=colours[i], alpha=0.2, linewidth=0)
    ax.axhline(0, color="0.5", linewidth=0.8)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1,
                   label=f"insensitive above {threshold:g} (last step)")
    ax.set_ylim(-1.05, 1.05)  # the whole range of a correlation
    every = max(1, math.ceil(len(layers) / max_ticks))
    ticks = list(range(1, len(layers) + 1))[::every]
    ax.set_xticks(ticks, [layers[t - 1] for t in ticks], rotation=45, ha="right", fontsize=_FONT - 1)
    ax.set_xlim(0.5, len(layers) + 0.5)
    ax.set_xlabel("layers randomised, from the output down, cumulatively (x: the last one randomised)"
                  if cumulative else "the one layer randomised", fontsize=_FONT + 1)
    ax.set_ylabel(f"Spearman ρ, original vs randomised map\n({'mean ± s.e.' if bands else 'mean'})",
                  fontsize=_FONT + 1)
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(fontsize=_FONT - 1, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _title(ax, title or "model parameter randomisation")
    return fig


def randomisation_grid(image: ArrayLike, original: Mapping[str, ArrayLike], randomised: Mapping[str, ArrayLike],
                       layers: Sequence[str], *, max_steps: int = 8, cumulative: bool = True,
                       title: str | None = None, cell_size: float = 1.4) -> Figure:
    """Methods (rows) × (the image, its original map, the map after randomisation steps) for one image.

    Each map is drawn as a magnitude (``|map|``), scaled to its own 99th percentile: the point is where the
    relevance lies, and randomised maps live on very different scales.

    Args:
        image: ``C×H×W`` in [0, 1].
        original: method → the original map (``H×W``, ``1×H×W`` or ``C×H×W``).
        randomised: method → ``L×1×H×W`` (or ``L×H×W``) maps after each of the ``L`` steps.
        layers: the ``L`` layer names, in randomisation order.
        max_steps: at most this many step columns, evenly spaced, the last (fully randomised) always among them.
        cumulative: steps accumulate (headers say "+ layer") or each randomises one layer only.
        title: figure title.
        cell_size: inches per cell.
    """
    from xai_bench.viz.attribution import attribution_grid

    if not original:
        raise ValueError("randomisation_grid needs at least one method")
    n_steps = len(layers)
    if max_steps < 1:
        raise ValueError(f"max_steps must be ≥ 1, got {max_steps}")
    picks = sorted({round(i * (n_steps - 1) / max(1, min(max_steps, n_steps) - 1))
                    for i in range(min(max_steps, n_steps))}) if n_steps else []
    methods = list(original)
    img = _to_numpy(image, "image")
    maps: dict[str, np.ndarray] = {"original map": np.stack([_hw(original[m], f"original[{m!r}]") for m in methods])}
    for s in picks:
        head = f"{'→ ' if cumulative else ''}{layers[s]} ({s + 1}/{n_steps})"
        maps[head] = np.stack([_hw(_to_numpy(randomised[m], f"randomised[{m!r}]")[s], m) for m in methods])
    fig = attribution_grid(np.repeat(img[None], len(methods), 0), {k: v[:, None] for k, v in maps.items()},
                           titles=methods, kind="heatmap", signed=False, percentile=99.0, cell_size=cell_size)
    what = ("map after randomising every layer from the output down to the named one" if cumulative
            else "map after randomising the named layer only")
    fig.suptitle(f"{title + chr(10) if title else ''}{what}; |map|, each scaled to its own 99th percentile",
                 fontsize=_FONT, y=1.0, va="bottom")
    return fig


def _hw(m: ArrayLike, name: str) -> np.ndarray:
    a = _to_numpy(m, name)
    if a.ndim == 3:
        a = a.sum(0)
    if a.ndim != 2:
        raise ValueError(f"{name} must be one map H×W, 1×H×W or C×H×W, got shape {tuple(a.shape)}")
    return a


_SIMILARITY_LABELS = {"spearman": "Spearman ρ (clean vs perturbed map)", "topk_iou": "top-k IoU",
                      "ssim": "SSIM (min-max scaled maps)"}


def stability_curves(rows: Sequence[dict[str, Any]], level: str, *, xlabel: str | None = None,
                     scale: float = 1.0, title: str | None = None) -> Figure:
    """Explanation stability against perturbation strength: one panel per map similarity (Spearman, top-k IoU,
    SSIM; mean ± s.e. per method), and a last panel with the rate at which the prediction flipped.

    Args:
        rows: :func:`~xai_bench.metrics.explanation.summaries.sweep_rows` (method, ``level``, spearman, …,
            flip_rate, n).
        level: the rows' strength column (``eps``, ``severity``).
        xlabel: x-axis label (default: ``level``).
        scale: multiply the strength by this on the x axis (255 draws ε = 8/255 as 8).
        title: figure title (say how many images).
    """
    from xai_bench.metrics.explanation.summaries import SIMILARITIES

    if not rows:
        raise ValueError("stability_curves needs at least one row")
    by_method = _group(rows, "method")
    fig = _new_figure((3.3 * (len(SIMILARITIES) + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, len(SIMILARITIES) + 1, squeeze=False)[0]
    flips: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, (method, mrows) in enumerate(by_method.items()):
        mrows = sorted(mrows, key=lambda r: r[level])
        x = np.array([r[level] for r in mrows]) * scale
        marker = _MARKERS[i % len(_MARKERS)]
        for ax, key in zip(axes, SIMILARITIES):
            y = np.array([r[key] for r in mrows])
            se = np.nan_to_num(np.array([r[f"{key}_se"] for r in mrows]))
            (line,) = ax.plot(x, y, marker=marker, markersize=4, linewidth=1.5, label=str(method))
            ax.fill_between(x, y - se, y + se, color=line.get_color(), alpha=0.2, linewidth=0)
        flips[str(method)] = (x, np.array([r["flip_rate"] for r in mrows]))
    for ax, key in zip(axes, SIMILARITIES):
        lo = min(0.0, float(np.nanmin([r[key] for r in rows] + [0.0])))
        ax.set_ylim(max(-1.05, lo - 0.05), 1.05)  # full similarity range, down to −1 only where the data go there
        ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_ylabel(f"{_SIMILARITY_LABELS[key]} (mean ± s.e.)", fontsize=_FONT)
    ax_f = axes[-1]
    curves = list(flips.items())
    if all(np.array_equal(curves[0][1][1], c[1][1]) for c in curves):
        curves = [("all methods", curves[0][1])]  # the perturbation does not depend on the method
    for i, (method, (x, y)) in enumerate(curves):
        ax_f.plot(x, y, marker=_MARKERS[i % len(_MARKERS)], markersize=4, linewidth=1.5, color="0.25" if
                  len(curves) == 1 else None, label=method)
    ax_f.set_ylim(-0.02, 1.02)
    ax_f.set_ylabel("prediction flip rate", fontsize=_FONT)
    ax_f.legend(fontsize=_FONT - 1, frameon=False)
    for ax in axes:
        ax.set_xlabel(xlabel or level, fontsize=_FONT)
        ax.grid(alpha=0.3, linewidth=0.5)
    axes[0].legend(fontsize=_FONT - 1, frameon=False)
    n = max(r["n"] for r in rows)
    fig.suptitle(f"{title + ' · ' if title else ''}n={n} images per point", fontsize=_FONT + 1)
    return fig
