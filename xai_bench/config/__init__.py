"""Config schemas and the start-up check of a composed config.

* :mod:`.schemas` — dataclasses for the groups whose files share a shape, stored in Hydra's ConfigStore as
  ``schema/<group>`` (``import xai_bench`` registers them, before any composition).
* :func:`validate` — run by every task before any data or model is built: each ``_target_`` node of a group without
  a dataclass schema (``dataset``, ``optim``, ``scheduler``, ``logger``) is checked against its callable's
  signature; a key the builder does not take fails, naming the config path, the key and the valid keys.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from xai_bench.config.schemas import SCHEMAS, register

__all__ = ["SCHEMAS", "ConfigKeyError", "check_keys", "register", "valid_keys", "validate"]

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
# Where a task config keeps `_target_` nodes whose schema is their callable's signature.
_TARGET_NODES = ("dataset", "optim", "scheduler.scheduler", "logger")


class ConfigKeyError(ValueError):
    """A config key that no schema or builder knows."""


def valid_keys(group: str) -> list[str]:
    """The keys a node of ``group`` may have (``attribution``, ``attack``, …)."""
    return [f.name for f in fields(SCHEMAS[group])]


def check_keys(path: str, keys: Iterable[str], valid: Iterable[str], what: str = "") -> None:
    """Raise :class:`ConfigKeyError` for the first key of ``keys`` not in ``valid``, with close matches."""
    valid = sorted(valid)
    unknown = [k for k in keys if k not in valid and k not in _HYDRA_KEYS]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigKeyError(f"{path}.{key}: unknown key{f' for {what}' if what else ''}.{hint} Valid keys: "
                             f"{', '.join(valid)}.")


def _signature_keys(target: str) -> list[str] | None:
    """Keyword parameters of ``target``; ``None`` when it takes ``**kwargs`` (nothing to check) or cannot load."""
    from hydra.utils import get_object

    fn = get_object(target)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def validate(cfg: Mapping[str, Any]) -> None:
    """Check every ``_target_`` node of a composed task config against its builder's signature.

    Fails with :class:`ConfigKeyError` (naming the config path, the key and the valid keys) before any data or model
    is built. Nodes with a dataclass schema were already checked by Hydra at composition.
    """
    from omegaconf import OmegaConf

    for path in _TARGET_NODES:
        node = OmegaConf.select(cfg, path) if OmegaConf.is_config(cfg) else None
        if node is None or not OmegaConf.is_dict(node) or "_target_" not in node:
            continue
        target = str(node["_target_"])
        keys = _signature_keys(target)
        if keys is not None:
            if node.get("_partial_"):  # bound later to positional run-time arguments (parameters, optimiser)
                keys = keys[1:]
            check_keys(path, list(node.keys()), keys, target)
