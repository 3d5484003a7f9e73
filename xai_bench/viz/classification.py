"""Classification figures: confusion matrix and reliability diagram (calibration)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from xai_bench.metrics.classification import calibration_bins
from xai_bench.viz._common import _FONT, ArrayLike, _new_figure, _to_numpy, _wrap

__all__ = ["confusion_matrix_figure", "reliability_diagram"]


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


def reliability_diagram(
    confidences: ArrayLike,
    correct: ArrayLike,
    n_bins: int = 15,
    *,
    title: str | None = None,
    show_histogram: bool = True,
    min_samples: int = 100,
) -> tuple[Figure, float]:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.

    Follows Guo et al. (ICML 2017, Fig. 1): bars give each bin's accuracy, shaded bars the gap to its mean
    confidence; below, how many samples fall in each bin with the mean accuracy and confidence marked.

    Args:
        confidences: ``N`` predicted-class probabilities in [0, 1].
        correct: ``N`` booleans (or 0/1).
        n_bins: number of equal-width bins. Default 15.
        title: prefix of the title (the ECE and the sample count are always shown).
        show_histogram: add the confidence histogram under the diagram.
        min_samples: below this many samples the title warns that the ECE is unreliable (with 15 bins, a handful
            of images leaves most bins empty and the rest hold one or two, so the ECE mostly measures noise: five
            confident correct images give ECE ≈ 1 − confidence, five wrong ones ≈ confidence). Default 100.

    Returns:
        ``(figure, ece)`` with ``ece`` as from :func:`xai_bench.metrics.expected_calibration_error`.
    """
    bins = calibration_bins(confidences, correct, n_bins)
    counts, acc, conf = bins
    ece = bins.ece
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
    n = int(counts.sum())
    head = f"{title + ' · ' if title else ''}ECE = {100 * ece:.2f}% (n={n})"
    if n < min_samples:
        head += f"\nonly {n} samples (< {min_samples}): ECE is unreliable"
    ax.set_title(head, fontsize=_FONT + 1, color="C3" if n < min_samples else "black")
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
