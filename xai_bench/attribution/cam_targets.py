"""Target objects for CAMs: which scalar per image a map explains (pytorch-grad-cam's ``*Target`` classes, batched).

A target is called as ``target(outputs, rows)``: ``outputs`` is the model's output for a batch, ``rows`` (LongTensor
of the batch's length) says which original image each row of the batch belongs to, since Score-CAM and AblationCAM
send many perturbed copies of each image through the model at once. It returns Tensor[B] scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["BoxScoreTarget", "ClassTarget", "Target", "as_target", "box_iou"]


class Target(Protocol):
    def __call__(self, outputs: Any, rows: Tensor) -> Tensor: ...


class ClassTarget:
    """The logit (or softmax probability) of one class per image.

    Args:
        classes: LongTensor[N], the class explained for image ``i``.
        softmax: score the softmax probability instead of the logit (Score-CAM's choice). Default: False
    """

    def __init__(self, classes: Tensor, softmax: bool = False) -> None:
        self.classes = torch.as_tensor(classes).long()
        self.softmax = bool(softmax)

    def __call__(self, outputs: Tensor, rows: Tensor) -> Tensor:
        if not isinstance(outputs, Tensor) or outputs.dim() != 2:
            raise ValueError(f"ClassTarget needs N×K model outputs, got {type(outputs).__name__}; explain a "
                             f"detector with a BoxScoreTarget")
        if self.softmax:
            outputs = outputs.softmax(dim=1)
        return outputs.gather(1, self.classes.to(outputs.device)[rows].unsqueeze(1)).squeeze(1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes Tensor[A, 4] × Tensor[B, 4] (x1, y1, x2, y2) → Tensor[A, B] (``torchvision.ops.box_iou``)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp_min(1e-12)


class BoxScoreTarget:
    """A detector's evidence for chosen boxes: for each reference box, the best ``score × IoU`` over the detections
    of the same category that overlap it by more than ``iou_threshold``, summed over the image's reference boxes.

    pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` scores ``score + IoU`` of the best-overlapping detection; the
    product goes to 0 as either does, so a perturbation that keeps the box but drops its confidence (or the reverse)
    counts as losing it. Outputs are torchvision's detection format: a list of dicts with ``boxes`` Tensor[D, 4],
    ``scores`` Tensor[D], ``labels`` Tensor[D].

    Args:
        boxes: per image, Tensor[B_i, 4] reference boxes (x1, y1, x2, y2) in pixels.
        labels: per image, Tensor[B_i] their categories.
        iou_threshold: detections overlapping a reference box less than this do not count. Default: 0.5
    """

    def __init__(self, boxes: Sequence[Tensor], labels: Sequence[Tensor], iou_threshold: float = 0.5) -> None:
        if len(boxes) != len(labels):
            raise ValueError(f"BoxScoreTarget: {len(boxes)} box sets but {len(labels)} label sets")
        self.boxes = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
        self.labels = [torch.as_tensor(lab).long().reshape(-1) for lab in labels]
        self.iou_threshold = float(iou_threshold)

    def __call__(self, outputs: Sequence[dict[str, Tensor]], rows: Tensor) -> Tensor:
        scores = []
        for det, i in zip(outputs, rows.tolist()):
            ref, ref_labels = self.boxes[i].to(det["boxes"].device), self.labels[i].to(det["boxes"].device)
            if det["boxes"].numel() == 0 or ref.numel() == 0:
                scores.append(det["boxes"].new_zeros(()) + 0 * det["scores"].sum())
                continue
            iou = box_iou(ref, det["boxes"])  # B_i × D
            ok = (iou > self.iou_threshold) & (ref_labels[:, None] == det["labels"][None, :])
            value = torch.where(ok, iou * det["scores"][None, :], torch.zeros_like(iou))
            scores.append(value.amax(dim=1).sum())
        return torch.stack(scores)


def as_target(target: Any, inputs: Tensor, outputs: Any, softmax: bool = False) -> Target:
    """Captum-style ``target`` (``None``: the predicted class; an int; a list / 1-D tensor of N ints) or a target
    object (anything callable) → a :class:`Target`. ``outputs`` is the model's output on ``inputs``."""
    if target is not None and not isinstance(target, (int, list, Tensor)) and callable(target):
        return target
    from xai_bench.checks import target_indices

    return ClassTarget(target_indices(None, inputs, target, logits=outputs), softmax=softmax)
