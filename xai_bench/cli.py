"""The one entry path: the console scripts (``xai-train`` …) and the top-level scripts (``train.py`` …) both call
these, so they behave identically and find ``conf/`` wherever the package is installed."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import xai_bench  # noqa: F401  (patches torchvision first)


def _conf_dir() -> str:
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if cand.is_dir():
            return str(cand)
    raise FileNotFoundError("xai_bench config folder not found next to the package")


class _Reported(BaseException):
    """Carries a user error past Hydra's ``run_and_report`` (which catches ``Exception`` and prints a traceback) to
    :func:`_main`, which prints it as one line."""

    def __init__(self, error: BaseException, run_dir: str | None) -> None:
        super().__init__(str(error))
        self.error, self.run_dir = error, run_dir


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


def _message(exc: BaseException) -> str:
    # KeyError's str() is the repr of its argument ("'…'"); our checks put the whole message in args[0]
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return text or type(exc).__name__


def _main(task: str) -> None:
    """Run ``task`` under Hydra. A user error (:func:`xai_bench.errors.is_user_error`: a bad setting, file or
    checkpoint, a full disk, no network) prints ``error: <message>`` on stderr and exits 2, its traceback only with
    ``HYDRA_FULL_ERROR=1``; Ctrl-C and SIGTERM exit 130 and 143 after ``results.json`` records ``interrupted``."""
    import hydra
    from omegaconf import DictConfig

    from xai_bench.errors import Terminated, is_user_error

    @hydra.main(version_base="1.3", config_path=_conf_dir(), config_name=task)
    def main(cfg: DictConfig) -> float | None:
        module = __import__(f"xai_bench.tasks.{task}", fromlist=["run"])
        try:
            metrics = module.run(cfg)
        except Exception as exc:
            if _full_error() or not is_user_error(exc):
                raise
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            hc = HydraConfig.get()
            if hc.mode == RunMode.MULTIRUN:
                raise  # a sweep goes on to its other jobs; Hydra reports the failure at the end
            raise _Reported(exc, hc.runtime.output_dir) from exc
        return _objective(metrics, cfg.get("optimized_metric"), cfg.get("time_budget"))

    sys.argv[0] = task
    try:
        main()
    except _Reported as rep:
        results = Path(rep.run_dir or ".") / "results.json"
        where = f" (recorded in {results})" if rep.run_dir and results.is_file() else ""
        sys.stderr.write(f"error: {_message(rep.error)}\n"
                         f"{task}: stopped before finishing{where}; HYDRA_FULL_ERROR=1 shows the traceback\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt as exc:
        if _full_error():
            raise
        what = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        sys.stderr.write(f"{task}: interrupted by {what} (a started run records status 'interrupted' in "
                         f"results.json)\n")
        raise SystemExit(128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)) from None


def _objective(metrics: dict, optimized_metric: str | None, time_budget: Any = None) -> float | None:
    """What sweepers (Optuna) optimise: ``optimized_metric`` (e.g. from conf/hparams_search; a key of the metrics,
    or a dotted path into them such as ``explanation_metrics.rise.insertion.mean``), else the task's own
    ``objective``. A named metric the task did not return is an error (a sweeper would fail on ``None`` later,
    saying less). ``time_budget`` (``{metric: seconds/rise, max_s: 60, penalty: 0.0}``): a run whose ``metric``
    exceeded ``max_s`` seconds scores ``penalty`` instead, so the search favours settings within the budget."""
    key = optimized_metric or "objective"
    value = _lookup(metrics, key)
    if optimized_metric and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ValueError(f"optimized_metric={optimized_metric!r} is not a number this task returned "
                         f"(got {value!r}); numeric metrics: {numeric}")
    if time_budget and isinstance(value, (int, float)):
        spent = _lookup(metrics, str(time_budget["metric"]))
        if not isinstance(spent, (int, float)):
            raise ValueError(f"time_budget.metric={time_budget['metric']!r} is not a number this task returned "
                             f"(got {spent!r}); e.g. seconds/<method> of explain")
        if spent > float(time_budget["max_s"]):
            import logging

            logging.getLogger(__name__).warning(
                "%s = %.1f s is over time_budget.max_s = %s: objective %s instead of %.4g", time_budget["metric"],
                spent, time_budget["max_s"], time_budget["penalty"], value)
            return float(time_budget["penalty"])
    return float(value) if isinstance(value, (int, float)) else None


def _lookup(metrics: dict, key: str) -> Any:
    """``metrics[key]``, else the value at dotted path ``key`` (keys such as ``accuracy@0.0157`` contain dots)."""
    if key in metrics:
        return metrics[key]
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def train() -> None:
    _main("train")


def evaluate() -> None:
    _main("evaluate")


def explain() -> None:
    _main("explain")


def attack() -> None:
    _main("attack")


def score() -> None:
    _main("score")


if __name__ == "__main__":  # python -m xai_bench.cli <task> [overrides]
    task = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if task not in ("train", "evaluate", "explain", "attack", "score"):
        raise SystemExit(f"usage: python -m xai_bench.cli train|evaluate|explain|attack|score [overrides]; "
                         f"got {task!r}")
    _main(task)
