"""CAMs for object detection: the box-score target, FPN levels → one map, AblationCAM on FPN levels, the scenes'
boxes, and (on the cached tiny detector) maps that peak inside their boxes."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

import xai_bench  # noqa: F401  (before torchvision)
from xai_bench.attribution import AblationCAM, BoxScoreTarget, EigenCAM, FPNLevelsToMap
from xai_bench.data.detection import mask_boxes, shape_scenes

WEIGHTS = Path(__file__).parent / "data" / "tiny_fcos_shapes.safetensors"


def test_box_score_target_is_score_times_iou_of_the_same_category():
    det = {"boxes": torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 2])}
    ref = torch.tensor([[0.0, 0, 10, 8]])  # IoU 0.8 with box 0, 0.625 with box 1, 0 with box 2
    rows = torch.tensor([0])
    assert torch.allclose(BoxScoreTarget([ref], [torch.tensor([1])])([det], rows), torch.tensor([0.9 * 0.8]))
    assert BoxScoreTarget([ref], [torch.tensor([2])])([det], rows).item() == 0  # category must match
    assert BoxScoreTarget([ref], [torch.tensor([1])], iou_threshold=0.85)([det], rows).item() == 0
    two = BoxScoreTarget([torch.cat([ref, torch.tensor([[20.0, 20, 30, 30]])])], [torch.tensor([1, 2])])
    assert torch.allclose(two([det], rows), torch.tensor([0.72 + 0.7]))  # summed over the reference boxes
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert BoxScoreTarget([ref], [torch.tensor([1])])([empty], rows).item() == 0


def test_fpn_levels_to_map_stacks_levels_at_the_finest_size():
    levels = OrderedDict(p4=torch.rand(2, 3, 8, 8), p8=torch.rand(2, 5, 4, 4))
    out = FPNLevelsToMap()(levels)
    assert out.shape == (2, 8, 8, 8)
    assert torch.equal(out[:, :3], levels["p4"])
    assert torch.allclose(out[:, 3:].mean((2, 3)), levels["p8"].mean((2, 3)), atol=1e-6)  # bilinear ×2 keeps means


class TwoLevels(nn.Module):
    """A toy 'FPN' (two levels) and a head that reads both: logits from their pooled channels."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 2, 3, padding=1), nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.fpn = nn.Identity()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        levels = self.fpn(OrderedDict(p1=torch.relu(self.a(x)), p2=torch.relu(self.b(x))))
        return self.head(torch.cat([levels["p1"].mean((2, 3)), levels["p2"].mean((2, 3))], 1))


def test_ablationcam_ablates_one_channel_of_one_level():
    model, x = TwoLevels().eval(), torch.rand(1, 3, 8, 8)
    fpn = FPNLevelsToMap()
    cam = AblationCAM(model, model.fpn, fpn).attribute(x, target=1, relu_attributions=False)
    with torch.no_grad():
        a, b = torch.relu(model.a(x)), torch.relu(model.b(x))
        y = model(x)[0, 1]
        acts = fpn(OrderedDict(p1=a, p2=b))
        expected = torch.zeros(8, 8)
        for k in range(5):
            a2, b2 = a.clone(), b.clone()
            (a2[:, k] if k < 2 else b2[:, k - 2]).zero_()
            y_k = model.head(torch.cat([a2.mean((2, 3)), b2.mean((2, 3))], 1))[0, 1]
            expected += (y - y_k) / y * acts[0, k]
    assert torch.allclose(cam[0, 0], expected, atol=1e-5)
    assert not model.fpn._forward_hooks


def test_scene_boxes_are_the_masks_bounding_boxes():
    d = shape_scenes(6, seed=3)
    assert d["image"].shape == (6, 3, 64, 64)
    for boxes, labels, masks in zip(d["boxes"], d["labels"], d["masks"]):
        assert 1 <= len(boxes) == len(labels) == len(masks) <= 3
        for box, m in zip(boxes.long().tolist(), masks):
            x1, y1, x2, y2 = box
            assert m[y1:y2, x1:x2].sum() == m.sum() and m[y1, x1:x2].any() and m[y2 - 1, x1:x2].any()
    assert mask_boxes(torch.zeros(1, 4, 4, dtype=torch.bool)).tolist() == [[0, 0, 0, 0]]


def _cached_detector():
    from safetensors.torch import load_file

    from xai_bench.models.detection import tiny_fcos

    model = tiny_fcos()
    model.load_state_dict(load_file(str(WEIGHTS)))
    return model.eval()


def test_detection_cams_peak_inside_their_boxes():
    """The tiny FCOS cached by ``python examples/detection_cam.py`` (copied to tests/data): on unseen scenes, each
    detected box's AblationCAM (box-score target, backbone stage at stride 4) peaks inside that box for most boxes,
    and EigenCAM peaks on an object in most scenes."""
    from xai_bench.models.detection import explaining

    model = _cached_detector()
    from torchvision.ops import nms  # after tiny_fcos, which makes torchvision's NMS work without its extension

    scenes = shape_scenes(12, seed=999)
    x = scenes["image"]
    with torch.no_grad():
        dets = model(x)
    layer = model.backbone.c4
    hits, total = 0, 0
    for i, det in enumerate(dets):
        keep = nms(det["boxes"], det["scores"], 0.5)[:3]  # one box per object (the detector's NMS is per class)
        b, lab = det["boxes"][keep], det["labels"][keep]
        if len(b) == 0:
            continue
        target = BoxScoreTarget([b[j:j + 1] for j in range(len(b))], [lab[j:j + 1] for j in range(len(b))])
        with explaining(model):
            maps = AblationCAM(model, layer).attribute(x[i:i + 1].expand(len(b), -1, -1, -1), target=target,
                                                       batch_size=64)
        for j in range(len(b)):
            m = torch.nn.functional.interpolate(maps[j:j + 1], size=(64, 64), mode="bilinear")[0, 0]
            py, px = divmod(int(m.argmax()), 64)
            x1, y1, x2, y2 = b[j].tolist()
            hits += int(x1 - 2 <= px + 0.5 <= x2 + 2 and y1 - 2 <= py + 0.5 <= y2 + 2)
            total += 1
    assert total >= 12, f"the cached detector found only {total} boxes in 12 scenes"
    assert hits > 0.5 * total, f"{hits}/{total} box maps peak inside their box"
    eigen = EigenCAM(model, layer).attribute(x)
    on_object = 0
    for i in range(len(x)):
        m = torch.nn.functional.interpolate(eigen[i:i + 1], size=(64, 64), mode="bilinear")[0, 0]
        py, px = divmod(int(m.argmax()), 64)
        on_object += int(scenes["masks"][i][:, max(py - 2, 0):py + 3, max(px - 2, 0):px + 3].any())
    assert on_object >= 9, f"EigenCAM peaks on an object in {on_object}/12 scenes"


@pytest.mark.parametrize("name", ["GradCAM", "ScoreCAM", "EigenCAM", "GradCAMPlusPlus", "AblationCAM"])
def test_template_removes_hooks_when_the_model_raises(name):
    import xai_bench.attribution as attribution

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3, padding=1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            y = self.conv(x)
            if self.calls > 1:
                raise RuntimeError("boom")
            return y.mean((2, 3))

    model = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        getattr(attribution, name)(model, model.conv).attribute(torch.rand(1, 3, 8, 8), target=0)
        model.calls = 1  # EigenCAM needs one pass only: make the next call raise
        getattr(attribution, name)(model, model.conv).attribute(torch.rand(1, 3, 8, 8), target=0)
    assert not model.conv._forward_hooks


def test_tiny_detector_trains_and_detects_in_torchvision_format():
    from xai_bench.models.detection import tiny_fcos, train_detector

    torch.manual_seed(0)
    model = tiny_fcos()
    d = shape_scenes(8, seed=5)
    before = [p.detach().clone() for p in model.parameters()]
    history = train_detector(model, d["image"], d["boxes"], d["labels"], steps=2, batch_size=4)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(history)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.no_grad():
        out = model.eval()(d["image"][:2])
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"} and out[0]["boxes"].shape[-1] == 4


def test_detection_cams_run_on_the_coco_faster_rcnn_architecture():
    """The network-only model's code path, offline: torchvision's Faster R-CNN (ResNet-50 FPN v2) with random
    weights (nothing downloaded), explained at its FPN with EigenCAM and with AblationCAM on a box-score target."""
    import torch.nn.functional as F

    from xai_bench.models.detection import coco_faster_rcnn, explaining

    torch.manual_seed(0)
    model = coco_faster_rcnn(pretrained=False, min_size=96, max_size=96, box_score_thresh=0.0,
                             box_detections_per_img=5)
    assert len(model.class_names) == 91 and model.class_names[1] == "person"
    x = torch.rand(1, 3, 96, 96)
    eigen = EigenCAM(model, model.backbone, FPNLevelsToMap()).attribute(x)
    assert eigen.shape[:2] == (1, 1) and torch.isfinite(eigen).all() and eigen.std() > 0
    with torch.no_grad(), explaining(model):
        det = model(x)[0]
    assert len(det["boxes"]) > 0  # random heads score every box; the threshold is 0 here
    box, label = det["boxes"][:1], det["labels"][:1]
    target = BoxScoreTarget([box], [label])
    with explaining(model):
        cam = AblationCAM(model, model.backbone, FPNLevelsToMap()).attribute(x, target=target, max_channels=4,
                                                                             batch_size=4)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear")
    assert cam.shape == (1, 1, 96, 96) and torch.isfinite(cam).all()
