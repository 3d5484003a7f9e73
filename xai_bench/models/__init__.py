"""Model zoo: ``create_model(name, ...)`` returns an :class:`ImageClassifier` that takes [0, 1] images."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from xai_bench.models.base import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from xai_bench.models.checkpoint import load_checkpoint, save_checkpoint
from xai_bench.models.zoo import (META_OPTIONS, MODELS, FeatureTap, SmallCNN, imagenet_class_names, timm_model,
                                  torchvision_model)
from xai_bench.models import onnx_model as _onnx_model  # noqa: F401  (registers model=onnx)
from xai_bench.models import l2x as _l2x  # noqa: F401  (registers the L2X explainer network)

__all__ = ["ImageClassifier", "create_model", "list_models", "load_checkpoint", "model_options", "save_checkpoint",
           "MODELS", "FeatureTap", "SmallCNN", "IMAGENET_MEAN", "IMAGENET_STD", "imagenet_class_names"]

_FAMILIES = {"timm": timm_model, "torchvision": torchvision_model}


def list_models(pattern: str = "*") -> list[str]:
    """Registered names (``small_cnn``, ``efficientnet_lite0`` …); timm/torchvision archs use a prefix."""
    return MODELS.list(pattern)


def model_options(name: str, arch: str | None = None) -> tuple[str, ...]:
    """The :func:`create_model` keywords that model ``name`` uses besides ``name`` (read from its builder).

    Config checks use it to reject options a model would ignore (``dropout`` on EfficientNet-Lite) before anything
    is built. Raises ``KeyError`` listing close matches for an unknown name.
    """
    family = _split(name, arch)[0]
    if family == "checkpoint":
        return ("path", "num_classes")
    if family in _FAMILIES:
        return ("arch", "pretrained", "num_classes", "in_chans", "input_size", *META_OPTIONS)
    if family not in MODELS:
        raise KeyError(_unknown(family))
    params = inspect.signature(MODELS.get(family)).parameters
    named = tuple(p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL))
    takes_meta = any(v.kind is v.VAR_KEYWORD for v in params.values())
    return named + (META_OPTIONS if takes_meta else ())


def create_model(name: str, *, arch: str | None = None, pretrained: bool = False, num_classes: int | None = None,
                 in_chans: int | None = None, input_size: int | None = None, path: str | None = None,
                 dropout: float | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 class_names: Sequence[str] | None = None, default_layer: str | None = None,
                 resize_size: int | None = None) -> ImageClassifier:
    """Build a classifier by name (the ``_target_`` of every ``conf/model`` file; ``ModelConf`` mirrors it).

    Args:
        name: a registered name (``list_models()``), ``timm/<arch>``, ``torchvision/<arch>``, or ``checkpoint``
            (then ``path`` points at a folder written by train.py).
        arch: the architecture of ``timm`` / ``torchvision`` (``name="timm", arch="resnet18"`` is ``timm/resnet18``).
        pretrained: load pretrained weights (timm/torchvision need network; the EfficientNet-Lite models ship
            their weights offline).
        num_classes, in_chans, input_size: head size, input channels and side (``None`` → the model's native one).
        path: ``checkpoint`` only: the folder written by train.py.
        dropout: ``small_cnn`` only.
        mean, std, class_names, default_layer, resize_size: overrides of the builder's choice for the classifier.

    Raises:
        ValueError: an option the named model does not use is set (it would be silently ignored otherwise).
        KeyError: unknown name (close matches listed).
    """
    family, arch = _split(name, arch)
    options = {"arch": arch, "pretrained": pretrained, "num_classes": num_classes, "in_chans": in_chans,
               "input_size": input_size, "path": path, "dropout": dropout, "mean": mean, "std": std,
               "class_names": class_names, "default_layer": default_layer, "resize_size": resize_size}
    used = model_options(family)
    if pretrained and "pretrained" not in used:
        raise ValueError(f"model {family!r} has no pretrained weights; set model.pretrained=false")
    unused = [k for k, v in options.items() if k != "pretrained" and v is not None and k not in used]
    if unused:
        raise ValueError(f"model {family!r} does not use option(s) {unused}; set them to null. Its options: "
                         f"{', '.join(used)}")
    given = {k: v for k, v in options.items() if k in used and v is not None and k != "arch"}
    if family == "checkpoint":
        if not path:
            raise ValueError("model=checkpoint needs model.path=<folder written by train.py>")
        model = load_checkpoint(path)
        if num_classes is not None and num_classes != model.num_classes:
            raise ValueError(f"checkpoint {path} has {model.num_classes} classes but the dataset has {num_classes}")
        return model
    if family in _FAMILIES:
        if not arch:
            raise ValueError(f"model {family!r} needs model.arch (or name: {family}/<arch>)")
        return _FAMILIES[family](arch, **{"in_chans": 3, **given})
    if num_classes is None and "num_classes" in used and \
            inspect.signature(MODELS.get(family)).parameters["num_classes"].default is inspect.Parameter.empty:
        raise ValueError(f"model {family!r} needs num_classes (model.num_classes, or a dataset to take it from)")
    return MODELS.get(family)(**given)


def _split(name: str, arch: str | None) -> tuple[str, str | None]:
    """``("timm/resnet18", None)`` and ``("timm", "resnet18")`` → ``("timm", "resnet18")``."""
    family, _, rest = name.partition("/")
    if family in _FAMILIES:
        if rest and arch and rest != arch:
            raise ValueError(f"model.name={name!r} and model.arch={arch!r} disagree; set one of them")
        return family, rest or arch
    if arch is not None:
        raise ValueError(f"model.arch is for timm / torchvision models, not {name!r}; set model.arch=null")
    return name, None


def _unknown(name: str) -> str:
    from xai_bench.registry import unknown_name_message

    return unknown_name_message(
        "model", name, MODELS.list(),
        " Any timm or torchvision architecture works with a prefix: timm/<arch> or torchvision/<arch>; "
        "your own checkpoint with model=checkpoint model.path=<dir>.")
