"""Model-ready image tensors from a ``.safetensors`` file, read exactly as stored (no resize, no crop).

The round trip this serves: ``attack.py attack.save_examples=true`` writes ``adversarial.safetensors`` with the
clean ``images`` and one ``adv_<eps>`` tensor per ε; ``explain.py dataset=tensors
dataset.path=<run>/adversarial.safetensors dataset.key=adv_0.0313725`` then explains the very tensors the attack
produced. Any other N×C×H×W float tensor in
[0, 1] works too, with optional ``labels`` (or ``targets``: N class indices, −1 = unknown) and ``accept`` (N×K bool:
reference sets of accepted classes). The file's string metadata may carry ``names`` and ``class_names`` (JSON lists),
as :func:`xai_bench.tasks.attack.save_examples` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["TensorFileDataset", "read_tensor_file"]

_LABEL_KEYS = ("labels", "targets")
_RANGE_TOL = 1e-6  # float32 round-off on images computed as x + δ then clamped


class TensorFileDataset(Dataset):
    """Items ``{"image", "label", "name"[, "accept"]}`` straight from in-memory tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, names: list[str],
                 accept: torch.Tensor | None = None) -> None:
        self.images, self.labels, self.names, self.accept = images, labels, names, accept

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"image": self.images[i], "label": int(self.labels[i]), "name": self.names[i]}
        if self.accept is not None:
            item["accept"] = self.accept[i]
        return item


def read_tensor_file(path: str | Path, key: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Load and validate ``path``: returns ``({"images", "labels", "accept", "key"}, metadata)``.

    Args:
        path: a ``.safetensors`` file.
        key: the image tensor's key; ``None`` picks the only N×C×H×W tensor (an error lists them when there are
            several, as in an attack's file: ``images`` and one ``adv_<eps>`` per ε).

    Raises:
        FileNotFoundError / ValueError naming the file, the problem and the fix.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    where = f"dataset.path={path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist; point dataset.path at a .safetensors file (e.g. the "
                                "adversarial.safetensors of an `attack.py attack.save_examples=true` run)")
    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{where} is not a readable safetensors file ({exc}); write it with "
                         "safetensors.torch.save_file({'images': x, 'labels': y}, path)") from exc
    batches = sorted(k for k, v in tensors.items() if v.ndim == 4)
    if key is None:
        if len(batches) != 1:
            adv = json.loads(meta["adv_keys"]) if "adv_keys" in meta else []
            hint = f" (ε per adv key: {dict(zip(adv, json.loads(meta['eps'])))})" if adv and "eps" in meta else ""
            raise ValueError(f"{where} holds {len(batches)} N×C×H×W tensors {batches}; choose one with "
                             f"dataset.key=<name>{hint}" if batches else
                             f"{where} holds no N×C×H×W tensor (keys: {sorted(tensors)}); store the images as "
                             "one float N×C×H×W tensor in [0, 1]")
        key = batches[0]
    if key not in tensors:
        raise ValueError(f"{where} has no tensor {key!r} (dataset.key); its keys: {sorted(tensors)}")
    x = tensors[key]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{where}: tensor {key!r} has shape {tuple(x.shape)}; images must be N×C×H×W with C = 1 "
                         "or 3 (channels first: permute(0, 3, 1, 2) an N×H×W×C array)")
    if not x.is_floating_point():
        raise ValueError(f"{where}: tensor {key!r} is {x.dtype}; store float images in [0, 1] (x.float() / 255 for "
                         "8-bit pixels)")
    x = x.float()
    bad = (~torch.isfinite(x)).sum().item()
    if bad:
        raise ValueError(f"{where}: tensor {key!r} has {bad} NaN/inf values; fix the file (they would propagate "
                         "through the model and every explanation)")
    lo, hi = x.min().item() if x.numel() else 0.0, x.max().item() if x.numel() else 1.0
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        fix = "divide by 255" if hi > 1.5 else "store pixel-space images, not normalised ones (models normalise inside)"
        raise ValueError(f"{where}: tensor {key!r} has values in [{lo:.4g}, {hi:.4g}], not [0, 1]; {fix}")
    x = x.clamp(0, 1)
    n = len(x)
    labels = torch.full((n,), -1, dtype=torch.long)
    for lk in _LABEL_KEYS:
        if lk in tensors:
            y = tensors[lk]
            if y.shape != (n,) or y.is_floating_point() and not torch.equal(y, y.round()):
                raise ValueError(f"{where}: {lk!r} has shape {tuple(y.shape)} and dtype {y.dtype}; it must hold "
                                 f"{n} integer class indices (−1 = unknown), one per image of {key!r}")
            labels = y.long()
            break
    accept = tensors.get("accept")
    if accept is not None:
        if accept.ndim != 2 or len(accept) != n:
            raise ValueError(f"{where}: 'accept' has shape {tuple(accept.shape)}; it must be N×K (N={n}) booleans, "
                             "the accepted classes of each image")
        accept = accept.bool()
    return {"images": x, "labels": labels, "accept": accept, "key": key}, meta
