"""Building the dataset and the model of a task from its config, with their shared facts reconciled."""

from __future__ import annotations

import warnings

from omegaconf import DictConfig, OmegaConf

from xai_bench.data import DataBundle, prepare_for_model
from xai_bench.models import ImageClassifier, create_model
from xai_bench.utils import build


def build_data(cfg: DictConfig) -> DataBundle:
    bundle = build(cfg.dataset)
    if not isinstance(bundle, DataBundle):
        raise TypeError(f"dataset._target_={cfg.dataset.get('_target_')} must return a DataBundle")
    return bundle


def build_model(cfg: DictConfig, data: DataBundle | None = None) -> ImageClassifier:
    """``create_model`` from ``cfg.model``; fields left null (classes, channels, size) come from the dataset."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(node, dict)
    node.pop("_target_", None)
    node.pop("arch", None)  # folded into name (timm/<arch>, torchvision/<arch>)
    if data is not None and node.get("name") != "checkpoint":
        fill = [("in_chans", data.channels), ("input_size", data.image_size)]
        if not node.get("pretrained"):
            fill.append(("num_classes", data.num_classes))
        for key, value in fill:
            if node.get(key) is None and value is not None:
                node[key] = value
        if node.get("class_names") is None and node.get("num_classes") == data.num_classes:
            node["class_names"] = data.class_names
    if cfg.get("task_name") != "train" and node.get("name") != "checkpoint" and not node.get("pretrained"):
        warnings.warn(f"model {node.get('name')!r} has random weights (not pretrained, not a checkpoint): its "
                      "predictions and explanations are meaningless; use model=checkpoint model.path=<run>/best",
                      stacklevel=2)
    model = create_model(**node)
    if data is not None:
        if data.num_classes != model.num_classes:
            raise ValueError(f"dataset {data.name!r} has {data.num_classes} classes but model {model.name!r} outputs "
                             f"{model.num_classes}; set model.num_classes or pick a matching dataset")
        prepare_for_model(data, model)
    return model
