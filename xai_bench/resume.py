"""Per-batch results of long runs (``explain``, ``attack``, ``evaluate``), written as they are made and resumed after a
kill.

A task opens a :class:`ShardStore` in its run folder before any work and :meth:`~ShardStore.put` s each finished
batch of images into it; a killed run therefore keeps every finished batch. ``resume=<run dir>`` opens the store of
that earlier run, checks that it was made with the same results-relevant config (:func:`config_diff`), carries its
finished batches into the new run folder and skips them; the new run's outputs equal an uninterrupted run's (the
task makes each batch depend only on the config and the batch index: seeds, RNG state).

Layout, in the run folder::

    shards/index.json          {"format", "task", "config" (results-relevant, resolved), "device",
                                "shards": {"<batch>": "<batch:05d>.safetensors"}, "state": {task's JSON}}
    shards/00000.safetensors   batch 0's tensors and string metadata
    shards/corruptions-00000.safetensors   batch 0 of a second loop of the same run (:meth:`ShardStore.part`)

Every shard is written atomically, then the index (atomically): a shard the index does not name was never committed
and is deleted, as are temporary files a kill left (:func:`xai_bench.utils.remove_stale_temps`). The folder is
removed when the run finishes (its final outputs hold everything the shards did).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, SequentialSampler, Subset

from xai_bench.utils import atomic_path, remove_stale_temps, save_safetensors, write_json

__all__ = ["FOLDER", "BatchStore", "ShardStore", "config_diff", "finished_batches", "remaining_batches",
           "results_config"]

log = logging.getLogger(__name__)

FOLDER = "shards"
INDEX = "index.json"
FORMAT = 1
# Top-level keys that never change a task's numbers: where files go, how progress is shown, what is tracked.
ALWAYS_IGNORED = ("resume", "paths", "hydra", "logger", "progress", "num_workers", "optimized_metric",
                  "hparams_search")
_SHARD = re.compile(r"^(?:[a-z_]+-)?\d{5,}\.safetensors$")
# Test-only fault injection: XAI_BENCH_FAULT="<batch>:<before|mid|after>[:raise]" kills the process (SIGKILL, or an
# exception with ":raise") while batch <batch> is committed: before its shard, with the shard's temporary file
# half-made, or after the shard but before the index names it. A batch of a part is named "<part>/<batch>".
FAULT_ENV = "XAI_BENCH_FAULT"


class InjectedFault(BaseException):
    """Raised by the test-only fault hook (a BaseException, like the KeyboardInterrupt it stands for)."""


def results_config(cfg: DictConfig | Mapping[str, Any], ignore: Iterable[str] = ()) -> dict[str, Any]:
    """The resolved config less the keys that do not change results (:data:`ALWAYS_IGNORED` and ``ignore``,
    top-level names or dotted paths such as ``attack.save_examples``)."""
    raw = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    out = json.loads(json.dumps(raw, default=str))  # as the index stores it, so that the comparison is like for like
    assert isinstance(out, dict)
    for key in (*ALWAYS_IGNORED, *ignore):
        *parents, last = key.split(".")
        node: Any = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old → new"`` for every dotted key whose value differs (missing keys shown as ``<unset>``)."""
    a, b = _flatten(old), _flatten(new)
    short = lambda v: "<unset>" if v is _UNSET else (r if len(r := json.dumps(v)) <= 60 else r[:57] + "…")
    return [f"{k}: {short(a.get(k, _UNSET))} → {short(b.get(k, _UNSET))}" for k in sorted(a.keys() | b.keys())
            if a.get(k, _UNSET) != b.get(k, _UNSET)]


_UNSET = object()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, Mapping) or (not d and prefix):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class ShardStore:
    """The committed batches of one run (see the module docstring). Make it with :meth:`open`."""

    def __init__(self, folder: Path, index: dict[str, Any]) -> None:
        self.folder = folder
        self.index = index
        self.resumed_from: Path | None = None

    # -- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, run_dir: str | Path, *, task: str, config: dict[str, Any], device: str = "cpu",
             resume: Any = None) -> ShardStore:
        """The store of the run in ``run_dir``, empty or carrying the finished batches of ``resume``.

        Args:
            run_dir: this run's output folder.
            task: the task name (a store of another task is refused).
            config: :func:`results_config` of this run; a resumed run's must be equal.
            device: where the batches are computed (a change is allowed but logged: floats may differ).
            resume: ``None`` (a fresh run), or an earlier run's folder (or its ``shards`` folder).

        Raises:
            FileNotFoundError: ``resume`` has no store. ValueError: it belongs to another task or config.
        """
        run_dir = Path(run_dir)
        remove_stale_temps(run_dir)
        folder = run_dir / FOLDER
        index = {"format": FORMAT, "task": task, "config": config, "device": device, "shards": {}, "state": {}}
        source = _find_store(resume) if resume not in (None, "", False) else None
        if source is not None and source.resolve() == folder.resolve():  # resuming in place
            source = None
            old = _check(folder, task, config, device, resume)
            index.update(shards=old["shards"], state=old["state"])
        elif folder.exists():  # a fresh run in a reused folder: what is there belongs to another run
            shutil.rmtree(folder)
        store = cls(folder, index)
        if source is not None:
            old = _check(source, task, config, device, resume)
            remove_stale_temps(source.parent)  # the killed run's half-written files, figures included
            _tidy(source, old)
            folder.mkdir(parents=True, exist_ok=True)
            for name in old["shards"].values():
                _link_or_copy(source / name, folder / name)
            index.update(shards=old["shards"], state=old["state"])
            store.resumed_from = source.parent
        elif folder.exists():
            _tidy(folder, index)
        if source is not None or resume not in (None, "", False):
            log.info("resume=%s: %d finished batch(es) carried over", resume, len(store))
            store.resumed_from = store.resumed_from or run_dir
        store._write_index()
        return store

    # -- reading -----------------------------------------------------------------------------------------------
    def __contains__(self, batch: int) -> bool:
        return _key(batch) in self.index["shards"]

    def part(self, name: str) -> ShardPart:
        """The batches of a second loop of the same run (``evaluate``: ``predict``, then ``corruptions``), kept
        beside this store's own under their own names."""
        if not re.fullmatch(r"[a-z_]+", name):
            raise ValueError(f"a store part is named in lower case letters and _, got {name!r}")
        return ShardPart(self, name)

    def __len__(self) -> int:
        return len(self.index["shards"])

    @property
    def state(self) -> dict[str, Any]:
        """The task's own JSON state as of the last committed batch (e.g. methods skipped)."""
        return self.index["state"]

    def get(self, batch: int, part: str = "") -> tuple[dict[str, Tensor], dict[str, str]]:
        """Batch ``batch``'s tensors (CPU) and string metadata."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = self.folder / self.index["shards"][_key(batch, part)]
        try:
            with safe_open(str(path), "pt") as f:
                meta = dict(f.metadata() or {})
            return load_file(str(path)), meta
        except Exception as exc:
            raise ValueError(f"{path}: unreadable shard ({type(exc).__name__}: {exc}); delete the run's "
                             f"{FOLDER}/ folder to recompute from scratch") from exc

    # -- writing -----------------------------------------------------------------------------------------------
    def put(self, batch: int, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None, *,
            state: Mapping[str, Any] | None = None, part: str = "") -> None:
        """Commit batch ``batch`` (of ``part``): its shard, then the index naming it (and the task's ``state``)."""
        key = _key(batch, part)
        name = f"{part}-{batch:05d}.safetensors" if part else f"{batch:05d}.safetensors"
        _fault(key, "before")
        with atomic_path(self.folder / name) as tmp:
            save_safetensors(dict(tensors), tmp, dict(metadata or {}))
            _fault(key, "mid")
        _fault(key, "after")
        self.index["shards"][key] = name
        if state is not None:
            self.index["state"] = dict(state)
        self._write_index()

    def close(self) -> None:
        """The run finished and wrote its outputs: the shards are no longer needed."""
        with contextlib.suppress(FileNotFoundError):
            (self.folder / INDEX).unlink()  # first: a store with an index always has its shards
        shutil.rmtree(self.folder, ignore_errors=True)

    def _write_index(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json(self.folder / INDEX, self.index)


def _key(batch: int, part: str = "") -> str:
    return f"{part}/{batch}" if part else str(batch)


class BatchStore(Protocol):
    """What a library loop needs to keep its finished batches (:class:`ShardStore` or one of its parts)."""

    def __contains__(self, batch: int) -> bool: ...

    def get(self, batch: int) -> tuple[dict[str, Tensor], dict[str, str]]: ...

    def put(self, batch: int, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None: ...


class ShardPart:
    """One named loop's batches in a :class:`ShardStore` (made by :meth:`ShardStore.part`)."""

    def __init__(self, store: ShardStore, name: str) -> None:
        self.store, self.name = store, name

    def __contains__(self, batch: int) -> bool:
        return _key(batch, self.name) in self.store.index["shards"]

    def get(self, batch: int) -> tuple[dict[str, Tensor], dict[str, str]]:
        return self.store.get(batch, self.name)

    def put(self, batch: int, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
        self.store.put(batch, tensors, metadata, part=self.name)


def finished_batches(store: BatchStore | None) -> int:
    """How many batches from the first on ``store`` holds (a loop commits in order, so they are 0 … n-1)."""
    done = 0
    while store is not None and done in store:
        done += 1
    return done


def remaining_batches(loader: DataLoader, done: int) -> Iterable[Any]:
    """``loader``'s batches from batch ``done`` on, without loading the images of the first ``done`` (a sequential,
    batched loader is rebuilt over the rest of its dataset; any other is read and the first batches dropped)."""
    if not done:
        return loader
    if isinstance(loader.sampler, SequentialSampler) and loader.batch_size and not loader.drop_last:
        rest = Subset(loader.dataset, range(done * loader.batch_size, len(loader.dataset)))  # type: ignore[arg-type]
        return DataLoader(rest, batch_size=loader.batch_size, collate_fn=loader.collate_fn, generator=loader.generator,
                          num_workers=loader.num_workers, pin_memory=loader.pin_memory)
    return itertools.islice(loader, done, None)


def _find_store(resume: Any) -> Path:
    p = Path(str(resume))
    for cand in (p / FOLDER, p):
        if (cand / INDEX).is_file():
            return cand
    finished = (p / "results.json").is_file() and not (p / FOLDER).exists()
    hint = (" (it finished: its outputs are complete, nothing to resume)" if finished else
            "; point it at the output folder of an explain/attack/evaluate run that was killed")
    raise FileNotFoundError(f"resume={resume}: no {FOLDER}/{INDEX} in {p}{hint}")


def _check(folder: Path, task: str, config: dict[str, Any], device: str, resume: Any) -> dict[str, Any]:
    try:
        old = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"resume={resume}: {folder / INDEX} is unreadable ({exc})") from None
    if old.get("format") != FORMAT or old.get("task") != task:
        raise ValueError(f"resume={resume}: that is a {old.get('task')!r} run (store format {old.get('format')}), "
                         f"not {task!r}; point resume at a killed {task} run")
    diff = config_diff(old.get("config") or {}, config)
    if diff:
        raise ValueError(f"resume={resume}: this run's config differs from the original's in what changes results "
                         f"({len(diff)} key(s)):\n  " + "\n  ".join(diff) +
                         "\nrerun with the original values (see its .hydra/config.yaml), or start a fresh run")
    if old.get("device") != device:
        log.warning("resume=%s: the original ran on %s, this run on %s; finished batches are kept as they are",
                    resume, old.get("device"), device)
    return old


def _tidy(folder: Path, index: Mapping[str, Any]) -> None:
    """Remove shards the index does not name (written, then killed before the index was) and stale temp files."""
    remove_stale_temps(folder)
    named = set(index["shards"].values())
    for path in folder.iterdir():
        if _SHARD.match(path.name) and path.name not in named:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _link_or_copy(src: Path, dst: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        dst.unlink()
    try:
        os.link(src, dst)  # shards are never modified in place, so sharing the inode is safe
    except OSError:
        shutil.copyfile(src, dst)


def _fault(key: str, phase: str) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    at, when, *how = spec.split(":")
    if at != key or when != phase:
        return
    if how == ["raise"]:
        raise InjectedFault(f"{FAULT_ENV}={spec}")
    os.kill(os.getpid(), signal.SIGKILL)


def rng_state(device: torch.device) -> dict[str, Tensor]:
    """torch's global RNG state (and the device's), to restore before the next batch of a resumed run."""
    out = {"rng/cpu": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng/cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(tensors: Mapping[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(tensors["rng/cpu"])
    if device.type == "cuda" and "rng/cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng/cuda"], device)
