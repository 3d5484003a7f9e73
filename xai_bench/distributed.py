"""Scale-out helpers: per-job CPU threads and GPU, and ``torch.distributed`` sharding of one run across processes.

Nothing here schedules anything: Hydra's launchers (joblib, submitit, Ray) start the jobs and ``torchrun`` starts the
ranks. This module only makes each job *behave* in the place it was started:

- :func:`cpus_per_job` — how many CPU threads a job may use, from what its launcher was told (Slurm's
  ``SLURM_CPUS_PER_TASK``, submitit's ``cpus_per_task``, Ray's ``ray.remote.num_cpus``, joblib's ``n_jobs``,
  torchrun's ``LOCAL_WORLD_SIZE``), so that parallel jobs do not each start one thread per core and oversubscribe
  the machine. :func:`setup_job` sets ``torch.set_num_threads`` to it.
- :func:`job_device` — with ``device=auto`` on a node with several GPUs, job ``k`` of a sweep takes
  ``cuda:{k % n_gpus}`` (a torchrun rank takes ``cuda:{LOCAL_RANK % n_gpus}``). Slurm jobs given one GPU each see
  only that GPU (``CUDA_VISIBLE_DEVICES``) and use ``cuda``.
- :class:`Ranks` — the process group ``torchrun`` describes in its environment (``WORLD_SIZE``, ``RANK``,
  ``MASTER_ADDR`` …), started with ``init_method="env://"``: gloo on CPU, NCCL on GPU. Without those variables it is
  one process and every call is a no-op, so a task runs exactly as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SHARDED_TASKS", "PeerStore", "Ranks", "cpus_per_job", "env_rank", "env_world_size", "finished",
           "gather_batches", "gather_or_fail", "job_device", "launcher_config", "merge_ranks", "process_group",
           "setup_job"]

log = logging.getLogger(__name__)

# Tasks that split their work across torchrun ranks (explain: maps per batch; attack: ε-sweep sums per batch); any
# other task started under torchrun would run once per rank into the same folder, so it is refused.
SHARDED_TASKS = ("explain", "attack")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (taskset, cgroups under Slurm)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def env_world_size(env: Mapping[str, str] | None = None) -> int:
    """``WORLD_SIZE`` as torchrun sets it; 1 when the process was not started by a distributed launcher."""
    env = os.environ if env is None else env
    try:
        return max(int(env.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def env_rank(env: Mapping[str, str] | None = None) -> int:
    """``RANK`` as torchrun sets it; 0 without torchrun. Ranks other than 0 leave writing the run's
    ``results.json`` and tracking to rank 0."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0") or 0) if env_world_size(env) > 1 else 0


def launcher_config() -> Mapping[str, Any] | None:
    """The ``hydra.launcher`` node of the running Hydra job (``None`` outside Hydra or in a plain run)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return HydraConfig.get().launcher
    except Exception:  # no Hydra job: nothing to read
        pass
    return None


def _job_num() -> int | None:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            return int(hc.job.num) if hc.mode == RunMode.MULTIRUN else None
    except Exception:
        pass
    return None


def _positive(value: Any) -> int | None:
    try:
        n = int(value)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def cpus_per_job(launcher: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
                 cpu_count: int | None = None) -> int | None:
    """The CPU threads one job (or torchrun rank) should use, or ``None`` when nothing says (a plain run keeps
    torch's default: every core).

    In order: ``SLURM_CPUS_PER_TASK`` (Slurm, what the scheduler granted); the launcher's own setting —
    submitit's ``cpus_per_task``, Ray's ``ray.remote.num_cpus`` (Ray's default for a task is 1), joblib's
    ``n_jobs`` (cores // jobs at once; ``-1`` is one job per core); torchrun's ``LOCAL_WORLD_SIZE`` (cores // ranks
    on this node).
    """
    env = os.environ if env is None else env
    cores = cpu_count or _cpu_count()
    slurm = _positive(env.get("SLURM_CPUS_PER_TASK"))
    if slurm:
        return slurm
    target = str((launcher or {}).get("_target_", ""))
    if "submitit" in target:
        n = _positive(launcher.get("cpus_per_task"))  # type: ignore[union-attr]
        if n:
            return n
    elif "hydra_ray_launcher" in target:
        remote = ((launcher or {}).get("ray") or {}).get("remote") or {}
        return _positive(remote.get("num_cpus")) or 1
    elif "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or -1)  # type: ignore[union-attr]
        jobs = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)  # joblib: -1 = all cores, -2 = all but one …
        return max(cores // min(jobs, cores), 1)
    ranks = _positive(env.get("LOCAL_WORLD_SIZE"))
    if ranks and ranks > 1:
        return max(cores // ranks, 1)
    return None


def job_device(device: Any = "auto", *, job_num: int | None = None, local_rank: int | None = None,
               n_gpus: int | None = None) -> Any:
    """The device one job runs on. Only ``device=auto`` (or ``None``) with more than one visible GPU is changed:
    a torchrun rank takes ``cuda:{local_rank % n_gpus}``, job ``job_num`` of a sweep ``cuda:{job_num % n_gpus}``;
    anything else is returned as given (:func:`xai_bench.utils.resolve_device` then resolves it)."""
    if device not in (None, "auto"):
        return device
    n = torch.cuda.device_count() if n_gpus is None else n_gpus
    if n <= 1:
        return device
    slot = local_rank if local_rank is not None else job_num
    return f"cuda:{slot % n}" if slot is not None else device


def setup_job(device: Any = "auto") -> Any:
    """Set this job's torch threads (:func:`cpus_per_job`), let malloc keep freed tensor memory
    (:func:`xai_bench.accel.keep_freed_cpu_memory`) and pick its device (:func:`job_device`); returns the device
    setting to resolve."""
    from xai_bench.accel import keep_freed_cpu_memory

    keep_freed_cpu_memory()
    threads = cpus_per_job(launcher_config())
    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        log.info("torch threads: %d (cpus per job)", threads)
    local_rank = os.environ.get("LOCAL_RANK", "")
    chosen = job_device(device, job_num=_job_num(), local_rank=int(local_rank) if local_rank.isdigit() else None)
    if chosen != device:
        log.info("device=auto with %d GPUs: this job uses %s", torch.cuda.device_count(), chosen)
    return chosen


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Ranks:
    """This process's place in a torchrun job: ``rank`` of ``world`` (0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def sharded(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, batch: int) -> bool:
        """Whether this rank computes batch ``batch`` (round robin: batch sizes are equal, so ranks are balanced)."""
        return batch % self.world == self.rank

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.sharded:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (a list in rank order); ``None`` on the other ranks."""
        if not self.sharded:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out


@contextlib.contextmanager
def process_group(device: torch.device, env: Mapping[str, str] | None = None) -> Iterator[Ranks]:
    """The torchrun process group for the duration of a run (one process without torchrun's variables): gloo on
    CPU, NCCL on CUDA; destroyed afterwards if this call started it."""
    env = os.environ if env is None else env
    world = env_world_size(env)
    if world <= 1:
        yield Ranks()
        return
    import torch.distributed as dist

    started = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, init_method="env://")
        started = True
    ranks = Ranks(rank=dist.get_rank(), world=dist.get_world_size())
    log.info("torch.distributed: rank %d of %d (%s)", ranks.rank, ranks.world, dist.get_backend())
    try:
        yield ranks
    finally:
        if started:
            dist.destroy_process_group()


class PeerStore:
    """What a rank other than 0 has instead of the run's :class:`~xai_bench.resume.ShardStore` (which only rank 0
    writes): the batches rank 0 already holds (``done``, from a resumed run), and this rank's finished batches,
    kept in memory until :func:`gather_batches` sends them to rank 0."""

    def __init__(self, done: Iterable[int], state: Mapping[str, Any]) -> None:
        self.done = set(done)
        self.batches: dict[int, dict[str, torch.Tensor]] = {}
        self.index: dict[str, Any] = {"state": dict(state)}
        self.resumed_from = None

    def __contains__(self, batch: int) -> bool:
        return batch in self.done

    @property
    def state(self) -> dict[str, Any]:
        return self.index["state"]

    def put(self, batch: int, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, *,
            state: Mapping[str, Any] | None = None) -> None:
        self.batches[batch] = dict(tensors)
        if state is not None:
            self.index["state"] = dict(state)

    def close(self) -> None:
        self.batches.clear()


def gather_or_fail(ranks: Ranks, obj: Any) -> list[Any] | None:
    """:meth:`Ranks.gather`, with the error a user can act on when another rank died before sending its part."""
    try:
        return ranks.gather(obj)
    except RuntimeError as exc:  # gloo: "Connection closed by peer" when a rank died
        raise RuntimeError(f"torchrun: another rank stopped before sending its batches (its own error is in "
                           f"torchrun's output): {exc}") from exc


def finished(store: Any) -> list[int]:
    """The batch numbers a :class:`~xai_bench.resume.ShardStore` (of the main part) holds."""
    return sorted(int(k) for k in store.index["shards"] if k.isdigit())


def gather_batches(ranks: Ranks, store: Any, state: Mapping[str, Any]
                   ) -> tuple[dict[int, dict[str, torch.Tensor]], list[dict[str, Any]]]:
    """Collect every rank's finished batches on rank 0 and commit them to rank 0's store in batch order.

    Every rank calls this after its share of the loop. A rank that fails never gets here: its peers' pending
    collective fails (gloo: connection closed) and torchrun stops them, so rank 0's ``results.json`` records the
    failure, pointing at torchrun's output for the failed rank's own error.

    Returns:
        On rank 0, (the other ranks' batches: number → tensors, every rank's ``state`` in rank order); on the other
        ranks, ``({}, [])``.
    """
    mine = store.batches if isinstance(store, PeerStore) else {}
    got = gather_or_fail(ranks, {"batches": mine, "state": dict(state)})
    if not ranks.is_main or got is None:
        return {}, []
    merged: dict[int, dict[str, torch.Tensor]] = {}
    for g in got[1:]:
        merged.update(g["batches"])
    for b in sorted(merged):
        store.put(b, merged[b])
    return merged, [g["state"] for g in got]


def merge_ranks(ranks: Ranks, store: Any, parts: dict[str, dict[int, torch.Tensor]], skipped: list[dict[str, str]],
                seconds: dict[str, float]) -> None:
    """After each rank's share of a batch loop: on rank 0, add the other ranks' batches to ``parts`` (method →
    batch → tensor), their skipped methods to ``skipped`` and their ``seconds`` (method → CPU-seconds) to
    ``seconds``; on every rank, drop from ``parts`` a method any rank skipped. See :func:`gather_batches`."""
    merged, states = gather_batches(ranks, store, {"skipped": skipped, "seconds": seconds})
    for b, shard in merged.items():
        for m, batches in parts.items():
            if m in shard:
                batches[b] = shard[m]
    for state in states[1:]:
        skipped += [s for s in state["skipped"] if s not in skipped]
        for m, sec in state["seconds"].items():
            seconds[m] = seconds.get(m, 0.0) + sec
    skipped[:] = ranks.broadcast(skipped)
    for s in skipped:
        parts.pop(s["method"], None)
