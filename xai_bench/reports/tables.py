"""The report's tables, built from the jobs' ``results.json`` (and, for the per-image ensemble ranking, the table the
job listed in its ``files``): one row per job (:func:`runs_table`), and one table per kind of result that some job
holds — accuracy per ε (attack jobs), methods × metrics and the ranking (explain jobs with metrics), accuracy per
corruption × severity (evaluate jobs with corruptions), ensemble accuracy and the uncertainty ranking.

Every table is a list of flat dicts, so the same rows go to CSV, Markdown, HTML and W&B. Nothing here depends on
how long a job took or where it ran, so the same sweep run by two launchers gives the same tables.
"""

from __future__ import annotations

import csv
import logging
import math
from typing import Any

from xai_bench.reports.collect import Job
from xai_bench.robustness.corruption_eval import split_label

__all__ = ["attack_rows", "corruption_rows", "ensemble_accuracy_rows", "metric_facts", "metric_rows",
           "model_name", "ranking_rows", "runs_table", "training_rows", "uncertainty_rows"]

log = logging.getLogger(__name__)

_EPS_COLUMNS = ("eps", "eps_label", "eps_255", "n", "accuracy", "attack_success_rate", "flip_rate", "mean_confidence")


def model_name(job: Job) -> str:
    """What the job ran on: the attack's recorded model, an ensemble's members, else the config's model (a checkpoint
    named by its folder)."""
    m, cfg = job.metrics, job.config
    if m.get("model"):
        return str(m["model"])
    if m.get("members"):
        return "ensemble(" + ", ".join(map(str, m["members"])) + ")"
    node = cfg.get("model") or {}
    name = str(node.get("name") or "")
    if name == "checkpoint" and node.get("path"):
        parts = str(node["path"]).rstrip("/").split("/")
        return "checkpoint:" + "/".join(parts[-2:])
    if name in ("timm", "torchvision") and node.get("arch"):
        return f"{name}:{node['arch']}"
    return name or "?"


def _dataset_name(job: Job) -> str:
    if job.metrics.get("dataset"):
        return str(job.metrics["dataset"])
    node = job.config.get("dataset") or {}
    target = str(node.get("_target_") or "")
    return str(node.get("name") or target.rsplit(".", 1)[-1] or "?")


def _headline(job: Job) -> str:
    """The one or two numbers a reader looks for first, per task."""
    m = job.metrics
    if not job.ok:
        return ""
    if job.task == "train":
        return _join(("test top-1", m.get("test/top1")), ("best val acc", m.get("best/val/acc")),
                     ("epochs", m.get("epochs")))
    if job.task == "attack":
        sweep = m.get("eps_sweep") or []
        if not sweep:
            return ""
        last = sweep[-1]
        return _join(("clean acc", sweep[0].get("accuracy")),
                     (f"acc @ ε={last.get('eps_label')}", last.get("accuracy")))
    if job.task == "evaluate" and m.get("members"):
        best = max(((k.removeprefix("top1/"), v) for k, v in m.items() if k.startswith("top1/ensemble")),
                   key=lambda kv: kv[1], default=None)
        return _join((f"top-1 {best[0]}" if best else "top-1", best[1] if best else None),
                     ("mean entropy", m.get("mean_entropy")))
    if job.task == "evaluate":
        corr = m.get("corruptions") or {}
        return _join(("top-1", m.get("top1")), ("mean corruption error", m.get("mean_corruption_error")),
                     ("mCE", corr.get("mCE")))
    if job.task in ("explain", "score"):
        ranking = m.get("ranking") or []
        best = f"best: {ranking[0]['method']} (median rank {ranking[0]['median_rank']:g})" if ranking else ""
        methods = m.get("methods") or list(m.get("explanation_metrics") or {})
        return "; ".join(x for x in (f"{len(methods)} method(s)" if methods else "", best) if x)
    return _join(("objective", m.get("objective")))


def _join(*pairs: tuple[str, Any]) -> str:
    return "; ".join(f"{k} {_fmt(v)}" for k, v in pairs if v is not None)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def runs_table(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """One row per job: folder, task, status, the swept values, model, dataset, objective, headline, error."""
    own = ("job", "task", "status", "model", "dataset", "objective", "headline", "error")
    rows = []
    for j in jobs:
        row: dict[str, Any] = {"job": j.name, "task": j.task, "status": j.status}
        # a swept key named like one of this table's own columns (model, dataset) keeps the value as given
        row.update({(f"{k} (swept)" if k in own else k): j.overrides.get(k, "") for k in swept})
        objective = j.metrics.get("objective")
        row.update({"model": model_name(j) if j.results else "", "dataset": _dataset_name(j) if j.results else "",
                    "objective": objective if isinstance(objective, (int, float)) else None,
                    "headline": _headline(j), "error": (j.error or "").strip().splitlines()[-1] if j.error else ""})
        rows.append(row)
    return rows


def attack_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """Accuracy per ε of every finished attack job: ``label, model, attack, norm, dataset, <ε columns>, job``."""
    rows = []
    for j in jobs:
        if not (j.ok and j.task == "attack" and j.metrics.get("eps_sweep")):
            continue
        m = j.metrics
        for r in m["eps_sweep"]:
            rows.append({"label": _curve_label(j, swept), "model": m.get("model"), "attack": m.get("attack"),
                         "norm": str(m.get("norm", "inf")), "dataset": m.get("dataset"),
                         **{c: r.get(c) for c in _EPS_COLUMNS}, "job": j.name})
    return rows


def _curve_label(j: Job, swept: list[str]) -> str:
    base = f"{model_name(j)} · {j.metrics.get('attack', '?')}"
    extra = [f"{k}={v}" for k, v in j.overrides.items() if k in j.swept and k not in ("model", "attack")
             and v not in base]
    return base + (f" [{', '.join(extra)}]" if extra else "")


def metric_facts(name: str, node: dict[str, Any] | None) -> tuple[str, bool]:
    """``(category, higher_is_better)`` of an explanation metric, from the class it was built from (the facts live
    with the metric: :class:`~xai_bench.metrics.explanation.ExplanationMetric`)."""
    from xai_bench.metrics.explanation import METRICS

    cls: Any = None
    target = (node or {}).get("_target_")
    if target:
        from hydra.utils import get_class

        try:
            cls = get_class(str(target))
        except Exception:  # a metric class that is gone from this install: fall back to the registry's name
            cls = None
    if cls is None and name in METRICS.list():
        cls = METRICS.get(name)
    if cls is None:
        log.warning("explanation metric %r: class unknown to this install; its direction is taken as higher = better",
                    name)
        return "?", True
    return str(getattr(cls, "category", "?")), bool(getattr(cls, "higher_is_better", True))


def metric_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """Mean ± s.e. per (job, method, metric) of every explain job that scored its maps, with the metric's facts."""
    rows = []
    for j in jobs:
        table = j.metrics.get("explanation_metrics") if j.ok else None
        if not table:
            continue
        nodes = j.config.get("metric") or {}
        flags = {(f["method"], f["metric"]): f["flag"] for f in j.metrics.get("flags") or []}
        for method, per in table.items():
            for metric, v in per.items():
                category, hib = metric_facts(metric, nodes.get(metric))
                rows.append({"label": j.label(), "model": model_name(j), "method": method, "metric": metric,
                             "category": category, "higher_is_better": hib, "mean": _num(v.get("mean")),
                             "se": _num(v.get("se")), "flag": flags.get((method, metric), ""), "job": j.name})
    return rows


def ranking_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """The recorded LATEC-style ranking of each explain job: ``label, rank, method, median_rank, job``."""
    rows = []
    for j in jobs:
        for i, r in enumerate((j.metrics.get("ranking") or []) if j.ok and j.task in ("explain", "score") else []):
            rows.append({"label": j.label(), "model": model_name(j), "rank": i + 1, "method": r["method"],
                         "median_rank": _num(r.get("median_rank")), "job": j.name})
    return rows


def corruption_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """Accuracy per (job, corruption, severity) of every evaluate job with a corruption suite; ``severity`` is
    empty for severity-free alterations (``basic``'s contrast ×5, invert, …) and ``clean`` is its own row."""
    rows = []
    for j in jobs:
        corr = j.metrics.get("corruptions") if j.ok else None
        if not corr:
            continue
        for key, acc in (corr.get("accuracy") or {}).items():
            name, sev = split_label(str(key))
            rows.append({"label": j.label(), "model": model_name(j), "suite": corr.get("suite", ""),
                         "corruption": name, "severity": sev,
                         "accuracy": _num(acc), "job": j.name})
    return rows


def ensemble_accuracy_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """Top-1 / top-5 of each member and each combination of every ensemble job."""
    rows = []
    for j in jobs:
        m = j.metrics
        if not (j.ok and m.get("members")):
            continue
        for key in [k for k in m if k.startswith("top1/")]:
            name = key.removeprefix("top1/")
            rows.append({"label": j.label(), "model": name, "top1": _num(m[key]),
                         "top5": _num(m.get(f"top5/{name}")), "n": m.get("n"), "job": j.name})
    return rows


def uncertainty_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """The per-image uncertainty ranking of every ensemble job, most certain first: ``rank, image, ensemble_class,
    ensemble_prob, entropy, mutual_information, vote_agreement, correct``. Read from the job's
    ``tables/ensemble_uncertainty.csv`` (listed in its ``files``); a job without it gives its ``ranking`` only."""
    rows = []
    for j in jobs:
        m = j.metrics
        if not (j.ok and m.get("members")):
            continue
        base = {"label": j.label(), "job": j.name}
        name = "tables/ensemble_uncertainty.csv"
        file = j.path / name
        if name in (j.results.files if j.results else []) and file.is_file():
            with open(file, newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    rows.append({**base, "rank": int(r["rank"]), "image": r["image"],
                                 "ensemble_class": r.get("ensemble_class", ""),
                                 "ensemble_prob": _num(r.get("ensemble_prob")), "entropy": _num(r.get("entropy")),
                                 "mutual_information": _num(r.get("mutual_information")),
                                 "vote_agreement": _num(r.get("vote_agreement")), "correct": _bool(r.get("correct"))})
        else:
            rows += [{**base, "rank": i + 1, "image": img} for i, img in enumerate(m.get("ranking") or [])]
    return rows


def training_rows(jobs: list[Job], swept: list[str]) -> list[dict[str, Any]]:
    """Per-epoch history of every train job (``label, epoch, train/loss, val/acc, …``)."""
    rows = []
    for j in jobs:
        if j.ok and j.task == "train":
            rows += [{"label": j.label(), **h, "job": j.name} for h in j.metrics.get("history") or []]
    return rows


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _bool(v: Any) -> bool | None:
    return {"True": True, "true": True, "False": False, "false": False}.get(str(v))
