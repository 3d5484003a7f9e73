"""The optional peer library ``imagecorruptions`` (ImageNet-C's reference code as a package), made importable.

Only benchmarks and tests import it, to compare our corruptions with the reference. ``imagecorruptions`` 1.1.2
(last release 2019) needs three shims on today's stack, applied here and nowhere else:

* ``pkg_resources`` (dropped from recent setuptools): a stand-in whose ``resource_filename`` resolves package data;
* ``skimage.filters.gaussian(multichannel=True)`` (removed in scikit-image 0.21): ``channel_axis=-1``;
* ``np.float_`` (removed in NumPy 2): ``np.float64``.

The last two are patched on ``imagecorruptions.corruptions``' own module references, not globally.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["frost_photo_dir", "install_pkg_resources_shim", "load_imagecorruptions"]

FROST_PHOTOS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


def frost_photo_dir() -> Path | None:
    """The folder of ImageNet-C's frost photographs inside an installed ``imagecorruptions``, without importing it."""
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        folder = Path(root) / "frost"
        if all((folder / f).is_file() for f in FROST_PHOTOS):
            return folder
    return None


class _NumpyWithFloat(types.ModuleType):
    float_ = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _gaussian_multichannel(image: Any, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
    from skimage.filters import gaussian

    if multichannel:
        kwargs.setdefault("channel_axis", -1)
    return gaussian(image, *args, **kwargs)


def install_pkg_resources_shim() -> None:
    """Make ``from pkg_resources import resource_filename`` work where setuptools no longer has it."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            return os.path.join(os.path.dirname(sys.modules[package].__file__ or ""), resource)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        # pytest's monkeypatch.syspath_prepend calls this whenever a module named pkg_resources is loaded
        shim.fixup_namespace_packages = lambda *args, **kwargs: None  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


def load_imagecorruptions() -> types.ModuleType:
    """Import ``imagecorruptions`` with the shims above; raises ``ImportError`` when it is not installed."""
    if importlib.util.find_spec("imagecorruptions") is None:
        raise ImportError("imagecorruptions is not installed (pip install 'xai-bench[bench]')")
    install_pkg_resources_shim()
    ic = importlib.import_module("imagecorruptions")
    mod = importlib.import_module("imagecorruptions.corruptions")
    mod.gaussian = _gaussian_multichannel  # type: ignore[attr-defined]
    if not hasattr(mod.np, "float_"):
        mod.np = _NumpyWithFloat("numpy")  # type: ignore[attr-defined]
    return ic
