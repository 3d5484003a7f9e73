"""Readers of finished runs: the sweep report (``xai-report``, :func:`write_report`) and the Hydra callbacks that
write it and the accuracy-vs-ε plot after a multirun.

Everything here reads ``results.json`` through :mod:`xai_bench.results` and never imports the task layer, so it runs
after any sweep, on any machine, without re-running a job.
"""

from xai_bench.reports.callbacks import AccuracyVsEpsCallback, ReportCallback, collect_sweep
from xai_bench.reports.collect import Job, collect_jobs
from xai_bench.reports.report import build_tables, write_report

__all__ = ["AccuracyVsEpsCallback", "Job", "ReportCallback", "build_tables", "collect_jobs", "collect_sweep",
           "write_report"]
