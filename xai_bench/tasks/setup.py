"""Where a task's dataset and model meet: build both from config and reconcile their shared facts.

The library keeps data and models independent of each other (an import-linter contract); this module is the one
place that knows both, so a photo dataset gets the model's eval transform here and a channel or size mismatch is
reported here, naming the config field that fixes it.
"""

from __future__ import annotations

import warnings
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from xai_bench.data import DataBundle, set_eval_transform
from xai_bench.errors import ConfigError
from xai_bench.models import ImageClassifier, create_model
from xai_bench.tasks.common import active_run
from xai_bench.utils import build

__all__ = ["build_data", "build_model", "check_against_model", "model_from_node", "prepare_for_model"]


def build_data(cfg: DictConfig) -> DataBundle:
    """The task's dataset (``cfg.dataset``); files it skipped are recorded in the running task's results."""
    bundle = build(cfg.dataset)
    if not isinstance(bundle, DataBundle):
        raise TypeError(f"dataset._target_={cfg.dataset.get('_target_')} must return a DataBundle")
    run = active_run()
    if run is not None:
        run.record_skipped(bundle.skipped)
    return bundle


def build_model(cfg: DictConfig, data: DataBundle | None = None) -> ImageClassifier:
    """The task's model (``cfg.model``); fields left null (classes, channels, size) come from the dataset. The
    settings that depend on the model are checked against it at once (:func:`check_against_model`), before the task
    reads any image."""
    model = model_from_node(cfg.model, data, warn_random=cfg.get("task_name") != "train")
    check_against_model(cfg, model)
    return model


def check_against_model(cfg: DictConfig, model: ImageClassifier) -> None:
    """The settings that need the model: ``target`` class ids and ``top_k`` against its ``num_classes``,
    ``attack.target_class``, and every selected layer method's layer (``attribution.<name>.layer``, else the model's
    ``default_layer``). Raises ``ValueError`` (``KeyError`` for an unknown layer, listing the valid names) naming the
    field and the fix."""
    k = int(model.num_classes)
    target = cfg.get("target")
    if target is not None and not isinstance(target, str):
        ids = list(target) if isinstance(target, (list, tuple, ListConfig)) else [target]
        bad = [c for c in ids if isinstance(c, int) and not 0 <= c < k]
        if bad:
            raise ConfigError(f"target ids {bad} are out of range for a model with num_classes={k}; use ids in "
                              f"[0, {k - 1}]")
    if target == "predicted" and cfg.get("top_k") is not None and not 1 <= int(cfg.top_k) <= k:
        raise ConfigError(f"top_k must be in [1, {k}] (num_classes), got {cfg.top_k}")
    attack = cfg.get("attack")
    if attack is not None and attack.get("target_class") is not None and not 0 <= int(attack.target_class) < k:
        raise ConfigError(f"attack.target_class={attack.target_class} is out of range for a model with "
                          f"num_classes={k}; use a class id in [0, {k - 1}] or null")
    for key, node in (cfg.get("attribution") or {}).items():
        if node is not None and node.get("method") is not None:
            _check_layer(str(key), node, model)


def _check_layer(key: str, node: Any, model: ImageClassifier) -> None:
    """A layer method's layer exists in ``model`` (what ``build_attribution`` would find only after prediction)."""
    import inspect

    from hydra.utils import get_object

    target = node.method.get("_target_")
    try:
        cls = get_object(target)
        takes_layer = "layer" in inspect.signature(cls).parameters
    except Exception:  # an import problem is reported by the config check and build_attribution
        return
    if not takes_layer:
        return
    layer = node.get("layer") or model.default_layer
    if layer is None:
        raise ConfigError(f"attribution.{key} is a layer method but model {model.name!r} has no default_layer; set "
                          f"attribution.{key}.layer to a dotted module name, e.g. one of "
                          f"{model.conv_layer_names()[-5:]}")
    try:
        model.get_layer(layer)
    except KeyError as exc:
        field = f"attribution.{key}.layer" if node.get("layer") else f"model {model.name!r} default_layer"
        raise KeyError(f"{field}: {exc.args[0] if exc.args else exc}") from None


def model_from_node(node: Any, data: DataBundle | None = None, *, warn_random: bool = True,
                    path: str = "model") -> ImageClassifier:
    """A model from any ``conf/model`` node (the task's, an ensemble member, a reference model).

    Args:
        node: a ``conf/model`` node (DictConfig or dict): ``create_model`` arguments plus ``_target_``/``arch``.
        data: the dataset; its class count, channels and image size fill fields left null, and photo datasets get
            the model's eval transform.
        warn_random: warn when the model has random weights (meaningless outside training).
        path: the node's config path, for error messages.
    """
    opts = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    assert isinstance(opts, dict)
    opts.pop("_target_", None)
    opts.pop("arch", None)  # folded into name (timm/<arch>, torchvision/<arch>)
    if data is not None and opts.get("name") != "checkpoint":
        fill = [("in_chans", data.channels), ("input_size", data.image_size)]
        if not opts.get("pretrained"):
            fill.append(("num_classes", data.num_classes))
        for key, value in fill:
            if opts.get(key) is None and value is not None:
                opts[key] = value
        if opts.get("class_names") is None and opts.get("num_classes") == data.num_classes:
            opts["class_names"] = data.class_names
    opts = {k: v for k, v in opts.items() if v is not None}  # schema fields left null: the builder's defaults
    if warn_random and opts.get("name") != "checkpoint" and not opts.get("pretrained"):
        warnings.warn(f"{path}: model {opts.get('name')!r} has random weights (not pretrained, not a checkpoint): "
                      "its predictions and explanations are meaningless; use model=checkpoint "
                      "model.path=<run>/best", stacklevel=2)
    model = create_model(**opts)
    if data is not None:
        if data.num_classes != model.num_classes:
            raise ValueError(f"dataset {data.name!r} has {data.num_classes} classes but {path} {model.name!r} "
                             f"outputs {model.num_classes}; set {path}.num_classes or pick a matching dataset")
        prepare_for_model(data, model)
    return model


def prepare_for_model(bundle: DataBundle, model: ImageClassifier) -> DataBundle:
    """Give photo datasets (which keep their own sizes) the model's eval transform; check shapes agree otherwise
    (model-ready tensors must match the model's input size exactly)."""
    if bundle.ready_shape is not None and tuple(model.input_size) != tuple(bundle.ready_shape):
        c, h, w = bundle.ready_shape
        raise ValueError(f"dataset {bundle.name!r} holds model-ready {c}×{h}×{w} images (used exactly as stored, "
                         f"never resized) but model {model.name!r} takes {'×'.join(map(str, model.input_size))}; "
                         "use the model the tensors were made for, or write them at the model's input size")
    set_eval_transform(bundle, model.input_size, model.resize_size)
    if bundle.image_size is not None and bundle.channels != model.input_size[0]:
        raise ValueError(f"dataset {bundle.name!r} has {bundle.channels}-channel images but model {model.name!r} "
                         f"takes {model.input_size[0]} channels; set model.in_chans={bundle.channels}")
    if (bundle.image_size is not None and getattr(model, "fixed_input_size", False)
            and tuple(model.input_size[1:]) != (bundle.image_size, bundle.image_size)):
        raise ValueError(f"dataset {bundle.name!r} has {bundle.image_size}×{bundle.image_size} images but model "
                         f"{model.name!r} only takes {model.input_size[1]}×{model.input_size[2]}; set "
                         f"dataset.image_size={model.input_size[1]}")
    return bundle
