"""Datasets of image files: a class-per-folder tree (``imagefolder``) and a folder or list of photos (``images``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from xai_bench.data.transforms import IMAGE_SUFFIXES, BadImageError, display_path, eval_transform, load_image

log = logging.getLogger(__name__)


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image folder {display_path(root)} does not exist (dataset.root)")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {display_path(root)}")
    return files


def probe_images(paths: Sequence[Path], channels: int) -> tuple[list[Path], list[dict[str, str]]]:
    """Decode every file once and split them into usable files and skipped ones.

    Returns:
        ``(good, skipped)``: the paths that decode (in order) and one ``{"path", "reason"}`` per file refused by
        :func:`load_image` (a :class:`BadImageError`), the path printable (:func:`display_path`).
    """
    good: list[Path] = []
    skipped: list[dict[str, str]] = []
    for p in paths:
        try:
            load_image(p, channels)
        except BadImageError as exc:
            skipped.append({"path": display_path(p), "reason": str(exc)})
            log.warning("skipping %s", exc)
        else:
            good.append(p)
    return good, skipped


def check_skipped(what: str, kept: int, skipped: list[dict[str, str]], strict: bool) -> None:
    """Fail when bad files were found under ``dataset.strict=true``, or when no usable image is left."""
    if not skipped:
        return
    listing = "\n".join(f"  {s['reason']}" for s in skipped)
    if strict:
        raise ValueError(f"{len(skipped)} bad image file(s) in {what} and dataset.strict=true:\n{listing}\n"
                         "Remove or fix them, or set dataset.strict=false to skip and list them.")
    if not kept:
        raise ValueError(f"no usable image in {what}: all {len(skipped)} file(s) were refused:\n{listing}")


# Folders that archive tools leave beside the data, never classes: macOS zips unpack a __MACOSX/ tree of ._* files.
_NOT_CLASSES = {"__MACOSX"}


class FolderDataset(Dataset):
    """Class-per-folder images (``root/<class>/<image>``), e.g. an ASL-alphabet set. Items are dicts.

    Every file is decoded once when the dataset is built; files :func:`load_image` refuses are left out and listed
    in ``skipped`` (``dataset.strict=true``: refused instead). A tree that cannot train a classifier is refused,
    naming the folder: fewer than two class folders (``dataset.root`` one level too high gives the single class
    ``train``), or a class folder with no usable image (a class that would never be trained).
    """

    def __init__(self, root: str | Path, image_size: int, channels: int = 3, strict: bool = False) -> None:
        root = Path(root)
        where = f"dataset.root={display_path(root)}"
        if not root.is_dir():
            raise FileNotFoundError(f"{where} is not a folder; imagefolder expects root/<class>/<image>")
        self.classes = sorted(d.name for d in root.iterdir()
                              if d.is_dir() and not d.name.startswith(".") and d.name not in _NOT_CLASSES)
        if not self.classes:
            raise ValueError(f"{where} has no class sub-folders; imagefolder expects root/<class>/<image>")
        if len(self.classes) == 1:
            only = root / self.classes[0]
            nested = any(d.is_dir() for d in only.iterdir())
            fix = (f"point dataset.root at the folder that holds the class folders (dataset.root="
                   f"{display_path(only)}?)" if nested else
                   "a classifier needs at least two classes: add the other class folders, or point dataset.root at "
                   "the folder that holds them")
            raise ValueError(f"{where} has one class folder {display_path(self.classes[0])!r}: {fix}")
        files = [(p, i) for i, c in enumerate(self.classes)
                 for p in sorted((root / c).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        good, self.skipped = probe_images([p for p, _ in files], channels)
        check_skipped(where, len(good), self.skipped, strict)
        kept = set(good)
        self.samples = [(p, i) for p, i in files if p in kept]
        counts = [0] * len(self.classes)
        for _, i in self.samples:
            counts[i] += 1
        empty = [display_path(c) for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            raise ValueError(f"class folder(s) {empty} under {where} hold no usable image "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}); each would be a class that is never trained. "
                             "Add images to them or remove the folders.")
        self.channels = channels
        self.transform = eval_transform((channels, image_size, image_size))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.samples[i]
        return {"image": self.transform(load_image(path, self.channels)), "label": label,
                "name": display_path(path.name)}


class ImageListDataset(Dataset):
    """Arbitrary photos to classify, each with an optional label and reference set of accepted class ids.

    ``transform`` is set from the model (``set_transform``) because photos keep their own size until then.
    """

    def __init__(self, paths: Sequence[str | Path], num_classes: int, labels: dict[str, Any] | None = None,
                 channels: int = 3, names: Sequence[str] | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.names = list(names) if names else [display_path(p.name) for p in self.paths]
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
