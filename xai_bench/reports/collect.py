"""Find the jobs under a run or sweep folder and read each one: its ``results.json`` (through the versioned reader),
its Hydra overrides, and, for a job that left no results, the tail of its log.

A *job folder* is a folder with a ``results.json``, or a Hydra output folder (one with ``.hydra/``) that holds no
job below it: a job that died before writing its results (killed, out of memory, a config error caught before the
run started) still has ``.hydra/`` and its ``<task>.log``, and is reported as failed instead of silently missing.
Folders that hold jobs (a sweep folder, the demo's folder) are containers, not jobs.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xai_bench.errors import NoResultsError
from xai_bench.results import FILENAME, RunResults, read_results

__all__ = ["Job", "collect_jobs", "swept_keys"]

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 20
_SKIP_DIRS = {".hydra", "wandb", "figures", "tables", "shards", "checkpoints", "best", "examples", "report"}


@dataclass
class Job:
    """One job of a sweep (or one run) as the report sees it.

    ``name`` is the folder relative to the report's root (``"."`` for a single run), ``results`` is ``None`` when
    the job left no readable ``results.json``, ``overrides`` are its command-line overrides (``.hydra/overrides.yaml``,
    ``key → value``), and ``log_tail`` the last lines of its log when it did not finish.
    """

    name: str
    path: Path
    results: RunResults | None
    overrides: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    log_tail: str = ""
    swept: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        if self.results is not None:
            return self.results.task
        return _task_from_log(self.path) or "?"

    @property
    def status(self) -> str:
        return self.results.status if self.results is not None else "failed"

    @property
    def ok(self) -> bool:
        return self.results is not None and self.results.ok

    @property
    def metrics(self) -> dict[str, Any]:
        return self.results.metrics if self.results is not None else {}

    @property
    def config(self) -> dict[str, Any]:
        return self.results.config if self.results is not None else {}

    def label(self, swept: list[str] | None = None) -> str:
        """A short name for figures: the values its sweep varied (``attack=fgsm · model=a``), else its folder."""
        parts = [f"{k}={self.overrides[k]}" for k in (self.swept if swept is None else swept) if k in self.overrides]
        return " · ".join(parts) if parts else self.name


def collect_jobs(root: str | Path) -> list[Job]:
    """Every job under ``root`` (a run folder, a sweep folder, or a folder of sweeps), sorted by folder.

    Raises:
        NoResultsError: ``root`` is not a folder, or holds no job (no ``results.json`` and no Hydra output folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise NoResultsError(f"{root}: no such folder; xai-report takes a run or sweep folder written by xai-bench "
                             "(e.g. outputs/train/<timestamp> or multirun/attack/<timestamp>)")
    jobs = [_read_job(root, d) for d in _job_dirs(root)]
    sweeps: dict[Path, list[Job]] = {}
    for j in jobs:  # the jobs of one multirun share its folder, where Hydra wrote multirun.yaml
        if j.path != root and (j.path.parent / "multirun.yaml").is_file():
            sweeps.setdefault(j.path.parent, []).append(j)
    for members in sweeps.values():
        keys = _varied(members)
        for j in members:
            j.swept = keys
    if not jobs:
        raise NoResultsError(f"{root}: no results.json and no Hydra job folder (.hydra/) under it, so there is nothing "
                             "to report; point xai-report at the folder a run or sweep wrote (hydra.run.dir or "
                             "hydra.sweep.dir)")
    return jobs


def swept_keys(jobs: list[Job]) -> list[str]:
    """Every key some multirun under the report's folder varied, in first-seen order (separate runs, like the demo's
    stages, differ in everything and sweep nothing)."""
    keys: list[str] = []
    for j in jobs:
        keys += [k for k in j.swept if k not in keys]
    return keys


def _varied(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between the jobs of one multirun."""
    keys: list[str] = []
    for j in jobs:
        keys += [k for k in j.overrides if k not in keys]
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def _job_dirs(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        if FILENAME in filenames:
            found.append(here)
            dirnames[:] = []  # a job's own folders hold no other job
        elif (here / ".hydra").is_dir() and not _holds_job(here, dirnames):
            found.append(here)
    return sorted(found)


def _holds_job(here: Path, dirnames: list[str]) -> bool:
    return any(next((here / d).rglob(FILENAME), None) or next((here / d).rglob(".hydra"), None) for d in dirnames)


def _read_job(root: Path, path: Path) -> Job:
    name = str(path.relative_to(root)) if path != root else "."
    overrides = _overrides(path)
    try:
        res: RunResults | None = read_results(path)
    except FileNotFoundError:
        res = None
        error = "no results.json: the job stopped before writing it (killed, out of memory, or a start-up error)"
    except ValueError as exc:
        res, error = None, str(exc)
    else:
        error = res.error if not res.ok else None
    tail = "" if res is not None and res.ok else _log_tail(path)
    return Job(name=name, path=path, results=res, overrides=overrides, error=error, log_tail=tail)


def _overrides(path: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` as ``key → value`` (``+key=v`` and ``~key`` keep their prefix)."""
    file = path / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return {}
    from omegaconf import OmegaConf

    try:
        items = OmegaConf.to_container(OmegaConf.load(file))
    except Exception as exc:  # a hand-edited or truncated file: the job is still reported, without its overrides
        log.warning("%s: unreadable (%s); the job's overrides are left out", file, exc)
        return {}
    out: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        key, _, value = str(item).partition("=")
        out[key] = value
    return out


def _log_tail(path: Path) -> str:
    logs = sorted(path.glob("*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return ""
    try:
        lines = logs[-1].read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _task_from_log(path: Path) -> str | None:
    """The task of a job that left no results: ``task_name`` in the config Hydra saved, else the log's name (Hydra
    names it after the job, and conf/hydra/default.yaml names the job after the task)."""
    config = path / ".hydra" / "config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        try:
            name = OmegaConf.load(config).get("task_name")
        except Exception:  # unreadable: fall back to the log's name
            name = None
        if name:
            return str(name)
    logs = sorted(path.glob("*.log"))
    return logs[0].stem if logs else None
