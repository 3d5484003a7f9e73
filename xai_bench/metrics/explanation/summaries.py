"""Tables behind the metric figures: per-image material from the metrics (curves, per-layer correlations, stability
sweeps) reduced to mean ± standard error rows, one row per point drawn, so a figure and its CSV hold the same numbers.

- :func:`curve_rows` — mean deletion / insertion (any curve metric's) curve per method, from
  :meth:`~xai_bench.metrics.explanation.ExplanationMetric.score_details`;
- :func:`layer_rows` — mean Spearman per cascading-randomisation step per method, from
  :meth:`~xai_bench.metrics.explanation.randomisation.ModelParameterRandomisation.details`;
- :func:`sweep_rows` — mean Spearman, top-k IoU, SSIM and flip rate per ε / severity per method, from
  :meth:`~xai_bench.metrics.explanation.stability.AttackStability.sweep`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["SIMILARITIES", "curve_rows", "layer_rows", "mean_se", "sweep_rows"]

SIMILARITIES = ("spearman", "topk_iou", "ssim")  # the map comparisons of the stability details, in figure order


def mean_se(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, standard error of the mean and count of the finite values along ``dim`` (NaN where none / one)."""
    v = values.double()
    finite = torch.isfinite(v)
    n = finite.sum(dim)
    z = torch.where(finite, v, torch.zeros_like(v))
    mean = z.sum(dim) / n.clamp_min(1)
    var = (torch.where(finite, v - mean.unsqueeze(dim), torch.zeros_like(v)) ** 2).sum(dim) / (n - 1).clamp_min(1)
    mean = torch.where(n > 0, mean, torch.full_like(mean, math.nan))
    se = torch.where(n > 1, var.sqrt() / n.clamp_min(1).sqrt(), torch.full_like(mean, math.nan))
    return mean, se, n


def curve_rows(details: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (metric, method, step) of the mean curve.

    Args:
        details: metric → method → ``{"curve": N×T, "x": T, "xlabel", "ylabel", …}`` (a curve metric's
            ``score_details``).

    Returns:
        Rows with ``metric``, ``method``, ``step``, ``x``, ``mean``, ``se``, ``n``, ``xlabel``, ``ylabel``.
    """
    rows = []
    for metric, per_method in details.items():
        for method, d in per_method.items():
            mean, se, n = mean_se(d["curve"], 0)
            for t, x in enumerate(d["x"].tolist()):
                rows.append({"metric": metric, "method": method, "step": t, "x": float(x), "mean": float(mean[t]),
                             "se": float(se[t]), "n": int(n[t]), "xlabel": d.get("xlabel", "step"),
                             "ylabel": d.get("ylabel", "score")})
    return rows


def layer_rows(details: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, randomisation step): the layer randomised at that step and the mean Spearman of the
    original map with the map after it.

    Args:
        details: method → ``ModelParameterRandomisation.details`` (``layers``, ``spearman`` N×L, ``cumulative``).

    Returns:
        Rows with ``method``, ``step`` (1…L), ``layer``, ``spearman``, ``se``, ``n``, ``n_nonfinite`` (constant maps)
        and ``cumulative``.
    """
    rows = []
    for method, d in details.items():
        mean, se, n = mean_se(d["spearman"], 0)
        total = d["spearman"].shape[0]
        for step, layer in enumerate(d["layers"]):
            rows.append({"method": method, "step": step + 1, "layer": layer, "spearman": float(mean[step]),
                         "se": float(se[step]), "n": int(n[step]), "n_nonfinite": int(total - n[step]),
                         "cumulative": bool(d.get("cumulative", True))})
    return rows


def sweep_rows(sweeps: Mapping[str, Sequence[tuple[float, Mapping[str, Tensor]]]], level_name: str = "level"
               ) -> list[dict[str, Any]]:
    """One row per (method, perturbation strength): the mean (± s.e.) of each map similarity and the flip rate.

    Args:
        sweeps: method → ``[(level, details), …]`` (``AttackStability.sweep`` / ``CorruptionStability.sweep``).
        level_name: the column name of the strength (``eps``, ``severity``).

    Returns:
        Rows with ``method``, ``<level_name>``, ``n``, ``<sim>`` and ``<sim>_se`` for each of :data:`SIMILARITIES`
        (non-finite values, e.g. Spearman of a constant map, left out and counted in ``<sim>_n``), ``flip_rate``.
    """
    rows = []
    for method, points in sweeps.items():
        for level, d in points:
            row: dict[str, Any] = {"method": method, level_name: float(level), "n": int(d["flipped"].numel())}
            for key in SIMILARITIES:
                mean, se, n = mean_se(d[key], 0)
                row.update({key: float(mean), f"{key}_se": float(se), f"{key}_n": int(n)})
            row["flip_rate"] = float(d["flipped"].float().mean()) if d["flipped"].numel() else math.nan
            rows.append(row)
    return rows
