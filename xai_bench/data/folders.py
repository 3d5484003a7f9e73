"""Datasets of image files: a class-per-folder tree (``imagefolder``) and a folder or list of photos (``images``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from xai_bench.data.transforms import IMAGE_SUFFIXES, eval_transform, load_image


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist (dataset.root)")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {root}")
    return files


class FolderDataset(Dataset):
    """Class-per-folder images (``root/<class>/<image>``), e.g. an ASL-alphabet set. Items are dicts."""

    def __init__(self, root: str | Path, image_size: int, channels: int = 3) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset.root={root} is not a folder; imagefolder expects root/<class>/<image>")
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not self.classes:
            raise ValueError(f"dataset.root={root} has no class sub-folders; imagefolder expects root/<class>/<image>")
        self.samples = [(p, i) for i, c in enumerate(self.classes)
                        for p in sorted((root / c).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not self.samples:
            raise ValueError(f"no images found in the class folders of {root}")
        self.channels = channels
        self.transform = eval_transform((channels, image_size, image_size))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.samples[i]
        return {"image": self.transform(load_image(path, self.channels)), "label": label, "name": path.name}


class ImageListDataset(Dataset):
    """Arbitrary photos to classify, each with an optional label and reference set of accepted class ids.

    ``transform`` is set from the model (``set_transform``) because photos keep their own size until then.
    """

    def __init__(self, paths: Sequence[str | Path], num_classes: int, labels: dict[str, Any] | None = None,
                 channels: int = 3, names: Sequence[str] | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.names = list(names) if names else [p.name for p in self.paths]
        self.num_classes, self.channels = num_classes, channels
        self.accept = torch.zeros(len(self.paths), num_classes, dtype=torch.bool)
        self.labels = torch.full((len(self.paths),), -1, dtype=torch.long)
        for i, (p, n) in enumerate(zip(self.paths, self.names)):
            entry = (labels or {}).get(n, (labels or {}).get(p.stem))
            if entry is None:
                continue
            is_map = isinstance(entry, Mapping)
            ids = [entry] if isinstance(entry, int) else list(entry.get("accept", [entry.get("label")])) \
                if is_map else list(entry)
            label = entry.get("label", ids[0]) if is_map else ids[0]
            bad = [c for c in ids + [label] if not isinstance(c, int) or not 0 <= c < num_classes]
            if bad:
                raise ValueError(f"label entry for {n!r} has class ids {bad} outside 0..{num_classes - 1}")
            self.accept[i, ids] = True
            self.accept[i, label] = True
            self.labels[i] = label
        self.transform: Callable | None = None

    def set_transform(self, transform: Callable) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.transform is None:
            raise RuntimeError("ImageListDataset needs a model's eval transform first (data.prepare_for_model)")
        img = load_image(self.paths[i], self.channels)
        return {"image": self.transform(img), "label": int(self.labels[i]), "accept": self.accept[i],
                "name": self.names[i]}


def read_labels(path: str | Path | None) -> dict[str, Any]:
    """Labels file for ``images``: JSON or YAML mapping file name (or stem) → class id, list of accepted ids, or
    ``{label: id, accept: [ids]}``."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset.labels={path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            from omegaconf import OmegaConf

            data = OmegaConf.to_container(OmegaConf.create(text))
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ValueError(f"cannot parse labels file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"labels file {path} must map file names to class ids")
    return data
