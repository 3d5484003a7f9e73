"""Experiment tracking in one place: a W&B backend (offline by default) and a null backend.

Whatever the backend, every run also writes ``results.json`` and its figures into its own output folder (see
``tasks/common.py``), so nothing depends on an account.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from collections.abc import Sequence


class Tracker:
    """The null tracker: accepts everything, logs nothing. Subclasses send to a service."""

    run_dir: Path | None = None

    def start(self, run_dir: Path, config: dict[str, Any], name: str | None = None, *, group: str | None = None,
              job_type: str | None = None) -> None:
        """Begin a run in ``run_dir``; ``group`` (runs compared together, e.g. one sweep) and ``job_type`` (the task)
        apply where the backend's own settings leave them open."""
        self.run_dir = run_dir

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        pass

    def log_image(self, key: str, path: str | Path, caption: str | None = None) -> None:
        pass

    def log_table(self, key: str, rows: Sequence[dict[str, Any]]) -> None:
        pass

    def log_line(self, key: str, xs: Sequence[float], ys: dict[str, Sequence[float]], xname: str, title: str) -> None:
        pass

    def summary(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


NullTracker = Tracker


class WandbTracker(Tracker):
    """Weights & Biases. ``mode="offline"`` (default) needs no network or account; ``wandb sync`` uploads later.

    Args:
        project, entity, group, tags, name: W&B run metadata; ``group=None`` takes the group the task passes to
            :meth:`start` (a multirun's sweep folder name, so its jobs and its report compare in one view).
        mode: ``offline`` | ``online`` | ``disabled``. ``online`` needs ``WANDB_API_KEY`` or ``wandb login``.
    """

    def __init__(self, project: str = "xai-bench", entity: str | None = None, group: str | None = None,
                 tags: Sequence[str] = (), mode: str = "offline", name: str | None = None) -> None:
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.project, self.entity, self.group, self.tags, self.mode, self.name = (
            project, entity, group, list(tags), mode, name)
        self._run = None

    def start(self, run_dir: Path, config: dict[str, Any], name: str | None = None, *, group: str | None = None,
              job_type: str | None = None) -> None:
        import wandb

        self.run_dir = run_dir
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            self._run = wandb.init(project=self.project, entity=self.entity, group=self.group or group,
                                   job_type=job_type, tags=self.tags, mode=self.mode, dir=str(run_dir), config=config,
                                   name=self.name or name, reinit="finish_previous")
        except wandb.errors.UsageError as exc:
            raise RuntimeError(f"W&B could not start with logger.mode={self.mode} ({exc}). Online logging needs "
                               "WANDB_API_KEY or `wandb login`; logger.mode=offline (the default) needs neither, "
                               "and logger=none turns tracking off.") from exc

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def log_image(self, key: str, path: str | Path, caption: str | None = None) -> None:
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.Image(str(path), caption=caption)})

    def log_table(self, key: str, rows: Sequence[dict[str, Any]]) -> None:
        if self._run is not None and rows:
            import wandb

            columns = list(rows[0])
            data = [[_plain(r.get(c)) for c in columns] for r in rows]
            self._run.log({key: wandb.Table(columns=columns, data=data)})

    def log_line(self, key: str, xs: Sequence[float], ys: dict[str, Sequence[float]], xname: str, title: str) -> None:
        if self._run is not None:
            import wandb

            self._run.log({key: wandb.plot.line_series(xs=list(xs), ys=[list(v) for v in ys.values()],
                                                        keys=list(ys), title=title, xname=xname)})

    def summary(self, metrics: dict[str, Any]) -> None:
        if self._run is not None:
            self._run.summary.update({k: _plain(v) for k, v in metrics.items()})

    def finish(self, exit_code: int = 0) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None


def _plain(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    if hasattr(v, "item"):
        return v.item()
    return v
