"""``shape_scenes``: several ``synthetic_shapes`` objects on one cluttered background, with their boxes — a tiny
offline detection dataset (the boxes come from the object masks)."""

from __future__ import annotations

import torch
from torch import Tensor

from xai_bench.data.synthetic import make_shapes

__all__ = ["mask_boxes", "shape_scenes"]


def mask_boxes(masks: Tensor) -> Tensor:
    """Tight boxes (x1, y1, x2, y2) in pixels of binary masks Tensor[M, H, W] → Tensor[M, 4] (empty masks: zeros)."""
    rows, cols = masks.any(dim=2), masks.any(dim=1)
    h, w = masks.shape[-2:]
    ar_h, ar_w = torch.arange(h), torch.arange(w)
    y1 = torch.where(rows, ar_h, h).amin(1)
    y2 = torch.where(rows, ar_h, -1).amax(1) + 1
    x1 = torch.where(cols, ar_w, w).amin(1)
    x2 = torch.where(cols, ar_w, -1).amax(1) + 1
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    return torch.where(masks.flatten(1).any(1, keepdim=True), boxes, torch.zeros_like(boxes))


def shape_scenes(n: int, image_size: int = 64, *, max_objects: int = 3, seed: int = 0, num_classes: int = 6,
                 scale: tuple[float, float] = (0.1, 0.17)) -> dict[str, list[Tensor] | Tensor]:
    """``n`` scenes of 1…``max_objects`` shapes each (non-overlapping), on the first shape's cluttered background.

    Returns ``image`` Tensor[N, 3, S, S], and per image ``boxes`` Tensor[B_i, 4] (x1, y1, x2, y2, pixels),
    ``labels`` Tensor[B_i] (shape classes, as in ``synthetic_shapes``) and ``masks`` Tensor[B_i, S, S].
    """
    g = torch.Generator().manual_seed(seed + 7919)
    parts = make_shapes(n * max_objects, image_size, seed=seed, num_classes=num_classes, scale=scale)
    counts = torch.randint(1, max_objects + 1, (n,), generator=g)
    images, boxes, labels, masks = [], [], [], []
    for i in range(n):
        image = parts["image"][i * max_objects].clone()
        taken = torch.zeros(image_size, image_size, dtype=torch.bool)
        keep = []
        for j in range(i * max_objects, i * max_objects + int(counts[i])):
            m = parts["mask"][j, 0] > 0.5
            if (m & taken).any():  # overlapping shapes would hide each other's outline: skip
                continue
            if j != i * max_objects:
                image = torch.where(m, parts["image"][j], image)
            taken |= m
            keep.append(j)
        obj = parts["mask"][keep, 0] > 0.5
        images.append(image)
        masks.append(obj)
        boxes.append(mask_boxes(obj))
        labels.append(parts["label"][keep])
    return {"image": torch.stack(images), "boxes": boxes, "labels": labels, "masks": masks}
