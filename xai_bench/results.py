"""The ``results.json`` every run writes, as a versioned schema with one writer and one reader.

Sweep reports, Hydra callbacks and the web app read runs through :func:`read_results` / :func:`find_results`
instead of indexing bare JSON keys, so a change of layout is made (and migrated) in this one place.

Schema version 1 (all keys always present)::

    schema_version  int         this module's SCHEMA_VERSION when written
    task            str         train | evaluate | explain | attack
    status          str         ok | failed | interrupted
    error           str | None  the exception's one-line summary when status != ok
    seed            int
    device          str
    metrics         dict        the task's returned metrics (JSON-able)
    timings         dict        seconds per phase, ``total`` included
    files           list[str]   figures/tables written, relative to the run folder
    skipped_files   list[dict]  input files left out, one ``{path, reason}`` each (bad image files); added
                                within version 1: files without it read as ``[]``, older readers ignore it
    versions        dict        python, torch, torchvision, captum, hydra, … (and gpu when present)
    config          dict        the resolved Hydra config
    argv, cwd                   how the run was started
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from xai_bench.utils import write_json

__all__ = ["FILENAME", "SCHEMA_VERSION", "RunResults", "find_results", "read_results", "write_results"]

log = logging.getLogger(__name__)

FILENAME = "results.json"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "interrupted")


@dataclass
class RunResults:
    """One run's ``results.json``. ``path`` is the run folder it was read from (not written)."""

    task: str
    status: str = "ok"
    error: str | None = None
    seed: int = 0
    device: str = "cpu"
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    cwd: str = ""
    schema_version: int = SCHEMA_VERSION
    path: Path | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("path")
        return out


def write_results(run_dir: str | Path, results: RunResults) -> Path:
    """Write ``<run_dir>/results.json`` atomically (a crash never leaves half a file)."""
    if results.status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {results.status!r}")
    path = Path(run_dir) / FILENAME
    write_json(path, results.to_dict())
    return path


def read_results(path: str | Path) -> RunResults:
    """Read a run's results from its folder or from the ``results.json`` file itself.

    Files written before the schema was versioned (no ``schema_version``) are read as version 0 with missing keys
    defaulted; a file from a newer version of xai-bench is refused rather than misread.
    """
    path = Path(path)
    file = path / FILENAME if path.is_dir() else path
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: no results.json here; point at a run folder written by xai-bench") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{file}: not valid JSON ({exc}); the run may have been killed while writing") from None
    if not isinstance(raw, dict) or "task" not in raw:
        raise ValueError(f"{file}: not an xai-bench results file (no 'task' key)")
    version = int(raw.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise ValueError(f"{file}: schema_version {version} is newer than this xai-bench understands "
                         f"({SCHEMA_VERSION}); upgrade xai-bench to read it")
    known = {f for f in RunResults.__dataclass_fields__ if f != "path"}
    fields = {k: v for k, v in raw.items() if k in known}
    fields["schema_version"] = version
    fields["metrics"] = fields.get("metrics") or {}
    return RunResults(**fields, path=file.parent)


def find_results(root: str | Path, *, task: str | None = None, ok_only: bool = True) -> Iterator[RunResults]:
    """Every run under ``root`` (a sweep folder, say), sorted by path; unreadable files are logged and skipped."""
    for file in sorted(Path(root).rglob(FILENAME)):
        try:
            res = read_results(file)
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable %s: %s", file, exc)
            continue
        if (task is None or res.task == task) and (res.ok or not ok_only):
            yield res
