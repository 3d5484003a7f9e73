"""Detection CAM figure: each image with its boxes, a class-agnostic map, and one map per box."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.patches import Rectangle

from xai_bench.viz._common import _clean_axis, _draw_image, _image_np, _new_figure, save_figure
from xai_bench.viz.attribution import draw_overlay

__all__ = ["detection_cam_figure"]

_BOX_COLOURS = ("#00e5ff", "#ffea00", "#ff4081", "#76ff03", "#ff9100")


def _boxes(ax, boxes: torch.Tensor, labels: Sequence[str], only: int | None = None) -> None:
    for j, (box, label) in enumerate(zip(boxes.tolist(), labels)):
        if only is not None and j != only:
            continue
        colour = _BOX_COLOURS[j % len(_BOX_COLOURS)]
        x1, y1, x2, y2 = box
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(x1, y1 - 1, label, color=colour, fontsize=7, va="bottom")


def detection_cam_figure(images: torch.Tensor, boxes: Sequence[torch.Tensor], labels: Sequence[Sequence[str]],
                         image_maps: torch.Tensor, box_maps: Sequence[torch.Tensor], path: str | Path, *,
                         image_map_title: str = "EigenCAM", box_map_title: str = "AblationCAM",
                         max_boxes: int = 3, layer_title: str = "FPN") -> Path:
    """Rows: images. Columns: the image with its boxes, ``image_maps`` (one map per image, e.g. EigenCAM), then up
    to ``max_boxes`` per-box maps (``box_maps[i]``: Tensor[B_i, 1, H, W], e.g. AblationCAM with a box-score target),
    each drawn with its box.

    Args:
        images: Tensor[N, 3, H, W] in [0, 1].
        boxes: per image Tensor[B_i, 4] (x1, y1, x2, y2, pixels).
        labels: per image B_i captions ("circle 0.93").
        image_maps: Tensor[N, 1, H, W].
        box_maps: per image Tensor[B_i, 1, H, W].
        path: where the PNG goes.
    """
    n = images.shape[0]
    cols = 2 + max_boxes
    fig = _new_figure((1.6 * cols, 1.7 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        img = _image_np(images[i])
        _draw_image(axes[i, 0], img)
        _boxes(axes[i, 0], boxes[i], labels[i])
        draw_overlay(axes[i, 1], images[i], image_maps[i, 0])
        _boxes(axes[i, 1], boxes[i], labels[i])
        for j in range(max_boxes):
            ax = axes[i, 2 + j]
            if j < len(boxes[i]):
                draw_overlay(ax, images[i], box_maps[i][j, 0])
                _boxes(ax, boxes[i], labels[i], only=j)
            _clean_axis(ax)
            if i == 0:
                ax.set_title(f"{box_map_title}, box {j + 1}", fontsize=8)
        _clean_axis(axes[i, 0])
        if i == 0:
            axes[i, 0].set_title("detections", fontsize=8)
            axes[i, 1].set_title(f"{image_map_title} ({layer_title})", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
