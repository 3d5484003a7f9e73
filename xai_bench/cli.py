"""The one entry path: the console scripts (``xai-train`` …) and the top-level scripts (``train.py`` …) both call
these, so they behave identically and find ``conf/`` wherever the package is installed."""

from __future__ import annotations

import sys
from pathlib import Path

import xai_bench  # noqa: F401  (patches torchvision first)


def _conf_dir() -> str:
    here = Path(__file__).resolve().parent
    for cand in (here / "conf", here.parent / "conf"):
        if cand.is_dir():
            return str(cand)
    raise FileNotFoundError("xai_bench config folder not found next to the package")


def _main(task: str) -> None:
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path=_conf_dir(), config_name=task)
    def main(cfg: DictConfig) -> float | None:
        module = __import__(f"xai_bench.tasks.{task}", fromlist=["run"])
        metrics = module.run(cfg)
        return _objective(metrics, cfg.get("optimized_metric"))

    sys.argv[0] = task
    main()


def _objective(metrics: dict, optimized_metric: str | None) -> float | None:
    """What sweepers (Optuna) optimise: ``optimized_metric`` (e.g. from conf/hparams_search), else the task's own
    ``objective``. A named metric the task did not return is an error (a sweeper would fail on ``None`` later,
    saying less)."""
    key = optimized_metric or "objective"
    value = metrics.get(key)
    if optimized_metric and not isinstance(value, (int, float)):
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise ValueError(f"optimized_metric={optimized_metric!r} is not a number this task returned "
                         f"(got {value!r}); numeric metrics: {numeric}")
    return float(value) if isinstance(value, (int, float)) else None


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
