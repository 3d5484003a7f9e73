"""Small shared helpers: object building from config, seeding, devices, atomic file writes (and the clean-up of
the temporary files a killed write leaves behind)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import numpy as np
import torch


def build(node: Any, **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` config node (``_partial_`` nodes come back as ``functools.partial``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if node is None:
        return None
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        # Our builders raise errors that already name the config field and the fix; hydra's wrapper would bury
        # them (and change their type), so surface the original.
        if isinstance(exc.__cause__, (ValueError, FileNotFoundError, KeyError, RuntimeError, TypeError)):
            raise exc.__cause__ from None
        raise


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_seed(seed: int, batch: int) -> int:
    """The seed of batch ``batch`` of a run seeded ``seed``. Seeding each batch on its own makes a batch's random
    draws (RISE's masks, PGD's random start) independent of which batches ran before it, so a resumed run or a
    torchrun rank that computes only some batches draws what the uninterrupted single-process run drew. Batch 0 keeps
    the run's seed (a run of one batch is seeded as before batching)."""
    return seed if batch == 0 else (seed * 1_000_003 + batch) % 2**63


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU. An explicit ``cuda`` request without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but no CUDA GPU is available; set device=auto or cpu")
    return dev


# Temporary files of atomic_path: ".<name>.<pid>-<random>.tmp" beside the file they will replace. The pid tells a
# write in progress (its process is alive) from one a kill left behind.
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[a-z0-9_]{8}\.tmp$")
STALE_AFTER_S = 3600.0  # a temp file whose owner cannot be told dead is removed only when this old


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, on error it is removed.

    A crash mid-write therefore never leaves a half-written file in place of a good one; a kill (SIGKILL, power)
    can leave the temporary file, which :func:`remove_stale_temps` clears when a run starts or resumes. The file
    gets the mode an ordinary ``open()`` would (0666 less the umask), not mkstemp's owner-only 0600. A full disk (or
    quota) raises :class:`~xai_bench.errors.DiskFullError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        # after the write: some writers (safetensors) replace the file they are given with their own 0600 one
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _raise_if_disk_full(exc, path)
        raise


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """Re-raise a failed write that ran out of space as :class:`DiskFullError`. torch and safetensors wrap the
    ``OSError`` in their own errors, so their message is read too."""
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno in _DISK_FULL) or "No space left on device" in text \
            or "os error 28" in text or "Disk quota exceeded" in text:
        from xai_bench.errors import DiskFullError

        err = DiskFullError(f"no space left on device while writing {path}: free space on {path.parent} "
                            f"(or its quota), or point paths.output_dir / hydra.run.dir at a disk with room")
        err.errno = errno.ENOSPC
        raise err from exc


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left under ``folder`` (recursively) when its process died.

    A file whose process is still alive is kept (another run may be writing it), unless it is older than an hour
    (no single write takes that long; its pid may belong to another machine or have been reused).

    Returns:
        The paths removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    now = time.time()
    for path in folder.rglob(".*.tmp"):
        m = TEMP_PATTERN.match(path.name)
        if m is None:  # not ours
            continue
        try:
            old = now - path.stat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            continue
        if old or not _alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would briefly change it for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike,
                     metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.torch.save_file``, atomically, and byte-for-byte reproducible.

    safetensors serialises the string metadata from a Rust ``HashMap``, whose order changes from process to process,
    so two identical runs wrote files that differ byte-wise (defeating checksum caches); the header is rewritten
    here with its keys sorted (same length, so in place).
    """
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        _sort_header(tmp)
    return path


def _sort_header(path: Path) -> None:
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        new = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        if len(new) <= n:  # the usual case: same keys, same length; pad with spaces as safetensors does
            f.seek(8)
            f.write(new + b" " * (n - len(new)))
            return
        rest = f.read()
        new += b" " * (-len(new) % 8)
        f.seek(0)
        f.write(len(new).to_bytes(8, "little") + new + rest)
        f.truncate()


def write_json(path: str | os.PathLike, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)
