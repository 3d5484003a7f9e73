"""Figures that compare the jobs of a sweep (drawn by :mod:`xai_bench.reports`): an ensemble's images ranked by
uncertainty, and the training curves of several runs. The per-job figures (accuracy vs ε, metric and corruption heat
maps) are the ones in :mod:`~xai_bench.viz.robustness` and :mod:`~xai_bench.viz.explanation_metrics`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from xai_bench.viz._common import _FONT, _MARKERS, _new_figure

__all__ = ["training_curves", "uncertainty_ranking"]


def uncertainty_ranking(
    images: Sequence[str],
    entropy: Sequence[float],
    mutual_information: Sequence[float] | None = None,
    *,
    correct: Sequence[bool | None] | None = None,
    classes: Sequence[str] | None = None,
    max_entropy: float | None = None,
    title: str | None = None,
) -> Figure:
    """Images ranked from most to least certain (top to bottom): predictive entropy as bars, the members'
    disagreement (mutual information, the epistemic part of the entropy) as a darker inner bar.

    Args:
        images: image names, in rank order (most certain first).
        entropy: predictive entropy of the ensemble's mean probabilities, nats.
        mutual_information: mutual information between prediction and member, nats (optional).
        correct: whether the ensemble's class is right (``None``: unknown); marked ✓ / ✗ after the name.
        classes: the ensemble's class per image, written at the bar's end.
        max_entropy: a dotted line at the largest possible entropy (``log(number of classes)``).
        title: axes title.
    """
    n = len(images)
    if n == 0 or len(entropy) != n:
        raise ValueError(f"images ({n}) and entropy ({len(entropy)}) must be non-empty and the same length")
    h = np.asarray(entropy, dtype=float)
    fig = _new_figure((6.4, 1.2 + 0.28 * n), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(n)
    ax.barh(y, h, color="C0", alpha=0.55, label="predictive entropy H")
    if mutual_information is not None:
        ax.barh(y, np.asarray(mutual_information, dtype=float), height=0.4, color="C3",
                label="mutual information (members disagree)")
    marks = [("" if c is None else " ✓" if c else " ✗") for c in (correct or [None] * n)]
    ax.set_yticks(y, [f"{i + 1}. {name}{mark}" for i, (name, mark) in enumerate(zip(images, marks))],
                  fontsize=_FONT - 1)
    top = float(np.nanmax(h)) if np.isfinite(h).any() else 1.0
    if classes is not None:
        for yi, hi, cls in zip(y, h, classes):
            if math.isfinite(hi):
                ax.text(hi + 0.01 * top, yi, str(cls)[:28], va="center", fontsize=_FONT - 2, color="0.25")
    if max_entropy:
        ax.axvline(max_entropy, color="0.4", linestyle=":", linewidth=1)
        top = max(top, max_entropy)
    ax.set_xlim(0, top * 1.35)
    ax.invert_yaxis()
    ax.set_xlabel("nats (most certain at the top)", fontsize=_FONT)
    ax.legend(fontsize=_FONT - 1, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title, fontsize=_FONT + 1)
    return fig


def training_curves(curves: Mapping[str, tuple[Sequence[float], Mapping[str, Sequence[float]]]], *,
                    title: str | None = None) -> Figure:
    """Loss (left) and accuracy (right) per epoch, one colour per run, solid for training and dashed for validation.

    Args:
        curves: run label → ``(epochs, {"train/loss": …, "val/loss": …, "train/acc": …, "val/acc": …})`` (any
            subset of the four series).
        title: figure title.
    """
    if not curves:
        raise ValueError("curves is empty; pass run label → (epochs, series)")
    fig = _new_figure((8.0, 3.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, what in zip(axes, ("loss", "acc")):
        for i, (label, (epochs, series)) in enumerate(curves.items()):
            for split, style in (("train", "-"), ("val", "--")):
                ys = series.get(f"{split}/{what}")
                if ys is not None and len(ys):
                    ax.plot(epochs, ys, style, color=f"C{i % 10}", marker=_MARKERS[i % len(_MARKERS)],
                            markersize=3, label=f"{label} ({split})")
        ax.set_xlabel("epoch", fontsize=_FONT)
        ax.set_ylabel("accuracy" if what == "acc" else "loss", fontsize=_FONT)
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.spines[["top", "right"]].set_visible(False)
    axes[1].legend(fontsize=_FONT - 2, frameon=False)
    if title:
        fig.suptitle(title, fontsize=_FONT + 1)
    return fig
