"""The report's figures, each drawn only when some job holds its data, from the rows of the report's tables (so a
figure and its table hold the same numbers). Yields ``(key, caption, draw)`` in reading order; ``draw()`` makes the
figure, so the caller can keep one figure's failure from costing the whole report."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

from matplotlib.figure import Figure

from xai_bench import viz
from xai_bench.viz.sweeps import training_curves, uncertainty_ranking

__all__ = ["MAX_PER_KIND", "report_figures"]

log = logging.getLogger(__name__)

MAX_PER_KIND = 8  # per-job figures (heat maps, rankings) drawn per kind; the tables hold every job


Draw = Callable[[], Figure]


def report_figures(tables: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, str, Draw]]:
    """Every figure the tables support: ``training_curves``, ``accuracy_vs_eps[_l2]``, ``metrics_<i>``,
    ``corruption_<i>``, ``ensemble_accuracy_<i>`` and ``uncertainty_<i>``."""
    if tables.get("training"):
        yield "training_curves", "Training curves of the train jobs (loss and accuracy per epoch).", \
            lambda: _training(tables["training"])
    yield from _attacks(tables.get("attack") or [])
    for i, (label, rows) in enumerate(_by_job(tables.get("metrics") or [])):
        yield (f"metrics_{i}", f"Explanation methods × metrics for {label}: colour is the method's rank on the metric "
               "(bright = best), text the mean ± standard error over images.",
               lambda rows=rows, label=label: viz.metrics_heatmap(rows, title=label))
    for i, (label, rows) in enumerate(_by_job(tables.get("corruption") or [])):
        if any(r["corruption"] != "clean" for r in rows):
            yield (f"corruption_{i}", f"Accuracy under corruptions for {label}.",
                   lambda rows=rows, label=label: _corruption(rows, label))
    for i, (label, rows) in enumerate(_by_job(tables.get("ensemble_accuracy") or [])):
        yield (f"ensemble_accuracy_{i}", f"Top-1 accuracy of each member and of the ensemble for {label}.",
               lambda rows=rows, label=label: viz.per_model_accuracy_figure(
                   [r["model"] for r in rows], [_nan(r["top1"]) for r in rows], ylabel="top-1 accuracy",
                   highlight=("ensemble_vote", "ensemble_mean"), title=label))
    for i, (label, rows) in enumerate(_by_job(tables.get("uncertainty") or [])):
        if all(r.get("entropy") is not None for r in rows):
            yield (f"uncertainty_{i}", f"Images ranked by the ensemble's uncertainty for {label} (most certain "
                   "first).", lambda rows=rows, label=label: uncertainty_ranking(
                       [r["image"] for r in rows], [r["entropy"] for r in rows],
                       [_nan(r.get("mutual_information")) for r in rows], correct=[r.get("correct") for r in rows],
                       classes=[r.get("ensemble_class", "") for r in rows], title=label))


def _by_job(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    labels: dict[str, str] = {}
    for r in rows:
        groups.setdefault(r["job"], []).append(r)
        labels[r["job"]] = str(r.get("label") or r["job"])
    if len(groups) > MAX_PER_KIND:
        log.info("report: %d jobs of one kind; figures for the first %d (the tables hold all)", len(groups),
                 MAX_PER_KIND)
    out = list(groups.items())[:MAX_PER_KIND]
    # two jobs with one label (an unswept difference) are told apart by their folder
    seen = [labels[j] for j, _ in out]
    return [(labels[j] if seen.count(labels[j]) == 1 else f"{labels[j]} [{j}]", g) for j, g in out]


def _training(rows: list[dict[str, Any]]) -> Figure:
    curves: dict[str, tuple[list[float], dict[str, list[float]]]] = {}
    for label, group in _by_job(rows):
        series = {k: [_nan(r.get(k)) for r in group] for k in ("train/loss", "val/loss", "train/acc", "val/acc")
                  if any(r.get(k) is not None for r in group)}
        curves[label] = ([float(r["epoch"]) for r in group], series)
    return training_curves(curves)


def _attacks(rows: list[dict[str, Any]]) -> Iterator[tuple[str, str, Draw]]:
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for r in rows:
        xs, ys = curves.setdefault(r["norm"], {}).setdefault(r["label"], ([], []))
        xs.append(float(r["eps"]))
        ys.append(_nan(r["accuracy"]))
    datasets = ", ".join(sorted({str(r["dataset"]) for r in rows}))
    for norm in sorted(curves, key=lambda n: n != "inf"):
        linf = norm == "inf"
        yield ("accuracy_vs_eps" if linf else f"accuracy_vs_eps_l{norm}",
               f"Robust accuracy against the attack budget ε ({'L∞' if linf else 'L' + norm}), one curve per model "
               "and attack.",
               lambda norm=norm, linf=linf: viz.accuracy_vs_eps(
                   curves[norm], scale_255=linf, ylabel="robust accuracy",
                   xlabel=None if linf else f"ε (L{norm} norm of δ, pixel units; symlog axis)",
                   title=f"robust accuracy · {datasets}"))


def _corruption(rows: list[dict[str, Any]], label: str) -> Figure:
    from xai_bench.robustness.corruption_eval import corruption_group, group_order

    acc = {(r["corruption"], r["severity"]): _nan(r["accuracy"]) for r in rows}
    graded = group_order(list(dict.fromkeys(r["corruption"] for r in rows if r["severity"] is not None)))
    sevs = sorted({r["severity"] for r in rows if r["severity"] is not None})
    clean = acc.get(("clean", None))
    head = f"{label} · {rows[0].get('suite') or 'corruptions'}" + (f" (clean {clean:.1%})" if clean is not None
                                                                     and not math.isnan(clean) else "")
    if graded:
        grid = [[acc.get((c, s), math.nan) for s in sevs] for c in graded]
        return viz.corruption_heatmap(grid, graded, sevs, groups=[corruption_group(c) for c in graded], title=head)
    custom = [r for r in rows if r["severity"] is None and r["corruption"] != "clean"]
    return viz.corruption_bars([r["corruption"] for r in custom], [_nan(r["accuracy"]) for r in custom],
                               clean=clean, title=head)


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)
