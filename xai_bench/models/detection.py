"""Object detectors for detection CAMs: a tiny FCOS for ``shape_scenes`` (offline) and torchvision's COCO Faster
R-CNN (network).

A detector here is any torchvision detection model in eval mode: Tensor[N, 3, H, W] images in [0, 1] → a list of
dicts with ``boxes`` (x1, y1, x2, y2, pixels), ``scores`` and ``labels``. CAMs explain it at its FPN
(``model.backbone``: an ordered dict of levels) through
:class:`~xai_bench.attribution.cam_base.FPNLevelsToMap` with a
:class:`~xai_bench.attribution.cam_targets.BoxScoreTarget`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from xai_bench._compat import ensure_torchvision_nms
from xai_bench.progress import ProgressBar

__all__ = ["TinyBackbone", "coco_faster_rcnn", "explaining", "tiny_fcos", "train_detector"]


@contextmanager
def explaining(model: nn.Module, score_thresh: float = 0.01) -> Iterator[nn.Module]:
    """Lower the detector's score threshold for a block (restored after it).

    A box-score target reads the score of the detection that matches a box; when a perturbation (an ablated
    channel) pushes it under the deployment threshold the detection vanishes and the score jumps to 0, so every
    perturbation near the threshold looks decisive. With a low threshold the score falls smoothly instead.
    """
    owner = model.roi_heads if hasattr(model, "roi_heads") else model  # Faster R-CNN keeps it on its ROI heads
    old = owner.score_thresh
    owner.score_thresh = score_thresh
    try:
        yield model
    finally:
        owner.score_thresh = old


class TinyBackbone(nn.Module):
    """Three conv stages (strides 2, 4, 8) and a two-level FPN (strides 4 and 8, 32 channels each)."""

    out_channels = 32

    def __init__(self, in_chans: int = 3, width: int = 32) -> None:
        from torchvision.ops import FeaturePyramidNetwork

        super().__init__()

        def stage(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                 nn.ReLU())

        self.stem = stage(in_chans, width // 2)
        self.c4 = stage(width // 2, width)
        self.c8 = stage(width, 2 * width)
        self.fpn = FeaturePyramidNetwork([width, 2 * width], self.out_channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        c4 = self.c4(self.stem(x))
        c8 = self.c8(c4)
        return self.fpn(OrderedDict([("p4", c4), ("p8", c8)]))


def tiny_fcos(num_classes: int = 6, image_size: int = 64, score_thresh: float = 0.3) -> nn.Module:
    """torchvision's FCOS (Tian et al., ICCV 2019) on :class:`TinyBackbone`, sized for ``shape_scenes`` (64×64)."""
    ensure_torchvision_nms()
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((1.0,), (1.0,)))
    return FCOS(TinyBackbone(), num_classes=num_classes, min_size=image_size, max_size=image_size,
                image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25], anchor_generator=anchors,
                score_thresh=score_thresh, nms_thresh=0.5, detections_per_img=10, topk_candidates=100)


def coco_faster_rcnn(pretrained: bool = True, **kwargs: Any) -> nn.Module:
    """torchvision's COCO-pretrained Faster R-CNN (ResNet-50 FPN v2); needs network for the weights the first
    time. Its 91 COCO category names are ``model.class_names``. ``pretrained=False`` builds the same architecture
    with random weights and downloads nothing (the tests use it to run the detection CAMs on this model offline);
    ``kwargs`` go to torchvision's builder (e.g. ``min_size``, ``box_score_thresh``)."""
    ensure_torchvision_nms()
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights, fasterrcnn_resnet50_fpn_v2

    weights = FasterRCNN_ResNet50_FPN_V2_Weights.DEFAULT
    if not pretrained:
        model = fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                           num_classes=len(weights.meta["categories"]), **kwargs)
        model.class_names = list(weights.meta["categories"])
        return model.eval()
    try:
        model = fasterrcnn_resnet50_fpn_v2(weights=weights, **kwargs)
    except Exception as exc:  # urllib / hub errors differ by version; the fix is the same
        raise RuntimeError(f"Could not load torchvision's COCO Faster R-CNN weights ({type(exc).__name__}: {exc}); "
                           "it needs network the first time. Offline, use the tiny detector trained on "
                           "shape_scenes (python examples/detection_cam.py)") from exc
    model.class_names = list(weights.meta["categories"])
    return model.eval()


def train_detector(model: nn.Module, images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor], *,
                   steps: int = 300, batch_size: int = 16, lr: float = 0.01, seed: int = 0,
                   show_progress: bool | None = None) -> list[float]:
    """A short SGD loop (torchvision detectors return their losses in train mode). Returns the loss per step.

    Written here rather than in ``xai_bench.training`` because that loop is for classifiers (logits, accuracy,
    checkpoints); a detector for CAM demos needs a few hundred steps of the summed losses and nothing else.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    model.train()
    history = []
    with ProgressBar(total=steps, desc="detector training", unit="step", show=show_progress) as bar:
        for _ in range(steps):
            idx = torch.randint(0, len(images), (batch_size,), generator=g).tolist()
            targets = [{"boxes": boxes[i], "labels": labels[i]} for i in idx]
            loss = sum(model(list(images[idx]), targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            history.append(float(loss.detach()))
            bar.update(1)
    return history
