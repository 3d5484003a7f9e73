"""Hydra callbacks: after a multirun of ``attack.py``, one accuracy-vs-ε plot with a curve per (model, attack).

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

__all__ = ["AccuracyVsEpsCallback", "collect_sweep"]

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
