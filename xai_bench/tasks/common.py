"""What every task shares: seeding, the output folder, the tracker, figures/tables, and ``results.json``."""

from __future__ import annotations

import csv
import logging
import os
import platform
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from xai_bench.checks import check_limit
from xai_bench.config import check_values, validate
from xai_bench.distributed import SHARDED_TASKS, env_rank, env_world_size, setup_job
from xai_bench.errors import Terminated
from xai_bench.results import RunResults, write_results
from xai_bench.tracking import Tracker
from xai_bench.utils import atomic_path, build, remove_stale_temps, resolve_device, seed_everything


log = logging.getLogger(__name__)

# The run whose `run_context` is open, so that setup helpers (tasks/setup.py) can record into it without every task
# passing its context along.
_ACTIVE_RUN: ContextVar[RunContext | None] = ContextVar("xai_bench_active_run", default=None)


def active_run() -> RunContext | None:
    """The :class:`RunContext` of the task that is running, or ``None`` outside :func:`run_context`."""
    return _ACTIVE_RUN.get()


def output_dir(cfg: DictConfig) -> Path:
    """Hydra's run folder when running under Hydra, else ``cfg.paths.output_dir``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        try:
            return Path(HydraConfig.get().runtime.output_dir)
        except Exception:
            pass
    return Path(cfg.paths.output_dir)


@dataclass
class RunContext:
    cfg: DictConfig
    out_dir: Path
    tracker: Tracker
    device: torch.device
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    model_name: str | None = None
    subject: str | None = None
    skipped_files: list[dict[str, str]] = field(default_factory=list)

    def name(self, model: str, *detail: str) -> None:
        """Say what this run's figures show: every later :meth:`figure` names ``model`` (and ``detail``, e.g. the
        attack), so the figures of a sweep can be told apart."""
        self.model_name = model
        self.subject = " · ".join([model, *[d for d in detail if d]])

    def record_skipped(self, skipped: Sequence[dict[str, str]]) -> None:
        """Record input files the dataset left out (``{path, reason}`` each): logged, written to
        ``tables/skipped_files.csv`` and to ``results.json`` (``skipped_files``)."""
        if not skipped:
            return
        self.skipped_files += [dict(s) for s in skipped]
        log.warning("%d input file(s) skipped (listed in results.json and tables/skipped_files.csv):\n%s",
                    len(skipped), "\n".join(f"  {s['reason']}" for s in skipped))
        self.table("skipped_files", self.skipped_files)

    def figure(self, name: str, fig: Any, caption: str | None = None) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` and log it; a figure whose titles do not name the
        model (see :meth:`name`) gets the run's subject as a header."""
        from xai_bench.viz import name_figure, save_figure

        if self.subject:
            name_figure(fig, self.subject, required=self.model_name)
        path = self.out_dir / "figures" / f"{name}.png"
        save_figure(fig, path)
        self.tracker.log_image(f"figures/{name}", path, caption)
        self.files.append(str(path.relative_to(self.out_dir)))
        return path

    def table(self, name: str, rows: Sequence[dict[str, Any]]) -> Path:
        """Write ``tables/<name>.csv`` and log it as a W&B table."""
        path = self.out_dir / "tables" / f"{name}.csv"
        columns: list[str] = []
        for r in rows:
            columns += [c for c in r if c not in columns]
        # backslashreplace: a file name that is not valid UTF-8 must not crash the run after all the work is done
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        self.tracker.log_table(f"tables/{name}", rows)
        if str(path.relative_to(self.out_dir)) not in self.files:  # a table rewritten is still one file
            self.files.append(str(path.relative_to(self.out_dir)))
        return path

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t0, 3)


def _sweep_context(task: str) -> tuple[str, dict[str, str]]:
    """The tracker's group — the sweep folder's name in a multirun, so the jobs of one sweep (and the report written
    after it) compare in one view; else the task — and this job's command-line overrides (the swept values)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return task, {}
    hc = HydraConfig.get()
    overrides = dict(str(o).partition("=")[::2] for o in hc.overrides.task)
    return (Path(str(hc.sweep.dir)).name if hc.mode == RunMode.MULTIRUN else task), overrides


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata: nothing is imported here, because this runs in the
    ``finally`` of an interrupted run, where a SIGTERM may have cut a lazy import short (importing torchvision then
    re-enters a half-initialised sympy and fails with a RecursionError)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}
    for dist in ("torchvision", "captum", "hydra-core", "timm", "wandb"):
        try:
            out[dist.removesuffix("-core")] = version(dist)
        except PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


@contextmanager
def run_context(cfg: DictConfig, task: str) -> Iterator[RunContext]:
    """Check the config, seed, make the output folder, start the tracker; always write ``results.json`` and finish
    the tracker. SIGTERM during the run is recorded like Ctrl-C (``status: interrupted``)."""
    with _sigterm_as_interrupt(), _run_context(cfg, task) as ctx:
        yield ctx


_CLEANING = threading.Event()  # set once a run has started writing its results: SIGTERM no longer interrupts


def _redeliver(signum: int) -> None:
    import _thread

    while not _CLEANING.wait(1.0):
        _thread.interrupt_main(signum)  # runs the handler again in the main thread (a no-op once it is restored)


def _in_finaliser(frame: Any) -> bool:
    """Whether a signal handler's ``frame`` is a finaliser or a weak-reference callback (garbage collection runs them
    at any point; an exception raised in them is printed as "Exception ignored in …" and dropped)."""
    code = getattr(frame, "f_code", None)
    return code is not None and (code.co_name == "__del__"
                                 or code.co_filename.endswith(("weakref.py", "_weakrefset.py")))


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM (Slurm's and Docker's stop signal) raises :class:`~xai_bench.errors.Terminated`,
    a ``KeyboardInterrupt``, in the main thread, so the run is recorded as ``interrupted`` like Ctrl-C; it is
    re-delivered every second until the run's clean-up starts (an exception raised inside a finaliser is only
    printed), SIGTERMs during the clean-up that writes ``results.json`` are ignored, and the previous handler is
    restored afterwards.
    Handlers can only be set from the main thread: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()
    _CLEANING.clear()
    fired: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != pid:  # a forked DataLoader worker inherited the handler: end as SIGTERM would
            os._exit(128 + signum)
        if _CLEANING.is_set():  # results.json is being written: let it finish
            return
        if not fired:
            fired.append(signum)
            # A signal can land inside a finaliser or a callback, where Python prints the exception and carries on
            # (a run then trained on after SIGTERM). Re-deliver it every second until the clean-up has started.
            threading.Thread(target=_redeliver, args=(signum,), daemon=True, name="sigterm-redeliver").start()
        if _in_finaliser(frame):  # raising here would only print "Exception ignored in …": the next delivery stops it
            return
        raise Terminated(f"received SIGTERM (signal {signum}); the run was stopped")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _run_context(cfg: DictConfig, task: str) -> Iterator[RunContext]:
    validate(cfg)  # a key no builder takes fails here, before anything is written or started
    if env_world_size() > 1 and task not in SHARDED_TASKS:
        raise ValueError(f"{task} does not split its work across torchrun ranks (WORLD_SIZE={env_world_size()}): "
                         f"run it without torchrun, or use a Hydra launcher for many runs (README: Scaling out)")
    main_rank = env_rank() == 0  # torchrun: only rank 0 tracks and writes results.json (it merges the ranks' work)
    if "max_images" in cfg:
        check_limit("max_images", cfg.max_images)
    seed_everything(int(cfg.seed))
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # what a kill mid-write left in a reused folder
    tracker = build(cfg.logger) if cfg.get("logger") and main_rank else Tracker()
    tracker = tracker or Tracker()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    ctx = RunContext(cfg=cfg, out_dir=out, tracker=tracker, device=resolve_device(setup_job(cfg.get("device", "auto"))))
    t0 = time.perf_counter()
    status, error = "ok", None
    token = _ACTIVE_RUN.set(ctx)
    try:
        check_values(cfg)  # values that cannot work fail before any data is loaded, recorded in results.json
        group, overrides = _sweep_context(task)
        tracker.start(out, {**resolved, "overrides": overrides}, name=f"{task}-{out.name}", group=group,
                      job_type=task)
        yield ctx
    except BaseException as exc:
        _CLEANING.set()
        status, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), "".join(
            traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        _CLEANING.set()
        _ACTIVE_RUN.reset(token)
        ctx.timings["total"] = round(time.perf_counter() - t0, 3)
        if main_rank:  # under torchrun, rank 0 writes the merged run's results
            write_results(out, RunResults(
                task=task, status=status, error=error, seed=int(cfg.seed), device=str(ctx.device),
                metrics={k: v for k, v in ctx.metrics.items() if not k.startswith("_")},
                timings=ctx.timings, files=ctx.files, skipped_files=ctx.skipped_files, versions=versions(),
                config=resolved,  # type: ignore[arg-type]
                argv=list(sys.argv), cwd=os.getcwd()))
            tracker.summary({k: v for k, v in ctx.metrics.items() if isinstance(v, (int, float))})
        tracker.finish(exit_code=0 if status == "ok" else 1)
