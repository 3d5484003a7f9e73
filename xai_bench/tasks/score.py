"""``score``: explanation metrics on saved maps (``maps.safetensors`` from explain.py), without recomputing them.

The file holds the exact images explained, the target of every map and one tensor per method, so every metric that
needs only the model, the images and the maps (faithfulness, complexity; localisation with ``masks=``) runs here.
Metrics that re-explain are skipped with a warning.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from xai_bench.tasks.common import run_context
from xai_bench.tasks.setup import build_model

log = logging.getLogger(__name__)

_RESERVED = ("images", "targets", "image_index")


def load_maps(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a ``maps.safetensors``: images M×C×H×W, targets M, method → maps, and the JSON metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"maps={path}: no such file; point it at <explain run>/maps.safetensors")
    tensors = load_file(str(path))
    missing = [k for k in ("images", "targets") if k not in tensors]
    if missing:
        raise ValueError(f"maps={path} lacks {missing}: not a maps.safetensors written by explain.py")
    with safe_open(str(path), "pt") as f:
        meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    order = meta.get("methods") or sorted(k for k in tensors if k not in _RESERVED)  # safetensors sorts its keys
    maps = {k: tensors[k] for k in order if k in tensors and k not in _RESERVED}
    if not maps:
        raise ValueError(f"maps={path} holds no method's maps")
    return tensors["images"], tensors["targets"].long(), maps, meta


def run(cfg: DictConfig) -> dict[str, Any]:
    from xai_bench.tasks._explain_metrics import build_metrics, score_maps

    with run_context(cfg, "score") as ctx:
        if not cfg.get("metric"):
            raise ValueError("no metric selected: set metric=[<name>,…] (files of conf/metric/)")
        metrics = build_metrics(cfg)
        images, targets, maps, meta = load_maps(cfg.maps)
        model = build_model(cfg).to(ctx.device).eval()
        ctx.name(model.name)
        if int(targets.max()) >= model.num_classes:
            raise ValueError(f"the saved maps explain class {int(targets.max())} but model {model.name!r} has "
                             f"{model.num_classes} classes: score with the model that made the maps")
        masks = None
        if cfg.get("masks"):
            from safetensors.torch import load_file

            masks = load_file(str(cfg.masks))["masks"].to(ctx.device)
        x = images.to(ctx.device)
        rows = score_maps(ctx, metrics, model, x, targets, maps, masks=masks,
                          source=Path(cfg.maps).parent.name)
        if not rows:
            raise ValueError("no selected metric could run on saved maps (they all re-explain or need masks)")
        ctx.metrics.update({"n_maps": int(images.shape[0]), "methods": list(maps), "source": str(cfg.maps),
                            "explained": meta.get("names", [])})
        return dict(ctx.metrics)
