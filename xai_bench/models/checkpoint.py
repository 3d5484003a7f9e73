"""Our own checkpoints: ``model.safetensors`` (weights, never unpickled) + ``model.json`` (how to rebuild them)."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from xai_bench.models.base import ImageClassifier
from xai_bench.utils import atomic_path, write_json

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def save_checkpoint(model: ImageClassifier, directory: str | Path) -> Path:
    """Write weights and spec into ``directory`` (each file atomically). Returns the directory."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    write_json(directory / SPEC, model.spec())
    return directory


def load_checkpoint(path: str | Path, *, map_location: str = "cpu") -> ImageClassifier:
    """Rebuild a model from a checkpoint folder (or its ``model.safetensors``/``model.json`` file)."""
    from xai_bench.models import create_model

    path = Path(path)
    directory = path.parent if path.suffix in (".safetensors", ".json") else path
    spec_path, weights_path = directory / SPEC, directory / WEIGHTS
    for p in (spec_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file {p} does not exist; model.path must point at a folder written "
                                    f"by train.py (it holds {WEIGHTS} and {SPEC}), e.g. outputs/<run>/best")
    try:
        spec = json.loads(spec_path.read_text())
        arch = dict(spec["arch"])
        name = arch.pop("name")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint spec {spec_path} is corrupt ({exc}); re-export it with train.py") from exc
    model = create_model(name, class_names=spec.get("class_names"), mean=spec.get("mean"), std=spec.get("std"),
                         default_layer=spec.get("default_layer"), resize_size=spec.get("resize_size"), **arch)
    try:
        state = load_file(str(weights_path), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint weights {weights_path} cannot be read ({exc}); the file is corrupt or "
                         "not a safetensors file") from exc
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {weights_path} does not match its spec {spec_path}: missing keys "
                         f"{missing[:5]}, unexpected keys {unexpected[:5]}")
    return model
