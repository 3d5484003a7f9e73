"""The metric part of ``explain.py`` (and of ``score``): score the maps just made with the selected ``metric``
nodes, then write what each metric family shows beyond its mean score.

- every run with metrics: ``tables/metrics.csv`` (mean ± s.e. per method × metric, with a ``flag`` column),
  ``tables/ranking.csv``, ``tables/metric_scores.csv`` (per image) and ``figures/metrics.png`` (the rank heat map);
- curve metrics (deletion, insertion, …): ``figures/perturbation_curves.png`` (mean curve ± s.e. per method, AUC in
  the legend) and ``tables/perturbation_curves.csv`` (the mean curves);
- ``model_parameter_randomisation``: ``tables/randomisation_layers.csv`` (one row per method × step),
  ``figures/randomisation_curve.png`` (Spearman per cascading step) and ``figures/randomisation_maps.png`` (the
  first image's map after each step); a method whose last-step Spearman stays above the metric's
  ``insensitive_above`` is flagged "insensitive to model parameters" in ``metrics.csv`` and ``results.json`` and
  logged as a warning;
- ``attack_stability`` / ``corruption_stability`` with ``curve_eps`` / ``curve_severities``:
  ``tables/<metric>_curves.csv`` (one row per method × ε / severity: mean Spearman, top-k IoU, SSIM, flip rate)
  and ``figures/<metric>_curves.png``.

Every table and figure goes through :class:`~xai_bench.tasks.common.RunContext`, so W&B gets them too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig
from torch import Tensor, nn

from xai_bench import viz
from xai_bench.metrics.explanation import ExplanationMetric
from xai_bench.metrics.explanation.randomisation import ModelParameterRandomisation
from xai_bench.metrics.explanation.scoring import rank_methods, score_methods, summary_rows
from xai_bench.metrics.explanation.summaries import curve_rows, layer_rows, sweep_rows
from xai_bench.tasks.common import RunContext
from xai_bench.utils import build

log = logging.getLogger(__name__)

INSENSITIVE = "insensitive to model parameters"

__all__ = ["INSENSITIVE", "build_metrics", "report_details", "score_maps"]


def build_metrics(cfg: DictConfig) -> dict[str, ExplanationMetric]:
    """The selected ``metric.<name>`` nodes, built (name → metric)."""
    metrics: dict[str, ExplanationMetric] = {}
    for key, node in cfg.metric.items():
        metric = build(node)
        if not isinstance(metric, ExplanationMetric):
            raise TypeError(f"metric.{key}: _target_={node.get('_target_')} is not an ExplanationMetric")
        metrics[metric.name or str(key)] = metric
    return metrics


def score_maps(ctx: RunContext, metrics: Mapping[str, ExplanationMetric], model: nn.Module, x: Tensor,
               targets: Tensor, maps: dict[str, Tensor], *, masks: Tensor | None = None,
               explainers: Mapping[str, Callable[..., Tensor]] | None = None, source: str = "") -> list[dict]:
    """Score every method's maps, write the tables and figures listed in the module docstring and fill
    ``ctx.metrics`` (``explanation_metrics``, ``ranking``, ``flags``); ``source`` names where the maps came from
    in the heat map's title. Returns the summary rows (empty when no metric could run)."""
    details: dict[str, dict[str, dict[str, Any]]] = {}
    with ctx.timer("metrics"):
        scores = score_methods(metrics, model, x, targets.to(x.device), maps, masks=masks, explainers=explainers,
                               timings=ctx.timings, details=details, progress=bool(ctx.cfg.get("progress", False)))
    rows = summary_rows(scores, metrics)
    if not rows:
        return rows
    n = x.shape[0]
    flags = report_details(ctx, metrics, rows, details, x, maps, n=n)
    if explainers:
        _stability_sweeps(ctx, metrics, model, x, targets, maps, explainers)
    for r in rows:
        r["flag"] = flags.get((r["method"], r["metric"]), "")
    ranking = rank_methods(rows)
    ctx.table("metrics", rows)
    ctx.table("ranking", ranking)
    ctx.table("metric_scores", [{"row": i, "method": method, "metric": mname, "score": float(v[i])}
                                for method, per in scores.items() for mname, v in per.items()
                                for i in range(v.numel())])
    ctx.figure("metrics", viz.metrics_heatmap(
        rows, title=f"explanation metrics{' on ' + source if source else ''} (n={n} maps per method)"))
    ctx.metrics["explanation_metrics"] = {r["method"]: {} for r in rows}
    for r in rows:
        ctx.metrics["explanation_metrics"][r["method"]][r["metric"]] = {"mean": r["mean"], "se": r["se"]}
    ctx.metrics["ranking"] = [{"method": r["method"], "median_rank": r["median_rank"]} for r in ranking]
    ctx.metrics["flags"] = [{"method": m, "metric": k, "flag": f} for (m, k), f in flags.items()]
    return rows


def report_details(ctx: RunContext, metrics: Mapping[str, ExplanationMetric], rows: list[dict[str, Any]],
                   details: Mapping[str, Mapping[str, Mapping[str, Any]]], x: Tensor, maps: Mapping[str, Tensor],
                   *, n: int) -> dict[tuple[str, str], str]:
    """The curve and randomisation tables and figures from the metrics' details (method → metric → details).
    Returns the flags, ``(method, metric) → text``."""
    by_metric: dict[str, dict[str, Mapping[str, Any]]] = {}
    for method, per in details.items():
        for mname, d in per.items():
            by_metric.setdefault(mname, {})[method] = d
    curves = {k: v for k, v in by_metric.items() if all("curve" in d for d in v.values())}
    if curves:
        crows = curve_rows(curves)
        ctx.table("perturbation_curves", crows)
        ctx.figure("perturbation_curves", viz.perturbation_curves(
            crows, rows, score_labels={k: next(iter(v.values()))["score_label"] for k, v in curves.items()},
            title=None))
    flags: dict[tuple[str, str], str] = {}
    for mname, per_method in by_metric.items():
        metric = metrics[mname]
        if isinstance(metric, ModelParameterRandomisation):
            flags.update(_randomisation_report(ctx, mname, metric, per_method, x, maps, n=n))
    return flags


def _randomisation_report(ctx: RunContext, mname: str, metric: ModelParameterRandomisation,
                          per_method: Mapping[str, Mapping[str, Any]], x: Tensor, maps: Mapping[str, Tensor], *,
                          n: int) -> dict[tuple[str, str], str]:
    lrows = layer_rows(per_method)
    suffix = "" if mname == metric.name else f"_{mname}"
    ctx.table(f"randomisation_layers{suffix}", lrows)
    cumulative = metric.layer_order != "independent"
    ctx.figure(f"randomisation_curve{suffix}", viz.randomisation_curve(
        lrows, threshold=metric.insensitive_above if cumulative else None,
        title=f"{mname} ({metric.layer_order}; n={n} images)"))
    first = next(iter(per_method.values()))
    if first["maps"].shape[1] > 0:
        ctx.figure(f"randomisation_maps{suffix}", viz.randomisation_grid(
            x[0].detach().float().cpu(), {m: maps[m][0] for m in per_method},
            {m: d["maps"][:, 0] for m, d in per_method.items()}, first["layers"], cumulative=cumulative,
            title=f"{mname} ({metric.layer_order}), image 0"))
    flags = {}
    for method in per_method:
        final = [r for r in lrows if r["method"] == method][-1]["spearman"]
        if metric.insensitive(final):
            flags[(method, mname)] = f"{INSENSITIVE} (last-step Spearman {final:.2f} > {metric.insensitive_above:g})"
            log.warning("%s: %s is %s: its maps after randomising every layer still correlate with the original "
                        "(Spearman %.2f > %g): they do not depend on what the model learnt", mname, method,
                        INSENSITIVE, final, metric.insensitive_above)
    return flags


def _stability_sweeps(ctx: RunContext, metrics: Mapping[str, ExplanationMetric], model: nn.Module, x: Tensor,
                      targets: Tensor, maps: Mapping[str, Tensor], explainers: Mapping[str, Callable[..., Tensor]]
                      ) -> None:
    """Stability-versus-strength tables and figures of the metrics with a ``sweep`` and curve levels."""
    for mname, metric in metrics.items():
        levels = getattr(metric, "curve_levels", None)
        if not levels or not hasattr(metric, "sweep"):
            continue
        with ctx.timer(f"sweep/{mname}"):
            sweeps = {m: metric.sweep(model, x, targets.to(x.device), maps[m].to(x.device), explainer=explainers[m])
                      for m in maps if m in explainers}
        level = metric.level_name
        srows = sweep_rows(sweeps, level)
        ctx.table(f"{mname}_curves", srows)
        scale = 255.0 if level == "eps" else 1.0
        ctx.figure(f"{mname}_curves", viz.stability_curves(srows, level, xlabel=metric.level_label, scale=scale,
                                                           title=f"{mname} ({_describe(metric)})"))


def _describe(metric: ExplanationMetric) -> str:
    if hasattr(metric, "attack"):
        return f"{metric.attack.upper()}, top-k = {metric.k:g}"
    return f"{getattr(metric, 'corruption', '')}, top-k = {metric.k:g}"
