"""Name what a figure shows: a sweep writes many figures of the same kind, and each must say which model (and which
attack or corruption) it is about."""

from __future__ import annotations

from matplotlib.figure import Figure

__all__ = ["figure_texts", "name_figure"]

_FONT = 10  # points: one step above the figures' own 9-pt text


def figure_texts(fig: Figure) -> list[str]:
    """Every title-like text of ``fig``: the suptitle, figure texts, and each axes' titles."""
    texts = [t.get_text() for t in fig.texts] + [fig.get_suptitle()]
    for ax in fig.axes:
        texts += [ax.get_title(loc) for loc in ("left", "center", "right")]
    return [t for t in texts if t]


def name_figure(fig: Figure, header: str, required: str | None = None) -> Figure:
    """Make ``fig`` name its subject: unless a title already contains ``required`` (default: ``header``), put
    ``header`` above everything it draws.

    Constrained-layout figures get it as (or prefixed to) their suptitle, so the layout makes room; figures laid out
    by hand get a line above their tight bounding box, which :func:`~xai_bench.viz.save_figure` (``bbox_inches=
    "tight"``) keeps.

    Returns:
        ``fig``.
    """
    required = required or header
    if any(required in t for t in figure_texts(fig)):
        return fig
    engine = fig.get_layout_engine()
    if engine is not None and type(engine).__name__ == "ConstrainedLayoutEngine":
        old = fig.get_suptitle()
        fig.suptitle(f"{header}\n{old}" if old else header, fontsize=_FONT)
        return fig
    renderer = fig.canvas.get_renderer()
    top = fig.get_tightbbox(renderer).y1  # inches, above the figure when titles stick out
    height = fig.get_size_inches()[1]
    fig.text(0.5, (max(top, height) + 0.04) / height, header, ha="center", va="bottom", fontsize=_FONT)
    return fig
