"""Ensemble figures: member votes on one image, images ranked by uncertainty, one accuracy per model."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

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

__all__ = ["member_votes_figure", "per_model_accuracy_figure", "still_correct_figure", "uncertainty_strip"]


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


def still_correct_figure(
    images: ArrayLike,
    image_names: Sequence[str],
    corruptions: Sequence[str],
    member_names: Sequence[str],
    classes: Sequence[Sequence[Sequence[str]]],
    correct: Sequence[Sequence[Sequence[bool]]],
    *,
    title: str | None = None,
    cell_size: float = 1.8,
) -> Figure:
    """The "still correct?" table of a robustness study: each image (rows) clean and under each corruption
    (columns), with every member's top class underneath, green ✓ if it is still in the reference set, red ✗ if not.

    Args:
        images: ``N×L×C×H×W`` images in [0, 1]: image ``i`` under corruption ``l`` (``l = 0``: clean).
        image_names: ``N`` names.
        corruptions: ``L`` column labels.
        member_names: ``M`` model names.
        classes: ``[N][L][M]`` top-1 class names.
        correct: ``[N][L][M]`` whether each is correct.
        title: figure title.
        cell_size: width of one image in inches.

    Returns:
        The figure.
    """
    imgs = _to_numpy(images, "images")
    if imgs.ndim != 5:
        raise ValueError(f"images must be N×L×C×H×W, got shape {imgs.shape}")
    n, ncols = imgs.shape[:2]
    _check_len(image_names, n, "image_names")
    _check_len(corruptions, ncols, "corruptions")
    m = len(member_names)
    label_h = _LINE_IN * (m + 0.5)
    fig, axes, _, _ = _grid(n, [ncols], aspect=_aspect(*imgs.shape[3:]), cell_w=cell_size, left=0.3,
                            right=0.05, top=0.35 + (_LINE_IN if title else 0), bottom=label_h, wspace=0.12,
                            hspace=0.15 + label_h)
    fontsize = _FONT - 1.5
    # members sharing a family prefix (efficientnet_lite0/1/2) are told apart by the rest of their names
    prefix = os.path.commonprefix([str(m) for m in member_names]) if m > 1 else ""
    prefix = prefix[: prefix.rfind("_") + 1]
    short = [str(name)[len(prefix):] for name in member_names]
    fits = max(8, int((cell_size + 0.1) * 72 / (0.6 * fontsize)))  # characters that fit under one cell
    for i in range(n):
        for j in range(ncols):
            ax = axes[i][j]
            _draw_image(ax, _image_np(imgs[i, j], f"images[{i}, {j}]"))
            _clean_axis(ax)
            if i == 0:
                ax.set_title(str(corruptions[j]), fontsize=_FONT + 1)
            if j == 0:
                ax.set_ylabel(str(image_names[i])[:24], fontsize=_FONT + 1)
            for k, member in enumerate(short):
                ok = bool(correct[i][j][k])
                text = f"{'✓' if ok else '✗'} {member}: {classes[i][j][k]}"
                ax.text(0.0, -0.04 - k * _LINE_IN / cell_size, text if len(text) <= fits else text[:fits - 1] + "…",
                        transform=ax.transAxes, ha="left", va="top", fontsize=fontsize,
                        color="tab:green" if ok else "tab:red")
    if title:
        fig.suptitle(title, fontsize=_FONT + 1.5, y=1 - 0.05 / fig.get_size_inches()[1], va="top")
    return fig
