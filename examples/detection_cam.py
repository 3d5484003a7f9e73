"""CAMs for object detection: EigenCAM and AblationCAM (box-score target) on a detector's FPN → a figure.

Offline (default): trains torchvision's FCOS on a tiny backbone over ``shape_scenes`` (synthetic_shapes objects,
boxes from their masks), caches the weights in ``outputs/detector/`` (safetensors; later runs load them), then
explains test scenes::

    python examples/detection_cam.py                      # → docs/img/detection_cam.png
    python examples/detection_cam.py --steps 600 --retrain

With network, torchvision's COCO-pretrained Faster R-CNN on the bundled photos (skimage's astronaut, coffee,
chelsea, motorcycle)::

    python examples/detection_cam.py --model coco_faster_rcnn --out outputs/detection_cam_coco.png
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

import xai_bench  # noqa: F401  (torchvision compat first)
from xai_bench.attribution import AblationCAM, BoxScoreTarget, EigenCAM, FPNLevelsToMap
from xai_bench.data import SHAPES
from xai_bench.data.detection import shape_scenes
from xai_bench.models.detection import coco_faster_rcnn, explaining, tiny_fcos, train_detector
from xai_bench.progress import progress_reporting
from xai_bench.viz.detection import detection_cam_figure

log = logging.getLogger("detection_cam")


def shapes_detector(cache: Path, steps: int, retrain: bool, seed: int = 0) -> torch.nn.Module:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(seed)
    model = tiny_fcos(num_classes=len(SHAPES))
    weights = cache / "tiny_fcos.safetensors"
    if weights.is_file() and not retrain:
        model.load_state_dict(load_file(str(weights)))
        log.info("loaded %s", weights)
    else:
        data = shape_scenes(1024, seed=seed)
        history = train_detector(model, data["image"], data["boxes"], data["labels"], steps=steps, seed=seed)
        log.info("trained %d steps: loss %.3f → %.3f", steps, history[0], sum(history[-20:]) / 20)
        cache.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return model.eval()


def cam_layer(model: torch.nn.Module, layer: str) -> tuple[torch.nn.Module, FPNLevelsToMap | None]:
    """``fpn``: the FPN's levels stacked by FPNLevelsToMap; else a dotted module name (``backbone.c4``)."""
    if layer == "fpn":
        return model.backbone, FPNLevelsToMap()
    return dict(model.named_modules())[layer], None


def explain(model: torch.nn.Module, images: torch.Tensor, class_names: list[str], *, layer: str = "fpn",
            max_boxes: int = 3, max_channels: int | None = None) -> tuple[list, list, torch.Tensor, list]:
    """Detections, EigenCAM per image and AblationCAM per detected box (box-score target) at the input size."""
    import torch.nn.functional as F

    from torchvision.ops import nms

    with torch.no_grad():
        dets = model(images)
    # show each object once: the detector's NMS is per class, so one object can carry boxes of two classes
    dets = [{k: v[nms(d["boxes"], d["scores"], 0.5)] for k, v in d.items()} for d in dets]
    module, reshape = cam_layer(model, layer)
    size = images.shape[-2:]
    eigen = F.interpolate(EigenCAM(model, module, reshape).attribute(images), size=size, mode="bilinear")
    boxes, captions, box_maps = [], [], []
    ablation = AblationCAM(model, module, reshape)
    for i, det in enumerate(dets):
        b, lab = det["boxes"][:max_boxes], det["labels"][:max_boxes]
        boxes.append(b)
        captions.append([f"{class_names[int(c)]} {s:.2f}" for c, s in zip(lab, det["scores"][:max_boxes])])
        if len(b) == 0:
            box_maps.append(torch.zeros(0, 1, *size))
            continue
        target = BoxScoreTarget([b[j:j + 1] for j in range(len(b))], [lab[j:j + 1] for j in range(len(b))])
        with explaining(model):
            maps = ablation.attribute(images[i:i + 1].expand(len(b), -1, -1, -1), target=target,
                                      max_channels=max_channels, batch_size=16)
        box_maps.append(F.interpolate(maps, size=size, mode="bilinear"))
    return boxes, captions, eigen, box_maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny_fcos", "coco_faster_rcnn"], default="tiny_fcos")
    parser.add_argument("--steps", type=int, default=400, help="training steps of the tiny detector")
    parser.add_argument("--retrain", action="store_true", help="train even if a cached detector exists")
    parser.add_argument("--cache", type=Path, default=Path("outputs/detector"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/detection_cam.png"))
    parser.add_argument("--n", type=int, default=4, help="scenes to explain")
    parser.add_argument("--layer", default=None, help="fpn (all FPN levels) or a dotted module name; default: "
                        "backbone.c4 for tiny_fcos (the stride-4 stage after its ReLU), fpn for Faster R-CNN")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with progress_reporting():
        run(args)


def run(args: argparse.Namespace) -> None:
    if args.model == "tiny_fcos":
        model = shapes_detector(args.cache, args.steps, args.retrain)
        images, names, channels = shape_scenes(args.n, seed=12345)["image"], list(SHAPES), None
    else:
        from skimage import data as photos

        model = coco_faster_rcnn()
        names, channels = model.class_names, 256
        pics = [torch.from_numpy(getattr(photos, k)()).permute(2, 0, 1).float() / 255
                for k in ("astronaut", "coffee", "chelsea")][: args.n]
        images = torch.stack([torch.nn.functional.interpolate(p[None], size=(384, 384), mode="bilinear")[0]
                              for p in pics])
    layer = args.layer or ("backbone.c4" if args.model == "tiny_fcos" else "fpn")
    boxes, captions, eigen, box_maps = explain(model, images, names, layer=layer, max_channels=channels)
    path = detection_cam_figure(images, boxes, captions, eigen, box_maps, args.out,
                                layer_title="FPN" if layer == "fpn" else layer)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
