"""Paper figures: attribution maps, calibration, robustness and ensemble plots.

Every function builds a ``matplotlib.figure.Figure`` directly (no ``pyplot``, so no global state: safe in threads,
in sweeps and on headless machines) and returns it; :func:`save_figure` writes it atomically. Inputs follow the
project layout: images are ``N×C×H×W`` (or ``C×H×W`` for one image) floats in [0, 1], attribution maps are
``N×C×H×W`` / ``N×1×H×W`` (or ``C×H×W`` / ``H×W`` for one map), as torch tensors or NumPy arrays. One-channel images
are drawn in gray. A map may be coarser than its image (e.g. a raw Grad-CAM map); it is stretched over the image.

Modules: :mod:`~xai_bench.viz.attribution` (maps and grids), :mod:`~xai_bench.viz.classification` (confusion,
calibration), :mod:`~xai_bench.viz.robustness` (attacks, corruptions), :mod:`~xai_bench.viz.ensemble` (members,
uncertainty), :mod:`~xai_bench.viz.naming` (every figure names its model); the shared drawing kit is in ``_common``.
"""

from xai_bench.viz._common import (CMAP_ABSOLUTE, CMAP_ISOLINES, CMAP_OVERLAY, CMAP_SIGNED, SCALES, display_ranges,
                                   map_range, normalize_map, save_figure)
from xai_bench.viz.superpixels import segment_weights, topk_superpixel_figure
from xai_bench.viz.attribution import (
    attribution_figure,
    attribution_grid,
    draw_heatmap,
    draw_isolines,
    draw_overlay,
    image_grid,
)
from xai_bench.viz.classification import confusion_matrix_figure, reliability_diagram
from xai_bench.viz.ensemble import (member_votes_figure, per_model_accuracy_figure, still_correct_figure,
                                   uncertainty_strip)
from xai_bench.viz.explanation_metrics import (
    metrics_heatmap,
    perturbation_curves,
    randomisation_curve,
    randomisation_grid,
    stability_curves,
)
from xai_bench.viz.naming import figure_texts, name_figure
from xai_bench.viz.robustness import (
    accuracy_vs_eps,
    adversarial_grid,
    corruption_bars,
    corruption_gallery,
    corruption_heatmap,
)

__all__ = [
    "metrics_heatmap",
    "perturbation_curves",
    "randomisation_curve",
    "randomisation_grid",
    "stability_curves",
    "CMAP_ABSOLUTE",
    "CMAP_ISOLINES",
    "CMAP_OVERLAY",
    "CMAP_SIGNED",
    "accuracy_vs_eps",
    "adversarial_grid",
    "attribution_figure",
    "attribution_grid",
    "confusion_matrix_figure",
    "corruption_bars",
    "corruption_gallery",
    "corruption_heatmap",
    "draw_heatmap",
    "draw_isolines",
    "draw_overlay",
    "figure_texts",
    "image_grid",
    "member_votes_figure",
    "name_figure",
    "normalize_map",
    "segment_weights",
    "topk_superpixel_figure",
    "display_ranges",
    "map_range",
    "SCALES",
    "per_model_accuracy_figure",
    "reliability_diagram",
    "save_figure",
    "still_correct_figure",
    "uncertainty_strip",
]
