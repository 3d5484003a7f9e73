"""Score maps with a set of metrics and rank the methods (LATEC style).

:func:`score_methods` runs every metric on every method's maps (one batched call per metric × method) and returns
per-image scores; :func:`summary_rows` turns them into the methods × metrics table (mean ± standard error over
images); :func:`rank_methods` ranks the methods per metric (1 = best, direction from the metric's
``higher_is_better``; ties share the mean rank), then takes the median rank per category and overall.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from xai_bench.metrics.explanation.base import CATEGORIES, ExplanationMetric

__all__ = ["MetricScores", "rank_methods", "score_methods", "summary_rows"]

log = logging.getLogger(__name__)

# method name → metric name → Tensor[N] of per-image scores
MetricScores = dict[str, dict[str, Tensor]]


def score_methods(metrics: Mapping[str, ExplanationMetric], model: nn.Module, images: Tensor, targets: Tensor,
                  maps: Mapping[str, Tensor], *, masks: Tensor | None = None,
                  explainers: Mapping[str, Callable[..., Tensor]] | None = None,
                  timings: dict[str, float] | None = None,
                  details: dict[str, dict[str, dict[str, Any]]] | None = None,
                  progress: bool = False) -> MetricScores:
    """Every metric on every method's maps.

    Args:
        metrics: name → metric.
        model: the classifier the maps explain.
        images: N×C×H×W in [0, 1] (the exact tensors explained), on the model's device.
        targets: the class each map explains, ``Tensor[N]``.
        maps: method name → N×1×H×W (or N×C×H×W) maps.
        masks: ground-truth masks N×1×H×W for localisation metrics; those metrics are skipped (with a warning)
            without them.
        explainers: method name → ``explainer(images, targets, model=None)`` for metrics that re-explain.
        timings: filled with ``"<metric>/<method>"`` → seconds.
        details: filled with method → metric → what the metric computed on the way (its
            :meth:`~xai_bench.metrics.explanation.ExplanationMetric.score_details`: curves, per-layer scores …),
            for the metrics that keep any.
        progress: a progress bar over the (metric, method) pairs (each pair is also logged with its time).

    Returns:
        method → metric → per-image scores (``Tensor[N]`` on the CPU).
    """
    out: MetricScores = {m: {} for m in maps}
    bar = tqdm(total=len(metrics) * len(maps), desc="metrics", unit="pair", disable=not progress, leave=False)
    try:
        for mname, metric in metrics.items():
            if metric.needs_masks and masks is None:
                log.warning("metric %s needs ground-truth masks and the dataset has none: skipped", mname)
                bar.update(len(maps))
                continue
            for method, m in maps.items():
                bar.set_postfix_str(f"{mname} · {method}")
                explainer = (explainers or {}).get(method)
                if metric.needs_explainer and explainer is None:
                    log.warning("metric %s re-explains, but method %s has no explainer (saved maps?): skipped",
                                mname, method)
                    bar.update()
                    continue
                t0 = time.perf_counter()
                out[method][mname], extra = metric.evaluate(model, images, targets, m.to(images.device),
                                                            masks=masks, explainer=explainer)
                if details is not None and extra:
                    details.setdefault(method, {})[mname] = extra
                seconds = time.perf_counter() - t0
                if timings is not None:
                    timings[f"{mname}/{method}"] = round(seconds, 3)
                log.info("metric %s on %s: %.2f s", mname, method, seconds)
                bar.update()
    finally:
        bar.close()
    return out


def summary_rows(scores: MetricScores, metrics: Mapping[str, ExplanationMetric]) -> list[dict[str, Any]]:
    """One row per (method, metric): mean, standard error of the mean, n, category and direction."""
    rows = []
    for method, per_metric in scores.items():
        for mname, s in per_metric.items():
            s = s.double()
            finite = s[torch.isfinite(s)]
            n = finite.numel()
            mean = float(finite.mean()) if n else math.nan
            se = float(finite.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
            metric = metrics[mname]
            rows.append({"method": method, "metric": mname, "category": metric.category,
                         "higher_is_better": metric.higher_is_better, "mean": mean, "se": se, "n": n,
                         "n_nonfinite": int(s.numel() - n)})
    return rows


def _ranks(values: list[float], higher_is_better: bool) -> list[float]:
    """1 = best; ties share their mean rank; NaN ranks last."""
    key = [(-v if higher_is_better else v) if not math.isnan(v) else math.inf for v in values]
    order = sorted(range(len(values)), key=lambda i: key[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and key[order[j + 1]] == key[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def rank_methods(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LATEC-style ranking from :func:`summary_rows`: per method, the rank on each metric, the median rank per
    category and the median over all metrics, sorted best first."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_metric: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], {"category": r["category"], "hib": r["higher_is_better"], "means": {}})
        by_metric[r["metric"]]["means"][r["method"]] = r["mean"]
    table = {m: {"method": m} for m in methods}
    per_cat: dict[str, dict[str, list[float]]] = {m: {} for m in methods}
    for mname, info in by_metric.items():
        present = [m for m in methods if m in info["means"]]
        for m, rk in zip(present, _ranks([info["means"][m] for m in present], info["hib"])):
            table[m][f"rank/{mname}"] = rk
            per_cat[m].setdefault(info["category"], []).append(rk)
    for m in methods:
        all_ranks: list[float] = []
        for cat in CATEGORIES:
            if cat in per_cat[m]:
                table[m][f"median_rank/{cat}"] = float(statistics.median(per_cat[m][cat]))
                all_ranks += per_cat[m][cat]
        table[m]["median_rank"] = float(statistics.median(all_ranks)) if all_ranks else math.nan
    return sorted(table.values(), key=lambda r: (math.isnan(r["median_rank"]), r["median_rank"]))
