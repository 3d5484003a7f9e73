"""``xai-demo`` (``make run``): the demo study — train, attack, corrupt, explain and measure, ensemble — as one run
of each task into one folder, then one report over all of them (``conf/demo.yaml``).

Hydra runs one task per command, so each stage is its own process, started exactly as a user would start it
(``python -m xai_bench.cli <task> <overrides…>``, with ``-m`` for a stage that sweeps): every stage gets its Hydra
folder, log, ``results.json`` and, for a sweep, its own sweep report; a crash in one stage cannot take the others'
files with it. The report (:func:`xai_bench.reports.write_report`) then reads them all from the folder.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xai_bench.errors import ConfigError, UserError
from xai_bench.reports import write_report
from xai_bench.tasks.common import output_dir

__all__ = ["StageFailed", "run", "stage_commands"]

log = logging.getLogger(__name__)

_TASKS = ("train", "evaluate", "explain", "attack", "score")


class StageFailed(UserError, RuntimeError):
    """A stage of the demo exited with an error; the report lists it with its error and log tail."""


def stage_commands(cfg: DictConfig, folder: Path, logger: str | None = None) -> dict[str, list[str]]:
    """The command line of every enabled stage, in order (stage name → argv)."""
    stages = OmegaConf.to_container(cfg.stages, resolve=True)
    if not isinstance(stages, dict) or not stages:
        raise ConfigError("stages: the demo has no stages; conf/demo.yaml lists them (train, attack, …)")
    commands: dict[str, list[str]] = {}
    for name, st in stages.items():
        if not isinstance(st, dict) or st.get("task") not in _TASKS:
            raise ConfigError(f"stages.{name}.task must be one of {list(_TASKS)}, got "
                              f"{st.get('task') if isinstance(st, dict) else st!r}")
        if not st.get("enabled", True):
            continue
        sweep = bool(st.get("multirun", False))
        args = _flatten(st.get("overrides") or []) + _flatten(st.get("extra") or [])
        if logger:
            args.append(f"logger={logger}")
            if logger == "wandb":  # one W&B group per demo: its stages (and its report) compare in one view
                args.append(f"logger.group={folder.name}")
        args += [f"seed={cfg.seed}", f"hydra.{'sweep' if sweep else 'run'}.dir={folder / name}"]
        commands[str(name)] = [sys.executable, "-m", "xai_bench.cli", st["task"], *(["-m"] if sweep else []), *args]
    return commands


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run every enabled stage in order, then write the report.

    Returns:
        ``report`` (the HTML report's path), ``stages`` (name → exit status) and ``seconds`` per stage.

    Raises:
        StageFailed: a stage exited with an error (after the report, which lists it, was written).
    """
    folder = output_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    commands = stage_commands(cfg, folder, _logger_choice())
    status: dict[str, int] = {}
    seconds: dict[str, float] = {}
    failed = None
    for name, cmd in commands.items():
        log.info("demo stage %s: %s", name, " ".join(cmd[2:]))
        t0 = time.perf_counter()
        status[name] = subprocess.run(cmd, check=False).returncode
        seconds[name] = round(time.perf_counter() - t0, 1)
        log.info("demo stage %s: exit %d after %.1f s", name, status[name], seconds[name])
        if status[name] != 0:
            failed = name
            break
    tracker = _report_tracker(cfg, folder)
    try:
        written = write_report(folder, tracker=tracker, title=f"xai-bench demo · {folder.name}")
    finally:
        if tracker is not None:
            tracker.finish()
    if failed:
        raise StageFailed(f"demo stage {failed!r} failed (exit {status[failed]}); the stages after it did not run. "
                          f"Its error and log tail are in the report: {written['html']}")
    return {"report": str(written["html"]), "stages": status, "seconds": seconds}


def _flatten(items: list[Any]) -> list[str]:
    out: list[str] = []
    for item in items:
        out += _flatten(item) if isinstance(item, list) else [str(item)]
    return out


def _logger_choice() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get("logger")
    return str(choice) if choice else None


def _report_tracker(cfg: DictConfig, folder: Path) -> Any:
    """A started W&B run (``job_type="report"``, the demo's group) when the demo's logger is W&B, else ``None``."""
    node = cfg.get("logger")
    if not node or "Wandb" not in str(node.get("_target_", "")):
        return None
    from xai_bench.utils import build

    tracker = build(node)
    tracker.start(folder, {"stages": OmegaConf.to_container(cfg.stages, resolve=True)}, name=f"report-{folder.name}",
                  group=folder.name, job_type="report")
    return tracker
