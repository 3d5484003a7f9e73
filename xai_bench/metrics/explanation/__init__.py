"""Explanation metrics: faithfulness, robustness, complexity, localisation, randomisation and stability under
perturbation, as batched torch code (see :mod:`.base` for the template).

Every module of this package is imported here so its ``@register_metric`` classes land in :data:`METRICS`
(ClassyVision's ``import_all_modules``): adding a metric is one file here + one ``conf/metric/<name>.yaml``.
"""

from __future__ import annotations

import importlib
import pkgutil

from xai_bench.metrics.explanation.base import (
    CATEGORIES,
    METRICS,
    ExplanationMetric,
    model_scores,
    register_metric,
)

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_") and _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")


def list_metrics(pattern: str = "*") -> list[str]:
    """Registered metric names matching a glob pattern, e.g. ``list_metrics("*_sensitivity")``."""
    return METRICS.list(pattern)


__all__ = ["CATEGORIES", "METRICS", "ExplanationMetric", "list_metrics", "model_scores", "register_metric"]
