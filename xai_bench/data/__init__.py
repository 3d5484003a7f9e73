"""Datasets. Each builder returns a :class:`DataBundle` whose items are dicts (see ``data/base.py``).

A dataset config is a ``_target_`` node pointing at one of the builders below; add a dataset by writing a builder
here (or anywhere importable) and one YAML file in ``conf/dataset/``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from xai_bench._compat import imagenet_categories
from xai_bench.data.base import DataBundle, TransformedDataset, random_split
from xai_bench.data.folders import (FolderDataset, ImageListDataset, check_skipped, list_images, probe_images,
                                    read_labels)
from xai_bench.data.synthetic import SHAPES, SyntheticShapes
from xai_bench.data.tensors import TensorFileDataset, read_tensor_file
from xai_bench.data.transforms import BadImageError, build_augment, eval_transform, load_image
from xai_bench.errors import DataMissingError

__all__ = ["DataBundle", "synthetic_shapes", "fashion_mnist", "mnist", "cifar10", "digits", "imagefolder", "images",
           "glyphs", "samples", "tensors", "make_loader", "set_eval_transform", "load_image", "BadImageError",
           "SAMPLE_PHOTOS"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class TensorImages(Dataset):
    """Images held in memory as a uint8 or float tensor (N×C×H×W) with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim == 3:
            images = images.unsqueeze(1)
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self.images[i]
        img = img.float().div(255.0) if img.dtype == torch.uint8 else img.float()
        return {"image": img, "label": int(self.labels[i])}


def _check_facts(bundle: DataBundle, num_classes: int | None = None, image_size: int | None = None) -> DataBundle:
    """Datasets whose class count / image size are fixed still take them as config keys (other groups interpolate
    ``${dataset.num_classes}``), so a value that disagrees must fail instead of silently doing nothing."""
    _check_fixed(bundle.name, {"num_classes": bundle.num_classes, "image_size": bundle.image_size},
                 num_classes=num_classes, image_size=image_size)
    return bundle


def _check_fixed(name: str, actual: dict[str, int | None], **given: int | None) -> None:
    """:func:`_check_facts` before loading, for datasets whose facts are known without reading a file (MNIST is
    28×28 with 10 classes): a wrong ``dataset.image_size`` fails at once, not after the download."""
    for key, value in given.items():
        expected = actual.get(key)
        if value is not None and expected is not None and int(value) != int(expected):
            raise ValueError(f"dataset.{key}={value} does nothing for {name!r}, whose {key} is {expected}; "
                             f"remove the override (resize inside the model, or pick a dataset that takes {key})")


def _with_augment(bundle: DataBundle, augment: dict[str, Any] | None) -> DataBundle:
    transform = build_augment(dict(augment) if augment else None, bundle.image_size)
    if transform is not None and bundle.train is not None:
        bundle.train = TransformedDataset(bundle.train, transform)
    return bundle


def synthetic_shapes(n_train: int = 10000, n_val: int = 1000, n_test: int = 1000, image_size: int = 32,
                     num_classes: int = 6, seed: int = 0, clutter: int = 4, noise: float = 0.06,
                     scale: Sequence[float] = (0.2, 0.38), augment: dict[str, Any] | None = None) -> DataBundle:
    """Procedural shapes with masks (see ``data/synthetic.py``); splits use disjoint seeds."""
    kw = dict(image_size=image_size, num_classes=num_classes, clutter=clutter, noise=noise,
              scale=(float(scale[0]), float(scale[1])))
    bundle = DataBundle(
        name="synthetic_shapes", num_classes=num_classes, class_names=list(SHAPES[:num_classes]), channels=3,
        image_size=image_size, has_masks=True,
        train=SyntheticShapes(n_train, seed=3 * seed, **kw) if n_train else None,
        val=SyntheticShapes(n_val, seed=3 * seed + 1, **kw) if n_val else None,
        test=SyntheticShapes(n_test, seed=3 * seed + 2, **kw) if n_test else None)
    return _with_augment(bundle, augment)


def _stage_debian_fashion_mnist(root: Path) -> None:
    """Copy the idx files of Debian's ``dataset-fashion-mnist`` into torchvision's layout
    (``root/FashionMNIST/raw``)."""
    raw = root / "FashionMNIST" / "raw"
    for gz in sorted(DEBIAN_FASHION_MNIST.glob("*-ubyte.gz")):
        target = raw / gz.name[:-3]
        if not target.exists():
            raw.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)


def _torchvision_split(cls_name: str, root: str, train: bool, download: bool) -> Any:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(root, train=train, download=download)
    except RuntimeError as exc:
        fix = ("Set dataset.download=true where there is network, or place the files where torchvision expects "
               "them.")
        if cls_name == "FashionMNIST":
            fix = (f"Install Debian's package with `apt-get install dataset-fashion-mnist` (its files go to "
                   f"{DEBIAN_FASHION_MNIST}/, which the loader copies into dataset.root), or set "
                   f"dataset.download=true where there is network.")
        raise DataMissingError(f"{cls_name} not found under dataset.root={root} ({exc}). {fix}") from exc


def _mnist_like(name: str, cls_name: str, class_names: Sequence[str], root: str, download: bool, val_fraction: float,
                seed: int, augment: dict[str, Any] | None) -> DataBundle:
    train_all = _torchvision_split(cls_name, root, True, download)
    test = _torchvision_split(cls_name, root, False, download)
    full = TensorImages(train_all.data, torch.as_tensor(train_all.targets))
    train, val = random_split(full, [1 - val_fraction, val_fraction], seed) if val_fraction else (full, None)
    bundle = DataBundle(name=name, train=train, val=val, test=TensorImages(test.data, torch.as_tensor(test.targets)),
                        num_classes=len(class_names), class_names=list(class_names), channels=1, image_size=28)
    return _with_augment(bundle, augment)


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


def fashion_mnist(root: str = "data", download: bool = False, val_fraction: float = 0.1, seed: int = 0,
                  augment: dict[str, Any] | None = None, num_classes: int | None = None,
                  image_size: int | None = None) -> DataBundle:
    """Fashion-MNIST through torchvision's loader; offline it reads Debian's ``dataset-fashion-mnist`` package."""
    _check_fixed("fashion_mnist", {"num_classes": 10, "image_size": 28}, num_classes=num_classes, image_size=image_size)
    if not download and DEBIAN_FASHION_MNIST.is_dir():
        _stage_debian_fashion_mnist(Path(root))
    return _mnist_like("fashion_mnist", "FashionMNIST", FASHION_CLASSES, root, download, val_fraction, seed, augment)


def mnist(root: str = "data", download: bool = False, val_fraction: float = 0.1, seed: int = 0,
          augment: dict[str, Any] | None = None, num_classes: int | None = None,
          image_size: int | None = None) -> DataBundle:
    _check_fixed("mnist", {"num_classes": 10, "image_size": 28}, num_classes=num_classes, image_size=image_size)
    return _mnist_like("mnist", "MNIST", [str(i) for i in range(10)], root, download, val_fraction, seed, augment)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def cifar10(root: str = "data", download: bool = False, val_fraction: float = 0.1, seed: int = 0,
            augment: dict[str, Any] | None = None, num_classes: int | None = None,
            image_size: int | None = None) -> DataBundle:
    _check_fixed("cifar10", {"num_classes": 10, "image_size": 32}, num_classes=num_classes, image_size=image_size)
    train_all = _torchvision_split("CIFAR10", root, True, download)
    test = _torchvision_split("CIFAR10", root, False, download)
    to_t = lambda a: torch.as_tensor(a).permute(0, 3, 1, 2).contiguous()
    full = TensorImages(to_t(train_all.data), torch.as_tensor(train_all.targets))
    train, val = random_split(full, [1 - val_fraction, val_fraction], seed) if val_fraction else (full, None)
    bundle = DataBundle(name="cifar10", train=train, val=val,
                        test=TensorImages(to_t(test.data), torch.as_tensor(test.targets)), num_classes=10,
                        class_names=list(CIFAR10_CLASSES), channels=3, image_size=32)
    return _with_augment(bundle, augment)


def digits(image_size: int = 16, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
           augment: dict[str, Any] | None = None, num_classes: int | None = None) -> DataBundle:
    """scikit-learn's bundled 8×8 digits (1,797 images), upsampled to ``image_size``."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(0, 1)
    full = TensorImages(x, torch.as_tensor(d.target))
    train, val, test = random_split(full, [1 - val_fraction - test_fraction, val_fraction, test_fraction], seed)
    bundle = DataBundle(name="digits", train=train, val=val if val_fraction else None,
                        test=test if test_fraction else None, num_classes=10,
                        class_names=[str(i) for i in range(10)], channels=1, image_size=image_size)
    return _with_augment(_check_facts(bundle, num_classes), augment)


def imagefolder(root: str, image_size: int = 64, channels: int = 3, val_fraction: float = 0.15,
                test_fraction: float = 0.0, seed: int = 0, augment: dict[str, Any] | None = None,
                num_classes: int | None = None, strict: bool = False) -> DataBundle:
    """A class-per-folder dataset (``root/<class>/<image>``) split into train/val(/test) by ``seed``.

    Files that cannot be used (see :func:`load_image`) are skipped and listed in ``DataBundle.skipped``, or refused
    with ``strict=True``; fewer than two classes, or a class folder without a usable image, is refused.
    """
    full = FolderDataset(root, image_size, channels, strict=strict)
    fractions = [1 - val_fraction - test_fraction, val_fraction] + ([test_fraction] if test_fraction else [])
    parts = random_split(full, fractions, seed)
    bundle = DataBundle(name=f"imagefolder:{Path(root).name}", train=parts[0], val=parts[1] if val_fraction else None,
                        test=parts[2] if test_fraction else None, num_classes=len(full.classes),
                        class_names=full.classes, channels=channels, image_size=image_size, skipped=full.skipped)
    return _with_augment(_check_facts(bundle, num_classes), augment)


def glyphs(root: str, letters: str = "ABCDEFGHIKLMNOPQRSTUVWXY", per_class: int = 300, image_size: int = 64,
           render_seed: int = 0, font_dir: str = "/usr/share/fonts/truetype/dejavu", val_fraction: float = 0.15,
           test_fraction: float = 0.15, seed: int = 0, augment: dict[str, Any] | None = None,
           num_classes: int | None = None) -> DataBundle:
    """Letters rendered from system fonts into a class-per-folder tree under ``root`` (see ``data/fonts.py``), then
    read as :func:`imagefolder`: an offline stand-in for an alphabet dataset such as ASL's."""
    from xai_bench.data.fonts import render_glyph_folder

    render_glyph_folder(root, list(letters), per_class, image_size, seed=render_seed, font_dir=font_dir)
    return imagefolder(root, image_size=image_size, channels=3, val_fraction=val_fraction,
                       test_fraction=test_fraction, seed=seed, augment=augment, num_classes=num_classes, strict=True)


def images(root: str | None = None, paths: Sequence[str] | None = None, labels: str | dict | None = None,
           num_classes: int = 1000, class_names: Sequence[str] | None = None, channels: int = 3,
           strict: bool = False, accept: Sequence[int] | None = None) -> DataBundle:
    """A folder (``root``) or list (``paths``) of arbitrary photos to classify; not for training.

    ``labels``: a JSON/YAML file or a mapping of file name → class id, list of accepted ids (a reference set:
    ImageNet turtles 33–37 all count), or ``{label: id, accept: [...]}``. Unlabelled photos are classified only.
    ``accept``: one reference set for every photo that ``labels`` does not name — a folder of one concept
    (``accept: [33, 34, 35, 36, 37]`` for a folder of turtles).
    Every file is decoded once here: those :func:`load_image` refuses (undecodable, decompression bombs, non-finite
    or out-of-range float pixels) are skipped and listed in ``DataBundle.skipped`` — the run fails only when none
    is left, or at the first bad file with ``strict=True``.
    """
    if (root is None) == (paths is None):
        raise ValueError("images dataset needs exactly one of dataset.root (a folder) or dataset.paths (a list)")
    files = list_images(root) if root is not None else [Path(p) for p in paths]  # type: ignore[union-attr]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"image file(s) listed in dataset.paths do not exist: {missing}")
    files, skipped = probe_images(files, channels)
    check_skipped(f"dataset.root={root}" if root is not None else "dataset.paths", len(files), skipped, strict)
    if labels is not None and not isinstance(labels, (str, Path, dict)):
        from omegaconf import OmegaConf

        labels = OmegaConf.to_container(labels, resolve=True)  # a mapping given inline in the config
    mapping = read_labels(labels) if isinstance(labels, (str, Path)) else dict(labels or {})
    if accept is not None:
        ids = [int(c) for c in accept]
        if not ids or any(not 0 <= c < num_classes for c in ids):
            raise ValueError(f"dataset.accept={list(accept)} must list class ids in [0, {num_classes}), e.g. "
                             "[33, 34, 35, 36, 37] (the ImageNet turtles)")
        for f in files:
            if f.name not in mapping and f.stem not in mapping:  # a photo's own label wins
                mapping[f.name] = {"label": ids[0], "accept": ids}
    if class_names is None and num_classes == 1000:
        class_names = imagenet_categories()
    ds = ImageListDataset(files, num_classes, mapping, channels)
    return DataBundle(name="images", train=None, val=None, test=ds, num_classes=num_classes,
                      class_names=list(class_names or [str(i) for i in range(num_classes)]), channels=channels,
                      image_size=None, skipped=skipped)


def _sample_photos() -> dict[str, tuple[Path, list[int]]]:
    """Real photographs that ship inside installed packages, with their ImageNet reference sets."""
    import matplotlib.cbook
    import skimage.data

    sk = Path(skimage.data.__file__).parent
    return {
        # the five ImageNet domestic-cat classes: tabby, tiger cat, Persian, Siamese, Egyptian cat
        "chelsea": (sk / "chelsea.png", [281, 282, 283, 284, 285]),
        # espresso, cup, coffee mug
        "coffee": (sk / "coffee.png", [967, 968, 504]),
        # missile, projectile, space shuttle
        "rocket": (sk / "rocket.jpg", [657, 744, 812]),
        # moped, motor scooter, disk brake, crash helmet
        "motorcycle": (sk / "motorcycle_left.png", [665, 670, 535, 518]),
        # the cameraman: tripod, reflex camera (grayscale photo, replicated to RGB)
        "cameraman": (sk / "camera.png", [872, 759]),
        # military uniform, suit, bow tie, Windsor tie. Not in the default list: EfficientNet-Lite0 calls her
        # 'academic gown' (0.24) ahead of 'military uniform' (0.21) — a useful hard case, selectable by name.
        "grace_hopper": (Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
                         [652, 834, 457, 906]),
    }


SAMPLE_PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle", "cameraman")


def samples(names: Sequence[str] | None = None, num_classes: int = 1000) -> DataBundle:
    """The bundled photos (scikit-image, matplotlib) with ImageNet reference sets: offline demos."""
    photos = _sample_photos()
    names = list(names or SAMPLE_PHOTOS)
    unknown = [n for n in names if n not in photos]
    if unknown:
        raise ValueError(f"unknown sample photo(s) {unknown} in dataset.names; available: {sorted(photos)}")
    labels = {n: {"label": photos[n][1][0], "accept": photos[n][1]} for n in names}
    ds = ImageListDataset([photos[n][0] for n in names], 1000, labels, channels=3, names=names)
    return _check_facts(DataBundle(name="samples", train=None, val=None, test=ds, num_classes=1000,
                                   class_names=imagenet_categories(), channels=3, image_size=None), num_classes)


def tensors(path: str, key: str | None = None, num_classes: int | None = None,
            class_names: Sequence[str] | None = None) -> DataBundle:
    """Model-ready N×C×H×W float images in [0, 1] from a ``.safetensors`` file, exactly as stored (no resize or
    crop; see ``data/tensors.py``), e.g. the ``adversarial.safetensors`` an attack run saves. All images form the
    ``test`` split.

    Args:
        path: the file.
        key: the image tensor (``images``, ``adv_<eps>``, …); ``None``: the file's only N×C×H×W tensor.
        num_classes: class count; default: from ``class_names``, else the file's ``class_names`` metadata, else
            ``labels.max() + 1``.
        class_names: default: the file's ``class_names`` metadata, ImageNet's for 1000 classes, else ``"0"…``.
    """
    t, meta = read_tensor_file(path, key)
    x, labels = t["images"], t["labels"]
    names = json.loads(meta["names"]) if "names" in meta else [str(i) for i in range(len(x))]
    if len(names) != len(x):
        names = [str(i) for i in range(len(x))]  # names of another tensor's rows (an attack file's max_examples)
    if class_names is None and "class_names" in meta:
        file_names = json.loads(meta["class_names"])
        if num_classes is None or int(num_classes) == len(file_names):
            class_names = file_names
    if num_classes is None:
        num_classes = len(class_names) if class_names is not None else (
            t["accept"].shape[1] if t["accept"] is not None else int(labels.max()) + 1 if (labels >= 0).any() else 0)
        if not num_classes:
            raise ValueError(f"dataset.path={path} has no labels and no class_names metadata; set "
                             "dataset.num_classes (the model's class count)")
    num_classes = int(num_classes)
    if class_names is None:
        class_names = imagenet_categories() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(f"dataset.class_names has {len(class_names)} names but dataset.num_classes={num_classes}")
    if bool((labels >= num_classes).any()):
        raise ValueError(f"dataset.path={path}: labels up to {int(labels.max())} but {num_classes} classes; set "
                         "dataset.num_classes to the model's class count")
    if t["accept"] is not None and t["accept"].shape[1] != num_classes:
        raise ValueError(f"dataset.path={path}: 'accept' has {t['accept'].shape[1]} columns but there are "
                         f"{num_classes} classes")
    c, h, w = x.shape[1:]
    return DataBundle(name=f"tensors:{Path(path).name}[{t['key']}]", train=None, val=None,
                      test=TensorFileDataset(x, labels, [str(n) for n in names], t["accept"]),
                      num_classes=num_classes, class_names=list(class_names), channels=c,
                      image_size=h if h == w else None, ready_shape=(c, h, w))


def set_eval_transform(bundle: DataBundle, input_size: tuple[int, int, int], resize_size: int | None) -> DataBundle:
    """Give photo datasets (which keep their own sizes) a model's eval transform: resize, centre-crop to
    ``input_size`` (C×H×W), to [0, 1] tensors. Fixed-size and model-ready datasets are left as they are."""
    if bundle.ready_shape is not None:
        return bundle
    for split in ("train", "val", "test"):
        ds = getattr(bundle, split)
        if isinstance(ds, ImageListDataset):
            ds.set_transform(eval_transform(input_size, resize_size))
    return bundle


def make_loader(ds: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling is driven by its own generator (seeded per epoch by the trainer)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0)
