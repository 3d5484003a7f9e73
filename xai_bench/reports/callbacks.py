"""Hydra callbacks: after any multirun, the sweep's report (:class:`ReportCallback`, see
:mod:`xai_bench.reports.report`); after a multirun of ``attack.py``, one accuracy-vs-ε plot with a curve per
(model, attack) (:class:`AccuracyVsEpsCallback`).

Registered in ``conf/attack.yaml`` under ``hydra.callbacks`` (Hydra 1.3 instantiates each entry's ``_target_`` and
calls its ``on_multirun_end(config)`` once every job has returned). Each job's ``results.json`` already holds its
per-ε rows (``metrics.eps_sweep``) and its ``model``/``attack``/``norm``, so the callback only reads files; it can
also be run by hand on an old sweep with :func:`collect_sweep`.

A sweep with a failed job still gets its plot: Hydra's sweeper raises after the batch of jobs and never calls
``on_multirun_end``, so once a job has failed the plot is redrawn after every job (``on_job_end``) from the jobs
that finished, and the failed ones are named in the log and the figure's title.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from xai_bench.results import find_results
from xai_bench.utils import atomic_path

log = logging.getLogger(__name__)

__all__ = ["AccuracyVsEpsCallback", "ReportCallback", "collect_sweep"]

_COLUMNS = ("model", "attack", "norm", "dataset", "eps", "eps_label", "eps_255", "n", "accuracy",
            "attack_success_rate", "flip_rate", "mean_confidence", "job")


class AccuracyVsEpsCallback(Callback):
    """Draws ``<sweep dir>/<filename>.png`` and writes ``<filename>.csv`` from the attack jobs of a multirun.

    Args:
        filename: stem of the files written into the sweep folder. Default: ``"accuracy_vs_eps"``.
    """

    def __init__(self, filename: str = "accuracy_vs_eps") -> None:
        self.filename = filename
        self._failed = False

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.get("mode") != RunMode.MULTIRUN:
            return
        self._failed = self._failed or job_return.status == JobStatus.FAILED
        if self._failed:  # on_multirun_end will not come: draw what has finished so far
            collect_sweep(Path(str(config.hydra.sweep.dir)), self.filename)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        written = collect_sweep(Path(str(config.hydra.sweep.dir)), self.filename)
        for path in written.values():
            log.info("[accuracy_vs_eps] wrote %s", path)


class ReportCallback(Callback):
    """Writes ``<sweep dir>/report.html`` (and ``report/``) when a multirun ends, and logs its tables to W&B when the
    sweep's ``logger`` is W&B (a run of ``job_type="report"`` in the sweep's group).

    Hydra never calls ``on_multirun_end`` once a job has failed (its sweeper raises after the batch), so from the
    first failure on the report is rewritten after every job (``on_job_end``). A job that failed before its task
    could write ``results.json`` (a config error caught at start-up) gets one here, ``status: failed`` with the
    exception, so every reader sees the failure and why. The first failure leaves a marker file in the sweep folder,
    so launchers that run ``on_job_end`` in other processes (joblib, submitit, Ray) also keep the report current.

    Args:
        wandb: log the report's tables to W&B when the sweep's logger is W&B. Default ``True``.
    """

    MARKER = ".xai_bench_failed_jobs"

    def __init__(self, wandb: bool = True) -> None:
        self.wandb = wandb

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        failed = job_return.status == JobStatus.FAILED
        if failed:
            _record_failure(config, job_return)
        if config.hydra.get("mode") != RunMode.MULTIRUN:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        marker = sweep_dir / self.MARKER
        if failed and not marker.exists():
            marker.write_text("a job of this sweep failed: the report is rewritten after every job\n")
        if marker.exists():  # on_multirun_end will not come: report what has finished so far
            self._report(config, sweep_dir, log_to_tracker=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(config, Path(str(config.hydra.sweep.dir)), log_to_tracker=self.wandb)

    def _report(self, config: DictConfig, sweep_dir: Path, *, log_to_tracker: bool) -> None:
        from xai_bench.errors import NoResultsError
        from xai_bench.reports.report import write_report

        tracker = _report_tracker(config, sweep_dir) if log_to_tracker else None
        try:
            written = write_report(sweep_dir, tracker=tracker)
        except NoResultsError as exc:
            log.warning("[report] %s", exc)
            return
        finally:
            if tracker is not None:
                tracker.finish()
        log.info("[report] wrote %s", written["html"])


def _record_failure(config: DictConfig, job_return: JobReturn) -> None:
    """``results.json`` with ``status: failed`` for a job whose task raised before writing its own."""
    import traceback

    from xai_bench.results import FILENAME, RunResults, write_results

    out = Path(str(config.hydra.runtime.output_dir))
    if (out / FILENAME).exists():
        return
    error = "the job failed before writing results.json"
    try:
        _ = job_return.return_value  # re-raises the job's exception
    except Exception as exc:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    write_results(out, RunResults(task=str(config.get("task_name") or config.hydra.job.name), status="failed",
                                  error=error, seed=int(config.get("seed") or 0)))


def _report_tracker(config: DictConfig, sweep_dir: Path) -> Any:
    """A started tracker for the report when the sweep logs to W&B, else ``None``."""
    from omegaconf import OmegaConf

    node = config.get("logger")
    if not node or "Wandb" not in str(node.get("_target_", "")):
        return None
    from xai_bench.utils import build

    tracker = build(node)
    overrides = [str(o) for o in config.hydra.overrides.task]
    tracker.start(sweep_dir, {"sweep_dir": str(sweep_dir), "sweep_overrides": overrides,
                              "task": OmegaConf.select(config, "task_name")},
                  name=f"report-{sweep_dir.name}", group=sweep_dir.name, job_type="report")
    return tracker


def collect_sweep(sweep_dir: str | Path, filename: str = "accuracy_vs_eps") -> dict[str, Path]:
    """Gather every ``results.json`` of an ``attack`` job under ``sweep_dir`` into one plot and one CSV table.

    Jobs that failed or are not attack runs are skipped. L∞ curves are drawn with ε in 1/255 units; L2 curves (a
    different ε scale) go to a second figure ``<filename>_l2.png`` when both norms are present.

    Args:
        sweep_dir: the multirun folder (``hydra.sweep.dir``).
        filename: stem of the output files.

    Returns:
        What was written: ``{"csv": path, "png": path[, "png_l2": path]}``; empty when no job had results.
    """
    from xai_bench import viz

    sweep_dir = Path(sweep_dir)
    runs = list(find_results(sweep_dir, task="attack", ok_only=False))
    jobs = [(res.path, res.metrics) for res in runs if res.ok and res.metrics.get("eps_sweep")]
    bad = [res for res in runs if not res.ok and res.path is not None]
    failed = [str(res.path.relative_to(sweep_dir)) for res in bad]  # type: ignore[union-attr]
    for job, res in zip(failed, bad):
        log.warning("[accuracy_vs_eps] job %s is not drawn: %s (%s)", job, res.status,
                    (res.error or "no error recorded").splitlines()[-1])
    if not jobs:
        log.warning("[accuracy_vs_eps] no finished attack jobs under %s; nothing to plot", sweep_dir)
        return {}

    labels = [f"{m.get('model', '?')} · {m.get('attack', '?')}" for _, m in jobs]
    # Two jobs with the same (model, attack) differ in some other override: tell them apart by their folder.
    labels = [f"{lab} [{job.name}]" if labels.count(lab) > 1 else lab for lab, (job, _) in zip(labels, jobs)]

    rows: list[dict[str, Any]] = []
    curves: dict[str, dict[str, tuple[list[float], list[float]]]] = {"inf": {}, "2": {}}
    for label, (job, m) in zip(labels, jobs):
        norm = str(m.get("norm", "inf"))
        sweep = m["eps_sweep"]
        curves.setdefault(norm, {})[label] = ([float(r["eps"]) for r in sweep],
                                              [_float(r.get("accuracy")) for r in sweep])
        for r in sweep:
            rows.append({**{c: r.get(c) for c in _COLUMNS}, "model": m.get("model"), "attack": m.get("attack"),
                         "norm": norm, "dataset": m.get("dataset"), "job": str(job.relative_to(sweep_dir))})

    written: dict[str, Path] = {}
    csv_path = sweep_dir / f"{filename}.csv"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    written["csv"] = csv_path

    datasets = sorted({str(m.get("dataset")) for _, m in jobs})
    title = f"robust accuracy · {', '.join(datasets)}"
    if failed:
        title += f"\n({len(failed)} failed job(s) not drawn: {', '.join(failed[:3])}{' …' if len(failed) > 3 else ''})"
    primary = "inf" if curves["inf"] else "2"
    for norm in ("inf", "2"):
        if not curves[norm]:
            continue
        key, stem = ("png", filename) if norm == primary else ("png_l2", f"{filename}_l2")
        xlabel = None if norm == "inf" else "ε (L2 norm of δ, pixel units; symlog axis)"
        fig = viz.accuracy_vs_eps(curves[norm], scale_255=norm == "inf", xlabel=xlabel, ylabel="robust accuracy",
                                  title=title)
        written[key] = viz.save_figure(fig, sweep_dir / f"{stem}.png")
    return written


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)
