"""The data contract: every dataset item is a dict with ``image`` (C×H×W float in [0, 1]) and ``label`` (int).

Optional keys: ``mask`` (1×H×W float, the object's ground-truth mask), ``accept`` (bool multi-hot over classes: the
*reference set* of classes that count as correct, e.g. all five ImageNet cat classes), ``name`` (str).
A label of -1 means "unknown"; such items are classified but not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import Dataset, Subset


@dataclass
class DataBundle:
    """What a dataset config builds: splits plus the facts models and figures need."""

    name: str
    train: Dataset | None
    val: Dataset | None
    test: Dataset | None
    num_classes: int
    class_names: list[str]
    channels: int
    image_size: int | None  # None: images keep their own size until a model's eval transform resizes them
    has_masks: bool = False
    # C×H×W of images that are already exactly what the model takes (a tensors file): no eval transform is applied,
    # and a model whose input size differs is an error rather than a silent resize
    ready_shape: tuple[int, int, int] | None = None
    # files left out because they could not be used, one {"path", "reason"} each; tasks record them in results.json
    skipped: list[dict[str, str]] = field(default_factory=list)

    def split(self, name: str) -> Dataset:
        ds = getattr(self, name, None)
        if ds is None:
            avail = [s for s in ("train", "val", "test") if getattr(self, s) is not None]
            raise ValueError(f"dataset {self.name!r} has no {name!r} split; available: {avail} (set split=...)")
        return ds


class TransformedDataset(Dataset):
    """Applies ``transform`` to the ``image`` of another dict dataset (train-time augmentation)."""

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        if self.transform is not None:
            if "mask" in item:  # keep the mask aligned with the image under geometric augmentation
                both = self.transform(torch.cat([item["image"], item["mask"]], 0))
                item["image"], item["mask"] = both[:-1], both[-1:]
            else:
                item["image"] = self.transform(item["image"])
        return item


def random_split(ds: Dataset, fractions: Sequence[float], seed: int) -> list[Subset]:
    """Split by seed into consecutive parts of the given fractions (the rest goes to the last part)."""
    n = len(ds)  # type: ignore[arg-type]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    out, start = [], 0
    for i, f in enumerate(fractions):
        end = n if i == len(fractions) - 1 else start + int(round(f * n))
        out.append(Subset(ds, perm[start:end]))
        start = end
    return out
