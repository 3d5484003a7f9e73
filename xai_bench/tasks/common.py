"""What every task shares: seeding, the output folder, the tracker, figures/tables, and ``results.json``."""

from __future__ import annotations

import csv
import os
import platform
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from xai_bench.config import validate
from xai_bench.results import RunResults, write_results
from xai_bench.tracking import Tracker
from xai_bench.utils import atomic_path, build, remove_stale_temps, resolve_device, seed_everything


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

    def figure(self, name: str, fig: Any, caption: str | None = None) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png`` and log it."""
        from xai_bench.viz import save_figure

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
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        self.tracker.log_table(f"tables/{name}", rows)
        self.files.append(str(path.relative_to(self.out_dir)))
        return path

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - t0, 3)


def versions() -> dict[str, str]:
    import captum
    import hydra
    import torchvision

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "captum": captum.__version__, "hydra": hydra.__version__, "platform": platform.platform()}
    for mod in ("timm", "wandb"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


@contextmanager
def run_context(cfg: DictConfig, task: str) -> Iterator[RunContext]:
    """Check the config, seed, make the output folder, start the tracker; always write ``results.json`` and finish
    the tracker."""
    validate(cfg)  # a key no builder takes fails here, before anything is written or started
    seed_everything(int(cfg.seed))
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # what a kill mid-write left in a reused folder
    tracker = build(cfg.logger) if cfg.get("logger") else Tracker()
    tracker = tracker or Tracker()
    resolved = OmegaConf.to_container(cfg, resolve=True)
    ctx = RunContext(cfg=cfg, out_dir=out, tracker=tracker, device=resolve_device(cfg.get("device", "auto")))
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        tracker.start(out, resolved, name=f"{task}-{out.name}")
        yield ctx
    except BaseException as exc:
        status, error = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"), "".join(
            traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        ctx.timings["total"] = round(time.perf_counter() - t0, 3)
        write_results(out, RunResults(
            task=task, status=status, error=error, seed=int(cfg.seed), device=str(ctx.device),
            metrics={k: v for k, v in ctx.metrics.items() if not k.startswith("_")},
            timings=ctx.timings, files=ctx.files, versions=versions(), config=resolved,  # type: ignore[arg-type]
            argv=list(sys.argv), cwd=os.getcwd()))
        tracker.summary({k: v for k, v in ctx.metrics.items() if isinstance(v, (int, float))})
        tracker.finish(exit_code=0 if status == "ok" else 1)
