"""Small shared helpers: object building from config, seeding, devices, atomic file writes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import tempfile
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


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU. An explicit ``cuda`` request without a GPU is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but no CUDA GPU is available; set device=auto or cpu")
    return dev


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically, on error it is removed.

    A crash mid-write therefore never leaves a half-written file in place of a good one. A full disk (or quota)
    raises :class:`~xai_bench.errors.DiskFullError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; results and figures are meant to be shared
    try:
        yield Path(tmp)
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
