"""Readers of finished runs: Hydra callbacks that summarise a sweep, and (next) sweep reports.

Everything here reads ``results.json`` through :mod:`xai_bench.results` and never imports the task layer, so it runs
after any sweep, on any machine, without re-running a job.
"""

from xai_bench.reports.callbacks import AccuracyVsEpsCallback, collect_sweep

__all__ = ["AccuracyVsEpsCallback", "collect_sweep"]
