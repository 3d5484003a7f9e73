"""Batched image corruptions for robustness evaluation, run on the input's device.

Two families, both on N×C×H×W float images in [0, 1]:

* **Parametric corruptions** (:mod:`.parametric`: ``contrast``, ``gaussian_blur``, ``invert``, ``brightness``,
  ``gaussian_noise``, ``jpeg``, ``pixelate``, ``rotate``): plain functions ``f(x, <param>) -> x'`` whose parameter is
  in physical units. Use them from configs as ``_partial_`` nodes.
* **ImageNet-C** (:mod:`.imagenet_c`, Hendrycks & Dietterich 2019): 15 corruptions plus two extras at severities
  1–5, in the registry ``CORRUPTIONS``; call them through ``corrupt(x, name, severity, seed=...)`` and enumerate
  them with ``list_corruptions("*blur")``.

:func:`build_suite` (:mod:`.suites`) turns a ``conf/corruption/*.yaml`` suite into ``{label: callable(x)}``.
A new severity-indexed corruption is a function ``f(x, severity, generator)`` registered with the ``_imagenet_c``
decorator in :mod:`.imagenet_c`; a new parametric one a function in :mod:`.parametric` exported here.
"""

from xai_bench.robustness.corruptions.imagenet_c import (
    CORRUPTIONS,
    IMAGENET_C_NAMES,
    MAX_SEVERITY,
    corrupt,
    list_corruptions,
)
from xai_bench.robustness.corruptions.parametric import (
    brightness,
    contrast,
    gaussian_blur,
    gaussian_noise,
    invert,
    jpeg,
    pixelate,
    rotate,
)
from xai_bench.robustness.corruptions.suites import SeededCorruption, build_suite

__all__ = [
    "CORRUPTIONS",
    "IMAGENET_C_NAMES",
    "MAX_SEVERITY",
    "SeededCorruption",
    "brightness",
    "build_suite",
    "contrast",
    "corrupt",
    "gaussian_blur",
    "gaussian_noise",
    "invert",
    "jpeg",
    "list_corruptions",
    "pixelate",
    "rotate",
]
